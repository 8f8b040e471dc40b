#!/usr/bin/env bash
# vprompt and PyTorch on the same work, in one run on this machine, ending with one table of
# ratios (vprompt's throughput over PyTorch's; for memory, PyTorch's bytes per image over
# vprompt's, so above 1 is vprompt ahead everywhere):
# - the training step (batch 32, 224 x 224, padding prompt p = 30, SGD, frozen backbone) on
#   EfficientNet-Lite0, ResNet-18 and the CLIP ViT-B/32 image tower, the last also as a share of
#   the machine's matmul peak (PyTorch's 2048^3 matmul; the step's FLOPs counted by PyTorch);
# - evaluation throughput and a whole epoch with the data pipeline (Lite0);
# - peak memory of the step at two batch sizes for Lite0, ResNet-50 and ViT-B/32, one process per
#   point on each side, and the memory per image between them (which cancels each side's fixed
#   cost: libraries, weights, allocator pools); PyTorch's with glibc's default malloc settings,
#   which give it the lower peak.
# The two sides alternate so that both see the same machine load.
#
#   scripts/bench-vs-torch.sh [PYTHON]
#   VPROMPT_BENCH_MODELS=resnet50 scripts/bench-vs-torch.sh        # the step on other presets
#   VPROMPT_MEMORY_MODELS= scripts/bench-vs-torch.sh               # skip the memory rows
#
# VPROMPT_BENCH_MODELS (default efficientnet-lite0,resnet18,clip-vit-b32-image) picks the step's
# models, VPROMPT_MEMORY_MODELS (default efficientnet-lite0,resnet50,clip-vit-b32-image) and
# VPROMPT_MEMORY_BATCHES (default "8 32") the memory rows. PyTorch's twins (random weights, eval
# mode): efficientnet-lite0 is timm's efficientnet_lite0, resnet18/resnet50 torchvision's,
# clip-vit-b32-image open_clip's ViT-B-32-quickgelu image tower.
#
# PyTorch runs with glibc's malloc tuned as `vprompt::tune_allocator()` tunes it for vprompt's side
# (every vprompt bench calls it): without it, PyTorch's process page-faults its activations back
# in on every step; here its Lite0 step ran up to 1.5x faster with these settings and its
# evaluation up to 2x (before its first backward pass, which raises glibc's dynamic mmap
# threshold, PyTorch's forward is slowest). So the ratios compare the two libraries, not their
# allocator settings.
#
# PYTHON must have torch, torchvision, timm and open_clip_torch (default: python3). PyTorch's side
# is scripts/torch_vp_step.py (the step, its FLOPs and memory) and scripts/torch_vp_epoch.py (the
# epoch).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-python3}"
models="${VPROMPT_BENCH_MODELS:-efficientnet-lite0,resnet18,clip-vit-b32-image}"
memory_models="${VPROMPT_MEMORY_MODELS-efficientnet-lite0,resnet50,clip-vit-b32-image}"
read -ra memory_batches <<< "${VPROMPT_MEMORY_BATCHES:-8 32}"
log="$(mktemp -d)"
# The settings vprompt::tune_allocator() applies with mallopt (crates/vprompt/src/allocator.rs).
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_MMAP_MAX_=0
trap 'rm -rf "$log"' EXIT

torch_twin() {
  case "$1" in
    efficientnet-lite0) echo timm:efficientnet_lite0 ;;
    resnet18 | resnet50) echo "$1" ;;
    clip-vit-b32-image) echo open_clip:ViT-B-32-quickgelu ;;
    *) return 1 ;;
  esac
}
# images/s (column 4) or peak RSS (column 9, "900 MiB") of the bench row whose name starts with $2
row() { awk -F'|' -v name="$2" -v col="$3" 'index($2, " " name) == 1 { split($col, v, " "); print v[1]; exit }' "$1"; }
value() { awk -v key="$2" '$1 == key { print $2; exit }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }

cargo bench --bench train_step --bench epoch --no-run >/dev/null 2>&1
IFS=, read -ra step_models <<< "$models"
for m in "${step_models[@]}"; do
  # One process per model on both sides: a model measured after others in the same process ran
  # up to 15 % slower (the ViT after Lite0 and ResNet-18, against a process of its own).
  echo "== vprompt: training step, $m"
  VPROMPT_BENCH_MODELS="$m" cargo bench -q --bench train_step 2>/dev/null | grep "^| train" | tee -a "$log/step"
  twin="$(torch_twin "$m")" || { echo "($m: no PyTorch twin in this script)"; continue; }
  echo "== PyTorch: training step and forward (eval), $twin, batch 32"
  "$py" scripts/torch_vp_step.py "$twin" --batch 32 --steps 5 2>/dev/null | tee "$log/torch-$m"
done
echo "== vprompt: evaluation and epoch"
cargo bench -q --bench epoch 2>/dev/null | grep "^|" | tee "$log/epoch"
echo "== PyTorch: epoch"
"$py" scripts/torch_vp_epoch.py timm:efficientnet_lite0 0 | grep -E "model=|epoch_" | tee "$log/torch-epoch"

IFS=, read -ra mem_models <<< "$memory_models"
for m in "${mem_models[@]}"; do
  twin="$(torch_twin "$m")" || continue
  for b in "${memory_batches[@]}"; do
    echo "== peak memory, $m, batch $b"
    VPROMPT_BENCH_MODELS="$m" VPROMPT_BENCH_BATCH="$b" VPROMPT_BENCH_SECONDS=0.1 \
      cargo bench -q --bench train_step 2>/dev/null | grep "weights on plain device" | tee "$log/mem-$m-$b"
    # PyTorch's memory with glibc's default settings, as its users run it: the settings above
    # raised its peak by 10-20 %.
    env -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TRIM_THRESHOLD_ -u MALLOC_MMAP_MAX_ \
      "$py" scripts/torch_vp_step.py "$twin" --batch "$b" --steps 2 --memory 2>/dev/null | tee "$log/torch-mem-$m-$b"
  done
done

echo
echo "## vprompt / PyTorch on this machine ($(git rev-parse --short HEAD), $(date -u +%F))"
echo
echo "| work | vprompt | PyTorch | ratio |"
echo "|---|---:|---:|---:|"
for m in "${step_models[@]}"; do
  [ -f "$log/torch-$m" ] || continue
  v="$(row "$log/step" "train step $m, batch 32, 224 px, weights on plain device" 4)"
  t="$(value "$log/torch-$m" train_images_per_s)"
  echo "| training step, $m, batch 32, images/s | $v | $t | **$(ratio "$v" "$t")** |"
  if [ "$m" = clip-vit-b32-image ]; then
    gflop="$(value "$log/torch-$m" step_gflop_per_image)"
    peak="$(value "$log/torch-$m" matmul_peak_gflops)"
    vs="$(awk -v r="$v" -v g="$gflop" -v p="$peak" 'BEGIN { printf "%.2f", r * g / p }')"
    echo "| the same step's share of the matmul peak ($gflop GFLOP per image, peak $peak GFLOP/s) | $vs | $(value "$log/torch-$m" train_share_of_matmul_peak) | |"
  fi
done
v="$(row "$log/epoch" "evaluate lite0 prompted" 4)"
t="$(value "$log/torch-efficientnet-lite0" eval_images_per_s 2>/dev/null || true)"
echo "| evaluation, Lite0, images/s (vprompt: batching and readback included) | $v | $t | **$(ratio "$v" "$t")** |"
v="$(row "$log/epoch" "training epoch lite0" 4)"
t="$(value "$log/torch-epoch" epoch_images_per_s)"
echo "| whole epoch, Lite0, paper recipe, data included, images/s | $v | $t | **$(ratio "$v" "$t")** |"
if [ ${#mem_models[@]} -gt 0 ]; then
  first="${memory_batches[0]}"
  last="${memory_batches[${#memory_batches[@]}-1]}"
  echo
  echo "| step's peak memory, MiB | vprompt | PyTorch | PyTorch / vprompt |"
  echo "|---|---:|---:|---:|"
  for m in "${mem_models[@]}"; do
    [ -f "$log/torch-mem-$m-$first" ] || continue
    for b in "${memory_batches[@]}"; do
      v="$(row "$log/mem-$m-$b" "train step $m" 9)"
      t="$(value "$log/torch-mem-$m-$b" peak_rss_mib)"
      echo "| $m, batch $b | $v | $t | $(ratio "$t" "$v") |"
    done
    if [ "$first" != "$last" ]; then
      v="$(awk -v a="$(row "$log/mem-$m-$first" "train step $m" 9)" -v b="$(row "$log/mem-$m-$last" "train step $m" 9)" \
        -v n=$((last - first)) 'BEGIN { printf "%.1f", (b - a) / n }')"
      t="$(awk -v a="$(value "$log/torch-mem-$m-$first" peak_rss_mib)" -v b="$(value "$log/torch-mem-$m-$last" peak_rss_mib)" \
        -v n=$((last - first)) 'BEGIN { printf "%.1f", (b - a) / n }')"
      echo "| $m, per image (batch $first to $last) | $v | $t | **$(ratio "$t" "$v")** |"
    fi
  done
fi
