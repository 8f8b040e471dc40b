#!/usr/bin/env python3
"""Reference values for vprompt-mapping's tests.

    python make_reference.py

1. Label mappings, in numpy from their published definitions (research/reference-algorithm.md
   section 3.1), on seeded matrices: source logits Z [60, 12] with labels y in 0..4, and a second
   "epoch" Z2 (ILM refits on it):
     mapping_logits.npy, mapping_labels.npy, mapping_logits_epoch2.npy   inputs
     mapping_counts.npy        argmax frequency matrix F [12, 4]
     mapping_flm.npy           greedy one-to-one source of each class (epoch 1), int64
     mapping_ilm_epoch2.npy    the same on epoch 2, int64
     mapping_blm.npy           BLM omega [12, 4], lambda 1
     mapping_blm_plus_k1.npy   BLM+ omega, lambda 1, k = max(1, int(0.15 * 4)) = 1
     mapping_blm_plus_k3.npy   BLM+ omega, lambda 1, k = 3
     mapping_ties.npy          greedy assignment of a matrix full of ties, int64
2. CLIP tokenisation: open_clip's tokenizer (OpenAI's BPE) on tokenizer_texts.txt -> tokenizer_ids.npy
   [n, 77] int64.
3. The CLIP text head on the tiny text-tower fixture (crates/vprompt-backbone/tests/fixtures/
   tiny_clip_text.onnx, onnxruntime): classes "T-shirt/top", "Ankle_boot", "cat", templates
   "This is a photo of a {}" and "a blurry photo of the {}.":
     clip_head_class_embeddings.npy  [3, 16] normalised template averages
     clip_head_images.npy            [5, 16] seeded image embeddings
     clip_head_logits.npy            [5, 3]  100 * cos

Requirements: numpy, open_clip_torch (tokenizer only), onnxruntime.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "../../../vprompt-backbone/tests/fixtures")


def counts(z, y, classes):
    f = np.zeros((z.shape[1], classes))
    for s, t in zip(z.argmax(1), y):
        f[s, t] += 1
    return f


def greedy(f):
    f = f.astype(np.float64).copy()
    s_dim, c = f.shape
    out = np.zeros(c, np.int64)
    for _ in range(c):
        loc = int(np.argmax(f))  # first maximum in row-major order
        s, t = divmod(loc, c)
        out[t] = s
        f[s, :] = -1
        f[:, t] = -1
    return out


def bayes(f, lam):
    rows = f.sum(1, keepdims=True) + lam
    p = np.divide(f, rows, out=np.zeros_like(f), where=rows > 0)
    return p / p.sum(0, keepdims=True)


def soft_counts(z, y, classes, k):
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    f = np.zeros((z.shape[1], classes))
    for row, t in zip(p, y):
        for s in np.argsort(-row, kind="stable")[:k]:
            f[s, t] += row[s]
    return f


def label_mappings():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 12)).astype(np.float32)
    y = np.repeat(np.arange(4), 15)
    z[np.arange(60), y * 2] += 1.5  # class t tends to win at source 2t
    z2 = rng.normal(size=(60, 12)).astype(np.float32)
    z2[np.arange(60), 11 - y] += 1.5  # after "training", class t wins at source 11 - t
    np.save(f"{HERE}/mapping_logits.npy", z)
    np.save(f"{HERE}/mapping_labels.npy", y.astype(np.int64))
    np.save(f"{HERE}/mapping_logits_epoch2.npy", z2)
    f = counts(z, y, 4)
    np.save(f"{HERE}/mapping_counts.npy", f)
    np.save(f"{HERE}/mapping_flm.npy", greedy(f))
    np.save(f"{HERE}/mapping_ilm_epoch2.npy", greedy(counts(z2, y, 4)))
    np.save(f"{HERE}/mapping_blm.npy", bayes(f, 1.0))
    np.save(f"{HERE}/mapping_blm_plus_k1.npy", bayes(soft_counts(z, y, 4, 1), 1.0))
    np.save(f"{HERE}/mapping_blm_plus_k3.npy", bayes(soft_counts(z, y, 4, 3), 1.0))
    ties = np.array([[2, 2, 0], [2, 2, 1], [0, 1, 2], [1, 0, 0]], np.float64)
    np.save(f"{HERE}/mapping_ties.npy", greedy(ties))


def tokenizer_ids():
    import open_clip

    texts = [line.rstrip("\n") for line in open(f"{HERE}/tokenizer_texts.txt", encoding="utf-8")]
    ids = open_clip.get_tokenizer("ViT-B-32")(texts).numpy().astype(np.int64)
    np.save(f"{HERE}/tokenizer_ids.npy", ids)
    return open_clip.get_tokenizer("ViT-B-32")


def clip_head(tokenizer):
    import onnxruntime as ort

    session = ort.InferenceSession(f"{FIXTURES}/tiny_clip_text.onnx", providers=["CPUExecutionProvider"])
    classes = [c.lower().replace("_", " ").replace("-", " ") for c in ("T-shirt/top", "Ankle_boot", "cat")]
    templates = ["This is a photo of a {}", "a blurry photo of the {}."]
    embeddings = []
    for c in classes:
        tokens = tokenizer([t.replace("{}", c) for t in templates]).numpy().astype(np.int64)
        e = session.run(None, {"tokens": tokens})[0]
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        m = e.mean(0)
        embeddings.append(m / np.linalg.norm(m))
    w = np.stack(embeddings).astype(np.float32)
    images = np.random.default_rng(1).normal(size=(5, w.shape[1])).astype(np.float32)
    logits = 100 * (images / np.linalg.norm(images, axis=1, keepdims=True)) @ w.T
    np.save(f"{HERE}/clip_head_class_embeddings.npy", w)
    np.save(f"{HERE}/clip_head_images.npy", images)
    np.save(f"{HERE}/clip_head_logits.npy", logits.astype(np.float32))


if __name__ == "__main__":
    label_mappings()
    clip_head(tokenizer_ids())
