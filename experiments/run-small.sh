#!/usr/bin/env bash
# The small profile of every experiment that runs on this CPU (EfficientNet-Lite0, Fashion-MNIST from
# Debian's dataset-fashion-mnist), results under docs/experiments/. About 35 minutes on 2 cores.
# An interrupted run resumes: run this again.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vprompt-cli
for name in fashion-mnist fig8-single-pixel fig9-few-shot fig7-template-size; do
    ./target/release/vprompt experiment "experiments/$name.toml" --profile small \
        --out "docs/experiments/$name"
done
