//! Finding the model a request is for, and how many tokens it asks for, without buffering the
//! whole request.
//!
//! - OpenAI-style JSON bodies carry it in the top-level `model` field. [`model_from_json_prefix`]
//!   reads a *prefix* of the body (the proxy reads at most `max_sniff_bytes` and replays them), so
//!   it scans the JSON by hand and gives up cleanly when the prefix ends first.
//! - [`max_tokens_from_json`] reads the output-token limit the same way, for the balancer's cost.
//! - KServe v2 (Triton) puts it in the path: `/v2/models/{name}[/versions/{v}]/infer`.

/// The model name of a KServe v2 path, e.g. `/v2/models/resnet/infer` → `resnet`.
pub fn model_from_kserve_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/models/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// The top-level `"model"` string of a JSON object, read from a possibly incomplete prefix.
/// Returns `None` when the prefix is not a JSON object, has no top-level `model` string, or ends
/// before it.
pub fn model_from_json_prefix(buf: &[u8]) -> Option<String> {
    let mut found = None;
    fields(buf, |key, value| {
        if key != b"model" {
            return true;
        }
        if value.first() == Some(&b'"') {
            found = serde_json::from_slice::<String>(value).ok();
        }
        false
    });
    found
}

/// The most output tokens a generation request asks for, from its JSON body: the top-level
/// `max_tokens` or `max_completion_tokens` (OpenAI completions and chat), or `max_new_tokens` or
/// `max_tokens` in a top-level `parameters` object (TGI's `/generate`, KServe's generate
/// extension). `None` when the body is not a JSON object, states none of them as a non-negative
/// integer, or ends before one (a prefix).
pub fn max_tokens_from_json(buf: &[u8]) -> Option<u32> {
    let number = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u32>().ok();
    let mut found = None;
    fields(buf, |key, value| {
        match key {
            b"max_tokens" | b"max_completion_tokens" | b"max_new_tokens" => found = found.or_else(|| number(value)),
            b"parameters" => fields(value, |k, v| {
                if matches!(k, b"max_new_tokens" | b"max_tokens") {
                    found = found.or_else(|| number(v));
                }
                found.is_none()
            }),
            _ => {}
        }
        found.is_none()
    });
    found
}

/// Calls `visit` with the raw key (between its quotes, unescaped bytes as written) and the raw
/// value of each top-level field of the JSON object in `buf`, in order, until it returns
/// `false` or the object (or the prefix, or its well-formed part) ends.
fn fields(buf: &[u8], mut visit: impl FnMut(&[u8], &[u8]) -> bool) {
    let mut s = Scanner { buf, pos: 0 };
    s.ws();
    if s.eat(b'{').is_none() {
        return;
    }
    loop {
        s.ws();
        match s.peek() {
            Some(b',') => {
                s.pos += 1;
                continue;
            }
            Some(b'"') => {}
            _ => return,
        }
        let Some(key) = s.string_span() else { return };
        s.ws();
        if s.eat(b':').is_none() {
            return;
        }
        s.ws();
        let from = s.pos;
        if s.skip_value().is_none() {
            return;
        }
        if !visit(&buf[key.0 + 1..key.1 - 1], &buf[from..s.pos]) {
            return;
        }
    }
}

struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.pos += 1)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// At a `"`: returns the span including both quotes and moves past it.
    fn string_span(&mut self) -> Option<(usize, usize)> {
        let start = self.pos;
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return Some((start, self.pos));
                }
                _ => self.pos += 1,
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string_span().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string_span()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                // number, true, false, null: up to the next delimiter
                while !matches!(self.peek()?, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                    self.pos += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_model_in_openai_bodies() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"model":"llama-3-8b","messages":[]}"#, Some("llama-3-8b")),
            (r#"{ "messages": [{"role":"user","content":"say \"model\": \"x\" {"}], "model" : "m2" }"#, Some("m2")),
            (r#"{"temperature":0.5,"stream":true,"n":null,"model":"a\u00e9b"}"#, Some("aéb")),
            (r#"{"nested":{"model":"inner"},"model":"outer"}"#, Some("outer")),
            (r#"{"nested":{"model":"inner"}}"#, None),
            (r#"{"model": 7}"#, None),
            (r#"["model","x"]"#, None),
            (r#"{"messages":[{"content":"long..."#, None),
            (r#"{"model":"trunc"#, None),
            ("", None),
            ("garbage", None),
            (r#"{"prompt":"a\\","model":"esc"}"#, Some("esc")),
        ];
        for (body, want) in cases {
            assert_eq!(model_from_json_prefix(body.as_bytes()).as_deref(), *want, "{body}");
        }
    }

    #[test]
    fn never_panics_on_any_prefix() {
        let body = r#"{"a":[1,{"b":"c\"]}"}],"x":true,"model":"m","z":{}}"#;
        for i in 0..=body.len() {
            let _ = model_from_json_prefix(&body.as_bytes()[..i]);
        }
        assert_eq!(model_from_json_prefix(body.as_bytes()).as_deref(), Some("m"));
        for junk in [&b"{\"\\"[..], b"{\"a\":]", b"{\"a\":}}}}", b"{,,,", b"{\"a\"}"] {
            let _ = model_from_json_prefix(junk);
        }
    }

    #[test]
    fn finds_the_output_tokens_asked_for() {
        let cases: &[(&str, Option<u32>)] = &[
            (r#"{"model":"m","prompt":"hi","max_tokens":128,"stream":true}"#, Some(128)),
            (r#"{"messages":[{"content":"\"max_tokens\": 9"}],"max_completion_tokens": 64}"#, Some(64)),
            (r#"{"inputs":"hi","parameters":{"temperature":0,"max_new_tokens":20}}"#, Some(20)),
            (r#"{"text_input":"hi","parameters":{"max_tokens":7}}"#, Some(7)),
            (r#"{"nested":{"max_tokens":5}}"#, None),
            (r#"{"max_tokens":null}"#, None),
            (r#"{"max_tokens":-3}"#, None),
            (r#"{"max_tokens":1.5}"#, None),
            (r#"{"max_tokens":"12"}"#, None),
            (r#"{"max_tokens":99999999999}"#, None),
            (r#"{"prompt":"long and cut of"#, None),
            (r#"{"max_tokens":12"#, None),
            ("[1]", None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(max_tokens_from_json(body.as_bytes()), *want, "{body}");
        }
        let body = r#"{"a":[1,{"b":"c\"]}"}],"parameters":{"max_new_tokens":3},"max_tokens":4}"#;
        for i in 0..=body.len() {
            let _ = max_tokens_from_json(&body.as_bytes()[..i]);
        }
        assert_eq!(max_tokens_from_json(body.as_bytes()), Some(3), "the first stated wins");
    }

    #[test]
    fn kserve_paths() {
        assert_eq!(model_from_kserve_path("/v2/models/resnet/infer"), Some("resnet"));
        assert_eq!(model_from_kserve_path("/v2/models/resnet/versions/2/infer"), Some("resnet"));
        assert_eq!(model_from_kserve_path("/v2/models/resnet"), Some("resnet"));
        assert_eq!(model_from_kserve_path("/v2/models/"), None);
        assert_eq!(model_from_kserve_path("/v1/chat/completions"), None);
    }
}
