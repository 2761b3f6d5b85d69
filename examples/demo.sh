#!/usr/bin/env bash
# The main job on a fresh machine: set up, simulate a co-located Llama-3.1-8B on two H200s
# with operator predictors fitted to aiconfigurator's measured H200 kernel tables, and draw
# one iteration's DAG with its critical path, and put the run on one page.
# Usage: bash examples/demo.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/setup_env.sh
RUN="${1:-runs/demo}"
CONFIG=examples/colocated_llama3_8b.yaml
echo "== fitting predictors on first use (about a minute), then simulating $CONFIG"
frontier-dag simulate "$CONFIG" --out "$RUN" --overwrite
frontier-dag critical-path "$CONFIG"
frontier-dag render "$CONFIG" --out "$RUN/plots/iteration.svg"
frontier-dag report "$RUN" --out "$RUN.html" --overwrite
echo "== done: $RUN/summary.json, $RUN/requests.parquet, $RUN/iterations.parquet, $RUN/plots/iteration.svg, $RUN.html"
