#!/usr/bin/env bash
# Step time and peak memory of a prompt-training step against batch size or image side, one
# process per point (peak RSS is per process). Prints one Markdown table row per point.
#
#   scripts/bench-scaling.sh [MODEL] [batch|size] [VALUE...]
#   scripts/bench-scaling.sh efficientnet-lite0 batch 8 16 32 64     # the default
#   scripts/bench-scaling.sh resnet18 size 160 224 288              # at batch VPROMPT_BENCH_BATCH (32)
#
# MODEL is any image preset name (other sides only for the convolutional ones); extra cargo flags
# through CARGO_FLAGS (e.g. CARGO_FLAGS="--features wgpu"). VPROMPT_BENCH_SECONDS sets the time per
# point.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-efficientnet-lite0}"
axis="${2:-batch}"
shift 2 || shift $#
values=("$@")
case "$axis" in
  batch) variable=VPROMPT_BENCH_BATCH; [ ${#values[@]} -gt 0 ] || values=(8 16 32 64) ;;
  size) variable=VPROMPT_BENCH_SIZE; [ ${#values[@]} -gt 0 ] || values=(160 224 288) ;;
  *) echo "axis must be batch or size, not $axis" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
cargo bench ${CARGO_FLAGS:-} --bench train_step --no-run >/dev/null 2>&1
for v in "${values[@]}"; do
  # shellcheck disable=SC2086
  env VPROMPT_BENCH_MODELS="$model" "$variable=$v" cargo bench ${CARGO_FLAGS:-} -q --bench train_step 2>/dev/null \
    | grep "weights on plain device"
done
