#!/usr/bin/env bash
# The library crates, the examples and the benches compile against the GPU and CubeCL-CPU backends
# alone (no flex), as a `default-features = false, features = ["cuda"]` user builds them; there is
# no GPU here to run them (docs/backends.md). DOCS_RS=1 is the switch with which
# tracel-llvm-bundler's build script (pulled in by cubecl-cuda and cubecl-cpu) skips downloading
# LLVM from GitHub, which this machine cannot reach; `cargo check` needs no LLVM. Only cubecl-llvm
# and tracel-llvm-bundler read DOCS_RS, and neither is in the default build, so sharing `target/`
# with it costs no rebuilds.
#
# `.ci/run` runs it after the test steps, whose check results and build-time crates it reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS_RS=1 cargo check -p vprompt --no-default-features --features cuda,cpu "$@"
# The examples and benches: none may call a backend that is not compiled in (`Device::flex()`).
# Their dependencies (dev-dependencies included) resolve to the same features as the library's
# above, so this reuses its results; nothing of theirs may turn on burn-onnx's `import`, which
# enables Burn's `flex` (they load the committed tiny_resnet.bpk instead of importing its ONNX).
DOCS_RS=1 cargo check -p vprompt-examples --examples --benches --no-default-features --features cuda,cpu "$@"
