#!/usr/bin/env python3
"""Export a pretrained backbone to ONNX for `vprompt import` (run on a machine with internet).

    python scripts/export_onnx.py MODEL OUT.onnx [--random-weights]

MODEL                 weights (downloaded by torchvision / open_clip)         outputs
resnet18              torchvision ResNet18_Weights.IMAGENET1K_V1               features [B,512], logits [B,1000]
resnet50-v1           torchvision ResNet50_Weights.IMAGENET1K_V1 (the paper)  features [B,2048], logits [B,1000]
resnet50-v2           torchvision ResNet50_Weights.IMAGENET1K_V2 (ILM-VP)     features [B,2048], logits [B,1000]
resnext101-32x8d      torchvision ResNeXt101_32X8D_Weights.IMAGENET1K_V1      features [B,2048], logits [B,1000]
resnext101-32x8d-wsl  torch.hub facebookresearch/WSL-Images (the paper's
                      Instagram model, fine-tuned on ImageNet-1k)             features [B,2048], logits [B,1000]
bit-m-r50x1           timm resnetv2_50x1_bit.goog_in21k (BiT-M, ImageNet-21k)  features [B,2048], logits [B,21843]
clip-vit-b32-image    open_clip ViT-B-32-quickgelu, pretrained="openai"       embedding [B,512]
clip-vit-b32-text     the same model's text tower, int64 tokens [B,77]        text_embedding [B,512]

All exports use the dynamo exporter (opset 18) with a dynamic batch axis, which burn-onnx 0.22 imports
for every batch size. Image models take float32 [B,3,224,224] *normalised* input (the preset knows the
normalisation); ResNets return their penultimate features beside the logits, so a linear probe needs
no second pass.

--random-weights  replaces every weight by seeded random values (no download). vprompt's committed
                  architecture code was generated from such exports: the values differ from the real
                  weights, the graph does not (random values avoid the zero biases and equal constants
                  that exporters would drop or merge).

The paper's backbones need no export: `vprompt import` (and loading) reads their checkpoints as
torchvision, timm, transformers and open_clip save them. This script is for `vprompt-codegen`
(regenerating the committed architecture code) and for models the checkpoint route does not cover.

Requirements: torch, torchvision, timm, open_clip_torch, onnx, onnxscript (and onnxruntime for --check).
--check       also runs the exported file with onnxruntime against PyTorch on a random batch.
"""
import argparse
import sys

import torch
from torch import nn

IMAGE_OUTPUTS = ["features", "logits"]


class TimmWithFeatures(nn.Module):
    """A timm model's forward, returning (pre-logits features, logits)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        trunk = self.net.forward_features(x)
        return self.net.forward_head(trunk, pre_logits=True), self.net.forward_head(trunk)


class ResNetWithFeatures(nn.Module):
    """torchvision ResNet / ResNeXt forward, returning (penultimate features, logits)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        features = torch.flatten(n.avgpool(x), 1)
        return features, n.fc(features)


class TextTower(nn.Module):
    """CLIP text encoder: int64 token ids [B, 77] -> projected text embedding."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, tokens):
        return self.clip.encode_text(tokens)


def randomise(model, scale=0.05, seed=0):
    """Seeded random values in every parameter and BatchNorm statistic (positive variances)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
    return model


def export(model, example_inputs, path, input_names, output_names):
    """The one export recipe: dynamo, opset 18, dynamic batch, weights inside the file."""
    import onnx

    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model, example_inputs, path, dynamo=True, opset_version=18, external_data=False,
        input_names=input_names, output_names=output_names,
        dynamic_shapes=tuple({0: batch} for _ in example_inputs),
    )
    onnx.checker.check_model(path)
    ops = sorted({n.op_type for n in onnx.load(path, load_external_data=False).graph.node})
    print(f"wrote {path}: ops {ops}", file=sys.stderr)


def build(name, random_weights):
    import torchvision

    if name == "resnet18":
        w = None if random_weights else torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        return ResNetWithFeatures(torchvision.models.resnet18(weights=w)), "image"
    if name == "resnet50-v1":
        w = None if random_weights else torchvision.models.ResNet50_Weights.IMAGENET1K_V1
        return ResNetWithFeatures(torchvision.models.resnet50(weights=w)), "image"
    if name == "resnet50-v2":
        w = None if random_weights else torchvision.models.ResNet50_Weights.IMAGENET1K_V2
        return ResNetWithFeatures(torchvision.models.resnet50(weights=w)), "image"
    if name == "resnext101-32x8d":
        w = None if random_weights else torchvision.models.ResNeXt101_32X8D_Weights.IMAGENET1K_V1
        return ResNetWithFeatures(torchvision.models.resnext101_32x8d(weights=w)), "image"
    if name == "resnext101-32x8d-wsl":
        if random_weights:
            return ResNetWithFeatures(torchvision.models.resnext101_32x8d(weights=None)), "image"
        net = torch.hub.load("facebookresearch/WSL-Images", "resnext101_32x8d_wsl")
        return ResNetWithFeatures(net), "image"
    if name == "bit-m-r50x1":
        import timm

        net = timm.create_model("resnetv2_50x1_bit.goog_in21k", pretrained=not random_weights)
        return TimmWithFeatures(net), "image"
    if name in ("clip-vit-b32-image", "clip-vit-b32-text"):
        import open_clip

        clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None if random_weights else "openai")
        if name.endswith("image"):
            return clip.visual, "clip-image"
        return TextTower(clip), "clip-text"
    raise SystemExit(f"unknown model {name}; see --help")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    model, kind = build(args.model, args.random_weights)
    if args.random_weights:
        randomise(model)
    model.eval()
    torch.manual_seed(0)
    if kind == "clip-text":
        import open_clip

        example = (open_clip.get_tokenizer("ViT-B-32")(["This is a photo of a cat", "a dog"]),)
        export(model, example, args.out, ["tokens"], ["text_embedding"])
    else:
        example = (torch.randn(2, 3, 224, 224),)
        outputs = IMAGE_OUTPUTS if kind == "image" else ["embedding"]
        export(model, example, args.out, ["input"], outputs)
    if args.check:
        import numpy as np
        import onnxruntime as ort

        session = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: example[0].numpy()})
        with torch.no_grad():
            want = model(*example)
        want = want if isinstance(want, tuple) else (want,)
        for g, w in zip(got, want):
            print("max |onnxruntime - torch| =", float(np.abs(g - w.numpy()).max()), file=sys.stderr)


if __name__ == "__main__":
    main()
