//! Token counts of a model answer, read as its body passes, never buffered.
//!
//! - OpenAI-style answers carry `"usage": {"prompt_tokens": .., "completion_tokens": ..}` (or
//!   `input_tokens` / `output_tokens`): in a JSON answer once, in a stream in the last event
//!   that has it (`stream_options.include_usage`, or servers that always send it; earlier events
//!   may carry `"usage": null`). [`UsageScanner`] looks for the key in each chunk, with a few
//!   bytes carried over so that a key split across chunks is found, and copies only the usage
//!   object itself (at most [`MAX_USAGE_BYTES`]); the last one seen wins.
//! - Without usage, a stream's output tokens are its SSE events (one per token, as model
//!   servers send them), less a final `data: [DONE]`.
//!
//! Internal: a `"usage"` inside a string of the answer (a model writing JSON) is escaped there
//! (`\"usage\"`), so a key preceded by a backslash is skipped.

use serde::Deserialize;

/// The most bytes of one usage object copied (a real one is under 200).
pub const MAX_USAGE_BYTES: usize = 1024;

const KEY: &[u8] = b"\"usage\"";
const DONE: &[u8] = b"data: [DONE]";

/// The tokens an answer reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input: u64,
    /// Completion (output) tokens.
    pub output: u64,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

/// What the scanner is doing.
#[derive(Debug)]
enum State {
    /// Looking for the key; `tail` holds the last bytes of the previous chunk.
    Search,
    /// After the key, before its value: skipping `:` and white space.
    Colon,
    /// Copying the usage object: the bytes so far, brace depth, inside a string, after a `\`.
    Copy { depth: u32, in_str: bool, escaped: bool },
}

/// Reads the usage and SSE event count of an answer, chunk by chunk.
#[derive(Debug)]
pub struct UsageScanner {
    state: State,
    /// The last `KEY.len()` bytes seen (a key or `[DONE]` split across chunks).
    tail: Vec<u8>,
    copy: Vec<u8>,
    usage: Option<Usage>,
    sse: bool,
    /// The last byte ended a line (an SSE event ends at an empty line).
    newline: bool,
    events: u64,
    done: bool,
}

impl UsageScanner {
    /// A scanner for a JSON answer (`sse: false`) or an SSE stream.
    pub fn new(sse: bool) -> UsageScanner {
        UsageScanner {
            state: State::Search,
            tail: Vec::with_capacity(16),
            copy: Vec::new(),
            usage: None,
            sse,
            newline: false,
            events: 0,
            done: false,
        }
    }

    /// Scans one chunk.
    pub fn chunk(&mut self, chunk: &[u8]) {
        if self.sse {
            self.count_events(chunk);
        }
        let mut i = 0;
        while i < chunk.len() {
            i = match self.state {
                State::Search => self.search(chunk, i),
                State::Colon => self.colon(chunk, i),
                State::Copy { .. } => self.copy(chunk, i),
            };
        }
        let keep = KEY.len().max(DONE.len());
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let over = self.tail.len().saturating_sub(keep);
            self.tail.drain(..over);
        }
    }

    /// The last usage seen, if any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Output tokens by count of SSE events (without a final `[DONE]`).
    pub fn events(&self) -> u64 {
        self.events.saturating_sub(u64::from(self.done))
    }

    /// Output tokens: the reported ones, else (for a stream) the events.
    pub fn output_tokens(&self) -> Option<u64> {
        match self.usage {
            Some(u) => Some(u.output),
            None if self.sse => Some(self.events()),
            None => None,
        }
    }

    fn count_events(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'\n' if self.newline => {
                    self.events += 1;
                    self.newline = false;
                }
                b'\n' => self.newline = true,
                b'\r' => {}
                _ => self.newline = false,
            }
        }
        if !self.done && find(&self.tail, chunk, DONE).is_some() {
            self.done = true;
        }
    }

    /// Looks for the key from `i`; returns where to go on.
    fn search(&mut self, chunk: &[u8], i: usize) -> usize {
        match find(if i == 0 { &self.tail } else { &[] }, &chunk[i..], KEY) {
            Some((end, escaped)) => {
                if !escaped {
                    self.state = State::Colon;
                }
                i + end
            }
            None => chunk.len(),
        }
    }

    fn colon(&mut self, chunk: &[u8], mut i: usize) -> usize {
        while i < chunk.len() {
            match chunk[i] {
                b' ' | b'\t' | b'\r' | b'\n' | b':' => i += 1,
                b'{' => {
                    self.copy.clear();
                    self.state = State::Copy { depth: 0, in_str: false, escaped: false };
                    return i;
                }
                // `null`, or not a usage object after all.
                _ => {
                    self.state = State::Search;
                    return i;
                }
            }
        }
        i
    }

    fn copy(&mut self, chunk: &[u8], i: usize) -> usize {
        let State::Copy { mut depth, mut in_str, mut escaped } = self.state else {
            return chunk.len();
        };
        for (j, &b) in chunk.iter().enumerate().skip(i) {
            self.copy.push(b);
            if self.copy.len() > MAX_USAGE_BYTES {
                self.state = State::Search;
                self.copy.clear();
                return j + 1;
            }
            if in_str {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if let Ok(w) = serde_json::from_slice::<Wire>(&self.copy) {
                            let old = self.usage.unwrap_or_default();
                            self.usage = Some(Usage {
                                input: w.prompt_tokens.unwrap_or(old.input),
                                output: w.completion_tokens.unwrap_or(old.output),
                            });
                        }
                        self.copy.clear();
                        self.state = State::Search;
                        return j + 1;
                    }
                }
                _ => {}
            }
        }
        self.state = State::Copy { depth, in_str, escaped };
        chunk.len()
    }
}

/// Finds `needle` in `tail ++ chunk` where it ends inside `chunk`: the index in `chunk` just
/// past it, and whether a backslash comes right before it.
fn find(tail: &[u8], chunk: &[u8], needle: &[u8]) -> Option<(usize, bool)> {
    let n = needle.len();
    // Ends that straddle the previous chunk's tail and this chunk.
    for end in 1..n.min(chunk.len() + 1) {
        let from_tail = n - end;
        if from_tail > tail.len() {
            continue;
        }
        let t = &tail[tail.len() - from_tail..];
        if t == &needle[..from_tail] && chunk[..end] == needle[from_tail..] {
            let before = if tail.len() > from_tail { tail.get(tail.len() - from_tail - 1) } else { None };
            return Some((end, before == Some(&b'\\')));
        }
    }
    let at = chunk.windows(n).position(|w| w == needle)?;
    let before = if at > 0 { chunk.get(at - 1) } else { tail.last() };
    Some((at + n, before == Some(&b'\\')))
}

/// Time per output token of a stream: the time from its first token to its end over the tokens
/// after the first; `None` with fewer than two tokens.
pub fn tpot(first_token_s: f64, end_s: f64, tokens: u64) -> Option<f64> {
    (tokens >= 2 && end_s >= first_token_s).then(|| (end_s - first_token_s) / (tokens - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(sse: bool, chunks: &[&[u8]]) -> UsageScanner {
        let mut s = UsageScanner::new(sse);
        for c in chunks {
            s.chunk(c);
        }
        s
    }

    const JSON: &[u8] = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#;

    #[test]
    fn usage_from_a_json_answer_in_any_split() {
        for cut in 0..JSON.len() {
            let s = scan(false, &[&JSON[..cut], &JSON[cut..]]);
            assert_eq!(s.usage(), Some(Usage { input: 12, output: 34 }), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = JSON.chunks(1).collect();
        assert_eq!(scan(false, &bytes).usage(), Some(Usage { input: 12, output: 34 }));
    }

    #[test]
    fn responses_api_names_and_no_usage() {
        let s = scan(false, &[br#"{"usage": {"input_tokens": 3, "output_tokens": 4}}"#]);
        assert_eq!(s.usage(), Some(Usage { input: 3, output: 4 }));
        let s = scan(false, &[br#"{"choices":[]}"#]);
        assert_eq!((s.usage(), s.output_tokens()), (None, None));
    }

    #[test]
    fn usage_from_the_last_sse_event_split_across_chunks() {
        let mut stream = Vec::new();
        for t in ["a", "b", "c"] {
            stream.extend_from_slice(
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}],\"usage\":null}}\n\n").as_bytes(),
            );
        }
        stream.extend_from_slice(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n");
        stream.extend_from_slice(b"data: [DONE]\n\n");
        for cut in 0..stream.len() {
            let s = scan(true, &[&stream[..cut], &stream[cut..]]);
            assert_eq!(s.usage(), Some(Usage { input: 7, output: 3 }), "cut at {cut}");
            assert_eq!(s.events(), 4, "cut at {cut}: three tokens, the usage event, [DONE] not counted");
        }
    }

    #[test]
    fn events_count_without_usage() {
        let s = scan(true, &[b"data: one\n\ndata: two\r\n\r\n", b"data: three\n", b"\ndata: [DO", b"NE]\n\n"]);
        assert_eq!((s.usage(), s.output_tokens()), (None, Some(3)));
    }

    #[test]
    fn an_oversized_usage_object_is_dropped() {
        let mut big = b"{\"usage\":{\"prompt_tokens\":1,\"pad\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'x', 2 * MAX_USAGE_BYTES));
        big.extend_from_slice(b"\"}}");
        let s = scan(false, &[&big]);
        assert_eq!(s.usage(), None);
        assert!(s.copy.capacity() <= 2 * MAX_USAGE_BYTES + 64);
    }

    #[test]
    fn tpot_arithmetic() {
        assert_eq!(tpot(0.5, 1.5, 11), Some(0.1));
        assert_eq!(tpot(0.5, 0.5, 2), Some(0.0));
        assert_eq!(tpot(0.5, 1.5, 1), None);
        assert_eq!(tpot(0.5, 1.5, 0), None);
        assert_eq!(tpot(2.0, 1.0, 5), None);
    }
}
