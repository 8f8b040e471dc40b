#!/usr/bin/env python3
"""Reference outputs of EfficientNet-Lite0 at a size other than 224, for `with_input_size`.

    python make_lite0_resized_reference.py EFFICIENTNET_LITE0.onnx

EFFICIENTNET_LITE0.onnx is the two-output graph made by models/efficientnet-lite0/make_weights.sh
(sha256 ab0ac233...). Its input is declared 224 x 224, which onnxruntime enforces, so the same graph
runs in PyTorch through onnx2torch, which takes any size. Writes, in this directory:

  lite0_160x288_{features,logits}.npy   outputs for the [1, 3, 160, 288] normalised input
                                        x[c, h, w] = 0.9 sin(0.05 h + 0.07 w + c), which the Rust
                                        test computes itself (no input file)

Requirements: numpy, torch, onnx2torch.
"""
import sys

import numpy as np
import onnx2torch
import torch

HEIGHT, WIDTH = 160, 288


def main(onnx_path):
    c, h, w = np.meshgrid(np.arange(3), np.arange(HEIGHT), np.arange(WIDTH), indexing="ij")
    x = (0.9 * np.sin(0.05 * h + 0.07 * w + c)).astype(np.float32)[None]
    model = onnx2torch.convert(onnx_path).eval()
    with torch.no_grad():
        features, logits = model(torch.from_numpy(x))
    np.save(f"lite0_{HEIGHT}x{WIDTH}_features.npy", features.numpy())
    np.save(f"lite0_{HEIGHT}x{WIDTH}_logits.npy", logits.numpy())
    print("features", tuple(features.shape), "logits", tuple(logits.shape), "top-1", int(logits.argmax()))


if __name__ == "__main__":
    main(sys.argv[1])
