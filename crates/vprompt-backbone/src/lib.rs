//! Frozen pretrained backbones for visual prompting, imported from ONNX.
//!
//! # Feature flags
//! - `flex` (default), `wgpu`, `cuda`, `cpu`: backends, forwarded to burn.
//! - `import`: ONNX conversion with burn-onnx ([`import::import_weights`], [`import::generate`]),
//!   used by `vprompt import` and `vprompt-codegen`. Loading weights does not need it.
//! - `hub`: weights named on the Hugging Face Hub, `hf:ORG/REPO[/FILE][@REVISION]`, wherever a
//!   weights path is taken ([`hub`]): downloaded once into the Hugging Face cache, converted once,
//!   offline afterwards.
//!
//! # Presets
//! The architectures are generated once from ONNX exports by burn-onnx and committed as code
//! (plain Burn modules, so gradients reach the input). Weights come at run time: EfficientNet-Lite0's
//! ImageNet weights are embedded ([`ImageBackbone::efficientnet_lite0`]); ResNet-50, ResNeXt-101
//! 32x8d, BiT-M R50x1 and CLIP ViT-B/32 load straight from the checkpoints their libraries publish
//! (torchvision `.pth`, timm and Hugging Face `.safetensors`, open_clip `.bin`):
//! [`ImageBackbone::load`] and [`TextEncoder::load`] detect the format by content and read it
//! through the preset's committed key map ([`checkpoint`]), and [`convert_checkpoint`] (`vprompt
//! import`) writes the result once as a `.bpk` file. Any other architecture comes as an ONNX
//! export (`scripts/export_onnx.py`), which `vprompt import` checks is the preset's graph before
//! writing a weights file. See [`Preset`].
//!
//! The generated convolutions (depthwise and dense), max pooling and ReLU6 layers call
//! [`kernels`] (the `vprompt-kernels` crate): on `flex` these are Burn backend extensions with
//! their own forward and input-gradient kernels (the same values, faster), on every other backend
//! the plain Burn operations.
//!
//! ```
//! use burn::prelude::*;
//! use vprompt_backbone::{Backbone, ImageBackbone};
//!
//! let device = Device::flex();
//! let backbone = ImageBackbone::efficientnet_lite0(&device)?;
//! assert_eq!(backbone.input_size(), [224, 224]);
//! let pixels = Tensor::<4>::full([1, 3, 224, 224], 0.5, &device);
//! let logits = backbone.forward(pixels)?; // normalises, then runs the frozen model
//! assert_eq!(logits.dims(), [1, 1000]);
//! # Ok::<(), vprompt_backbone::BackboneError>(())
//! ```

mod backbone;
pub mod checkpoint;
mod convert;
mod error;
mod generated;
#[cfg(feature = "hub")]
pub mod hub;
mod image;
mod keymaps;
mod normalization;
mod preset;
mod text;
mod weights;

pub use vprompt_kernels as kernels;

#[cfg(feature = "import")]
pub mod import;

pub use backbone::{Backbone, check_image_input};
pub use convert::{ImportReport, convert_checkpoint};
pub use error::{BackboneError, Result};
pub use image::{ImageBackbone, efficientnet_lite0_weights};
pub use normalization::Normalization;
pub use preset::{INPUT_SIDE_RANGE, Modality, OutputKind, Preset};
pub use text::{CLIP_LOGIT_SCALE, TextEncoder};
pub use weights::{LOGIT_SCALE_KEY, PRESET_KEY, WeightsFile};
