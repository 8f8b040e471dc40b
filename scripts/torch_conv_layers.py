#!/usr/bin/env python3
"""PyTorch reference for `cargo bench --bench conv_layers`: a backbone's convolutions one at a
time at batch 32, forward and forward + input gradient (weights frozen, as in prompt training),
with the same layer lists and the same summary rows (depthwise / dense totals, weighted by how
often the model has each shape). EfficientNet-Lite0's 49 convolutions by default, ResNet-18's 20
with `VPROMPT_CONV_MODEL=resnet18` (the bench's variable).

    python scripts/torch_conv_layers.py [seconds per layer, default 1]

Asymmetric ("same") padding is an explicit `F.pad` before an unpadded convolution, as in the ONNX
graph of Lite0; symmetric padding is inside the convolution, as in torchvision's ResNet. Needs torch
only; not run in CI.
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# (in, out, kernel, stride, (top, left, bottom, right) or None, groups, input side): the list in
# benches/conv_layers.rs, collapsed to distinct shapes with counts.
LITE0 = [
    ((3, 32, 3, 2, (0, 0, 1, 1), 1, 224), 1),
    ((32, 32, 3, 1, (1, 1, 1, 1), 32, 112), 1), ((32, 16, 1, 1, None, 1, 112), 1),
    ((16, 96, 1, 1, None, 1, 112), 1), ((96, 96, 3, 2, (0, 0, 1, 1), 96, 112), 1),
    ((96, 24, 1, 1, None, 1, 56), 1), ((24, 144, 1, 1, None, 1, 56), 2),
    ((144, 144, 3, 1, (1, 1, 1, 1), 144, 56), 1), ((144, 24, 1, 1, None, 1, 56), 1),
    ((144, 144, 5, 2, (1, 1, 2, 2), 144, 56), 1), ((144, 40, 1, 1, None, 1, 28), 1),
    ((40, 240, 1, 1, None, 1, 28), 2), ((240, 240, 5, 1, (2, 2, 2, 2), 240, 28), 1),
    ((240, 40, 1, 1, None, 1, 28), 1), ((240, 240, 3, 2, (0, 0, 1, 1), 240, 28), 1),
    ((240, 80, 1, 1, None, 1, 14), 1), ((80, 480, 1, 1, None, 1, 14), 3),
    ((480, 480, 3, 1, (1, 1, 1, 1), 480, 14), 2), ((480, 80, 1, 1, None, 1, 14), 2),
    ((480, 480, 5, 1, (2, 2, 2, 2), 480, 14), 1), ((480, 112, 1, 1, None, 1, 14), 1),
    ((112, 672, 1, 1, None, 1, 14), 3), ((672, 672, 5, 1, (2, 2, 2, 2), 672, 14), 2),
    ((672, 112, 1, 1, None, 1, 14), 2), ((672, 672, 5, 2, (1, 1, 2, 2), 672, 14), 1),
    ((672, 192, 1, 1, None, 1, 7), 1), ((192, 1152, 1, 1, None, 1, 7), 4),
    ((1152, 1152, 5, 1, (2, 2, 2, 2), 1152, 7), 3), ((1152, 192, 1, 1, None, 1, 7), 3),
    ((1152, 1152, 3, 1, (1, 1, 1, 1), 1152, 7), 1), ((1152, 320, 1, 1, None, 1, 7), 1),
    ((320, 1280, 1, 1, None, 1, 7), 1),
]
assert sum(n for _, n in LITE0) == 49

# ResNet-18 (batch norm folded into the convolutions, as in its ONNX graph): RESNET18 in
# benches/conv_layers.rs, collapsed the same way.
P1 = (1, 1, 1, 1)
RESNET18 = [
    ((3, 64, 7, 2, (3, 3, 3, 3), 1, 224), 1),
    ((64, 64, 3, 1, P1, 1, 56), 4), ((64, 128, 3, 2, P1, 1, 56), 1),
    ((128, 128, 3, 1, P1, 1, 28), 3), ((64, 128, 1, 2, None, 1, 56), 1),
    ((128, 256, 3, 2, P1, 1, 28), 1), ((256, 256, 3, 1, P1, 1, 14), 3),
    ((128, 256, 1, 2, None, 1, 28), 1), ((256, 512, 3, 2, P1, 1, 14), 1),
    ((512, 512, 3, 1, P1, 1, 7), 3), ((256, 512, 1, 2, None, 1, 14), 1),
]
assert sum(n for _, n in RESNET18) == 20
MODELS = {"efficientnet-lite0": LITE0, "resnet18": RESNET18}


def median_time(fn, budget):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 1000):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    model = os.environ.get("VPROMPT_CONV_MODEL", "efficientnet-lite0")
    if model not in MODELS:
        sys.exit(f"VPROMPT_CONV_MODEL={model}: expected one of {', '.join(MODELS)}")
    batch = 32
    torch.manual_seed(0)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} batch={batch} model={model}")
    totals = {("depthwise", 0): 0.0, ("depthwise", 1): 0.0, ("dense", 0): 0.0, ("dense", 1): 0.0}
    for (c_in, c_out, k, stride, pad, groups, side), count in MODELS[model]:
        # Symmetric padding inside the convolution, as torchvision's ResNet has it; asymmetric
        # padding as an explicit pad (below), as in Lite0's graph.
        inner = pad[0] if pad is not None and len(set(pad)) == 1 else 0
        if inner:
            pad = None
        conv = torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=inner, groups=groups)
        conv.requires_grad_(False)

        def forward(x):
            if pad is not None:
                top, left, bottom, right = pad
                x = F.pad(x, (left, right, top, bottom))
            return conv(x)

        x = torch.rand(batch, c_in, side, side)

        def fwd():
            with torch.no_grad():
                forward(x).sum().item()

        def fwd_grad():
            xg = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(forward(xg).sum(), xg)
            grad.sum().item()

        kind = "depthwise" if groups > 1 else "dense"
        f = median_time(fwd, budget)
        g = median_time(fwd_grad, budget)
        totals[(kind, 0)] += f * count
        totals[(kind, 1)] += g * count
        print(f"{kind} {c_in}->{c_out} k{k} s{stride} at {side} px, x{count}: "
              f"forward {f * 1e3:.2f} ms, + input gradient {g * 1e3:.2f} ms")
    for kind in ("depthwise", "dense"):
        if totals[(kind, 1)] == 0.0:
            continue
        print(f"all {kind} layers: forward {totals[(kind, 0)] * 1e3:.0f} ms, "
              f"+ input gradient {totals[(kind, 1)] * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
