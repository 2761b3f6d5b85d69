#!/usr/bin/env bash
# The prepared ten-minute kernel sweep for one H100 or H200 (any single CUDA GPU works).
#
#   bash profiling/sweeps/h100_h200.sh [OUT_DIR]
#
# OUT_DIR defaults to profiling/data/<system>, e.g. profiling/data/h100_sxm. Needs the
# project installed with a CUDA build of torch 2.13 (pip install torch==2.13.0 from the
# CUDA index on a GPU machine). TOTAL_BUDGET_S (default 450) is split across the
# operators below; each command also spends ~10-20 s importing torch, initialising CUDA
# and checking its kernel methods, and the last point of each may run past its share by
# one point's time, so 450 s of budget finishes within ten minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOTAL=${TOTAL_BUDGET_S:-450}
SEED=${SEED:-0}
SYSTEM=$(python - <<'PY'
import re, torch
from frontier_dag.profiling.device import system_for
name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
if not name:
    raise SystemExit("no CUDA GPU visible: this sweep needs one (see docs/profiling.md for the CPU run)")
print(system_for(name) or re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))
PY
)
OUT=${1:-profiling/data/$SYSTEM}
share() { python -c "print(round($TOTAL * $1))"; }

echo "sweep on $SYSTEM -> $OUT (budget ${TOTAL} s, seed $SEED)"
start=$(date +%s)
# Attention gets the largest share: it has the most axes (batch composition, lengths,
# heads) and is what public tables lack (heterogeneous batches).
frontier-dag profile attention    --device cuda --out "$OUT" --budget-s "$(share 0.44)" --seed "$SEED"
frontier-dag profile grouped-gemm --device cuda --out "$OUT" --budget-s "$(share 0.24)" --seed "$SEED"
frontier-dag profile gemm         --device cuda --out "$OUT" --budget-s "$(share 0.22)" --seed "$SEED"
frontier-dag profile elementwise  --device cuda --out "$OUT" --budget-s "$(share 0.10)" --seed "$SEED"
# Needs two or more GPUs; with one it is skipped with a note in an instant.
frontier-dag profile collective   --device cuda --out "$OUT" --budget-s 60 --seed "$SEED"
echo "measured in $(( $(date +%s) - start )) s -> $OUT"

# Fit and report held-out accuracy per operator (seconds), where the predictors are installed.
if frontier-dag predictors --help >/dev/null 2>&1; then
  frontier-dag predictors evaluate --source profile-dir --path "$OUT" --split grouped \
    || echo "predictors evaluate failed; the profile in $OUT is complete" >&2
fi
