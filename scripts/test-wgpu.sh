#!/usr/bin/env bash
# The device-parametrised tests on Burn's wgpu backend (scripts/test-backend.sh), through Vulkan.
#
# On a machine without a GPU, Mesa's software Vulkan driver (lavapipe: `apt-get install
# mesa-vulkan-drivers`) provides the adapter. Not part of `.ci/run`: the first wgpu build of the test
# profile took over 30 minutes on the 2-core CI machine. Measured results: docs/backends.md.
# Arguments go to `cargo test` (e.g. `--release`).
set -euo pipefail
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
exec "$(dirname "$0")/test-backend.sh" wgpu "$@"
