//! Saving and loading a fitted mapping: one Burnpack file with the matrix `W` and a JSON header
//! (kind, scale, normalisation), so that a trained (prompt, mapping) pair reloads and predicts
//! exactly as it did.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::{Bytes, DType};
use burn_store::burn_pack::{Reader, Tensor as PackTensor, Writer};
use serde::{Deserialize, Serialize};

use crate::error::{MappingError, Result};
use crate::mapping::{Mapping, MappingKind, OutputMapping};

/// Burnpack metadata key holding the mapping header.
pub const METADATA_KEY: &str = "vprompt.mapping";
const FORMAT_VERSION: u32 = 1;
const WEIGHTS: &str = "weights";

#[derive(Serialize, Deserialize)]
struct Header {
    format_version: u32,
    kind: MappingKind,
    normalize_input: bool,
    scale: f32,
}

impl Mapping {
    /// Writes the mapping to `path` (through a temporary file and a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let header = Header {
            format_version: FORMAT_VERSION,
            kind: self.kind().clone(),
            normalize_input: self.normalizes_input(),
            scale: self.scale(),
        };
        let bytes: Vec<u8> = self.matrix().iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = PackTensor::new(
            WEIGHTS.into(),
            DType::F32,
            [self.source_dim(), self.num_classes()],
            None,
            Bytes::from_bytes_vec(bytes),
        );
        Writer::new(vec![tensor])
            .with_metadata(
                METADATA_KEY,
                &serde_json::to_string(&header).expect("headers serialise"),
            )
            .auto_extension(false)
            .overwrite(true)
            .write_to_file(path)
            .map_err(|e| MappingError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })
    }

    /// Reads a mapping written by [`Mapping::save`] onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Mapping> {
        let path = path.as_ref();
        let invalid = |reason: String| MappingError::InvalidFile {
            path: path.to_path_buf(),
            reason,
        };
        std::fs::metadata(path).map_err(|source| MappingError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let reader =
            Reader::from_file_exact(path).map_err(|e| invalid(format!("not a Burnpack file ({e})")))?;
        let header = reader
            .metadata()
            .get(METADATA_KEY)
            .ok_or_else(|| invalid(format!("no `{METADATA_KEY}` metadata: not a vprompt mapping")))?;
        let header: Header =
            serde_json::from_str(header).map_err(|e| invalid(format!("unreadable header: {e}")))?;
        if header.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {} is not supported",
                header.format_version
            )));
        }
        let tensors = reader.into_tensors().map_err(|e| invalid(e.to_string()))?;
        let weights = tensors
            .into_iter()
            .find(|t| t.name == WEIGHTS)
            .ok_or_else(|| invalid(format!("no `{WEIGHTS}` tensor")))?;
        let dims = weights.shape.to_vec();
        if weights.dtype != DType::F32 || dims.len() != 2 {
            return Err(invalid(format!(
                "`{WEIGHTS}` is {:?} {dims:?}, expected a 2-d f32 matrix",
                weights.dtype
            )));
        }
        let bytes = weights.to_bytes().map_err(|e| invalid(e.to_string()))?;
        if bytes.len() != 4 * dims[0] * dims[1] {
            return Err(invalid("the weights are cut short".into()));
        }
        let matrix = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Ok(Mapping::from_matrix(
            matrix,
            [dims[0], dims[1]],
            header.normalize_input,
            header.scale,
            header.kind,
            device,
        ))
    }
}
