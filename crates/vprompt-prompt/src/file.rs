//! Saving and loading a prompt together with its config, as one Burnpack (`.bpk`) file.
//!
//! The tensors are the prompt module's own (`Padding.frame.delta`, ...); the metadata key
//! [`METADATA_KEY`] holds a JSON header with the file format version, the image size and the
//! template config, so a file is enough to rebuild the prompt without knowing its type.

use std::path::Path;

use burn::prelude::*;
use burn_store::burn_pack::Reader;
use burn_store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use crate::any::{Prompt, PromptConfig};
use crate::error::{PromptError, Result};
use crate::visual_prompt::VisualPrompt;

/// Burnpack metadata key holding the prompt header.
pub const METADATA_KEY: &str = "vprompt.prompt";

/// Version of the header written by this crate.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format_version: u32,
    image_size: [usize; 2],
    config: PromptConfig,
}

impl Prompt {
    /// Writes the prompt's values and config to `path` (a `.bpk` file). The file is written to a
    /// temporary name and renamed, so an interrupted save never leaves a truncated file; an
    /// existing file is replaced.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let header = Header {
            format_version: FORMAT_VERSION,
            image_size: self.image_size(),
            config: self.config(),
        };
        let header = serde_json::to_string(&header).expect("prompt headers always serialise");
        let mut store = BurnpackStore::from_file(path)
            .auto_extension(false)
            .overwrite(true)
            .metadata(METADATA_KEY, header);
        self.save_into(&mut store).map_err(|e| PromptError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Reads a prompt written by [`Prompt::save`] onto `device`, checking that the file holds
    /// every tensor of the recorded template with the recorded shape.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Prompt> {
        let path = path.as_ref();
        let invalid = |reason: String| PromptError::InvalidFile {
            path: path.to_path_buf(),
            reason,
        };
        std::fs::metadata(path).map_err(|source| PromptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let reader =
            Reader::from_file_exact(path).map_err(|e| invalid(format!("not a Burnpack file ({e})")))?;
        let header = reader
            .metadata()
            .get(METADATA_KEY)
            .ok_or_else(|| invalid(format!("no `{METADATA_KEY}` metadata: not written by vprompt")))?;
        let header: Header =
            serde_json::from_str(header).map_err(|e| invalid(format!("unreadable prompt header: {e}")))?;
        if header.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {} is not supported (this vprompt reads version {FORMAT_VERSION})",
                header.format_version
            )));
        }
        let mut prompt = header.config.init(header.image_size, device)?;
        // Read the whole file now: a store over the file reads tensor bytes lazily, and on an
        // asynchronous backend (wgpu) that read ran after `load` returned, so a file replaced or
        // deleted meanwhile failed at the first use of the prompt (found by the wgpu tests).
        let bytes = std::fs::read(path).map_err(|source| PromptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(bytes)));
        let applied = prompt
            .load_from(&mut store)
            .map_err(|e| invalid(format!("cannot read tensors ({e})")))?;
        let mut problems: Vec<String> = applied.errors.iter().map(ToString::to_string).collect();
        problems.extend(
            applied
                .missing
                .iter()
                .map(|(name, _)| format!("missing tensor '{name}'")),
        );
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(prompt)
    }
}
