#!/usr/bin/env bash
# Step time and peak memory of a prompt-training step against batch size, one process per point
# (peak RSS is per process). Prints one Markdown table row per point.
#
#   scripts/bench-scaling.sh [MODEL] [BATCH...]        e.g. scripts/bench-scaling.sh efficientnet-lite0 8 16 32 64
#
# MODEL is any image preset name (default efficientnet-lite0); extra cargo flags through
# CARGO_FLAGS (e.g. CARGO_FLAGS="--features wgpu"). VPROMPT_BENCH_SECONDS sets the time per point.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-efficientnet-lite0}"
shift || true
batches=("$@")
[ ${#batches[@]} -gt 0 ] || batches=(8 16 32 64)
# shellcheck disable=SC2086
cargo bench ${CARGO_FLAGS:-} --bench train_step --no-run >/dev/null 2>&1
for b in "${batches[@]}"; do
  # shellcheck disable=SC2086
  VPROMPT_BENCH_MODELS="$model" VPROMPT_BENCH_BATCH="$b" cargo bench ${CARGO_FLAGS:-} -q --bench train_step 2>/dev/null \
    | grep "weights on plain device"
done
