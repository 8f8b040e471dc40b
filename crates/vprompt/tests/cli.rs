//! The `vprompt` tool end to end on the committed fixtures: import a backbone's ONNX, train one
//! epoch on the Fashion-MNIST subset, evaluate, apply, inspect, a CLIP zero-shot baseline, and the
//! errors a person sees for bad input (a message, a non-zero exit, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vprompt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vprompt"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = vprompt(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vprompt {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], needle: &str) {
    let out = vprompt(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "vprompt {args:?} should fail");
    assert!(
        stderr.contains(needle),
        "vprompt {args:?}: expected `{needle}` in:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "vprompt {args:?} panicked:\n{stderr}"
    );
}

fn fixture(name: &str) -> String {
    workspace()
        .join("crates/vprompt-backbone/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn train_eval_apply_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let out = ok(&[
        "import",
        "tiny-resnet",
        &fixture("tiny_resnet.onnx"),
        &path("tiny-resnet.bpk"),
    ]);
    assert!(out.contains("tiny-resnet: wrote"), "{out}");

    let config = format!(
        r#"run_dir = "{run}"

[data]
format = "fashion-mnist"
path = "{data}"
test_per_class = 20

[backbone]
preset = "tiny-resnet"
weights = "{weights}"

[prompt]
FullImage = {{ init = "Zeros" }}

[training]
recipe = "ilm-vp"
learning_rate = 0.05
batch_size = 32
"#,
        run = path("run"),
        data = workspace().join("tests/fixtures/fashion-mnist").display(),
        weights = path("tiny-resnet.bpk"),
    );
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    // Flags override the file: one epoch instead of the recipe's 200.
    let out = ok(&["train", "--config", &path("run.toml"), "--epochs", "1", "--quiet"]);
    assert!(out.contains("top-1"), "{out}");
    for file in [
        "run.json",
        "classes.txt",
        "metrics.jsonl",
        "loss.png",
        "accuracy.png",
        "prompt.png",
        "best.json",
    ] {
        assert!(dir.path().join("run").join(file).exists(), "{file}");
    }
    let effective: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/run.json")).unwrap()).unwrap();
    assert_eq!(effective["training"]["epochs"], 1);

    let out = ok(&["eval", "--run", &path("run")]);
    assert!(
        out.contains("200 images") && out.contains("prompted  unprompted"),
        "{out}"
    );

    let image = workspace()
        .join("tests/fixtures/rgb-folder/cat/cat0.png")
        .display()
        .to_string();
    let out = ok(&["apply", "--run", &path("run"), "--out", &path("applied"), &image]);
    assert!(out.contains("cat0.png:") && out.contains('%'), "{out}");
    let png = image::open(dir.path().join("applied/cat0.png")).unwrap();
    assert_eq!((png.width(), png.height()), (32, 32));

    let out = ok(&["inspect", &path("run"), "--png", &path("prompt.png")]);
    assert!(out.contains("parameters    3072"), "{out}");
    assert!(dir.path().join("prompt.png").exists());
}

#[test]
fn zero_shot_with_the_tiny_clip_towers() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    ok(&["import", "tiny-vit", &fixture("tiny_vit.onnx"), &path("vit.bpk")]);
    ok(&[
        "import",
        "tiny-clip-text",
        &fixture("tiny_clip_text.onnx"),
        &path("text.bpk"),
    ]);
    let data = workspace()
        .join("tests/fixtures/fashion-mnist")
        .display()
        .to_string();
    let out = ok(&[
        "zero-shot",
        "--image-preset",
        "tiny-vit",
        "--image-weights",
        &path("vit.bpk"),
        "--text-preset",
        "tiny-clip-text",
        "--text-weights",
        &path("text.bpk"),
        "--data-format",
        "fashion-mnist",
        "--data",
        &data,
        "--test-per-class",
        "5",
    ]);
    assert!(out.contains("zero-shot on 50 test images"), "{out}");
}

#[test]
fn bad_input_gives_a_message_and_a_failing_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    fails(&["train", "--config", &path("missing.toml")], "cannot read");
    std::fs::write(dir.path().join("bad.toml"), "run_dir = [").unwrap();
    fails(&["train", "--config", &path("bad.toml")], "not valid TOML");
    fails(
        &["train", "--run-dir", &path("r"), "--data-format", "fashion-mnist"],
        "invalid run config",
    );
    fails(
        &[
            "train",
            "--run-dir",
            &path("r"),
            "--data-format",
            "fashion-mnist",
            "--data",
            &path("nowhere"),
        ],
        "nowhere",
    );
    fails(
        &[
            "train",
            "--run-dir",
            &path("r"),
            "--data-format",
            "fashion-mnist",
            "--data",
            ".",
            "--prompt",
            "{\"Padding\": {\"pad\": 200}}",
        ],
        "largest frame",
    );
    fails(
        &[
            "train",
            "--run-dir",
            &path("r"),
            "--data-format",
            "fashion-mnist",
            "--data",
            ".",
            "--preset",
            "resnet50",
        ],
        "scripts/export_onnx.py",
    );
    fails(&["eval", "--run", &path("nothing")], "run.json");
    fails(&["inspect", &path("nothing.bpk")], "nothing.bpk");
    fails(
        &["import", "resnet50", &fixture("tiny_vit.onnx"), &path("x.bpk")],
        "is not a `resnet50` graph",
    );
    fails(&["--device", "cuda", "inspect", "x"], "not compiled");
}
