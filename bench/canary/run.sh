#!/usr/bin/env bash
# Vane's canary demo: a 90/10 split between a stable model version and a slower canary through one
# Vane proxy, judged from its /metrics alone (time to first token, time per output token, tokens and
# cost per version). Builds the simulator, the proxy and llm-load, then runs bench/canary/driver.py
# (Python standard library only). Report: bench/canary/results/NAME.md; raw data under results/raw/.
#   bash bench/canary/run.sh                      # about 1.5 min after the build
#   RATE=20 CANARY_SPEED=1.0 SKIP_BUILD=1 bash bench/canary/run.sh
# Knobs: RATE, DURATION, DRAIN, STABLE, CANARY, CANARY_SPEED, STEP_US, PRICE, PROMPT, OUTPUT, SEED, PORT_BASE,
# GEN_CPU, SUT_CPU, NICE, REPORT_NAME, VANE_PROXY_BIN, SKIP_BUILD.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v python3 >/dev/null || { echo "canary demo: python3 is missing" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    nice -n 10 cargo build --release -p vane-sim -p vane-proxy -p vane-routing-bench
fi
exec python3 bench/canary/driver.py "$@"
