//! `vane-gpu-probe`: reports a model server's load. Not built yet.

fn main() {
    eprintln!("vane-gpu-probe is not implemented yet");
    std::process::exit(64);
}
