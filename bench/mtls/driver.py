#!/usr/bin/env python3
"""Vane's mTLS hop benchmark driver (Python standard library; bench/bench.py's functions).

    client (wrk / loadgen) -> outbound proxy A -> hop -> inbound proxy B -> echo backend

Three pairs run side by side, all on 127.0.0.1, A, B and the echo backend pinned to the
system-under-test core, the load generators to the other: `vane-mtls` (A and B with identities
from files, the hop TLS 1.3 + HTTP/2 with B's SPIFFE ID checked), `vane-plain` (no identities: the
hop is h2c) and `haproxy-mtls` (TLS 1.3 + HTTP/2 with client certificates, no SPIFFE ID check),
plus `direct` (client -> echo). Measured, interleaved per repetition: the pair's CPU per request
(A + B) in closed loop and at a fixed open-loop rate with p50/p99; handshakes per second against
B's TLS listener, full and resumed; B's RSS holding CONNS idle TLS connections.
See the mTLS section of bench/README.md.

    python3 bench/mtls/driver.py                      # normally through bench/mtls/run.sh
    python3 bench/mtls/driver.py --report RAW.jsonl   # re-render the report of a finished run
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import bench  # noqa: E402
from bench import Target, cpu_busy, cpu_ticks, cpu_times, fmt_num, fmt_range, fmt_ratio, mem_kib  # noqa: E402

CONF = HERE / "conf"
KNOBS = ["DURATION", "WARMUP", "REPS", "RATE", "CONNS", "HS_DURATION", "HS_CONC", "CLOSED_CONNS", "CLOSED_TOOL",
         "TARGETS", "REPORT_NAME", "LG_CPU", "SUT_CPU", "NICE", "QUIET_WAIT", "SKIP_BUILD"]
TRUST_DOMAIN = "cluster.local"
ID_A = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/client"
ID_B = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/server"
ECHO_PORT = 19790
# Client-facing port of each pair (A's listener; the echo backend for direct), and B's port: the
# TLS listener the handshake and memory tests use.
PORTS = {
    "direct": 19790,
    "vane-mtls": 19710,
    "vane-plain": 19720,
    "haproxy-mtls": 19730,
}
B_PORTS = {"vane-mtls": 19714, "vane-plain": 19724, "haproxy-mtls": 19734}
ALL_TARGETS = list(PORTS)
MIB = 1024


def log(msg: str) -> None:
    print(f"[mtls {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Pair(Target):
    """A target whose CPU and memory are those of several processes (A and B)."""

    members: list[Target] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [p for m in self.members for p in m.pids()]


class Rig:
    """The echo backend and the three pairs, pinned to the system-under-test core."""

    def __init__(self, names: list[str], sut_cpu: str, tmp: Path):
        self.names = names
        self.tmp = tmp
        self.fleet = bench.Fleet([], sut_cpu, tmp)  # its spawn (pinned, niced, logged) and its stop
        self.backend = Target("echo", ECHO_PORT, ECHO_PORT)
        self.pairs: dict[str, Pair] = {}
        self.procs: list[Target] = []

    def start(self) -> None:
        ports = [ECHO_PORT, *PORTS.values(), *B_PORTS.values(), *[p + k for p in (19710, 19720) for k in (1, 2, 3, 5)]]
        busy = sorted({p for p in ports if bench.port_open(p)})
        if busy:
            raise SystemExit(f"ports already in use on 127.0.0.1: {busy} (a previous run left something behind?)")
        self.make_certs()
        self.backend.proc = self.fleet.spawn("echo", [str(bench.RELEASE / "echo"), f"127.0.0.1:{ECHO_PORT}"], {"THREADS": "1"})
        self.procs.append(self.backend)
        self.wait_port(self.backend, ECHO_PORT)
        self.fleet.backend = self.backend
        for name in self.names:
            if name == "direct":
                self.pairs[name] = Pair(name, ECHO_PORT, ECHO_PORT)
                continue
            members = self.start_pair(name)
            self.pairs[name] = Pair(name, PORTS[name], PORTS[name], members=members)
        time.sleep(0.5)
        for name, p in self.pairs.items():
            err = bench.loadgen_check(p.url("h1"), "h1")
            if err:
                raise SystemExit(f"{name}: a request through the pair failed: {err} (logs in {self.tmp})")
            for m in p.members:
                m.mem_idle = mem_kib(m.pids())
            if p.members:
                log(f"{name}: ready (" + ", ".join(f"{m.name} pid {m.proc.pid} RSS {m.mem_idle['rss_kib']} KiB" for m in p.members) + ")")

    def make_certs(self) -> None:
        d = self.tmp / "certs"
        subprocess.run([str(bench.RELEASE / "mtls-certs"), str(d), f"a={ID_A}", f"b={ID_B}"], check=True)
        self.certs = d

    def identity_yaml(self, who: str) -> str:
        d = self.certs
        return f"proxy:\n  identity:\n    roots: {d}/ca.pem\n    cert: {d}/{who}.crt\n    key: {d}/{who}.key"

    def start_pair(self, name: str) -> list[Target]:
        port, bport = PORTS[name], B_PORTS[name]
        values = {"DIR": self.certs, "BACKEND": f"127.0.0.1:{ECHO_PORT}", "PORT": port, "B_PORT": bport, "B_ID": ID_B}
        if name.startswith("haproxy"):
            exe = bench.which("haproxy")
            if not exe:
                raise SystemExit("haproxy is not installed (bench/mtls/run.sh installs it)")
            b = Target(f"{name}-B", bport, bport)
            b.proc = self.fleet.spawn(b.name, [exe, "-f", str(bench.render(CONF / "haproxy-b.cfg", self.tmp / f"{b.name}.cfg", values))])
            self.procs.append(b)
            self.wait_port(b, bport)
            a = Target(f"{name}-A", port, port)
            a.proc = self.fleet.spawn(a.name, [exe, "-f", str(bench.render(CONF / "haproxy-a.cfg", self.tmp / f"{a.name}.cfg", values))])
            self.procs.append(a)
            self.wait_port(a, port)
            return [a, b]
        exe = bench.RELEASE / "vane-proxy"
        if not exe.exists():
            raise SystemExit(f"{exe} is missing (bench/mtls/run.sh builds it)")
        mtls = name == "vane-mtls"
        out = []
        # A: outbound on port (its inbound and admin next to it); B: inbound on bport, its
        # outbound just below and its admin just above.
        for side, who, (outbound, inbound, admin) in (("B", "b", (bport - 1, bport, bport + 1)),
                                                      ("A", "a", (port, port + 1, port + 2))):
            t = Target(f"{name}-{side}", port, port)
            ident = self.identity_yaml(who) if mtls else ("proxy:" if side == "B" else "")
            conf = bench.render(CONF / f"vane-{side.lower()}.yaml", self.tmp / f"{t.name}.yaml", {**values, "IDENTITY": ident})
            t.proc = self.fleet.spawn(t.name, [
                str(exe), "--config", str(conf),
                "--outbound", f"127.0.0.1:{outbound}", "--inbound", f"127.0.0.1:{inbound}",
                "--admin", f"127.0.0.1:{admin}", "--threads", "1",
            ])
            self.procs.append(t)
            self.wait_port(t, admin, f"http://127.0.0.1:{admin}/ready")
            out.append(t)
        return out[::-1]  # [A, B]

    def wait_port(self, t: Target, port: int, ready_url: str | None = None, deadline_s: float = 15) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if t.proc.poll() is not None:
                raise SystemExit(f"{t.name} exited with status {t.proc.returncode} (log: {self.tmp / (t.name + '.log')})")
            if bench.port_open(port) and (ready_url is None or bench.http_get(ready_url) == 200):
                return
            time.sleep(0.1)
        raise SystemExit(f"{t.name} not ready after {deadline_s:.0f} s (log: {self.tmp / (t.name + '.log')})")

    def dead(self) -> list[str]:
        return [t.name for t in self.procs if t.proc is not None and t.proc.poll() is not None]

    def stop(self) -> None:
        for t in reversed(self.procs):
            bench.Fleet.stop_one(t)


# ---------------------------------------------------------------- load (bench.measure)


def load_run(rig: Rig, pair: Pair, mode: bench.Mode, rep: int, dur: int, warm: int, lg_cpu: str, sut_cpu: str) -> dict:
    """bench.measure on the pair, with A's and B's CPU apart as well."""
    if warm:
        bench.run_tool(bench.tool_cmd(mode, pair.url(mode.proto), warm, None), lg_cpu, warm)
    a = pair.members[0].pids() if pair.members else []
    b = pair.members[1].pids() if pair.members else []
    a0, b0 = cpu_ticks(a), cpu_ticks(b)
    rec = bench.measure(rig.fleet, pair, mode, rep, dur, 0, lg_cpu, sut_cpu)
    a1, b1 = cpu_ticks(a), cpu_ticks(b)
    n = max(rec["requests"], 1)
    if pair.members:
        # Also counts the QUIET_WAIT pause before the run, when both are idle.
        rec["a_cpu_us_per_req"] = round((a1 - a0) * 1e6 / bench.CLK_TCK / n, 2)
        rec["b_cpu_us_per_req"] = round((b1 - b0) * 1e6 / bench.CLK_TCK / n, 2)
    rec["loadavg"] = os.getloadavg()[0]
    return rec


# ---------------------------------------------------------------- handshakes

# `full`: every connection a full handshake with the client certificate; `resumed`: every
# connection resumes the previous one's session with its TLS 1.3 ticket.
HS_CASES = ["full", "resumed"]


def client_context(certs: str) -> ssl.SSLContext:
    """TLS 1.3 with the client certificate (leaf and issuer), the server's chain checked against
    the trust anchor (its only name is its SPIFFE ID, so no host name check), ALPN h2 as a peer
    proxy offers it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(f"{certs}/ca.pem")
    ctx.load_cert_chain(f"{certs}/a.crt", f"{certs}/a.key")
    ctx.set_alpn_protocols(["h2"])
    return ctx


def handshake_run(rig: Rig, name: str, case: str, rep: int, secs: int, conc: int, lg_cpu: str, sut_cpu: str) -> dict:
    """`tls-handshakes` against B's TLS port for secs; B's CPU per connection."""
    b = rig.pairs[name].members[1]
    rec = {"type": "hs", "rep": rep, "target": name, "case": case, "concurrency": conc, "duration_s": secs}
    quiet = float(os.environ.get("QUIET_WAIT", "0"))
    if quiet > 0:
        rec["quiet_wait_s"] = bench.wait_quiet(quiet)
    cmd = [str(bench.RELEASE / "tls-handshakes"), f"127.0.0.1:{B_PORTS[name]}", "--certs", str(rig.certs),
           "--expect", ID_B, "-c", str(conc), "-d", str(secs)] + (["--resume"] if case == "resumed" else [])
    bp = b.pids()
    c0, st0 = cpu_ticks(bp), cpu_times()
    out = bench.run_tool(cmd, lg_cpu, secs)
    c1, st1 = cpu_ticks(bp), cpu_times()
    g = json.loads(out.strip().splitlines()[-1])
    if g["connections"] == 0:
        raise RuntimeError(f"no handshake succeeded ({g['failed']} failed)")
    rec.update({
        "connections": g["connections"], "reused": g["resumed"], "failed": g["failed"], "per_s": g["per_s"],
        "b_cpu_us_per_conn": round((c1 - c0) * 1e6 / bench.CLK_TCK / g["connections"], 1),
        "lg_cpu_busy_pct": cpu_busy(st0, st1, f"cpu{lg_cpu}")["busy_pct"],
        "sut_cpu_busy_pct": cpu_busy(st0, st1, f"cpu{sut_cpu}")["busy_pct"],
        "loadavg": os.getloadavg()[0],
    })
    return rec


# ---------------------------------------------------------------- idle connections (memory)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def hold(port: int, n: int, certs: str, tls: bool) -> int:
    """`--hold`: opens n connections to port (TLS 1.3 with the client certificate, ALPN h2, when
    tls), sends the HTTP/2 preface and an empty SETTINGS on each, reads the server's first bytes,
    prints one JSON line, and holds them all idle until stdin closes."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 100)), hard))
    ctx = client_context(certs) if tls else None
    held, failed, alpn, t0 = [], 0, set(), time.monotonic()
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if ctx:
                s = ctx.wrap_socket(s)
                alpn.add(s.selected_alpn_protocol())
            s.sendall(H2_PREFACE)
            s.recv(4096)  # the server's SETTINGS (and the TLS session tickets before them)
            held.append(s)
        except OSError:
            failed += 1
    print(json.dumps({"open": len(held), "failed": failed, "alpn": sorted(map(str, alpn)),
                      "secs": round(time.monotonic() - t0, 2)}), flush=True)
    sys.stdin.read()
    for s in held:
        s.close()
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def memory_run(rig: Rig, name: str, n: int, phase: str, lg_cpu: str) -> dict:
    """B's RSS with no client connection, holding n idle ones, and after they closed."""
    b = rig.pairs[name].members[1]
    pid = b.proc.pid
    tls = name != "vane-plain"
    rec = {"type": "mem", "target": name, "phase": phase, "conns": n, "tls": tls}
    time.sleep(0.5)
    rec["before"], rec["fds_before"] = mem_kib([pid]), fd_count(pid)
    p = bench.popen_pinned(lg_cpu, [sys.executable, str(Path(__file__).resolve()), "--hold", str(B_PORTS[name]), str(n),
                                    str(rig.certs), "tls" if tls else "plain"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        got = json.loads(line) if line.strip() else {"open": 0, "failed": n}
        rec.update({"open": got["open"], "failed": got["failed"], "alpn": got.get("alpn"), "open_secs": got.get("secs")})
        time.sleep(1.0)
        rec["held"], rec["fds_held"] = mem_kib([pid]), fd_count(pid)
        time.sleep(1.0)
        rec["held_later"] = mem_kib([pid])
    finally:
        try:
            p.stdin.close()
            p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            p.kill()
    time.sleep(2.0)
    rec["after"], rec["fds_after"] = mem_kib([pid]), fd_count(pid)
    return rec


# ---------------------------------------------------------------- checks


def tls_probe(port: int, certs: Path) -> str:
    """One HTTP/1.1 GET over TLS 1.3 with the client certificate: the status line, or the error."""
    ctx = client_context(str(certs))
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            status = data.split(b"\r\n")[0].decode(errors="replace")
            return f"{s.version()}, {status}"
    except (OSError, ssl.SSLError) as e:
        return f"failed: {e}"


def counter(admin_port: int, name: str) -> float | None:
    """The sum of a Prometheus counter on a Vane admin port."""
    try:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except Exception:  # noqa: BLE001
        return None
    vals = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name) and not l.startswith("#")]
    return sum(vals) if vals else None


def tls_counters(rig: Rig, emit, when: str) -> None:
    """Records what the Vane Bs counted: TLS connections terminated and TLS handshakes failed."""
    for n in ("vane-mtls", "vane-plain"):
        if n in rig.pairs:
            admin = B_PORTS[n] + 1
            got = {k: counter(admin, f"vane_inbound_tls_{k}_total") for k in ("connections", "failures")}
            emit({"type": "check", "what": f"{n} B {when}: `vane_inbound_tls_connections_total` / `_failures_total`",
                  "result": f"{fmt_num(got['connections'])} / {fmt_num(got['failures'])}"})


# ---------------------------------------------------------------- report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def paired(runs: list[dict], mode: str, a: str, b: str, key: str) -> list[float]:
    out = []
    for ra in (r for r in runs if r["mode"] == mode and r["target"] == a):
        rb = next((r for r in runs if r["mode"] == mode and r["target"] == b and r["rep"] == ra["rep"]), None)
        if rb and ra.get(key) is not None and rb.get(key):
            out.append(ra[key] / rb[key])
    return out


def verdict(value: float | None, limit: float, unit: str = "×") -> str:
    if value is None:
        return "not measured"
    shown = f"{value:.2f}×" if unit == "×" else f"{value:.1f} {unit}"
    target = f"{limit:.1f}×" if unit == "×" else f"{limit:g} {unit}"
    return f"**{'met' if value <= limit else 'not met'}**: {shown} (target ≤ {target})"


def report(records: list[dict]) -> str:
    meta = next(r for r in records if r.get("type") == "meta")
    end = next((r for r in records if r.get("type") == "end"), {})
    runs = [r for r in records if r.get("type") == "run"]
    hss = [r for r in records if r.get("type") == "hs"]
    mems = [r for r in records if r.get("type") == "mem"]
    fails = [r for r in records if r.get("type") == "fail"]
    checks = [r for r in records if r.get("type") == "check"]
    modes = list(dict.fromkeys(r["mode"] for r in runs))
    targets = [t for t in ALL_TARGETS if any(r["target"] == t for r in runs + hss + mems)]
    loads = [r["loadavg"] for r in runs + hss if "loadavg" in r] + [meta["loadavg_start"]]
    foreign = [r["foreign_cpu_pct"] for r in runs if "foreign_cpu_pct" in r]
    waits = [r["quiet_wait_s"] for r in runs + hss if "quiet_wait_s" in r]
    quiet = ""
    if waits:
        limit = float(meta.get("quiet_wait") or int(max(waits)))
        quiet = (f"; before each run it waited up to {limit:g} s (`QUIET_WAIT`) for other processes to use less than "
                 f"10 % of a core: {sum(1 for w in waits if w < limit)} of {len(waits)} runs found the machine that quiet")

    o = [f"# Vane mTLS hop benchmark: `{meta['name']}`\n"]
    o.append(f"Run `{meta['stamp']}` ({meta['date']} UTC), commit `{meta['commit']}`, {end.get('secs', 0) / 60:.1f} min in all.\n")
    o.append(f"Command: `{meta['command']}`\n")
    o.append(f"Machine: {meta['cpu_model']}, {meta['nproc']} cores shared with other work (builds, tests), kernel "
             f"{meta['kernel']}. Load average (1 min) {min(loads):.2f}–{max(loads):.2f} during the run"
             + (f"; other processes used {min(foreign):.0f}–{max(foreign):.0f} % of a core during the load runs" if foreign else "")
             + quiet
             + ". Absolute figures are noisy on such a machine: **read the ratios**, which pair runs of the same repetition "
             "made back to back. The load generators ran on CPU "
             f"{meta['lg_cpu']}; the echo backend and both proxies of every pair on CPU {meta['sut_cpu']}, one thread each"
             + (f", at nice {meta['nice']}" if meta.get("nice") else "") + f". Tools: {meta['tools']}.\n")
    o.append("**Topology.** client → A (outbound proxy, HTTP/1.1 from the client) → hop → B (inbound proxy) → echo "
             "(HTTP/1.1 keep-alive, a 100-byte 200), all on 127.0.0.1. `vane-mtls`: A and B have identities from files "
             f"(`proxy.identity`, ECDSA P-256 workload certificates made with `vane_identity` for `{ID_A}` and `{ID_B}`, "
             "signed by an issuer signed by a trust anchor); A's backend is B's inbound listener with `identity: "
             f"{ID_B}`, so the hop is TLS 1.3 + HTTP/2 and A checks B's SPIFFE ID; B terminates TLS and forwards to "
             "`inbound.forward_to`. `vane-plain`: the same without `proxy.identity`, so the hop is h2c. "
             "`haproxy-mtls`: HAProxy A (`server … ssl crt … ca-file … verify required alpn h2`) and HAProxy B "
             "(`bind … ssl crt … ca-file … verify required alpn h2,http/1.1`), the same certificates, TLS 1.3 only; "
             "HAProxy checks the chain but **not the peer's SPIFFE ID**. `direct`: client → echo.\n")
    o.append(f"{meta['reps']} repetition(s); in each, every mode runs every target in turn (the order rotated by one "
             f"per repetition), {meta['warmup_s']} s warm-up then {meta['duration_s']} s measured; then the handshake "
             "cases; the memory test ran before the first repetition's load and after the last one's handshakes. Values are median [min–max] over "
             "repetitions; ratios are paired per repetition, then median (min–max).\n")

    for c in checks:
        o.append(f"- check: {c['what']}: {c['result']}")
    if checks:
        o.append("")

    o.append("## Load: CPU per request of the pair\n")
    o.append("*Pair CPU µs/req* = Δ(utime + stime) of A and B over the measured run ÷ responses (A and B apart "
             "beside it); the echo backend's is not in it. Closed loop: "
             f"`{runs[0]['tool'] if runs else 'wrk'}` with {meta.get('closed_conns')} connections, latency there is Little's law. "
             f"Open loop: `loadgen` at {meta['rate']} req/s over 64 HTTP/1.1 connections, latency from each request's "
             "scheduled send time (coordinated omission corrected). Latency in µs.\n")
    o.append("| mode | target | req/s | p50 | p99 | pair CPU µs/req | A / B µs/req | echo µs/req | CPU0/CPU1 % | errors | flags |")
    o.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in modes:
        for t in targets:
            rs = [r for r in runs if r["mode"] == m and r["target"] == t]
            if not rs:
                continue
            ab = f"{fmt_num(med([r.get('a_cpu_us_per_req') for r in rs]), 1)} / {fmt_num(med([r.get('b_cpu_us_per_req') for r in rs]), 1)}" \
                if t != "direct" else "–"
            o.append("| " + " | ".join([
                m, t, fmt_range([r["rps"] for r in rs]), fmt_range([r["p50_us"] for r in rs]), fmt_range([r["p99_us"] for r in rs]),
                fmt_range([r["proxy_cpu_us_per_req"] for r in rs], 1) if t != "direct" else "–", ab,
                fmt_range([r["backend_cpu_us_per_req"] for r in rs], 1),
                f"{med([r['lg_cpu_busy_pct'] for r in rs]):.0f}/{med([r['sut_cpu_busy_pct'] for r in rs]):.0f}",
                str(sum(r["errors"] + r["status_errors"] for r in rs)),
                "; ".join(sorted({f for r in rs for f in r["flags"]})) or "–",
            ]) + " |")
    o.append("")

    o.append("Paired ratios:\n")
    o.append("| mode | ratio | pair CPU µs/req | req/s | p50 | p99 |")
    o.append("|---|---|---|---|---|---|")
    ratio_rows = [("vane-mtls", "haproxy-mtls"), ("vane-mtls", "vane-plain"), ("haproxy-mtls", "vane-plain")]
    for m in modes:
        for a, b in ratio_rows:
            if not any(r["target"] == a for r in runs) or not any(r["target"] == b for r in runs):
                continue
            o.append(f"| {m} | {a} ÷ {b} | " + " | ".join(fmt_ratio(paired(runs, m, a, b, k))
                                                         for k in ("proxy_cpu_us_per_req", "rps", "p50_us", "p99_us")) + " |")
    o.append("")
    ol = [m for m in modes if m.startswith("ol-")]
    if ol and any(r["target"] == "direct" for r in runs):
        o.append(f"Latency the hop adds over `direct` in open loop (paired per repetition, µs):\n")
        o.append("| mode | target | +p50 | +p99 |")
        o.append("|---|---|---|---|")
        for m in ol:
            for t in targets:
                if t == "direct":
                    continue
                d50, d99 = [], []
                for r in (x for x in runs if x["mode"] == m and x["target"] == t):
                    d = next((x for x in runs if x["mode"] == m and x["target"] == "direct" and x["rep"] == r["rep"]), None)
                    if d:
                        d50.append(r["p50_us"] - d["p50_us"])
                        d99.append(r["p99_us"] - d["p99_us"])
                if d50:
                    o.append(f"| {m} | {t} | {fmt_range(d50)} | {fmt_range(d99)} |")
        o.append("")

    if hss:
        o.append("## Handshakes against B's TLS listener\n")
        o.append(f"`tls-handshakes` (bench/src/bin) on CPU {meta['lg_cpu']}, {hss[0]['concurrency']} connections in "
                 f"flight, {hss[0]['duration_s']} s per run. Each connection: TCP connect, a TLS 1.3 handshake with "
                 "the client certificate through Vane's own client configuration (`Credentials::client_config`, "
                 "ALPN `h2`, the mesh server name), the server's SPIFFE ID checked, the HTTP/2 preface and SETTINGS "
                 "sent, the server's first bytes read (its session tickets come before them), then closed. `full`: "
                 "resumption off in the client, so every handshake is a full one (ECDHE, both chains sent and "
                 "checked); `resumed`: the client offers the tickets it got (PSK with ECDHE, no certificates). "
                 "*Resumed* is the share rustls reports as resumed (`handshake_kind`). *B CPU µs/conn* = Δ(utime + "
                 "stime) of B ÷ connections (the handshake plus setting up and tearing down an HTTP/2 connection); "
                 "*B-bound rate* = 10⁶ ÷ that, the connections per second one core of B would take. Compare on "
                 "those two when the client's core (CPU0) is near 100 %.\n")
        o.append("| case | B | connections/s | resumed | failed | B CPU µs/conn | B-bound rate /s | CPU0/CPU1 % |")
        o.append("|---|---|---|---|---|---|---|---|")
        for case in HS_CASES:
            for t in targets:
                rs = [r for r in hss if r["case"] == case and r["target"] == t]
                if not rs:
                    continue
                conns = max(1, sum(r["connections"] for r in rs))
                o.append("| " + " | ".join([
                    case, t, fmt_range([r["per_s"] for r in rs]),
                    f"{100 * sum(r['reused'] for r in rs) / conns:.1f} %", str(sum(r["failed"] for r in rs)),
                    fmt_range([r["b_cpu_us_per_conn"] for r in rs]),
                    fmt_num(1e6 / med([r["b_cpu_us_per_conn"] for r in rs])),
                    f"{med([r['lg_cpu_busy_pct'] for r in rs]):.0f}/{med([r['sut_cpu_busy_pct'] for r in rs]):.0f}",
                ]) + " |")
        o.append("")
        o.append("| case | vane-mtls ÷ haproxy-mtls: connections/s | B CPU µs/conn |")
        o.append("|---|---|---|")
        for case in HS_CASES:
            cells = []
            for k in ("per_s", "b_cpu_us_per_conn"):
                xs = []
                for r in (x for x in hss if x["case"] == case and x["target"] == "vane-mtls"):
                    h = next((x for x in hss if x["case"] == case and x["target"] == "haproxy-mtls" and x["rep"] == r["rep"]), None)
                    if h and h[k]:
                        xs.append(r[k] / h[k])
                cells.append(fmt_ratio(xs))
            o.append(f"| {case} | {cells[0]} | {cells[1]} |")
        o.append("")

    if mems:
        o.append("## Memory: B holding idle connections\n")
        o.append(f"A Python client on CPU {meta['lg_cpu']} opens the connections to B one by one (TLS 1.3 with the "
                 "client certificate and ALPN `h2`; for `vane-plain` plaintext h2c), sends the HTTP/2 preface and an "
                 "empty SETTINGS on each, reads the server's first bytes and holds them all idle. B's VmRSS "
                 "before, 1 s after the last one opened (and 1 s later), and 2 s after they closed. *fds* counts "
                 "B's open file descriptors (one per held connection). `fresh`: before any load; `after load`: at "
                 "the end of the run.\n")
        o.append("| phase | B | connections held (fds) | RSS 0 conns | RSS held | RSS held +1 s | Δ per conn | RSS after close | VmHWM |")
        o.append("|---|---|---|---|---|---|---|---|---|")
        for r in mems:
            d = (r["held"]["rss_kib"] - r["before"]["rss_kib"]) / max(1, r["open"])
            o.append("| " + " | ".join([
                r["phase"], r["target"] + (" (h2c)" if not r["tls"] else ""),
                f"{r['open']}/{r['conns']} ({r['fds_held'] - r['fds_before']:+d})" + (f", {r['failed']} failed" if r["failed"] else ""),
                f"{r['before']['rss_kib'] / MIB:.1f} MiB", f"{r['held']['rss_kib'] / MIB:.1f} MiB",
                f"{r['held_later']['rss_kib'] / MIB:.1f} MiB", f"{d:.1f} KiB",
                f"{r['after']['rss_kib'] / MIB:.1f} MiB", f"{r['after']['hwm_kib'] / MIB:.1f} MiB",
            ]) + " |")
        o.append("")

    o.append("## Targets\n")
    for m in modes:
        o.append(f"- Vane's pair CPU per request at most 1.0× HAProxy's pair over mTLS, `{m}`: "
                 + verdict(med(paired(runs, m, "vane-mtls", "haproxy-mtls", "proxy_cpu_us_per_req")), 1.0))
    for m in modes:
        v = med(paired(runs, m, "vane-mtls", "vane-plain", "proxy_cpu_us_per_req"))
        o.append(f"- The TLS hop adds at most 50 % CPU over the plaintext pair (vane-mtls ÷ vane-plain ≤ 1.5), `{m}`: "
                 + verdict(v, 1.5) + (f": +{100 * (v - 1):.0f} %" if v else ""))
    vm = [r for r in mems if r["target"] == "vane-mtls"]
    for r in vm:
        o.append(f"- Vane's B RSS with {r['conns']} idle TLS connections at most 40 MiB, {r['phase']}: "
                 + verdict(r["held"]["rss_kib"] / MIB, 40, "MiB")
                 + f" (from {r['before']['rss_kib'] / MIB:.1f} MiB with none)")
    o.append("")

    o.append("## Sanity\n")
    errs = [r for r in runs if r["errors"] or r["status_errors"]]
    o.append(f"- load runs: {len(runs)}, with errors: {len(errs)}; handshake runs: {len(hss)}; memory tests: {len(mems)}")
    for r in fails:
        o.append(f"- **failed** {r.get('what')} {r.get('target')} rep {r.get('rep')}: {r['error']}")
    flagged = [r for r in runs if r["flags"]]
    if flagged:
        o.append("- flagged load runs: " + "; ".join(f"{r['mode']} {r['target']} rep {r['rep']}: {' '.join(r['flags'])}" for r in flagged))
    o.append("- flags as in bench/README.md: `sut-cpuN%` the system-under-test core was below 95 % busy in closed loop; "
             "`lg-bound` the load generator's core was ≥ 95 % busy; `below-rate` the open loop achieved < 97 % of the "
             "rate; `lg-late` loadgen sent late; `noise-sutN%` / `noise-lgN%` other processes used N % of a core "
             "during the run.")
    o.append("")
    return "\n".join(o)


# ---------------------------------------------------------------- main


def meta_record(name: str, stamp: str, reps: int, dur: int, warm: int, rate: int, closed_conns: int, lg_cpu: str, sut_cpu: str) -> dict:
    m = bench.meta_record(name, reps, dur, warm, rate, lg_cpu, sut_cpu, {})
    knobs = [f"{k}={os.environ[k]}" for k in KNOBS if os.environ.get(k)]
    tools = "; ".join(filter(None, [
        bench.sh(["haproxy", "-v"]).splitlines()[0].split(" - ")[0],
        bench.sh(["wrk", "-v"]).splitlines()[0].split(" Copyright")[0],
        f"Python {sys.version.split()[0]} ssl ({ssl.OPENSSL_VERSION})",
        "Vane loadgen",
    ]))
    m.update({"name": name, "stamp": stamp, "command": " ".join(knobs + ["bash bench/mtls/run.sh"]), "tools": tools,
              "closed_conns": closed_conns, "quiet_wait": float(os.environ.get("QUIET_WAIT") or 0)})
    m.pop("profile", None)
    return m


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        print(report([json.loads(l) for l in open(sys.argv[2]) if l.strip()]))
        return 0
    if len(sys.argv) == 6 and sys.argv[1] == "--hold":
        return hold(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "tls")
    if len(sys.argv) > 1:
        print(__doc__)
        return 2

    reps = int(os.environ.get("REPS", "3"))
    dur = int(os.environ.get("DURATION", "10"))
    warm = int(os.environ.get("WARMUP", "2"))
    rate = int(os.environ.get("RATE", "2000"))
    conns = int(os.environ.get("CONNS", "1000"))
    hs_secs = int(os.environ.get("HS_DURATION", "5"))
    hs_conc = int(os.environ.get("HS_CONC", "8"))
    closed_conns = int(os.environ.get("CLOSED_CONNS", "64"))
    if not (0 < dur <= bench.MAX_RUN_S and 0 <= warm <= bench.MAX_RUN_S and 0 < hs_secs <= bench.MAX_RUN_S):
        raise SystemExit(f"DURATION, WARMUP and HS_DURATION must be at most {bench.MAX_RUN_S} s")
    lg_cpu, sut_cpu = os.environ.get("LG_CPU", "0"), os.environ.get("SUT_CPU", "1")
    names = [t.strip() for t in os.environ.get("TARGETS", ",".join(ALL_TARGETS)).split(",") if t.strip()]
    for n in names:
        if n not in PORTS:
            raise SystemExit(f"unknown target {n!r}; known: {ALL_TARGETS}")
    closed_tool = os.environ.get("CLOSED_TOOL", "wrk")
    modes = [bench.parse_mode(f"h1-c{closed_conns}", closed_tool), bench.parse_mode(f"ol-h1@{rate}", closed_tool)]
    for exe in ("echo", "loadgen", "mtls-certs", "tls-handshakes", "vane-proxy"):
        if not (bench.RELEASE / exe).exists():
            raise SystemExit(f"{bench.RELEASE / exe} is missing: run bench/mtls/run.sh (it builds them)")

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = os.environ.get("REPORT_NAME") or f"{stamp}"
    out_dir = HERE / "results"
    raw_dir = out_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    jsonl_path = raw_dir / f"{stamp}-{name}.jsonl"
    tmp = Path(tempfile.mkdtemp(prefix="vane-mtls-bench-"))
    rig = Rig(names, sut_cpu, tmp)
    records: list[dict] = []
    jsonl = open(jsonl_path, "w")
    t_start = time.monotonic()

    def emit(rec: dict) -> None:
        records.append(rec)
        jsonl.write(json.dumps(rec) + "\n")
        jsonl.flush()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    tls_bs = [n for n in names if n in ("vane-mtls", "haproxy-mtls")]
    mem_bs = [n for n in names if n in B_PORTS]
    n_load = reps * len(modes) * len(names)
    log(f"{reps} rep(s): {n_load} load runs of {warm}+{dur} s, {reps * len(HS_CASES) * len(tls_bs)} handshake runs of "
        f"{hs_secs} s, memory tests with {conns} connections; load average {os.getloadavg()[0]:.2f}")
    try:
        rig.start()
        emit(meta_record(name, stamp, reps, dur, warm, rate, closed_conns, lg_cpu, sut_cpu))
        for n in tls_bs:
            emit({"type": "check", "what": f"GET over TLS to {n} B with the client certificate",
                  "result": tls_probe(B_PORTS[n], rig.certs)})
        tls_counters(rig, emit, "before the load runs")
        order = list(names)
        k = 0
        for rep in range(reps):
            rot = order[rep % len(order):] + order[: rep % len(order)]
            if rep == 0:
                for n in mem_bs:
                    r = memory_run(rig, n, conns, "fresh", lg_cpu)
                    emit(r)
                    log(f"memory fresh {n}: {r['open']} held, RSS {r['before']['rss_kib']} -> {r['held']['rss_kib']} KiB")
            for mode in modes:
                for n in rot:
                    k += 1
                    try:
                        r = load_run(rig, rig.pairs[n], mode, rep, dur, warm, lg_cpu, sut_cpu)
                        emit(r)
                        log(f"[{k}/{n_load}] rep {rep} {mode.name:<10} {n:<13} {r['rps']:>9,.0f} req/s  p50 {r['p50_us']:>6,.0f} "
                            f"p99 {r['p99_us']:>7,.0f} µs  pair cpu/req {r['proxy_cpu_us_per_req']}  {' '.join(r['flags'])}")
                    except Exception as e:  # noqa: BLE001
                        emit({"type": "fail", "what": mode.name, "target": n, "rep": rep, "error": str(e)[:400]})
                        log(f"[{k}/{n_load}] rep {rep} {mode.name} {n}: FAILED: {e}")
                    dead = rig.dead()
                    if dead:
                        raise RuntimeError(f"exited: {dead} (logs in {tmp})")
            hs_rot = tls_bs[rep % max(1, len(tls_bs)):] + tls_bs[: rep % max(1, len(tls_bs))]
            for case in HS_CASES:
                for n in hs_rot:
                    try:
                        r = handshake_run(rig, n, case, rep, hs_secs, hs_conc, lg_cpu, sut_cpu)
                        emit(r)
                        log(f"rep {rep} handshakes {case:<11} {n:<13} {r['per_s']:>7,.0f}/s  resumed {r['reused']}/{r['connections']}  "
                            f"B cpu/conn {r['b_cpu_us_per_conn']} µs  CPU0/1 {r['lg_cpu_busy_pct']:.0f}/{r['sut_cpu_busy_pct']:.0f} %")
                    except Exception as e:  # noqa: BLE001
                        emit({"type": "fail", "what": f"handshakes {case}", "target": n, "rep": rep, "error": str(e)[:400]})
                        log(f"rep {rep} handshakes {case} {n}: FAILED: {e}")
            if rep == reps - 1:
                for n in mem_bs:
                    r = memory_run(rig, n, conns, "after load", lg_cpu)
                    emit(r)
                    log(f"memory after load {n}: {r['open']} held, RSS {r['before']['rss_kib']} -> {r['held']['rss_kib']} KiB")
        tls_counters(rig, emit, "at the end")
    except KeyboardInterrupt:
        log("interrupted")
    except RuntimeError as e:
        log(f"stopped: {e}")
    finally:
        rig.stop()
        emit({"type": "end", "secs": round(time.monotonic() - t_start)})
        jsonl.close()

    if not any(r.get("type") in ("run", "hs", "mem") for r in records):
        log(f"nothing was measured; logs in {tmp}")
        return 1
    md = report(records)
    md_path = out_dir / f"{name}.md"
    md_path.write_text(md)
    print(md)
    log(f"wrote {md_path} (raw: {jsonl_path})")
    if any(r.get("type") == "fail" for r in records):
        log(f"some runs failed; logs in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
