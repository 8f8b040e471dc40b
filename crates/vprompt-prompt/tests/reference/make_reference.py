#!/usr/bin/env python3
"""Reference outputs for vprompt-prompt's tests (numpy only, deterministic).

1. `bahng_pad_mask_{H}x{W}_p{P}.npy`: the pixels covered by the released code's `PadPrompter`
   (hjbahng/visual_prompting models/prompters.py L6-24): four strips `pad_up`/`pad_down`
   [1,3,p,W] and `pad_left`/`pad_right` [1,3,H-2p,p] concatenated around a zero interior.
   Written as a 0/1 uint8 mask: built here from all-ones strips exactly as the original concatenates
   them, for non-square images too.
2. `shrink_frame_{input,expected}.npy`: an image [1,3,10,12] resized with bilinear interpolation,
   half-pixel centres (PyTorch `F.interpolate(mode="bilinear", align_corners=False)`, no
   antialiasing) to the 6x8 interior of a pad-2 frame and zero-padded back to 10x12.
3. `conditional_{input,learned,expected}.npy`: an input-conditional prompt (`ConditionalPrompt`)
   over a pad-2 padding template on [2,3,12,16] images (normalised space): the learned values in
   the layout of `Prompt::learned` (the template's [1,3,12,16] values, frame only, then each of
   the generator's 3x3 convolutions' weight [out,in,3,3] and bias [out], hidden 4), and the
   prompted images `x + v + m * G(x)` with `G` = 4x4 average pooling, conv -> ReLU -> conv -> ReLU
   -> conv (stride 1, zero padding 1), bilinear upsampling back to 12x16 (align_corners=False).

Run from this directory: `python make_reference.py` (numpy 2.x). The files are committed.
"""
import numpy as np


def bahng_pad_prompt(up, down, left, right):
    """PadPrompter.forward's prompt construction, in numpy."""
    _, c, p, w = up.shape
    base_h = left.shape[2]
    base_w = w - 2 * p
    base = np.zeros((1, c, base_h, base_w), np.float32)
    prompt = np.concatenate([left, base, right], axis=3)
    return np.concatenate([up, prompt, down], axis=2)


def bahng_mask(h, w, p, c=3):
    ones = lambda *s: np.ones(s, np.float32)
    return bahng_pad_prompt(ones(1, c, p, w), ones(1, c, p, w), ones(1, c, h - 2 * p, p), ones(1, c, h - 2 * p, p))


def bilinear_half_pixel(x, out_h, out_w):
    """PyTorch's upsample_bilinear2d with align_corners=False (no antialias)."""
    n, c, in_h, in_w = x.shape

    def coords(out_size, in_size):
        scale = in_size / out_size
        src = (np.arange(out_size) + 0.5) * scale - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        frac = src - i0
        return i0, i1, frac

    y0, y1, fy = coords(out_h, in_h)
    x0, x1, fx = coords(out_w, in_w)
    top = x[:, :, y0][:, :, :, x0] * (1 - fx) + x[:, :, y0][:, :, :, x1] * fx
    bottom = x[:, :, y1][:, :, :, x0] * (1 - fx) + x[:, :, y1][:, :, :, x1] * fx
    return (top * (1 - fy)[:, None] + bottom * fy[:, None]).astype(np.float32)


def conv3x3(x, weight, bias):
    """PyTorch's conv2d with a 3x3 kernel, stride 1, zero padding 1."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, weight.shape[0], h, w), np.float64)
    for i in range(3):
        for j in range(3):
            window = padded[:, :, i : i + h, j : j + w]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, i, j])
    return out + bias[None, :, None, None]


def conditional_reference(rng):
    c, h, w, pad, hidden, down = 3, 12, 16, 2, 4, 4
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    mask = bahng_mask(h, w, pad, c)
    template = (rng.standard_normal((1, c, h, w)) * mask).astype(np.float32)
    widths = [c, hidden, hidden, c]
    layers = []
    for cin, cout in zip(widths[:-1], widths[1:]):
        weight = (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32)
        bias = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        layers.append((weight, bias))
    learned = np.concatenate([template.ravel()] + [a.ravel() for layer in layers for a in layer])
    pooled = x.astype(np.float64).reshape(2, c, h // down, down, w // down, down).mean(axis=(3, 5))
    g = pooled
    for k, (weight, bias) in enumerate(layers):
        g = conv3x3(g, weight.astype(np.float64), bias.astype(np.float64))
        if k < len(layers) - 1:
            g = np.maximum(g, 0.0)
    g = bilinear_half_pixel(g, h, w)
    expected = (x + template + mask * g).astype(np.float32)
    return x, learned.reshape(1, 1, 1, -1).astype(np.float32), expected


def main():
    for h, w, p in [(7, 9, 2), (224, 224, 30), (32, 20, 5)]:
        np.save(f"bahng_pad_mask_{h}x{w}_p{p}.npy", bahng_mask(h, w, p).astype(np.uint8))

    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 10, 12), dtype=np.float32)
    inner = bilinear_half_pixel(x, 6, 8)
    expected = np.ascontiguousarray(np.pad(inner, ((0, 0), (0, 0), (2, 2), (2, 2))))
    np.save("shrink_frame_input.npy", x)
    np.save("shrink_frame_expected.npy", expected)

    x, learned, expected = conditional_reference(np.random.default_rng(1))
    np.save("conditional_input.npy", x)
    np.save("conditional_learned.npy", learned)
    np.save("conditional_expected.npy", expected)


if __name__ == "__main__":
    main()
