"""Reference values for the kernels' layers on every backend (tests/fallbacks.rs).

Off flex, vprompt-kernels' functions are Burn's own operations; the Rust test checks their values
(forward, and the input gradient of sum(output * upstream)) on each compiled device against
PyTorch's, for the layer shapes vprompt's backbones use: a depthwise 3x3 stride-2 convolution
(EfficientNet-Lite0), dense 3x3 (narrow, and wide enough for flex's Winograd path) and strided 1x1
convolutions (ResNets), the
ResNet stem's 3x3 stride-2 max pooling with padding, and ReLU6.

Inputs are seeded (numpy's default_rng(0)); weights are rounded to multiples of 1/64. Pooled inputs
have no ties: which of two equal maxima takes the gradient is each library's convention.
Run: python make_kernel_reference.py   (numpy, torch; writes kernel_*.npy beside this file)
"""
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

OUT = pathlib.Path(__file__).parent
rng = np.random.default_rng(0)


def save(name, array):
    np.save(OUT / f"kernel_{name}.npy", np.ascontiguousarray(array, dtype=np.float32))


def conv_case(name, c_in, c_out, kernel, stride, padding, dilation, groups, hw):
    x = rng.uniform(-1, 1, (2, c_in, *hw)).astype(np.float32)
    w = (np.round(rng.uniform(-1, 1, (c_out, c_in // groups, kernel, kernel)) * 64) / 64).astype(np.float32)
    b = rng.uniform(-1, 1, (c_out,)).astype(np.float32)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(xt, torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                 stride=stride, padding=padding, dilation=dilation, groups=groups)
    up = rng.uniform(-1, 1, tuple(y.shape)).astype(np.float32)
    (y * torch.tensor(up, dtype=torch.float64)).sum().backward()
    for part, value in [("x", x), ("w", w), ("b", b), ("up", up), ("y", y.detach().numpy()),
                        ("dx", xt.grad.numpy())]:
        save(f"{name}_{part}", value)


conv_case("depthwise", 8, 8, 3, 2, 1, 1, 8, (9, 10))
conv_case("dense3", 6, 5, 3, 1, 1, 1, 1, (7, 8))
conv_case("dense1s2", 6, 7, 1, 2, 0, 1, 1, (8, 9))

# Max pooling 3x3, stride 2, padding 1 (ResNet's stem), with negative inputs beside the padding.
x = rng.uniform(-1, 1, (2, 3, 9, 10)).astype(np.float32)
xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
y = F.max_pool2d(xt, 3, 2, 1)
up = rng.uniform(-1, 1, tuple(y.shape)).astype(np.float32)
(y * torch.tensor(up, dtype=torch.float64)).sum().backward()
for part, value in [("x", x), ("up", up), ("y", y.detach().numpy()), ("dx", xt.grad.numpy())]:
    save(f"maxpool_{part}", value)

# ReLU6 around its two corners (no value exactly at 0 or 6, where the subgradient is a choice).
x = rng.uniform(-2, 8, (2, 3, 5, 5)).astype(np.float32)
x[np.isin(x, [0.0, 6.0])] += 0.5
xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
y = F.relu6(xt)
up = rng.uniform(-1, 1, tuple(y.shape)).astype(np.float32)
(y * torch.tensor(up, dtype=torch.float64)).sum().backward()
for part, value in [("x", x), ("up", up), ("y", y.detach().numpy()), ("dx", xt.grad.numpy())]:
    save(f"relu6_{part}", value)

# Dense 3x3 stride-1 layers wide enough (16 channels and more) for flex's Winograd path: a 13 x 14
# plane (F(4 x 4), sides not multiples of 4) and a 7 x 7 one (F(2 x 2)). After the cases above, so
# that their values do not change.
conv_case("wide3", 16, 20, 3, 1, 1, 1, 1, (13, 14))
conv_case("wide3small", 24, 16, 3, 1, 1, 1, 1, (7, 7))
