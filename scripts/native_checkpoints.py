#!/usr/bin/env python3
"""The paper's backbones as their own libraries save them, with random weights, and what those
libraries compute: the references vprompt's native-checkpoint loading is checked against.

    python scripts/native_checkpoints.py SOURCE OUT_DIR [--reduced]

SOURCE               built with (random initialisation, seeded)            checkpoint written
torchvision-resnet50 torchvision resnet50(weights=None)                   resnet50.pth (state dict)
torchvision-resnext  torchvision resnext101_32x8d(weights=None)           resnext101_32x8d.pth
timm-resnext         timm resnext101_32x8d.fb_wsl_ig1b_ft_in1k,
                     pretrained=False (the paper's Instagram model)         model.safetensors
timm-bit             timm resnetv2_50x1_bit.goog_in21k, pretrained=False  model.safetensors
transformers-clip    transformers CLIPModel(CLIPConfig())                 model.safetensors (+ config.json)
open-clip            open_clip ViT-B-32-quickgelu, no pretrained tag      open_clip_pytorch_model.bin

With --reduced, the same classes at small widths and depths (the same key names), small enough to
commit: the fixtures CI loads. Each run also writes, into OUT_DIR:

  model.onnx                 the same weights exported as `scripts/export_onnx.py` exports the
                             preset (dynamo, opset 18, dynamic batch): what vprompt-codegen derives
                             the checkpoint's key map from (`vprompt-codegen keymap`), and, for a
                             new preset, generates its architecture from. CLIP writes image.onnx
                             and text.onnx (open_clip's towers, which the presets are).
  input.npy, features.npy, logits.npy            image models: normalised inputs [2, 3, H, W] and
                                                 the library's outputs
  image_input.npy, image_embedding.npy,          CLIP: normalised images, token ids (int64), the
  tokens.npy, text_embedding.npy,                library's embeddings, and its zero-shot logits
  zero_shot_logits.npy, texts.txt                (logit scale included) for the texts

Requirements: torch, torchvision, timm, transformers, open_clip_torch, safetensors, onnx, onnxscript,
numpy (CPU; nothing is downloaded: no pretrained weights).
"""
import argparse
import functools
import json
import os
import sys

import numpy as np
import torch
from torch import nn

TEXTS = [
    "This is a photo of a cat",
    "a photo of a dog.",
    "Ankle boot",
    "naïve café, ÜBER-fast: 100% (really?) — yes!",
    "",
    "a very long caption " * 20,
]


def seeded_random(model, seed=0, scale=0.05):
    """Seeded random values in every parameter and normalisation statistic (variances positive):
    random weights avoid the zero biases and equal constants exporters drop or merge, and make
    every tensor distinguishable for the key-map derivation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
    return model.eval()


def export(model, example_inputs, path, input_names, output_names):
    """`scripts/export_onnx.py`'s recipe: dynamo, opset 18, dynamic batch, weights inside."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model.eval(), example_inputs, path, dynamo=True, opset_version=18, external_data=False,
        input_names=input_names, output_names=output_names,
        dynamic_shapes=tuple({0: batch} for _ in example_inputs),
    )


class WithFeatures(nn.Module):
    """(penultimate features, logits) of a torchvision ResNet or a timm model."""

    def __init__(self, net, timm_model):
        super().__init__()
        self.net, self.timm_model = net, timm_model

    def forward(self, x):
        n = self.net
        if self.timm_model:
            trunk = n.forward_features(x)
            return n.forward_head(trunk, pre_logits=True), n.forward_head(trunk)
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        features = torch.flatten(n.avgpool(n.layer4(n.layer3(n.layer2(n.layer1(x))))), 1)
        return features, n.fc(features)


def reduced_torchvision_resnet(groups, width_per_group):
    """torchvision's ResNet class with bottleneck blocks at small widths: the same key names."""
    from torchvision.models.resnet import Bottleneck, ResNet

    class Small(ResNet):
        def __init__(self):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = 8, 1, groups, width_per_group
            self.conv1 = nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(Bottleneck, 4, 2)
            self.layer2 = self._make_layer(Bottleneck, 8, 1, stride=2)
            self.layer3 = self._make_layer(Bottleneck, 8, 1, stride=2)
            self.layer4 = self._make_layer(Bottleneck, 16, 1, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(16 * Bottleneck.expansion, 10)

    return Small()


IMAGE_SOURCES = ("torchvision-resnet50", "torchvision-resnext", "timm-resnext", "timm-bit")


def image_model(source, reduced):
    """(model returning (features, logits), checkpoint file name, state dict to save, image side)."""
    import timm
    import torchvision

    if source == "torchvision-resnet50":
        net = reduced_torchvision_resnet(1, 64) if reduced else torchvision.models.resnet50(weights=None)
        return WithFeatures(net, False), "resnet50.pth", net, 64 if reduced else 224
    if source == "torchvision-resnext":
        net = reduced_torchvision_resnet(4, 16) if reduced else torchvision.models.resnext101_32x8d(weights=None)
        return WithFeatures(net, False), "resnext101_32x8d.pth", net, 64 if reduced else 224
    if source == "timm-resnext":
        if reduced:
            raise SystemExit("timm's ResNeXt has torchvision's key names: use torchvision-resnext --reduced")
        net = timm.create_model("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", pretrained=False)
        return WithFeatures(net, True), "model.safetensors", net, 224
    if source == "timm-bit":
        if reduced:
            from timm.layers import GroupNormAct
            from timm.models.resnetv2 import ResNetV2

            net = ResNetV2(
                layers=[1, 1, 1, 1], channels=(16, 32, 64, 128), num_classes=10, stem_chs=8,
                norm_layer=functools.partial(GroupNormAct, num_groups=4),
            )
        else:
            net = timm.create_model("resnetv2_50x1_bit.goog_in21k", pretrained=False)
        return WithFeatures(net, True), "model.safetensors", net, 64 if reduced else 224
    raise SystemExit(f"unknown image source {source}")


def save_state_dict(state, path):
    state = {k: v.contiguous() for k, v in state.items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)


def write_image_model(source, out, reduced):
    model, name, net, side = image_model(source, reduced)
    seeded_random(model)
    save_state_dict(net.state_dict(), os.path.join(out, name))
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, logits = model(x)
    np.save(os.path.join(out, "input.npy"), x.numpy())
    np.save(os.path.join(out, "features.npy"), features.numpy())
    np.save(os.path.join(out, "logits.npy"), logits.numpy())
    export(model, (x,), os.path.join(out, "model.onnx"), ["input"], ["features", "logits"])


# --- CLIP ---------------------------------------------------------------------------------------


def clip_configs(reduced):
    """transformers' and open_clip's configs of the same architecture (ViT-B/32, QuickGELU; or the
    reduced one of `crates/vprompt-backbone/tests/fixtures/make_fixtures.py`)."""
    from transformers import CLIPConfig

    if not reduced:
        return CLIPConfig(), "ViT-B-32-quickgelu"
    hf = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                         vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2,
                           patch_size=8, image_size=32),
        projection_dim=16,
    )
    import open_clip

    oc = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=16, heads=2, layers=2),
        quick_gelu=True,
    )
    return hf, oc


def transformers_to_open_clip(hf_state, oc):
    """Copies a transformers CLIPModel's weights into an open_clip CLIP of the same architecture:
    the conversion both libraries' users rely on (q, k, v projections stacked into in_proj)."""
    s = {k: v for k, v in hf_state.items()}
    out = {}

    def tower(hf_prefix, oc_prefix, layers):
        for i in range(layers):
            a, b = f"{hf_prefix}.encoder.layers.{i}", f"{oc_prefix}transformer.resblocks.{i}"
            for part in ("weight", "bias"):
                out[f"{b}.attn.in_proj_{part}"] = torch.cat(
                    [s[f"{a}.self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")])
                out[f"{b}.attn.out_proj.{part}"] = s[f"{a}.self_attn.out_proj.{part}"]
                out[f"{b}.ln_1.{part}"] = s[f"{a}.layer_norm1.{part}"]
                out[f"{b}.ln_2.{part}"] = s[f"{a}.layer_norm2.{part}"]
                out[f"{b}.mlp.c_fc.{part}"] = s[f"{a}.mlp.fc1.{part}"]
                out[f"{b}.mlp.c_proj.{part}"] = s[f"{a}.mlp.fc2.{part}"]

    vision_layers = sum(1 for k in s if k.endswith("layer_norm1.weight") and "vision_model" in k)
    text_layers = sum(1 for k in s if k.endswith("layer_norm1.weight") and "text_model" in k)
    tower("vision_model", "visual.", vision_layers)
    tower("text_model", "", text_layers)
    out["visual.conv1.weight"] = s["vision_model.embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = s["vision_model.embeddings.class_embedding"]
    out["visual.positional_embedding"] = s["vision_model.embeddings.position_embedding.weight"]
    for part in ("weight", "bias"):
        out[f"visual.ln_pre.{part}"] = s[f"vision_model.pre_layrnorm.{part}"]
        out[f"visual.ln_post.{part}"] = s[f"vision_model.post_layernorm.{part}"]
        out[f"ln_final.{part}"] = s[f"text_model.final_layer_norm.{part}"]
    out["visual.proj"] = s["visual_projection.weight"].t()
    out["token_embedding.weight"] = s["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = s["text_model.embeddings.position_embedding.weight"]
    out["text_projection"] = s["text_projection.weight"].t()
    out["logit_scale"] = s["logit_scale"]
    missing, unexpected = oc.load_state_dict(out, strict=False)
    assert not unexpected and all(k == "attn_mask" or k.endswith("attn_mask") for k in missing), (missing, unexpected)


def write_clip(source, out, reduced):
    import open_clip
    from transformers import CLIPModel

    hf_config, oc = clip_configs(reduced)
    if isinstance(oc, str):
        oc = open_clip.create_model(oc, pretrained=None)
    if source == "transformers-clip":
        hf = seeded_random(CLIPModel(hf_config))
        with torch.no_grad():
            hf.logit_scale.fill_(float(np.log(1 / 0.07)))
        hf.save_pretrained(out, safe_serialization=True)
        transformers_to_open_clip(hf.state_dict(), oc)
    else:
        seeded_random(oc)
        with torch.no_grad():
            oc.logit_scale.fill_(float(np.log(1 / 0.07)))
        torch.save({k: v for k, v in oc.state_dict().items() if not k.endswith("attn_mask")},
                   os.path.join(out, "open_clip_pytorch_model.bin"))
        hf = None
    oc.eval()
    side = 32 if reduced else 224
    images = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    tokens = tokenizer(TEXTS)
    with torch.no_grad():
        if hf is not None:
            hf.eval()
            image_embedding = hf.get_image_features(pixel_values=images)
            text_embedding = hf.get_text_features(input_ids=tokens)
            if not torch.is_tensor(image_embedding):
                image_embedding, text_embedding = image_embedding.pooler_output, text_embedding.pooler_output
            logits = hf(input_ids=tokens, pixel_values=images).logits_per_image
            # The converted open_clip model computes the same: the conversion is checked here.
            oc_image = oc.encode_image(images)
            assert torch.allclose(oc_image, image_embedding, atol=1e-4, rtol=1e-4), (oc_image - image_embedding).abs().max()
        else:
            image_embedding, text_embedding = oc.encode_image(images), oc.encode_text(tokens)
            i = image_embedding / image_embedding.norm(dim=-1, keepdim=True)
            t = text_embedding / text_embedding.norm(dim=-1, keepdim=True)
            logits = oc.logit_scale.exp() * i @ t.t()
    np.save(os.path.join(out, "image_input.npy"), images.numpy())
    np.save(os.path.join(out, "image_embedding.npy"), image_embedding.numpy())
    np.save(os.path.join(out, "tokens.npy"), tokens.numpy().astype(np.int64))
    np.save(os.path.join(out, "text_embedding.npy"), text_embedding.numpy())
    np.save(os.path.join(out, "zero_shot_logits.npy"), np.ascontiguousarray(logits.numpy()))
    with open(os.path.join(out, "texts.txt"), "w") as f:
        f.write(json.dumps(TEXTS, ensure_ascii=False) + "\n")

    class TextTower(nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, t):
            return self.clip.encode_text(t)

    export(oc.visual, (images,), os.path.join(out, "image.onnx"), ["input"], ["embedding"])
    export(TextTower(oc), (tokens[:2],), os.path.join(out, "text.onnx"), ["tokens"], ["text_embedding"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--reduced", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    if args.source in ("transformers-clip", "open-clip"):
        write_clip(args.source, args.out, args.reduced)
    elif args.source in IMAGE_SOURCES:
        write_image_model(args.source, args.out, args.reduced)
    else:
        raise SystemExit(f"unknown source {args.source}; see --help")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
