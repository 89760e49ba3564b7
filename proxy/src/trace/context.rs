//! W3C Trace Context: the `traceparent` header, and the sampling decision (parent-based, then
//! a ratio of trace ids for new traces, as OpenTelemetry's `ParentBased(TraceIdRatioBased)`).

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";

/// A trace id and a span id, with the sampled flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanIds {
    /// 16 bytes, not all zero.
    pub trace: [u8; 16],
    /// 8 bytes, not all zero.
    pub span: [u8; 8],
    /// The `sampled` trace flag.
    pub sampled: bool,
}

fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = d(pair[0])? << 4 | d(pair[1])?;
    }
    Some(out)
}

/// Parses a `traceparent` value (`00-<trace id>-<parent id>-<flags>`). Per the spec, a version
/// other than `00` is read by its first four fields, `ff` is invalid, and so are ids of zeros
/// and upper-case hex.
pub fn parse(v: &[u8]) -> Option<SpanIds> {
    if v.len() < 55 || (v.len() > 55 && v.get(55) != Some(&b'-')) {
        return None;
    }
    let version = hex::<1>(&v[0..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace = hex::<16>(&v[3..35])?;
    let span = hex::<8>(&v[36..52])?;
    let flags = hex::<1>(&v[53..55])?[0];
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some(SpanIds { trace, span, sampled: flags & 1 == 1 })
}

/// Formats a `traceparent` value.
pub fn format(ids: &SpanIds) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    for b in ids.trace {
        let _ = write!(s, "{b:02x}");
    }
    s.push('-');
    for b in ids.span {
        let _ = write!(s, "{b:02x}");
    }
    s.push_str(if ids.sampled { "-01" } else { "-00" });
    s
}

/// Whether a request is sampled: as its parent says when it has one, else when the low 8 bytes
/// of its new trace id fall under `ratio` of the range (so every hop of a trace that starts
/// without a parent decides alike).
pub fn sampled(parent: Option<&SpanIds>, trace: &[u8; 16], ratio: f64) -> bool {
    match parent {
        Some(p) => p.sampled,
        None => {
            let mut low = [0u8; 8];
            low.copy_from_slice(&trace[8..]);
            let x = u64::from_be_bytes(low) >> 1;
            (x as f64) < ratio * (1u64 << 63) as f64
        }
    }
}

/// A new random id, never all zero.
pub fn random<const N: usize>(rng: &mut fastrand::Rng) -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        rng.fill(&mut out);
        if out != [0; N] {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let ids = parse(EXAMPLE).unwrap();
        assert!(ids.sampled);
        assert_eq!(ids.span, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(format(&ids).as_bytes(), EXAMPLE);
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // A later version may add fields after a dash.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later").is_some());
    }

    #[test]
    fn sampling_follows_the_parent_then_the_ratio() {
        let mut rng = fastrand::Rng::with_seed(7);
        let parent = parse(EXAMPLE).unwrap();
        let t = random::<16>(&mut rng);
        assert!(sampled(Some(&parent), &t, 0.0));
        assert!(!sampled(Some(&SpanIds { sampled: false, ..parent }), &t, 1.0));
        assert!(sampled(None, &t, 1.0));
        assert!(!sampled(None, &t, 0.0));
        let n = (0..20_000).filter(|_| sampled(None, &random::<16>(&mut rng), 0.25)).count();
        assert!((4_500..5_500).contains(&n), "{n} of 20000 at 25 %");
    }
}
