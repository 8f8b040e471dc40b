//! Regenerates vprompt's committed backbone code from ONNX exports, or checks that it is current.
//!
//! ```text
//! cargo run --release -p vprompt-codegen -- generate [--onnx-dir DIR]   # write the code
//! cargo run --release -p vprompt-codegen -- check    [--onnx-dir DIR]   # compare, exit 1 on a difference
//! cargo run --release -p vprompt-codegen -- import PRESET MODEL.onnx OUT.bpk
//! ```
//!
//! For each preset, the ONNX file is `<DIR>/<export name>.onnx`: `tiny_resnet.onnx`,
//! `tiny_vit.onnx`, `tiny_clip_text.onnx` (committed in `crates/vprompt-backbone/tests/fixtures`,
//! the default directory), `efficientnet-lite0.onnx` (made by `models/efficientnet-lite0/make_weights.sh`),
//! and `resnet18.onnx`, `resnet50-v1.onnx`, `resnext101-32x8d.onnx`, `clip-vit-b32-image.onnx`,
//! `clip-vit-b32-text.onnx` (made by `scripts/export_onnx.py NAME OUT --random-weights`). Presets
//! whose file is absent are skipped and listed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vprompt_backbone::Preset;
use vprompt_backbone::import::{self, committed_code};

const FIXTURES: &str = "crates/vprompt-backbone/tests/fixtures";
const GENERATED: &str = "crates/vprompt-backbone/src/generated";

fn main() -> ExitCode {
    // burn-onnx logs every node at DEBUG unless a subscriber is already installed.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("generate") => regenerate(onnx_dir(&args[1..]), true),
        Some("check") => regenerate(onnx_dir(&args[1..]), false),
        Some("import") if args.len() == 4 => import_weights(&args[1], &args[2], &args[3]),
        _ => Err(
            "usage: vprompt-codegen generate|check [--onnx-dir DIR] | import PRESET MODEL.onnx OUT.bpk"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn onnx_dir(args: &[String]) -> PathBuf {
    match args {
        [flag, dir] if flag == "--onnx-dir" => PathBuf::from(dir),
        _ => PathBuf::from(FIXTURES),
    }
}

/// The file name of a preset's generated module.
fn module_file(preset: Preset) -> String {
    format!("{}.rs", preset.name().replace('-', "_"))
}

fn regenerate(dir: PathBuf, write: bool) -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = if dir.is_absolute() {
        dir
    } else {
        workspace.join(dir)
    };
    let mut stale = Vec::new();
    let mut skipped = Vec::new();
    for preset in Preset::ALL {
        let onnx = dir.join(format!("{}.onnx", preset.export_name()));
        if !onnx.exists() {
            skipped.push(preset.name());
            continue;
        }
        let generated = import::generate(&onnx).map_err(|e| e.to_string())?;
        let target = workspace.join(GENERATED).join(module_file(preset));
        if generated.code == committed_code(preset) {
            println!("{preset}: up to date");
        } else if write {
            std::fs::write(&target, &generated.code).map_err(|e| format!("{}: {e}", target.display()))?;
            println!("{preset}: wrote {}", target.display());
        } else {
            stale.push(preset.name());
            println!(
                "{preset}: committed code differs from what burn-onnx generates from {}",
                onnx.display()
            );
        }
    }
    if !skipped.is_empty() {
        println!(
            "skipped (no ONNX file in {}): {}",
            dir.display(),
            skipped.join(", ")
        );
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "stale generated code: {}; run `cargo run --release -p vprompt-codegen -- generate`",
            stale.join(", ")
        ))
    }
}

fn import_weights(preset: &str, onnx: &str, out: &str) -> Result<(), String> {
    let preset: Preset = preset
        .parse()
        .map_err(|e: vprompt_backbone::BackboneError| e.to_string())?;
    let report =
        import::import_weights(preset, Path::new(onnx), Path::new(out)).map_err(|e| e.to_string())?;
    println!(
        "{}: wrote {} ({} tensors, {} values)",
        report.preset,
        report.output.display(),
        report.tensors,
        report.values
    );
    Ok(())
}
