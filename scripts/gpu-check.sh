#!/usr/bin/env bash
# The prepared check for a machine with a GPU: the device-parametrised tests and the training-step
# benchmark on `wgpu` and on `cuda`, one backend at a time, with the results in one folder
# (default `gpu-results/`, or $OUT) to copy into docs/backends.md.
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
    echo "== $backend: training step (batch 32, 224 x 224; flex runs too, for the ratio)"
    if ! cargo bench --bench train_step --features "$backend" 2>&1 | tee "$out/bench-$backend.txt"; then
        status=1
    fi
done
echo "results in $out/ (exit $status)"
exit $status
