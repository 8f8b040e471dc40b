#!/usr/bin/env python3
"""Reference outputs of EfficientNet-Lite0 for vprompt-backbone's tests.

    python make_lite0_reference.py EFFICIENTNET_LITE0.onnx

EFFICIENTNET_LITE0.onnx is the two-output graph made by models/efficientnet-lite0/make_weights.sh
(sha256 ab0ac233...). Writes, in this directory:

  lite0_photos_u8.npy        [3,3,224,224] uint8: scikit-image's chelsea (cat, CC0), coffee (CC0) and
                             rocket (SpaceX, public domain) photos, shorter side resized to 256 with PIL
                             bicubic, centre-cropped to 224, RGB, channels first
  lite0_random_input.npy     [1,3,224,224] float32, seeded uniform [-1, 1] (already normalised)
  lite0_photos_{features,logits}.npy, lite0_random_{features,logits}.npy
                             onnxruntime outputs for (photos / 255 - 0.5) / 0.5 and the random input
  lite0_grad_{indices,values}.npy, lite0_grad_abs_sum.npy
                             gradient of the cat photo's logit of its top-1 class with respect to the
                             normalised input, by PyTorch autograd on the same ONNX graph (onnx2torch):
                             1000 seeded sample positions, their values, and sum |g|

Requirements: numpy, pillow, scikit-image, onnxruntime, torch, onnx2torch.
"""
import sys

import numpy as np
import onnx2torch
import onnxruntime as ort
import skimage.data
import torch
from PIL import Image


def preprocess(rgb):
    image = Image.fromarray(rgb)
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def main(onnx_path):
    photos = np.stack([preprocess(getattr(skimage.data, n)()) for n in ("chelsea", "coffee", "rocket")])
    np.save("lite0_photos_u8.npy", photos)
    normalised = ((photos.astype(np.float32) / 255.0) - 0.5) / 0.5
    rng = np.random.default_rng(0)
    random_input = rng.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    np.save("lite0_random_input.npy", random_input)

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    for name, x in (("photos", normalised), ("random", random_input)):
        features, logits = session.run(["features", "logits"], {"input": x})
        np.save(f"lite0_{name}_features.npy", features)
        np.save(f"lite0_{name}_logits.npy", logits)
        if name == "photos":
            print("top-1:", logits.argmax(1), "logits", logits.max(1))

    model = onnx2torch.convert(onnx_path).eval()
    x = torch.tensor(normalised[:1], requires_grad=True)
    features, logits = model(x)
    top = int(logits[0].argmax())
    logits[0, top].backward()
    grad = x.grad.numpy().reshape(-1)
    indices = rng.choice(grad.size, 1000, replace=False).astype(np.int64)
    np.save("lite0_grad_indices.npy", indices)
    np.save("lite0_grad_values.npy", grad[indices])
    np.save("lite0_grad_abs_sum.npy", np.array([np.abs(grad).sum()], dtype=np.float64))
    print("gradient of logit", top, "sum |g| =", np.abs(grad).sum())


if __name__ == "__main__":
    main(sys.argv[1])
