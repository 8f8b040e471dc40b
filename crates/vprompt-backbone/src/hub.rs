//! Weights named on the Hugging Face Hub (`hf:openai/clip-vit-base-patch32`), feature `hub`:
//! downloaded once into the standard Hugging Face cache by the `hf-hub` crate, converted once into
//! a `.bpk` file beside it, and read from there afterwards, offline included.
//!
//! A name is `hf:ORG/REPO[/FILE][@REVISION]`. Without `FILE`, the repository's checkpoint is the
//! first of [`CANDIDATE_FILES`] it has. `HF_HOME` (the cache, default `~/.cache/huggingface`),
//! `HF_ENDPOINT` (the server, default `https://huggingface.co`), `HF_HUB_OFFLINE=1` (never ask the
//! server) and the token file `huggingface-cli login` writes are honoured as by Hugging Face's own
//! tools, so a file fetched by them is found here too.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{BackboneError, Result};
use crate::preset::Preset;

/// The prefix of a hub name.
pub const PREFIX: &str = "hf:";

/// The checkpoint files looked for in a repository named without a file, in order: transformers
/// and timm (`model.safetensors`), open_clip (`open_clip_model.safetensors`,
/// `open_clip_pytorch_model.bin`), older transformers (`pytorch_model.bin`).
pub const CANDIDATE_FILES: [&str; 4] = [
    "model.safetensors",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
];

/// A parsed hub name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubName {
    /// `ORG/REPO`.
    pub repo: String,
    /// A file in the repository, or `None` for the first of [`CANDIDATE_FILES`].
    pub file: Option<String>,
    /// A branch, tag or commit; `main` when not given.
    pub revision: String,
}

impl HubName {
    /// Parses `hf:ORG/REPO[/FILE][@REVISION]`; `None` if `text` does not start with `hf:`.
    pub fn parse(text: &str) -> Option<Result<Self>> {
        let rest = text.strip_prefix(PREFIX)?;
        let invalid = |why: &str| {
            BackboneError::InvalidArgument(format!(
                "`{text}`: {why}; a hub name is hf:ORG/REPO[/FILE][@REVISION], e.g. hf:openai/clip-vit-base-patch32"
            ))
        };
        let (path, revision) = match rest.rsplit_once('@') {
            Some((path, revision)) if !revision.is_empty() => (path, revision.to_string()),
            Some(_) => return Some(Err(invalid("an empty revision"))),
            None => (rest, "main".to_string()),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty() || *p == "..") {
            return Some(Err(invalid("no ORG/REPO")));
        }
        let file = (parts.len() > 2).then(|| parts[2..].join("/"));
        Some(Ok(Self {
            repo: format!("{}/{}", parts[0], parts[1]),
            file,
            revision,
        }))
    }
}

impl std::fmt::Display for HubName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}", self.repo)?;
        if let Some(file) = &self.file {
            write!(f, "/{file}")?;
        }
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "YES" | "on" | "ON"))
}

fn hub_error(name: &HubName, reason: String) -> BackboneError {
    BackboneError::Hub {
        name: name.to_string(),
        reason,
    }
}

/// The checkpoint file of `name` in the local cache, downloading it first when it is not there
/// (and the hub is reachable and allowed).
pub fn checkpoint(name: &HubName) -> Result<PathBuf> {
    let cache = Cache::from_env();
    let repo = Repo::with_revision(name.repo.clone(), RepoType::Model, name.revision.clone());
    let files: Vec<&str> = match &name.file {
        Some(file) => vec![file.as_str()],
        None => CANDIDATE_FILES.to_vec(),
    };
    if let Some(path) = files.iter().find_map(|f| cache.repo(repo.clone()).get(f)) {
        return Ok(path);
    }
    let fetch = format!(
        "fetch it where the hub is reachable (`huggingface-cli download {}{} {}`) into {}, or point \
         HF_ENDPOINT at a mirror",
        name.repo,
        if name.revision == "main" {
            String::new()
        } else {
            format!(" --revision {}", name.revision)
        },
        files[0],
        cache.path().display()
    );
    if offline() {
        return Err(hub_error(
            name,
            format!("not in the cache and HF_HUB_OFFLINE is set: {fetch}"),
        ));
    }
    let api = ApiBuilder::from_env()
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| hub_error(name, format!("cannot start the hub client: {e}")))?;
    let api = api.repo(repo);
    let mut absent = Vec::new();
    for file in &files {
        match api.download(file) {
            Ok(path) => {
                // The configs saved beside a checkpoint, when the repository has them: what
                // `checkpoint::check_clip_activation` reads. Absent ones are no error.
                for config in ["config.json", "open_clip_config.json"] {
                    let _ = api.get(config);
                }
                return Ok(path);
            }
            Err(hf_hub::api::sync::ApiError::RequestError(e))
                if matches!(*e, ureq::Error::StatusCode(404)) =>
            {
                absent.push(*file);
            }
            Err(e) => {
                return Err(hub_error(
                    name,
                    format!("not in the cache, and the download failed ({e}): {fetch}"),
                ));
            }
        }
    }
    Err(hub_error(
        name,
        format!(
            "the repository has none of {} (name the file: hf:ORG/REPO/FILE)",
            absent.join(", ")
        ),
    ))
}

/// The `.bpk` file `preset`'s weights are read from for `name`: converted from the downloaded
/// checkpoint the first time, into `<cache>/vprompt/<preset>/<repository>/<blob name>.bpk` (the
/// blob is named by its content's hash, so a new upstream file is converted anew).
pub fn weights(preset: Preset, name: &HubName) -> Result<PathBuf> {
    let checkpoint = checkpoint(name)?;
    let blob = std::fs::canonicalize(&checkpoint).map_err(|source| BackboneError::Io {
        path: checkpoint.clone(),
        source,
    })?;
    let key = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    // Per repository: the same blob in two repositories may come with different configs.
    let repo = Repo::with_revision(name.repo.clone(), RepoType::Model, name.revision.clone());
    let dir = Cache::from_env()
        .path()
        .join("vprompt")
        .join(preset.name())
        .join(repo.folder_name());
    let converted = dir.join(format!("{key}.bpk"));
    if converted.exists() {
        return Ok(converted);
    }
    std::fs::create_dir_all(&dir).map_err(|source| BackboneError::Io {
        path: dir.clone(),
        source,
    })?;
    // Written through a temporary file and a rename (by `convert_checkpoint`): a crash leaves no
    // half-written file under the final name.
    crate::convert_checkpoint(preset, &checkpoint, &converted)?;
    Ok(converted)
}

/// `weights` as given by a user: a hub name is resolved (downloaded and converted when needed),
/// a path is returned as it is.
pub(crate) fn resolve(preset: Preset, weights: &Path) -> Result<PathBuf> {
    match weights.to_str().and_then(HubName::parse) {
        Some(name) => self::weights(preset, &name?),
        None => Ok(weights.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::HubName;

    #[test]
    fn names_parse_with_optional_file_and_revision() {
        let parse = |s: &str| HubName::parse(s).unwrap().unwrap();
        let name = parse("hf:openai/clip-vit-base-patch32");
        assert_eq!(
            (name.repo.as_str(), name.file.as_deref(), name.revision.as_str()),
            ("openai/clip-vit-base-patch32", None, "main")
        );
        let name = parse("hf:timm/resnet50.tv_in1k/sub/model.safetensors@v1.0");
        assert_eq!(
            (name.repo.as_str(), name.file.as_deref(), name.revision.as_str()),
            ("timm/resnet50.tv_in1k", Some("sub/model.safetensors"), "v1.0")
        );
        assert_eq!(
            name.to_string(),
            "hf:timm/resnet50.tv_in1k/sub/model.safetensors@v1.0"
        );
        assert!(HubName::parse("weights/resnet50.bpk").is_none());
        for bad in ["hf:", "hf:openai", "hf:openai/", "hf:a/b@", "hf:a/../b"] {
            assert!(HubName::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
