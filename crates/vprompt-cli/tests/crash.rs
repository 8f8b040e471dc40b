//! Nothing is lost on a crash: `vprompt train` killed with SIGKILL at random moments (while it
//! trains, validates, writes a checkpoint or the metrics), then run again with the same command,
//! resumes each time and ends with the prompt and metrics of a run that was never interrupted,
//! bit for bit on flex.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vprompt::prelude::*;
use vprompt::{Phase, Prompt, VisualPrompt};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(run: &Path) -> String {
    let weights = workspace()
        .join("crates/vprompt-backbone/tests/fixtures/native/transformers-clip/model.safetensors")
        .display()
        .to_string();
    let data = workspace()
        .join("tests/fixtures/fashion-mnist")
        .display()
        .to_string();
    format!(
        r#"run_dir = "{}"
[data]
format = "fashion-mnist"
path = "{data}"
few_shot = 16
validation_per_class = 4
test_per_class = 4
[backbone]
preset = "tiny-vit"
weights = "{weights}"
text_preset = "tiny-clip-text"
text_weights = "{weights}"
[prompt]
Padding = {{ pad = 4 }}
[method.VisualPrompt]
epochs = 12
"#,
        run.display()
    )
}

fn train(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vprompt"));
    command
        .args(["train", "--quiet", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// `metrics.jsonl` without the throughput, the one field that depends on the clock.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(map) = value.as_object_mut() {
                map.remove("images_per_second");
            }
            value
        })
        .collect()
}

/// The values of the prompt file `path`.
fn prompt_values(path: &Path) -> Vec<u32> {
    let prompt = Prompt::load(path, &Device::flex()).unwrap();
    bits(prompt.perturbation(Phase::Eval { batch: 0 }))
}

fn bits(tensor: Tensor<4>) -> Vec<u32> {
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, killed) = (dir.path().join("reference"), dir.path().join("killed"));
    let (reference_toml, killed_toml) = (dir.path().join("reference.toml"), dir.path().join("killed.toml"));
    std::fs::write(&reference_toml, config(&reference)).unwrap();
    std::fs::write(&killed_toml, config(&killed)).unwrap();

    let started = std::time::Instant::now();
    assert!(train(&reference_toml).status().unwrap().success());
    let full = started.elapsed();

    // Kills spread over the run's length (seeded), each followed by the same command again.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut kills = 0;
    for _ in 0..10 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let fraction = (seed >> 33) as f64 / (1u64 << 31) as f64;
        let mut child = train(&killed_toml).spawn().unwrap();
        // Within the first third of a whole run: each resumed run has less left to do.
        std::thread::sleep(full.mul_f64(0.05 + 0.3 * fraction));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 3, "only {kills} runs were still going when killed");
    let status = train(&killed_toml).status().unwrap();
    assert!(status.success(), "the last resume failed");

    assert_eq!(metrics(&killed), metrics(&reference));
    // The last checkpoint's prompt, and the selected one.
    let last = "checkpoints/epoch-00012/prompt.bpk";
    assert_eq!(
        prompt_values(&killed.join(last)),
        prompt_values(&reference.join(last))
    );
    let best = |run: &Path| -> PathBuf {
        let pointer: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("best.json")).unwrap()).unwrap();
        run.join(pointer["dir"].as_str().unwrap()).join("prompt.bpk")
    };
    assert_eq!(prompt_values(&best(&killed)), prompt_values(&best(&reference)));
}
