//! Converting another library's checkpoint (a safetensors file or a PyTorch state dict) into a
//! preset's weights file, with no Python step: the committed key map of the preset for that
//! library says how each generated tensor is read (see [`checkpoint`](crate::checkpoint)).

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::checkpoint::{self, Format};
use crate::error::{BackboneError, Result};
use crate::generated::AnyModel;
use crate::preset::Preset;
use crate::weights::WeightsFile;

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The preset the weights belong to.
    pub preset: Preset,
    /// Number of tensors written.
    pub tensors: usize,
    /// Number of values written.
    pub values: usize,
    /// The weights file.
    pub output: PathBuf,
}

/// Converts a native checkpoint of `preset` (detected by content: safetensors, or a PyTorch
/// state dict from `torch.save`) into a `.bpk` weights file at `output`.
///
/// The checkpoint is read through the first of the preset's key maps whose keys it has (for
/// CLIP: transformers' `CLIPModel` or open_clip); a missing, unused or mis-shaped tensor is an
/// error naming it, and nothing is written then. A CLIP text tower's file keeps the checkpoint's
/// logit scale ([`TextEncoder::logit_scale`](crate::TextEncoder::logit_scale)). Loading the
/// checkpoint directly with [`ImageBackbone::load`](crate::ImageBackbone::load) or
/// [`TextEncoder::load`](crate::TextEncoder::load) does the same conversion in memory; the file
/// saves repeating it.
///
/// # Errors
/// [`BackboneError::InvalidWeights`] for an ONNX file (use `import::import_weights`, feature
/// `import`) or a file of another format; [`BackboneError::TensorMismatch`] naming every tensor
/// that does not fit; [`BackboneError::Io`] when a file cannot be read or written.
pub fn convert_checkpoint(preset: Preset, checkpoint: &Path, output: &Path) -> Result<ImportReport> {
    match checkpoint::detect(checkpoint)? {
        Format::Safetensors | Format::PyTorch => {}
        Format::Onnx | Format::Burnpack => {
            return Err(BackboneError::InvalidWeights {
                path: checkpoint.to_path_buf(),
                reason: "not a safetensors file or PyTorch state dict (ONNX exports are converted by \
                         `vprompt import`; a .bpk file is already vprompt's)"
                    .into(),
            });
        }
    }
    load_and_save(preset, &WeightsFile::Path(checkpoint.to_path_buf()), output)
}

/// Loads `source` into `preset`'s architecture with every check, then writes it as a `.bpk` file.
pub(crate) fn load_and_save(preset: Preset, source: &WeightsFile, output: &Path) -> Result<ImportReport> {
    let model = AnyModel::load(preset, source, &host_device())?;
    let (tensors, values) = model.save(output, preset)?;
    Ok(ImportReport {
        preset,
        tensors,
        values,
        output: output.to_path_buf(),
    })
}

/// Where a conversion holds the model: the CPU backend compiled in (weights only pass through).
fn host_device() -> Device {
    #[cfg(feature = "flex")]
    {
        Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        Device::default()
    }
}
