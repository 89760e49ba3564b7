//! `vane-control`: the control service. Not built yet: the proxy runs from a config file for now.

fn main() {
    eprintln!("vane-control is not implemented yet; run vane-proxy with --config (see README.md)");
    std::process::exit(64);
}
