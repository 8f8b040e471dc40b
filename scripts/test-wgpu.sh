#!/usr/bin/env bash
# The device-parametrised tests on Burn's wgpu backend (scripts/test-backend.sh), through Vulkan.
#
# On a machine without a GPU, Mesa's software Vulkan driver (lavapipe: `apt-get install
# mesa-vulkan-drivers`) provides the adapter; `.ci/run` runs this after the flex tests.
# cubecl's autotune at its `minimal` level: on lavapipe every candidate kernel it tries is compiled
# by LLVM and timed on the CPU, which is most of these tests' time (docs/backends.md). It only
# chooses between kernels that compute the same thing.
# Arguments go to `cargo test` (e.g. `--verbose`), before the harness's.
set -euo pipefail
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
# Without a desktop session Mesa prints "XDG_RUNTIME_DIR is invalid or not set" for every adapter
# it opens; a private empty directory silences it (Mesa leaves nothing in it).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
    trap 'rmdir "$XDG_RUNTIME_DIR" 2>/dev/null || true' EXIT
fi
# EfficientNet-Lite0's four tests are left to GPU machines (scripts/gpu-check.sh runs them): on
# lavapipe they took 13.5 of this step's 17 minutes, over CI's budget once the training loop's tests
# joined. Their layers stay covered here, for values: the kernels' layers against PyTorch
# (vprompt-kernels/tests/fallbacks.rs) and the generated code through the tiny presets
# (loading.rs). Run them here too with `VPROMPT_WGPU_LITE0=1 scripts/test-wgpu.sh`.
skip=()
if [ -z "${VPROMPT_WGPU_LITE0:-}" ]; then
    for test in outputs_match_onnxruntime photos_are_recognised input_gradient_matches_pytorch \
        weights_are_frozen; do
        skip+=(--skip "$test")
    done
fi
"$(dirname "$0")/test-backend.sh" wgpu "$@" -- "${skip[@]}"
