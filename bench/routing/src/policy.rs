//! Client-side balancing: `llm-load` itself picks a backend for each request and sends it there
//! directly, with no proxy in between, as reference points for the proxy's algorithms.
//!
//! - `least_request`: the backend with the fewest requests this client has outstanding there
//!   (ties drawn at random), what a client library with a connection per replica could do;
//! - `oracle`: reads every backend's true state (`GET /state` on the simulator, all at once,
//!   each with a short timeout) at send time and picks the backend where this request, whose
//!   prompt and `max_tokens` the client knows, would finish soonest by
//!   [`crate::oracle::estimate_us`], counting the traffic still to come as what this client sent
//!   there over the last [`RATE_WINDOW`] (it is the only client): that rate, with those requests'
//!   mean sizes (the workload's means while it sent none). A backend whose state does not come in time is left out; when none comes, the choice
//!   falls back to `least_request`.
//!
//! A backend may join late: `URL@SECONDS` is a candidate only from that many seconds after the
//! run's start (a replica that is scaled up mid-run).

use crate::load::HttpClient;
use crate::oracle::{Arrivals, State, estimate_us};
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;

/// How far back the oracle counts the requests it sent to a backend, for its arrival rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(2);

/// How a request's backend is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// The `--url` targets in turn (one target: a proxy).
    #[default]
    InTurn,
    /// Fewest requests outstanding from this client.
    LeastRequest,
    /// Soonest estimated finish from each backend's true state.
    Oracle,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "in_turn" => Ok(Policy::InTurn),
            "least_request" => Ok(Policy::LeastRequest),
            "oracle" => Ok(Policy::Oracle),
            _ => Err(format!("{s:?}: expected in_turn, least_request or oracle")),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::InTurn => "in_turn",
            Policy::LeastRequest => "least_request",
            Policy::Oracle => "oracle",
        })
    }
}

/// A backend a client-side policy may send to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Its completion endpoint (`/v1/completions` when the URL has no path).
    pub url: Uri,
    /// Its `/state`.
    pub state: Uri,
    /// From when, after the run's start, it is a candidate.
    pub from: Duration,
}

impl FromStr for Backend {
    type Err = String;

    /// `http://HOST:PORT[/PATH][@SECONDS]`.
    fn from_str(s: &str) -> Result<Backend, String> {
        let (url, from) = match s.rsplit_once('@') {
            Some((u, secs)) => {
                let secs: f64 = secs.parse().map_err(|_| format!("{s:?}: @{secs} is not a number of seconds"))?;
                (u, Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: bad join time"))?)
            }
            None => (s, Duration::ZERO),
        };
        let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let authority = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?.clone();
        let scheme = uri.scheme_str().unwrap_or("http");
        let url = match uri.path() {
            "" | "/" => format!("{scheme}://{authority}/v1/completions").parse(),
            _ => Ok(uri.clone()),
        }
        .map_err(|e| format!("{url:?}: {e}"))?;
        let state = format!("{scheme}://{authority}/state").parse().map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Backend { url, state, from })
    }
}

/// Picks backends for one run and keeps this client's outstanding count per backend.
#[derive(Debug)]
pub struct Chooser {
    policy: Policy,
    backends: Vec<Backend>,
    outstanding: RefCell<Vec<usize>>,
    client: HttpClient,
    start: Instant,
    state_timeout: Duration,
    rng: RefCell<fastrand::Rng>,
    /// Per backend, when this client sent its last requests there (within [`RATE_WINDOW`]), and
    /// their prompt and output tokens.
    sent: RefCell<Vec<VecDeque<(Instant, u32, u32)>>>,
    /// The workload's mean prompt and output tokens.
    mean_size: (f64, f64),
}

impl Chooser {
    /// A chooser for a run that starts at `start`, of requests with these mean prompt and output
    /// tokens.
    pub fn new(
        policy: Policy,
        backends: Vec<Backend>,
        client: HttpClient,
        start: Instant,
        state_timeout: Duration,
        seed: u64,
        mean_size: (f64, f64),
    ) -> Self {
        let n = backends.len();
        Self {
            policy,
            backends,
            outstanding: RefCell::new(vec![0; n]),
            client,
            start,
            state_timeout,
            rng: RefCell::new(fastrand::Rng::with_seed(seed ^ 0xc401_ce5e)),
            sent: RefCell::new(vec![VecDeque::new(); n]),
            mean_size,
        }
    }

    /// A request of this size goes to backend `i`.
    pub fn begin(&self, i: usize, prompt: u32, max_tokens: u32) {
        self.outstanding.borrow_mut()[i] += 1;
        self.sent.borrow_mut()[i].push_back((Instant::now(), prompt, max_tokens));
    }

    /// What this client expects to send to backend `i`: what it sent there over the last
    /// [`RATE_WINDOW`] (or since the start, when that is shorter), its rate and mean sizes. The
    /// sizes are the backend's own, not the workload's: where the long requests went, the long
    /// requests are likely to keep coming.
    fn arrivals(&self, i: usize, now: Instant) -> Arrivals {
        let mut sent = self.sent.borrow_mut();
        let q = &mut sent[i];
        while q.front().is_some_and(|&(t, _, _)| now.saturating_duration_since(t) > RATE_WINDOW) {
            q.pop_front();
        }
        let span = now.saturating_duration_since(self.start).clamp(Duration::from_millis(250), RATE_WINDOW);
        let n = q.len() as f64;
        let (prompt, output) = if q.is_empty() {
            self.mean_size
        } else {
            let (p, o) = q.iter().fold((0.0, 0.0), |(p, o), &(_, a, b)| (p + f64::from(a), o + f64::from(b)));
            (p / n, o / n)
        };
        Arrivals { rate: n / span.as_secs_f64(), prompt, output }
    }

    /// A request to backend `i` ended.
    pub fn end(&self, i: usize) {
        let mut o = self.outstanding.borrow_mut();
        o[i] = o[i].saturating_sub(1);
    }

    /// The backends that have joined by now (all of them if none has).
    fn candidates(&self) -> Vec<usize> {
        let at = Instant::now().saturating_duration_since(self.start);
        let c: Vec<usize> = (0..self.backends.len()).filter(|&i| self.backends[i].from <= at).collect();
        if c.is_empty() { (0..self.backends.len()).collect() } else { c }
    }

    /// The backend for a request of this size, and for the oracle its estimated time to the last
    /// token there, in µs.
    pub async fn choose(&self, prompt: u32, max_tokens: u32) -> (usize, Option<f64>) {
        let candidates = self.candidates();
        match self.policy {
            Policy::InTurn | Policy::LeastRequest => (self.least_request(&candidates), None),
            Policy::Oracle => {
                let states = self.states(&candidates).await;
                let now = Instant::now();
                let scored: Vec<(usize, f64)> = states
                    .into_iter()
                    .filter_map(|(i, s)| Some((i, estimate_us(&s?, prompt, max_tokens, self.arrivals(i, now)))))
                    .collect();
                if scored.is_empty() {
                    return (self.least_request(&candidates), None);
                }
                let o = self.outstanding.borrow();
                let best = scored.iter().map(|&(i, e)| (e, o[i])).fold((f64::INFINITY, usize::MAX), |a, b| {
                    if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) { b } else { a }
                });
                let ties: Vec<usize> =
                    scored.iter().filter(|&&(i, e)| e == best.0 && o[i] == best.1).map(|&(i, _)| i).collect();
                (ties[self.rng.borrow_mut().usize(..ties.len())], Some(best.0))
            }
        }
    }

    fn least_request(&self, candidates: &[usize]) -> usize {
        let o = self.outstanding.borrow();
        let min = candidates.iter().map(|&i| o[i]).min().unwrap_or(0);
        let ties: Vec<usize> = candidates.iter().copied().filter(|&i| o[i] == min).collect();
        ties[self.rng.borrow_mut().usize(..ties.len())]
    }

    /// Every candidate's `/state`, read at once; `None` where it failed or came too late.
    async fn states(&self, candidates: &[usize]) -> Vec<(usize, Option<State>)> {
        let tasks: Vec<_> = candidates
            .iter()
            .map(|&i| {
                let (client, uri, timeout) = (self.client.clone(), self.backends[i].state.clone(), self.state_timeout);
                (i, tokio::task::spawn_local(async move { tokio::time::timeout(timeout, fetch(&client, uri)).await }))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (i, t) in tasks {
            out.push((i, t.await.ok().and_then(Result::ok).flatten()));
        }
        out
    }
}

async fn fetch(client: &HttpClient, uri: Uri) -> Option<State> {
    let req = http::Request::get(uri).body(Full::new(Bytes::new())).ok()?;
    let resp = client.request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    State::from_json(&serde_json::from_slice(&body).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_policies_parse() {
        let b: Backend = "http://127.0.0.1:19300".parse().unwrap();
        assert_eq!(b.url, "http://127.0.0.1:19300/v1/completions");
        assert_eq!(b.state, "http://127.0.0.1:19300/state");
        assert_eq!(b.from, Duration::ZERO);
        let b: Backend = "http://127.0.0.1:19303/v1/completions@6.5".parse().unwrap();
        assert_eq!(b.url, "http://127.0.0.1:19303/v1/completions");
        assert_eq!(b.state, "http://127.0.0.1:19303/state");
        assert_eq!(b.from, Duration::from_millis(6500));
        assert!("http://127.0.0.1:1@soon".parse::<Backend>().is_err());
        assert!("/v1/completions".parse::<Backend>().is_err());
        for p in ["in_turn", "least_request", "oracle"] {
            assert_eq!(p.parse::<Policy>().unwrap().to_string(), p);
        }
        assert!("p2c".parse::<Policy>().is_err());
    }

    fn chooser(policy: Policy, backends: &[&str]) -> Chooser {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        Chooser::new(
            policy,
            backends.iter().map(|b| b.parse().unwrap()).collect(),
            client,
            Instant::now(),
            Duration::from_millis(50),
            1,
            (100.0, 100.0),
        )
    }

    #[tokio::test]
    async fn least_request_spreads_and_waits_for_late_joiners() {
        let c =
            chooser(Policy::LeastRequest, &["http://127.0.0.1:9", "http://127.0.0.1:10", "http://127.0.0.1:11@3600"]);
        let mut picks = Vec::new();
        for _ in 0..4 {
            let (i, estimate) = c.choose(10, 10).await;
            assert_eq!(estimate, None);
            c.begin(i, 10 * (i as u32 + 1), 20);
            picks.push(i);
        }
        picks.sort_unstable();
        assert_eq!(picks, vec![0, 0, 1, 1], "the third has not joined");
        c.end(0);
        c.end(0);
        assert_eq!(c.choose(10, 10).await.0, 0);
        // Two requests to each of the first two within the first 250 ms: 8 per second.
        let a = c.arrivals(0, Instant::now());
        assert_eq!((a.rate, a.prompt, a.output), (8.0, 10.0, 20.0));
        assert_eq!(c.arrivals(1, Instant::now()).prompt, 20.0);
        let none = c.arrivals(2, Instant::now());
        assert_eq!((none.rate, none.prompt, none.output), (0.0, 100.0, 100.0), "the workload's means");
    }

    #[tokio::test]
    async fn the_oracle_falls_back_to_least_request_without_states() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                // Nothing listens on these ports: no state comes.
                let c = chooser(Policy::Oracle, &["http://127.0.0.1:9", "http://127.0.0.1:10"]);
                c.begin(0, 10, 10);
                assert_eq!(c.choose(10, 10).await, (1, None));
            })
            .await;
    }
}
