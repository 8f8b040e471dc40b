//! The `vprompt` command-line tool: train, evaluate, apply and inspect visual prompts, run
//! experiments and CLIP zero-shot baselines, and import ONNX weights.
//!
//! The library (`vprompt`, and its run layer `vprompt::run`) does the work; this crate holds what
//! only the tool needs: the command line ([`cli`]), what each command prints ([`commands`]) and
//! progress bars ([`progress`]).

mod cli;
mod commands;
mod progress;

use std::io::Write;
use std::process::ExitCode;

use burn::prelude::*;
use clap::Parser;

fn main() -> ExitCode {
    // burn-onnx logs every graph node at DEBUG level unless a subscriber is already installed.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    vprompt::tune_allocator();
    let cli = cli::Cli::parse();
    let result = device(cli.device).and_then(|device| commands::run(cli.command, &device));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`vprompt eval | head`) ends the output, not with an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn device(name: Option<vprompt::DeviceName>) -> anyhow::Result<Device> {
    let name = match name {
        Some(name) => name,
        None => vprompt::DeviceName::default_compiled()?,
    };
    Ok(name.device()?)
}
