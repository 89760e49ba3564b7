#!/usr/bin/env bash
# Vane's proxy benchmark: installs the tools, builds, runs bench/bench.py.
#   bash bench/run.sh                      # PROFILE=quick (default), about 13 min
#   PROFILE=smoke bash bench/run.sh        # about 2 min
#   PROFILE=full RATE=10000 bash bench/run.sh
# Other knobs (see bench/README.md): TARGETS, MODES, REPS, DURATION, WARMUP,
# RATE, HEADERS, CLOSED_TOOL, LG_CPU, SUT_CPU, OUT_DIR, SKIP_BUILD, SKIP_APT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs at least 2 CPUs (one for the load generator, one for the system under test)" >&2
    exit 1
fi

# Tools: nginx, haproxy, wrk, h2load (nghttp2-client), taskset (util-linux).
missing=()
for pair in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client taskset:util-linux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ -n "${SKIP_APT:-}" ]; then
        echo "bench: missing ${missing[*]} and SKIP_APT is set" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "bench: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Build. The proxy may fail to build while it is being worked on: the bench
# then runs without it and says so.
if [ -z "${SKIP_BUILD:-}" ]; then
    if ! nice -n 10 cargo build --release -p vane-proxy -p vane-bench; then
        echo "bench: WARNING: vane-proxy did not build; running without it" >&2
        export VANE_BUILD_FAILED=1
        nice -n 10 cargo build --release -p vane-bench
    fi
fi

# On a machine shared with other work, give the measured processes priority
# (their scheduling groups too, see bench.py). NICE=0 turns this off.
if [ -z "${NICE:-}" ] && [ "$(id -u)" -eq 0 ]; then
    export NICE=-15
fi
[ "${NICE:-}" = "0" ] && unset NICE

exec python3 bench/bench.py "$@"
