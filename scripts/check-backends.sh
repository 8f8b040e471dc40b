#!/usr/bin/env bash
# The library crates compile against the GPU and CubeCL-CPU backends alone (no flex, no CLI), as a
# `default-features = false, features = ["cuda"]` user builds them; there is no GPU here to run
# them (docs/backends.md). DOCS_RS=1 is the switch with which tracel-llvm-bundler's build script
# (pulled in by cubecl-cuda and cubecl-cpu) skips downloading LLVM from GitHub, which this
# machine cannot reach; `cargo check` needs no LLVM. A separate target directory keeps this
# feature set from invalidating the test build's cache.
#
# Not in `.ci/run`: on a clean clone it took 13 minutes on the 2-core CI machine, which took
# the CI run to 41 minutes (over its 40-minute budget). Passed at the commit recorded
# in docs/backends.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS_RS=1 CARGO_TARGET_DIR=target/backend-check cargo check -p vprompt --no-default-features --features cuda,cpu "$@"
