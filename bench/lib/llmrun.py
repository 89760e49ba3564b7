"""One measured run of LLM traffic through a fresh Vane proxy to a fresh simulated fleet, for the
feature benchmarks (bench/coalesce, bench/hedge). The processes, pinning, metrics parsing and
percentiles are the routing benchmark's (bench/routing/driver.py, imported from there).

A run: start the fleet (vane-sim), start one vane-proxy with the route settings under test, run
llm-load at a fixed Poisson rate with the given warm-up (0: a cold start, the window opens with
the first request to a fresh proxy), read the proxy's and the simulators' counters at the start
of the measured window and again once llm-load has drained, the proxy's memory while it runs and
its peak (VmHWM) at the end, then stop everything.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("vane_routing_driver", ROOT / "bench" / "routing" / "driver.py")
rd = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rd
_spec.loader.exec_module(rd)

MODEL = rd.MODEL
RELEASE = rd.RELEASE
PROXY_BIN = rd.PROXY_BIN
MAX_RUN_S = rd.MAX_RUN_S


def log(name: str, msg: str) -> None:
    print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def replica(port: int, flags: list[str] | None = None, label: str = "") -> dict:
    """A simulator of the fleet, in the shape of the routing benchmark's fleet spec."""
    return dict(port=port, speed=1.0, flags=flags or [], cal_flags=[], max_batch=64, label=label, joins=False)


def check_ports(ports: list[int]) -> None:
    busy = [p for p in ports if not rd.port_free(p)]
    if busy:
        raise SystemExit(f"ports in use: {busy} (set PORT_BASE)")


def check_binaries() -> None:
    for b in (RELEASE / "vane-sim", RELEASE / "llm-load", PROXY_BIN):
        if not b.exists():
            raise SystemExit(f"{b} is missing: run the benchmark's run.sh (it builds it)")


def open_run(args):
    """What every run starts with: the binaries and ports checked, a raw directory of its own
    (`<out>/raw/<stamp>-<name>`), every process stopped at exit or on SIGTERM. Returns the stamp,
    the raw directory and `emit`, which appends one record to its `raw.jsonl`."""
    import atexit
    import signal
    from datetime import datetime, timezone

    check_binaries()
    check_ports([args.port_base + i for i in range(args.replicas)] + [args.port_base + 50 + i for i in range(3)])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    raw = args.out / "raw" / f"{stamp}-{args.name}"
    raw.mkdir(parents=True, exist_ok=True)
    raw_path = raw / "raw.jsonl"
    atexit.register(rd.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def emit(rec: dict) -> None:
        with open(raw_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    return stamp, raw, emit


def metric_delta(a: str, b: str, name: str) -> float:
    return rd.prom_value(b, name) - rd.prom_value(a, name)


def run_once(args, raw: Path, tag: str, spec: list[dict], route: str, load_args: list[str], warmup: float,
             seed: int, counters: list[str]) -> dict:
    """One run; `counters` are proxy metric names whose growth from the window's start to the end
    of the drain is recorded. Returns the record for the raw JSONL."""
    fleet = rd.Fleet(args, raw, spec)
    fleet.start(tag=tag)
    rd.wait_quiet(fleet, args.quiet_pct, args.quiet_wait)
    proxy = rd.Proxy(args, fleet, args.algorithm, raw, tag, route=route)
    rss_idle = rd.proc_status_kib(proxy.proc.pid, "VmRSS")
    csv_path = raw / f"{tag}.csv"
    argv = [str(RELEASE / "llm-load"), "--model", MODEL, "--url", proxy.url, "--prompt", args.prompt,
            "--output", args.output, "--rate", f"{args.rate:.3f}", "--warmup", str(warmup), "--duration",
            str(args.duration), "--drain", str(args.drain), "--seed", str(seed), "--csv", str(csv_path)] + load_args
    t0 = time.time()
    gen = rd.spawn(rd.pinned(args.gen_cpu, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rd.PROCS.append(gen)
    # llm-load starts its clock about 20 ms after launch; the window opens after the warm-up.
    rd.sleep_until(t0 + warmup + 0.03)
    m0, s0, c0 = proxy.metrics(), fleet.metrics(), rd.cpu_times()
    pt0, st0, gt0 = rd.proc_ticks(proxy.proc.pid), fleet.ticks(), rd.proc_ticks(gen.pid)
    rd.sleep_until(t0 + warmup + args.duration / 2)
    rss_mid = rd.proc_status_kib(proxy.proc.pid, "VmRSS")
    rd.sleep_until(t0 + warmup + args.duration + 0.03)
    c1 = rd.cpu_times()
    pt1, st1, gt1 = rd.proc_ticks(proxy.proc.pid), fleet.ticks(), rd.proc_ticks(gen.pid)
    out, err = gen.communicate(timeout=args.drain + 60)
    rd.PROCS.remove(gen)
    # After the drain: every upstream call the window's requests caused has been made.
    m2, s2 = proxy.metrics(), fleet.metrics()
    hwm = rd.proc_status_kib(proxy.proc.pid, "VmHWM")
    proxy_alive = proxy.proc.poll() is None
    proxy.stop()
    fleet.stop()
    if gen.returncode != 0:
        raise RuntimeError(f"llm-load failed ({tag}): {err.strip()}")
    summary = json.loads(out)
    hz = os.sysconf("SC_CLK_TCK")
    upstream = [metric_delta(a, b, "vane_sim_requests_total") for a, b in zip(s0, s2)]
    upstream_total = [rd.prom_value(b, "vane_sim_requests_total") for b in s2]
    rec = {
        "kind": "run", "tag": tag, "seed": seed, "warmup": warmup, "route": route, "csv": csv_path.name,
        "summary": summary,
        "upstream_per_replica": upstream, "upstream": sum(upstream),
        "upstream_total_per_replica": upstream_total, "upstream_total": sum(upstream_total),
        "sent_total": summary["requests"] + summary["warmup_requests"],
        "proxy_counters": {n: metric_delta(m0, m2, n) for n in counters},
        "proxy_counters_total": {n: rd.prom_value(m2, n) for n in counters},
        "proxy_rss_idle_kib": rss_idle, "proxy_rss_mid_kib": rss_mid, "proxy_hwm_kib": hwm,
        "proxy_alive_at_end": proxy_alive,
        "proxy_cpu_pct": round(100.0 * (pt1 - pt0) / hz / args.duration, 1),
        "fleet_cpu_pct": round(100.0 * (st1 - st0) / hz / args.duration, 1),
        "gen_cpu_pct": round(100.0 * (gt1 - gt0) / hz / args.duration, 1),
        "cpu_busy": rd.cpu_busy(c0, c1),
        "foreign_cpu_pct": rd.foreign_pct(c0, c1, (pt1 - pt0) + (st1 - st0) + (gt1 - gt0), args.duration),
        "loadavg": os.getloadavg()[0],
    }
    return rec


def rows(raw: Path, runs: list[dict], keep=lambda row: True) -> list[dict]:
    """The measured requests of `runs` (their CSVs pooled) that were served or cut off, and pass `keep`."""
    out = []
    for r in runs:
        with open(raw / r["csv"]) as f:
            for row in csv.DictReader(f):
                if row["measured"] == "1" and row["error"] in ("", "unfinished") and row["e2e_ms"] and keep(row):
                    out.append(row)
    return out


def quantile(rs: list[dict], col: str, q: float) -> tuple[float | None, bool]:
    """The q-quantile of `col` over `rs` by nearest rank, and whether it is a lower bound (a request
    cut off at the drain deadline, counted with the time it had waited, sits at or below it)."""
    vals = sorted(float(r[col]) for r in rs if r[col])
    v = rd.quantile(vals, q)
    censored = any(r["error"] == "unfinished" and float(r[col]) <= v for r in rs if r[col]) if v is not None else False
    return v, censored


def fmt(v: tuple[float | None, bool]) -> str:
    """A latency in ms or s, `≥` when a lower bound."""
    x, lower = v
    if x is None:
        return "–"
    s = f"{x:.0f} ms" if x < 1000 else f"{x / 1000:.2f} s"
    return ("≥ " if lower else "") + s


def ratio(a: tuple[float | None, bool], b: tuple[float | None, bool]) -> str:
    if a[0] is None or not b[0]:
        return "–"
    return f"{a[0] / b[0]:.2f}"


def kib(x: int | None) -> str:
    return "–" if x is None else f"{x / 1024:.1f} MiB"


def machine_note(meta: dict, recs: list[dict]) -> list[str]:
    runs = [r for r in recs if r["kind"] == "run"]
    foreign = [r["foreign_cpu_pct"] for r in runs]
    loads = [meta["loadavg_start"]] + [r["loadavg"] for r in runs]
    return [
        f"Machine: {meta['nproc']} cores shared with other work (builds, tests), so absolute figures are noisy; "
        "read the ratios between the variants, which ran interleaved on the same fleet, seed and schedule. "
        f"The load generator ran on CPU {meta['gen_cpu']}, the simulators and the proxy on CPU {meta['sut_cpu']}"
        + (f" (nice {meta['nice']})" if meta.get("nice") else "") + ". "
        f"Load average (1 min) {min(loads):.2f}–{max(loads):.2f} during the runs; other processes used "
        f"{min(foreign):.0f}–{max(foreign):.0f} % of a core during the measured windows."
        if runs else "No runs.",
    ]
