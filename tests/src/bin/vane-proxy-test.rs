//! The proxy binary, built inside the black-box test package so that tests can start it as a
//! real process (`CARGO_BIN_EXE_vane-proxy-test`). Same code as `vane-proxy`.

fn main() {
    std::process::exit(vane_proxy::app::main());
}
