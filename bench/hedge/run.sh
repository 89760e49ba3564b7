#!/usr/bin/env bash
# Vane's hedging benchmark: short streamed LLM requests through one Vane proxy to a simulated fleet
# in which one replica stalls a share of its requests, without hedging, with a fixed hedge delay and
# with a percentile delay, under two balancers, from a cold start and warm. Builds the simulator, the proxy and llm-load,
# then runs bench/hedge/driver.py (Python standard library only). The report goes to
# bench/hedge/results/NAME.md, raw data to bench/hedge/results/raw/.
#   bash bench/hedge/run.sh                             # 12 runs of 20-25 s, plus start-up and quiet waits: 6-8 min
#   RATE=50 DURATION=30 STALL_SHARE=0.3 SKIP_BUILD=1 bash bench/hedge/run.sh
# Knobs (see bench/README.md): RATE, DURATION, WARMUP, DRAIN, PHASES, REPS, REPLICAS, STALL_SHARE,
# STALL_FOR, DELAY, PERCENTILE, MIN_DELAY, VARIANTS, PROMPT, OUTPUT, SEED, ALGORITHMS, REPORT_NAME,
# GEN_CPU, SUT_CPU, PORT_BASE, NICE, QUIET_PCT, QUIET_WAIT, VANE_PROXY_BIN, SKIP_BUILD.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(nproc)" -lt 2 ]; then
    echo "hedge bench: needs at least 2 CPUs (one for the load generator, one for the fleet and proxy)" >&2
    exit 1
fi
command -v taskset >/dev/null || { echo "hedge bench: taskset (util-linux) is missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "hedge bench: python3 is missing" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
    nice -n 10 cargo build --release -p vane-sim -p vane-proxy -p vane-routing-bench
fi

exec python3 bench/hedge/driver.py "$@"
