#!/usr/bin/env python3
"""Vane's hedging benchmark driver (Python standard library).

Short streamed LLM requests at a fixed Poisson rate through one fresh Vane proxy to a simulated
fleet in which one replica stalls a share of its requests (`vane-sim --stall-share`: the answer
starts that much later), once without hedging, once with a fixed hedge delay and once with a
percentile delay, same seed and schedule, from a cold start and warm. Reports p50/p99/p99.9 E2E,
the hedges sent per request (the extra upstream requests), the hedges won, and whether the
hedging targets were met. See the hedging section of bench/README.md.

    python3 bench/hedge/driver.py                     # normally through bench/hedge/run.sh
    python3 bench/hedge/driver.py --report RAW.jsonl  # re-render the report of a finished run
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
from llmrun import fmt, kib, quantile, rd, rows  # noqa: E402

NAME = "hedge"
COUNTERS = ["vane_hedges_total", "vane_hedges_won_total"]
KNOBS = ["RATE", "DURATION", "WARMUP", "DRAIN", "PHASES", "REPS", "REPLICAS", "STALL_SHARE", "STALL_FOR",
         "DELAY", "PERCENTILE", "MIN_DELAY", "VARIANTS", "PROMPT", "OUTPUT", "SEED", "ALGORITHMS", "REPORT_NAME",
         "GEN_CPU", "SUT_CPU", "PORT_BASE", "NICE", "QUIET_PCT", "QUIET_WAIT"]
# The targets: p99 at most this times the p99 without hedging, for at most this share of
# extra upstream requests (hedges sent / requests).
P99_TARGET = 0.5
EXTRA_TARGET = 0.10


def log(msg: str) -> None:
    llmrun.log(NAME, msg)


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def variants(args) -> dict[str, str]:
    """Variant name -> the route's hedge setting ('' for none)."""
    all_ = {
        "none": "",
        "fixed": f"hedge: {{ delay: {args.delay} }}",
        "percentile": f"hedge: {{ percentile: {args.percentile:g}, min_delay: {args.min_delay} }}",
    }
    return {v: all_[v] for v in args.variants}


def run(args, raw: Path, emit) -> None:
    stall = ["--stall-share", str(args.stall_share), "--stall-for", args.stall_for, "--stall-seed", "1"]
    spec = [llmrun.replica(args.port_base + i) for i in range(args.replicas - 1)]
    spec.append(llmrun.replica(args.port_base + args.replicas - 1, stall,
                               f"stalls {args.stall_share:g} of its requests by {args.stall_for}"))
    vs = variants(args)
    names = list(vs)
    for rep in range(args.reps):
        for pi, phase in enumerate(args.phases):
            warmup = 0.0 if phase == "cold" else args.warmup
            seed = args.seed + rep
            for ai, alg in enumerate(args.algorithms):
                args.algorithm = alg
                # Rotate the variants' order, so that drift hits every variant alike.
                k = (rep + pi + ai) % len(names)
                for v in names[k:] + names[:k]:
                    tag = f"{phase}-{alg}-{v}-r{rep}"
                    r = llmrun.run_once(args, raw, tag, spec, vs[v], [], warmup, seed, COUNTERS)
                    r.update(phase=phase, algorithm=alg, variant=v, rep=rep)
                    s = r["summary"]
                    c = r["proxy_counters"]
                    log(f"{tag}: {s['requests']} requests, e2e p50/p99 {s['e2e_ms']['p50']}/{s['e2e_ms']['p99']} ms, "
                        f"hedges {c['vane_hedges_total']:.0f} (won {c['vane_hedges_won_total']:.0f}), upstream "
                        f"{r['upstream']:.0f}, errors {s['errors']}, unfinished {s['unfinished']}, "
                        f"other processes {r['foreign_cpu_pct']:.0f} % of a core")
                    emit(r)


def command_line() -> str:
    knobs = [f"{k}={os.environ[k]}" for k in KNOBS if os.environ.get(k)]
    return " ".join(knobs + ["bash bench/hedge/run.sh"])


def verdict(p99_ratio: float | None, lower_none: bool, extra: float) -> str:
    """Whether a variant met both targets. When the p99 without hedging is only a lower bound,
    the ratio is an upper bound: under the target it still meets it."""
    if p99_ratio is None:
        return "–"
    p99_ok = p99_ratio <= P99_TARGET
    extra_ok = extra <= EXTRA_TARGET
    if p99_ok and extra_ok:
        return "**met**"
    why = []
    if not p99_ok:
        why.append(f"p99 {'≤ ' if lower_none else ''}{p99_ratio:.2f}× > {P99_TARGET}×")
    if not extra_ok:
        why.append(f"extra {100 * extra:.1f} % > {100 * EXTRA_TARGET:.0f} %")
    return "**not met** (" + ", ".join(why) + ")"


def report(raw_path: Path, out_dir: Path) -> Path:
    recs = [json.loads(line) for line in raw_path.read_text().splitlines() if line.strip()]
    raw = raw_path.parent
    meta = next(r for r in recs if r["kind"] == "meta")
    runs = [r for r in recs if r["kind"] == "run"]
    end = next((r for r in recs if r["kind"] == "end"), None)
    L = [f"# Vane hedging benchmark: `{meta['name']}`", ""]
    L.append(f"Run `{meta['started']}` (UTC), {end['seconds']} s in all." if end else f"Run `{meta['started']}` (UTC), unfinished.")
    L.append("")
    L.append(f"Command: `{meta['command']}`")
    L.append("")
    L += llmrun.machine_note(meta, recs)
    L.append("")
    L.append(
        f"**Workload.** {meta['replicas']} `vane-sim` replicas (the simulator's defaults, ORCA on); the last one "
        f"holds {meta['stall_share']:g} of the requests it receives for {meta['stall_for']} before its engine takes "
        f"them in (`--stall-share {meta['stall_share']:g} --stall-for {meta['stall_for']}`: the answer, head and "
        f"first token, starts that much later). One `vane-proxy` (one thread) in front, with the balancer "
        f"{' and '.join(f'`{a}`' for a in meta['algorithms'])} in turn. "
        f"Streamed `/v1/completions`, prompt `{meta['prompt']}` and output `{meta['output']}` tokens, Poisson arrivals "
        f"at {meta['rate']:g} req/s, seed {meta['seed']} (+ rep) for every variant. A fresh fleet and proxy per run; "
        f"`cold` measures from the first request, `warm` after {meta['warmup']:g} s of the same load. Measured "
        f"window {meta['duration']:g} s, then up to {meta['drain']:g} s for the streams still open.")
    L.append("")
    L.append("Variants (the route's `hedge:`): " + "; ".join(
        f"`{v}`: " + (f"`{s}`" if s else "no hedging") for v, s in meta["variants"].items()) + ".")
    L.append("")
    L.append(
        "**What is counted.** *Requests*: those due inside the window. *Hedges* and *won*: growth of the proxy's "
        "`vane_hedges_total` and `vane_hedges_won_total` from the window's start to the end of the drain; "
        "*extra upstream* = hedges / requests (the issue's measure); *upstream at the simulators*: "
        "`vane_sim_requests_total` over the same span, as a cross-check (a stalled attempt that loses is counted "
        "there too; a few requests due at the window's very start may reach the simulators before their counters "
        "are read, so without hedging it can come out a little under the requests). Latencies run from each request's scheduled arrival (no coordinated omission), pooled over "
        "repetitions; `≥` marks a lower bound. p99.9 rests on the slowest 0.1 % of the requests: a handful. "
        f"Targets: E2E p99 at most {P99_TARGET}× the p99 without hedging, for at most "
        f"{100 * EXTRA_TARGET:.0f} % extra upstream requests.")
    for phase, alg in [(p, a) for p in meta["phases"] for a in meta["algorithms"]]:
        pr = [r for r in runs if r["phase"] == phase and r["algorithm"] == alg]
        if not pr:
            continue
        L.append("")
        L.append(f"## {phase.capitalize()} start" + (" (no warm-up)" if phase == "cold" else f" ({meta['warmup']:g} s warm-up)")
                 + f", balancer `{alg}`")
        L.append("")
        L.append("| variant | requests | E2E p50 | E2E p99 | E2E p99.9 | TTFT p99 | hedges (extra upstream) | hedges won | upstream at the simulators | errors / unfinished | p99 / none | targets | proxy peak RSS | other processes |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        none_rs = rows(raw, [r for r in pr if r["variant"] == "none"])
        none99 = quantile(none_rs, "e2e_ms", 0.99) if none_rs else (None, False)
        for v in meta["variants"]:
            vr = [r for r in pr if r["variant"] == v]
            if not vr:
                continue
            rs = rows(raw, vr)
            req = sum(r["summary"]["requests"] for r in vr)
            hedges = sum(r["proxy_counters"]["vane_hedges_total"] for r in vr)
            won = sum(r["proxy_counters"]["vane_hedges_won_total"] for r in vr)
            up = sum(r["upstream"] for r in vr)
            e99 = quantile(rs, "e2e_ms", 0.99)
            extra = hedges / max(1, req)
            rat = e99[0] / none99[0] if (v != "none" and e99[0] is not None and none99[0]) else None
            L.append(
                f"| `{v}` | {req} | {fmt(quantile(rs, 'e2e_ms', 0.5))} | {fmt(e99)} | {fmt(quantile(rs, 'e2e_ms', 0.999))} | "
                f"{fmt(quantile(rs, 'ttft_ms', 0.99))} | {hedges:.0f} ({100 * extra:.1f} %) | "
                + (f"{won:.0f} ({100 * won / hedges:.0f} %)" if hedges else "0")
                + f" | {up:.0f} ({100 * (up / max(1, req) - 1):+.1f} %) | "
                f"{sum(r['summary']['errors'] for r in vr)} / {sum(r['summary']['unfinished'] for r in vr)} | "
                + (f"{'≤ ' if none99[1] and not e99[1] else ''}{rat:.2f}" if rat is not None else "–")
                + f" | {verdict(rat, none99[1], extra) if v != 'none' else '–'} | "
                f"{kib(max(r['proxy_hwm_kib'] or 0 for r in vr))} | {max(r['foreign_cpu_pct'] for r in vr):.0f} % |")
        per = []
        for v in meta["variants"]:
            vr = [r for r in pr if r["variant"] == v]
            if vr:
                share = [sum(r["upstream_per_replica"][i] for r in vr) for i in range(meta["replicas"])]
                tot = max(1.0, sum(share))
                per.append(f"`{v}` " + " / ".join(f"{100 * x / tot:.0f}" for x in share))
        L.append("")
        L.append("Share of the upstream requests per replica, in %, the stalling one last: " + "; ".join(per) + ".")
    L.append("")
    md = out_dir / f"{meta['name']}.md"
    md.write_text("\n".join(L) + "\n")
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, help="re-render the report of this raw JSONL and exit")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--rate", type=float, default=float(env("RATE", "40")), help="Poisson arrivals per second")
    ap.add_argument("--duration", type=float, default=float(env("DURATION", "20")), help="measured seconds")
    ap.add_argument("--warmup", type=float, default=float(env("WARMUP", "5")), help="warm-up seconds of the warm phase")
    ap.add_argument("--drain", type=float, default=float(env("DRAIN", "10")))
    ap.add_argument("--phases", default=env("PHASES", "cold,warm"), help="cold (no warm-up), warm, or both")
    ap.add_argument("--reps", type=int, default=int(env("REPS", "1")))
    ap.add_argument("--replicas", type=int, default=int(env("REPLICAS", "4")))
    ap.add_argument("--stall-share", type=float, default=float(env("STALL_SHARE", "0.2")),
                    help="share of the last replica's requests that stall")
    ap.add_argument("--stall-for", default=env("STALL_FOR", "1s"), help="how long a stalled request is held")
    ap.add_argument("--delay", default=env("DELAY", "100ms"), help="the fixed variant's hedge delay")
    ap.add_argument("--percentile", type=float, default=float(env("PERCENTILE", "90")),
                    help="the percentile variant's percentile (0 < p < 100) of recent times to first byte")
    ap.add_argument("--min-delay", default=env("MIN_DELAY", "20ms"), help="the percentile variant's least delay")
    ap.add_argument("--variants", default=env("VARIANTS", "none,fixed,percentile"))
    ap.add_argument("--prompt", default=env("PROMPT", "lognormal:256:0.5:1024"))
    ap.add_argument("--output", default=env("OUTPUT", "fixed:16"))
    ap.add_argument("--seed", type=int, default=int(env("SEED", "1")))
    ap.add_argument("--algorithms", default=env("ALGORITHMS", "p2c,round_robin"),
                    help="the proxy's balancer, each in turn: p2c (the default) steers away from a replica whose "
                         "answers are late, round_robin (a Kubernetes Service) does not")
    ap.add_argument("--name", default=os.environ.get("REPORT_NAME"), help="report name (results/NAME.md)")
    ap.add_argument("--gen-cpu", default=env("GEN_CPU", "0"))
    ap.add_argument("--sut-cpu", default=env("SUT_CPU", "1"))
    ap.add_argument("--port-base", type=int, default=int(env("PORT_BASE", "19600")))
    ap.add_argument("--quiet-pct", type=float, default=float(env("QUIET_PCT", "15")))
    ap.add_argument("--quiet-wait", type=float, default=float(env("QUIET_WAIT", "10")))
    args = ap.parse_args()
    if args.report:
        print(report(args.report, args.out).read_text())
        return 0
    args.balancer = ""
    args.algorithms = [a for a in args.algorithms.split(",") if a]
    if not args.algorithms:
        ap.error("--algorithms: at least one")
    args.phases = [p for p in args.phases.split(",") if p]
    if not args.phases or any(p not in ("cold", "warm") for p in args.phases):
        ap.error("--phases: cold, warm or cold,warm")
    args.variants = [v for v in args.variants.split(",") if v]
    if not args.variants or any(v not in ("none", "fixed", "percentile") for v in args.variants):
        ap.error("--variants: a list of none, fixed, percentile")
    if not 2 <= args.replicas <= 10:
        ap.error("--replicas: 2 to 10 (a hedge needs another endpoint)")
    if not 0 < args.percentile < 100:
        ap.error("--percentile: 0 < p < 100")
    warm = args.warmup if "warm" in args.phases else 0
    if warm + args.duration > llmrun.MAX_RUN_S:
        ap.error(f"warm-up + duration must be at most {llmrun.MAX_RUN_S} s")
    args.name = args.name or f"hedge-{args.rate:g}rps-{args.duration:g}s"
    stamp, raw, emit = llmrun.open_run(args)

    emit({"kind": "meta", "name": args.name, "started": stamp, "command": command_line(), "rate": args.rate,
          "duration": args.duration, "warmup": args.warmup, "drain": args.drain, "phases": args.phases,
          "reps": args.reps, "replicas": args.replicas, "stall_share": args.stall_share,
          "stall_for": args.stall_for, "variants": variants(args), "prompt": args.prompt, "output": args.output,
          "seed": args.seed, "algorithms": args.algorithms, "gen_cpu": args.gen_cpu, "sut_cpu": args.sut_cpu,
          "nproc": os.cpu_count(), "nice": rd.NICE, "loadavg_start": os.getloadavg()[0]})
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
