//! NDJSON (newline-delimited JSON) over HTTP bodies.
//!
//! Reading: [`lines`] turns any [`http_body::Body`] (a `hyper::body::Incoming`, say) into a
//! stream of lines through `tokio-util`: the body's data frames become an `AsyncRead`
//! (`StreamReader`), framed by `LinesCodec` with a maximum length. Empty lines are skipped, a
//! trailing `\r` is dropped, a line over the limit is an error (the stream is then over), and a
//! body that ends in the middle of a line is an error rather than a short last line.
//!
//! Writing: [`to_line`] serializes one value as a line, and [`ChannelBody`] is a response body
//! fed one line (or any chunk) at a time through an `mpsc` channel.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt, stream::MapErr};
use http_body::{Body, Frame};
use http_body_util::{BodyDataStream, BodyExt};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NdjsonError {
    /// A line longer than the limit (no newline within `max` bytes).
    #[error("line longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The body ended in the middle of a line.
    #[error("stream ended inside a line ({0} bytes without a newline)")]
    Truncated(usize),
    /// The body failed, or a line is not UTF-8.
    #[error("reading the stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `LinesCodec` with a maximum, that refuses a partial last line.
#[derive(Debug)]
struct Codec {
    inner: LinesCodec,
    max: usize,
}

impl Decoder for Codec {
    type Item = String;
    type Error = NdjsonError;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<String>, NdjsonError> {
        loop {
            match self.inner.decode(buf) {
                Ok(Some(line)) if line.is_empty() => continue,
                Ok(other) => return Ok(other),
                Err(LinesCodecError::MaxLineLengthExceeded) => return Err(NdjsonError::TooLong { max: self.max }),
                Err(LinesCodecError::Io(e)) => return Err(NdjsonError::Io(e)),
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<String>, NdjsonError> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None if buf.iter().all(|b| b.is_ascii_whitespace()) => Ok(None),
            None => Err(NdjsonError::Truncated(buf.len())),
        }
    }
}

type DataStream<B> = MapErr<BodyDataStream<B>, fn(<B as Body>::Error) -> std::io::Error>;

/// The lines of a body; see [`lines`].
#[derive(Debug)]
pub struct Lines<B: Body> {
    inner: FramedRead<StreamReader<DataStream<B>, Bytes>, Codec>,
    done: bool,
}

/// Reads `body` as lines of at most `max_line` bytes (newline excluded).
pub fn lines<B>(body: B, max_line: usize) -> Lines<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let to_io: fn(B::Error) -> std::io::Error = |e| std::io::Error::other(e);
    let reader = StreamReader::new(body.into_data_stream().map_err(to_io));
    let codec = Codec { inner: LinesCodec::new_with_max_length(max_line), max: max_line };
    Lines { inner: FramedRead::new(reader, codec), done: false }
}

impl<B> Lines<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// The next line; `None` at the end of the body. After an error, `None` follows.
    pub async fn next_line(&mut self) -> Option<Result<String, NdjsonError>> {
        futures_util::StreamExt::next(self).await
    }
}

impl<B> Stream for Lines<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Item = Result<String, NdjsonError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Err(_)) | None) = &next {
            // An overlong line would otherwise be skipped and the stream go on: stop instead.
            this.done = true;
        }
        next
    }
}

/// `value` as one JSON line, newline included.
pub fn to_line<T: serde::Serialize + ?Sized>(value: &T) -> Result<Bytes, serde_json::Error> {
    let mut out = serde_json::to_vec(value)?;
    out.push(b'\n');
    Ok(Bytes::from(out))
}

/// A streaming response body: each chunk sent on the channel is one data frame. The body ends
/// when every sender is dropped.
#[derive(Debug)]
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl ChannelBody {
    /// A body and the sender that feeds it, buffering up to `buffer` chunks (at least 1).
    pub fn channel(buffer: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        (tx, ChannelBody(rx))
    }
}

impl From<mpsc::Receiver<Bytes>> for ChannelBody {
    fn from(rx: mpsc::Receiver<Bytes>) -> ChannelBody {
        ChannelBody(rx)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// A body made of these chunks, optionally failing after them.
    fn body(chunks: &[&'static [u8]], fail: bool) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c)))).collect();
        if fail {
            frames.push(Err(std::io::Error::other("connection reset")));
        }
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn all<B: Body<Data = Bytes> + Unpin>(mut l: Lines<B>) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        while let Some(line) = l.next_line().await {
            out.push(line.map_err(|e| e.to_string()));
        }
        out
    }

    #[tokio::test]
    async fn lines_split_across_chunks_and_skip_blank_ones() {
        let got = all(lines(body(&[b"{\"a\":", b"1}\r\n\n{\"b\"", b":2}\n", b"\n"], false), 64)).await;
        assert_eq!(got, [Ok("{\"a\":1}".to_string()), Ok("{\"b\":2}".to_string())]);
    }

    #[tokio::test]
    async fn an_overlong_line_is_an_error_and_ends_the_stream() {
        let got = all(lines(body(&[b"ok\n", b"0123456789", b"0123456789\nafter\n"], false), 16)).await;
        assert_eq!(got, [Ok("ok".to_string()), Err("line longer than 16 bytes".to_string())]);
    }

    #[tokio::test]
    async fn a_cut_off_last_line_and_a_broken_body_are_errors() {
        let got = all(lines(body(&[b"one\ntw"], false), 64)).await;
        assert_eq!(got[0], Ok("one".to_string()));
        assert!(got[1].as_ref().is_err_and(|e| e.contains("inside a line")), "{got:?}");
        let got = all(lines(body(&[b"one\n"], true), 64)).await;
        assert_eq!(got[0], Ok("one".to_string()));
        assert!(got[1].as_ref().is_err_and(|e| e.contains("connection reset")), "{got:?}");
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn written_lines_read_back() {
        let (tx, rx) = ChannelBody::channel(4);
        tx.send(to_line(&serde_json::json!({"type": "ping"})).unwrap()).await.unwrap();
        tx.send(to_line(&[1, 2]).unwrap()).await.unwrap();
        drop(tx);
        let got = all(lines(rx, 64)).await;
        assert_eq!(got, [Ok(r#"{"type":"ping"}"#.to_string()), Ok("[1,2]".to_string())]);
    }
}
