#!/usr/bin/env bash
# The device-parametrised tests (`vprompt_testkit::device_tests!`) on one backend: prompt
# templates, prompt persistence and prompt training, label mappings, EfficientNet-Lite0 against its
# reference outputs, loaded backbones. The flex copies already run in `cargo test --workspace`.
#
# One cargo invocation that builds only the test files calling `device_tests!` (found here, so a
# file that adds device tests is covered without being listed), with that backend alone (no
# `flex`), in the `backend-tests` profile (Cargo.toml: the GPU stack at opt-level 0, its kernel
# compiler at 1), then runs only the `<backend>::` tests, one at a time, so that autotune does not
# time its candidate kernels while another test uses the device (lavapipe runs them on the same 2
# cores). One invocation on purpose: `-p <crate> --features <backend>` per crate unifies features
# differently for each crate and rebuilds Burn each time.
#
# Usage: scripts/test-backend.sh wgpu|cuda|cpu [cargo test options] [-- test harness options]
# (e.g. `-- --skip photos_are_recognised`).
# Used by scripts/test-wgpu.sh (lavapipe, no GPU; in .ci/run) and scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:?usage: scripts/test-backend.sh wgpu|cuda|cpu [cargo test options] [-- harness options]}"
shift
cargo_args=()
harness_args=()
while [ "$#" -gt 0 ]; do
    if [ "$1" = "--" ]; then
        shift
        harness_args=("$@")
        break
    fi
    cargo_args+=("$1")
    shift
done
case "$backend" in wgpu | cuda | cpu) ;; *) echo "unknown backend $backend (wgpu, cuda, cpu)" >&2; exit 2 ;; esac

targets=()
while IFS= read -r file; do
    # crates/<package>/tests/<test>.rs
    package="${file#crates/}"
    package="${package%%/*}"
    targets+=(-p "$package" --test "$(basename "$file" .rs)")
done < <(grep -l 'device_tests!' crates/*/tests/*.rs | sort)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no test file calls device_tests!" >&2
    exit 1
fi
# A caller's own profile (`--release` from scripts/gpu-check.sh) replaces `backend-tests`.
profile=(--profile backend-tests)
for arg in "${cargo_args[@]}"; do
    case "$arg" in --release | -r | --profile | --profile=*) profile=() ;; esac
done
exec cargo test "${profile[@]}" --no-default-features --features "$backend" "${targets[@]}" \
    "${cargo_args[@]}" -- "$backend::" --test-threads=1 "${harness_args[@]}"
