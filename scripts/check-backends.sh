#!/usr/bin/env bash
# The library crates compile against the GPU and CubeCL-CPU backends alone (no flex), as a
# `default-features = false, features = ["cuda"]` user builds them; there is no GPU here to run
# them (docs/backends.md). DOCS_RS=1 is the switch with which tracel-llvm-bundler's build script
# (pulled in by cubecl-cuda and cubecl-cpu) skips downloading LLVM from GitHub, which this
# machine cannot reach; `cargo check` needs no LLVM. Only cubecl-llvm and tracel-llvm-bundler read
# DOCS_RS, and neither is in the default build, so sharing `target/` with it costs no rebuilds.
#
# `.ci/run` runs it last, where it reuses clippy's check results and build-time crates: 7 minutes on
# a clean clone (13 in a target directory of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS_RS=1 cargo check -p vprompt --no-default-features --features cuda,cpu "$@"
