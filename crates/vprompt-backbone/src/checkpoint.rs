//! Checkpoints as other libraries save them (safetensors, PyTorch state dicts), read and mapped
//! onto a preset's generated tensors.
//!
//! burn-onnx names the generated tensors after graph nodes (`conv2d7.weight`, `linear12.weight`)
//! and the exporter has already rearranged the weights (BatchNorm folded into convolutions, q, k
//! and v stacked, linear weights transposed), so a checkpoint's keys do not name them. A committed
//! [`KeyMap`] per preset and source says how each generated tensor is computed from the
//! checkpoint's ([`Recipe`]); `vprompt-codegen keymap` derives it once, from an export of the same
//! architecture with random weights, by matching values. Loading applies it and names every
//! checkpoint key it needs but does not find, every key it does not use, and every shape that
//! does not fit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BackboneError, Result};
use crate::preset::Preset;

/// The committed key maps of a preset, most common source first (`keymaps/<preset>/<source>.json`).
pub use crate::keymaps::for_preset as key_maps;

/// What a weights file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// vprompt's own weights file (`vprompt import`'s output).
    Burnpack,
    /// An exported ONNX graph (convert it with `vprompt import`).
    Onnx,
    /// A safetensors file (Hugging Face, timm).
    Safetensors,
    /// A PyTorch state dict written by `torch.save` (`.pth`, `.bin`, `.pt`).
    PyTorch,
}

/// The format of `path`, from its content (never its name).
pub fn detect(path: &Path) -> Result<Format> {
    use std::io::Read;
    let io = |source| BackboneError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = [0u8; 512];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let n = file.read(&mut head).map_err(io)?;
    let head = &head[..n];
    let safetensors_header = head
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    // Burnpack's magic number, 0x4255524E little-endian.
    Ok(if head.starts_with(b"NRUB") {
        Format::Burnpack
    } else if safetensors_header.is_some_and(|h| h > 1 && h.checked_add(8).is_some_and(|end| end <= length))
        && head.get(8) == Some(&b'{')
    {
        Format::Safetensors
    } else if head.starts_with(b"PK\x03\x04")
        || head.first() == Some(&0x80)
        || head.get(257..262) == Some(b"ustar")
    {
        Format::PyTorch
    } else if head.first() == Some(&0x08) {
        Format::Onnx
    } else {
        return Err(BackboneError::InvalidWeights {
            path: path.to_path_buf(),
            reason: "not a Burnpack, safetensors, PyTorch or ONNX file".into(),
        });
    })
}

/// A tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major (converted to `f32` from f16, bf16, f64 or integers).
    pub values: Vec<f32>,
    /// Whether the file stored it as a floating-point type (integer buffers such as
    /// `num_batches_tracked` are never weights).
    pub float: bool,
}

/// Every tensor of a safetensors file or a PyTorch state dict, by key.
#[derive(Debug, Clone)]
pub struct NativeCheckpoint {
    path: PathBuf,
    /// The tensors, by key.
    pub tensors: BTreeMap<String, HostTensor>,
}

fn half_to_f32(bits: u16, bf16: bool) -> f32 {
    if bf16 {
        f32::from_bits(u32::from(bits) << 16)
    } else {
        half::f16::from_bits(bits).to_f32()
    }
}

/// Values of raw little-endian bytes of `dtype` (`"F32"`, `"BF16"`, ... as safetensors names them).
fn decode(bytes: &[u8], dtype: &str) -> Option<(Vec<f32>, bool)> {
    let chunks = |n: usize| bytes.chunks_exact(n);
    Some(match dtype {
        "F32" => (
            chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
                .collect(),
            true,
        ),
        "F64" => (
            chunks(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8")) as f32)
                .collect(),
            true,
        ),
        "F16" => (
            chunks(2)
                .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]]), false))
                .collect(),
            true,
        ),
        "BF16" => (
            chunks(2)
                .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]]), true))
                .collect(),
            true,
        ),
        "I64" => (
            chunks(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f32)
                .collect(),
            false,
        ),
        "I32" => (
            chunks(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4")) as f32)
                .collect(),
            false,
        ),
        "U8" | "BOOL" => (bytes.iter().map(|&b| f32::from(b)).collect(), false),
        _ => return None,
    })
}

impl NativeCheckpoint {
    /// Reads a safetensors file or a PyTorch state dict (a `torch.save`d dict of tensors, or one
    /// under a `state_dict` / `model` key). A `module.` prefix on every key (DataParallel) is
    /// dropped.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let invalid = |reason: String| BackboneError::InvalidWeights {
            path: path.to_path_buf(),
            reason,
        };
        let mut tensors = BTreeMap::new();
        match detect(path)? {
            Format::Safetensors => {
                let bytes = std::fs::read(path).map_err(|source| BackboneError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let file = safetensors::SafeTensors::deserialize(&bytes)
                    .map_err(|e| invalid(format!("not a readable safetensors file ({e})")))?;
                for (name, view) in file.iter() {
                    let dtype = format!("{:?}", view.dtype());
                    let (values, float) = decode(view.data(), &dtype).ok_or_else(|| {
                        invalid(format!("tensor `{name}` has the unsupported type {dtype}"))
                    })?;
                    tensors.insert(
                        name.to_string(),
                        HostTensor {
                            shape: view.shape().to_vec(),
                            values,
                            float,
                        },
                    );
                }
            }
            Format::PyTorch => {
                let mut reader = pytorch_reader::PytorchReader::new(path);
                for key in ["state_dict", "model"] {
                    // A state dict nested under a key (`torch.save({"state_dict": ...})`).
                    if (reader.as_ref().is_ok_and(|r| r.is_empty()) || reader.is_err())
                        && let Ok(r) = pytorch_reader::PytorchReader::with_top_level_key(path, key)
                    {
                        reader = Ok(r);
                    }
                }
                let reader =
                    reader.map_err(|e| invalid(format!("not a readable PyTorch state dict ({e})")))?;
                for (name, tensor) in reader.into_tensors() {
                    let dtype = match tensor.dtype() {
                        pytorch_reader::DType::F32 => "F32",
                        pytorch_reader::DType::F64 => "F64",
                        pytorch_reader::DType::F16 => "F16",
                        pytorch_reader::DType::BF16 => "BF16",
                        pytorch_reader::DType::I64 => "I64",
                        pytorch_reader::DType::I32 => "I32",
                        pytorch_reader::DType::U8 | pytorch_reader::DType::Bool => "U8",
                        other => {
                            return Err(invalid(format!(
                                "tensor `{name}` has the unsupported type {other:?}"
                            )));
                        }
                    };
                    let bytes = tensor
                        .read()
                        .map_err(|e| invalid(format!("cannot read tensor `{name}` ({e})")))?;
                    let (values, float) = decode(&bytes, dtype).expect("listed types decode");
                    tensors.insert(
                        name,
                        HostTensor {
                            shape: tensor.shape().to_vec(),
                            values,
                            float,
                        },
                    );
                }
            }
            Format::Burnpack | Format::Onnx => {
                return Err(invalid(
                    "a Burnpack or ONNX file, not a safetensors file or PyTorch state dict".into(),
                ));
            }
        }
        if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with("module.")) {
            tensors = tensors
                .into_iter()
                .map(|(k, v)| (k["module.".len()..].to_string(), v))
                .collect();
        }
        if tensors.is_empty() {
            return Err(invalid("the checkpoint holds no tensors".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How one generated tensor is computed from a checkpoint's tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Recipe {
    /// The key's values, in the generated tensor's shape.
    Key(String),
    /// The transpose of a 2-d tensor (a linear layer's weight: PyTorch `[out, in]`, Burn
    /// `[in, out]`).
    Transposed(String),
    /// The keys' values stacked along their first axis (q, k and v biases stacked into one).
    Concat(Vec<String>),
    /// The keys stacked along their first axis, then transposed (q, k and v weights).
    ConcatTransposed(Vec<String>),
    /// A convolution's weight with a following BatchNorm folded in:
    /// `w[o] * gamma[o] / sqrt(var[o] + eps)`.
    FoldBnWeight {
        /// The convolution's weight.
        conv: String,
        /// The BatchNorm's key prefix (`bn1`: `bn1.weight`, `bn1.bias`, `bn1.running_mean`,
        /// `bn1.running_var`).
        bn: String,
        /// The BatchNorm's epsilon.
        eps: f64,
    },
    /// The bias of a convolution with a BatchNorm folded in:
    /// `(b[o] - mean[o]) * gamma[o] / sqrt(var[o] + eps) + beta[o]` (`b = 0` without a bias).
    FoldBnBias {
        /// The convolution's bias, if it has one.
        conv_bias: Option<String>,
        /// The BatchNorm's key prefix.
        bn: String,
        /// The BatchNorm's epsilon.
        eps: f64,
    },
    /// Values of the architecture itself, not of the checkpoint (a scale baked into the graph).
    Values(Vec<f32>),
    /// A weight-standardised convolution's weight (BiT's `StdConv2d`): each output channel (first
    /// axis) minus its mean, over the square root of its (population) variance plus `eps`.
    Standardized {
        /// The raw weight.
        key: String,
        /// Added to the variance.
        eps: f64,
    },
    /// `len` copies of one value: a constant of the architecture (a normalisation's unit scale).
    Fill {
        /// The value.
        value: f32,
        /// How many.
        len: usize,
    },
    /// A causal attention mask of the architecture: `size x size`, 0 on and below the diagonal,
    /// `above` over it (`None`: minus infinity).
    CausalMask {
        /// Sequence length.
        size: usize,
        /// The value above the diagonal; `None` for minus infinity.
        above: Option<f32>,
    },
}

/// How a preset's generated tensors are read from one library's checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMap {
    /// The library and model whose checkpoints this map reads (`torchvision resnet50`).
    pub source: String,
    /// Every generated tensor's recipe, by the generated name.
    pub tensors: BTreeMap<String, Recipe>,
    /// Checkpoint keys the preset does not use (BatchNorm counters, the other CLIP tower): a key,
    /// a prefix ending in `.` or `*` (`text_model.*`), or a suffix after a leading `*`
    /// (`*.num_batches_tracked`).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// The checkpoint key of CLIP's learned log logit scale (on text towers' maps): zero-shot
    /// logits are `exp(logit_scale) * cos(image, text)`. Read when present, see
    /// [`KeyMap::logit_scale`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_scale: Option<String>,
}

impl Recipe {
    /// The checkpoint keys it reads (a BatchNorm as its four keys).
    pub fn keys(&self) -> Vec<String> {
        let bn = |p: &str| ["weight", "bias", "running_mean", "running_var"].map(|s| format!("{p}.{s}"));
        match self {
            Recipe::Key(k) | Recipe::Transposed(k) | Recipe::Standardized { key: k, .. } => vec![k.clone()],
            Recipe::Concat(ks) | Recipe::ConcatTransposed(ks) => ks.clone(),
            Recipe::FoldBnWeight { conv, bn: p, .. } => std::iter::once(conv.clone()).chain(bn(p)).collect(),
            Recipe::FoldBnBias { conv_bias, bn: p, .. } => conv_bias.iter().cloned().chain(bn(p)).collect(),
            Recipe::Values(_) | Recipe::Fill { .. } | Recipe::CausalMask { .. } => Vec::new(),
        }
    }
}

fn transpose(t: &HostTensor) -> Option<HostTensor> {
    let [rows, cols] = t.shape[..] else { return None };
    let mut values = vec![0.0; t.values.len()];
    for r in 0..rows {
        for c in 0..cols {
            values[c * rows + r] = t.values[r * cols + c];
        }
    }
    Some(HostTensor {
        shape: vec![cols, rows],
        values,
        float: t.float,
    })
}

fn concat(parts: &[&HostTensor]) -> Option<HostTensor> {
    let first = parts.first()?;
    if parts.iter().any(|p| p.shape[1..] != first.shape[1..]) {
        return None;
    }
    let mut shape = first.shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    Some(HostTensor {
        shape,
        values: parts.iter().flat_map(|p| p.values.iter().copied()).collect(),
        float: true,
    })
}

/// The per-output-channel BatchNorm scale `gamma / sqrt(var + eps)` and shift `beta - mean *
/// scale`.
fn bn_affine(tensors: &BTreeMap<String, HostTensor>, prefix: &str, eps: f64) -> Option<(Vec<f64>, Vec<f64>)> {
    let part = |s: &str| tensors.get(&format!("{prefix}.{s}"));
    let (gamma, beta, mean, var) = (
        part("weight")?,
        part("bias")?,
        part("running_mean")?,
        part("running_var")?,
    );
    let scale: Vec<f64> = gamma
        .values
        .iter()
        .zip(&var.values)
        .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
        .collect();
    let shift = beta
        .values
        .iter()
        .zip(&mean.values)
        .zip(&scale)
        .map(|((&b, &m), &s)| b as f64 - m as f64 * s)
        .collect();
    Some((scale, shift))
}

impl Recipe {
    /// Computes the tensor from a checkpoint's `tensors`; `None` names no problem: the caller
    /// reports the missing keys.
    pub fn compute(&self, tensors: &BTreeMap<String, HostTensor>) -> Option<HostTensor> {
        let get = |k: &str| tensors.get(k);
        match self {
            Recipe::Key(k) => get(k).cloned(),
            Recipe::Transposed(k) => transpose(get(k)?),
            Recipe::Concat(ks) => concat(&ks.iter().map(|k| get(k)).collect::<Option<Vec<_>>>()?),
            Recipe::ConcatTransposed(ks) => {
                transpose(&concat(&ks.iter().map(|k| get(k)).collect::<Option<Vec<_>>>()?)?)
            }
            Recipe::FoldBnWeight { conv, bn, eps } => {
                let w = get(conv)?;
                let (scale, _) = bn_affine(tensors, bn, *eps)?;
                let per = w.values.len() / scale.len().max(1);
                (w.shape.first() == Some(&scale.len())).then(|| HostTensor {
                    shape: w.shape.clone(),
                    values: w
                        .values
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| (v as f64 * scale[i / per]) as f32)
                        .collect(),
                    float: true,
                })
            }
            Recipe::FoldBnBias { conv_bias, bn, eps } => {
                let (scale, shift) = bn_affine(tensors, bn, *eps)?;
                let bias = match conv_bias {
                    Some(k) => get(k)?.values.iter().map(|&v| v as f64).collect(),
                    None => vec![0.0; scale.len()],
                };
                (bias.len() == scale.len()).then(|| HostTensor {
                    shape: vec![scale.len()],
                    values: (0..scale.len())
                        .map(|o| (bias[o] * scale[o] + shift[o]) as f32)
                        .collect(),
                    float: true,
                })
            }
            Recipe::Values(v) => Some(HostTensor {
                shape: vec![v.len()],
                values: v.clone(),
                float: true,
            }),
            Recipe::Standardized { key, eps } => {
                let w = get(key)?;
                let outputs = *w.shape.first()?;
                let per = w.values.len() / outputs.max(1);
                let mut values = Vec::with_capacity(w.values.len());
                for channel in w.values.chunks(per) {
                    let mean = channel.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
                    let var = channel.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / per as f64;
                    let std = (var + eps).sqrt();
                    values.extend(channel.iter().map(|&v| ((v as f64 - mean) / std) as f32));
                }
                Some(HostTensor {
                    shape: w.shape.clone(),
                    values,
                    float: true,
                })
            }
            Recipe::Fill { value, len } => Some(HostTensor {
                shape: vec![*len],
                values: vec![*value; *len],
                float: true,
            }),
            Recipe::CausalMask { size, above } => {
                let above = above.unwrap_or(f32::NEG_INFINITY);
                Some(HostTensor {
                    shape: vec![*size, *size],
                    values: (0..size * size)
                        .map(|i| if i % size > i / size { above } else { 0.0 })
                        .collect(),
                    float: true,
                })
            }
        }
    }
}

impl KeyMap {
    /// Whether checkpoint key `key` is one the preset does not use.
    fn ignores(&self, key: &str) -> bool {
        self.ignore.iter().any(|i| {
            if let Some(suffix) = i.strip_prefix('*') {
                key.ends_with(suffix)
            } else if let Some(prefix) = i.strip_suffix('*') {
                key.starts_with(prefix)
            } else if i.ends_with('.') {
                key.starts_with(i.as_str())
            } else {
                key == i
            }
        })
    }

    /// `exp` of the checkpoint's log logit scale, when the map names one and the checkpoint has
    /// it as a single finite value (a text tower saved without the CLIP model around it has none).
    pub fn logit_scale(&self, checkpoint: &NativeCheckpoint) -> Option<f32> {
        let t = checkpoint.tensors.get(self.logit_scale.as_deref()?)?;
        let scale = match t.values[..] {
            [log_scale] => log_scale.exp(),
            _ => return None,
        };
        scale.is_finite().then_some(scale)
    }

    /// The keys the map needs that `checkpoint` lacks.
    pub fn missing(&self, checkpoint: &NativeCheckpoint) -> Vec<String> {
        let needed: BTreeSet<String> = self.tensors.values().flat_map(Recipe::keys).collect();
        needed
            .into_iter()
            .filter(|k| !checkpoint.tensors.contains_key(k))
            .collect()
    }

    /// The generated tensors computed from `checkpoint`, each checked against `shapes` (the
    /// preset's tensors and shapes). Every problem is named: checkpoint keys that are missing,
    /// left unused, or of another shape than the preset needs.
    pub fn apply(
        &self,
        checkpoint: &NativeCheckpoint,
        preset: Preset,
        shapes: &BTreeMap<String, Vec<usize>>,
    ) -> Result<Vec<(String, HostTensor)>> {
        let mut problems: Vec<String> = self
            .missing(checkpoint)
            .into_iter()
            .map(|k| format!("missing tensor `{k}` ({})", self.source))
            .collect();
        let used: BTreeSet<String> = self
            .tensors
            .values()
            .flat_map(Recipe::keys)
            .chain(self.logit_scale.clone())
            .collect();
        problems.extend(
            checkpoint
                .tensors
                .keys()
                .filter(|k| !used.contains(*k) && !self.ignores(k))
                .map(|k| {
                    format!(
                        "unexpected tensor `{k}`: not part of the preset ({})",
                        self.source
                    )
                }),
        );
        for name in shapes.keys().filter(|n| !self.tensors.contains_key(*n)) {
            problems.push(format!("the key map has no recipe for the preset's `{name}`"));
        }
        let mut out = Vec::new();
        if problems.is_empty() {
            for (name, recipe) in &self.tensors {
                let Some(expected) = shapes.get(name) else {
                    problems.push(format!(
                        "the key map names `{name}`, which the preset does not have"
                    ));
                    continue;
                };
                match recipe.compute(&checkpoint.tensors) {
                    Some(mut t) if same_layout(&t.shape, expected) => {
                        t.shape = expected.clone();
                        out.push((name.clone(), t));
                    }
                    Some(t) => problems.push(format!(
                        "{} has shape {:?}, the preset's `{name}` needs {expected:?}",
                        recipe.keys().join(" + "),
                        t.shape
                    )),
                    None => problems.push(format!(
                        "{} do not combine into `{name}` (shapes of another model?)",
                        recipe.keys().join(" + ")
                    )),
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(BackboneError::TensorMismatch {
                path: checkpoint.path.clone(),
                preset: preset.name(),
                problems,
            })
        }
    }
}

/// FNV-1a over a tensor's bits: equal values, equal hash.
fn fingerprint(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        v.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    })
}

/// Whether `a` and `b` agree within a relative `tolerance` of `b`'s largest magnitude.
fn close(a: &[f32], b: &[f64], tolerance: f64) -> bool {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(&x, &y)| (x as f64 - y).abs() <= tolerance * scale)
}

/// `b`'s and `a`'s values agree within a relative `tolerance` of `b`'s largest magnitude.
fn close_f64(a: &[f64], b: &[f64], tolerance: f64) -> bool {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance * scale)
}

/// If `folded` is `weight` with each of its `outputs` channels (first axis) scaled by one factor,
/// those factors.
fn channel_ratios(folded: &[f32], weight: &[f32], outputs: usize) -> Option<Vec<f64>> {
    let per = weight.len() / outputs;
    (0..outputs)
        .map(|o| {
            let (f, w) = (&folded[o * per..(o + 1) * per], &weight[o * per..(o + 1) * per]);
            let (k, _) = w
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
            let ratio = f[k] as f64 / w[k] as f64;
            let expected: Vec<f64> = w.iter().map(|&v| v as f64 * ratio).collect();
            close(f, &expected, 1e-5).then_some(ratio)
        })
        .collect()
}

/// The recipe of `t` if it is a causal attention mask (its last two axes square, 0 on and below
/// the diagonal, one value above it).
fn causal_mask(t: &HostTensor) -> Option<Recipe> {
    let size = *t.shape.last()?;
    if t.shape.len() < 2 || t.shape[t.shape.len() - 2] != size || t.values.len() != size * size || size < 2 {
        return None;
    }
    let above = t.values[1];
    let recipe = Recipe::CausalMask {
        size,
        above: (above != f32::NEG_INFINITY).then_some(above),
    };
    (recipe
        .compute(&BTreeMap::new())?
        .values
        .iter()
        .zip(&t.values)
        .all(|(a, b)| a.to_bits() == b.to_bits()))
    .then_some(recipe)
}

/// Epsilons of weight standardisation (timm's `StdConv2d`: 1e-8 for BiT, 1e-6, 1e-5).
const STANDARDIZATION_EPSILONS: [f64; 3] = [1e-8, 1e-6, 1e-5];

/// Epsilons BatchNorm layers use (PyTorch's default first).
const BN_EPSILONS: [f64; 4] = [1e-5, 1e-3, 1e-4, 1e-6];

/// Derives the key map of a preset from its generated tensors (`generated`, burn-onnx's weights
/// from an export) and a checkpoint of the same weights (`checkpoint`, saved by the library the
/// export came from), by matching values: each generated tensor is a checkpoint tensor itself, its
/// transpose, a stack of several (in equal parts), or a convolution with a BatchNorm folded in;
/// small tensors that match nothing are constants of the architecture. Checkpoint keys that no
/// recipe reads must match `ignore` (integer buffers are ignored on their own). Every tensor that
/// cannot be derived, and every unused key, is named in the error.
pub fn derive(
    source: &str,
    generated: &BTreeMap<String, HostTensor>,
    checkpoint: &NativeCheckpoint,
    ignore: &[String],
) -> std::result::Result<KeyMap, String> {
    let floats: Vec<(&String, &HostTensor)> = checkpoint.tensors.iter().filter(|(_, t)| t.float).collect();
    let mut by_value: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
    for (key, t) in &floats {
        by_value.entry(fingerprint(&t.values)).or_default().push(key);
    }
    let find = |values: &[f32]| -> Option<String> {
        let keys = by_value.get(&fingerprint(values))?;
        keys.iter()
            .find(|k| checkpoint.tensors[k.as_str()].values == values)
            .map(|k| (*k).clone())
    };
    // Equal parts along the first axis, each a checkpoint tensor.
    let parts = |t: &HostTensor| -> Option<Vec<String>> {
        let rows = *t.shape.first()?;
        (2..=4).filter(|k| rows % k == 0).find_map(|k| {
            let chunk = t.values.len() / k;
            t.values.chunks(chunk).map(&find).collect::<Option<Vec<_>>>()
        })
    };
    let bn_prefixes: Vec<&str> = checkpoint
        .tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".running_var"))
        .collect();
    let tensors = &checkpoint.tensors;
    let mut map = KeyMap {
        source: source.to_string(),
        tensors: BTreeMap::new(),
        ignore: ignore.to_vec(),
        // CLIP's scale is not a tensor of the towers; a map reads it unless told to ignore it.
        logit_scale: None,
    };
    if checkpoint.tensors.contains_key("logit_scale") && !map.ignores("logit_scale") {
        map.logit_scale = Some("logit_scale".to_string());
    }
    let mut failed = Vec::new();
    for (name, t) in generated {
        let recipe = if let Some(k) = find(&t.values) {
            Some(Recipe::Key(k))
        } else if let Some(k) = transpose(t).and_then(|tt| find(&tt.values)) {
            Some(Recipe::Transposed(k))
        } else if let Some(ks) = transpose(t).and_then(|tt| parts(&tt)) {
            Some(Recipe::ConcatTransposed(ks))
        } else {
            parts(t).map(Recipe::Concat)
        };
        let recipe = recipe.or_else(|| {
            // A convolution with a BatchNorm folded in: the same shape as a checkpoint weight, one
            // scale per output channel, and a BatchNorm with exactly those scales.
            let outputs = *t.shape.first()?;
            let candidates = floats
                .iter()
                .filter(|(_, c)| c.shape == t.shape && t.shape.len() >= 2);
            for (conv, c) in candidates {
                let Some(ratios) = channel_ratios(&t.values, &c.values, outputs) else {
                    continue;
                };
                for bn in &bn_prefixes {
                    for eps in BN_EPSILONS {
                        let matches = bn_affine(tensors, bn, eps)
                            .is_some_and(|(scale, _)| close_f64(&scale, &ratios, 1e-5));
                        if matches {
                            return Some(Recipe::FoldBnWeight {
                                conv: (*conv).clone(),
                                bn: bn.to_string(),
                                eps,
                            });
                        }
                    }
                }
            }
            None
        });
        let recipe = recipe.or_else(|| {
            // The bias of a convolution (without one of its own) with a BatchNorm folded in.
            let [outputs] = t.shape[..] else { return None };
            bn_prefixes.iter().find_map(|bn| {
                BN_EPSILONS.into_iter().find_map(|eps| {
                    let recipe = Recipe::FoldBnBias {
                        conv_bias: None,
                        bn: bn.to_string(),
                        eps,
                    };
                    let f = recipe.compute(tensors)?;
                    (f.values.len() == outputs
                        && close(
                            &t.values,
                            &f.values.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                            1e-5,
                        ))
                    .then_some(recipe)
                })
            })
        });
        let recipe = recipe.or_else(|| {
            // A weight-standardised convolution (BiT): a checkpoint weight of the same shape,
            // standardised per output channel.
            floats
                .iter()
                .filter(|(_, c)| c.shape == t.shape && t.shape.len() == 4)
                .find_map(|(key, _)| {
                    STANDARDIZATION_EPSILONS.into_iter().find_map(|eps| {
                        let recipe = Recipe::Standardized {
                            key: (*key).clone(),
                            eps,
                        };
                        let f = recipe.compute(tensors)?;
                        close(
                            &t.values,
                            &f.values.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                            1e-4,
                        )
                        .then_some(recipe)
                    })
                })
        });
        let recipe = recipe
            .or_else(|| causal_mask(t))
            .or_else(|| {
                let first = *t.values.first()?;
                t.values
                    .iter()
                    .all(|v| v.to_bits() == first.to_bits())
                    .then_some(Recipe::Fill {
                        value: first,
                        len: t.values.len(),
                    })
            })
            .or_else(|| (t.values.len() <= 16).then(|| Recipe::Values(t.values.clone())));
        match recipe {
            Some(r) => {
                map.tensors.insert(name.clone(), r);
            }
            None => failed.push(format!("`{name}` {:?} matches no checkpoint tensor", t.shape)),
        }
    }
    let used: BTreeSet<String> = map.tensors.values().flat_map(Recipe::keys).collect();
    let mut counters = BTreeSet::new();
    for (key, t) in &checkpoint.tensors {
        if used.contains(key) || map.ignores(key) {
            continue;
        }
        if t.float {
            failed.push(format!(
                "checkpoint tensor `{key}` {:?} is used by no generated tensor",
                t.shape
            ));
        } else {
            // Integer buffers (BatchNorm's counters), by their last name.
            counters.insert(format!("*.{}", key.rsplit('.').next().unwrap_or(key)));
        }
    }
    map.ignore.extend(counters);
    if failed.is_empty() {
        Ok(map)
    } else {
        Err(failed.join("\n"))
    }
}

/// Refuses a CLIP checkpoint whose own config names another activation than QuickGELU.
///
/// vprompt's CLIP presets are OpenAI's architecture, whose MLPs use QuickGELU. A checkpoint stores
/// no activation: LAION's ViT-B-32 weights, for one, have exactly OpenAI's tensors but were trained
/// with GELU, and would load and compute wrong values. So the config file its library saves beside
/// it is read when there is one: transformers' `config.json` (`vision_config` / `text_config`
/// `hidden_act`, `quick_gelu`) and open_clip's `open_clip_config.json` (`model_cfg.quick_gelu`,
/// true). Without such a file the checkpoint is taken as OpenAI's.
pub fn check_clip_activation(checkpoint: &Path) -> Result<()> {
    let Some(dir) = checkpoint.parent() else {
        return Ok(());
    };
    /// The fields read from transformers' `config.json` and open_clip's `open_clip_config.json`
    /// (every other field is ignored; a file that does not parse as these is not checked).
    #[derive(Deserialize, Default)]
    struct Tower {
        hidden_act: Option<String>,
    }
    #[derive(Deserialize)]
    struct TransformersConfig {
        #[serde(default)]
        vision_config: Tower,
        #[serde(default)]
        text_config: Tower,
    }
    #[derive(Deserialize, Default)]
    struct ModelCfg {
        quick_gelu: Option<bool>,
    }
    #[derive(Deserialize)]
    struct OpenClipConfig {
        #[serde(default)]
        model_cfg: ModelCfg,
    }
    fn read<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Option<(PathBuf, T)> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).ok()?;
        Some((path, serde_json::from_str(&text).ok()?))
    }
    let refuse = |config: &Path, found: String| BackboneError::InvalidWeights {
        path: checkpoint.to_path_buf(),
        reason: format!(
            "its config {} says {found}, but vprompt's CLIP presets are OpenAI's architecture with \
             QuickGELU (the same tensors would compute other values)",
            config.display()
        ),
    };
    if let Some((path, config)) = read::<TransformersConfig>(dir, "config.json") {
        for (tower, config) in [
            ("vision_config", config.vision_config),
            ("text_config", config.text_config),
        ] {
            if let Some(act) = config.hidden_act
                && act != "quick_gelu"
            {
                return Err(refuse(&path, format!("{tower}.hidden_act = \"{act}\"")));
            }
        }
    }
    if let Some((path, config)) = read::<OpenClipConfig>(dir, "open_clip_config.json")
        && config.model_cfg.quick_gelu != Some(true)
    {
        return Err(refuse(&path, "model_cfg.quick_gelu is not true (GELU)".into()));
    }
    Ok(())
}

/// Whether a checkpoint tensor of shape `stored` holds the preset's `expected` tensor in the same
/// row-major order: the same shape once axes of size 1 are dropped (a bias `[C]` for `[1, C, 1,
/// 1]`), or one whose adjacent axes are merged or split (a convolution's `[O, I, 3, 3]` for the
/// standardised `[1, O, 9I]`). Never merely as many values: a transposed `[128, 10]` read as
/// `[10, 128]` would load as scrambled weights.
pub(crate) fn same_layout(stored: &[usize], expected: &[usize]) -> bool {
    let squeezed = |shape: &[usize]| shape.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    let (a, b) = (squeezed(stored), squeezed(expected));
    if a.iter().product::<usize>() != b.iter().product::<usize>() {
        return false;
    }
    // One shape refines the other when every boundary between the coarser one's axes (a prefix
    // product) is also a boundary of the finer one's.
    let cuts = |shape: &[usize]| -> Vec<usize> {
        shape
            .iter()
            .scan(1usize, |p, &d| {
                *p *= d;
                Some(*p)
            })
            .collect()
    };
    let (ca, cb) = (cuts(&a), cuts(&b));
    ca.iter().all(|c| cb.contains(c)) || cb.iter().all(|c| ca.contains(c))
}

#[cfg(test)]
mod tests {
    use super::same_layout;

    #[test]
    fn a_tensor_loads_only_in_its_own_layout() {
        // Exactly, with axes of size 1, merged or split adjacent axes.
        assert!(same_layout(&[10, 128], &[10, 128]));
        assert!(same_layout(&[64], &[1, 64, 1, 1]));
        assert!(same_layout(&[32, 32, 3, 3], &[1, 32, 288]));
        assert!(same_layout(&[768], &[1, 1, 768]));
        // The same count in another order: transposed or regrouped.
        assert!(!same_layout(&[128, 10, 1, 1], &[10, 128, 1, 1]));
        assert!(!same_layout(&[6, 4], &[4, 6]));
        assert!(!same_layout(&[2, 6], &[3, 4]));
        assert!(!same_layout(&[2, 3], &[7]));
    }
}
