//! Experiments: the paper's comparisons and ablations from one config (what `vprompt experiment
//! CONFIG --profile small` runs). A config lists datasets, backbones, methods and seeds; every
//! (dataset, backbone, seed, method) cell is one run. The runner writes, in its output directory:
//!
//! - `results.json`: the effective config and every run (accuracy, unprompted accuracy with the same
//!   head, image counts, seconds), rewritten atomically after each run, so an interrupted experiment
//!   resumes where it stopped (finished runs are skipped, an interrupted training or linear probe
//!   resumes from its checkpoint in `runs/`);
//! - `results.md`: mean ± std test top-1 over seeds per method and dataset/backbone column;
//! - with a `[plot]` section, a PNG (`plot.png`) and the plotted points as a table.
//!
//! A grid can also run as N processes sharing the output directory (a Slurm job array,
//! `experiments/slurm-array.sh`): `--shard I/N` runs the I-th share of the cells ([`Shard`]: a
//! fixed assignment by the cell's names) and records them in `results.shard-I-of-N.json`. The
//! share that finishes last finds every cell recorded and writes the merged `results.json`,
//! `results.md` and plot; `--merge` (or the command without `--shard`) does the same at any time.
//!
//! Methods: `unprompted` (the backbone and head alone: first-N / random / a fitted mapping, or a CLIP
//! text prompt), `visual-prompt` (any template, any label mapping, any recipe), `linear-probe`, and
//! `black-box` (a visual prompt trained by queries alone, with the `[black_box]` section), and
//! `ensemble` (visual-prompt methods of the config combined at inference: `members = ["a", "b"]`;
//! evaluated once their runs are recorded, so a sharded grid computes it when it merges).
//! Profiles (`[profiles.small]`) override seeds, epochs and image counts, so one config serves both
//! this CPU and the paper's full runs.
//!
//! ```toml
//! title = "Fashion-MNIST on EfficientNet-Lite0"
//! seeds = [0, 1, 2]
//!
//! [[datasets]]
//! name = "Fashion-MNIST"
//! data = { format = "fashion-mnist", path = "/usr/share/datasets/fashion-mnist" }
//!
//! [[backbones]]
//! name = "Lite0"
//! model = { preset = "efficientnet-lite0" }
//!
//! [training]
//! recipe = "paper"
//!
//! [[methods]]
//! name = "unprompted (first-N)"
//! kind = "unprompted"
//!
//! [[methods]]
//! name = "VP padding p=30"
//! kind = "visual-prompt"
//! prompt = { Padding = { pad = 30 } }
//!
//! [[methods]]
//! name = "linear probe"
//! kind = "linear-probe"
//!
//! [profiles.small]
//! seeds = [0]
//! epochs = 2
//! train_per_class = 10
//! test_per_class = 20
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_mapping::LabelMappingConfig;
use vprompt_prompt::{PaddingPromptConfig, PromptConfig};
use vprompt_train::{ConfigError, Progress, Quiet, ScheduleConfig};

use crate::config::{
    BackboneConfig, BlackBoxChoice, DataConfig, MethodConfig, ProbeChoice, RunConfig, TrainingChoice,
};
use crate::curves::{Axis, Series, color_name, line_plot};
use crate::error::{Context, Result, RunError, io};
use crate::run::{LoadedEnsemble, Run, write_json, write_text};
use crate::shard::{SHARD_PREFIX, Shard};

vprompt_core::config! {
    /// One experiment: the grid of datasets x backbones x methods x seeds, and how to plot it.
    pub struct ExperimentConfig {
        /// The table's heading.
        pub title: String,
        /// The datasets (table columns).
        pub datasets: Vec<DatasetEntry>,
        /// The methods (table rows).
        pub methods: Vec<MethodEntry>,
    }
    defaults {
        /// A paragraph under the heading (what the paper reports for the same experiment, say).
        pub description: String = String::new(),
        /// Seeds: of the few-shot sample, the validation split, the batch order and the probe.
        pub seeds: Vec<u64> = vec![0],
        /// The frozen models (more table columns); default: the embedded EfficientNet-Lite0.
        pub backbones: Vec<BackboneEntry> = default_backbones(),
        /// The recipe of every visual-prompt run.
        pub training: TrainingChoice = TrainingChoice::new(),
        /// The settings of every black-box run.
        pub black_box: Option<BlackBoxChoice> = None,
        /// Linear-probe overrides.
        pub probe: ProbeChoice = ProbeChoice::new(),
        /// Optional figure.
        pub plot: Option<PlotConfig> = None,
        /// Named overrides, e.g. `small` for this CPU and `full` for the paper's settings.
        pub profiles: BTreeMap<String, Profile> = BTreeMap::new(),
    }
}

fn default_backbones() -> Vec<BackboneEntry> {
    vec![BackboneEntry::new(
        "EfficientNet-Lite0".into(),
        BackboneConfig::new(),
    )]
}

vprompt_core::config! {
    /// A dataset column.
    pub struct DatasetEntry {
        /// Column name.
        pub name: String,
        /// Where the images come from (`seed` is set per run).
        pub data: DataConfig,
    }
    defaults {
        /// The x value of this dataset in a `[plot]` with `x = "dataset"` (e.g. shots per class).
        pub x: Option<f64> = None,
    }
}

vprompt_core::config! {
    /// A backbone column.
    pub struct BackboneEntry {
        /// Column name.
        pub name: String,
        /// Preset and weights (and a CLIP text tower).
        pub model: BackboneConfig,
    }
    defaults {}
}

/// What a method does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    /// The frozen model and its head, no training (random / first-N mapping accuracy, or CLIP's
    /// text-prompt zero-shot accuracy). A mapping that is fitted (frequency, ILM, BLM) is fitted on the
    /// training split's unprompted outputs.
    Unprompted,
    /// A visual prompt trained with the experiment's recipe.
    VisualPrompt,
    /// A linear classifier on the frozen features.
    LinearProbe,
    /// A visual prompt trained by queries alone, with the experiment's `[black_box]` settings
    /// (their `model` is the column's backbone, `"Local"`, or a program or endpoint).
    BlackBox,
    /// The visual-prompt methods named in `members`, combined at inference (their mapped
    /// probabilities averaged) for the same dataset, backbone and seed; evaluated once every
    /// member's run is recorded, from their run directories, with no training of its own.
    Ensemble,
}

vprompt_core::config! {
    /// A method row.
    pub struct MethodEntry {
        /// Row name.
        pub name: String,
        /// What it does.
        pub kind: MethodKind,
    }
    defaults {
        /// The prompt template (`visual-prompt`), e.g. `{Padding = {pad = 30}}`; default: padding 30.
        pub prompt: Option<PromptConfig> = None,
        /// The label mapping, e.g. `"FirstN"`, `{Random = {seed = 0}}`, `"Frequency"`,
        /// `{Iterative = {every = 1}}`; default first-N. Ignored by CLIP backbones and linear probes.
        pub mapping: Option<LabelMappingConfig> = None,
        /// CLIP backbones: the text prompt (default: the paper's).
        pub text_template: Option<String> = None,
        /// Plot with `x = "method"`: the line this method belongs to (e.g. the template).
        pub series: Option<String> = None,
        /// Plot with `x = "method"`: its x value (e.g. the prompt size).
        pub x: Option<f64> = None,
        /// `ensemble`: the names of the visual-prompt methods it combines.
        pub members: Vec<String> = Vec::new(),
    }
}

vprompt_core::config! {
    /// Overrides applied by `--profile NAME`.
    pub struct Profile {}
    defaults {
        /// Run only these methods (by name), e.g. fewer prompt sizes on a CPU.
        pub methods: Option<Vec<String>> = None,
        /// The recipe.
        pub recipe: Option<vprompt_train::Recipe> = None,
        /// The learning-rate schedule.
        pub schedule: Option<ScheduleConfig> = None,
        /// Seeds.
        pub seeds: Option<Vec<u64>> = None,
        /// Visual-prompt epochs.
        pub epochs: Option<usize> = None,
        /// Batch size.
        pub batch_size: Option<usize> = None,
        /// Base learning rate.
        pub learning_rate: Option<f64> = None,
        /// Training images per class, for datasets that do not set their own `few_shot`.
        pub train_per_class: Option<usize> = None,
        /// Validation images per class.
        pub validation_per_class: Option<usize> = None,
        /// Test images per class.
        pub test_per_class: Option<usize> = None,
        /// Validation fraction.
        pub validation: Option<f64> = None,
        /// Linear-probe epochs.
        pub probe_epochs: Option<usize> = None,
    }
}

/// The x axis of the figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlotX {
    /// Each method's `x`; one line per method `series` (template x size sweeps).
    Method,
    /// Each dataset's `x`; one line per method (few-shot curves).
    Dataset,
    /// The unprompted accuracy of each visual-prompt run (the same head without the prompt); one
    /// point per visual-prompt method (text-prompt quality against the gain of a visual prompt).
    Unprompted,
}

/// The y axis of the figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlotY {
    /// Mean test top-1 (%).
    #[default]
    Accuracy,
    /// Mean (prompted - unprompted) test top-1 (percentage points), visual-prompt methods only.
    Gain,
}

vprompt_core::config! {
    /// A figure: mean over seeds, one PNG.
    pub struct PlotConfig {
        /// The x axis.
        pub x: PlotX,
    }
    defaults {
        /// The y axis.
        pub y: PlotY = PlotY::Accuracy,
        /// Axis description written beside the figure and on the plot.
        pub x_label: String = String::new(),
        /// File name in the output directory.
        pub file: String = "plot.png".into(),
    }
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Dataset name.
    pub dataset: String,
    /// Backbone name.
    pub backbone: String,
    /// Method name.
    pub method: String,
    /// Seed.
    pub seed: u64,
    /// Test top-1 in [0, 1].
    pub top1: f64,
    /// Test top-1 of the same head without the prompt (visual-prompt runs).
    pub unprompted_top1: Option<f64>,
    /// An ensemble's members' mean test top-1, what the ensemble is compared to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_mean_top1: Option<f64>,
    /// The prompt's learned values (visual-prompt and black-box runs): a template's count, or for
    /// a conditional prompt its template's plus its generator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_parameters: Option<usize>,
    /// Training images (after the validation split).
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Wall-clock seconds of the run (data, training, evaluation).
    pub seconds: f64,
}

impl RunRecord {
    fn key(&self) -> (String, String, String, u64) {
        (
            self.dataset.clone(),
            self.backbone.clone(),
            self.method.clone(),
            self.seed,
        )
    }
}

/// What `results.json` holds (and each shard's file, with that shard's runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The effective config (profile applied).
    pub config: ExperimentConfig,
    /// The profile's name, if any.
    pub profile: Option<String>,
    /// The finished runs: in the grid's order (dataset, backbone, seed, method) once merged; in
    /// the order they ran while an experiment or a shard runs.
    pub runs: Vec<RunRecord>,
}

/// The merged results file in an experiment's output directory.
pub const RESULTS: &str = "results.json";

/// Which cells an experiment process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Every cell not yet recorded.
    All,
    /// The cells of one shard ([`Shard`]), recorded in its own file.
    Shard(Shard),
    /// None: only merge what the shards recorded.
    Merge,
}

/// What [`ExperimentConfig::run`] ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every cell is recorded; the merged results were written.
    Complete(Box<Results>),
    /// Cells of other shares are not recorded yet (named).
    Incomplete {
        /// The missing cells, `dataset / backbone / method / seed N`.
        missing: Vec<String>,
    },
}

/// Mean and spread of one table cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Mean test top-1 in [0, 1].
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub std: f64,
    /// Mean unprompted top-1 of the same runs, when recorded.
    pub unprompted: Option<f64>,
    /// Runs.
    pub n: usize,
}

/// Names must be non-empty and distinct as directory names ([`slug`]): two names that differ
/// only in punctuation would share one run directory, and the second would report the first's
/// result.
fn unique<'a>(what: &str, key: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for name in names {
        if name.trim().is_empty() {
            return Err(ConfigError::new(
                key,
                format!("every {what} needs a non-empty name"),
            ));
        }
        match seen.insert(slug(name), name) {
            Some(other) if other == name => {
                return Err(ConfigError::new(key, format!("two {what}s are named `{name}`")));
            }
            Some(other) => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{what}s `{other}` and `{name}` would share the run directory `{}`: rename one",
                        slug(name)
                    ),
                ));
            }
            None => {}
        }
    }
    Ok(())
}

impl ExperimentConfig {
    /// The config with profile `name`'s overrides applied (and no profiles left).
    pub fn with_profile(&self, name: &str) -> Result<Self, ConfigError> {
        let profile = self.profiles.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            ConfigError::new(
                "profiles",
                format!(
                    "no profile `{name}` in this experiment (it has: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })?;
        let mut c = self.clone();
        c.profiles.clear();
        if let Some(names) = &profile.methods {
            if let Some(n) = names.iter().find(|n| !self.methods.iter().any(|m| &m.name == *n)) {
                return Err(ConfigError::new(
                    format!("profiles.{name}.methods"),
                    format!("lists an unknown method `{n}`"),
                ));
            }
            c.methods.retain(|m| names.contains(&m.name));
        }
        if let Some(seeds) = &profile.seeds {
            c.seeds = seeds.clone();
        }
        let t = &mut c.training;
        t.recipe = profile.recipe.unwrap_or(t.recipe);
        t.schedule = profile.schedule.clone().or(t.schedule.take());
        t.epochs = profile.epochs.or(t.epochs);
        t.batch_size = profile.batch_size.or(t.batch_size);
        t.learning_rate = profile.learning_rate.or(t.learning_rate);
        c.probe.epochs = profile.probe_epochs.or(c.probe.epochs);
        for d in &mut c.datasets {
            if d.data.few_shot.is_none() {
                d.data.few_shot = profile.train_per_class;
            }
            d.data.test_per_class = profile.test_per_class.or(d.data.test_per_class);
            d.data.validation_per_class = profile.validation_per_class.or(d.data.validation_per_class);
            d.data.validation = profile.validation.unwrap_or(d.data.validation);
        }
        Ok(c)
    }

    /// The run config of one cell (the visual-prompt runs train through it; the other methods use
    /// its data, backbone and head, and write their own checkpoints to its run directory).
    pub fn run_config(
        &self,
        dataset: &DatasetEntry,
        backbone: &BackboneEntry,
        entry: &MethodEntry,
        seed: u64,
        out: &Path,
    ) -> RunConfig {
        let mut data = dataset.data.clone();
        data.seed = seed;
        if data.cache_dir.is_none() {
            data.cache_dir = Some(out.join(".cache"));
        }
        let method = match entry.kind {
            MethodKind::VisualPrompt | MethodKind::Ensemble => {
                MethodConfig::VisualPrompt(self.training.clone().with_seed(Some(seed)))
            }
            // Validation refuses a black-box method without the section.
            MethodKind::BlackBox => match &self.black_box {
                Some(choice) => MethodConfig::BlackBox(choice.clone().with_seed(seed)),
                None => MethodConfig::Unprompted,
            },
            MethodKind::LinearProbe => MethodConfig::LinearProbe(self.probe.clone().with_seed(Some(seed))),
            MethodKind::Unprompted => MethodConfig::Unprompted,
        };
        let clip = backbone.model.text_preset.is_some();
        RunConfig::new(
            out.join("runs").join(slug(&format!(
                "{}-{}-{}-seed{seed}",
                dataset.name, backbone.name, entry.name
            ))),
            data,
        )
        .with_backbone(backbone.model.clone())
        .with_prompt(
            entry
                .prompt
                .clone()
                .unwrap_or_else(|| PaddingPromptConfig::new(30).into()),
        )
        .with_mapping(entry.mapping.clone().unwrap_or(LabelMappingConfig::FirstN))
        .with_text_template(if clip { entry.text_template.clone() } else { None })
        .with_method(method)
    }

    /// Checks the whole grid without reading data or weights: names, every cell's run config, and
    /// what the plot needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, empty) in [
            ("seeds", self.seeds.is_empty()),
            ("datasets", self.datasets.is_empty()),
            ("backbones", self.backbones.is_empty()),
            ("methods", self.methods.is_empty()),
        ] {
            if empty {
                return Err(ConfigError::new(
                    key,
                    "an experiment needs at least one seed, dataset, backbone and method",
                ));
            }
        }
        unique(
            "dataset",
            "datasets",
            self.datasets.iter().map(|d| d.name.as_str()),
        )?;
        unique(
            "backbone",
            "backbones",
            self.backbones.iter().map(|b| b.name.as_str()),
        )?;
        unique("method", "methods", self.methods.iter().map(|m| m.name.as_str()))?;
        for m in &self.methods {
            if m.kind != MethodKind::Ensemble {
                continue;
            }
            if m.members.is_empty() {
                return Err(ConfigError::new(
                    "methods.members",
                    format!("ensemble `{}` lists no members", m.name),
                ));
            }
            for name in &m.members {
                if !self
                    .methods
                    .iter()
                    .any(|o| &o.name == name && o.kind == MethodKind::VisualPrompt)
                {
                    return Err(ConfigError::new(
                        "methods.members",
                        format!(
                            "ensemble `{}`: `{name}` is not a visual-prompt method of this experiment{}",
                            m.name,
                            if self.methods.iter().any(|o| &o.name == name) {
                                ""
                            } else {
                                " (a profile's `methods` must keep an ensemble's members)"
                            }
                        ),
                    ));
                }
            }
        }
        let out = Path::new(".");
        for d in &self.datasets {
            for b in &self.backbones {
                for m in self.methods.iter().filter(|m| m.kind != MethodKind::Ensemble) {
                    let rc = self.run_config(d, b, m, self.seeds[0], out);
                    if m.kind == MethodKind::BlackBox && self.black_box.is_none() {
                        return Err(ConfigError::new(
                            "black_box",
                            format!(
                                "method `{}` is a black-box method: the experiment needs a [black_box] section",
                                m.name
                            ),
                        ));
                    }
                    rc.validate().map_err(|e| {
                        // The method's settings are the experiment's sections, not a run's.
                        let path = [
                            ("method.VisualPrompt", "training"),
                            ("method.BlackBox", "black_box"),
                            ("method.LinearProbe", "probe"),
                        ]
                        .iter()
                        .find_map(|(run, experiment)| {
                            e.path.strip_prefix(run).map(|rest| format!("{experiment}{rest}"))
                        })
                        .unwrap_or_else(|| e.path.clone());
                        ConfigError::new(
                            path,
                            format!("{} / {} / {}: {}", d.name, b.name, m.name, e.reason),
                        )
                    })?;
                }
            }
        }
        if let Some(m) = self.methods.iter().find(|m| m.text_template.is_some())
            && !self.backbones.iter().any(|b| b.model.text_preset.is_some())
        {
            return Err(ConfigError::new(
                "methods.text_template",
                format!(
                    "method `{}` sets text_template but no backbone has a CLIP text tower",
                    m.name
                ),
            ));
        }
        self.probe.config().validate().map_err(|e| match e {
            vprompt_train::TrainError::InvalidConfig(e) => e.within("probe"),
            e => ConfigError::new("probe", e.to_string()),
        })?;
        if let Some(plot) = &self.plot {
            if plot.file.is_empty() || plot.file.contains(['/', '\\']) {
                return Err(ConfigError::new(
                    "plot.file",
                    format!("`{}` must be a plain file name", plot.file),
                ));
            }
            match plot.x {
                PlotX::Method => {
                    if let Some(m) = self.methods.iter().find(|m| m.x.is_none() || m.series.is_none()) {
                        return Err(ConfigError::new(
                            "plot.x",
                            format!(
                                "x = \"method\" needs `x` and `series` on every method; `{}` lacks one",
                                m.name
                            ),
                        ));
                    }
                }
                PlotX::Dataset => {
                    if let Some(d) = self.datasets.iter().find(|d| d.x.is_none()) {
                        return Err(ConfigError::new(
                            "plot.x",
                            format!(
                                "x = \"dataset\" needs `x` on every dataset; `{}` has none",
                                d.name
                            ),
                        ));
                    }
                }
                PlotX::Unprompted => {}
            }
            if (plot.y == PlotY::Gain || plot.x == PlotX::Unprompted)
                && !self.methods.iter().any(|m| m.kind == MethodKind::VisualPrompt)
            {
                return Err(ConfigError::new(
                    "plot",
                    "a plot of gains or against unprompted accuracy needs a visual-prompt method",
                ));
            }
        }
        Ok(())
    }

    /// The table's columns: every dataset with every backbone, datasets outermost.
    fn columns(&self) -> Vec<(&DatasetEntry, &BackboneEntry)> {
        self.datasets
            .iter()
            .flat_map(|d| self.backbones.iter().map(move |b| (d, b)))
            .collect()
    }

    /// Runs the cells of `share` not yet recorded in `out`, then, once every cell of the grid is
    /// recorded (by this process or by other shares), writes the merged `results.json`,
    /// `results.md` and the plot ([`Outcome::Complete`]); [`Outcome::Incomplete`], naming the
    /// missing cells, while other shares' cells are not recorded. `progress` shows the cells (and
    /// each cell's preparation and training): one line per run, and per skipped run.
    pub fn run(
        &self,
        profile: Option<&str>,
        out: &Path,
        device: &Device,
        share: Share,
        progress: Arc<dyn Progress>,
    ) -> Result<Outcome> {
        let config = match profile {
            Some(p) => self.with_profile(p)?,
            None => self.clone(),
        };
        config.validate()?;
        std::fs::create_dir_all(out).map_err(io("create", out))?;
        let recorded = config.recorded(out, profile)?;
        let done: HashSet<_> = recorded.iter().map(RunRecord::key).collect();
        // This process's own file: `results.json` when it runs every cell (adopting what shares
        // recorded), its shard file otherwise.
        let (own_path, mut own) = match share {
            Share::All | Share::Merge => (
                out.join(RESULTS),
                Results {
                    config: config.clone(),
                    profile: profile.map(String::from),
                    runs: recorded,
                },
            ),
            Share::Shard(shard) => {
                let path = out.join(shard.file_name());
                let runs = config.read_results(&path, profile)?.unwrap_or_default();
                let results = Results {
                    config: config.clone(),
                    profile: profile.map(String::from),
                    runs,
                };
                (path, results)
            }
        };
        // Ensembles are evaluated after the loop, once their members are recorded.
        let grid: Vec<_> = config
            .grid()
            .filter(|(_, _, m, _)| m.kind != MethodKind::Ensemble)
            .collect();
        let owned = match share {
            Share::All => vec![true; grid.len()],
            Share::Merge => vec![false; grid.len()],
            Share::Shard(shard) => shard.owned(
                &grid
                    .iter()
                    .map(|(d, b, m, seed)| (d.name.as_str(), b.name.as_str(), m.name.as_str(), *seed))
                    .collect::<Vec<_>>(),
            ),
        };
        let mine: Vec<_> = grid
            .into_iter()
            .zip(owned)
            .filter(|(_, o)| *o)
            .map(|(cell, _)| cell)
            .collect();
        let total = mine.len();
        let started = Instant::now();
        let mut ran = 0usize;
        let mut cells = progress.task("experiment", total as u64, "runs");
        for (k, (d, b, m, seed)) in mine.into_iter().enumerate() {
            let k = k + 1;
            let key = (d.name.clone(), b.name.clone(), m.name.clone(), seed);
            let what = format!("{} / {} / {} / seed {seed}", d.name, b.name, m.name);
            if done.contains(&key) {
                progress.line(&format!("[{k}/{total}] {what}: done before, skipped"));
                cells.advance(1, &String::new);
                continue;
            }
            let record = config
                .run_cell(d, b, m, seed, out, device)
                .with_context(|| format!("run {what}"))?;
            ran += 1;
            let left = total - k;
            let eta = started.elapsed().as_secs_f64() / ran as f64 * left as f64;
            progress.line(&format!(
                "[{k}/{total}] {what}: top-1 {:.1} %{} ({:.0} s; about {:.0} min left)",
                100.0 * record.top1,
                record
                    .unprompted_top1
                    .map_or(String::new(), |u| format!(" (unprompted {:.1} %)", 100.0 * u)),
                record.seconds,
                eta / 60.0
            ));
            cells.advance(1, &|| what.clone());
            own.runs.push(record);
            // Replaced atomically: another share merging at the same moment reads the old file
            // or the new, never half.
            write_json(&own_path, &own)?;
        }
        drop(cells);
        // Other shares may have finished meanwhile: merge whatever is recorded now.
        let recorded = config.recorded(out, profile)?;
        let by_key: HashMap<_, _> = recorded.into_iter().map(|r| (r.key(), r)).collect();
        let mut missing = Vec::new();
        let mut runs = Vec::new();
        let mut ensembles = Vec::new();
        for (d, b, m, seed) in config.grid() {
            match by_key.get(&(d.name.clone(), b.name.clone(), m.name.clone(), seed)) {
                Some(record) => runs.push(Some(record.clone())),
                None if m.kind == MethodKind::Ensemble => {
                    ensembles.push((runs.len(), (d, b, m, seed)));
                    runs.push(None);
                }
                None => missing.push(format!("{} / {} / {} / seed {seed}", d.name, b.name, m.name)),
            }
        }
        if !missing.is_empty() {
            return Ok(Outcome::Incomplete { missing });
        }
        // Every member is recorded: the ensembles, from their members' run directories.
        for (k, (at, (d, b, m, seed))) in ensembles.iter().enumerate() {
            let what = format!("{} / {} / {} / seed {seed}", d.name, b.name, m.name);
            let record = config
                .run_ensemble(d, b, m, *seed, out, device)
                .with_context(|| format!("run {what}"))?;
            progress.line(&format!(
                "[ensemble {}/{}] {what}: top-1 {:.1} % (members' mean {:.1} %)",
                k + 1,
                ensembles.len(),
                100.0 * record.top1,
                100.0 * record.members_mean_top1.unwrap_or(f64::NAN),
            ));
            runs[*at] = Some(record);
        }
        let runs: Vec<RunRecord> = runs
            .into_iter()
            .map(|r| r.expect("every cell recorded"))
            .collect();
        let results = Results {
            config: config.clone(),
            profile: profile.map(String::from),
            runs,
        };
        write_json(&out.join(RESULTS), &results)?;
        let (markdown, series) = report(&results);
        if let (Some(plot), Some(series)) = (&config.plot, series) {
            // `line_plot` replaces the file atomically: two shares finishing together both merge,
            // and neither may read the other's half-written file.
            let (x, y) = plot.axes();
            line_plot(&out.join(&plot.file), &config.title, &x, &y, &series)?;
        }
        write_text(&out.join("results.md"), &markdown)?;
        Ok(Outcome::Complete(Box::new(results)))
    }

    /// Every cell of the grid, in the tables' order: dataset, backbone, seed, method.
    fn grid(&self) -> impl Iterator<Item = (&DatasetEntry, &BackboneEntry, &MethodEntry, u64)> {
        self.datasets.iter().flat_map(move |d| {
            self.backbones.iter().flat_map(move |b| {
                self.seeds
                    .iter()
                    .flat_map(move |&seed| self.methods.iter().map(move |m| (d, b, m, seed)))
            })
        })
    }

    /// The runs of `path` (`results.json` or a shard file), `None` if it does not exist; refused
    /// when it holds another config's or profile's results.
    fn read_results(&self, path: &Path, profile: Option<&str>) -> Result<Option<Vec<RunRecord>>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let old: Results = serde_json::from_str(&text).map_err(|e| RunError::Parse {
                    path: path.to_path_buf(),
                    what: "results file",
                    source: Box::new(e),
                })?;
                if old.config != *self || old.profile.as_deref() != profile {
                    return Err(RunError::Refused(format!(
                        "{} holds results of a different config or profile; choose another output \
                         directory or delete it",
                        path.display()
                    )));
                }
                Ok(Some(old.runs))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", path)(e)),
        }
    }

    /// Every run recorded in `out`: `results.json`, then each shard's file (any share count, in
    /// name order), the first record of a cell kept.
    fn recorded(&self, out: &Path, profile: Option<&str>) -> Result<Vec<RunRecord>> {
        let mut files = vec![out.join(RESULTS)];
        let mut shards: Vec<PathBuf> = std::fs::read_dir(out)
            .map_err(io("read", out))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(SHARD_PREFIX) && n.ends_with(".json"))
            })
            .collect();
        shards.sort();
        files.extend(shards);
        let mut seen = HashSet::new();
        let mut runs = Vec::new();
        for file in files {
            for record in self.read_results(&file, profile)?.unwrap_or_default() {
                if seen.insert(record.key()) {
                    runs.push(record);
                }
            }
        }
        Ok(runs)
    }

    /// An ensemble cell: its members' selected prompts (their runs in this experiment's `runs/`,
    /// same dataset, backbone and seed) combined on the members' test split, with the members'
    /// mean top-1 beside its own.
    fn run_ensemble(
        &self,
        d: &DatasetEntry,
        b: &BackboneEntry,
        m: &MethodEntry,
        seed: u64,
        out: &Path,
        device: &Device,
    ) -> Result<RunRecord> {
        let started = Instant::now();
        let runs: Vec<PathBuf> = m
            .members
            .iter()
            .map(|name| {
                let member = self.methods.iter().find(|o| &o.name == name).expect("validated");
                self.run_config(d, b, member, seed, out).run_dir
            })
            .collect();
        let evaluated = LoadedEnsemble::load(&runs, device)?.evaluate(device, &Quiet)?;
        Ok(RunRecord {
            dataset: d.name.clone(),
            backbone: b.name.clone(),
            method: m.name.clone(),
            seed,
            top1: evaluated.result.ensemble.top1,
            unprompted_top1: None,
            members_mean_top1: Some(evaluated.result.mean_member_top1()),
            prompt_parameters: None,
            train_images: evaluated.train_images,
            test_images: evaluated.result.ensemble.count,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One cell: its run config run through [`Run::run`]. Runs inside it report nothing: the
    /// experiment's own lines say how it goes.
    fn run_cell(
        &self,
        d: &DatasetEntry,
        b: &BackboneEntry,
        m: &MethodEntry,
        seed: u64,
        out: &Path,
        device: &Device,
    ) -> Result<RunRecord> {
        let started = Instant::now();
        let rc = self.run_config(d, b, m, seed, out);
        let finished = Run::new(rc)?.run(std::slice::from_ref(device), Arc::new(Quiet))?;
        let summary = finished
            .summary()
            .ok_or_else(|| RunError::Refused("the run stopped before its end".into()))?;
        Ok(RunRecord {
            dataset: d.name.clone(),
            backbone: b.name.clone(),
            method: m.name.clone(),
            seed,
            top1: summary.top1,
            unprompted_top1: summary.unprompted_top1,
            members_mean_top1: None,
            prompt_parameters: summary.prompt_parameters,
            train_images: summary.train_images,
            test_images: summary.test_images,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

impl PlotConfig {
    /// The figure's axes.
    fn axes(&self) -> (Axis, Axis) {
        let x_label = if self.x_label.is_empty() {
            match self.x {
                PlotX::Method => "method's x".to_string(),
                PlotX::Dataset => "dataset's x".to_string(),
                PlotX::Unprompted => "unprompted test top-1 (%)".to_string(),
            }
        } else {
            self.x_label.clone()
        };
        let y_label = match self.y {
            PlotY::Accuracy => "mean test top-1 (%)",
            PlotY::Gain => "gain over unprompted (points)",
        };
        (Axis::linear(x_label), Axis::linear(y_label))
    }
}

/// A file-system-safe name: letters, digits, `-`, `_`, `.`; anything else becomes `_`.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The cells of `runs`: (dataset, backbone, method) -> mean, std over seeds.
pub fn cells(runs: &[RunRecord]) -> BTreeMap<(String, String, String), Cell> {
    let mut groups: BTreeMap<(String, String, String), Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((r.dataset.clone(), r.backbone.clone(), r.method.clone()))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|(key, rs)| {
            let n = rs.len();
            let mean = rs.iter().map(|r| r.top1).sum::<f64>() / n as f64;
            let std = if n > 1 {
                (rs.iter().map(|r| (r.top1 - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
            } else {
                0.0
            };
            let unprompted: Vec<f64> = rs.iter().filter_map(|r| r.unprompted_top1).collect();
            let unprompted =
                (!unprompted.is_empty()).then(|| unprompted.iter().sum::<f64>() / unprompted.len() as f64);
            (
                key,
                Cell {
                    mean,
                    std,
                    unprompted,
                    n,
                },
            )
        })
        .collect()
}

/// The Markdown report of `results` and, with a plot section, its series (in legend order).
pub fn report(results: &Results) -> (String, Option<Vec<Series>>) {
    let c = &results.config;
    let cells = cells(&results.runs);
    let mut md = format!("# {}\n\n", c.title);
    if !c.description.trim().is_empty() {
        md += &format!("{}\n\n", c.description.trim());
    }
    let seeds: Vec<String> = c.seeds.iter().map(u64::to_string).collect();
    md += &format!(
        "Profile: {} · seeds {} · test top-1 (%), mean ± std over seeds{}\n\n",
        results.profile.as_deref().unwrap_or("(none)"),
        seeds.join(", "),
        if c.methods.iter().any(|m| m.kind == MethodKind::VisualPrompt) {
            "; for visual prompts, the same head without the prompt in brackets"
        } else {
            ""
        }
    );
    let columns = c.columns();
    md += "| method |";
    for (d, b) in &columns {
        md += &if c.backbones.len() > 1 {
            format!(" {} / {} |", d.name, b.name)
        } else {
            format!(" {} |", d.name)
        };
    }
    md += "\n|---|";
    md += &"---:|".repeat(columns.len());
    md += "\n";
    for m in &c.methods {
        md += &format!("| {} |", m.name);
        for (d, b) in &columns {
            md += &match cells.get(&(d.name.clone(), b.name.clone(), m.name.clone())) {
                None => " – |".to_string(),
                Some(cell) => format!(
                    " {:.1}{}{} |",
                    100.0 * cell.mean,
                    // One seed has no spread to show.
                    if cell.n > 1 {
                        format!(" ± {:.1}", 100.0 * cell.std)
                    } else {
                        String::new()
                    },
                    cell.unprompted
                        .map_or(String::new(), |u| format!(" ({:.1})", 100.0 * u))
                ),
            };
        }
        md += "\n";
    }
    let images: Vec<String> = columns
        .iter()
        .filter_map(|(d, b)| {
            let r = results
                .runs
                .iter()
                .find(|r| r.dataset == d.name && r.backbone == b.name)?;
            Some(format!(
                "{}: {} train / {} test",
                d.name, r.train_images, r.test_images
            ))
        })
        .collect();
    let seconds: f64 = results.runs.iter().map(|r| r.seconds).sum();
    md += &format!(
        "\nImages per run: {}. {} runs, {:.1} min in all.\n",
        images.join("; "),
        results.runs.len(),
        seconds / 60.0
    );
    // Each prompt's learned values (for a conditional prompt, its template's and its generator's),
    // from its first run on each backbone: the count depends only on the backbone's input size.
    let mut parameters: Vec<String> = c
        .methods
        .iter()
        .flat_map(|m| {
            c.backbones.iter().filter_map(move |b| {
                let runs = &results.runs;
                let r = runs.iter().find(|r| r.method == m.name && r.backbone == b.name)?;
                let n = r.prompt_parameters?;
                Some(if c.backbones.len() > 1 {
                    format!("{} / {} {n}", m.name, b.name)
                } else {
                    format!("{} {n}", m.name)
                })
            })
        })
        .collect();
    parameters.sort();
    if !parameters.is_empty() {
        md += &format!("Learned prompt values: {}.\n", parameters.join("; "));
    }
    let Some(plot) = &c.plot else {
        return (md, None);
    };
    let series = plot_series(c, plot, &cells);
    md += &format!(
        "\n## Figure\n\n![{}]({})\n\nx: {}; y: {}. Lines: {}.\n\n| line | x | y |\n|---|---:|---:|\n",
        c.title,
        plot.file,
        if plot.x_label.is_empty() {
            "see the table"
        } else {
            &plot.x_label
        },
        match plot.y {
            PlotY::Accuracy => "mean test top-1 (%)",
            PlotY::Gain => "mean gain of the visual prompt over the same head unprompted (points)",
        },
        series
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{} = {}", color_name(i), s.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in &series {
        for (x, y) in &s.points {
            md += &format!("| {} | {x} | {y:.1} |\n", s.name);
        }
    }
    (md, Some(series))
}

fn plot_series(
    c: &ExperimentConfig,
    plot: &PlotConfig,
    cells: &BTreeMap<(String, String, String), Cell>,
) -> Vec<Series> {
    let y = |cell: &Cell| match plot.y {
        PlotY::Accuracy => Some(100.0 * cell.mean),
        PlotY::Gain => cell.unprompted.map(|u| 100.0 * (cell.mean - u)),
    };
    let columns = c.columns();
    let suffix = |d: &DatasetEntry, b: &BackboneEntry| {
        if columns.len() > 1 {
            format!(" ({} / {})", d.name, b.name)
        } else {
            String::new()
        }
    };
    let mut series: Vec<Series> = Vec::new();
    let mut push = |name: String, point: (f64, f64)| match series.iter_mut().find(|s| s.name == name) {
        Some(s) => s.points.push(point),
        None => series.push(Series {
            name,
            points: vec![point],
        }),
    };
    let cell = |d: &DatasetEntry, b: &BackboneEntry, m: &MethodEntry| {
        cells.get(&(d.name.clone(), b.name.clone(), m.name.clone()))
    };
    match plot.x {
        PlotX::Method => {
            for (d, b) in &columns {
                for m in &c.methods {
                    if let (Some(cell), Some(x), Some(s)) = (cell(d, b, m), m.x, &m.series)
                        && let Some(y) = y(cell)
                    {
                        push(format!("{s}{}", suffix(d, b)), (x, y));
                    }
                }
            }
        }
        PlotX::Dataset => {
            for b in &c.backbones {
                for m in &c.methods {
                    for d in &c.datasets {
                        if let (Some(cell), Some(x)) = (cell(d, b, m), d.x)
                            && let Some(y) = y(cell)
                        {
                            let name = if c.backbones.len() > 1 {
                                format!("{} ({})", m.name, b.name)
                            } else {
                                m.name.clone()
                            };
                            push(name, (x, y));
                        }
                    }
                }
            }
        }
        PlotX::Unprompted => {
            for (d, b) in &columns {
                for m in &c.methods {
                    if let Some(cell) = cell(d, b, m)
                        && let (Some(u), Some(y)) = (cell.unprompted, y(cell))
                    {
                        push(format!("visual prompt{}", suffix(d, b)), (100.0 * u, y));
                    }
                }
            }
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(method: &str, seed: u64, top1: f64, unprompted: Option<f64>) -> RunRecord {
        RunRecord {
            dataset: "D".into(),
            backbone: "B".into(),
            method: method.into(),
            seed,
            top1,
            unprompted_top1: unprompted,
            members_mean_top1: None,
            prompt_parameters: unprompted.map(|_| 69_840),
            train_images: 9,
            test_images: 5,
            seconds: 30.0,
        }
    }

    #[test]
    fn cells_are_mean_and_sample_std_over_seeds() {
        let runs = [
            record("vp", 0, 0.5, Some(0.1)),
            record("vp", 1, 0.7, Some(0.3)),
            record("vp", 2, 0.6, Some(0.2)),
            record("lp", 0, 0.4, None),
        ];
        let cells = cells(&runs);
        let vp = &cells[&("D".into(), "B".into(), "vp".into())];
        assert_eq!(vp.n, 3);
        assert!((vp.mean - 0.6).abs() < 1e-12);
        assert!((vp.std - 0.1).abs() < 1e-12, "sample std of 0.5, 0.7, 0.6 is 0.1");
        assert!((vp.unprompted.unwrap() - 0.2).abs() < 1e-12);
        let lp = &cells[&("D".into(), "B".into(), "lp".into())];
        assert_eq!((lp.n, lp.std, lp.unprompted), (1, 0.0, None));
    }

    #[test]
    fn report_has_one_row_per_method_and_the_plot_points() {
        let config: ExperimentConfig = serde_json::from_value(serde_json::json!({
            "title": "T",
            "datasets": [{"name": "D", "data": {"format": "mnist", "path": "/nowhere"}}],
            "backbones": [{"name": "B", "model": {}}],
            "methods": [
                {"name": "vp", "kind": "visual-prompt", "series": "pad", "x": 30.0},
                {"name": "lp", "kind": "linear-probe", "series": "probe", "x": 0.0},
                {"name": "never ran", "kind": "unprompted", "series": "u", "x": 1.0}
            ],
            "plot": {"x": "method", "y": "gain"}
        }))
        .unwrap();
        config.validate().unwrap();
        let results = Results {
            config,
            profile: Some("small".into()),
            runs: vec![
                record("vp", 0, 0.5, Some(0.1)),
                record("vp", 1, 0.7, Some(0.3)),
                record("lp", 0, 0.4, None),
            ],
        };
        let (md, series) = report(&results);
        assert!(md.contains("| vp | 60.0 ± 14.1 (20.0) |"), "{md}");
        assert!(md.contains("| lp | 40.0 |"), "one seed: no ± 0.0");
        assert!(md.contains("Learned prompt values: vp 69840."), "{md}");
        assert!(md.contains("| never ran | – |"), "{md}");
        assert!(md.contains("D: 9 train / 5 test"), "{md}");
        // Gains exist only where an unprompted accuracy was recorded.
        let series = series.unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].name, "pad");
        assert_eq!(series[0].points.len(), 1);
        assert!((series[0].points[0].0 - 30.0).abs() < 1e-12 && (series[0].points[0].1 - 40.0).abs() < 1e-9);
        assert!(md.contains("blue = pad"), "{md}");
    }

    /// Every committed experiment config parses with the typed reader and validates, as it is and
    /// with each of its profiles.
    #[test]
    fn the_committed_experiment_configs_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let config: ExperimentConfig = crate::config_file::read(&path, "experiment config")
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            config
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for name in config.profiles.keys() {
                let profiled = config.with_profile(name).unwrap();
                profiled
                    .validate()
                    .unwrap_or_else(|e| panic!("{} --profile {name}: {e}", path.display()));
            }
            read += 1;
        }
        assert_eq!(read, 5, "the five configs under experiments/");
    }

    #[test]
    fn profiles_override_and_bad_configs_are_refused() {
        let base = serde_json::json!({
            "title": "T",
            "datasets": [
                {"name": "all", "data": {"format": "mnist", "path": "/nowhere"}},
                {"name": "4-shot", "data": {"format": "mnist", "path": "/nowhere", "few_shot": 4}}
            ],
            "methods": [
                {"name": "a", "kind": "unprompted"},
                {"name": "b", "kind": "visual-prompt", "prompt": {"Padding": {"pad": 4}}}
            ],
            "profiles": {"small": {"seeds": [3], "epochs": 2, "train_per_class": 20, "methods": ["b"],
                                   "recipe": "ilm-vp", "schedule": "CosinePerStep"}}
        });
        let config: ExperimentConfig = serde_json::from_value(base.clone()).unwrap();
        let small = config.with_profile("small").unwrap();
        assert_eq!(small.seeds, vec![3]);
        assert_eq!(small.methods.len(), 1);
        assert_eq!(small.training.epochs, Some(2));
        assert_eq!(small.training.recipe, vprompt_train::Recipe::IlmVp);
        assert_eq!(small.datasets[0].data.few_shot, Some(20));
        assert_eq!(
            small.datasets[1].data.few_shot,
            Some(4),
            "a dataset's own few_shot wins"
        );
        assert!(small.profiles.is_empty());
        let tc = small.training.config().unwrap();
        assert_eq!(
            (tc.epochs, tc.schedule.clone()),
            (2, ScheduleConfig::CosinePerStep)
        );
        let err = config.with_profile("huge").unwrap_err().to_string();
        assert!(
            err.contains("no profile `huge`") && err.contains("small"),
            "{err}"
        );

        let refuse = |patch: serde_json::Value, needle: &str| {
            let mut v = base.clone();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let c: ExperimentConfig = serde_json::from_value(v).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "expected `{needle}` in `{err}`");
        };
        refuse(serde_json::json!({"seeds": []}), "at least one seed");
        refuse(
            serde_json::json!({"methods": [{"name": "a", "kind": "unprompted"}, {"name": "a", "kind": "linear-probe"}]}),
            "two methods are named `a`",
        );
        // Names that differ only where the directory name does not: one run directory.
        refuse(
            serde_json::json!({"methods": [{"name": "VP pad/30", "kind": "unprompted"}, {"name": "VP pad 30", "kind": "linear-probe"}]}),
            "would share the run directory `VP_pad_30`",
        );
        refuse(
            serde_json::json!({"methods": [{"name": "p", "kind": "visual-prompt", "prompt": {"Padding": {"pad": 200}}}]}),
            "all / EfficientNet-Lite0 / p",
        );
        refuse(
            serde_json::json!({"plot": {"x": "method"}}),
            "needs `x` and `series`",
        );
        refuse(
            serde_json::json!({"plot": {"x": "dataset"}}),
            "needs `x` on every dataset",
        );
        refuse(
            serde_json::json!({"methods": [{"name": "u", "kind": "unprompted", "text_template": "a {}"}]}),
            "no backbone has a CLIP text tower",
        );
        refuse(serde_json::json!({"probe": {"epochs": 0}}), "probe.epochs");
    }
}
