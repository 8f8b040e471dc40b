//! What the CLI tests share: running the built `vprompt` and checking its output.

#![allow(dead_code)] // each test file uses some of these

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn vprompt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vprompt"))
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub fn ok(args: &[&str]) -> String {
    let out = vprompt(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vprompt {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(args: &[&str], needle: &str) {
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

pub fn fixture(name: &str) -> String {
    workspace()
        .join("crates/vprompt-backbone/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// The head of an experiment grid on the committed Fashion-MNIST subset and the tiny ResNet
/// (TOML): `title`, `seeds`, the dataset `F-MNIST` with `few_shot` training, 2 validation and
/// `test_per_class` test images per class, and the backbone `resnet` with `weights`. Tests append
/// the rest of the grid.
pub fn fixture_grid(
    title: &str,
    seeds: &[u64],
    few_shot: usize,
    test_per_class: usize,
    weights: &str,
) -> String {
    format!(
        r#"title = "{title}"
seeds = {seeds:?}

[[datasets]]
name = "F-MNIST"
data = {{ format = "fashion-mnist", path = "{data}", few_shot = {few_shot}, validation_per_class = 2, test_per_class = {test_per_class} }}

[[backbones]]
name = "resnet"
model = {{ preset = "tiny-resnet", weights = "{weights}" }}
"#,
        data = workspace().join("tests/fixtures/fashion-mnist").display(),
    )
}
