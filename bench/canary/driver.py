#!/usr/bin/env python3
"""Vane's canary demo (Python standard library): a 90/10 split between a stable model version and
a canary, judged from the proxy's `/metrics` alone.

The fleet: STABLE replicas of `llm-v1` at speed 1.0 and CANARY replicas of `llm-v2` at
CANARY_SPEED (1.3: each engine step 30 % slower, a canary that regressed), every one a fresh
`vane-sim`. One fresh `vane-proxy` splits the route 90/10 between the two backends and prices both
at the same GPU-hour. `llm-load` sends streamed completions (asking for the closing usage event,
as OpenAI clients do) at a Poisson RATE from a cold start. Then the report reads, per version,
from one scrape of the proxy's `/metrics`: requests and share, time to first token and per output
token (p50 / p95 by PromQL's histogram_quantile rule), tokens in and out, GPU-seconds and cost;
and checks them against what the client and the simulators counted themselves.

    bash bench/canary/run.sh          # builds, then runs this (about 1.5 min)
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
import llmrun  # noqa: E402
from llmrun import rd  # noqa: E402


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


RATE = float(env("RATE", "15"))
DURATION = float(env("DURATION", "40"))
DRAIN = float(env("DRAIN", "20"))
STABLE = int(env("STABLE", "4"))
CANARY = int(env("CANARY", "1"))
CANARY_SPEED = float(env("CANARY_SPEED", "1.3"))
# The engine step's fixed cost: 12 ms makes a decode speed of a real GPU serving a mid-sized model
# (the simulator's own default, 3.5 ms, is faster than any).
STEP_US = int(env("STEP_US", "12000"))
PRICE = float(env("PRICE", "2.5"))
PROMPT = env("PROMPT", "lognormal:400:0.8:4096")
OUTPUT = env("OUTPUT", "lognormal:128:0.6:1024")
SEED = int(env("SEED", "1"))
PORT_BASE = int(env("PORT_BASE", "19400"))
GEN_CPU, SUT_CPU = env("GEN_CPU", "0"), env("SUT_CPU", "1")
NAME = env("REPORT_NAME", "canary-smoke")
VERSIONS = ("llm-v1", "llm-v2")

CONF = """\
proxy:
  timeouts: {{ response_header: 120s }}
  observe:
    gpu_hour_price: {{ llm-v1: {price}, llm-v2: {price} }}
backends:
  - {{ name: llm-v1, endpoints: [{v1}] }}
  - {{ name: llm-v2, endpoints: [{v2}] }}
services:
  - name: llm
    hosts: ["127.0.0.1", "localhost"]
    routes:
      - name: all
        backends: [{{ backend: llm-v1, weight: 90 }}, {{ backend: llm-v2, weight: 10 }}]
"""


def log(msg: str) -> None:
    llmrun.log("canary", msg)


def by_backend(text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in rd.prom_samples(text, name):
        if labels.get("direction") == "outbound":
            out[labels.get("backend", "-")] = out.get(labels.get("backend", "-"), 0.0) + v
    return out


def buckets(text: str, name: str, backend: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for labels, v in rd.prom_samples(text, name + "_bucket"):
        if labels.get("direction") == "outbound" and labels.get("backend") == backend:
            le = labels.get("le", "+Inf")
            key = float("inf") if le == "+Inf" else float(le)
            out[key] = out.get(key, 0.0) + v
    return out


def ms(s: float | None) -> str:
    return "–" if s is None else (f"{s * 1000:.0f} ms" if s >= 0.1 else f"{s * 1000:.1f} ms")


def run() -> dict:
    rd.NICE = env("NICE", "")
    ports = [PORT_BASE + i for i in range(STABLE + CANARY)]
    outbound, inbound, admin = PORT_BASE + 50, PORT_BASE + 51, PORT_BASE + 52
    llmrun.check_binaries()
    llmrun.check_ports(ports + [outbound, inbound, admin])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    raw = HERE / "results" / "raw" / f"{stamp}-{NAME}"
    raw.mkdir(parents=True, exist_ok=True)
    import atexit
    atexit.register(rd.stop_all)
    # The routing benchmark's fleet and load generator, with this run's knobs.
    knobs = SimpleNamespace(sut_cpu=SUT_CPU, gen_cpu=GEN_CPU, prompt=PROMPT, output=OUTPUT)
    spec = []
    for i, port in enumerate(ports):
        r = llmrun.replica(port, flags=["--step-base-us", str(STEP_US)])
        r["speed"] = 1.0 if i < STABLE else CANARY_SPEED
        spec.append(r)
    fleet = rd.Fleet(knobs, raw, spec)
    fleet.start(tag="run")
    eps = lambda ps: ", ".join(f'"127.0.0.1:{p}"' for p in ps)  # noqa: E731
    conf = raw / "vane.yaml"
    conf.write_text(CONF.format(price=PRICE, v1=eps(ports[:STABLE]), v2=eps(ports[STABLE:])))
    argv = [str(rd.PROXY_BIN), "--config", str(conf), "--outbound", f"127.0.0.1:{outbound}",
            "--inbound", f"127.0.0.1:{inbound}", "--admin", f"127.0.0.1:{admin}", "--log", "warn"]
    proxy = rd.start(rd.pinned(SUT_CPU, argv), raw / "proxy.log")
    rd.wait_until(lambda: rd.http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, 10, "vane-proxy /ready")
    csv_path = raw / "requests.csv"
    load = ["--rate", str(RATE), "--warmup", "0", "--duration", str(DURATION), "--drain", str(DRAIN),
            "--seed", str(SEED), "--include-usage", "--csv", str(csv_path)]
    log(f"{RATE:g} req/s for {DURATION:g} s from a cold start, {STABLE} stable + {CANARY} canary replicas")
    started = time.time()
    summary = rd.llm_load(knobs, [f"http://127.0.0.1:{outbound}/v1/completions"], load, DURATION + DRAIN + 60)
    metrics = rd.http_get(f"http://127.0.0.1:{admin}/metrics")[1]
    sims = {p: rd.prom_value(t, "vane_sim_requests_total") for p, t in zip(ports, fleet.metrics())}
    rd.stop(proxy)
    fleet.stop()
    (raw / "metrics.txt").write_text(metrics)
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f)]
    rec = {"stamp": stamp, "seconds": round(time.time() - started), "summary": summary, "sims": sims,
           "ports": ports, "raw": str(raw.relative_to(HERE.parent.parent)), "loadavg": os.getloadavg()[0],
           "client_tokens": sum(int(r["tokens"] or 0) for r in rows if r["status"] == "200"),
           "client_ok": sum(1 for r in rows if r["status"] == "200"),
           "client_prompt_tokens": sum(int(r["prompt_tokens"] or 0) for r in rows if r["status"] == "200")}
    (raw / "run.json").write_text(json.dumps(rec, indent=1))
    return rec


def report(rec: dict, metrics: str) -> Path:
    req = by_backend(metrics, "vane_model_requests_total")
    tin = by_backend(metrics, "vane_model_input_tokens_total")
    tout = by_backend(metrics, "vane_model_output_tokens_total")
    gpu = by_backend(metrics, "vane_model_gpu_seconds_total")
    cost = by_backend(metrics, "vane_model_cost_total")
    total = sum(req.get(v, 0.0) for v in VERSIONS) or 1.0
    L = [f"# Vane canary demo: `{NAME}`", "",
         f"Run `{rec['stamp']}` (UTC), {rec['seconds']} s; load average {rec['loadavg']:.1f} at the end.", "",
         f"Command: `bash bench/canary/run.sh` (RATE={RATE:g}, DURATION={DURATION:g}, STABLE={STABLE}, "
         f"CANARY={CANARY}, CANARY_SPEED={CANARY_SPEED:g}, STEP_US={STEP_US}, PRICE={PRICE:g}, SEED={SEED}).", "",
         f"**Setup.** `llm-v1`: {STABLE} `vane-sim` replicas at speed 1.0; `llm-v2` (the canary): {CANARY} at speed "
         f"{CANARY_SPEED:g} (every engine step {100 * (CANARY_SPEED - 1):.0f} % slower); each step costs "
         f"{STEP_US / 1000:g} ms plus 80 µs per sequence at speed 1.0. One fresh `vane-proxy` "
         f"(`p2c`) splits the route 90/10 and prices both backends at {PRICE:g} per GPU-hour. `llm-load` sends "
         f"streamed `/v1/completions` with `stream_options.include_usage`, prompt `{PROMPT}`, output `{OUTPUT}` "
         f"tokens, Poisson {RATE:g} req/s for {DURATION:g} s from a cold start (no warm-up).", "",
         "## Per version, from the proxy's `/metrics` alone", "",
         "| version | requests (share) | TTFT p50 / p95 | TPOT p50 / p95 | input tokens | output tokens | GPU-seconds | cost | cost per 1k output tokens |",
         "|---|---|---|---|---|---|---|---|---|"]
    for v in VERSIONS:
        tt = buckets(metrics, "vane_model_ttft_seconds", v)
        tp = buckets(metrics, "vane_model_tpot_seconds", v)
        o = tout.get(v, 0.0)
        c = cost.get(v, 0.0)
        L.append(f"| `{v}` | {req.get(v, 0):.0f} ({100 * req.get(v, 0) / total:.1f} %) | "
                 f"{ms(rd.hist_quantile(tt, 0.5))} / {ms(rd.hist_quantile(tt, 0.95))} | "
                 f"{ms(rd.hist_quantile(tp, 0.5))} / {ms(rd.hist_quantile(tp, 0.95))} | "
                 f"{tin.get(v, 0):.0f} | {o:.0f} | {gpu.get(v, 0):.1f} | {c:.4f} | "
                 f"{(1000 * c / o) if o else 0:.5f} |")
    q = {v: (rd.hist_quantile(buckets(metrics, "vane_model_ttft_seconds", v), 0.5),
             rd.hist_quantile(buckets(metrics, "vane_model_tpot_seconds", v), 0.5),
             cost.get(v, 0.0) / tout[v] if tout.get(v) else None) for v in VERSIONS}
    ratio = lambda i: ("–" if None in (q["llm-v2"][i], q["llm-v1"][i]) or not q["llm-v1"][i]  # noqa: E731
                       else f"{q['llm-v2'][i] / q['llm-v1'][i]:.2f}×")
    L += ["", f"Canary against stable: TTFT p50 {ratio(0)}, TPOT p50 {ratio(1)}, cost per output token {ratio(2)}.",
          "", "GPU-seconds are each replica's busy time (at least one request in flight) shared among the requests "
          "it was serving; the canary's replicas serve their share of the traffic in smaller batches, so each of "
          "their tokens carries more GPU time, on top of their slower steps."]
    ports = rec["ports"]
    sims = {int(k): v for k, v in rec["sims"].items()}
    sim_v = [sum(sims[p] for p in ps) for ps in (ports[:STABLE], ports[STABLE:])]
    s = rec["summary"]
    L += ["", "## Checked against the client and the simulators", "",
          f"- Requests the simulators served: `llm-v1` {sim_v[0]:.0f}, `llm-v2` {sim_v[1]:.0f} "
          f"(the proxy counted {req.get('llm-v1', 0):.0f} and {req.get('llm-v2', 0):.0f}).",
          f"- Output tokens the client counted: {rec['client_tokens']} over {rec['client_ok']} answers "
          f"(the proxy: {sum(tout.get(v, 0) for v in VERSIONS):.0f}); prompt tokens the client asked for: "
          f"{rec['client_prompt_tokens']} (the proxy, from the usage events: {sum(tin.get(v, 0) for v in VERSIONS):.0f}).",
          f"- Client-side, all versions pooled: TTFT p50 {s['ttft_ms']['p50']} ms, p99 {s['ttft_ms']['p99']} ms; "
          f"E2E p50 {s['e2e_ms']['p50']} ms; errors {s['errors']}, unfinished {s['unfinished']}.",
          "", f"Raw data: `{rec['raw']}/` (the scrape is `metrics.txt`).", ""]
    md = HERE / "results" / f"{NAME}.md"
    md.write_text("\n".join(L) + "\n")
    return md


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        raw = Path(sys.argv[2])
        rec = json.loads((raw / "run.json").read_text())
        print(report(rec, (raw / "metrics.txt").read_text()))
        return 0
    rec = run()
    raw = HERE.parent.parent / rec["raw"]
    md = report(rec, (raw / "metrics.txt").read_text())
    log(f"report: {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
