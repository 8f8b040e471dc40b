#!/usr/bin/env bash
# The device-parametrised tests (`vprompt_testkit::device_tests!`) on Burn's wgpu backend: prompt
# templates, prompt persistence and prompt training, label mappings, EfficientNet-Lite0 against its
# reference outputs. Each crate is built once with `--features wgpu`, and only its `wgpu::` tests run
# (the flex copies already run in `cargo test --workspace`).
#
# On a machine without a GPU, Mesa's software Vulkan driver (lavapipe: `apt-get install
# mesa-vulkan-drivers`) provides the adapter. Not part of `.ci/run`: the first wgpu build of the test
# profile took over 30 minutes on the 2-core CI machine. Measured results: docs/backends.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
for crate in vprompt-prompt vprompt-mapping vprompt-backbone; do
    cargo test -p "$crate" --features wgpu -- wgpu:: "$@"
done
