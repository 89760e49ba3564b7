//! The OpenAI-compatible surface, as vLLM serves it: request parsing (how big a request is)
//! and response bodies (JSON and SSE chunks). Pure: no I/O.
//!
//! A request's size is all the engine needs:
//! - prompt tokens: the `"prompt_tokens"` extension field when present, else the prompt's
//!   characters ÷ 4 rounded up (at least 1): `prompt` for completions (a string, a list of
//!   token ids, or a list holding one of those), the `content` of every message for chat
//!   (strings or `{"type":"text","text":..}` parts);
//! - output tokens: `max_tokens` (chat also takes `max_completion_tokens`), default 128. The
//!   simulated model never stops early, so every request generates exactly that many tokens
//!   and finishes with `"finish_reason": "length"`; `ignore_eos` is accepted and changes
//!   nothing.

use http::StatusCode;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// Output tokens when the request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 128;

/// Characters per token when the size is read from text.
pub const CHARS_PER_TOKEN: usize = 4;

/// The end of every stream.
pub const DONE: &str = "data: [DONE]\n\n";

/// The words the simulated model says, one token each, in turn.
const WORDS: [&str; 16] = [
    " the", " model", " routes", " each", " request", " to", " a", " server", " that", " will", " answer", " it",
    " soonest", " and", " then", " streams",
];

/// Which API a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    Chat,
}

/// What the simulator reads from a generation request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenRequest {
    /// The API.
    pub endpoint: Endpoint,
    /// The `model` field, if any.
    pub model: Option<String>,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Tokens to generate.
    pub max_tokens: u32,
    /// Whether to answer as server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    pub include_usage: bool,
}

/// An error answer, in vLLM's JSON shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message for the client.
    pub message: String,
}

/// Renders one request's answer; made once per request, used for every chunk.
#[derive(Clone, Debug)]
pub struct Reply {
    endpoint: Endpoint,
    /// `"id":"..","object":"..","created":..,"model":".."` for chunks.
    chunk_head: String,
    id: String,
    created: u64,
    model: String,
}

// === impl ApiError ===

impl ApiError {
    /// A 400 with this message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let kind = match self.status {
            StatusCode::NOT_FOUND => "NotFoundError",
            StatusCode::BAD_REQUEST => "BadRequestError",
            StatusCode::TOO_MANY_REQUESTS => "RateLimitError",
            _ => "InternalServerError",
        };
        json!({"error": {
            "message": self.message,
            "type": kind,
            "param": null,
            "code": self.status.as_u16(),
        }})
        .to_string()
    }
}

/// Tokens in `chars` characters of text.
pub fn tokens_for_chars(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(CHARS_PER_TOKEN).max(1)).unwrap_or(u32::MAX)
}

/// Reads a generation request's body.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<GenRequest, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let Value::Object(o) = v else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let model = match o.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("model must be a string")),
    };
    if let Some(n) = o.get("n")
        && !n.is_null()
        && n.as_u64() != Some(1)
    {
        return Err(ApiError::bad_request("only n = 1 is simulated"));
    }
    let prompt_tokens = match o.get("prompt_tokens") {
        Some(v) if !v.is_null() => positive(v, "prompt_tokens")?,
        _ => match endpoint {
            Endpoint::Completions => prompt_size(o.get("prompt"))?,
            Endpoint::Chat => messages_size(o.get("messages"))?,
        },
    };
    let max = match endpoint {
        Endpoint::Completions => o.get("max_tokens"),
        Endpoint::Chat => o.get("max_completion_tokens").filter(|v| !v.is_null()).or(o.get("max_tokens")),
    };
    let max_tokens = match max {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => positive(v, "max_tokens")?,
    };
    let stream = match o.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("stream must be a boolean")),
    };
    let include_usage =
        o.get("stream_options").and_then(|s| s.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok(GenRequest { endpoint, model, prompt_tokens, max_tokens, stream, include_usage })
}

fn positive(v: &Value, name: &str) -> Result<u32, ApiError> {
    v.as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be an integer >= 1")))
}

fn prompt_size(prompt: Option<&Value>) -> Result<u32, ApiError> {
    let unsupported = || ApiError::bad_request("batched prompts are not simulated: send one prompt");
    match prompt {
        Some(Value::String(s)) => Ok(tokens_for_chars(s.chars().count())),
        Some(Value::Array(items)) => match items.as_slice() {
            [] => Err(ApiError::bad_request("prompt is empty")),
            [one @ (Value::String(_) | Value::Array(_))] => prompt_size(Some(one)),
            ids if ids.iter().all(Value::is_u64) => Ok(u32::try_from(ids.len()).unwrap_or(u32::MAX)),
            _ => Err(unsupported()),
        },
        Some(_) => Err(ApiError::bad_request("prompt must be a string or a list of token ids")),
        None => Err(ApiError::bad_request("prompt is required")),
    }
}

fn messages_size(messages: Option<&Value>) -> Result<u32, ApiError> {
    let Some(Value::Array(messages)) = messages else {
        return Err(ApiError::bad_request("messages must be a list"));
    };
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages is empty"));
    }
    let mut chars = 0;
    for m in messages {
        match m.get("content") {
            Some(Value::String(s)) => chars += s.chars().count(),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(Value::String(t)) = p.get("text") {
                        chars += t.chars().count();
                    }
                }
            }
            _ => {}
        }
    }
    Ok(tokens_for_chars(chars))
}

/// The `/v1/models` body.
pub fn models(model: &str, max_model_len: u32, created: u64) -> String {
    json!({"object": "list", "data": [{
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": model,
        "parent": null,
        "max_model_len": max_model_len,
        "permission": [],
    }]})
    .to_string()
}

/// The text of token `n` (1-based).
pub fn token_text(n: u32) -> &'static str {
    WORDS[(n as usize - 1) % WORDS.len()]
}

// === impl Reply ===

impl Reply {
    /// The answer to request number `seq` for `model`, created at `created` (Unix seconds).
    pub fn new(endpoint: Endpoint, seq: u64, model: &str, created: u64) -> Self {
        let (id, object) = match endpoint {
            Endpoint::Completions => (format!("cmpl-{seq}"), "text_completion"),
            Endpoint::Chat => (format!("chatcmpl-{seq}"), "chat.completion.chunk"),
        };
        let chunk_head =
            format!("\"id\":\"{id}\",\"object\":\"{object}\",\"created\":{created},\"model\":{}", Value::from(model));
        Self { endpoint, chunk_head, id, created, model: model.to_owned() }
    }

    /// The non-streaming body for a finished request.
    pub fn complete(&self, prompt_tokens: u32, completion_tokens: u32) -> String {
        let mut text = String::with_capacity(completion_tokens as usize * 7);
        for n in 1..=completion_tokens {
            text.push_str(token_text(n));
        }
        let usage = usage(prompt_tokens, completion_tokens);
        match self.endpoint {
            Endpoint::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null,
                             "finish_reason": "length", "stop_reason": null}],
                "usage": usage,
            }),
            Endpoint::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": text},
                             "logprobs": null, "finish_reason": "length", "stop_reason": null}],
                "usage": usage,
            }),
        }
        .to_string()
    }

    /// The SSE event(s) for token `n` of `total`. Chat streams open with a role chunk, sent
    /// with the first token as vLLM does.
    pub fn token_events(&self, n: u32, total: u32) -> String {
        let mut out = String::with_capacity(256);
        let finish = if n == total { "\"length\"" } else { "null" };
        // Internal: the token texts are plain ASCII words, so they need no JSON escaping.
        let text = token_text(n);
        match self.endpoint {
            Endpoint::Completions => {
                let _ = write!(
                    out,
                    "data: {{{},\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\
                     \"finish_reason\":{finish},\"stop_reason\":null}}]}}\n\n",
                    self.chunk_head
                );
            }
            Endpoint::Chat => {
                if n == 1 {
                    let _ = write!(
                        out,
                        "data: {{{},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\
                         \"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
                        self.chunk_head
                    );
                }
                let _ = write!(
                    out,
                    "data: {{{},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\
                     \"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n",
                    self.chunk_head
                );
            }
        }
        out
    }

    /// The closing usage event (`stream_options.include_usage`).
    pub fn usage_event(&self, prompt_tokens: u32, completion_tokens: u32) -> String {
        format!(
            "data: {{{},\"choices\":[],\"usage\":{}}}\n\n",
            self.chunk_head,
            usage(prompt_tokens, completion_tokens)
        )
    }
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "total_tokens": u64::from(prompt_tokens) + u64::from(completion_tokens),
        "completion_tokens": completion_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completions(body: Value) -> Result<GenRequest, ApiError> {
        parse(Endpoint::Completions, body.to_string().as_bytes())
    }

    fn chat(body: Value) -> Result<GenRequest, ApiError> {
        parse(Endpoint::Chat, body.to_string().as_bytes())
    }

    #[test]
    fn prompt_size_from_text_ids_or_the_extension_field() {
        let r = completions(json!({"model": "m", "prompt": "x".repeat(400)})).unwrap();
        assert_eq!((r.prompt_tokens, r.max_tokens, r.stream), (100, 128, false));
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(completions(json!({"prompt": "abcde"})).unwrap().prompt_tokens, 2);
        assert_eq!(completions(json!({"prompt": ""})).unwrap().prompt_tokens, 1);
        assert_eq!(completions(json!({"prompt": [1, 2, 3]})).unwrap().prompt_tokens, 3);
        assert_eq!(completions(json!({"prompt": ["abcdefgh"]})).unwrap().prompt_tokens, 2);
        assert_eq!(completions(json!({"prompt": [[5, 6]]})).unwrap().prompt_tokens, 2);
        let r = completions(json!({"prompt": "hi", "prompt_tokens": 4000, "max_tokens": 7,
                                   "ignore_eos": true, "stream": true,
                                   "stream_options": {"include_usage": true}}))
        .unwrap();
        assert_eq!((r.prompt_tokens, r.max_tokens, r.stream, r.include_usage), (4000, 7, true, true));
        // The extension field alone is enough.
        assert_eq!(completions(json!({"prompt_tokens": 9})).unwrap().prompt_tokens, 9);
    }

    #[test]
    fn chat_size_counts_every_message() {
        let r = chat(json!({"messages": [
            {"role": "system", "content": "x".repeat(40)},
            {"role": "user", "content": [{"type": "text", "text": "y".repeat(40)},
                                         {"type": "image_url", "image_url": {"url": "u"}}]},
        ], "max_completion_tokens": 5}))
        .unwrap();
        assert_eq!((r.prompt_tokens, r.max_tokens), (20, 5));
        let r = chat(json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3})).unwrap();
        assert_eq!((r.prompt_tokens, r.max_tokens), (2, 3));
    }

    #[test]
    fn bad_requests_are_400() {
        for body in [
            json!({}),
            json!([1]),
            json!({"prompt": "a", "max_tokens": 0}),
            json!({"prompt": "a", "max_tokens": -1}),
            json!({"prompt": "a", "max_tokens": "5"}),
            json!({"prompt": "a", "n": 2}),
            json!({"prompt": ["a", "b"]}),
            json!({"prompt": []}),
            json!({"prompt": 5}),
            json!({"prompt": "a", "stream": "yes"}),
            json!({"prompt": "a", "model": 3}),
            json!({"prompt_tokens": 0}),
        ] {
            let e = completions(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        }
        assert!(chat(json!({"messages": []})).is_err());
        assert!(parse(Endpoint::Chat, b"{not json").is_err());
        let body: Value = serde_json::from_str(&ApiError::bad_request("why").body()).unwrap();
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(body["error"]["type"], "BadRequestError");
    }

    #[test]
    fn chunks_are_valid_json_one_token_each() {
        for endpoint in [Endpoint::Completions, Endpoint::Chat] {
            let r = Reply::new(endpoint, 7, "we\"ird", 1_700_000_000);
            let mut text = String::new();
            for n in 1..=3 {
                for event in r.token_events(n, 3).split_terminator("\n\n") {
                    let v: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
                    assert_eq!(v["model"], "we\"ird");
                    let c = &v["choices"][0];
                    let t = c["text"].as_str().or(c["delta"]["content"].as_str()).unwrap();
                    text.push_str(t);
                    let last = n == 3 && !t.is_empty();
                    assert_eq!(c["finish_reason"] == "length", last, "{event}");
                }
            }
            assert_eq!(text, " the model routes");
            let v: Value = serde_json::from_str(&r.complete(10, 3)).unwrap();
            assert_eq!(v["usage"], json!({"prompt_tokens": 10, "total_tokens": 13, "completion_tokens": 3}));
            let u = r.usage_event(10, 3);
            let v: Value = serde_json::from_str(u.trim_end().strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["usage"]["completion_tokens"], 3);
        }
    }
}
