//! Burnpack (`.bpk`) files with a header: the one file format vprompt writes, for prompts,
//! mappings, linear probes and backbone weights.
//!
//! A pack holds named tensors and string metadata. vprompt puts a header under one metadata key
//! (a JSON object with a `format_version` for prompts, mappings and probes; the preset's name for
//! weights), so a file says what it is before any tensor is trusted. Reading checks, in order:
//! the file exists and is readable ([`PackError::Io`]), it is a Burnpack file, the header is there
//! and of a supported version ([`PackError::Invalid`]), and, when tensors are loaded into a
//! module, that every tensor is present with the module's shape and, unless allowed, that no
//! tensor is left over ([`PackError::Tensors`]). Writing replaces the file through a temporary file
//! and a rename, so an interrupted save never leaves a truncated file.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Bytes;
use burn_store::burn_pack::{Reader, Tensor as PackTensor, Writer};
use burn_store::{BurnpackStore, ModuleSnapshot};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reading or writing a pack failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a Burnpack file, or its header is missing, unreadable or of another version.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Tensors are missing, mis-shaped or (where refused) left over.
    #[error("{path}: {}", problems.join("; "))]
    Tensors {
        /// The file.
        path: PathBuf,
        /// One line per tensor.
        problems: Vec<String>,
    },
}

/// `Result` with [`PackError`].
pub type Result<T, E = PackError> = std::result::Result<T, E>;

/// Tensors the file has that the module does not: an error, or allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// Every tensor of the file must belong to the module.
    Refuse,
    /// Tensors the module does not have are ignored.
    Ignore,
}

/// A pack read into memory (all of it, once: a lazily read file breaks on asynchronous backends
/// such as wgpu when the file is replaced between loading and first use).
#[derive(Debug, Clone)]
pub struct Pack {
    path: PathBuf,
    source: Source,
    metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
enum Source {
    Bytes(Bytes),
}

#[derive(serde::Deserialize)]
struct Version {
    format_version: u32,
}

impl Pack {
    /// Reads the file at `path` and checks that it is a Burnpack file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| PackError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_bytes(path, bytes)
    }

    /// A Burnpack file's content held in memory (embedded weights joined from parts), checked as
    /// [`read`](Self::read) checks a file; `label` names it in messages.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        let path = label.into();
        let bytes = Bytes::from_bytes_vec(bytes).shared();
        let reader = Reader::from_bytes(bytes.clone()).map_err(|e| PackError::Invalid {
            path: path.clone(),
            reason: format!("not a Burnpack file ({e})"),
        })?;
        Ok(Self {
            metadata: reader.metadata().clone(),
            path,
            source: Source::Bytes(bytes),
        })
    }

    /// A pack of `tensors` built in memory (weights converted from another format); `label`
    /// stands for the path in errors.
    pub fn from_tensors(label: impl Into<PathBuf>, tensors: Vec<PackTensor>) -> Result<Self> {
        let path = label.into();
        let bytes = Writer::new(tensors)
            .into_bytes()
            .map_err(|e| PackError::Invalid {
                path: path.clone(),
                reason: format!("cannot assemble the tensors ({e})"),
            })?;
        Ok(Self {
            path,
            source: Source::Bytes(bytes.shared()),
            metadata: Default::default(),
        })
    }

    /// The file (or the embedded pack's label).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata value under `key`, if any.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    fn invalid(&self, reason: String) -> PackError {
        PackError::Invalid {
            path: self.path.clone(),
            reason,
        }
    }

    /// The JSON header under `key`, written by [`write`] with `format_version` = `version`.
    pub fn header<H: DeserializeOwned>(&self, key: &str, version: u32) -> Result<H> {
        let text = self
            .metadata(key)
            .ok_or_else(|| self.invalid(format!("no `{key}` metadata: not written by vprompt")))?;
        let unreadable = |e: serde_json::Error| self.invalid(format!("unreadable `{key}` header: {e}"));
        let found = serde_json::from_str::<Version>(text).map_err(unreadable)?;
        if found.format_version != version {
            return Err(self.invalid(format!(
                "format version {} is not supported (this vprompt reads version {version})",
                found.format_version
            )));
        }
        serde_json::from_str(text).map_err(unreadable)
    }

    /// Loads the pack's tensors into `module` (built with the right structure), checking that each
    /// of the module's tensors is present with its shape and, with [`Extra::Refuse`], that the pack
    /// holds nothing else.
    pub fn load_into<M: Module>(&self, module: &mut M, extra: Extra) -> Result<()> {
        let mut problems = self.shape_and_value_problems(module)?;
        if !problems.is_empty() {
            return Err(PackError::Tensors {
                path: self.path.clone(),
                problems,
            });
        }
        let Source::Bytes(bytes) = &self.source;
        let store = BurnpackStore::from_bytes(Some(bytes.clone()));
        let applied = module
            .load_from(&mut store.allow_partial(true))
            .map_err(|e| self.invalid(format!("cannot read tensors ({e})")))?;
        problems.extend(
            applied
                .missing
                .iter()
                .map(|(name, _)| format!("missing tensor `{name}`")),
        );
        problems.extend(applied.errors.iter().map(ToString::to_string));
        if extra == Extra::Refuse {
            problems.extend(
                applied
                    .unused
                    .iter()
                    .map(|name| format!("unexpected tensor `{name}`")),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PackError::Tensors {
                path: self.path.clone(),
                problems,
            })
        }
    }

    /// Before any tensor is loaded into `module`: each stored tensor the module has must have
    /// exactly the module's shape, never merely as many values (a transposed `[128, 10]` read as
    /// `[10, 128]` would load as scrambled weights), and no value may be NaN, nor infinite but in
    /// a graph constant (an attention mask's `-inf`).
    fn shape_and_value_problems<M: Module>(&self, module: &M) -> Result<Vec<String>> {
        let expected: std::collections::HashMap<String, Vec<usize>> = module_tensors(module, Ids::Drop)
            .into_iter()
            .map(|t| (t.name.clone(), t.shape.to_vec()))
            .collect();
        let mut problems = Vec::new();
        for tensor in self.tensors()? {
            let stored = tensor.shape.to_vec();
            if let Some(wanted) = expected.get(&tensor.name)
                && stored != *wanted
            {
                problems.push(format!(
                    "tensor `{}` is {stored:?} in the file, the model's is {wanted:?}",
                    tensor.name
                ));
                continue;
            }
            // Graph constants (burn-onnx names them `constant*`) may hold infinities: an
            // attention mask's `-inf`. Learned weights never do, and nothing holds NaN.
            let infinities_allowed = tensor.name.starts_with("constant");
            let bad = |v: f64| v.is_nan() || (v.is_infinite() && !infinities_allowed);
            let found = match tensor.dtype {
                burn::tensor::DType::F32 => {
                    let bytes = tensor.to_bytes().map_err(|e| self.invalid(e.to_string()))?;
                    bytes
                        .chunks_exact(4)
                        .any(|b| bad(f32::from_le_bytes(b.try_into().expect("4 bytes")).into()))
                }
                burn::tensor::DType::F64 => {
                    let bytes = tensor.to_bytes().map_err(|e| self.invalid(e.to_string()))?;
                    bytes
                        .chunks_exact(8)
                        .any(|b| bad(f64::from_le_bytes(b.try_into().expect("8 bytes"))))
                }
                _ => false,
            };
            if found {
                problems.push(format!(
                    "tensor `{}` holds values that are not finite (NaN or infinite)",
                    tensor.name
                ));
            }
        }
        Ok(problems)
    }

    /// The pack's tensors, by name.
    pub fn tensors(&self) -> Result<Vec<PackTensor>> {
        let Source::Bytes(bytes) = &self.source;
        Reader::from_bytes(bytes.clone())
            .and_then(Reader::into_tensors)
            .map_err(|e| self.invalid(format!("cannot read tensors ({e})")))
    }

    /// The `f32` values and shape of tensor `name`.
    pub fn f32_tensor(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let tensor = self
            .tensors()?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| self.invalid(format!("no `{name}` tensor")))?;
        let dims = tensor.shape.to_vec();
        if tensor.dtype != burn::tensor::DType::F32 {
            return Err(self.invalid(format!("`{name}` is {:?} {dims:?}, expected f32", tensor.dtype)));
        }
        let bytes = tensor.to_bytes().map_err(|e| self.invalid(e.to_string()))?;
        if bytes.len() != 4 * dims.iter().product::<usize>() {
            return Err(self.invalid(format!("`{name}` is cut short")));
        }
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Ok((values, dims))
    }
}

/// Whether a module's parameter ids are written with its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// Kept: loading gives the parameters their saved ids, which an optimiser's saved state is
    /// keyed by (prompts and probes in checkpoints).
    Keep,
    /// Left out: Burn draws ids at random per process, so without them the same values always
    /// give the same bytes (weights files with a checked sha256).
    Drop,
}

/// The tensors of `module`, named by their paths, ready for [`write`].
pub fn module_tensors<M: Module>(module: &M, ids: Ids) -> Vec<PackTensor> {
    let mut tensors = module.collect(None, None, false);
    if ids == Ids::Drop {
        for tensor in &mut tensors {
            tensor.param_id = None;
        }
    }
    tensors
}

/// An `f32` tensor named `name` with `shape`, ready for [`write`].
pub fn f32_tensor(name: &str, values: &[f32], shape: &[usize]) -> PackTensor {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    PackTensor::new(
        name.into(),
        burn::tensor::DType::F32,
        shape.to_vec(),
        None,
        Bytes::from_bytes_vec(bytes),
    )
}

/// A versioned JSON header: `{"format_version": version, ...header's fields}`.
pub fn json_header<H: Serialize>(version: u32, header: &H) -> String {
    #[derive(Serialize)]
    struct Versioned<'a, H> {
        format_version: u32,
        #[serde(flatten)]
        header: &'a H,
    }
    serde_json::to_string(&Versioned {
        format_version: version,
        header,
    })
    .expect("headers serialise")
}

/// Writes `tensors` and `metadata` to `path` (replacing it through a temporary file and a rename).
pub fn write(path: impl AsRef<Path>, tensors: Vec<PackTensor>, metadata: &[(&str, &str)]) -> Result<()> {
    let path = path.as_ref();
    let mut writer = Writer::new(tensors).auto_extension(false).overwrite(true);
    for (key, value) in metadata {
        writer = writer.with_metadata(key, value);
    }
    writer.write_to_file(path).map_err(|e| PackError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::prelude::*;

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<2>>,
        b: Param<Tensor<1>>,
    }

    #[derive(Module, Debug)]
    struct One {
        a: Param<Tensor<2>>,
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Header {
        name: String,
    }

    fn two(device: &Device, scale: f32) -> Two {
        Two {
            a: Param::from_tensor(Tensor::<2>::ones([2, 3], device) * scale),
            b: Param::from_tensor(Tensor::<1>::zeros([4], device)),
        }
    }

    #[test]
    fn header_and_tensors_round_trip_and_every_problem_is_named() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.bpk");
        let header = Header { name: "x".into() };
        let text = json_header(3, &header);
        write(
            &path,
            module_tensors(&two(&device, 2.0), Ids::Drop),
            &[("k", &text)],
        )
        .unwrap();
        let first = std::fs::read(&path).unwrap();
        write(
            &path,
            module_tensors(&two(&device, 2.0), Ids::Drop),
            &[("k", &text)],
        )
        .unwrap();
        assert_eq!(
            first,
            std::fs::read(&path).unwrap(),
            "the same values give the same bytes"
        );

        let pack = Pack::read(&path).unwrap();
        assert_eq!(pack.header::<Header>("k", 3).unwrap(), header);
        let err = pack.header::<Header>("k", 4).unwrap_err().to_string();
        assert!(err.contains("format version 3 is not supported"), "{err}");
        let err = pack.header::<Header>("other", 3).unwrap_err().to_string();
        assert!(
            err.contains("no `other` metadata: not written by vprompt"),
            "{err}"
        );

        let mut loaded = two(&device, 0.0);
        pack.load_into(&mut loaded, Extra::Refuse).unwrap();
        // Kept ids come back with the values (an optimiser's state is keyed by them).
        let saved = two(&device, 3.0);
        let kept = dir.path().join("kept.bpk");
        write(&kept, module_tensors(&saved, Ids::Keep), &[]).unwrap();
        let mut fresh = two(&device, 0.0);
        Pack::read(&kept)
            .unwrap()
            .load_into(&mut fresh, Extra::Refuse)
            .unwrap();
        assert_eq!((fresh.a.id, fresh.b.id), (saved.a.id, saved.b.id));
        assert_eq!(
            loaded.a.val().into_data(),
            (Tensor::<2>::ones([2, 3], &device) * 2.0).into_data()
        );
        let (values, shape) = pack.f32_tensor("a").unwrap();
        assert_eq!((values, shape), (vec![2.0; 6], vec![2, 3]));

        // A module with fewer tensors: the extra one is refused unless allowed.
        let mut one = One {
            a: Param::from_tensor(Tensor::<2>::zeros([2, 3], &device)),
        };
        let PackError::Tensors { problems, .. } = pack.load_into(&mut one, Extra::Refuse).unwrap_err() else {
            panic!()
        };
        assert_eq!(problems, ["unexpected tensor `b`"]);
        pack.load_into(&mut one, Extra::Ignore).unwrap();
        // A module with more, or other shapes: named.
        let mut wide = Two {
            a: Param::from_tensor(Tensor::<2>::zeros([3, 3], &device)),
            b: Param::from_tensor(Tensor::<1>::zeros([4], &device)),
        };
        let err = pack.load_into(&mut wide, Extra::Refuse).unwrap_err().to_string();
        assert!(err.contains('a') && err.contains("two.bpk"), "{err}");

        // Not a pack, and no file.
        std::fs::write(dir.path().join("text.bpk"), "hello").unwrap();
        let err = Pack::read(dir.path().join("text.bpk")).unwrap_err();
        assert!(matches!(err, PackError::Invalid { .. }) && err.to_string().contains("not a Burnpack file"));
        let err = Pack::read(dir.path().join("none.bpk")).unwrap_err();
        assert!(matches!(err, PackError::Io { .. }) && err.to_string().contains("none.bpk"));
    }

    /// A tensor of the right size but another shape (transposed, reshaped) is refused by name,
    /// never read as scrambled values; so is a non-finite value.
    #[test]
    fn shapes_must_match_and_values_be_finite() {
        let device = Device::flex();
        let pack = |a: Vec<usize>, values: Vec<f32>| {
            Pack::from_tensors(
                "p.bpk",
                vec![f32_tensor("a", &values, &a), f32_tensor("b", &[0.0; 4], &[4])],
            )
            .unwrap()
        };
        let load = |p: Pack| p.load_into(&mut two(&device, 0.0), Extra::Refuse);
        let err = load(pack(vec![3, 2], vec![1.0; 6])).unwrap_err().to_string();
        assert!(
            err.contains("tensor `a` is [3, 2] in the file, the model's is [2, 3]"),
            "{err}"
        );
        let mut values = vec![1.0; 6];
        values[4] = f32::NAN;
        let err = load(pack(vec![2, 3], values)).unwrap_err().to_string();
        assert!(
            err.contains("tensor `a` holds values that are not finite"),
            "{err}"
        );
        values = vec![1.0; 6];
        values[0] = f32::INFINITY;
        assert!(load(pack(vec![2, 3], values)).is_err());
        let err = load(pack(vec![2, 1, 3], vec![1.0; 6])).unwrap_err().to_string();
        assert!(err.contains("tensor `a` is [2, 1, 3] in the file"), "{err}");
        load(pack(vec![2, 3], vec![1.0; 6])).unwrap();
    }
}
