#!/usr/bin/env python3
"""Vane's coalescing benchmark driver (Python standard library).

Duplicate-heavy LLM traffic (a pool of distinct greedy prompts drawn Zipf-like, Poisson arrivals,
streamed answers) through one fresh Vane proxy to a small simulated fleet, once with the route's
`coalesce:` on and once without, same seed and schedule, from a cold start and warm. Counts the
upstream requests at the simulators (the GPU passes) and reports the passes saved, the latency of
leaders, followers and of the run without coalescing, and the proxy's peak memory.
See the coalescing section of bench/README.md.

    python3 bench/coalesce/driver.py                     # normally through bench/coalesce/run.sh
    python3 bench/coalesce/driver.py --report RAW.jsonl  # re-render the report of a finished run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
import llmrun  # noqa: E402
from llmrun import fmt, kib, quantile, ratio, rd, rows  # noqa: E402

NAME = "coalesce"
COUNTERS = ["vane_coalesce_leaders_total", "vane_coalesce_followers_total", "vane_coalesce_saved_bytes_total"]
# Knobs, as run.sh passes them through the environment, for the report's command line.
KNOBS = ["RATE", "DURATION", "WARMUP", "DRAIN", "PHASES", "REPS", "REPLICAS", "DISTINCT", "ZIPF", "PROMPT",
         "OUTPUT", "SEED", "ALGORITHM", "COALESCE", "REPORT_NAME", "GEN_CPU", "SUT_CPU", "PORT_BASE", "NICE",
         "QUIET_PCT", "QUIET_WAIT"]


def log(msg: str) -> None:
    llmrun.log(NAME, msg)


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def run(args, raw: Path, emit) -> None:
    spec = [llmrun.replica(args.port_base + i) for i in range(args.replicas)]
    load_args = ["--distinct", str(args.distinct), "--zipf", str(args.zipf), "--temperature", "0"]
    for rep in range(args.reps):
        for phase in args.phases:
            warmup = 0.0 if phase == "cold" else args.warmup
            seed = args.seed + rep
            # Alternate which mode goes first, so that drift hits both alike.
            modes = ["off", "on"] if (rep + args.phases.index(phase)) % 2 == 0 else ["on", "off"]
            for mode in modes:
                tag = f"{phase}-{mode}-r{rep}"
                route = f"coalesce: {{ {args.coalesce} }}" if mode == "on" else ""
                r = llmrun.run_once(args, raw, tag, spec, route, load_args, warmup, seed, COUNTERS)
                r.update(phase=phase, mode=mode, rep=rep)
                s = r["summary"]
                c = r["proxy_counters"]
                log(f"{tag}: {s['requests']} requests, {r['upstream']:.0f} upstream "
                    f"({100 * (1 - r['upstream'] / max(1, s['requests'])):.1f} % saved), followers "
                    f"{c['vane_coalesce_followers_total']:.0f}, e2e p50/p99 {s['e2e_ms']['p50']}/{s['e2e_ms']['p99']} ms, "
                    f"errors {s['errors']}, unfinished {s['unfinished']}, VmHWM {kib(r['proxy_hwm_kib'])}, "
                    f"other processes {r['foreign_cpu_pct']:.0f} % of a core")
                emit(r)


def command_line() -> str:
    knobs = [f"{k}={os.environ[k]}" for k in KNOBS if os.environ.get(k)]
    return " ".join(knobs + ["bash bench/coalesce/run.sh"])


def report(raw_path: Path, out_dir: Path) -> Path:
    recs = [json.loads(line) for line in raw_path.read_text().splitlines() if line.strip()]
    raw = raw_path.parent
    meta = next(r for r in recs if r["kind"] == "meta")
    runs = [r for r in recs if r["kind"] == "run"]
    end = next((r for r in recs if r["kind"] == "end"), None)
    L = [f"# Vane coalescing benchmark: `{meta['name']}`", ""]
    L.append(f"Run `{meta['started']}` (UTC), {end['seconds']} s in all." if end else f"Run `{meta['started']}` (UTC), unfinished.")
    L.append("")
    L.append(f"Command: `{meta['command']}`")
    L.append("")
    L += llmrun.machine_note(meta, recs)
    L.append("")
    L.append(
        f"**Workload.** {meta['replicas']} `vane-sim` replicas (the simulator's defaults, ORCA on) behind one "
        f"`vane-proxy` (one thread, `{meta['algorithm']}`). Streamed `/v1/completions` with `temperature: 0`, each "
        f"drawn from a pool of {meta['distinct']} distinct prompts with a Zipf exponent of {meta['zipf']:g} "
        f"(prompt k has probability ∝ 1/k^{meta['zipf']:g}; each prompt's lengths drawn once from prompt "
        f"`{meta['prompt']}` and output `{meta['output']}` tokens), Poisson arrivals at {meta['rate']:g} req/s, "
        f"seed {meta['seed']} (+ rep) for both modes. Each run has a fresh fleet and a fresh proxy; `cold` measures "
        f"from the first request (no warm-up), `warm` after {meta['warmup']:g} s of the same load. Measured "
        f"window {meta['duration']:g} s, then up to {meta['drain']:g} s for the streams still open. "
        f"With coalescing the route has `coalesce: {{ {meta['coalesce']} }}`.")
    L.append("")
    L.append(
        "**What is counted.** *Requests*: those due inside the window. *Upstream*: generation requests the "
        "simulators received (`vane_sim_requests_total`) from the window's start to the end of the drain, one GPU "
        "pass each (a few requests due at the window's very start may reach them before their counters are read). "
        "*Passes saved* = 1 − upstream / requests. *Followers*: answers the client got with "
        "`vane-coalesced: true` (shared from an identical request's call); *leaders*: the other answers of the "
        "run with coalescing. Latencies run from each request's scheduled arrival (no coordinated omission), "
        "pooled over repetitions; `≥` marks a lower bound (a request still open at the drain deadline). Peak RSS "
        "is the proxy's `VmHWM` at the end of the run (warm-up included), the mid-run figure its `VmRSS` halfway "
        "through the window.")
    for phase in meta["phases"]:
        pr = [r for r in runs if r["phase"] == phase]
        if not pr:
            continue
        L.append("")
        L.append(f"## {phase.capitalize()} start" + (" (no warm-up)" if phase == "cold" else f" ({meta['warmup']:g} s warm-up)"))
        L.append("")
        L.append("| coalescing | requests | upstream (GPU passes) | passes saved | followers / leaders (proxy) | TTFT p50 / p99 | E2E p50 / p99 | errors / unfinished | proxy peak RSS | proxy RSS mid-run | proxy CPU | other processes |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        cells = {}
        for mode in ("off", "on"):
            mr = [r for r in pr if r["mode"] == mode]
            if not mr:
                continue
            req = sum(r["summary"]["requests"] for r in mr)
            up = sum(r["upstream"] for r in mr)
            fol = sum(r["proxy_counters"]["vane_coalesce_followers_total"] for r in mr)
            lead = sum(r["proxy_counters"]["vane_coalesce_leaders_total"] for r in mr)
            rs = rows(raw, mr)
            cells[mode] = dict(req=req, up=up, rs=rs, hwm=max(r["proxy_hwm_kib"] or 0 for r in mr),
                               e99=quantile(rs, "e2e_ms", 0.99), t99=quantile(rs, "ttft_ms", 0.99))
            L.append(
                f"| {mode} | {req} | {up:.0f} | {100 * (1 - up / max(1, req)):.1f} % | "
                + (f"{fol:.0f} / {lead:.0f}" if mode == "on" else "–")
                + f" | {fmt(quantile(rs, 'ttft_ms', 0.5))} / {fmt(quantile(rs, 'ttft_ms', 0.99))} | "
                f"{fmt(quantile(rs, 'e2e_ms', 0.5))} / {fmt(quantile(rs, 'e2e_ms', 0.99))} | "
                f"{sum(r['summary']['errors'] for r in mr)} / {sum(r['summary']['unfinished'] for r in mr)} | "
                f"{kib(max(r['proxy_hwm_kib'] or 0 for r in mr))} | {kib(max(r['proxy_rss_mid_kib'] or 0 for r in mr))} | "
                f"{rd.median([r['proxy_cpu_pct'] for r in mr]):.0f} % | "
                f"{max(r['foreign_cpu_pct'] for r in mr):.0f} % |")
        L.append("")
        L.append("| answers | n | TTFT p50 | TTFT p99 | E2E p50 | E2E p99 |")
        L.append("|---|---|---|---|---|---|")
        groups = []
        if "off" in cells:
            groups.append(("no coalescing (all)", cells["off"]["rs"]))
        if "on" in cells:
            on = cells["on"]["rs"]
            groups += [("coalescing: leaders", [r for r in on if r.get("coalesced") != "1"]),
                       ("coalescing: followers", [r for r in on if r.get("coalesced") == "1"]),
                       ("coalescing: all", on)]
        for name, rs in groups:
            L.append(f"| {name} | {len(rs)} | {fmt(quantile(rs, 'ttft_ms', 0.5))} | {fmt(quantile(rs, 'ttft_ms', 0.99))} | "
                     f"{fmt(quantile(rs, 'e2e_ms', 0.5))} | {fmt(quantile(rs, 'e2e_ms', 0.99))} |")
        if "on" in cells and "off" in cells:
            on, off = cells["on"], cells["off"]
            L.append("")
            L.append(f"With / without coalescing, pooled: upstream requests {on['up'] / max(1, off['up']):.2f}×, "
                     f"E2E p99 {ratio(on['e99'], off['e99'])}×, TTFT p99 {ratio(on['t99'], off['t99'])}×, "
                     f"proxy peak RSS {on['hwm'] / max(1, off['hwm']):.2f}×.")
            per = []
            for rep in sorted({r["rep"] for r in pr}):
                a = next((r for r in pr if r["rep"] == rep and r["mode"] == "on"), None)
                b = next((r for r in pr if r["rep"] == rep and r["mode"] == "off"), None)
                if a and b:
                    ra, rb = rows(raw, [a]), rows(raw, [b])
                    per.append(f"rep {rep} (seed {a['seed']}): passes saved "
                               f"{100 * (1 - a['upstream'] / max(1, a['summary']['requests'])):.1f} %, E2E p99 "
                               f"{ratio(quantile(ra, 'e2e_ms', 0.99), quantile(rb, 'e2e_ms', 0.99))}×, E2E p50 "
                               f"{ratio(quantile(ra, 'e2e_ms', 0.5), quantile(rb, 'e2e_ms', 0.5))}×, peak RSS "
                               f"{(a['proxy_hwm_kib'] or 0) / max(1, b['proxy_hwm_kib'] or 0):.2f}×")
            if len(per) > 1:
                L.append("")
                L.append("Paired per repetition (each seed draws its own pool of prompt lengths, so the repetitions "
                         "are different workloads): " + "; ".join(per) + ".")
    L.append("")
    md = out_dir / f"{meta['name']}.md"
    md.write_text("\n".join(L) + "\n")
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, help="re-render the report of this raw JSONL and exit")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--rate", type=float, default=float(env("RATE", "20")), help="Poisson arrivals per second")
    ap.add_argument("--duration", type=float, default=float(env("DURATION", "20")), help="measured seconds")
    ap.add_argument("--warmup", type=float, default=float(env("WARMUP", "5")), help="warm-up seconds of the warm phase")
    ap.add_argument("--drain", type=float, default=float(env("DRAIN", "15")))
    ap.add_argument("--phases", default=env("PHASES", "cold,warm"), help="cold (no warm-up), warm, or both")
    ap.add_argument("--reps", type=int, default=int(env("REPS", "1")))
    ap.add_argument("--replicas", type=int, default=int(env("REPLICAS", "2")))
    ap.add_argument("--distinct", type=int, default=int(env("DISTINCT", "100")), help="distinct prompts in the pool")
    ap.add_argument("--zipf", type=float, default=float(env("ZIPF", "1.0")), help="the pool's Zipf exponent")
    ap.add_argument("--prompt", default=env("PROMPT", "lognormal:400:0.8:4096"))
    ap.add_argument("--output", default=env("OUTPUT", "lognormal:128:0.6:1024"))
    ap.add_argument("--seed", type=int, default=int(env("SEED", "1")))
    ap.add_argument("--algorithm", default=env("ALGORITHM", "p2c"))
    ap.add_argument("--coalesce", default=env("COALESCE", "when: deterministic"),
                    help="the route's coalesce settings with coalescing on")
    ap.add_argument("--name", default=os.environ.get("REPORT_NAME"), help="report name (results/NAME.md)")
    ap.add_argument("--gen-cpu", default=env("GEN_CPU", "0"))
    ap.add_argument("--sut-cpu", default=env("SUT_CPU", "1"))
    ap.add_argument("--port-base", type=int, default=int(env("PORT_BASE", "19500")))
    ap.add_argument("--quiet-pct", type=float, default=float(env("QUIET_PCT", "15")))
    ap.add_argument("--quiet-wait", type=float, default=float(env("QUIET_WAIT", "10")))
    args = ap.parse_args()
    if args.report:
        print(report(args.report, args.out).read_text())
        return 0
    args.balancer = ""
    args.phases = [p for p in args.phases.split(",") if p]
    if not args.phases or any(p not in ("cold", "warm") for p in args.phases):
        ap.error("--phases: cold, warm or cold,warm")
    if args.replicas < 1 or args.replicas > 10:
        ap.error("--replicas: 1 to 10")
    warm = args.warmup if "warm" in args.phases else 0
    if warm + args.duration > llmrun.MAX_RUN_S:
        ap.error(f"warm-up + duration must be at most {llmrun.MAX_RUN_S} s")
    args.name = args.name or f"coalesce-{args.rate:g}rps-{args.duration:g}s"
    stamp, raw, emit = llmrun.open_run(args)

    emit({"kind": "meta", "name": args.name, "started": stamp, "command": command_line(), "rate": args.rate,
          "duration": args.duration, "warmup": args.warmup, "drain": args.drain, "phases": args.phases,
          "reps": args.reps, "replicas": args.replicas, "distinct": args.distinct, "zipf": args.zipf,
          "prompt": args.prompt, "output": args.output, "seed": args.seed, "algorithm": args.algorithm,
          "coalesce": args.coalesce, "gen_cpu": args.gen_cpu, "sut_cpu": args.sut_cpu, "nproc": os.cpu_count(),
          "nice": rd.NICE, "loadavg_start": os.getloadavg()[0]})
    t0 = time.time()
    run(args, raw, emit)
    rd.stop_all()
    emit({"kind": "end", "seconds": round(time.time() - t0), "loadavg_end": os.getloadavg()[0]})
    log(f"done in {time.time() - t0:.0f} s; raw data in {raw}")
    md = report(raw / "raw.jsonl", args.out)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
