#!/usr/bin/env python3
"""Expose EfficientNet-Lite's penultimate features as a second graph output.

    python add_features_output.py IN.onnx OUT.onnx

The converter's graph ends GlobalAveragePool -> Flatten -> Gemm ("logits"). This adds the Flatten
output (the 1280 pooled features, the linear-probe input) as output "features", placed before
"logits", so one forward pass gives both. Nothing else changes. Requirements: onnx.
"""
import sys

import onnx
from onnx import TensorProto, helper


def main(src, dst):
    model = onnx.load(src)
    graph = model.graph
    gemm = [n for n in graph.node if n.op_type == "Gemm"]
    assert len(gemm) == 1 and gemm[0].output[0] == graph.output[0].name, "expected one final Gemm"
    flatten = [n for n in graph.node if n.op_type == "Flatten" and n.output[0] == gemm[0].input[0]]
    assert len(flatten) == 1, "expected Flatten -> Gemm"
    width = [i for i in graph.initializer if i.name == gemm[0].input[1]][0].dims[1]
    features = helper.make_tensor_value_info(flatten[0].output[0], TensorProto.FLOAT, ["batch", width])
    features.name = flatten[0].output[0]
    logits = graph.output.pop()
    graph.output.extend([features, logits])
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    print(f"wrote {dst}: outputs {[o.name for o in graph.output]}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
