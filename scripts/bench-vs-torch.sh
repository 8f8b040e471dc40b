#!/usr/bin/env bash
# vprompt and PyTorch on the same work, in one run on this machine: the training step (batch 32,
# 224 x 224, padding prompt, SGD, frozen backbone) on EfficientNet-Lite0 and ResNet-18, evaluation
# throughput, and a whole epoch with the data pipeline. Interleaves the two so that both see the
# same machine load.
#
#   scripts/bench-vs-torch.sh [PYTHON]
#   VPROMPT_BENCH_MODELS=resnet50 scripts/bench-vs-torch.sh   # the step on other presets
#
# VPROMPT_BENCH_MODELS (the train_step bench's variable, default efficientnet-lite0,resnet18) picks
# the step's models on both sides: efficientnet-lite0 is timm's efficientnet_lite0, resnet18/resnet50
# torchvision's; clip-vit-b32-image has no PyTorch twin here and is timed on the vprompt side only.
#
# PYTHON must have torch, torchvision and timm (default: python3). Tools: shared/tools/torch_vp_bench.py
# (the step) is looked for at ../shared/tools or $TORCH_VP_BENCH; scripts/torch_vp_epoch.py (the epoch).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-python3}"
step_py="${TORCH_VP_BENCH:-../shared/tools/torch_vp_bench.py}"
cargo bench --bench train_step --bench epoch --no-run >/dev/null 2>&1
echo "== vprompt: training step"
cargo bench -q --bench train_step 2>/dev/null | grep "^|"
echo "== PyTorch: training step and forward (eval), batch 32"
IFS=, read -ra models <<< "${VPROMPT_BENCH_MODELS:-efficientnet-lite0,resnet18}"
for m in "${models[@]}"; do
  case "$m" in
    efficientnet-lite0) torch_model=timm:efficientnet_lite0 ;;
    resnet18 | resnet50) torch_model="$m" ;;
    *) echo "($m: no PyTorch counterpart in this script)"; continue ;;
  esac
  "$py" "$step_py" "$torch_model" 32 5 | grep -E "model=|images_per_s"
done
echo "== vprompt: evaluation and epoch"
cargo bench -q --bench epoch 2>/dev/null | grep "^|"
echo "== PyTorch: epoch"
"$py" scripts/torch_vp_epoch.py timm:efficientnet_lite0 0 | grep -E "model=|epoch_"
