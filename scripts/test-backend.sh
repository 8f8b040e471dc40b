#!/usr/bin/env bash
# The device-parametrised tests (`vprompt_testkit::device_tests!`) on one backend: prompt
# templates, prompt persistence and prompt training, label mappings, EfficientNet-Lite0 against its
# reference outputs. Each crate is built once with `--features <backend>`, and only its
# `<backend>::` tests run (the flex copies already run in `cargo test --workspace`).
#
# Usage: scripts/test-backend.sh wgpu|cuda|cpu [cargo test options, e.g. --release]
# Used by scripts/test-wgpu.sh (lavapipe, no GPU) and scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:?usage: scripts/test-backend.sh wgpu|cuda|cpu [cargo test options]}"
shift
for crate in vprompt-prompt vprompt-mapping vprompt-backbone; do
    cargo test -p "$crate" --features "$backend" "$@" -- "$backend::"
done
