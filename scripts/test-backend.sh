#!/usr/bin/env bash
# The device-parametrised tests (`vprompt_testkit::device_tests!`) on one backend: prompt
# templates, prompt persistence and prompt training, label mappings, EfficientNet-Lite0 against its
# reference outputs, loaded backbones. One build of the workspace with `--features <backend>`, then
# only the `<backend>::` tests run (the flex copies already run in `cargo test --workspace`), so a
# crate that adds device tests is covered without being listed here.
#
# One cargo invocation on purpose: `-p <crate> --features <backend>` per crate unifies features
# differently for each crate, and each invocation rebuilt Burn (36 minutes for the first crate on
# 2 cores). Measured on lavapipe: docs/backends.md.
#
# Usage: scripts/test-backend.sh wgpu|cuda|cpu [cargo test options, e.g. --release]
# Used by scripts/test-wgpu.sh (lavapipe, no GPU) and scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:?usage: scripts/test-backend.sh wgpu|cuda|cpu [cargo test options]}"
shift
case "$backend" in wgpu | cuda | cpu) ;; *) echo "unknown backend $backend (wgpu, cuda, cpu)" >&2; exit 2 ;; esac
exec cargo test --workspace --features "$backend" --tests "$@" -- "$backend::"
