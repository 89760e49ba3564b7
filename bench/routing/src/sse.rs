//! Counts the tokens of a streamed completion as its bytes arrive.
//!
//! An OpenAI-style stream is Server-Sent Events: `data: {json}` lines, events separated by a
//! blank line, ending with `data: [DONE]`. vLLM (and the simulator) send one event per sampled
//! token, so every data event with a non-empty `choices` list counts as one token. Events may
//! be split across body frames or several may share one; a partial event is carried over.

/// Incremental SSE reader.
#[derive(Debug, Default)]
pub struct TokenCounter {
    carry: Vec<u8>,
    tokens: u64,
    done: bool,
}

impl TokenCounter {
    /// Reads one body frame; returns how many token events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> u64 {
        let before = self.tokens;
        self.carry.extend_from_slice(chunk);
        let mut start = 0;
        while let Some((event_len, sep_len)) = find_event_end(&self.carry[start..]) {
            let (tokens, done) = read_event(&self.carry[start..start + event_len]);
            self.tokens += tokens;
            self.done |= done;
            start += event_len + sep_len;
        }
        self.carry.drain(..start);
        self.tokens - before
    }

    /// Tokens counted so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Whether `data: [DONE]` arrived.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// The token events and whether `[DONE]` is in one event.
fn read_event(event: &[u8]) -> (u64, bool) {
    let (mut tokens, mut done) = (0, false);
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else { continue };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            done = true;
        } else if !data.is_empty() && !contains(data, b"\"choices\":[]") {
            tokens += 1;
        }
    }
    (tokens, done)
}

/// The end of the first complete event: its length and the separator's length.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] =
        b"data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\" a\"}]}\n\n";

    #[test]
    fn counts_whole_and_split_events() {
        let mut c = TokenCounter::default();
        assert_eq!(c.push(TOKEN), 1);
        let two = [TOKEN, TOKEN].concat();
        assert_eq!(c.push(&two), 2);
        // Split at every byte boundary.
        let (a, b) = TOKEN.split_at(17);
        assert_eq!(c.push(a), 0);
        assert_eq!(c.push(b), 1);
        assert!(!c.done());
        assert_eq!(c.push(b"data: {\"choices\":[],\"usage\":{\"completion_tokens\":4}}\n\ndata: [DONE]\n\n"), 0);
        assert!(c.done());
        assert_eq!(c.tokens(), 4);
    }

    #[test]
    fn byte_by_byte_and_crlf() {
        let mut c = TokenCounter::default();
        let stream = [TOKEN, TOKEN, b"data: [DONE]\r\n\r\n"].concat();
        let n: u64 = stream.iter().map(|b| c.push(std::slice::from_ref(b))).sum();
        assert_eq!(n, 2);
        assert!(c.done());
    }
}
