//! Port lists as the injector writes them: `4191,8080,9000-9010`.

use std::fmt;

/// One port or an inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
}

impl fmt::Display for PortRange {
    /// The iptables form: `8080` or `9000:9010`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}:{}", self.first, self.last) }
    }
}

/// Parses a comma-separated list of ports and ranges (`a-b` or `a:b`); spaces and empty items
/// are allowed, port 0 and reversed ranges are not.
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{item:?} is not a port (1-65535) or a range of ports (9000-9010)")),
            Ok(n) => Ok(n),
        };
        let range = match item.split_once(['-', ':']) {
            Some((a, b)) => PortRange { first: port(a)?, last: port(b)? },
            None => {
                let p = port(item)?;
                PortRange { first: p, last: p }
            }
        };
        if range.first > range.last {
            return Err(format!("{item:?}: the range's first port is above its last"));
        }
        out.push(range);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_ports_and_ranges() {
        let r = |first, last| PortRange { first, last };
        for (text, want) in [
            ("4191", vec![r(4191, 4191)]),
            ("4191,4192", vec![r(4191, 4191), r(4192, 4192)]),
            (" 8080 , 9000-9010,", vec![r(8080, 8080), r(9000, 9010)]),
            ("9000:9010", vec![r(9000, 9010)]),
            ("", vec![]),
        ] {
            assert_eq!(parse_ports(text), Ok(want), "{text:?}");
        }
        for bad in ["0", "65536", "http", "10-5", "1-", "-3"] {
            assert!(parse_ports(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(r(9000, 9010).to_string(), "9000:9010");
        assert_eq!(r(80, 80).to_string(), "80");
    }
}
