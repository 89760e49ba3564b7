//! `vane-sim`: a vLLM-like model server for judging Vane's routing. Everything lives in the
//! library; see `vane_sim::args`.

fn main() -> std::process::ExitCode {
    vane_sim::args::parse_and_run()
}
