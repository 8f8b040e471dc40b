"""PyTorch CPU twin of vprompt's `train_step` bench: one visual-prompting training step, timed, or
its peak memory.

The step is shared/tools/torch_vp_bench.py's (the anchor's algorithm): a padding prompter
(p = 30) added to 224 x 224 images, a frozen backbone in eval mode, cross-entropy over the first
10 outputs (first-N mapping), SGD (lr 40, momentum 0.9) on the prompt only. This script adds
what `scripts/bench-vs-torch.sh` needs beyond it:

- `open_clip:NAME` models (the CLIP ViT-B/32 image tower: `open_clip:ViT-B-32-quickgelu`, the
  architecture `scripts/export_onnx.py` exports for vprompt's `clip-vit-b32-image` preset), with
  random weights like every model here;
- the step's floating-point operations per image (counted by torch's FlopCounterMode), so that a
  throughput can be read as a share of the machine's measured matmul peak;
- `--memory`: a process that only builds the model and runs training steps, then prints its peak
  resident memory (one process per batch size, as vprompt's `scripts/bench-scaling.sh` does).

The prompter is `scripts/torch_vp_epoch.py`'s, the model builder is shared with it (`build`).

usage: python torch_vp_step.py MODEL [--batch 32] [--steps 5] [--memory]
  MODEL: a torchvision name (resnet18, resnet50), timm:NAME (timm:efficientnet_lite0) or
         open_clip:NAME (open_clip:ViT-B-32-quickgelu)
"""
import argparse
import resource
import time

import torch

from torch_vp_epoch import CLASSES, SIZE, PadPrompter  # the epoch's prompter: one definition


def build(name):
    """A frozen backbone in eval mode, random weights."""
    if name.startswith("timm:"):
        import timm

        model = timm.create_model(name[5:], pretrained=False)
    elif name.startswith("open_clip:"):
        import open_clip

        model = open_clip.create_model(name[10:], pretrained=None).visual
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
    return model.eval().requires_grad_(False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--memory", action="store_true", help="only train steps; print peak RSS")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build(args.model)
    prompter = PadPrompter()
    opt = torch.optim.SGD(prompter.parameters(), lr=40, momentum=0.9)
    x = torch.randn(args.batch, 3, SIZE, SIZE)
    y = torch.randint(0, CLASSES, (args.batch,))

    def train_step():
        logits = model(prompter(x))[:, :CLASSES]
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def eval_step():
        with torch.no_grad():
            model(prompter(x))

    def rate(fn):
        fn()
        t = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return args.batch * args.steps / (time.perf_counter() - t)

    print(f"torch {torch.__version__} threads={torch.get_num_threads()} model={args.model} batch={args.batch}")
    if args.memory:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for _ in range(args.steps):
            train_step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"rss_before_steps_mib {before:.0f}")
        print(f"peak_rss_mib {peak:.0f}")
        return

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step()
    step_gflop = counter.get_total_flops() / args.batch / 1e9

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    peak = 10 * 2 * n**3 / (time.perf_counter() - t) / 1e9

    print(f"matmul_peak_gflops {peak:.1f}")
    print(f"step_gflop_per_image {step_gflop:.2f}")
    print(f"eval_images_per_s {rate(eval_step):.2f}")
    train = rate(train_step)
    print(f"train_images_per_s {train:.2f}")
    print(f"train_share_of_matmul_peak {train * step_gflop / peak:.2f}")


if __name__ == "__main__":
    main()
