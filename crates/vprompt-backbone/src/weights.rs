//! Loading a preset's weights with every check done before a tensor is trusted: the file exists
//! and is a Burnpack file, it was written for this preset, and it holds exactly the preset's
//! tensors with the preset's shapes. burn-onnx's own loader panics on missing tensors and
//! ignores extra ones; here both are typed errors naming the tensors.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};
use vprompt_core::pack::{self, Extra, Ids, Pack, PackError};

use crate::error::{BackboneError, Result};
use crate::preset::Preset;

/// Burnpack metadata key holding the preset a weights file was written for.
pub const PRESET_KEY: &str = "vprompt.backbone.preset";

/// Where weights come from.
#[derive(Debug, Clone)]
pub enum WeightsFile {
    /// A `.bpk` file on disk.
    Path(PathBuf),
    /// Weights compiled into the binary (the embedded EfficientNet-Lite0).
    Static(&'static [u8]),
}

impl WeightsFile {
    fn label(&self) -> PathBuf {
        match self {
            WeightsFile::Path(p) => p.clone(),
            WeightsFile::Static(_) => PathBuf::from("<embedded weights>"),
        }
    }
}

/// Loads weights into `model` (a freshly built preset architecture), checking them first.
pub(crate) fn load_checked<M: Module>(model: &mut M, source: &WeightsFile, preset: Preset) -> Result<()> {
    let pack = match source {
        WeightsFile::Path(path) => Pack::read(path).map_err(|e| match e {
            PackError::Io { path, source }
                if source.kind() == std::io::ErrorKind::NotFound && !preset.has_embedded_weights() =>
            {
                BackboneError::MissingWeights {
                    preset: preset.name(),
                    export_name: preset.spec().export_name,
                    path,
                }
            }
            e => weights_error(e, preset),
        })?,
        // Embedded weights are vprompt's own, written for their preset.
        WeightsFile::Static(bytes) => Pack::embedded(source.label(), bytes),
    };
    if let Some(found) = pack.metadata(PRESET_KEY)
        && found != preset.name()
    {
        return Err(BackboneError::WrongModel {
            path: source.label(),
            expected: preset.name(),
            found: found.to_string(),
        });
    }
    pack.load_into(model, Extra::Refuse)
        .map_err(|e| weights_error(e, preset))
}

/// A weights file's problem as the backbone's error.
fn weights_error(error: PackError, preset: Preset) -> BackboneError {
    match error {
        PackError::Io { path, source } => BackboneError::Io { path, source },
        PackError::Invalid { path, reason } => BackboneError::InvalidWeights { path, reason },
        PackError::Tensors { path, problems } => BackboneError::TensorMismatch {
            path,
            preset: preset.name(),
            problems,
        },
    }
}

/// Writes `model`'s tensors to `path` with the preset's name in the metadata, through a temporary
/// file and a rename. Parameter ids (random per process) are left out, so the same weights always
/// give the same bytes and a committed file's sha256 can be checked. Returns the number of tensors
/// and of values written.
pub(crate) fn save<M: Module>(model: &M, path: &Path, preset: Preset) -> Result<(usize, usize)> {
    let tensors = pack::module_tensors(model, Ids::Drop);
    let counts = (tensors.len(), model.num_params());
    pack::write(path, tensors, &[(PRESET_KEY, preset.name())]).map_err(|e| weights_error(e, preset))?;
    Ok(counts)
}

/// Replaces every float parameter by seeded normal draws `N(0, std^2)`, drawn on the host so that
/// the same seed gives the same weights on every backend and in every thread.
pub(crate) fn randomize<M: Module>(model: M, seed: u64, std: f64, device: &Device) -> Result<M> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(BackboneError::InvalidArgument(format!(
            "random weights need a finite std >= 0, got {std}"
        )));
    }
    let normal = Normal::new(0.0, std).expect("checked above");
    struct Randomizer {
        rng: StdRng,
        normal: Normal<f64>,
        device: Device,
    }
    impl ModuleMapper for Randomizer {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let shape = param.val().shape();
            let values: Vec<f32> = (0..shape.num_elements())
                .map(|_| self.normal.sample(&mut self.rng) as f32)
                .collect();
            let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), &self.device);
            param.map(|_| tensor)
        }
    }
    Ok(model.map(&mut Randomizer {
        rng: StdRng::seed_from_u64(seed),
        normal,
        device: device.clone(),
    }))
}
