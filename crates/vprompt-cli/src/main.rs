//! The `vprompt` command-line tool: train, evaluate, apply and inspect visual prompts, run
//! experiments and CLIP zero-shot baselines, and import ONNX weights.
//!
//! The library (`vprompt`) does the work; this crate holds what only the tool needs: the typed run
//! and experiment configs read from TOML ([`run`], [`experiment`], [`config`]), their runners,
//! progress bars ([`progress`]) and the command line ([`cli`], [`commands`]).

/// The unit tests' allocator records the largest allocation, for the config fuzz test's bound.
#[cfg(test)]
#[global_allocator]
static ALLOC: vprompt_testkit::fuzz::CountingAllocator = vprompt_testkit::fuzz::CountingAllocator;

mod cli;
mod commands;
mod config;
mod experiment;
mod progress;
mod remote;
mod run;
mod shard;

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
