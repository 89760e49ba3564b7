//! `vane-proxy`: the Vane sidecar. All wiring lives in the library (`vane_proxy::args`).

fn main() {
    std::process::exit(vane_proxy::args::main());
}
