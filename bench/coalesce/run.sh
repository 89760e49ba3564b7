#!/usr/bin/env bash
# Vane's coalescing benchmark: duplicate-heavy greedy LLM traffic through one Vane proxy to a small
# simulated fleet, with the route's `coalesce:` on and off, from a cold start and warm. Builds the
# simulator, the proxy and llm-load, then runs bench/coalesce/driver.py (Python standard library
# only). The report goes to bench/coalesce/results/NAME.md, raw data to bench/coalesce/results/raw/.
#   bash bench/coalesce/run.sh                          # 2 phases x 2 modes x 20 s: about 2.5 min
#   RATE=30 DURATION=30 ZIPF=0.8 SKIP_BUILD=1 bash bench/coalesce/run.sh
# Knobs (see bench/README.md): RATE, DURATION, WARMUP, DRAIN, PHASES, REPS, REPLICAS, DISTINCT, ZIPF,
# PROMPT, OUTPUT, SEED, ALGORITHM, COALESCE, REPORT_NAME, GEN_CPU, SUT_CPU, PORT_BASE, NICE,
# QUIET_PCT, QUIET_WAIT, VANE_PROXY_BIN, SKIP_BUILD.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(nproc)" -lt 2 ]; then
    echo "coalesce bench: needs at least 2 CPUs (one for the load generator, one for the fleet and proxy)" >&2
    exit 1
fi
command -v taskset >/dev/null || { echo "coalesce bench: taskset (util-linux) is missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "coalesce bench: python3 is missing" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
    nice -n 10 cargo build --release -p vane-sim -p vane-proxy -p vane-routing-bench
fi

exec python3 bench/coalesce/driver.py "$@"
