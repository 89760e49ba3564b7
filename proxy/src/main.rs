//! `vane-proxy`: the Vane sidecar. All wiring lives in the library (`vane_proxy::app`).
//!
//! The allocator is mimalloc, built without transparent huge pages (`no_thp`): a sidecar spends
//! most of its life holding idle connections, and with glibc's malloc each idle TLS connection
//! kept about 36 KiB resident (buffers the handshake freed were reused by the connection's own,
//! so they stayed touched), against 29 KiB here; with huge pages, mimalloc's first arena alone
//! made a fresh proxy 10 MiB larger (`bench/mtls`, "Memory").

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(vane_proxy::app::main());
}
