//! Frozen pretrained backbones for visual prompting.
//!
//! This crate will hold the `Backbone` trait (input size, the model's own normalisation, output kind
//! and size, forward on normalised input, freezing), the architectures generated from ONNX with
//! `burn-onnx` behind hand-written types (EfficientNet-Lite0 as the embedded, pretrained default;
//! ResNet-50, ResNeXt-101 32x8d and CLIP ViT-B/32 with user-supplied weights), and the checked
//! conversion of ONNX weights into a preset's weights file. See `DESIGN.md` section 2 and issue 3.
