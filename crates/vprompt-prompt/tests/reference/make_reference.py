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


def main():
    for h, w, p in [(7, 9, 2), (224, 224, 30), (32, 20, 5)]:
        np.save(f"bahng_pad_mask_{h}x{w}_p{p}.npy", bahng_mask(h, w, p).astype(np.uint8))

    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 10, 12), dtype=np.float32)
    inner = bilinear_half_pixel(x, 6, 8)
    expected = np.ascontiguousarray(np.pad(inner, ((0, 0), (0, 0), (2, 2), (2, 2))))
    np.save("shrink_frame_input.npy", x)
    np.save("shrink_frame_expected.npy", expected)


if __name__ == "__main__":
    main()
