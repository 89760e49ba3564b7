//! Bounded label values for what requests name themselves (callers, models): the first `max`
//! distinct values are kept, later ones are counted as `other`, so that a caller cannot grow the
//! metrics without bound. Values are cut to [`MAX_VALUE_BYTES`] and characters outside a safe set
//! become `_` (they come from requests, and the exposition format is text).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The longest label value kept.
pub const MAX_VALUE_BYTES: usize = 64;

/// The value of everything past the cap.
pub const OTHER: &str = "other";

/// A set of at most `max` label values.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: Mutex<HashSet<Arc<str>>>,
    other: Arc<str>,
    none: Arc<str>,
}

impl LabelCap {
    /// Keeps at most `max` distinct values.
    pub fn new(max: usize) -> LabelCap {
        LabelCap { max, seen: Mutex::default(), other: OTHER.into(), none: "-".into() }
    }

    /// The label value for `v`: itself (cleaned) while there is room, else `other`; `-` for none.
    pub fn admit(&self, v: Option<&str>) -> Arc<str> {
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            return Arc::clone(&self.none);
        };
        let clean = clean(v);
        let mut seen = crate::lock(&self.seen);
        if let Some(k) = seen.get(clean.as_str()) {
            return Arc::clone(k);
        }
        if seen.len() >= self.max || clean == OTHER {
            return Arc::clone(&self.other);
        }
        let k: Arc<str> = clean.into();
        seen.insert(Arc::clone(&k));
        k
    }
}

/// `v` cut to [`MAX_VALUE_BYTES`], with characters other than ASCII letters, digits and
/// `._-:/@+` replaced by `_`.
pub fn clean(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-:/@+".contains(c) { c } else { '_' })
        .take(MAX_VALUE_BYTES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_is_other() {
        let cap = LabelCap::new(2);
        assert_eq!(&*cap.admit(Some("a")), "a");
        assert_eq!(&*cap.admit(Some("b")), "b");
        assert_eq!(&*cap.admit(Some("c")), "other");
        assert_eq!(&*cap.admit(Some("a")), "a", "a value seen before stays itself");
        assert_eq!(&*cap.admit(None), "-");
        assert_eq!(&*cap.admit(Some("")), "-");
    }

    #[test]
    fn values_are_cleaned_and_cut() {
        let cap = LabelCap::new(10);
        assert_eq!(&*cap.admit(Some("team\"a\"\n{x}")), "team_a___x_");
        assert_eq!(&*cap.admit(Some("meta-llama/Llama-3.1-8B")), "meta-llama/Llama-3.1-8B");
        assert_eq!(cap.admit(Some(&"é".repeat(200))).len(), MAX_VALUE_BYTES);
        // A caller that calls itself `other` takes no slot of its own.
        let cap = LabelCap::new(1);
        assert_eq!(&*cap.admit(Some("other")), "other");
        assert_eq!(&*cap.admit(Some("x")), "x");
    }
}
