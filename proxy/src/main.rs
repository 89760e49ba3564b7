//! `vane-proxy`: the Vane sidecar. All wiring lives in the library (`vane_proxy::app`).

fn main() {
    std::process::exit(vane_proxy::app::main());
}
