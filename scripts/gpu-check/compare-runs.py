"""Compares a GPU backend's short training run with flex's on the same machine (scripts/gpu-check.sh).

Reads each run directory's metrics.jsonl (one record per epoch) and prints, per epoch, both
backends' training loss, validation top-1 and throughput, then the throughput ratio and the largest
relative difference of the loss curve. Exits 1 when the curves differ by more than TOLERANCE:
the backends run the same seeded batches and prompt initialisation, so their curves differ only by
float rounding (different kernels), which the paper's SGD at lr 40 amplifies over the steps.

Usage: python3 compare-runs.py FLEX_RUN_DIR OTHER_RUN_DIR [NAME]   (standard library only)
"""
import json
import sys

TOLERANCE = 0.02  # relative, on each epoch's mean training loss


def epochs(run_dir):
    with open(f"{run_dir}/metrics.jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if "epoch" in r and "final_evaluation" not in r]


def main():
    flex_dir, other_dir = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else "other"
    flex, other = epochs(flex_dir), epochs(other_dir)
    if len(flex) != len(other) or not flex:
        print(f"epoch counts differ or are zero: flex {len(flex)}, {name} {len(other)}")
        return 1
    print(f"| epoch | loss flex | loss {name} | valid top-1 flex | valid top-1 {name} | img/s flex | img/s {name} |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for a, b in zip(flex, other):
        rel = abs(a["train_loss"] - b["train_loss"]) / max(abs(a["train_loss"]), 1e-12)
        worst = max(worst, rel)
        top1 = lambda r: "-" if r.get("valid_top1") is None else f"{100 * r['valid_top1']:.1f} %"
        print(
            f"| {a['epoch']} | {a['train_loss']:.5f} | {b['train_loss']:.5f} | {top1(a)} | {top1(b)} "
            f"| {a['images_per_second']:.1f} | {b['images_per_second']:.1f} |"
        )
    # The first epoch includes kernel compilation and autotuning on the GPU: the ratio uses the rest.
    steady = slice(1, None) if len(flex) > 1 else slice(None)
    mean = lambda rs: sum(r["images_per_second"] for r in rs) / len(rs)
    ratio = mean(other[steady]) / mean(flex[steady])
    print(f"\n{name} / flex throughput (epochs after the first): {ratio:.2f}x")
    print(f"largest relative difference of the epoch losses: {worst:.2e} (tolerance {TOLERANCE})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
