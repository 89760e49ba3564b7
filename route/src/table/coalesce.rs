//! The `coalesce:` setting of a route, compiled.

use super::Validator;
use crate::config::{CoalesceConfig, CoalesceWhen};
use http::HeaderName;

/// A route's coalescing policy, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coalesce {
    /// Which requests may share an answer.
    pub when: CoalesceWhen,
    /// Most response bytes held per answer for followers; a follower joins only while the
    /// answer so far fits.
    pub max_buffer_bytes: u64,
    /// Most followers per upstream answer.
    pub max_followers: usize,
    /// Whether requests with different `Authorization` may share.
    pub across_callers: bool,
    /// More headers that must be equal for two requests to share.
    pub vary: Vec<HeaderName>,
}

impl Validator {
    pub(super) fn coalesce(&mut self, rfield: &str, c: &CoalesceConfig) -> Coalesce {
        let field = format!("{rfield}.coalesce");
        if c.max_buffer_bytes == 0 {
            self.err(format!("{field}.max_buffer_bytes"), "must be greater than zero");
        }
        if c.max_followers == 0 {
            self.err(format!("{field}.max_followers"), "must be greater than zero");
        }
        let vary =
            c.vary.iter().enumerate().filter_map(|(i, h)| self.header_name(format!("{field}.vary[{i}]"), h)).collect();
        Coalesce {
            when: c.when,
            max_buffer_bytes: c.max_buffer_bytes,
            max_followers: c.max_followers,
            across_callers: c.across_callers,
            vary,
        }
    }
}
