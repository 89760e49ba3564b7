//! A request's priority (`vane-priority`), which shedding reads and the metrics count by, and the
//! outcome classes requests are counted under by priority.

use http::HeaderMap;

/// The request header that gives a request's priority.
pub const PRIORITY_HEADER: &str = "vane-priority";

/// How much a request matters when its backend is saturated (the Gateway API Inference
/// Extension's criticality names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Never shed.
    Critical,
    /// Shed when the backend is saturated (the default).
    Standard,
    /// Shed first: at half the queue, or 80 % of the in-flight limit.
    Sheddable,
}

impl Priority {
    /// Every priority, in label order.
    pub const ALL: [Priority; 3] = [Priority::Critical, Priority::Standard, Priority::Sheddable];

    /// The priority `vane-priority` gives (`critical`, `standard`, `sheddable`, any case);
    /// `standard` when absent or unknown.
    pub fn of(headers: &HeaderMap) -> Priority {
        match headers.get(PRIORITY_HEADER).map(|v| v.as_bytes()) {
            Some(v) if v.eq_ignore_ascii_case(b"critical") => Priority::Critical,
            Some(v) if v.eq_ignore_ascii_case(b"sheddable") => Priority::Sheddable,
            _ => Priority::Standard,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Standard => "standard",
            Priority::Sheddable => "sheddable",
        }
    }

    /// Index into [`Priority::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What became of a request, as counted by priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered below 400.
    Success,
    /// Refused by this proxy to protect its backend: shed (`429 shed`) or a deadline the queue
    /// could not meet (`504 deadline-unmeetable`).
    Shed,
    /// Any other 4xx (the caller's error, a denial, the model server's own 429).
    Rejected,
    /// A 5xx (the endpoint's, or the proxy's when it could not get an answer).
    Failed,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 4] = [Outcome::Success, Outcome::Shed, Outcome::Rejected, Outcome::Failed];

    /// The outcome of an answer with `status` and the proxy's own error reason (`""` when the
    /// answer is the endpoint's).
    pub fn of(status: u16, error: &str) -> Outcome {
        match (status, error) {
            (_, "shed" | "deadline-unmeetable") => Outcome::Shed,
            (..400, _) => Outcome::Success,
            (400..500, _) => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Shed => "shed",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }

    /// Index into [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_from_the_header() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(PRIORITY_HEADER, http::HeaderValue::from_static(v));
            Priority::of(&h)
        };
        assert_eq!(Priority::of(&HeaderMap::new()), Priority::Standard);
        assert_eq!(with("critical"), Priority::Critical);
        assert_eq!(with("Sheddable"), Priority::Sheddable);
        assert_eq!(with("standard"), Priority::Standard);
        assert_eq!(with("urgent!!"), Priority::Standard);
        for (i, p) in Priority::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
    }

    #[test]
    fn outcomes() {
        let cases = [
            (200, "", Outcome::Success),
            (304, "", Outcome::Success),
            (429, "shed", Outcome::Shed),
            (504, "deadline-unmeetable", Outcome::Shed),
            (429, "", Outcome::Rejected),
            (403, "unauthorized", Outcome::Rejected),
            (404, "no-route", Outcome::Rejected),
            (502, "connect-failed", Outcome::Failed),
            (503, "", Outcome::Failed),
            (500, "", Outcome::Failed),
        ];
        for (status, error, want) in cases {
            assert_eq!(Outcome::of(status, error), want, "{status} {error}");
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
