#!/usr/bin/env python3
"""transformers' CLIP tokenizer ids on a corpus of awkward texts: the reference vprompt's CLIP
tokenizer is checked against (`crates/vprompt-mapping/tests/clip_tokenizer.rs`).

    python scripts/clip_tokenizer_reference.py crates/vprompt-mapping/tests/reference/clip_tokenizer.json

The vocabulary and merges are OpenAI's CLIP BPE, built the way OpenAI's `SimpleTokenizer` builds
them from the file open_clip bundles (`bpe_simple_vocab_16e6.txt.gz`); they are the same 49,408
entries as `openai/clip-vit-base-patch32`'s `vocab.json` and `merges.txt`, so nothing is
downloaded. Ids are `CLIPTokenizer(...)(text, truncation=True, max_length=77)`: start and end of
text included, over-long texts cut so that the end token is the 77th.

Requirements: transformers, open_clip_torch (for the BPE file).
"""
import gzip
import json
import os
import sys

import open_clip
from transformers import CLIPTokenizer

CORPUS = [
    "This is a photo of a cat",
    "a photo of a dog.",
    "Ankle boot",
    "T-shirt/top",
    "",
    "   ",
    "Hello, World!!! How's it going?? (fine) [ok] {yes}",
    "don't, can't, it's, we'll, they're, I'm, you've, she'd",
    "naïve café, ÜBER-fast: 100% (really?) — yes!",
    "Ωmega Δelta 東京 タワー 😀 🐱‍👤",
    "numbers 3.14159 and 2026-12-03, 1,000,000",
    "tabs\tand\nnewlines  and   spaces",
    "a&b <tag> \"quoted\" 'single' `back` ~tilde^ #hash @at $dollar",
    "ALL CAPS and MiXeD cAsE",
    "a very long caption " * 20,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def bytes_to_unicode():
    """OpenAI CLIP's byte-to-printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main():
    out = sys.argv[1]
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    tokenizer = CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges])
    ids = [tokenizer(text, truncation=True, max_length=77)["input_ids"] for text in CORPUS]
    import transformers

    with open(out, "w") as f:
        json.dump({"transformers": transformers.__version__, "texts": CORPUS, "ids": ids}, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
