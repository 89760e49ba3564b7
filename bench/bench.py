#!/usr/bin/env python3
"""Vane's proxy benchmark driver (standard library only).

Starts the echo backend and the proxies under test pinned to one core, loads
them from the other core with wrk, h2load and Vane's own loadgen, and writes
raw JSONL plus a markdown report. See bench/README.md for the method.

    python3 bench/bench.py                 # run (normally through bench/run.sh)
    python3 bench/bench.py --report RAW.jsonl   # re-render a report
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CONF = BENCH / "conf"
WRK_LUA = BENCH / "lib" / "wrk-report.lua"
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_RUN_S = 20  # no load run may last longer than this
# A run is flagged as noisy when other processes used more than this % of the
# system-under-test core or of the load generator's core; RETRY_NOISY redoes it.
NOISE_SUT_PCT = 5.0
NOISE_LG_PCT = 20.0
ENV_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
# Optional niceness for everything the bench starts (negative needs root): on a
# shared machine it keeps other work from taking CPU from the measured processes.
NICE = os.environ.get("NICE", "")


def pinned(cpu: str, argv: list[str]) -> list[str]:
    prefix = ["taskset", "-c", cpu]
    if NICE:
        prefix += ["nice", "-n", NICE]
    return prefix + argv


def popen_pinned(cpu: str, argv: list[str], **kw) -> subprocess.Popen:
    """Starts argv pinned to cpu in a session of its own. With the kernel's
    autogroup scheduling every session is one scheduling group, and the task
    nice value only counts inside the group, so NICE is also applied to the
    group (/proc/PID/autogroup)."""
    p = subprocess.Popen(pinned(cpu, argv), start_new_session=True, **kw)
    if NICE:
        try:
            Path(f"/proc/{p.pid}/autogroup").write_text(NICE)
        except OSError:
            pass
    return p

BACKEND = "127.0.0.1:18090"
# h1 / h2c listener ports of every target (direct = the echo backend itself).
PORTS = {
    "direct": (18090, 18090),
    "vane": (18580, 18580),
    # A second vane-proxy, built from another commit (VANE_BASE_BIN), to compare two versions of
    # Vane side by side in one run: TARGETS=direct,vane,vane-base,...
    "vane-base": (18680, 18680),
    "nginx": (18180, 18181),
    "haproxy": (18280, 18281),
}
VANE_INBOUND = 18581
VANE_ADMIN = 18590
# Inbound and admin ports of each Vane target.
VANE_PORTS = {"vane": (VANE_INBOUND, VANE_ADMIN), "vane-base": (18681, 18690)}
ALL_TARGETS = ["direct", "vane", "vane-base", "nginx", "haproxy"]
DEFAULT_TARGETS = ["direct", "vane", "nginx", "haproxy"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def which(cmd: str) -> str | None:
    return shutil.which(cmd, path=ENV_PATH)


# ---------------------------------------------------------------- /proc probes


def proc_stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2 :].split()  # fields from #3 (state) on


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of the processes (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            f = proc_stat_fields(pid)
            total += int(f[11]) + int(f[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(proc_stat_fields(int(d))[1]) == pid:
                    out.append(int(d))
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                pass
    return sorted(out)


def mem_kib(pids: list[int]) -> dict:
    """Sum of VmRSS, VmHWM (from status) and Pss (from smaps_rollup), KiB."""
    rss = hwm = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return {"rss_kib": rss, "hwm_kib": hwm, "pss_kib": pss}


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat: user nice system idle iowait irq softirq steal."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu"):
                parts = line.split()
                out[parts[0]] = [int(x) for x in parts[1:9]]
    return out


def cpu_busy(before: dict, after: dict, cpu: str) -> dict:
    b, a = before[cpu], after[cpu]
    d = [y - x for x, y in zip(b, a)]
    total = sum(d) or 1
    idle = d[3] + d[4]
    return {
        "busy_pct": round(100.0 * (total - idle) / total, 1),
        "steal_pct": round(100.0 * d[7] / total, 1),
        "task_ticks": d[0] + d[1] + d[2],  # user + nice + system
    }


def wait_quiet(max_wait_s: float, threshold_pct: float = 10.0) -> float:
    """Waits (at most max_wait_s) until the machine's task CPU use over 0.5 s is
    below threshold_pct of one core. The bench's own processes are idle then.
    Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait_s:
        a = cpu_times()
        time.sleep(0.5)
        b = cpu_times()
        used = cpu_busy(a, b, "cpu")["task_ticks"] / CLK_TCK / 0.5 * 100
        if used < threshold_pct:
            break
    return round(time.monotonic() - start, 1)


def rusage_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- modes


@dataclass
class Mode:
    name: str
    loop: str  # "closed" | "open"
    proto: str  # "h1" | "h2c"
    conns: int
    streams: int = 1
    rate: int | None = None
    tool: str = ""  # wrk | h2load | loadgen


def parse_mode(name: str, closed_tool: str) -> Mode:
    m = re.fullmatch(r"h1-c(\d+)", name)
    if m:
        return Mode(name, "closed", "h1", int(m[1]), tool="wrk" if closed_tool == "wrk" else "loadgen")
    m = re.fullmatch(r"h2c-c(\d+)m(\d+)", name)
    if m:
        return Mode(name, "closed", "h2c", int(m[1]), int(m[2]), tool="h2load" if closed_tool == "wrk" else "loadgen")
    m = re.fullmatch(r"ol-h1@(\d+)", name)
    if m:
        return Mode(name, "open", "h1", 64, 1, int(m[1]), "loadgen")
    m = re.fullmatch(r"ol-h2c@(\d+)", name)
    if m:
        return Mode(name, "open", "h2c", 4, 16, int(m[1]), "loadgen")
    raise SystemExit(f"unknown mode {name!r} (h1-cN, h2c-cNmM, ol-h1@RATE, ol-h2c@RATE)")


PROFILES = {
    # reps, measured seconds, warm-up seconds, modes (RATE substituted)
    "smoke": (1, 3, 2, ["h1-c64", "h2c-c16m10", "ol-h1@{R}", "ol-h2c@{R}"]),
    "quick": (3, 10, 2, ["h1-c16", "h1-c64", "h2c-c16m10", "ol-h1@{R}", "ol-h2c@{R}"]),
    "full": (5, 10, 2, ["h1-c16", "h1-c64", "h2c-c16m10", "ol-h1@{R}", "ol-h2c@{R}", "ol-h1@{R2}", "ol-h2c@{R2}"]),
}


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    h1_port: int
    h2c_port: int
    proc: subprocess.Popen | None = None
    multi_process: bool = False  # nginx: master + workers
    mem_idle: dict = field(default_factory=dict)

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        if self.multi_process:
            return [self.proc.pid] + children(self.proc.pid)
        return [self.proc.pid]

    def url(self, proto: str) -> str:
        return f"http://127.0.0.1:{self.h1_port if proto == 'h1' else self.h2c_port}/"


def render(template: Path, dest: Path, values: dict) -> Path:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    leftover = set(re.findall(r"@[A-Z0-9_]+@", text)) - {"@VARS@"}
    if leftover:
        raise SystemExit(f"{template}: unfilled {sorted(leftover)}")
    dest.write_text(text)
    return dest


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except Exception:
        return 0


def loadgen_check(url: str, proto: str) -> str | None:
    """A 0.2 s closed-loop probe with one connection; None if all answers were 2xx."""
    cmd = [str(RELEASE / "loadgen"), url, "--proto", proto, "-c", "1", "--closed", "-d", "0.2", "--timeout", "2"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        return f"probe failed: {e}"
    if r["ok"] == 0 or r["errors"] or r["status_errors"]:
        return f"probe: ok={r['ok']} errors={r['errors']} status_errors={r['status_errors']}"
    return None


class Fleet:
    """The backend and the proxies, all pinned to the system-under-test core."""

    def __init__(self, names: list[str], sut_cpu: str, tmp: Path):
        self.names = names
        self.sut_cpu = sut_cpu
        self.tmp = tmp
        self.backend: Target | None = None
        self.targets: dict[str, Target] = {}
        self.skipped: dict[str, str] = {}

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        logf = open(self.tmp / f"{name}.log", "ab")
        return popen_pinned(
            self.sut_cpu,
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PATH": ENV_PATH, **(env or {})},
        )

    def wait_ready(self, t: Target, deadline_s: float, ready_url: str | None = None) -> str | None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if t.proc is not None and t.proc.poll() is not None:
                return f"exited with status {t.proc.returncode} (log: {self.tmp / (t.name + '.log')})"
            ok = port_open(t.h1_port) and port_open(t.h2c_port)
            if ok and ready_url:
                ok = http_get(ready_url) == 200
            if ok:
                for proto in ("h1", "h2c"):
                    err = loadgen_check(t.url(proto), proto)
                    if err:
                        return f"{proto}: {err}"
                return None
            time.sleep(0.1)
        return f"not ready after {deadline_s:.0f} s"

    def start(self) -> None:
        vane_ports = [x for n in self.names for x in VANE_PORTS.get(n, ())]
        busy = [p for p in {18090, *[x for n in self.names for x in PORTS[n]], *vane_ports} if port_open(p)]
        if busy:
            raise SystemExit(f"ports already in use on 127.0.0.1: {sorted(busy)} (a previous run left something behind?)")
        b = Target("echo", 18090, 18090)
        err = self.launch(b)
        if err:
            raise SystemExit(f"echo backend: {err}")
        self.backend = b
        for name in self.names:
            h1, h2c = PORTS[name]
            t = Target(name, h1, h2c)
            err = self.launch(t)
            if err:
                self.skipped[name] = err
                log(f"{name}: skipped: {err}")
                continue
            self.targets[name] = t
            if t.proc is not None:
                time.sleep(0.5)
                t.mem_idle = mem_kib(t.pids())
                log(f"{name}: ready (pids {t.pids()}, idle RSS {t.mem_idle['rss_kib']} KiB)")

    def launch(self, t: Target) -> str | None:
        """Starts t's process (none for direct) and waits until it answers; an error text if not."""
        values = {"DIR": self.tmp, "BACKEND": BACKEND, "H1_PORT": t.h1_port, "H2C_PORT": t.h2c_port}
        ready_url = None
        if t.name == "direct":
            return None
        if t.name == "echo":
            t.proc = self.spawn("echo", [str(RELEASE / "echo"), BACKEND], {"THREADS": "1"})
        elif t.name == "nginx":
            exe = which("nginx")
            if not exe:
                return "nginx is not installed"
            conf = render(CONF / "nginx.conf", self.tmp / "nginx.conf", values)
            t.proc = self.spawn(t.name, [exe, "-p", str(self.tmp), "-e", str(self.tmp / "nginx-error.log"), "-c", str(conf)])
            t.multi_process = True
        elif t.name == "haproxy":
            exe = which("haproxy")
            if not exe:
                return "haproxy is not installed"
            conf = render(CONF / "haproxy.cfg", self.tmp / "haproxy.cfg", values)
            t.proc = self.spawn(t.name, [exe, "-f", str(conf)])
        elif t.name in VANE_PORTS:
            if t.name == "vane":
                exe = RELEASE / "vane-proxy"
                if os.environ.get("VANE_BUILD_FAILED"):
                    return "vane-proxy did not build (see the build output above)"
            else:
                base = os.environ.get("VANE_BASE_BIN")
                if not base:
                    return "VANE_BASE_BIN (the vane-proxy binary to compare with) is not set"
                exe = Path(base)
            if not exe.exists():
                return f"{exe} does not exist"
            inbound, admin = VANE_PORTS[t.name]
            conf = render(CONF / "vane.yaml", self.tmp / f"{t.name}.yaml", values)
            t.proc = self.spawn(t.name, [
                str(exe), "--config", str(conf),
                "--outbound", f"127.0.0.1:{t.h1_port}",
                "--inbound", f"127.0.0.1:{inbound}",
                "--admin", f"127.0.0.1:{admin}",
                "--threads", "1",
            ])
            ready_url = f"http://127.0.0.1:{admin}/ready"
        err = self.wait_ready(t, 15, ready_url)
        if err:
            self.stop_one(t)
        return err

    def revive(self, t: Target) -> str | None:
        """Restarts t if its process has gone (something outside the bench may
        have stopped it); returns what happened, or None if it was running."""
        if t.proc is None or t.proc.poll() is None:
            return None
        status = t.proc.returncode
        err = self.launch(t)
        return f"{t.name} had exited (status {status}); " + (f"restart failed: {err}" if err else "restarted")

    @staticmethod
    def stop_one(t: Target) -> None:
        p = t.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def stop(self) -> None:
        for t in self.targets.values():
            self.stop_one(t)
        if self.backend:
            self.stop_one(self.backend)


# ---------------------------------------------------------------- one run


def headers_from_env() -> list[str]:
    return [h.strip() for h in os.environ.get("HEADERS", "").split("|") if h.strip()]


def tool_cmd(mode: Mode, url: str, dur: int, log_file: Path | None) -> list[str]:
    hs = headers_from_env()
    if mode.tool == "wrk":
        cmd = ["wrk", "-t1", f"-c{mode.conns}", f"-d{dur}s", "--timeout", "5s", "-s", str(WRK_LUA), url]
        for h in hs:
            cmd += ["-H", h]
        return cmd
    if mode.tool == "h2load":
        cmd = ["h2load", "-t1", f"-c{mode.conns}", f"-m{mode.streams}", "-D", str(dur), url]
        if log_file:
            cmd += ["--log-file", str(log_file)]
        for h in hs:
            cmd += ["-H", h]
        return cmd
    cmd = [str(RELEASE / "loadgen"), url, "--proto", mode.proto, "-c", str(mode.conns), "-d", str(dur)]
    if mode.proto == "h2c":
        cmd += ["-m", str(mode.streams)]
    cmd += ["--closed"] if mode.loop == "closed" else ["-r", str(mode.rate)]
    for h in hs:
        cmd += ["-H", h]
    return cmd


def percentile(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = max(0, min(len(sorted_vals) - 1, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return float(sorted_vals[k])


def parse_output(mode: Mode, out: str, log_file: Path | None) -> dict:
    if mode.tool == "wrk":
        line = next((l for l in out.splitlines() if l.startswith("WRKJSON ")), None)
        if line is None:
            raise ValueError("wrk printed no summary")
        w = json.loads(line[len("WRKJSON ") :])
        secs = w["duration_us"] / 1e6
        errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]
        return {
            "requests": w["requests"], "errors": errors, "status_errors": w["err_status"],
            "rps": (w["requests"] - w["err_status"]) / secs, "rps_all": w["requests"] / secs, "p50_us": w["p50_us"], "p90_us": w["p90_us"],
            "p99_us": w["p99_us"], "p999_us": w["p999_us"], "max_us": w["max_us"],
        }
    if mode.tool == "h2load":
        m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
        r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
        s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        if not (m and r and s):
            raise ValueError("could not parse the h2load output")
        lat: list[int] = []
        if log_file and log_file.exists():
            with open(log_file) as f:
                for line in f:
                    p = line.split("\t")
                    if len(p) >= 3 and p[1].startswith("2"):
                        lat.append(int(p[2]))
            log_file.unlink()
        lat.sort()
        # h2load's "failed" counts transport errors and non-2xx/3xx answers; "errored"
        # and "timeout" are the transport errors alone.
        done, secs = int(r[3]), float(m[1])
        return {
            "requests": done, "errors": int(r[6]) + int(r[7]), "status_errors": int(s[3]) + int(s[4]),
            "rps": int(r[4]) / secs, "rps_all": float(m[2]), "p50_us": percentile(lat, 0.5), "p90_us": percentile(lat, 0.9),
            "p99_us": percentile(lat, 0.99), "p999_us": percentile(lat, 0.999),
            "max_us": float(lat[-1]) if lat else 0.0,
        }
    g = json.loads(out.strip().splitlines()[-1])
    res = {
        "requests": g["completed"], "errors": g["errors"], "status_errors": g["status_errors"],
        "incomplete": g["incomplete"], "rps": g["rps"], "p50_us": g["p50_us"], "p90_us": g["p90_us"],
        "p99_us": g["p99_us"], "p999_us": g["p999_us"], "max_us": g["max_us"],
    }
    # Percentiles above count every request sent: failures as the timeout, incomplete ones as a
    # lower bound (censored). The 2xx-only figures are kept beside them.
    for k in ("censored", "failed_as_us", "ok_p50_us", "ok_p99_us"):
        if k in g:
            res[k] = g[k]
    if "send_lag_p99_us" in g:
        res["send_lag_p99_us"] = g["send_lag_p99_us"]
    return res


def run_tool(cmd: list[str], lg_cpu: str, dur: int) -> str:
    p = popen_pinned(lg_cpu, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     env={**os.environ, "PATH": ENV_PATH})
    try:
        out, err = p.communicate(timeout=dur + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"{cmd[0]} did not finish")
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {err.strip()[-400:]}")
    return out


def measure(fleet: Fleet, t: Target, mode: Mode, rep: int, dur: int, warm: int, lg_cpu: str, sut_cpu: str) -> dict:
    assert 0 < dur <= MAX_RUN_S and 0 <= warm <= MAX_RUN_S
    url = t.url(mode.proto)
    rec: dict = {"type": "run", "rep": rep, "mode": mode.name, "loop": mode.loop, "proto": mode.proto,
                 "target": t.name, "tool": mode.tool, "rate": mode.rate, "duration_s": dur}
    quiet = float(os.environ.get("QUIET_WAIT", "0"))
    if quiet > 0:
        rec["quiet_wait_s"] = wait_quiet(quiet)
    if warm:
        run_tool(tool_cmd(mode, url, warm, None), lg_cpu, warm)
    pids = t.pids()
    bpids = fleet.backend.pids() if fleet.backend else []
    log_file = fleet.tmp / "h2load.log" if mode.tool == "h2load" else None
    cpu_p0, cpu_b0, st0 = cpu_ticks(pids), cpu_ticks(bpids), cpu_times()
    ch0, self0, w0 = rusage_s(resource.RUSAGE_CHILDREN), rusage_s(resource.RUSAGE_SELF), time.monotonic()
    p = popen_pinned(
        lg_cpu, tool_cmd(mode, url, dur, log_file),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PATH": ENV_PATH},
    )
    # Memory under load: one sample in the middle of the run.
    time.sleep(dur / 2)
    rec["mem_load"] = mem_kib(pids)
    try:
        out, err = p.communicate(timeout=dur + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise RuntimeError(f"{mode.tool} did not finish")
    wall = time.monotonic() - w0
    cpu_p1, cpu_b1, st1 = cpu_ticks(pids), cpu_ticks(bpids), cpu_times()
    ch1, self1 = rusage_s(resource.RUSAGE_CHILDREN), rusage_s(resource.RUSAGE_SELF)
    if p.returncode != 0:
        raise RuntimeError(f"{mode.tool} exited {p.returncode}: {err.strip()[-400:]}")
    rec.update(parse_output(mode, out, log_file))
    if rec["requests"] == 0:
        raise RuntimeError(f"{mode.tool} completed no request (errors {rec['errors']})")
    n = max(rec["requests"], 1)
    rec["proxy_cpu_ticks"] = cpu_p1 - cpu_p0 if pids else None
    rec["proxy_cpu_us_per_req"] = round((cpu_p1 - cpu_p0) * 1e6 / CLK_TCK / n, 2) if pids else None
    rec["backend_cpu_us_per_req"] = round((cpu_b1 - cpu_b0) * 1e6 / CLK_TCK / n, 2)
    lg_busy, sut_busy = cpu_busy(st0, st1, f"cpu{lg_cpu}"), cpu_busy(st0, st1, f"cpu{sut_cpu}")
    rec["lg_cpu_busy_pct"], rec["sut_cpu_busy_pct"] = lg_busy["busy_pct"], sut_busy["busy_pct"]
    rec["steal_pct"] = max(lg_busy["steal_pct"], sut_busy["steal_pct"])
    # CPU used on the machine by anything that is not part of this run, in % of one core.
    ours = (cpu_p1 - cpu_p0 + cpu_b1 - cpu_b0) / CLK_TCK + (ch1 - ch0) + (self1 - self0)
    all_tasks = cpu_busy(st0, st1, "cpu")["task_ticks"] / CLK_TCK
    rec["foreign_cpu_pct"] = round(max(0.0, 100.0 * (all_tasks - ours) / wall), 1)
    # The same per core: the proxy and the backend are pinned to the SUT core, the
    # tool (a waited-for child) to the load generator's core.
    sut_ours = (cpu_p1 - cpu_p0 + cpu_b1 - cpu_b0) / CLK_TCK
    lg_ours = (ch1 - ch0) + (self1 - self0)
    rec["foreign_sut_pct"] = round(max(0.0, 100.0 * (sut_busy["task_ticks"] / CLK_TCK - sut_ours) / wall), 1)
    rec["foreign_lg_pct"] = round(max(0.0, 100.0 * (lg_busy["task_ticks"] / CLK_TCK - lg_ours) / wall), 1)
    rec["flags"] = flags_for(rec, t.name)
    return rec


def flags_for(r: dict, target: str) -> list[str]:
    f = []
    if r["errors"] or r["status_errors"]:
        f.append(f"ERRORS({r['errors']}+{r['status_errors']})")
    if r.get("incomplete"):
        f.append(f"incomplete({r['incomplete']})")
    if r["loop"] == "closed":
        if target == "direct" and r["lg_cpu_busy_pct"] >= 95:
            f.append("lg-bound")
        elif target != "direct" and r["sut_cpu_busy_pct"] < 95:
            f.append(f"sut-cpu{r['sut_cpu_busy_pct']:.0f}%")
    else:
        if r["rate"] and r["rps"] < 0.97 * r["rate"]:
            f.append("below-rate")
        if r.get("send_lag_p99_us", 0) > 100:
            f.append("lg-late")
    if r.get("foreign_sut_pct", 0) > NOISE_SUT_PCT:
        f.append(f"noise-sut{r['foreign_sut_pct']:.0f}%")
    if r.get("foreign_lg_pct", 0) > NOISE_LG_PCT:
        f.append(f"noise-lg{r['foreign_lg_pct']:.0f}%")
    if r["steal_pct"] > 5:
        f.append(f"steal{r['steal_pct']:.0f}%")
    return f


# ---------------------------------------------------------------- report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_num(x, digits=0) -> str:
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_signed(x) -> str:
    return "–" if x is None else f"{x:+,.0f}"


def fmt_range(xs, digits=0) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt_num(xs[0], digits)
    return f"{fmt_num(statistics.median(xs), digits)} [{fmt_num(min(xs), digits)}–{fmt_num(max(xs), digits)}]"


def fmt_ratio(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def report(records: list[dict]) -> str:
    meta = next((r for r in records if r.get("type") == "meta"), {})
    runs = [r for r in records if r.get("type") == "run"]
    mems = {r["target"]: r for r in records if r.get("type") == "mem"}
    fails = [r for r in records if r.get("type") == "fail"]
    modes = list(dict.fromkeys(r["mode"] for r in runs))
    targets = [t for t in ALL_TARGETS if any(r["target"] == t for r in runs)]
    by = {}
    for r in runs:
        by.setdefault((r["mode"], r["target"]), []).append(r)

    out = []
    out.append(f"# Vane proxy benchmark: profile `{meta.get('profile', '?')}`\n")
    out.append(f"- date (UTC): {meta.get('date', '?')}; commit `{meta.get('commit', '?')}`")
    out.append(f"- machine: {meta.get('cpu_model', '?')}, {meta.get('nproc', '?')} CPUs, kernel {meta.get('kernel', '?')}")
    out.append(f"- pinning: load generator on CPU {meta.get('lg_cpu')}, backend and proxies on CPU {meta.get('sut_cpu')}; one worker/thread per proxy"
               + (f"; all at nice {meta['nice']}" if meta.get("nice", "0") != "0" else ""))
    out.append(f"- open-loop rate {meta.get('rate')} req/s; load average at start {meta.get('loadavg_start', 0):.2f}")
    out.append(f"- {meta.get('reps')} rep(s) × {meta.get('duration_s')} s measured, {meta.get('warmup_s')} s warm-up before each; target order rotated per rep")
    out.append(f"- tools: {meta.get('tools', '?')}")
    if meta.get("skipped"):
        for k, v in meta["skipped"].items():
            out.append(f"- **{k} not measured**: {v}")
    out.append("")
    out.append("Values are median [min–max] over reps. Latency columns are medians over reps, in µs. "
               "CPU µs/req = Δ(utime+stime) of the process(es) ÷ requests served. "
               "CPU0/CPU1 = load-generator core / system-under-test core busy %.\n")

    closed = [m for m in modes if any(r["loop"] == "closed" for r in runs if r["mode"] == m)]
    opened = [m for m in modes if m not in closed]

    if closed:
        out.append("## Closed loop: throughput and CPU cost\n")
        out.append("Latency here is concurrency ÷ throughput (Little's law), not proxy overhead.\n")
        out.append("| mode | target | req/s | errors | p50 | p99 | p99.9 | proxy CPU µs/req | backend CPU µs/req | RSS load KiB | CPU0/CPU1 % | flags |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for m in closed:
            for t in targets:
                rs = by.get((m, t), [])
                if not rs:
                    continue
                out.append("| " + " | ".join([
                    m, t, fmt_range([r["rps"] for r in rs]),
                    str(sum(r["errors"] + r["status_errors"] for r in rs)),
                    fmt_num(med([r["p50_us"] for r in rs])), fmt_num(med([r["p99_us"] for r in rs])),
                    fmt_num(med([r["p999_us"] for r in rs])),
                    fmt_range([r["proxy_cpu_us_per_req"] for r in rs], 1),
                    fmt_range([r["backend_cpu_us_per_req"] for r in rs], 1),
                    fmt_num(max((r["mem_load"]["rss_kib"] for r in rs), default=None)) if t != "direct" else "–",
                    f"{med([r['lg_cpu_busy_pct'] for r in rs]):.0f}/{med([r['sut_cpu_busy_pct'] for r in rs]):.0f}",
                    " ".join(sorted({f for r in rs for f in r["flags"]})),
                ]) + " |")
        out.append("")

    if opened:
        out.append("## Open loop, fixed rate: latency from the scheduled send time (coordinated omission corrected)\n")
        out.append("| mode | target | achieved req/s | errors | p50 | p90 | p99 | p99.9 | max | +p50 vs direct | +p99 vs direct | proxy CPU µs/req | flags |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for m in opened:
            for t in targets:
                rs = by.get((m, t), [])
                if not rs:
                    continue
                add50, add99 = [], []
                for r in rs:
                    d = next((x for x in by.get((m, "direct"), []) if x["rep"] == r["rep"]), None)
                    if d and t != "direct":
                        add50.append(r["p50_us"] - d["p50_us"])
                        add99.append(r["p99_us"] - d["p99_us"])
                out.append("| " + " | ".join([
                    m, t, fmt_num(med([r["rps"] for r in rs])),
                    str(sum(r["errors"] + r["status_errors"] for r in rs)),
                    fmt_range([r["p50_us"] for r in rs]), fmt_num(med([r["p90_us"] for r in rs])),
                    fmt_range([r["p99_us"] for r in rs]), fmt_num(med([r["p999_us"] for r in rs])),
                    fmt_num(med([r["max_us"] for r in rs])),
                    fmt_signed(med(add50)),
                    fmt_signed(med(add99)),
                    fmt_range([r["proxy_cpu_us_per_req"] for r in rs], 1),
                    " ".join(sorted({f for r in rs for f in r["flags"]})),
                ]) + " |")
        out.append("")

    # Paired ratios.
    proxies = [t for t in targets if t != "direct"]
    refs = [x for x in ("vane-base", "nginx", "haproxy") if x in targets]
    pairs = [(a, b) for b in refs for a in proxies
             if a != b and not (a == "nginx" and b == "haproxy") and not (b == "vane-base" and a != "vane")
             and not (a == "vane-base" and b != "vane-base" and "vane" in targets)]
    if pairs:
        out.append("## Ratios, paired per rep: median (min–max)\n")
        out.append("req/s: higher is better. CPU/req and latency: lower is better.\n")
        out.append("| mode | metric | " + " | ".join(f"{a}/{b}" for a, b in pairs) + " |")
        out.append("|---|---|" + "---|" * len(pairs))
        for m in modes:
            is_closed = m in closed
            metrics = [("rps", "req/s"), ("proxy_cpu_us_per_req", "CPU µs/req")] if is_closed else \
                [("p50_us", "p50"), ("p99_us", "p99"), ("proxy_cpu_us_per_req", "CPU µs/req")]
            for key, label in metrics:
                cells = []
                for a, b in pairs:
                    ratios = []
                    for ra in by.get((m, a), []):
                        rb = next((x for x in by.get((m, b), []) if x["rep"] == ra["rep"]), None)
                        if rb and ra.get(key) is not None and rb.get(key):
                            ratios.append(ra[key] / rb[key])
                    cells.append(fmt_ratio(ratios))
                out.append(f"| {m} | {label} | " + " | ".join(cells) + " |")
        out.append("")

    if mems:
        out.append("## Memory (KiB; nginx = master + worker)\n")
        out.append("| target | RSS idle after start | PSS idle | RSS under load (max of mid-run samples) | PSS under load (max) | VmHWM at end |")
        out.append("|---|---|---|---|---|---|")
        for t in proxies:
            mm = mems.get(t)
            rs = [r for r in runs if r["target"] == t]
            if not mm:
                continue
            out.append(f"| {t} | {fmt_num(mm['idle']['rss_kib'])} | {fmt_num(mm['idle']['pss_kib'])} | {fmt_num(max((r['mem_load']['rss_kib'] for r in rs), default=None))} | "
                       f"{fmt_num(max((r['mem_load']['pss_kib'] for r in rs), default=None))} | {fmt_num(mm['end']['hwm_kib'])} |")
        out.append("")

    out.append("## Sanity\n")
    errs = [r for r in runs if r["errors"] or r["status_errors"]]
    out.append(f"- runs: {len(runs)}; with errors: {len(errs)}" + (" **(see flags)**" if errs else " (all runs 0 errors)"))
    discarded = {(r["rep"], r["mode"], r.get("attempt")) for r in records if r.get("type") == "discarded"}
    if discarded:
        out.append(f"- groups measured again because other processes disturbed them (RETRY_NOISY): {len(discarded)}")
    for r in records:
        if r.get("type") == "restart":
            out.append(f"- before {r['mode']} rep {r['rep']}: {r['what']}")
    for r in fails:
        out.append(f"- **failed run** {r['mode']} {r['target']} rep {r['rep']}: {r['error']}")
    flagged = [r for r in runs if r["flags"]]
    if flagged:
        out.append("- flagged runs: " + "; ".join(f"{r['mode']} {r['target']} rep {r['rep']}: {' '.join(r['flags'])}" for r in flagged))
    out.append("- flags: `lg-bound` load generator core ≥ 95 % busy (expected for direct); `sut-cpuN%` proxy core below 95 % in closed loop "
               "(not bound by the system under test); `below-rate` open loop achieved < 97 % of the asked rate; `lg-late` the generator sent "
               "late (p99 send lag > 100 µs); `noise-sutN%` / `noise-lgN%` other processes used N % of the system-under-test core (flagged above 5 %) / of the load generator's core (above 20 %) during the run; `stealN%` hypervisor steal; "
               "`ERRORS(transport+status)`; `incomplete(N)` requests still in flight 2 s after the end. "
               "In loadgen runs (open loop) the latency figures count every request sent: a failed one as loadgen's "
               "per-request timeout, an incomplete one as the time it had been open (a lower bound), so errors make a "
               "target look slower, never faster.")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main


def sh(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, env={**os.environ, "PATH": ENV_PATH})
        return p.stdout.strip() or p.stderr.strip()
    except Exception:  # noqa: BLE001
        return "?"


def meta_record(profile, reps, dur, warm, rate, lg_cpu, sut_cpu, skipped) -> dict:
    cpu_model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--", "proxy", "route"])
    tools = "; ".join(filter(None, [
        sh(["nginx", "-v"]).replace("nginx version: ", ""),
        sh(["haproxy", "-v"]).splitlines()[0].split(" - ")[0] if which("haproxy") else "",
        sh(["wrk", "-v"]).splitlines()[0].split(" Copyright")[0] if which("wrk") else "",
        sh(["h2load", "--version"]),
        "Vane loadgen (hyper + hdrhistogram)",
    ]))
    return {
        "type": "meta", "profile": profile, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": commit + ("+uncommitted proxy/route changes" if dirty and dirty != "?" else ""),
        "cpu_model": cpu_model, "nproc": os.cpu_count(), "kernel": os.uname().release,
        "reps": reps, "duration_s": dur, "warmup_s": warm, "rate": rate, "lg_cpu": lg_cpu, "sut_cpu": sut_cpu,
        "tools": tools, "skipped": skipped, "loadavg_start": os.getloadavg()[0], "nice": NICE or "0",
    }


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        records = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
        print(report(records))
        return 0
    if len(sys.argv) > 1:
        print(__doc__)
        return 2

    profile = os.environ.get("PROFILE", "quick")
    if profile not in PROFILES:
        raise SystemExit(f"PROFILE must be one of {list(PROFILES)}")
    reps, dur, warm, mode_names = PROFILES[profile]
    reps = int(os.environ.get("REPS", reps))
    dur = int(os.environ.get("DURATION", dur))
    warm = int(os.environ.get("WARMUP", warm))
    if not (0 < dur <= MAX_RUN_S) or not (0 <= warm <= MAX_RUN_S):
        raise SystemExit(f"DURATION and WARMUP must be at most {MAX_RUN_S} s")
    rate = int(os.environ.get("RATE", 5000))
    if "MODES" in os.environ:
        mode_names = [m.strip() for m in os.environ["MODES"].split(",") if m.strip()]
    mode_names = [m.format(R=rate, R2=2 * rate) for m in mode_names]
    closed_tool = os.environ.get("CLOSED_TOOL", "wrk")
    modes = [parse_mode(m, closed_tool) for m in mode_names]
    names = [t.strip() for t in os.environ.get("TARGETS", ",".join(DEFAULT_TARGETS)).split(",") if t.strip()]
    for n in names:
        if n not in PORTS:
            raise SystemExit(f"unknown target {n!r}; known: {ALL_TARGETS}")
    lg_cpu, sut_cpu = os.environ.get("LG_CPU", "0"), os.environ.get("SUT_CPU", "1")
    for exe in ("echo", "loadgen"):
        if not (RELEASE / exe).exists():
            raise SystemExit(f"{RELEASE / exe} is missing: run `cargo build --release -p vane-bench` (bench/run.sh does)")
    for tool in {m.tool for m in modes} - {"loadgen"}:
        if not which(tool):
            raise SystemExit(f"{tool} is not installed (bench/run.sh installs it)")

    out_dir = Path(os.environ.get("OUT_DIR", BENCH / "results" / "runs"))
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    jsonl_path, md_path = out_dir / f"{stamp}-{profile}.jsonl", out_dir / f"{stamp}-{profile}.md"
    n_runs = reps * len(modes) * len(names)
    log(f"profile {profile}: {reps} rep(s) × {len(modes)} modes × {len(names)} targets = {n_runs} runs of {warm}+{dur} s "
        f"(about {n_runs * (warm + dur + 1) / 60:.1f} min); load {os.getloadavg()[0]:.2f}")
    if os.getloadavg()[0] > 0.5:
        log("warning: the machine is busy (load average > 0.5): results will be noisy; see the noise flags")

    tmp = Path(tempfile.mkdtemp(prefix="vane-bench-"))
    fleet = Fleet(names, sut_cpu, tmp)
    records: list[dict] = []
    jsonl = open(jsonl_path, "w")

    def emit(rec: dict) -> None:
        records.append(rec)
        jsonl.write(json.dumps(rec) + "\n")
        jsonl.flush()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        fleet.start()
        emit(meta_record(profile, reps, dur, warm, rate, lg_cpu, sut_cpu, fleet.skipped))
        order = [n for n in names if n in fleet.targets]
        retries = int(os.environ.get("RETRY_NOISY", "0"))
        k = 0
        for rep in range(reps):
            for mode in modes:
                rot = order[rep % len(order):] + order[: rep % len(order)] if order else []
                for attempt in range(retries + 1):
                    # All targets of one (rep, mode) are measured back to back; if other
                    # processes disturbed any of them, the whole group can be redone so
                    # that the paired ratios stay paired.
                    group: list[dict] = []
                    for name in rot:
                        k += 1
                        t = fleet.targets[name]
                        for proc_t in (fleet.backend, t):
                            what = fleet.revive(proc_t) if proc_t else None
                            if what:
                                log(what)
                                emit({"type": "restart", "rep": rep, "mode": mode.name, "target": proc_t.name, "what": what})
                        try:
                            rec = measure(fleet, t, mode, rep, dur, warm, lg_cpu, sut_cpu)
                            group.append(rec)
                            log(f"[{k}/{n_runs}] rep {rep} {mode.name:<14} {name:<8} {rec['rps']:>10,.0f} req/s  p50 {rec['p50_us']:>7,.0f} "
                                f"p99 {rec['p99_us']:>7,.0f} µs  cpu/req {rec['proxy_cpu_us_per_req'] if rec['proxy_cpu_us_per_req'] is not None else '–'}"
                                f"  {' '.join(rec['flags'])}")
                        except Exception as e:  # noqa: BLE001
                            group.append({"type": "fail", "rep": rep, "mode": mode.name, "target": name, "error": str(e)[:500]})
                            log(f"[{k}/{n_runs}] rep {rep} {mode.name} {name}: FAILED: {e}")
                        for proc_t in (fleet.backend, t):
                            if proc_t and proc_t.proc is not None and proc_t.proc.poll() is not None:
                                log(f"{proc_t.name} exited (status {proc_t.proc.returncode}); log: {tmp / (proc_t.name + '.log')}")
                                if group and group[-1].get("type") == "run":
                                    group[-1] = {"type": "fail", "rep": rep, "mode": mode.name, "target": name,
                                                 "error": f"{proc_t.name} exited during the run"}
                    noisy = [r["target"] for r in group if any(f.startswith("noise") for f in r.get("flags", []))]
                    if noisy and attempt < retries:
                        for r in group:
                            emit({**r, "type": "discarded", "attempt": attempt})
                        n_runs += len(rot)
                        log(f"rep {rep} {mode.name}: other processes disturbed {', '.join(noisy)}; measuring the group again")
                        continue
                    for r in group:
                        emit(r)
                    break
        for name in order:
            t = fleet.targets[name]
            if t.proc is not None:
                emit({"type": "mem", "target": name, "idle": t.mem_idle, "end": mem_kib(t.pids())})
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        fleet.stop()
        jsonl.close()

    if not any(r.get("type") == "run" for r in records):
        log(f"no measurement completed; logs in {tmp}")
        return 1
    md = report(records)
    md_path.write_text(md)
    print(md)
    log(f"wrote {md_path} and {jsonl_path}")
    bad = [r for r in records if r.get("type") == "fail" or (r.get("type") == "run" and (r["errors"] or r["status_errors"]))]
    if bad:
        log(f"SANITY: {len(bad)} run(s) failed or had errors (logs in {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
