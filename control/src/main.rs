//! `vane-control`: see the library docs and `control/README.md`.

#[tokio::main]
async fn main() {
    // kube's rustls client uses the process-wide provider; ring is the only one compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = vane_control::args::Args::parse_and_run().await {
        eprintln!("vane-control: {e:#}");
        // EX_CONFIG (78), as vane-proxy does for a bad configuration.
        std::process::exit(78);
    }
}
