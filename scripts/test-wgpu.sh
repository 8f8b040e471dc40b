#!/usr/bin/env bash
# The device-parametrised tests on Burn's wgpu backend (scripts/test-backend.sh), through Vulkan.
#
# On a machine without a GPU, Mesa's software Vulkan driver (lavapipe: `apt-get install
# mesa-vulkan-drivers`) provides the adapter. Not part of `.ci/run`: on the 2-core CI machine the
# wgpu build takes 47 minutes and the 22 tests 19 minutes on lavapipe, against a 40-minute budget
# for the whole run (docs/backends.md). Mesa prints "XDG_RUNTIME_DIR is invalid or not set" once
# per adapter without a display; it is harmless.
# Arguments go to `cargo test` (e.g. `--release`).
set -euo pipefail
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
exec "$(dirname "$0")/test-backend.sh" wgpu "$@"
