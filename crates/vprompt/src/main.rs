//! The `vprompt` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vprompt::Preset;

#[derive(Parser)]
#[command(
    name = "vprompt",
    version,
    about = "Visual prompting: adapt a frozen vision model by learning pixels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an exported ONNX file into a preset's weights file, after checking that its graph is
    /// the preset's and that every tensor is present with the right shape.
    Import {
        /// The preset: efficientnet-lite0, resnet50, resnext101-32x8d, clip-vit-b32-image,
        /// clip-vit-b32-text (or a tiny-* test fixture).
        preset: Preset,
        /// The ONNX file (from `scripts/export_onnx.py`).
        onnx: PathBuf,
        /// The weights file to write (`.bpk`).
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    // burn-onnx logs every graph node at DEBUG level unless a subscriber is already installed.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Import { preset, onnx, output } => {
            let report = vprompt::backbone::import::import_weights(preset, &onnx, &output)?;
            println!(
                "{}: wrote {} ({} tensors, {} values)",
                report.preset,
                report.output.display(),
                report.tensors,
                report.values
            );
        }
    }
    Ok(())
}
