//! Saving and loading a fitted mapping: one Burnpack file with the matrix `W` and a JSON header
//! (kind, scale, normalisation), so that a trained (prompt, mapping) pair reloads and predicts
//! exactly as it did. A learned mapping also holds its bias `b`, and keeps its parameter ids, which
//! the optimiser's saved state is keyed by (checkpoints resume it).

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_core::pack::{self, Extra, Ids, Pack};

use crate::error::{MappingError, Result};
use crate::mapping::{Mapping, MappingKind, OutputMapping};

/// Burnpack metadata key holding the mapping header.
pub const METADATA_KEY: &str = "vprompt.mapping";
const FORMAT_VERSION: u32 = 1;
const WEIGHTS: &str = "weights";

#[derive(Serialize, Deserialize)]
struct Header {
    kind: MappingKind,
    normalize_input: bool,
    scale: f32,
}

impl Mapping {
    /// Writes the mapping to `path` (through a temporary file and a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let header = pack::json_header(
            FORMAT_VERSION,
            &Header {
                kind: self.kind().clone(),
                normalize_input: self.normalizes_input(),
                scale: self.scale(),
            },
        );
        let tensors = if self.is_learned() {
            pack::module_tensors(self, Ids::Keep)
        } else {
            vec![pack::f32_tensor(
                WEIGHTS,
                &self.matrix(),
                &[self.source_dim(), self.num_classes()],
            )]
        };
        Ok(pack::write(path, tensors, &[(METADATA_KEY, &header)])?)
    }

    /// Reads a mapping written by [`Mapping::save`] onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Mapping> {
        let path = path.as_ref();
        let pack = Pack::read(path)?;
        let header: Header = pack.header(METADATA_KEY, FORMAT_VERSION)?;
        let (matrix, dims) = pack.f32_tensor(WEIGHTS)?;
        let [sources, classes] = dims[..] else {
            return Err(MappingError::InvalidFile {
                path: path.to_path_buf(),
                reason: format!("`{WEIGHTS}` is {dims:?}, expected a 2-d matrix"),
            });
        };
        if let MappingKind::Learned { input } = header.kind {
            let mut mapping = Mapping::learned(input, sources, classes, 0, device)?;
            pack.load_into(&mut mapping, Extra::Refuse)?;
            return Ok(mapping);
        }
        Ok(Mapping::from_matrix(
            matrix,
            [sources, classes],
            header.normalize_input,
            header.scale,
            header.kind,
            device,
        ))
    }
}
