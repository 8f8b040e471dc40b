//! What every vprompt crate shares, and nothing else: the leaf crates (prompt, backbone, mapping,
//! data) do not depend on each other, so the few pieces they have in common live here.
//!
//! - [`config!`]: a typed config struct with required and defaulted fields, a builder
//!   (`new(required..)`, `with_<field>(..)`) and serde that fills in defaults and refuses unknown
//!   fields, so that config files deserialize straight into it. [`ConfigError`] is the one error
//!   for a bad setting: the key path and the reason.
//! - [`pack`]: Burnpack (`.bpk`) files with a header in their metadata, the one file format vprompt
//!   writes for prompts, mappings, probes and backbone weights.
//! - [`fingerprint`]: stable content hashes (data cache keys, a run's record of its inputs).
//! - [`fs`]: replacing a file atomically and durably, the one way vprompt writes files it reads
//!   back.
//! - [`progress`]: how long-running work (training, evaluation, preparation, experiments) reports
//!   how far it is, without the library printing on its own.

mod config;
pub mod fingerprint;
pub mod fs;
pub mod pack;
pub mod progress;

pub use config::{ConfigError, key_path_differences};
pub use progress::{Lines, Progress, Quiet, Task};

#[doc(hidden)]
pub mod __private {
    pub use burn;
    pub use pastey::paste;
    pub use serde;
}
