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

use crate::checkpoint::{Format, NativeCheckpoint};

use crate::error::{BackboneError, Result};
use crate::preset::Preset;

/// Burnpack metadata key holding the preset a weights file was written for.
pub const PRESET_KEY: &str = "vprompt.backbone.preset";

/// Burnpack metadata key holding CLIP's logit scale (`exp` of the checkpoint's `logit_scale`),
/// written when a text tower is imported from a checkpoint that has one.
pub const LOGIT_SCALE_KEY: &str = "vprompt.backbone.logit_scale";

/// Where weights come from.
#[derive(Debug, Clone)]
pub enum WeightsFile {
    /// A `.bpk` file on disk.
    Path(PathBuf),
    /// Weights compiled into the binary (the embedded EfficientNet-Lite0), joined into one
    /// buffer and read as a pack (its bytes are shared, so passing it on copies nothing).
    Embedded(Pack),
}

impl WeightsFile {
    fn label(&self) -> PathBuf {
        match self {
            WeightsFile::Path(p) => p.clone(),
            WeightsFile::Embedded(pack) => pack.path().to_path_buf(),
        }
    }
}

/// The weights file a user's `weights` names: a hub name (`hf:ORG/REPO`, feature `hub`) is
/// downloaded and converted when needed; a path is itself.
pub(crate) fn resolve(preset: Preset, weights: &Path) -> Result<PathBuf> {
    #[cfg(feature = "hub")]
    {
        crate::hub::resolve(preset, weights)
    }
    #[cfg(not(feature = "hub"))]
    {
        let _ = preset;
        match weights.to_str() {
            Some(name) if name.starts_with("hf:") => Err(BackboneError::Hub {
                name: name.to_string(),
                reason: "hub names need vprompt built with the `hub` feature (the `vprompt` tool has it \
                         by default); or download the checkpoint and give its path"
                    .into(),
            }),
            _ => Ok(weights.to_path_buf()),
        }
    }
}

/// Loads weights into `model` (a freshly built preset architecture), checking them first.
/// Returns CLIP's logit scale when the weights carry one (a CLIP checkpoint's `logit_scale`, or
/// a weights file imported from one).
pub(crate) fn load_checked<M: Module>(
    model: &mut M,
    source: &WeightsFile,
    preset: Preset,
) -> Result<Option<f32>> {
    let (pack, native_scale) = match source {
        WeightsFile::Path(path) => match crate::checkpoint::detect(path) {
            Ok(format @ (Format::Onnx | Format::Safetensors | Format::PyTorch)) => {
                native_pack(model, path, format, preset)?
            }
            // vprompt's own files, and anything unreadable: Pack::read names the problem.
            _ => Pack::read(path)
                .map_err(|e| match e {
                    PackError::Io { path, source }
                        if source.kind() == std::io::ErrorKind::NotFound
                            && !preset.has_embedded_weights() =>
                    {
                        BackboneError::MissingWeights {
                            preset: preset.name(),
                            export_name: preset.spec().export_name,
                            path,
                        }
                    }
                    e => weights_error(e, preset),
                })
                .map(|pack| (pack, None))?,
        },
        // Embedded weights are vprompt's own, written for their preset.
        WeightsFile::Embedded(pack) => (pack.clone(), None),
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
    let scale = native_scale.or_else(|| pack.metadata(LOGIT_SCALE_KEY).and_then(|s| s.parse().ok()));
    pack.load_into(model, Extra::Refuse)
        .map_err(|e| weights_error(e, preset))?;
    Ok(scale)
}

/// The tensors of a checkpoint in another library's format (safetensors, a PyTorch state dict),
/// computed through the first of the preset's key maps whose keys the checkpoint has, and the
/// checkpoint's CLIP logit scale if the map reads one.
fn native_pack<M: Module>(
    model: &M,
    path: &Path,
    format: Format,
    preset: Preset,
) -> Result<(Pack, Option<f32>)> {
    if format == Format::Onnx {
        return Err(BackboneError::InvalidWeights {
            path: path.to_path_buf(),
            reason: format!(
                "an ONNX file: convert it first with `vprompt import {preset} {} OUT.bpk`",
                path.display()
            ),
        });
    }
    if matches!(
        preset,
        Preset::ClipVitB32Image | Preset::ClipVitB32Text | Preset::TinyVit | Preset::TinyClipText
    ) {
        crate::checkpoint::check_clip_activation(path)?;
    }
    let checkpoint = NativeCheckpoint::read(path)?;
    let maps = crate::keymaps::for_preset(preset);
    let Some(map) = maps.iter().find(|m| m.missing(&checkpoint).is_empty()) else {
        let sources: Vec<&str> = maps.iter().map(|m| m.source.as_str()).collect();
        let closest = maps.iter().min_by_key(|m| m.missing(&checkpoint).len());
        return Err(BackboneError::InvalidWeights {
            path: path.to_path_buf(),
            reason: match closest {
                None => format!("preset `{preset}` reads only vprompt's own weights files and ONNX exports"),
                Some(m) => format!(
                    "not a checkpoint `{preset}` reads (it reads {}); the closest, {}, lacks {}",
                    sources.join(", "),
                    m.source,
                    m.missing(&checkpoint)
                        .iter()
                        .take(5)
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        });
    };
    let shapes = pack::module_tensors(model, Ids::Drop)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let tensors = map
        .apply(&checkpoint, preset, &shapes)?
        .into_iter()
        .map(|(name, t)| pack::f32_tensor(&name, &t.values, &t.shape))
        .collect();
    let pack = Pack::from_tensors(path, tensors).map_err(|e| weights_error(e, preset))?;
    Ok((pack, map.logit_scale(&checkpoint)))
}

/// A weights file's problem as the backbone's error.
pub(crate) fn weights_error(error: PackError, preset: Preset) -> BackboneError {
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
pub(crate) fn save<M: Module>(
    model: &M,
    path: &Path,
    preset: Preset,
    logit_scale: Option<f32>,
) -> Result<(usize, usize)> {
    let tensors = pack::module_tensors(model, Ids::Drop);
    let counts = (tensors.len(), model.num_params());
    let scale = logit_scale.map(|s| s.to_string());
    let mut metadata = vec![(PRESET_KEY, preset.name())];
    metadata.extend(scale.as_deref().map(|s| (LOGIT_SCALE_KEY, s)));
    pack::write(path, tensors, &metadata).map_err(|e| weights_error(e, preset))?;
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
