//! Regenerates vprompt's committed backbone code from ONNX exports, or checks that it is current.
//!
//! ```text
//! cargo run --release -p vprompt-codegen -- generate [--onnx-dir DIR]   # write the code
//! cargo run --release -p vprompt-codegen -- check    [--onnx-dir DIR]   # compare, exit 1 on a difference
//! cargo run --release -p vprompt-codegen -- import PRESET MODEL.onnx OUT.bpk
//! cargo run --release -p vprompt-codegen -- inspect MODEL.onnx OUT_DIR    # code + weights of any ONNX
//! cargo run --release -p vprompt-codegen -- keymap PRESET SOURCE MODEL.onnx CHECKPOINT OUT.json [IGNORE...]
//! ```
//!
//! `keymap` derives how a checkpoint of another library (safetensors or a PyTorch state dict) maps
//! onto a preset's generated tensors, from an export of the same architecture with the same
//! (random) weights (`scripts/native_checkpoints.py` writes both): the export must generate the
//! preset's committed code, every generated tensor must be found in the checkpoint (see
//! `vprompt_backbone::checkpoint::derive`), and the map is applied once and compared before it is
//! written. IGNORE are checkpoint keys the preset does not use (`text_model.*`).
//!
//! For each preset, the ONNX file is `<DIR>/<export name>.onnx`: `tiny_resnet.onnx`,
//! `tiny_resnet50.onnx`, `tiny_resnext.onnx`, `tiny_bit.onnx`, `tiny_vit.onnx`,
//! `tiny_clip_text.onnx` (committed in `crates/vprompt-backbone/tests/fixtures`, the default
//! directory), `efficientnet-lite0.onnx` (made by `models/efficientnet-lite0/make_weights.sh`),
//! and `resnet18.onnx`, `resnet50-v1.onnx`, `resnext101-32x8d.onnx`, `bit-m-r50x1.onnx`,
//! `clip-vit-b32-image.onnx`, `clip-vit-b32-text.onnx` (made by `scripts/export_onnx.py NAME OUT
//! --random-weights`). Presets whose file is absent are skipped and listed.
//!
//! The key maps in `crates/vprompt-backbone/keymaps/` were derived with `keymap` from the outputs
//! of `scripts/native_checkpoints.py SOURCE DIR` (full size; `--reduced` for the tiny presets):
//!
//! ```text
//! keymap resnet50 "torchvision resnet50 state dict (.pth)" DIR/model.onnx DIR/resnet50.pth OUT.json '*.num_batches_tracked'
//! keymap bit-m-r50x1 "timm resnetv2_50x1_bit.goog_in21k (.safetensors, .bin)" DIR/model.onnx DIR/model.safetensors OUT.json
//! keymap clip-vit-b32-image "transformers CLIPModel (...)" DIR/image.onnx DIR/model.safetensors OUT.json \
//!     'text_model.*' text_projection.weight logit_scale
//! keymap clip-vit-b32-text "transformers CLIPModel (...)" DIR/text.onnx DIR/model.safetensors OUT.json \
//!     'vision_model.*' visual_projection.weight
//! ```
//!
//! (open_clip's image tower ignores `transformer.*`, `token_embedding.weight`,
//! `positional_embedding`, `ln_final.*`, `text_projection` and `logit_scale`; its text tower
//! `visual.*`.) A text tower's map reads `logit_scale` unless it is ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vprompt_backbone::Preset;
use vprompt_backbone::checkpoint::Recipe;
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
        Some("inspect") if args.len() == 3 => inspect(Path::new(&args[1]), Path::new(&args[2])),
        Some("keymap") if args.len() >= 6 => keymap(
            &args[1],
            &args[2],
            Path::new(&args[3]),
            Path::new(&args[4]),
            Path::new(&args[5]),
            &args[6..],
        ),
        _ => Err(
            "usage: vprompt-codegen generate|check [--onnx-dir DIR] | import PRESET MODEL.onnx OUT.bpk \
             | inspect MODEL.onnx OUT_DIR | keymap PRESET SOURCE MODEL.onnx CHECKPOINT OUT.json [IGNORE...]"
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

/// Writes what burn-onnx generates from any ONNX file, code (`model.rs`) and weights
/// (`model.bpk`), to `out`: for looking at a new architecture before it becomes a preset.
fn inspect(onnx: &Path, out: &Path) -> Result<(), String> {
    let generated = import::generate(onnx).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(out.join("model.rs"), &generated.code).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::copy(&generated.weights, out.join("model.bpk"))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {}/model.rs and model.bpk", out.display());
    Ok(())
}

fn keymap(
    preset: &str,
    source: &str,
    onnx: &Path,
    checkpoint: &Path,
    out: &Path,
    ignore: &[String],
) -> Result<(), String> {
    // `-`: an architecture that is not a preset yet (the code is not compared).
    let preset: Option<Preset> = (preset != "-")
        .then(|| {
            preset
                .parse()
                .map_err(|e: vprompt_backbone::BackboneError| e.to_string())
        })
        .transpose()?;
    let (map, worst) =
        import::derive_key_map(preset, source, onnx, checkpoint, ignore).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&map).map_err(|e| e.to_string())?;
    std::fs::write(out, json + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    let counts = map
        .tensors
        .values()
        .fold(BTreeMap::<&str, usize>::new(), |mut c, r| {
            *c.entry(recipe_kind(r)).or_default() += 1;
            c
        });
    println!(
        "{} from {source}: wrote {} ({} tensors: {counts:?}; largest relative difference {worst:.1e})",
        preset.map_or("-".to_string(), |p| p.to_string()),
        out.display(),
        map.tensors.len()
    );
    Ok(())
}

fn recipe_kind(recipe: &Recipe) -> &'static str {
    match recipe {
        Recipe::Key(_) => "key",
        Recipe::Transposed(_) => "transposed",
        Recipe::Concat(_) => "concat",
        Recipe::ConcatTransposed(_) => "concat_transposed",
        Recipe::FoldBnWeight { .. } => "fold_bn_weight",
        Recipe::FoldBnBias { .. } => "fold_bn_bias",
        Recipe::Values(_) => "values",
        Recipe::CausalMask { .. } => "causal_mask",
        Recipe::Standardized { .. } => "standardized",
        Recipe::Fill { .. } => "fill",
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
