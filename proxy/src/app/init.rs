//! `vane-proxy init`: installs the capture rules in the pod's network namespace (the injected
//! `vane-init` container runs it before the proxy and the app start), prints them, and exits.
//!
//! Exit codes: 0 when the rules are in place (or, with `--dry-run`, printed), 69 when
//! iptables is not installed, 77 without `CAP_NET_ADMIN`, 1 when iptables refused the rules.

use crate::capture::{ApplyError, Capture, Iptables, PortRange, parse_ports, remove};

/// Exit code when iptables is missing (sysexits EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: i32 = 69;
/// Exit code without the capability (sysexits EX_NOPERM).
pub const EX_NOPERM: i32 = 77;

/// The `init` flags, as the injector writes them.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The proxy's UID: the connections it opens leave uncaptured.
    #[arg(long, default_value_t = 2102)]
    pub proxy_uid: u32,
    /// The inbound listener's port: inbound TCP is redirected to it.
    #[arg(long, default_value_t = 4143)]
    pub inbound_port: u16,
    /// The outbound listener's port: outbound TCP is redirected to it.
    #[arg(long, default_value_t = 4140)]
    pub outbound_port: u16,
    /// Inbound destination ports left alone, e.g. `4191,4192,9000-9010`.
    #[arg(long, default_value = "4191", value_parser = parse_ports)]
    pub skip_inbound_ports: Vec<Vec<PortRange>>,
    /// Outbound destination ports left alone, e.g. `443,5432`.
    #[arg(long, default_value = "", value_parser = parse_ports)]
    pub skip_outbound_ports: Vec<Vec<PortRange>>,
    /// Print the rules without applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete Vane's chains and the jumps into them instead.
    #[arg(long, conflicts_with = "dry_run")]
    pub remove: bool,
    /// The iptables front end: `<name>-save` and `<name>-restore` are run (`iptables`,
    /// `iptables-legacy`, `iptables-nft`).
    #[arg(long, default_value = "iptables", env = "VANE_IPTABLES")]
    pub iptables: String,
}

impl InitArgs {
    /// The rules these flags ask for.
    pub fn capture(&self) -> Capture {
        // Internal: clap gives one list per occurrence of the flag; they are joined.
        Capture {
            proxy_uid: self.proxy_uid,
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            skip_inbound: self.skip_inbound_ports.concat(),
            skip_outbound: self.skip_outbound_ports.concat(),
        }
    }
}

fn code(e: &ApplyError) -> i32 {
    match e {
        ApplyError::NoCapability => EX_NOPERM,
        ApplyError::Missing(_) => EX_UNAVAILABLE,
        ApplyError::Failed { .. } | ApplyError::Spawn(..) => 1,
    }
}

/// Runs `init`; returns the exit code.
pub fn run(args: &InitArgs) -> i32 {
    let capture = args.capture();
    if args.dry_run {
        // The jumps depend on the table as it is; without access to it, all of them are shown.
        let save = Iptables::find(&args.iptables).and_then(|t| t.save()).unwrap_or_default();
        println!("# vane-proxy init --dry-run: iptables-restore --noflush would be given:");
        print!("{}", capture.install(&save));
        return 0;
    }
    match apply(args, &capture) {
        Ok(Some(applied)) => {
            let what = if args.remove { "removed" } else { "installed" };
            println!("# vane-proxy init: {what} with {}-restore --noflush:", args.iptables);
            print!("{applied}");
            0
        }
        Ok(None) => {
            println!("# vane-proxy init: no Vane chains to remove");
            0
        }
        Err(e) => {
            eprintln!("vane-proxy init: {e}");
            code(&e)
        }
    }
}

fn apply(args: &InitArgs, capture: &Capture) -> Result<Option<String>, ApplyError> {
    let tables = Iptables::find(&args.iptables)?;
    crate::capture::apply::check_capability()?;
    let save = tables.save()?;
    let input = if args.remove { remove(&save) } else { Some(capture.install(&save)) };
    if let Some(input) = &input {
        tables.restore(input)?;
    }
    Ok(input)
}
