//! The command line: subcommands and flags. Flags that override a config file's settings are
//! parsed into the settings' own types (a preset, a template, a finite learning rate), so a bad
//! value is refused here, with the flag's name.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vprompt::DeviceName;
use vprompt::backbone::Preset;
use vprompt::mapping::LabelMappingConfig;
use vprompt::prompt::PromptConfig;
use vprompt::train::{OptimizerConfig, Recipe};

use vprompt::run::{DataConfig, DataFormat, MethodConfig, RunConfig};

#[derive(Parser)]
#[command(
    name = "vprompt",
    version,
    about = "Visual prompting: adapt a frozen vision model by learning only pixels"
)]
pub struct Cli {
    /// Device: flex (CPU), cpu, wgpu, wgpu:N (the N-th discrete GPU), cuda or cuda:N, when its
    /// backend is compiled in. Default: an accelerator if one is compiled in (cuda, then wgpu),
    /// else flex (then cpu).
    #[arg(long, global = true, env = vprompt::device::DEVICE_ENV, value_parser = device_name)]
    pub device: Option<DeviceName>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a prompt. Settings come from a TOML run config, flags override it; the config is
    /// written to the run directory, and an interrupted run resumes.
    Train(Box<TrainArgs>),
    /// Evaluate a run's selected prompt on its test split, prompted and unprompted. With several
    /// `--run`s (the same data and backbone), their prompt ensemble: the runs' mapped probabilities
    /// averaged, beside each run alone.
    Eval {
        /// The run directory; repeat it for an ensemble.
        #[arg(long, required = true)]
        run: Vec<PathBuf>,
    },
    /// Apply a run's selected prompt to images: writes the prompted images as PNG and prints the
    /// predicted class of each. With several `--run`s, the ensemble's class, and each run's
    /// prompted image (`NAME.K.png`).
    Apply {
        /// The run directory; repeat it for an ensemble.
        #[arg(long, required = true)]
        run: Vec<PathBuf>,
        /// Where the prompted PNGs go.
        #[arg(long)]
        out: PathBuf,
        /// PNG or JPEG files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Train a prompt by queries alone (black-box, zeroth-order): against the run config's own
    /// model, a program speaking the line protocol, or an HTTP endpoint, as its `[black_box]`
    /// section says; every query counted, within its budget (docs/black-box.md).
    BlackBox {
        /// A TOML run config with a `[black_box]` section.
        #[arg(long)]
        config: PathBuf,
        /// No progress on stderr.
        #[arg(long)]
        quiet: bool,
        /// Start the run again instead of resuming it: once the new run's inputs are read, the
        /// files a run writes are removed from its directory; other files there are kept.
        #[arg(long)]
        fresh: bool,
    },
    /// Answer the black-box protocol with a model: a trained run (its prompt, backbone and
    /// mapping) or a run config's backbone and mapping, unprompted. On stdin and stdout, one
    /// request per line, or over HTTP with `--http ADDR` (docs/black-box.md).
    Serve {
        /// A trained run directory (any run `vprompt eval` can load).
        #[arg(long, conflicts_with_all = ["config", "classes"], required_unless_present = "config")]
        run: Option<PathBuf>,
        /// A TOML run config (its backbone, and its mapping if that is made without data).
        #[arg(long, requires = "classes")]
        config: Option<PathBuf>,
        /// With `--config`: the number of classes the mapping scores.
        #[arg(long)]
        classes: Option<usize>,
        /// Serve over HTTP on this address (e.g. 127.0.0.1:8080; port 0 picks a free one), printing
        /// `serving on http://ADDR` first.
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Most images in one request.
        #[arg(long, default_value_t = 256)]
        max_batch: usize,
        /// Most megabytes of one HTTP request's body.
        #[arg(long, default_value_t = 512)]
        max_body_mb: usize,
    },
    /// Run an experiment: every dataset x backbone x seed x method of a TOML config (see
    /// `experiments/`), writing `results.json` (every run), `results.md` (mean ± std per cell) and
    /// the config's plot. An interrupted experiment resumes.
    Experiment {
        /// The experiment config.
        config: PathBuf,
        /// A profile of the config, e.g. `small` (this CPU) or `full` (the paper's settings).
        #[arg(long)]
        profile: Option<String>,
        /// Output directory (default: `runs/experiments/<config name>[-<profile>]`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress on stderr.
        #[arg(long)]
        quiet: bool,
        /// Run only share I of N of the cells (1 <= I <= N), e.g. a job array's task; the share
        /// that finishes last writes the merged results.
        #[arg(long, value_name = "I/N", conflicts_with = "merge")]
        shard: Option<vprompt::run::Shard>,
        /// Run nothing: merge the shards' results into results.json, results.md and the plot (an
        /// error naming the missing cells while shards are unfinished).
        #[arg(long)]
        merge: bool,
    },
    /// CLIP zero-shot accuracy with text prompts (the paper's TP baseline) on a dataset's test split.
    ZeroShot(ZeroShotArgs),
    /// Convert a model into a preset's weights file: a checkpoint as its library saves it
    /// (torchvision `.pth`, timm or Hugging Face `.safetensors`, open_clip `.bin`; read through the
    /// preset's key map) or an ONNX export (its graph checked to be the preset's). Every tensor must
    /// be present with the right shape; the format is detected from the content.
    Import {
        /// The preset: efficientnet-lite0, resnet18, resnet50, resnext101-32x8d, bit-m-r50x1,
        /// clip-vit-b32-image, clip-vit-b32-text (or a tiny-* test fixture).
        preset: Preset,
        /// The checkpoint or ONNX file (ONNX from `scripts/export_onnx.py`).
        #[arg(value_name = "CHECKPOINT")]
        onnx: PathBuf,
        /// The weights file to write (`.bpk`).
        output: PathBuf,
    },
    /// Show a prompt: template, sizes, parameter count and value statistics (a `.bpk` prompt file, or
    /// a run directory's selected prompt).
    Inspect {
        /// A prompt file or a run directory.
        path: PathBuf,
        /// Also write the prompt as a PNG here.
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A TOML run config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory (checkpoints, metrics, curves).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Data parallel: split each batch over these devices, comma-separated (`cuda:0,cuda:1`); the
    /// first is the main one (prompt, optimiser, validation) and replaces `--device`.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = device_name)]
    pub devices: Option<Vec<DeviceName>>,
    /// Data format: fashion-mnist, mnist, cifar10, cifar100, folder, csv.
    #[arg(long, value_parser = word::<DataFormat>)]
    pub data_format: Option<DataFormat>,
    /// Data directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Few-shot: N training images per class.
    #[arg(long)]
    pub few_shot: Option<usize>,
    /// Evaluate on N test images per class only.
    #[arg(long)]
    pub test_per_class: Option<usize>,
    /// Fraction of the training split held out for validation (0: none, keep the last epoch).
    #[arg(long, value_parser = finite_f64)]
    pub validation: Option<f64>,
    /// Select on N validation images per class only.
    #[arg(long)]
    pub validation_per_class: Option<usize>,
    /// Backbone preset.
    #[arg(long)]
    pub preset: Option<Preset>,
    /// Backbone weights file.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Prompt template as JSON, e.g. '{"Padding": {"pad": 30}}'.
    #[arg(long, value_parser = json::<PromptConfig>)]
    pub prompt: Option<PromptConfig>,
    /// Label mapping as JSON, e.g. '"FirstN"' or '{"Iterative": {"every": 1}}'.
    #[arg(long, value_parser = json::<LabelMappingConfig>)]
    pub mapping: Option<LabelMappingConfig>,
    /// Optimiser as JSON, e.g. '{"Adam": {"beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0}}'
    /// (default: the recipe's).
    #[arg(long, value_parser = json::<OptimizerConfig>)]
    pub optimizer: Option<OptimizerConfig>,
    /// Recipe: paper, ilm-vp, evp.
    #[arg(long, value_parser = word::<Recipe>)]
    pub recipe: Option<Recipe>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate.
    #[arg(long, value_parser = finite_f64)]
    pub lr: Option<f64>,
    /// Seed of the batch order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Start the run again instead of resuming it: once the new run's inputs are read, the files
    /// a run writes are removed from its directory; other files there are kept.
    #[arg(long)]
    pub fresh: bool,
}

/// A plain word (`fashion-mnist`, `ilm-vp`) read as a typed value (a unit enum variant).
fn word<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    let word: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = text.into_deserializer();
    T::deserialize(word).map_err(|e| e.to_string())
}

impl TrainArgs {
    /// The run config: the file's (or one built from `--run-dir`, `--data-format`, `--data`),
    /// with every given flag overriding its setting.
    pub fn run_config(&self) -> anyhow::Result<RunConfig> {
        let mut config = match &self.config {
            Some(path) => vprompt::run::read_config_file::<RunConfig>(path, "run config")?,
            None => match (&self.run_dir, self.data_format, &self.data) {
                (Some(run_dir), Some(format), Some(data)) => {
                    RunConfig::new(run_dir.clone(), DataConfig::new(format, data.clone()))
                }
                (run_dir, format, data) => {
                    let missing: Vec<&str> = [
                        ("--run-dir", run_dir.is_none()),
                        ("--data-format", format.is_none()),
                        ("--data", data.is_none()),
                    ]
                    .into_iter()
                    .filter_map(|(flag, missing)| missing.then_some(flag))
                    .collect();
                    anyhow::bail!(
                        "no run config: give --config FILE, or --run-dir, --data-format and --data \
                         (missing: {})",
                        missing.join(", ")
                    );
                }
            },
        };
        let c = &mut config;
        if let Some(v) = &self.run_dir {
            c.run_dir = v.clone();
        }
        if let Some(v) = self.data_format {
            c.data.format = v;
        }
        if let Some(v) = &self.data {
            c.data.path = v.clone();
        }
        c.data.few_shot = self.few_shot.or(c.data.few_shot);
        c.data.test_per_class = self.test_per_class.or(c.data.test_per_class);
        c.data.validation = self.validation.unwrap_or(c.data.validation);
        c.data.validation_per_class = self.validation_per_class.or(c.data.validation_per_class);
        c.backbone.preset = self.preset.unwrap_or(c.backbone.preset);
        c.backbone.weights = self.weights.clone().or(c.backbone.weights.take());
        if let Some(v) = &self.prompt {
            c.prompt = v.clone();
        }
        if let Some(v) = &self.mapping {
            c.mapping = v.clone();
        }
        let training_flags = [
            ("--recipe", self.recipe.is_some()),
            ("--epochs", self.epochs.is_some()),
            ("--batch-size", self.batch_size.is_some()),
            ("--lr", self.lr.is_some()),
            ("--seed", self.seed.is_some()),
            ("--optimizer", self.optimizer.is_some()),
        ];
        match &mut c.method {
            MethodConfig::VisualPrompt(t) => {
                t.recipe = self.recipe.unwrap_or(t.recipe);
                t.epochs = self.epochs.or(t.epochs);
                t.batch_size = self.batch_size.or(t.batch_size);
                t.learning_rate = self.lr.or(t.learning_rate);
                t.seed = self.seed.or(t.seed);
                t.optimizer = self.optimizer.clone().or(t.optimizer.take());
            }
            method => {
                if let Some((flag, _)) = training_flags.iter().find(|(_, given)| *given) {
                    anyhow::bail!(
                        "{flag} sets a visual-prompt run's training; this config's method is {} \
                         (set its settings in the config's [{}] section)",
                        method.name(),
                        method.key()
                    );
                }
            }
        }
        Ok(config)
    }
}

#[derive(clap::Args)]
pub struct ZeroShotArgs {
    /// Image tower preset (clip-vit-b32-image, or tiny-vit).
    #[arg(long, default_value = "clip-vit-b32-image")]
    pub image_preset: Preset,
    /// Image tower weights.
    #[arg(long)]
    pub image_weights: PathBuf,
    /// Text tower preset (clip-vit-b32-text, or tiny-clip-text).
    #[arg(long, default_value = "clip-vit-b32-text")]
    pub text_preset: Preset,
    /// Text tower weights.
    #[arg(long)]
    pub text_weights: PathBuf,
    /// Data format (as for train).
    #[arg(long, value_parser = word::<DataFormat>)]
    pub data_format: DataFormat,
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Evaluate on N test images per class only.
    #[arg(long)]
    pub test_per_class: Option<usize>,
    /// Template with `{}` for the class name (default: the paper's "This is a photo of a {}").
    #[arg(long)]
    pub template: Option<String>,
    /// Average over OpenAI's 80 ImageNet templates instead.
    #[arg(long)]
    pub ensemble: bool,
}

/// A device name, checked against this build (so `--device cuda` fails at parsing, naming the
/// feature to build with).
fn device_name(text: &str) -> Result<DeviceName, vprompt::DeviceError> {
    let name: DeviceName = text.parse()?;
    name.device()?;
    Ok(name)
}

/// A finite floating-point flag value (clap's parser accepts `nan` and `inf`).
fn finite_f64(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("must be a finite number, got {value}"))
    }
}

/// A typed value given on the command line as JSON (`--prompt '{"Padding": {"pad": 30}}'`).
fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn flag_values_are_typed() {
        assert_eq!(
            super::finite_f64("nan").unwrap_err(),
            "must be a finite number, got NaN"
        );
        assert_eq!(super::finite_f64("0.25"), Ok(0.25));
    }
}
