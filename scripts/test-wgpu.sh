#!/usr/bin/env bash
# The device-parametrised tests on Burn's wgpu backend (scripts/test-backend.sh), through Vulkan.
#
# On a machine without a GPU, Mesa's software Vulkan driver (lavapipe: `apt-get install
# mesa-vulkan-drivers`) provides the adapter. Not part of `.ci/run`: on the 2-core CI machine the
# wgpu build takes 47 minutes and the 22 tests 19 minutes on lavapipe, against a 40-minute budget
# for the whole run (docs/backends.md).
# Arguments go to `cargo test` (e.g. `--release`).
set -euo pipefail
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
# Without a desktop session Mesa prints "XDG_RUNTIME_DIR is invalid or not set" for every adapter
# it opens; a private empty directory silences it (Mesa leaves nothing in it).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
    trap 'rmdir "$XDG_RUNTIME_DIR" 2>/dev/null || true' EXIT
fi
"$(dirname "$0")/test-backend.sh" wgpu "$@"
