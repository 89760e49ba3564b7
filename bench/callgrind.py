#!/usr/bin/env python3
"""Instructions per request of vane-proxy binaries, counted by valgrind's callgrind.

Wall-clock and CPU-time figures on these shared 2-core machines move by a few per cent from run to
run; an instruction count does not. This runs each given binary under callgrind in front of the
echo backend, sends it a fixed number of requests twice (a short and a long run, so that startup
and shutdown cancel out), and reports instructions per request for HTTP/1.1 and h2c, with the
ratio of each binary to the first.

    python3 bench/callgrind.py target/release/vane-proxy OTHER/vane-proxy
    python3 bench/callgrind.py target/release/vane-proxy target/release/vane-proxy@tracing.yaml

A binary given as `PATH@FILE` runs with FILE's YAML prepended to its config (to price one
feature with one build); `EXTRA_CONFIG` is prepended for every binary.

Needs valgrind and a release build of vane-bench (echo, loadgen). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
BACKEND = "127.0.0.1:18790"
OUTBOUND, INBOUND, ADMIN = 18791, 18792, 18793
RATE = int(os.environ.get("RATE", "200"))
SHORT, LONG = 2.0, 6.0
# Prepended to the config, e.g. "proxy: { balancer: { ask_load_reports: false } }" to price one feature.
EXTRA = os.environ.get("EXTRA_CONFIG", "")
CONFIG = f"""backends:
  - {{ name: echo, protocol: http1, endpoints: ["{BACKEND}"] }}
services:
  - name: echo
    hosts: ["127.0.0.1", "localhost"]
    routes:
      - name: all
        backends: [{{ backend: echo }}]
"""


def wait_ready(url: str, within: float) -> None:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"not ready: {url}")


def split(arg: str) -> tuple[Path, str]:
    """The binary of an argument and the YAML it runs with before the common config."""
    path, _, extra = arg.partition("@")
    return Path(path), EXTRA + "\n" + (Path(extra).read_text() if extra else "")


def instructions(arg: str, proto: str, duration: float, tmp: Path) -> tuple[int, int]:
    """(instructions, requests served) of one proxy run under callgrind."""
    exe, extra = split(arg)
    out = tmp / f"callgrind.{os.getpid()}.{time.time_ns()}"
    conf = tmp / "vane.yaml"
    conf.write_text(extra + "\n" + CONFIG)
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(exe), "--config", str(conf),
         "--outbound", f"127.0.0.1:{OUTBOUND}", "--inbound", f"127.0.0.1:{INBOUND}",
         "--admin", f"127.0.0.1:{ADMIN}", "--threads", "1", "--log", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{ADMIN}/ready", 60)
        args = [str(RELEASE / "loadgen"), f"http://127.0.0.1:{OUTBOUND}/", "--proto", proto,
                "-c", "4", "-r", str(RATE), "-d", str(duration)]
        if proto == "h2c":
            args += ["-m", "4"]
        report = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=60)
    text = out.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not m:
        raise SystemExit(f"no instruction total in {out}")
    served = int(report.get("ok", 0))
    if served == 0 or report.get("errors") or report.get("status_errors"):
        raise SystemExit(f"{exe} {proto}: a run with failures: {report}")
    return int(m.group(1)), served


def main() -> None:
    exes = sys.argv[1:] or [str(RELEASE / "vane-proxy")]
    for exe in exes:
        if not split(exe)[0].exists():
            raise SystemExit(f"{exe} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix="vane-callgrind-"))
    echo = subprocess.Popen([str(RELEASE / "echo"), BACKEND], env={**os.environ, "THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        rows = {}
        for proto in ("h1", "h2c"):
            for exe in exes:
                (i1, n1), (i2, n2) = instructions(exe, proto, SHORT, tmp), instructions(exe, proto, LONG, tmp)
                per = (i2 - i1) / max(n2 - n1, 1)
                rows[(proto, exe)] = per
                print(f"{proto:4} {exe}: {per:,.0f} instructions/request ({n1} and {n2} requests)", file=sys.stderr)
        print("| protocol | binary | instructions / request | ratio to the first |")
        print("|---|---|---|---|")
        for proto in ("h1", "h2c"):
            first = rows[(proto, exes[0])]
            for exe in exes:
                per = rows[(proto, exe)]
                print(f"| {proto} | `{exe}` | {per:,.0f} | {per / first:.3f} |")
    finally:
        echo.send_signal(signal.SIGTERM)
        echo.wait(timeout=10)


if __name__ == "__main__":
    main()
