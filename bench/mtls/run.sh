#!/usr/bin/env bash
# Vane's mTLS hop benchmark: client -> outbound proxy A -> hop -> inbound proxy B -> echo, for Vane
# over mTLS, Vane over h2c and HAProxy over mTLS, side by side. Installs the tools it lacks, builds
# the proxy and the bench binaries, then runs bench/mtls/driver.py (Python standard library). The
# report goes to bench/mtls/results/NAME.md, the raw JSONL to bench/mtls/results/raw/.
#   bash bench/mtls/run.sh                                # 3 reps x 10 s: about 7 min (+ QUIET_WAIT)
#   REPS=2 DURATION=10 REPORT_NAME=smoke bash bench/mtls/run.sh
# Knobs (see bench/README.md): DURATION, WARMUP, REPS, RATE, CONNS, HS_DURATION, HS_CONC,
# CLOSED_CONNS, CLOSED_TOOL, TARGETS, REPORT_NAME, LG_CPU, SUT_CPU, NICE, QUIET_WAIT, SKIP_BUILD,
# SKIP_APT.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/sbin:/sbin"

if [ "$(nproc)" -lt 2 ]; then
    echo "mtls bench: needs at least 2 CPUs (one for the load generator, one for the proxies)" >&2
    exit 1
fi

missing=()
for pair in haproxy:haproxy wrk:wrk taskset:util-linux python3:python3; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ -n "${SKIP_APT:-}" ]; then
        echo "mtls bench: missing ${missing[*]} and SKIP_APT is set" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "mtls bench: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -z "${SKIP_BUILD:-}" ]; then
    nice -n 10 cargo build --release -p vane-proxy -p vane-bench
fi

# The memory test holds CONNS connections open to one process, and the client holds as many.
want=$(( ${CONNS:-1000} + 1000 ))
if [ "$(ulimit -n)" != "unlimited" ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

# On a machine shared with other work, give the measured processes priority (their scheduling
# groups too, see bench/bench.py). NICE=0 turns this off.
if [ -z "${NICE:-}" ] && [ "$(id -u)" -eq 0 ]; then
    export NICE=-15
fi
[ "${NICE:-}" = "0" ] && unset NICE

exec python3 bench/mtls/driver.py "$@"
