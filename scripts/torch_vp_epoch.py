#!/usr/bin/env python3
"""PyTorch reference for `cargo bench --bench epoch`: one training epoch of visual prompting with
the usual PyTorch data pipeline, on the same committed Fashion-MNIST subset and the same sizes.

    python scripts/torch_vp_epoch.py [timm:efficientnet_lite0 | torchvision-name] [workers]

250 training images (25 per class) and 20 validation images, batch 32. The data goes through a
`Dataset` whose transform runs every epoch, as in the paper's released code and most VP code:
PIL resize 28 -> 224 (bilinear), to tensor, grey -> RGB, normalise. The step is the one of
`shared/tools/torch_vp_bench.py`: padding prompt p = 30, frozen backbone, SGD lr 40 momentum 0.9,
cross-entropy over the first 10 logits. Then a no-grad pass over the validation images (the
selection pass `Trainer` also makes). Prints the median of 3 epochs after a warm-up epoch, in
images/s counting the trained and the validated images, like the Rust bench.

Needs torch, torchvision, numpy and Pillow (and timm for `timm:` models); not run in CI.
"""
import gzip
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/fashion-mnist"
BATCH, SIZE, PAD, CLASSES = 32, 224, 30, 10


def read_idx(name):
    data = gzip.open(FIXTURE / name).read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def per_class(labels, n, rng, exclude=()):
    chosen = []
    for c in range(CLASSES):
        pool = [i for i in np.flatnonzero(labels == c) if i not in exclude]
        chosen += list(rng.choice(pool, n, replace=False))
    return chosen


class Images(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i]).resize((SIZE, SIZE), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        x = x.expand(3, SIZE, SIZE)
        return (x - 0.5) / 0.5, int(self.labels[i])


class PadPrompter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        base = SIZE - 2 * PAD
        self.base = base
        self.up = torch.nn.Parameter(torch.randn(1, 3, PAD, SIZE))
        self.down = torch.nn.Parameter(torch.randn(1, 3, PAD, SIZE))
        self.left = torch.nn.Parameter(torch.randn(1, 3, base, PAD))
        self.right = torch.nn.Parameter(torch.randn(1, 3, base, PAD))

    def forward(self, x):
        b = torch.zeros(1, 3, self.base, self.base)
        p = torch.cat([self.left, b, self.right], dim=3)
        p = torch.cat([self.up, p, self.down], dim=2)
        return x + torch.cat(x.size(0) * [p])


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "timm:efficientnet_lite0"
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, labels = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    train_idx = per_class(labels, 25, rng)
    valid_idx = per_class(labels, 2, rng, exclude=set(train_idx))
    train = Images(images[train_idx], labels[train_idx])
    valid = Images(images[valid_idx], labels[valid_idx])
    train_loader = torch.utils.data.DataLoader(train, BATCH, shuffle=True, num_workers=workers)
    valid_loader = torch.utils.data.DataLoader(valid, BATCH, num_workers=workers)

    if name.startswith("timm:"):
        import timm

        model = timm.create_model(name[5:], pretrained=False)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    model.eval().requires_grad_(False)
    prompter = PadPrompter()
    opt = torch.optim.SGD(prompter.parameters(), lr=40, momentum=0.9)

    def epoch():
        for x, y in train_loader:
            loss = torch.nn.functional.cross_entropy(model(prompter(x))[:, :CLASSES], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        correct = 0
        with torch.no_grad():
            for x, y in valid_loader:
                correct += (model(prompter(x))[:, :CLASSES].argmax(1) == y).sum().item()
        return correct

    epoch()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} model={name} workers={workers}")
    print(f"epoch_seconds {seconds:.2f}")
    print(f"epoch_images_per_s {(len(train) + len(valid)) / seconds:.2f}")


if __name__ == "__main__":
    main()
