//! A request in flight on an endpoint: counted until its response body ends, timed at its first
//! body byte and its end, its tokens counted and timed while it streams, and holding the HTTP/1.1
//! connection that carries the body.

use super::backend::Typical;
use super::endpoint::Endpoint;
use crate::body::Completion;
use crate::client::PooledConn;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keeps a request counted in flight on its endpoint until dropped, and holds the HTTP/1.1
/// connection that carries its response.
#[derive(Debug)]
pub struct InFlightGuard {
    ep: Arc<Endpoint>,
    /// The backend's typical figures, which this answer's figures join (`None` for a backend of
    /// one endpoint: nobody reads them there, and a backend that grows learns them from then on).
    typical: Option<Arc<Typical>>,
    started_ns: u64,
    /// The time to first byte, once seen.
    first: Option<Duration>,
    conn: Option<PooledConn>,
    idle_timeout: Duration,
    /// When the request was sent and the EWMA decay, until the first response byte is seen.
    rtt_from: Option<(Instant, Duration)>,
    /// When the first body byte came and the EWMA decay, until the body ends.
    body_from: Option<(Instant, Duration)>,
    /// The tokens of a streamed answer, when it is one.
    stream: Option<Stream>,
    /// An answer came (its first body byte, its end, or a refusal that is not timed), or the
    /// attempt was not meant to be timed: nothing to learn when the guard drops.
    settled: bool,
    /// The EWMA decay, for the bound learnt from an attempt given up on.
    decay: Duration,
    /// The most output tokens the request asked for, when it said, and the tokens it is
    /// expected to stream (counted on the endpoint while it is in flight).
    asked: Option<(u32, u32)>,
}

/// A streamed answer's tokens as they come: an SSE event is a token (a model server sends one
/// per token), and so is every data frame of a gRPC stream.
#[derive(Debug, Default)]
struct Stream {
    sse: bool,
    decay: Duration,
    /// The last byte seen of an SSE stream ended a line (an event ends at an empty line).
    newline: bool,
    tokens: u32,
    /// Tokens added to the endpoint's in-flight work done, at most `cap`.
    counted: u32,
    cap: u32,
    started: bool,
    /// When the last time-per-token sample was taken, and the token count then.
    sampled_ns: u64,
    sampled_tokens: u32,
    next_sample: u32,
}

impl Stream {
    /// Tokens in one chunk: the SSE events it ends, or 1 for a gRPC frame.
    fn count(&mut self, chunk: &[u8]) -> u32 {
        if !self.sse {
            return 1;
        }
        let mut n = 0;
        for &b in chunk {
            match b {
                b'\n' if self.newline => {
                    n += 1;
                    self.newline = false;
                }
                b'\n' => self.newline = true,
                b'\r' => {}
                _ => self.newline = false,
            }
        }
        n
    }
}

/// Time-per-token samples are taken at a stream's 2nd, 4th, 8th and 16th token, then every 16
/// (a figure milliseconds after it starts, without a lock per token).
const SAMPLE_EVERY: u32 = 16;

impl InFlightGuard {
    /// Counts a request in flight on `ep` (of a backend with `typical` figures) until the guard drops.
    pub fn start(ep: &Arc<Endpoint>, typical: Option<&Arc<Typical>>, decay: Duration) -> InFlightGuard {
        let started_ns = crate::now_ns();
        ep.begin(started_ns);
        InFlightGuard {
            ep: Arc::clone(ep),
            typical: typical.cloned(),
            started_ns,
            first: None,
            conn: None,
            idle_timeout: Duration::ZERO,
            rtt_from: None,
            body_from: None,
            stream: None,
            settled: false,
            decay,
            asked: None,
        }
    }

    /// The request asked for at most `asked` output tokens and is expected to stream `expected`:
    /// the endpoint counts that while it is in flight, and when its answer ends, how much of
    /// what it asked for was streamed joins the backend's figures.
    pub fn asking(mut self, asked: Option<u32>, expected: Option<f64>) -> InFlightGuard {
        if let (Some(a), Some(e)) = (asked, expected) {
            let e = e.clamp(0.0, f64::from(a)) as u32;
            self.ep.expect(e);
            self.asked = Some((a, e));
        }
        self
    }

    /// The answer streams tokens (`sse`: as server-sent events; otherwise as gRPC messages):
    /// count and time them. Only for a backend whose figures are compared (of several endpoints).
    pub fn streams(&mut self, sse: bool, decay: Duration) {
        if self.typical.is_some() {
            self.stream = Some(Stream { sse, decay, ..Stream::default() });
        }
    }

    /// A data frame of a streamed answer came: count its tokens, and now and then sample the time
    /// per token.
    fn tokens(&mut self, chunk: &[u8]) {
        let (Some(s), Some(typical)) = (self.stream.as_mut(), self.typical.as_ref()) else {
            return;
        };
        let n = s.count(chunk);
        if n == 0 {
            return;
        }
        let now = crate::now_ns();
        if !s.started {
            s.started = true;
            self.ep.stream(true, 0, now);
            s.cap = (typical.tokens_per_answer() as u32).saturating_sub(1);
            if s.cap == 0 {
                s.cap = u32::MAX;
            }
            (s.sampled_ns, s.sampled_tokens, s.next_sample) = (now, n, n + 1);
        }
        s.tokens = s.tokens.saturating_add(n);
        let add = n.min(s.cap - s.counted);
        s.counted += add;
        let sample = (s.tokens >= s.next_sample).then(|| {
            let gap = now.saturating_sub(s.sampled_ns) / u64::from(s.tokens - s.sampled_tokens);
            s.next_sample = s.tokens + s.tokens.min(SAMPLE_EVERY);
            (s.sampled_ns, s.sampled_tokens) = (now, s.tokens);
            Duration::from_nanos(gap)
        });
        self.ep.tokens(add, sample, now, s.decay);
        if sample.is_some() {
            typical.observe_stream(sample, s.tokens, false, s.decay);
        }
    }

    /// Attaches the connection to give back when the response ends cleanly, and (unless the
    /// answer was a refusal) when the request was sent, to time the first response byte.
    pub fn hold(
        &mut self,
        conn: Option<PooledConn>,
        idle_timeout: Duration,
        rtt_from: Option<(std::time::Instant, Duration)>,
    ) {
        self.conn = conn;
        self.idle_timeout = idle_timeout;
        self.settled |= rtt_from.is_none();
        self.rtt_from = rtt_from;
    }

    /// The first byte of the response body arrived: its latency is the endpoint's RTT sample.
    ///
    /// Internal: a streaming model server sends its headers at once and its first token after
    /// queueing and prefill, so the first *body* byte is what shows how loaded it is.
    fn first_byte(&mut self) {
        self.settled = true;
        if let Some((sent, decay)) = self.rtt_from.take() {
            let now = Instant::now();
            let rtt = now.saturating_duration_since(sent);
            self.ep.observe(Some(rtt), None, decay);
            self.first = Some(rtt);
            self.body_from = Some((now, decay));
        }
    }

    /// A data frame arrived.
    pub fn data(&mut self, chunk: &[u8]) {
        self.first_byte();
        if self.stream.is_some() {
            self.tokens(chunk);
        }
    }

    /// The response body ended cleanly: its streaming time is sampled (with the first-byte time
    /// too when the body came in one piece) and the connection goes back to the pool. A body
    /// that breaks off is not sampled.
    pub fn finish(mut self) {
        self.settled = true;
        if let Some((sent, decay)) = self.rtt_from.take() {
            // The first byte and the end at once: the body took no time.
            let rtt = sent.elapsed();
            self.ep.observe(Some(rtt), Some(Duration::ZERO), decay);
            if let Some(t) = &self.typical {
                t.observe(Some(rtt), Some(Duration::ZERO), decay);
            }
        } else if let Some((first, decay)) = self.body_from.take() {
            let body = first.elapsed().min(super::MAX_BODY_SAMPLE);
            self.ep.observe(None, Some(body), decay);
            if let Some(t) = &self.typical {
                t.observe(self.first, Some(body), decay);
            }
        }
        if let (Some(s), Some(t)) = (&self.stream, &self.typical)
            && s.started
        {
            t.observe_stream(None, s.tokens, true, s.decay);
            if let Some((asked, _)) = self.asked {
                t.observe_fill(asked, s.tokens, s.decay);
            }
        }
        if let Some(c) = self.conn.take() {
            c.release(self.idle_timeout);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let now = crate::now_ns();
        if !self.settled {
            // Given up on before any answer: it took at least this long (a hedge that won,
            // a client that left). Without it, an endpoint whose stalled attempts are always
            // cancelled would never be seen as slow.
            self.ep.observe_at_least(Duration::from_nanos(now.saturating_sub(self.started_ns)), self.decay);
        }
        self.ep.end(self.started_ns);
        if let Some((_, expected)) = self.asked {
            self.ep.unexpect(expected);
        }
        if let Some(s) = &self.stream
            && s.started
        {
            self.ep.stream(false, s.counted, now);
        }
    }
}

impl Completion for InFlightGuard {
    fn data(&mut self, chunk: &bytes::Bytes) {
        InFlightGuard::data(self, chunk);
    }
    fn finish(self: Box<Self>) {
        InFlightGuard::finish(*self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vane_route::config::Protocol;

    #[test]
    fn a_stream_counts_its_tokens_and_times_them_while_it_streams() {
        let ep = Arc::new(Endpoint::new("127.0.0.1:9".parse().unwrap(), Protocol::Http1, 0));
        let typical = Arc::new(Typical::default());
        let decay = Duration::from_secs(10);
        let mut g = InFlightGuard::start(&ep, Some(&typical), Duration::from_secs(10));
        g.hold(None, Duration::ZERO, Some((Instant::now(), decay)));
        g.streams(true, decay);
        assert_eq!(ep.stream_counts(), (0, 0), "not streaming before its first token");
        g.data(b"data: {\"t\":1}\n\n");
        assert_eq!(ep.stream_counts(), (1, 1));
        assert_eq!(ep.token_seconds(crate::now_ns(), decay, typical_prior(&typical)), None, "no gap seen yet");
        // An event split across chunks counts once, when it ends; CRLF line ends count too.
        std::thread::sleep(Duration::from_millis(20));
        g.data(b"data: a\n");
        assert_eq!(ep.stream_counts(), (1, 1));
        g.data(b"\ndata: b\r\n\r\n");
        assert_eq!(ep.stream_counts(), (1, 3));
        // Sampled at the 2nd token or later: here the 20 ms over two tokens, at least 10 ms a
        // token, before the answer has ended.
        let t = ep.token_seconds(crate::now_ns(), decay, typical_prior(&typical)).unwrap();
        assert!(t >= 0.009, "{t}");
        g.data(b"data: c\n\ndata: d\n\n");
        assert_eq!(ep.stream_counts(), (1, 5));
        assert_eq!(typical.tokens_per_answer(), 3.0, "the longest stream at its last sample, while none has ended");
        g.finish();
        assert_eq!(ep.stream_counts(), (0, 0), "an ended stream gives back its tokens");
        assert_eq!(ep.in_flight(), 0);
        assert_eq!(typical.tokens_per_answer(), 5.0);
    }

    #[test]
    fn a_stream_counts_at_most_a_typical_answer_and_a_broken_one_gives_its_tokens_back() {
        let ep = Arc::new(Endpoint::new("127.0.0.1:9".parse().unwrap(), Protocol::Http1, 0));
        let typical = Arc::new(Typical::default());
        let decay = Duration::from_secs(10);
        typical.observe_stream(None, 4, true, decay); // answers have had 4 tokens
        let mut g = InFlightGuard::start(&ep, Some(&typical), Duration::from_secs(10));
        g.hold(None, Duration::ZERO, Some((Instant::now(), decay)));
        g.streams(false, decay); // gRPC: a frame a token
        for _ in 0..10 {
            g.data(b"frame");
        }
        assert_eq!(ep.stream_counts(), (1, 3), "at most the typical answer less one");
        drop(g);
        assert_eq!(ep.stream_counts(), (0, 0));
        // Without streams() nothing is counted (an ordinary answer).
        let mut g = InFlightGuard::start(&ep, Some(&typical), Duration::from_secs(10));
        g.hold(None, Duration::ZERO, Some((Instant::now(), decay)));
        g.data(b"data: x\n\n");
        assert_eq!(ep.stream_counts(), (0, 0));
    }

    #[test]
    fn an_answer_tells_how_much_of_what_was_asked_streams() {
        let ep = Arc::new(Endpoint::new("127.0.0.1:9".parse().unwrap(), Protocol::Http1, 0));
        let typical = Arc::new(Typical::default());
        let decay = Duration::from_secs(10);
        assert_eq!(typical.expected_tokens(Some(100)), Some(100.0), "before any answer: what is asked");
        assert_eq!(typical.expected_tokens(None), None);
        let mut g =
            InFlightGuard::start(&ep, Some(&typical), decay).asking(Some(100), typical.expected_tokens(Some(100)));
        let other = InFlightGuard::start(&ep, Some(&typical), decay); // says nothing: a typical 40
        assert_eq!(ep.in_flight_mean_tokens(40.0), 70.0, "in flight: one expected to stream 100, one typical");
        drop(other);
        g.hold(None, Duration::ZERO, Some((Instant::now(), decay)));
        g.streams(true, decay);
        for _ in 0..25 {
            g.data(b"data: x\n\n");
        }
        g.finish();
        let e = typical.expected_tokens(Some(400)).unwrap();
        assert!((e - 100.0).abs() < 0.5, "a quarter of what is asked streams: {e}");
        // An answer that broke off says nothing.
        let mut g =
            InFlightGuard::start(&ep, Some(&typical), decay).asking(Some(100), typical.expected_tokens(Some(100)));
        g.hold(None, Duration::ZERO, Some((Instant::now(), decay)));
        g.streams(true, decay);
        g.data(b"data: x\n\n");
        drop(g);
        assert!((typical.expected_tokens(Some(400)).unwrap() - 100.0).abs() < 0.5);
        assert_eq!(ep.in_flight_mean_tokens(40.0), 0.0, "nothing in flight, nothing expected");
        let g = InFlightGuard::start(&ep, None, decay).asking(Some(400), Some(100.0));
        assert_eq!(ep.in_flight_mean_tokens(40.0), 100.0);
        drop(g);
    }

    #[test]
    fn an_attempt_given_up_before_its_answer_counts_as_at_least_that_slow() {
        let ep = Arc::new(Endpoint::new("127.0.0.1:9".parse().unwrap(), Protocol::Http1, 0));
        let decay = Duration::from_secs(10);
        let prior = vane_route::balance::Prior::default();
        // A measured endpoint: 1 ms to first byte.
        ep.observe(Some(Duration::from_millis(1)), None, decay);
        // An attempt cancelled after 30 ms with nothing back (a hedge elsewhere won).
        let g = InFlightGuard::start(&ep, None, decay);
        std::thread::sleep(Duration::from_millis(30));
        drop(g);
        let first = ep.measured_first_byte_ns(crate::now_ns(), decay, prior).unwrap();
        assert!(first >= 30e6, "{first}");
        // One that was answered says nothing more than its answer.
        let mut g = InFlightGuard::start(&ep, None, decay);
        g.hold(None, Duration::ZERO, None); // a refusal, not timed
        std::thread::sleep(Duration::from_millis(60));
        drop(g);
        let after = ep.measured_first_byte_ns(crate::now_ns(), decay, prior).unwrap();
        assert!(after < 60e6, "{after}");
    }

    fn typical_prior(t: &Typical) -> vane_route::balance::Prior {
        vane_route::balance::Prior { tokens: t.tokens_per_answer(), ..Default::default() }
    }
}
