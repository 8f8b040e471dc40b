#!/usr/bin/env bash
# The prepared check for a machine with a GPU, one backend at a time (`wgpu`, `cuda`), results in
# one folder (default `gpu-results/`, or $OUT) to copy into docs/backends.md:
#  1. the device-parametrised tests (scripts/test-backend.sh: prompts, mappings, backbones, the
#     kernels' layers, batching, the training loop with resume, the probe, black-box training);
#  2. a short real training with the `vprompt` tool: the paper's recipe on the embedded
#     EfficientNet-Lite0 and 300 images of the committed Fashion-MNIST subset
#     (scripts/gpu-check/paper-run.toml), on the backend and on flex on the same machine, compared
#     by scripts/gpu-check/compare-runs.py (images/s ratio, loss curves within its tolerance);
#  3. the training-step benchmark (flex runs too, for the ratio).
#
#   scripts/gpu-check.sh            # wgpu and cuda
#   scripts/gpu-check.sh wgpu       # one backend
#
# `cuda` needs an NVIDIA driver and CUDA toolkit, and tracel-llvm-bundler's LLVM build: it is
# downloaded from GitHub on the first build, or taken from `~/.local/share/tracel` (copy that folder
# over on a machine that cannot reach GitHub). `wgpu` needs a Vulkan (or Metal/DX12) driver. Each
# backend is a release build of the whole stack (not yet timed on a GPU machine). The tests are
# scripts/test-backend.sh's; the flex copies and the wgpu ones on lavapipe run in `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(wgpu cuda)
for backend in "${backends[@]}"; do
    case "$backend" in wgpu | cuda) ;; *) echo "unknown backend $backend (wgpu, cuda)" >&2; exit 2 ;; esac
done
out="${OUT:-gpu-results}"
mkdir -p "$out"

{
    date -u
    git rev-parse HEAD
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
} > "$out/machine.txt"

status=0
for backend in "${backends[@]}"; do
    echo "== $backend: tests"
    # Release, the bench's profile, so the two builds share every unit whose features match.
    if ! scripts/test-backend.sh "$backend" --release 2>&1 | tee "$out/test-$backend.txt"; then
        status=1
    fi
    echo "== $backend: the paper's recipe, 3 short epochs, paired with flex"
    # The tool with this backend and flex (its default), in the same release profile as above.
    if cargo build --release -p vprompt-cli --features "$backend" 2>&1 | tail -3; then
        vprompt=target/release/vprompt
        for device in "$backend" flex; do
            [ "$device" = flex ] && [ -f "$out/train-flex/metrics.jsonl" ] && continue
            "$vprompt" --device "$device" train --config scripts/gpu-check/paper-run.toml \
                --run-dir "$out/train-$device" --fresh 2>&1 | tee "$out/train-$device.txt" || status=1
        done
        python3 scripts/gpu-check/compare-runs.py "$out/train-flex" "$out/train-$backend" "$backend" \
            | tee "$out/compare-$backend.md" || status=1
    else
        status=1
    fi
    echo "== $backend: training step (batch 32, 224 x 224; flex runs too, for the ratio)"
    if ! cargo bench --bench train_step --features "$backend" 2>&1 | tee "$out/bench-$backend.txt"; then
        status=1
    fi
done
echo "results in $out/ (exit $status)"
exit $status
