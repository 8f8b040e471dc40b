//! Draws every prompt template at its initialisation as a PNG, to see what each one covers, and
//! saves its exact values as a `.bpk` file beside it.
//!
//! Run: `cargo run --release --example prompt_gallery -- [OUTPUT_DIR]` (default `target/prompt-gallery`).

use anyhow::Context;
use vprompt::prelude::*;

fn main() -> anyhow::Result<()> {
    let vprompt::DeviceArgs { device, args, .. } = vprompt::device_from_args(std::env::args().skip(1))?;
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "target/prompt-gallery".into());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {out}"))?;
    let templates: Vec<(&str, PromptConfig)> = vec![
        ("padding-p30", PaddingPromptConfig::new(30).into()),
        ("fixed-patch-p30", FixedPatchPromptConfig::new(30).into()),
        (
            "single-pixel",
            FixedPatchPromptConfig::new(1).with_position([112, 112]).into(),
        ),
        ("random-patch-p30", RandomPatchPromptConfig::new(30).into()),
        ("full-image", FullImagePromptConfig::new().into()),
        (
            "shrink-frame-p30",
            ShrinkFramePromptConfig::new(30)
                .with_init(PromptInit::RANDN)
                .into(),
        ),
    ];
    for (name, config) in templates {
        let prompt = config.init([224, 224], &device)?;
        let path = format!("{out}/{name}.png");
        let scale = prompt.save_png(&path)?;
        // The exact values too, for `Prompt::load` (or another framework: `scripts/torch_vp_epoch.py
        // --init` starts PyTorch from `padding-p30.bpk`, the medium profile's initial prompt).
        prompt.save(format!("{out}/{name}.bpk"))?;
        println!(
            "{path}: {} learned values, grey = 0, black/white = -/+{scale:.2}; values in {name}.bpk",
            prompt.num_params()
        );
    }
    Ok(())
}
