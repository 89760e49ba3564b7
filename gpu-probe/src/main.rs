//! `vane-gpu-probe`: serves a model server's load (queue, running requests, KV cache, GPU) to
//! the local Vane proxy. Everything lives in the library; see `vane_gpu_probe::args`.

fn main() -> std::process::ExitCode {
    vane_gpu_probe::args::parse_and_run()
}
