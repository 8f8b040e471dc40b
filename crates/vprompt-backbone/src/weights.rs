//! Loading a preset's weights with every check done before a tensor is trusted: the file exists
//! and is a Burnpack file, it was written for this preset, and it holds exactly the preset's
//! tensors with the preset's shapes. burn-onnx's own loader panics on missing tensors and
//! ignores extra ones; here both are typed errors naming the tensors.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn_store::burn_pack::{Reader, Writer};
use burn_store::{BurnpackStore, ModuleSnapshot};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};

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
    let label = source.label();
    let invalid = |reason: String| BackboneError::InvalidWeights {
        path: label.clone(),
        reason,
    };
    let store = match source {
        WeightsFile::Path(path) => {
            std::fs::metadata(path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound if !preset.has_embedded_weights() => {
                    BackboneError::MissingWeights {
                        preset: preset.name(),
                        export_name: preset.spec().export_name,
                        path: path.clone(),
                    }
                }
                _ => BackboneError::Io {
                    path: path.clone(),
                    source,
                },
            })?;
            let reader = Reader::from_file_exact(path).map_err(|e| invalid(e.to_string()))?;
            if let Some(found) = reader.metadata().get(PRESET_KEY)
                && found != preset.name()
            {
                return Err(BackboneError::WrongModel {
                    path: label,
                    expected: preset.name(),
                    found: found.clone(),
                });
            }
            // Read the whole file now rather than through a lazily-reading file store: on an
            // asynchronous backend (wgpu) the lazy reads ran after loading had returned, so a
            // file replaced or deleted meanwhile broke the model later (found by the wgpu tests
            // of `Prompt::load`, which had the same pattern). Costs one transient copy of the file.
            let bytes = std::fs::read(path).map_err(|source| BackboneError::Io {
                path: path.clone(),
                source,
            })?;
            BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(bytes)))
        }
        // Embedded weights are vprompt's own, written for their preset.
        WeightsFile::Static(bytes) => BurnpackStore::from_static(bytes),
    };
    let applied = model
        .load_from(&mut store.allow_partial(true))
        .map_err(|e| invalid(e.to_string()))?;
    let mut problems: Vec<String> = applied
        .missing
        .iter()
        .map(|(name, _)| format!("missing tensor `{name}`"))
        .collect();
    problems.extend(applied.errors.iter().map(ToString::to_string));
    problems.extend(
        applied
            .unused
            .iter()
            .map(|name| format!("unexpected tensor `{name}`")),
    );
    if !problems.is_empty() {
        return Err(BackboneError::TensorMismatch {
            path: label,
            preset: preset.name(),
            problems,
        });
    }
    Ok(())
}

/// Writes `model`'s tensors to `path` with the preset's name in the metadata, through a temporary
/// file and a rename. Parameter ids (random per process) are left out, so the same weights always
/// give the same bytes and a committed file's sha256 can be checked. Returns the number of tensors
/// and of values written.
pub(crate) fn save<M: Module>(model: &M, path: &Path, preset: Preset) -> Result<(usize, usize)> {
    let mut snapshots = model.collect(None, None, false);
    for tensor in &mut snapshots {
        tensor.param_id = None;
    }
    let tensors = snapshots.len();
    let values = model.num_params();
    Writer::new(snapshots)
        .with_metadata(PRESET_KEY, preset.name())
        .auto_extension(false)
        .overwrite(true)
        .write_to_file(path)
        .map_err(|e| BackboneError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok((tensors, values))
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
