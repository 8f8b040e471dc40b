use std::sync::OnceLock;

use crate::error::{BackboneError, Result};
use crate::normalization::Normalization;

/// The side lengths [`ImageBackbone::with_input_size`](crate::ImageBackbone::with_input_size)
/// accepts: at least one pixel after the ResNets' and EfficientNet's total stride of 32, and at
/// most 1024, where one EfficientNet-Lite0 training image already takes over 1 GB
/// (docs/performance.md, "Scaling").
pub const INPUT_SIDE_RANGE: std::ops::RangeInclusive<usize> = 32..=1024;

/// The architectures vprompt has generated code for.
///
/// | preset | input | outputs | weights |
/// |---|---|---|---|
/// | `efficientnet-lite0` | 224 | 1280 features, 1000 ImageNet logits | embedded (Apache-2.0) |
/// | `resnet18` | 224 | 512 features, 1000 ImageNet logits | bring your own (torchvision V1) |
/// | `resnet50` | 224 | 2048 features, 1000 ImageNet logits | bring your own (torchvision V1 or V2) |
/// | `resnext101-32x8d` | 224 | 2048 features, 1000 ImageNet logits | bring your own (torchvision or Instagram WSL) |
/// | `clip-vit-b32-image` | 224 | 512 image embedding | bring your own (OpenAI CLIP) |
/// | `clip-vit-b32-text` | 77 tokens | 512 text embedding | bring your own (OpenAI CLIP) |
/// | `bit-m-r50x1` | 224 | 2048 features, 21,843 ImageNet-21k logits | bring your own (timm BiT-M) |
/// | `tiny-resnet`, `tiny-resnet50`, `tiny-resnext`, `tiny-bit`, `tiny-vit`, `tiny-clip-text` | 32 or 64 / 77 tokens | small | test fixtures with random weights |
///
/// The tiny presets are random-weight models of the same families, used to test the whole
/// export -> import -> load path where real weights cannot be shipped; they are not pretrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// EfficientNet-Lite0, ImageNet-1k (the embedded default).
    EfficientNetLite0,
    /// ResNet-18, ImageNet-1k (torchvision V1): the small ResNet, and the benchmarks' ResNet.
    ResNet18,
    /// ResNet-50, ImageNet-1k (torchvision; V1 weights in the paper, V2 in ILM-VP).
    ResNet50,
    /// ResNeXt-101 32x8d (torchvision ImageNet, or the paper's Instagram-pretrained WSL model).
    ResNeXt101_32x8d,
    /// CLIP ViT-B/32 image tower (projected embedding).
    ClipVitB32Image,
    /// CLIP ViT-B/32 text tower (projected embedding).
    ClipVitB32Text,
    /// BiT-M R50x1 (Big Transfer, ImageNet-21k; timm `resnetv2_50x1_bit.goog_in21k`): group norm
    /// and weight-standardised convolutions, 21,843 classes.
    BitMR50x1,
    /// Test fixture: a narrow ResNet with BatchNorm, random weights.
    TinyResNet,
    /// Test fixture: torchvision's ResNet-50 classes (bottleneck blocks) at small widths, random
    /// weights; loads torchvision-style state dicts.
    TinyResNet50,
    /// Test fixture: torchvision's ResNeXt classes (grouped bottlenecks) at small widths, random
    /// weights.
    TinyResNeXt,
    /// Test fixture: timm's ResNetV2 (BiT) at small widths, random weights.
    TinyBit,
    /// Test fixture: a tiny CLIP-style ViT image tower, random weights.
    TinyVit,
    /// Test fixture: a tiny CLIP-style text tower (full vocabulary, context 77), random weights.
    TinyClipText,
}

/// What a preset's forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Class logits, with class names.
    Logits,
    /// An embedding (CLIP): compared with text embeddings, not classes.
    Embedding,
}

/// Whether a preset encodes images or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Images `[batch, 3, H, W]`.
    Image,
    /// Token ids `[batch, context_length]`.
    Text,
}

/// Everything vprompt knows about a preset besides its generated code.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub name: &'static str,
    /// The model name `scripts/export_onnx.py` (or the fixture script) takes.
    pub export_name: &'static str,
    pub modality: Modality,
    /// `[height, width]` for images, `[1, context_length]` for text.
    pub input_size: [usize; 2],
    /// Whether the architecture takes other image sizes: convolutions with global average pooling
    /// (ResNets, EfficientNet) do; a ViT's position embeddings fix its size.
    pub resizable: bool,
    pub normalization: Normalization,
    pub output: OutputKind,
    pub output_dim: usize,
    /// Dimension of the penultimate features (equal to `output_dim` where the graph has no
    /// separate feature output).
    pub feature_dim: usize,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 13] = [
        Preset::EfficientNetLite0,
        Preset::ResNet18,
        Preset::ResNet50,
        Preset::ResNeXt101_32x8d,
        Preset::ClipVitB32Image,
        Preset::ClipVitB32Text,
        Preset::BitMR50x1,
        Preset::TinyResNet,
        Preset::TinyResNet50,
        Preset::TinyResNeXt,
        Preset::TinyBit,
        Preset::TinyVit,
        Preset::TinyClipText,
    ];

    pub(crate) fn spec(self) -> Spec {
        use Modality::*;
        use OutputKind::*;
        let image = |name, export_name, normalization, output, output_dim, feature_dim| Spec {
            name,
            export_name,
            modality: Image,
            input_size: [224, 224],
            // The convolutional presets; the ViTs below say otherwise.
            resizable: true,
            normalization,
            output,
            output_dim,
            feature_dim,
        };
        match self {
            Preset::EfficientNetLite0 => image(
                "efficientnet-lite0",
                "efficientnet-lite0",
                Normalization::HALF,
                Logits,
                1000,
                1280,
            ),
            Preset::ResNet18 => image("resnet18", "resnet18", Normalization::IMAGENET, Logits, 1000, 512),
            Preset::ResNet50 => image(
                "resnet50",
                "resnet50-v1",
                Normalization::IMAGENET,
                Logits,
                1000,
                2048,
            ),
            Preset::ResNeXt101_32x8d => image(
                "resnext101-32x8d",
                "resnext101-32x8d",
                Normalization::IMAGENET,
                Logits,
                1000,
                2048,
            ),
            Preset::ClipVitB32Image => Spec {
                resizable: false,
                ..image(
                    "clip-vit-b32-image",
                    "clip-vit-b32-image",
                    Normalization::CLIP,
                    Embedding,
                    512,
                    512,
                )
            },
            Preset::ClipVitB32Text => Spec {
                name: "clip-vit-b32-text",
                export_name: "clip-vit-b32-text",
                modality: Text,
                input_size: [1, 77],
                resizable: false,
                normalization: Normalization::CLIP,
                output: Embedding,
                output_dim: 512,
                feature_dim: 512,
            },
            Preset::BitMR50x1 => image(
                "bit-m-r50x1",
                "bit-m-r50x1",
                Normalization::HALF,
                Logits,
                21_843,
                2048,
            ),
            Preset::TinyResNet => Spec {
                input_size: [32, 32],
                ..image("tiny-resnet", "tiny_resnet", Normalization::HALF, Logits, 10, 16)
            },
            Preset::TinyResNet50 => Spec {
                input_size: [64, 64],
                ..image(
                    "tiny-resnet50",
                    "tiny_resnet50",
                    Normalization::IMAGENET,
                    Logits,
                    10,
                    64,
                )
            },
            Preset::TinyResNeXt => Spec {
                input_size: [64, 64],
                ..image(
                    "tiny-resnext",
                    "tiny_resnext",
                    Normalization::IMAGENET,
                    Logits,
                    10,
                    64,
                )
            },
            Preset::TinyBit => Spec {
                input_size: [64, 64],
                ..image("tiny-bit", "tiny_bit", Normalization::HALF, Logits, 10, 128)
            },
            Preset::TinyVit => Spec {
                input_size: [32, 32],
                resizable: false,
                ..image("tiny-vit", "tiny_vit", Normalization::CLIP, Embedding, 16, 16)
            },
            Preset::TinyClipText => Spec {
                name: "tiny-clip-text",
                export_name: "tiny_clip_text",
                modality: Text,
                input_size: [1, 77],
                resizable: false,
                normalization: Normalization::CLIP,
                output: Embedding,
                output_dim: 16,
                feature_dim: 16,
            },
        }
    }

    /// The preset's name, as `vprompt import` and config files spell it.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// All preset names.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|p| p.name()).collect()
    }

    /// Looks a preset up by name.
    pub fn from_name(name: &str) -> Result<Preset> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| BackboneError::UnknownPreset(name.to_string()))
    }

    /// The model name `scripts/export_onnx.py` takes (for the fixtures: the fixture's file stem).
    pub fn export_name(self) -> &'static str {
        self.spec().export_name
    }

    /// Images or text.
    pub fn modality(self) -> Modality {
        self.spec().modality
    }

    /// Input `[height, width]` for image presets; `[1, context_length]` for text presets.
    pub fn input_size(self) -> [usize; 2] {
        self.spec().input_size
    }

    /// Whether [`ImageBackbone::with_input_size`](crate::ImageBackbone::with_input_size) accepts
    /// other sizes than [`input_size`](Self::input_size): true for the convolutional image presets
    /// (global average pooling), false for the ViTs and the text towers.
    pub fn is_resizable(self) -> bool {
        self.spec().resizable
    }

    /// Checks that an image backbone of this preset can take `[height, width]` inputs: the
    /// preset's own size, or for a [resizable](Self::is_resizable) preset any size with both sides
    /// in [`INPUT_SIDE_RANGE`]. Allocates nothing, so configs can be validated before a model is
    /// built.
    ///
    /// # Errors
    /// [`BackboneError::InvalidArgument`], naming the preset and the allowed sizes.
    pub fn check_input_size(self, size: [usize; 2]) -> Result<()> {
        if size == self.input_size() {
            return Ok(());
        }
        if !self.is_resizable() {
            return Err(BackboneError::InvalidArgument(format!(
                "preset `{self}` takes only {:?} inputs{}, not {size:?}",
                self.input_size(),
                match self.modality() {
                    Modality::Image => " (its position embeddings fix the size)",
                    Modality::Text => "",
                }
            )));
        }
        let range = INPUT_SIDE_RANGE;
        if !size.iter().all(|side| range.contains(side)) {
            return Err(BackboneError::InvalidArgument(format!(
                "input size {size:?} for preset `{self}`: each side must be in {}..={}",
                range.start(),
                range.end()
            )));
        }
        Ok(())
    }

    /// The input normalisation the weights were trained with.
    pub fn normalization(self) -> Normalization {
        self.spec().normalization
    }

    /// Logits or an embedding.
    pub fn output_kind(self) -> OutputKind {
        self.spec().output
    }

    /// Size of the output (number of classes, or embedding size).
    pub fn output_dim(self) -> usize {
        self.spec().output_dim
    }

    /// Size of the penultimate features (the linear-probe input).
    pub fn feature_dim(self) -> usize {
        self.spec().feature_dim
    }

    /// Class names for presets that output logits: ImageNet-1k in torchvision order for the
    /// ImageNet presets, ImageNet-21k in timm's (Google's) order for BiT-M (each synset's first
    /// lemma, from timm's `imagenet21k_goog_synsets.txt` and `imagenet_synset_to_lemma.txt`),
    /// `class 0`.. for the tiny fixtures.
    pub fn class_names(self) -> Option<&'static [String]> {
        static IMAGENET: OnceLock<Vec<String>> = OnceLock::new();
        static IMAGENET21K: OnceLock<Vec<String>> = OnceLock::new();
        static TINY: OnceLock<Vec<String>> = OnceLock::new();
        match self {
            Preset::EfficientNetLite0 | Preset::ResNet18 | Preset::ResNet50 | Preset::ResNeXt101_32x8d => {
                Some(IMAGENET.get_or_init(|| {
                    include_str!("imagenet_classes.txt")
                        .lines()
                        .map(String::from)
                        .collect()
                }))
            }
            Preset::BitMR50x1 => Some(IMAGENET21K.get_or_init(|| {
                include_str!("imagenet21k_classes.txt")
                    .lines()
                    .map(String::from)
                    .collect()
            })),
            Preset::TinyResNet | Preset::TinyResNet50 | Preset::TinyResNeXt | Preset::TinyBit => {
                Some(TINY.get_or_init(|| (0..10).map(|i| format!("class {i}")).collect()))
            }
            _ => None,
        }
    }

    /// Whether vprompt embeds this preset's weights (only EfficientNet-Lite0).
    pub fn has_embedded_weights(self) -> bool {
        self == Preset::EfficientNetLite0
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Written by name (`efficientnet-lite0`), as config files spell it.
impl serde::Serialize for Preset {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Read by name; an unknown name is an error listing the presets.
impl<'de> serde::Deserialize<'de> for Preset {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Preset::from_name(&name).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Preset {
    type Err = BackboneError;

    fn from_str(s: &str) -> Result<Self> {
        Preset::from_name(s)
    }
}
