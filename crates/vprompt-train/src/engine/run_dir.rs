//! A run directory: the effective config, crash-safe checkpoints, the best prompt so far and a
//! metrics log. Curves are drawn from the records by whoever observes the engine (the run layer's
//! `Curves`).
//!
//! ```text
//! run/
//!   config.json          the training config (a resumed run must match it)
//!   checkpoint.json      which checkpoint is current (replaced atomically, last)
//!   checkpoints/epoch-00007/{prompt.bpk, mapping.bpk, optimizer.bin, state.json}
//!   best.json, best/epoch-00005/{prompt.bpk, mapping.bpk}    selected on the validation split
//!   metrics.jsonl        one JSON object per epoch (and one per final evaluation)
//! ```
//!
//! What a snapshot directory holds is the method's: a prompt run writes `prompt.bpk` (and
//! `mapping.bpk`), a linear probe `probe.bpk`; checkpoints add `optimizer.bin`.
//!
//! A checkpoint directory is written completely, synced, and renamed into place before the pointer
//! file is replaced by a rename, so a run killed at any moment leaves the previous checkpoint
//! readable.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vprompt_mapping::Mapping;
use vprompt_prompt::Prompt;

use crate::error::{Result, TrainError, io};

/// The learned prompt, in a snapshot directory.
pub const PROMPT_FILE: &str = "prompt.bpk";
/// The label mapping, in a snapshot directory.
pub const MAPPING_FILE: &str = "mapping.bpk";
/// A linear probe's layer, in a snapshot directory.
pub const PROBE_FILE: &str = "probe.bpk";
/// The optimiser's state, in a checkpoint directory.
pub const OPTIMIZER_FILE: &str = "optimizer.bin";
const STATE_FILE: &str = "state.json";

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimisation steps taken.
    pub step: u64,
    /// Best validation top-1 so far and its epoch (1-based).
    pub best: Option<(usize, f64)>,
    /// Black-box training: queries spent on training steps and on validation so far (0 for
    /// white-box runs).
    #[serde(default)]
    pub queries: u64,
    /// Black-box training: queries spent on validation so far.
    #[serde(default)]
    pub validation_queries: u64,
}

/// A checkpoint read back: its state, the prompt (on the device it was loaded to), the mapping (none
/// for black-box runs, whose mapping is inside the model) and the optimiser's state bytes.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Epochs, steps, best validation score.
    pub state: CheckpointState,
    /// The prompt.
    pub prompt: Prompt,
    /// The mapping.
    pub mapping: Option<Mapping>,
    /// The optimiser's state.
    pub optimizer: Vec<u8>,
}

/// One epoch's line in `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Steps taken after it.
    pub step: u64,
    /// Learning rate of its last step.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training top-1 (on the prompted, training-mode batches).
    pub train_top1: f64,
    /// Validation loss, when evaluated.
    pub valid_loss: Option<f64>,
    /// Validation top-1, when evaluated.
    pub valid_top1: Option<f64>,
    /// Validation top-5, when evaluated.
    pub valid_top5: Option<f64>,
    /// Training images per second in this epoch.
    pub images_per_second: f64,
    /// Black-box training: training queries spent after this epoch (absent for white-box runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<u64>,
}

impl EpochRecord {
    /// The one-line summary of the epoch, for a run of `epochs` epochs (`exhausted`: the method's
    /// budget ended it).
    pub fn summary(&self, epochs: usize, exhausted: bool) -> String {
        let mut line = format!(
            "epoch {}/{epochs}: train loss {:.4} top-1 {:.2}%",
            self.epoch,
            self.train_loss,
            100.0 * self.train_top1
        );
        if let Some(v) = self.valid_top1 {
            line += &format!(", validation top-1 {:.2}%", 100.0 * v);
        }
        if let Some(q) = self.queries {
            line += &format!(", {q} training queries");
        }
        if exhausted {
            line += " (budget spent)";
        }
        line + &format!(" ({:.1} img/s)", self.images_per_second)
    }
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Pointer {
    dir: String,
}

/// Replaces `path` with `bytes` ([`vprompt_core::fs::write_atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    vprompt_core::fs::write_atomic(path, bytes).map_err(io(path))
}

impl RunDir {
    /// Opens (creating it if needed) a run directory.
    pub fn create(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(root.join("checkpoints")).map_err(io(&root))?;
        Ok(Self { root })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Writes the effective config under `section`, or, if one is there already, checks that it
    /// is the same (a resumed run with other settings would not continue the same run).
    pub fn check_or_write_config<C>(&self, section: &str, config: &C) -> Result<()>
    where
        C: Serialize + DeserializeOwned + PartialEq,
    {
        let path = self.root.join("config.json");
        let json = serde_json::to_string(&BTreeMap::from([(section, config)])).expect("configs serialise");
        match std::fs::read_to_string(&path) {
            Ok(existing) => {
                let found = serde_json::from_str::<BTreeMap<String, C>>(&existing)
                    .map(|mut sections| sections.remove(section));
                match found {
                    Ok(Some(found)) if &found == config => Ok(()),
                    Ok(Some(found)) => {
                        let value = |c: &C| serde_json::to_value(c).expect("configs serialise");
                        let differences = vprompt_core::key_path_differences(&value(&found), &value(config));
                        Err(TrainError::Checkpoint {
                            path,
                            reason: format!(
                                "this run directory was made with other {section} settings ({}); use a new \
                                 directory or the same settings",
                                differences
                                    .iter()
                                    .map(|d| format!("{section}.{d}"))
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            ),
                        })
                    }
                    Ok(None) => Err(TrainError::Checkpoint {
                        path,
                        reason: format!(
                            "this run directory was made by another method (its config has no {section} \
                             section: {existing}); use a new directory"
                        ),
                    }),
                    Err(e) => Err(TrainError::Checkpoint {
                        path,
                        reason: format!(
                            "this run directory was made with another config, or its config is unreadable \
                             ({e}); use a new directory (asked for {json})"
                        ),
                    }),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomic(&path, json.as_bytes()),
            Err(e) => Err(TrainError::Io { path, source: e }),
        }
    }

    /// Replaces the effective config recorded under `section` (a run extended to more epochs by
    /// its owner, which checked that nothing else changed and that the schedule allows it).
    pub fn replace_config<C: Serialize>(&self, section: &str, config: &C) -> Result<()> {
        let path = self.root.join("config.json");
        let json = serde_json::to_string(&BTreeMap::from([(section, config)])).expect("configs serialise");
        write_atomic(&path, json.as_bytes())
    }

    /// Writes a snapshot directory completely (`write` fills a fresh temporary directory, plus
    /// `extra` files), syncs it and renames it into place.
    fn write_snapshot(
        &self,
        dir: &Path,
        write: impl FnOnce(&Path) -> Result<()>,
        extra: &[(&str, &[u8])],
    ) -> Result<()> {
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        write(&tmp)?;
        for (name, bytes) in extra {
            write_atomic(&tmp.join(name), bytes)?;
        }
        vprompt_core::fs::sync_dir(&tmp);
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        vprompt_core::fs::sync_dir(dir.parent().expect("snapshots live in a folder"));
        Ok(())
    }

    fn point(&self, pointer: &str, dir: &Path) -> Result<()> {
        let relative = dir
            .strip_prefix(&self.root)
            .expect("snapshots are inside the run")
            .to_string_lossy()
            .into_owned();
        let json = serde_json::to_string(&Pointer { dir: relative }).expect("pointers serialise");
        write_atomic(&self.root.join(pointer), json.as_bytes())?;
        vprompt_core::fs::sync_dir(&self.root);
        Ok(())
    }

    fn pointed(&self, pointer: &str) -> Result<Option<PathBuf>> {
        let path = self.root.join(pointer);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let p: Pointer = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
                    path: path.clone(),
                    reason: format!(
                        "unreadable ({e}); delete it to resume from the newest complete snapshot, or use \
                         a new run directory"
                    ),
                })?;
                Ok(Some(self.root.join(p.dir)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TrainError::Io { path, source: e }),
        }
    }

    /// Writes a checkpoint (`write` fills its directory; the state is added) and makes it current,
    /// then deletes the checkpoints it replaces.
    pub fn save_checkpoint(
        &self,
        state: &CheckpointState,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let name = format!("epoch-{:05}", state.epochs_done);
        let dir = self.root.join("checkpoints").join(&name);
        let state_json = serde_json::to_vec(state).expect("states serialise");
        self.write_snapshot(&dir, write, &[(STATE_FILE, &state_json)])?;
        self.point("checkpoint.json", &dir)?;
        self.remove_others("checkpoints", &name)
    }

    /// Deletes every snapshot in `folder` but `keep`.
    fn remove_others(&self, folder: &str, keep: &str) -> Result<()> {
        let entries = std::fs::read_dir(self.root.join(folder)).map_err(io(&self.root))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy() != keep {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// The current checkpoint's state and directory, if there is one.
    ///
    /// Without `checkpoint.json` (deleted, or a kill between a checkpoint's rename and the
    /// pointer's), the newest complete `checkpoints/epoch-N` is used: snapshots are renamed into
    /// place only when complete, so the run resumes from it instead of restarting over it.
    pub fn checkpoint(&self) -> Result<Option<(CheckpointState, PathBuf)>> {
        let dir = match self.pointed("checkpoint.json")? {
            Some(dir) => dir,
            None => match self.newest_complete_checkpoint()? {
                Some(dir) => dir,
                None => return Ok(None),
            },
        };
        let path = dir.join(STATE_FILE);
        let state = serde_json::from_slice(&std::fs::read(&path).map_err(io(&path))?).map_err(|e| {
            TrainError::Checkpoint {
                path: path.clone(),
                reason: format!("unreadable state: {e}"),
            }
        })?;
        Ok(Some((state, dir)))
    }

    /// The newest `checkpoints/epoch-N` directory that was renamed into place (complete).
    fn newest_complete_checkpoint(&self) -> Result<Option<PathBuf>> {
        let root = self.root.join("checkpoints");
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(TrainError::Io {
                    path: root,
                    source: e,
                });
            }
        };
        let mut newest: Option<(usize, PathBuf)> = None;
        for entry in entries {
            let path = entry.map_err(io(&root))?.path();
            let epoch = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("epoch-"))
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(epoch) = epoch
                && path.join(STATE_FILE).exists()
                && newest.as_ref().is_none_or(|(best, _)| epoch > *best)
            {
                newest = Some((epoch, path));
            }
        }
        Ok(newest.map(|(_, path)| path))
    }

    /// Reads the current checkpoint of a prompt run (prompt, mapping if any, optimiser state), if
    /// there is one.
    pub fn load_checkpoint(&self, device: &Device) -> Result<Option<Checkpoint>> {
        let Some((state, dir)) = self.checkpoint()? else {
            return Ok(None);
        };
        let path = dir.join(OPTIMIZER_FILE);
        Ok(Some(Checkpoint {
            state,
            prompt: Prompt::load(dir.join(PROMPT_FILE), device)?,
            mapping: load_mapping(&dir, device)?,
            optimizer: std::fs::read(&path).map_err(io(&path))?,
        }))
    }

    /// Saves the best state so far (selected on the validation split): `write` fills its directory.
    pub fn save_best(&self, epoch: usize, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        std::fs::create_dir_all(self.root.join("best")).map_err(io(&self.root))?;
        let name = format!("epoch-{epoch:05}");
        let dir = self.root.join("best").join(&name);
        self.write_snapshot(&dir, write, &[])?;
        self.point("best.json", &dir)?;
        self.remove_others("best", &name)
    }

    /// The directory of the best state saved so far, if any.
    pub fn best_dir(&self) -> Result<Option<PathBuf>> {
        self.pointed("best.json")
    }

    /// The best prompt and mapping of a prompt run saved so far, if any.
    pub fn load_best(&self, device: &Device) -> Result<Option<(Prompt, Option<Mapping>)>> {
        let Some(dir) = self.best_dir()? else {
            return Ok(None);
        };
        Ok(Some((
            Prompt::load(dir.join(PROMPT_FILE), device)?,
            load_mapping(&dir, device)?,
        )))
    }

    /// The epoch records up to `epochs_done` (a run killed before its next checkpoint may have
    /// written more). The file is not changed here: lines past the checkpoint, and an earlier
    /// final evaluation, are dropped only when the line that replaces them is written
    /// ([`append_metrics`](Self::append_metrics)), so a rerun that fails before writing keeps
    /// the record it found.
    pub fn metrics_until(&self, epochs_done: usize) -> Result<Vec<EpochRecord>> {
        Ok(self
            .metrics_lines()?
            .iter()
            .filter_map(|l| serde_json::from_str::<EpochRecord>(l).ok())
            .filter(|r| r.epoch <= epochs_done)
            .collect())
    }

    /// The lines of `metrics.jsonl` (none if it does not exist).
    fn metrics_lines(&self) -> Result<Vec<String>> {
        let path = self.root.join("metrics.jsonl");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(String::from).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(TrainError::Io { path, source: e }),
        }
    }

    /// Appends the final evaluation on `source` (the test split) to `metrics.jsonl`, after the
    /// epochs, replacing an earlier one.
    pub fn append_final_evaluation(&self, source: &str, report: &impl Serialize) -> Result<()> {
        #[derive(Serialize)]
        struct Final<'a, R> {
            final_evaluation: &'a str,
            report: &'a R,
        }
        let epochs: Vec<String> = self
            .metrics_lines()?
            .into_iter()
            .filter(|l| serde_json::from_str::<EpochRecord>(l).is_ok())
            .collect();
        self.write_metrics(
            epochs,
            &Final {
                final_evaluation: source,
                report,
            },
        )
    }

    /// Appends `record` to `metrics.jsonl`, replacing the lines a killed run wrote past the
    /// checkpoint it resumed from (epochs from `record.epoch` on) and a final evaluation.
    pub fn append_metrics(&self, record: &EpochRecord) -> Result<()> {
        let kept: Vec<String> = self
            .metrics_lines()?
            .into_iter()
            .filter(|l| serde_json::from_str::<EpochRecord>(l).is_ok_and(|r| r.epoch < record.epoch))
            .collect();
        self.write_metrics(kept, record)
    }

    /// Replaces `metrics.jsonl` with `kept` and then `line`, atomically.
    fn write_metrics(&self, kept: Vec<String>, line: &impl Serialize) -> Result<()> {
        let mut text: String = kept.into_iter().map(|l| l + "\n").collect();
        text += &serde_json::to_string(line).expect("metrics serialise");
        text.push('\n');
        write_atomic(&self.root.join("metrics.jsonl"), text.as_bytes())
    }
}

/// The snapshot's mapping, if it has one.
fn load_mapping(dir: &Path, device: &Device) -> Result<Option<Mapping>> {
    let path = dir.join(MAPPING_FILE);
    if path.exists() {
        Ok(Some(Mapping::load(path, device)?))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            step: epoch as u64 * 10,
            lr: 0.1,
            train_loss: 1.0,
            train_top1: 0.5,
            valid_loss: None,
            valid_top1: None,
            valid_top5: None,
            images_per_second: 100.0,
            queries: None,
        }
    }

    /// A rerun reads the records without rewriting them: a final evaluation stays until a new one
    /// replaces it, and lines past a checkpoint go only when the epoch after it is written again.
    #[test]
    fn metrics_are_replaced_only_by_what_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let path = dir.path().join("metrics.jsonl");
        for epoch in 1..=3 {
            run.append_metrics(&record(epoch)).unwrap();
        }
        run.append_final_evaluation("test", &"first").unwrap();
        let finished = std::fs::read_to_string(&path).unwrap();
        assert_eq!(finished.lines().count(), 4);

        // A rerun of the finished run reads its records; if it then fails, nothing is lost.
        assert_eq!(run.metrics_until(3).unwrap().len(), 3);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), finished);
        // Its final evaluation replaces the old one.
        run.append_final_evaluation("test", &"second").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("second") && !text.contains("first"), "{text}");

        // A run resumed from epoch 2's checkpoint: epoch 3 and the evaluation go when epoch 3 is
        // written again.
        assert_eq!(run.metrics_until(2).unwrap().len(), 2);
        let mut again = record(3);
        again.train_loss = 0.25;
        run.append_metrics(&again).unwrap();
        let records: Vec<EpochRecord> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(records[2].train_loss, 0.25);
    }

    /// The engine's own record of its settings names each one that differs by its key path.
    #[test]
    fn another_config_is_refused_naming_the_settings_that_differ() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Settings {
            epochs: usize,
            seed: u64,
        }
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        run.check_or_write_config("training", &Settings { epochs: 1, seed: 0 })
            .unwrap();
        run.check_or_write_config("training", &Settings { epochs: 1, seed: 0 })
            .unwrap();
        let err = run
            .check_or_write_config("training", &Settings { epochs: 2, seed: 3 })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(training.epochs: 1 -> 2; training.seed: 0 -> 3)"),
            "{err}"
        );
        let err = run
            .check_or_write_config("black_box", &Settings { epochs: 1, seed: 0 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("another method"), "{err}");
    }
}
