//! Token counts of KServe v2 (Triton) requests and answers, as far as the protocol gives them.
//!
//! KServe v2 carries tensors, not token counts, so tokens are read only where a tensor is one:
//! - **Output**: a tensor named `sequence_length` (TensorRT-LLM's count of generated tokens per
//!   sequence), summed: in an `/infer` answer's `outputs`, or as a top-level field of a Triton
//!   `/generate` answer (whose fields are named after the output tensors). A `generate_stream`
//!   answer is SSE and counts one token per event, as other streams do.
//! - **Input**: in an `/infer` request, a tensor named `input_lengths` or `REQUEST_INPUT_LEN`
//!   (summed), else the element count of `input_ids`.
//!
//! Anything else (an image model, an ensemble that returns only `text_output`) has no token count;
//! its requests, time to first token and GPU-seconds are still counted. An answer is parsed only
//! up to [`MAX_ANSWER_BYTES`], from a copy kept beside the stream, which passes unchanged.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The most bytes of a KServe answer copied for its token count; past it the answer has none.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A tensor, its data left unparsed (an image's floats are skipped over, not built).
#[derive(Deserialize)]
struct Tensor<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(default)]
    shape: Vec<u64>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    inputs: Vec<Tensor<'a>>,
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    outputs: Option<Vec<Tensor<'a>>>,
    #[serde(borrow, default)]
    sequence_length: Option<&'a RawValue>,
}

/// The sum of a tensor's data: a number, or (nested) arrays of numbers.
fn sum(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::Array(a) => a.iter().try_fold(0u64, |acc, x| sum(x).map(|s| acc.saturating_add(s))),
        _ => None,
    }
}

fn sum_raw(raw: Option<&RawValue>) -> Option<u64> {
    sum(&serde_json::from_str(raw?.get()).ok()?)
}

/// Output tokens of a KServe v2 `/infer` or Triton `/generate` JSON answer; `None` when it
/// names none (or is not JSON).
pub fn output_tokens(answer: &[u8]) -> Option<u64> {
    let a: Answer<'_> = serde_json::from_slice(answer).ok()?;
    match a.outputs {
        Some(outputs) => sum_raw(outputs.iter().find(|t| t.name == "sequence_length")?.data),
        None => sum_raw(a.sequence_length),
    }
}

/// Input tokens of a KServe v2 `/infer` request body; `None` when it names none.
pub fn input_tokens(request: &[u8]) -> Option<u64> {
    let r: Request<'_> = serde_json::from_slice(request).ok()?;
    let named = |n: &str| r.inputs.iter().find(|i| i.name == n);
    if let Some(lengths) = named("input_lengths").or_else(|| named("REQUEST_INPUT_LEN")) {
        return sum_raw(lengths.data);
    }
    named("input_ids")?.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// The copy of a KServe answer kept for its token count, bounded by [`MAX_ANSWER_BYTES`].
#[derive(Debug, Default)]
pub struct AnswerCopy {
    bytes: Vec<u8>,
    over: bool,
}

impl AnswerCopy {
    /// Keeps `chunk`, unless the answer has grown past the cap (then nothing more is kept).
    pub fn chunk(&mut self, chunk: &[u8]) {
        if self.over {
            return;
        }
        if self.bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            self.over = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(chunk);
    }

    /// The answer's output tokens, if it was kept whole and names them.
    pub fn output_tokens(&self) -> Option<u64> {
        (!self.over).then(|| output_tokens(&self.bytes)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tokens_of_infer_and_generate_answers() {
        let cases: [(&str, Option<u64>); 8] = [
            (
                r#"{"model_name":"tensorrt_llm","outputs":[{"name":"output_ids","datatype":"INT32","shape":[1,1,4],"data":[5,6,7,8]},{"name":"sequence_length","datatype":"INT32","shape":[1,1],"data":[42]}]}"#,
                Some(42),
            ),
            // Two sequences (a batch of two, or two beams).
            (r#"{"outputs":[{"name":"sequence_length","shape":[2,1],"data":[[10],[12]]}]}"#, Some(22)),
            // An image model: no token count.
            (r#"{"model_name":"resnet","outputs":[{"name":"probs","shape":[1,3],"data":[0.1,0.2,0.7]}]}"#, None),
            // Triton generate: output tensors as fields.
            (r#"{"model_name":"ensemble","text_output":"hi","sequence_length":[17]}"#, Some(17)),
            (r#"{"model_name":"ensemble","text_output":"hi","sequence_length":9}"#, Some(9)),
            (r#"{"model_name":"ensemble","text_output":"hi"}"#, None),
            (r#"{"outputs":[{"name":"sequence_length","data":["x"]}]}"#, None),
            ("not json", None),
        ];
        for (answer, want) in cases {
            assert_eq!(output_tokens(answer.as_bytes()), want, "{answer}");
        }
    }

    #[test]
    fn input_tokens_of_infer_requests() {
        let cases: [(&str, Option<u64>); 5] = [
            (
                r#"{"inputs":[{"name":"input_ids","datatype":"INT32","shape":[1,5],"data":[1,2,3,4,5]},{"name":"input_lengths","datatype":"INT32","shape":[1,1],"data":[5]}]}"#,
                Some(5),
            ),
            (r#"{"inputs":[{"name":"REQUEST_INPUT_LEN","shape":[1,1],"data":[[31]]}]}"#, Some(31)),
            (r#"{"inputs":[{"name":"input_ids","shape":[2,7],"data":[]}]}"#, Some(14)),
            (r#"{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[1,1],"data":["hello"]}]}"#, None),
            (r#"{"text_input":"hello","parameters":{"max_tokens":8}}"#, None),
        ];
        for (request, want) in cases {
            assert_eq!(input_tokens(request.as_bytes()), want, "{request}");
        }
    }

    #[test]
    fn a_copy_past_the_cap_gives_no_count_and_frees_its_bytes() {
        let answer = br#"{"outputs":[{"name":"sequence_length","data":[3]}]}"#;
        let mut c = AnswerCopy::default();
        for piece in answer.chunks(7) {
            c.chunk(piece);
        }
        assert_eq!(c.output_tokens(), Some(3));
        let mut big = AnswerCopy::default();
        big.chunk(&answer[..10]);
        big.chunk(&vec![b' '; MAX_ANSWER_BYTES]);
        big.chunk(&answer[10..]);
        assert_eq!(big.output_tokens(), None);
        assert_eq!(big.bytes.capacity(), 0);
    }
}
