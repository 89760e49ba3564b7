//! A parser for the Prometheus text exposition format (0.0.4), and the parts of OpenMetrics text
//! that model servers emit when asked for it (`# EOF`, `# UNIT`, exemplars, float timestamps).
//!
//! The probe reads a model server's own `/metrics` page up to a hundred times a second, so the
//! parser borrows from the page and allocates nothing per sample: a [`Sample`] holds slices of
//! the page, and label values are unescaped only when asked for ([`LabelValue::to_cow`]). It is
//! a pure function of its input and never panics, whatever the bytes: every index is checked and
//! every malformed line becomes a [`ParseError`] that names the line.
//!
//! ```
//! use vane_gpu_probe::expo::{samples, Item};
//!
//! let page = "# TYPE vllm:num_requests_waiting gauge\n\
//!             vllm:num_requests_waiting{model_name=\"llama\",engine=\"0\"} 3.0\n";
//! let mut waiting = 0.0;
//! for item in samples(page) {
//!     if let Item::Sample(s) = item.expect("well-formed page") {
//!         assert_eq!(s.labels.get("model_name").as_deref(), Some("llama"));
//!         waiting += s.value;
//!     }
//! }
//! assert_eq!(waiting, 3.0);
//! ```

use std::borrow::Cow;
use std::fmt;

/// One meaningful line of a page. Blank lines and free comments are skipped.
#[derive(Clone, Debug, PartialEq)]
pub enum Item<'a> {
    /// `# HELP name text` (the text is left escaped, as on the page).
    Help {
        /// The metric family the line documents.
        name: &'a str,
        /// The docstring.
        text: &'a str,
    },
    /// `# TYPE name kind`.
    Type {
        /// The metric family.
        name: &'a str,
        /// Its declared type.
        kind: MetricType,
    },
    /// A sample line.
    Sample(Sample<'a>),
}

/// The metric types the text formats can declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `gaugehistogram` (OpenMetrics)
    GaugeHistogram,
    /// `summary`
    Summary,
    /// `info` (OpenMetrics)
    Info,
    /// `stateset` (OpenMetrics)
    StateSet,
    /// `untyped` (Prometheus) or `unknown` (OpenMetrics)
    Untyped,
}

impl MetricType {
    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "untyped" | "unknown" => MetricType::Untyped,
            _ => return None,
        })
    }
}

/// One sample: `name{labels} value [timestamp]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The sample's name, including any `_bucket`/`_sum`/`_count`/`_total` suffix.
    pub name: &'a str,
    /// Its labels, validated but still escaped.
    pub labels: Labels<'a>,
    /// The value; `NaN`, `+Inf` and `-Inf` are allowed.
    pub value: f64,
    /// The timestamp in milliseconds since the Unix epoch, if the line has one.
    pub timestamp_ms: Option<i64>,
}

/// A validated label set, kept as the text between the braces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Labels<'a> {
    raw: &'a str,
}

/// A label value as it stands on the page (escapes not yet undone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelValue<'a> {
    raw: &'a str,
}

/// Why a page could not be read, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub kind: ParseErrorKind,
}

/// What was wrong with a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The metric name is empty or has a character outside `[a-zA-Z0-9_:]`.
    #[error("invalid metric name")]
    BadMetricName,
    /// A label name is empty or has a character outside `[a-zA-Z0-9_]`.
    #[error("invalid label name")]
    BadLabelName,
    /// The label set is not closed by `}` before the end of the line.
    #[error("unterminated label set")]
    UnterminatedLabels,
    /// A label name is not followed by `=`.
    #[error("expected `=` after a label name")]
    ExpectedEquals,
    /// A label value does not start with `"`.
    #[error("expected `\"` to open a label value")]
    ExpectedQuote,
    /// A label value runs to the end of the line.
    #[error("unterminated label value")]
    UnterminatedValue,
    /// Two labels are not separated by `,`, or the set is not closed by `}`.
    #[error("expected `,` or `}}` in a label set")]
    ExpectedCommaOrBrace,
    /// The line ends where the value should be.
    #[error("missing sample value")]
    MissingValue,
    /// The value is not a number, `NaN` or `±Inf`.
    #[error("invalid sample value")]
    BadValue,
    /// The timestamp is not a number.
    #[error("invalid timestamp")]
    BadTimestamp,
    /// Something follows the timestamp that is not an exemplar.
    #[error("unexpected text after the sample")]
    TrailingText,
    /// `# HELP` or `# TYPE` without a valid metric name.
    #[error("`# HELP`/`# TYPE` without a valid metric name")]
    BadDescriptorName,
    /// `# TYPE` with a type that neither format defines.
    #[error("unknown metric type")]
    BadType,
}

/// Iterates over the meaningful lines of `page`. The iterator stops after the first error
/// and at an OpenMetrics `# EOF`.
pub fn samples(page: &str) -> Samples<'_> {
    Samples { lines: page.split('\n'), line: 0, done: false }
}

/// Parses a whole page into its samples (dropping HELP and TYPE), or the first error.
pub fn parse(page: &str) -> Result<Vec<Sample<'_>>, ParseError> {
    let mut out = Vec::new();
    for item in samples(page) {
        if let Item::Sample(s) = item? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The iterator returned by [`samples`].
#[derive(Clone, Debug)]
pub struct Samples<'a> {
    lines: std::str::Split<'a, char>,
    line: usize,
    done: bool,
}

impl<'a> Iterator for Samples<'a> {
    type Item = Result<Item<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let raw = self.lines.next()?;
            self.line += 1;
            let text = raw.strip_suffix('\r').unwrap_or(raw);
            match parse_line(text) {
                Ok(Line::Skip) => continue,
                Ok(Line::Eof) => self.done = true,
                Ok(Line::Item(item)) => return Some(Ok(item)),
                Err(kind) => {
                    self.done = true;
                    return Some(Err(ParseError { line: self.line, kind }));
                }
            }
        }
        None
    }
}

enum Line<'a> {
    Skip,
    Eof,
    Item(Item<'a>),
}

fn parse_line(text: &str) -> Result<Line<'_>, ParseErrorKind> {
    let text = skip_ws(text);
    match text.as_bytes().first() {
        None => Ok(Line::Skip),
        Some(b'#') => parse_comment(&text[1..]),
        Some(_) => parse_sample(text).map(|s| Line::Item(Item::Sample(s))),
    }
}

fn parse_comment(rest: &str) -> Result<Line<'_>, ParseErrorKind> {
    let rest = skip_ws(rest);
    let (word, after) = split_word(rest);
    match word {
        "HELP" | "TYPE" => {
            let after = skip_ws(after);
            let (name, tail) = take_metric_name(after);
            if name.is_empty() || !(tail.is_empty() || tail.starts_with([' ', '\t'])) {
                return Err(ParseErrorKind::BadDescriptorName);
            }
            if word == "HELP" {
                // One separating space; the rest of the line, escapes and all, is the text.
                let text = tail.strip_prefix([' ', '\t']).unwrap_or(tail);
                Ok(Line::Item(Item::Help { name, text }))
            } else {
                let (kind_word, tail) = split_word(skip_ws(tail));
                let kind = MetricType::from_word(kind_word).ok_or(ParseErrorKind::BadType)?;
                if !skip_ws(tail).is_empty() {
                    return Err(ParseErrorKind::BadType);
                }
                Ok(Line::Item(Item::Type { name, kind }))
            }
        }
        "EOF" if skip_ws(after).is_empty() => Ok(Line::Eof),
        // `# UNIT` and free comments carry nothing the probe needs.
        _ => Ok(Line::Skip),
    }
}

fn parse_sample(text: &str) -> Result<Sample<'_>, ParseErrorKind> {
    let (name, rest) = take_metric_name(text);
    if name.is_empty() {
        return Err(ParseErrorKind::BadMetricName);
    }
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => {
            let (raw, after) = take_label_set(inner)?;
            (Labels { raw }, after)
        }
        None => {
            // Without labels the name must end at whitespace (this also catches `na-me 1`).
            if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
                return Err(ParseErrorKind::BadMetricName);
            }
            (Labels::default(), rest)
        }
    };
    let (value_word, rest) = split_word(skip_ws(rest));
    if value_word.is_empty() {
        return Err(ParseErrorKind::MissingValue);
    }
    let value = parse_value(value_word).ok_or(ParseErrorKind::BadValue)?;
    let rest = skip_ws(rest);
    let (timestamp_ms, rest) = match rest.as_bytes().first() {
        None | Some(b'#') => (None, rest),
        Some(_) => {
            let (ts_word, after) = split_word(rest);
            (Some(parse_timestamp(ts_word).ok_or(ParseErrorKind::BadTimestamp)?), skip_ws(after))
        }
    };
    // What may follow is an OpenMetrics exemplar (` # {trace_id="…"} 1.0`), which is ignored.
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(ParseErrorKind::TrailingText);
    }
    Ok(Sample { name, labels, value, timestamp_ms })
}

/// Splits `{…}` contents off `s` (which starts just after `{`), validating every label.
/// Returns the contents and the text after `}`.
fn take_label_set(s: &str) -> Result<(&str, &str), ParseErrorKind> {
    let mut it = LabelIter { rest: s, closed: false };
    while it.next_pair()?.is_some() {}
    if !it.closed {
        return Err(ParseErrorKind::UnterminatedLabels);
    }
    // `rest` starts right after the closing `}`, which is one byte.
    let consumed = s.len().saturating_sub(it.rest.len());
    let inner = s.get(..consumed.saturating_sub(1)).unwrap_or("");
    Ok((inner, it.rest))
}

fn parse_value(word: &str) -> Option<f64> {
    // Rust's float parser accepts what Go's does for this format (`NaN`, `+Inf`, `-Inf`,
    // exponents), and also `inf`/`infinity` in any case, which is harmless.
    word.parse::<f64>().ok()
}

fn parse_timestamp(word: &str) -> Option<i64> {
    if let Ok(ms) = word.parse::<i64>() {
        return Some(ms);
    }
    // OpenMetrics writes timestamps as seconds, possibly fractional.
    let secs = word.parse::<f64>().ok()?;
    let ms = secs * 1000.0;
    (ms.is_finite() && ms.abs() < 9.0e18).then_some(ms as i64)
}

fn skip_ws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Splits at the first space or tab.
fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Takes the longest valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) from the front of `s`.
fn take_metric_name(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    if !bytes.first().is_some_and(|&b| is_name_start(b)) {
        return ("", s);
    }
    let end = bytes.iter().position(|&b| !is_name_char(b)).unwrap_or(bytes.len());
    // `end` sits on an ASCII byte or at the end, so both halves are valid UTF-8.
    s.split_at_checked(end).unwrap_or((s, ""))
}

/// Takes a label name (`[a-zA-Z_][a-zA-Z0-9_]*`) from the front of `s`.
fn take_label_name(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    if !bytes.first().is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_') {
        return ("", s);
    }
    let end = bytes.iter().position(|&b| !(b.is_ascii_alphanumeric() || b == b'_')).unwrap_or(bytes.len());
    s.split_at_checked(end).unwrap_or((s, ""))
}

/// Finds the closing quote of a label value, skipping escaped characters. `s` starts just
/// after the opening quote; returns the index of the closing quote.
fn find_closing_quote(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

// === impl Labels ===

impl<'a> Labels<'a> {
    /// The labels as they stand between the braces.
    pub fn as_raw(&self) -> &'a str {
        self.raw
    }

    /// True when the sample has no labels.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Iterates over `(name, value)` pairs in page order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, LabelValue<'a>)> + use<'a> {
        let mut it = LabelIter { rest: self.raw, closed: false };
        // The set was validated when the line was parsed, so errors cannot occur here; if one
        // did, iteration would simply stop.
        std::iter::from_fn(move || it.next_pair().ok().flatten())
    }

    /// The unescaped value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.value(name).map(|v| v.to_cow())
    }

    /// The raw value of label `name`, if present.
    pub fn value(&self, name: &str) -> Option<LabelValue<'a>> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

struct LabelIter<'a> {
    /// What is left after the last pair. While validating a line this runs on to the closing
    /// `}` and beyond; inside [`Labels`] it stops before the brace.
    rest: &'a str,
    /// Set when the iteration stopped at a closing `}`.
    closed: bool,
}

impl<'a> LabelIter<'a> {
    /// The next pair; `Ok(None)` at the closing `}` or the end of the text.
    fn next_pair(&mut self) -> Result<Option<(&'a str, LabelValue<'a>)>, ParseErrorKind> {
        let s = skip_ws(self.rest);
        if s.is_empty() {
            self.rest = s;
            return Ok(None);
        }
        if let Some(after) = s.strip_prefix('}') {
            self.rest = after;
            self.closed = true;
            return Ok(None);
        }
        let (name, s) = take_label_name(s);
        if name.is_empty() {
            return Err(ParseErrorKind::BadLabelName);
        }
        let s = skip_ws(s).strip_prefix('=').ok_or(ParseErrorKind::ExpectedEquals)?;
        let s = skip_ws(s).strip_prefix('"').ok_or(ParseErrorKind::ExpectedQuote)?;
        let close = find_closing_quote(s).ok_or(ParseErrorKind::UnterminatedValue)?;
        let (raw, s) = s.split_at_checked(close).ok_or(ParseErrorKind::UnterminatedValue)?;
        let s = skip_ws(s.get(1..).unwrap_or(""));
        self.rest = match s.as_bytes().first() {
            Some(b',') => &s[1..],
            Some(b'}') | None => s,
            Some(_) => return Err(ParseErrorKind::ExpectedCommaOrBrace),
        };
        Ok(Some((name, LabelValue { raw })))
    }
}

// === impl LabelValue ===

impl<'a> LabelValue<'a> {
    /// The value as it stands on the page.
    pub fn as_raw(&self) -> &'a str {
        self.raw
    }

    /// The value with `\\`, `\"` and `\n` undone; borrows when there was nothing to undo.
    pub fn to_cow(&self) -> Cow<'a, str> {
        if !self.raw.contains('\\') {
            return Cow::Borrowed(self.raw);
        }
        let mut out = String::with_capacity(self.raw.len());
        let mut chars = self.raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        Cow::Owned(out)
    }

    /// Compares the unescaped value with `s` without allocating in the common case.
    pub fn eq_str(&self, s: &str) -> bool {
        if self.raw.contains('\\') { self.to_cow() == s } else { self.raw == s }
    }
}

impl fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cow())
    }
}

#[cfg(test)]
mod tests;
