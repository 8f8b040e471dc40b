//! Saving and loading a prompt together with its config, as one Burnpack (`.bpk`) file.
//!
//! The tensors are the prompt module's own (`Padding.frame.delta`, ...); the metadata key
//! [`METADATA_KEY`] holds a JSON header with the file format version, the image size and the
//! template config, so a file is enough to rebuild the prompt without knowing its type.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_core::pack::{self, Extra, Ids, Pack};

use crate::any::{Prompt, PromptConfig};
use crate::error::Result;
use crate::visual_prompt::VisualPrompt;

/// Burnpack metadata key holding the prompt header.
pub const METADATA_KEY: &str = "vprompt.prompt";

/// Version of the header written by this crate.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    image_size: [usize; 2],
    config: PromptConfig,
}

impl Prompt {
    /// Writes the prompt's values and config to `path` (a `.bpk` file). The file is written to a
    /// temporary name and renamed, so an interrupted save never leaves a truncated file; an
    /// existing file is replaced.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let header = pack::json_header(
            FORMAT_VERSION,
            &Header {
                image_size: self.image_size(),
                config: self.config(),
            },
        );
        Ok(pack::write(
            path,
            pack::module_tensors(self, Ids::Keep),
            &[(METADATA_KEY, &header)],
        )?)
    }

    /// Reads a prompt written by [`Prompt::save`] onto `device`, checking that the file holds
    /// every tensor of the recorded template with the recorded shape.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Prompt> {
        let pack = Pack::read(path)?;
        let header: Header = pack.header(METADATA_KEY, FORMAT_VERSION)?;
        let mut prompt = header.config.init(header.image_size, device)?;
        pack.load_into(&mut prompt, Extra::Refuse)?;
        Ok(prompt)
    }
}
