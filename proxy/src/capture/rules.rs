//! The capture rules, as a pure function of the `init` flags and of what the nat table holds
//! now (`iptables-save -t nat`), so that they can be table-tested and printed before they are
//! applied.
//!
//! Two chains of Vane's own in the nat table:
//!
//! ```text
//! PREROUTING -p tcp -j VANE_INBOUND       connections arriving at the pod
//!   VANE_INBOUND: skipped ports RETURN, every other TCP port REDIRECT to the inbound listener
//! OUTPUT -p tcp -j VANE_OUTPUT            connections the pod opens
//!   VANE_OUTPUT: the proxy's UID RETURN (its own connections leave as they are), loopback
//!   destinations RETURN, skipped ports RETURN, everything else REDIRECT to the outbound listener
//! ```
//!
//! Installing declares both chains, which creates or flushes them (`iptables-restore --noflush`
//! leaves everything else alone), and adds each jump only when the table does not hold it yet:
//! running `init` twice leaves the same rules as running it once. Removing deletes the jumps
//! and the chains that exist.

use super::ports::PortRange;

/// The chain that sends inbound TCP to the inbound listener.
pub const INBOUND_CHAIN: &str = "VANE_INBOUND";
/// The chain that sends outbound TCP to the outbound listener.
pub const OUTPUT_CHAIN: &str = "VANE_OUTPUT";

/// The jumps into Vane's chains, as `iptables-save` prints them.
const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

/// What to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// The proxy's UID: connections it opens are never captured.
    pub proxy_uid: u32,
    /// The inbound listener's port.
    pub inbound_port: u16,
    /// The outbound listener's port.
    pub outbound_port: u16,
    /// Destination ports of inbound connections left alone (the admin and probe ports).
    pub skip_inbound: Vec<PortRange>,
    /// Destination ports of outbound connections left alone.
    pub skip_outbound: Vec<PortRange>,
}

fn jump(from: &str, chain: &str) -> String {
    format!("-A {from} -p tcp -j {chain}")
}

/// Whether the saved table `save` has `line` (compared without surrounding space).
fn has_line(save: &str, line: &str) -> bool {
    save.lines().any(|l| l.trim() == line)
}

/// Whether the saved table `save` declares `chain`.
fn has_chain(save: &str, chain: &str) -> bool {
    let head = format!(":{chain} ");
    save.lines().any(|l| l.starts_with(&head))
}

impl Capture {
    /// The rules of Vane's two chains, in order (without the jumps into them).
    pub fn chain_rules(&self) -> Vec<String> {
        let mut r = Vec::new();
        for p in &self.skip_inbound {
            r.push(format!("-A {INBOUND_CHAIN} -p tcp --dport {p} -j RETURN"));
        }
        r.push(format!("-A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {}", self.inbound_port));
        r.push(format!("-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN", self.proxy_uid));
        r.push(format!("-A {OUTPUT_CHAIN} -d 127.0.0.0/8 -j RETURN"));
        for p in &self.skip_outbound {
            r.push(format!("-A {OUTPUT_CHAIN} -p tcp --dport {p} -j RETURN"));
        }
        r.push(format!("-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}", self.outbound_port));
        r
    }

    /// The `iptables-restore --noflush` input that installs the rules into a nat table that
    /// holds `save` now.
    pub fn install(&self, save: &str) -> String {
        let mut out = vec!["*nat".to_string(), format!(":{INBOUND_CHAIN} - [0:0]"), format!(":{OUTPUT_CHAIN} - [0:0]")];
        out.extend(self.chain_rules());
        for (from, chain) in JUMPS {
            let j = jump(from, chain);
            if !has_line(save, &j) {
                out.push(j);
            }
        }
        out.push("COMMIT".to_string());
        out.join("\n") + "\n"
    }
}

/// The `iptables-restore --noflush` input that removes Vane's jumps and chains from a nat table
/// that holds `save` now; `None` when there is nothing to remove.
pub fn remove(save: &str) -> Option<String> {
    let mut out = vec!["*nat".to_string()];
    for (from, chain) in JUMPS {
        let j = jump(from, chain);
        let n = save.lines().filter(|l| l.trim() == j).count();
        out.extend(std::iter::repeat_n(format!("-D {from} -p tcp -j {chain}"), n));
    }
    for (_, chain) in JUMPS {
        if has_chain(save, chain) {
            out.push(format!("-F {chain}"));
            out.push(format!("-X {chain}"));
        }
    }
    if out.len() == 1 {
        return None;
    }
    out.push("COMMIT".to_string());
    Some(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::ports::parse_ports;

    const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                         :POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    fn capture(skip_in: &str, skip_out: &str) -> Capture {
        Capture {
            proxy_uid: 2102,
            inbound_port: 4143,
            outbound_port: 4140,
            skip_inbound: parse_ports(skip_in).unwrap(),
            skip_outbound: parse_ports(skip_out).unwrap(),
        }
    }

    #[test]
    fn the_rules_follow_the_flags() {
        let cases: [(&str, &str, &[&str]); 3] = [
            (
                "4191",
                "",
                &[
                    "-A VANE_INBOUND -p tcp --dport 4191 -j RETURN",
                    "-A VANE_INBOUND -p tcp -j REDIRECT --to-ports 4143",
                    "-A VANE_OUTPUT -m owner --uid-owner 2102 -j RETURN",
                    "-A VANE_OUTPUT -d 127.0.0.0/8 -j RETURN",
                    "-A VANE_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
                ],
            ),
            (
                "4191,4192,9000-9010",
                "443,5432",
                &[
                    "-A VANE_INBOUND -p tcp --dport 4191 -j RETURN",
                    "-A VANE_INBOUND -p tcp --dport 4192 -j RETURN",
                    "-A VANE_INBOUND -p tcp --dport 9000:9010 -j RETURN",
                    "-A VANE_INBOUND -p tcp -j REDIRECT --to-ports 4143",
                    "-A VANE_OUTPUT -m owner --uid-owner 2102 -j RETURN",
                    "-A VANE_OUTPUT -d 127.0.0.0/8 -j RETURN",
                    "-A VANE_OUTPUT -p tcp --dport 443 -j RETURN",
                    "-A VANE_OUTPUT -p tcp --dport 5432 -j RETURN",
                    "-A VANE_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
                ],
            ),
            (
                "",
                "",
                &[
                    "-A VANE_INBOUND -p tcp -j REDIRECT --to-ports 4143",
                    "-A VANE_OUTPUT -m owner --uid-owner 2102 -j RETURN",
                    "-A VANE_OUTPUT -d 127.0.0.0/8 -j RETURN",
                    "-A VANE_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
                ],
            ),
        ];
        for (skip_in, skip_out, want) in cases {
            assert_eq!(capture(skip_in, skip_out).chain_rules(), want, "{skip_in} / {skip_out}");
        }
    }

    #[test]
    fn installing_declares_the_chains_and_adds_missing_jumps_only() {
        let c = capture("4191", "");
        let fresh = c.install(EMPTY);
        let lines: Vec<&str> = fresh.lines().collect();
        assert_eq!(lines[..3], ["*nat", ":VANE_INBOUND - [0:0]", ":VANE_OUTPUT - [0:0]"]);
        assert_eq!(
            lines[lines.len() - 3..],
            ["-A PREROUTING -p tcp -j VANE_INBOUND", "-A OUTPUT -p tcp -j VANE_OUTPUT", "COMMIT"]
        );
        // A second run, on the table the first left: the chains again, no second jump.
        let installed = format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:VANE_INBOUND - [0:0]\n:VANE_OUTPUT - [0:0]\n\
             -A PREROUTING -p tcp -j VANE_INBOUND\n-A OUTPUT -p tcp -j VANE_OUTPUT\n{}\nCOMMIT\n",
            c.chain_rules().join("\n")
        );
        let again = c.install(&installed);
        assert!(!again.contains("-A PREROUTING") && !again.contains("-A OUTPUT "), "{again}");
        assert!(again.contains(":VANE_INBOUND - [0:0]"), "{again}");
        // Another tool's rules in the same table are not touched.
        assert!(!c.install("-A PREROUTING -p tcp -j ISTIO_INBOUND\n").contains("ISTIO"));
    }

    #[test]
    fn removing_deletes_what_exists() {
        assert_eq!(remove(EMPTY), None);
        let twice = ":VANE_OUTPUT - [0:0]\n-A OUTPUT -p tcp -j VANE_OUTPUT\n-A OUTPUT -p tcp -j VANE_OUTPUT\n";
        assert_eq!(
            remove(twice).unwrap(),
            "*nat\n-D OUTPUT -p tcp -j VANE_OUTPUT\n-D OUTPUT -p tcp -j VANE_OUTPUT\n-F VANE_OUTPUT\n-X VANE_OUTPUT\nCOMMIT\n"
        );
    }
}
