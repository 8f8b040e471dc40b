//! The `vprompt` tool end to end on the committed fixtures: import a backbone's ONNX, train one
//! epoch on the Fashion-MNIST subset, evaluate, apply, inspect, a CLIP zero-shot baseline, and the
//! errors a person sees for bad input (a message, a non-zero exit, never a panic).

use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::*;

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
input_size = [40, 40]  # not the preset's 32: eval, apply and inspect must read it back from the run

[prompt]
FullImage = {{ init = "Zeros" }}

[method.VisualPrompt]
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
    let out_train = ok(&["train", "--config", &path("run.toml"), "--epochs", "1", "--quiet"]);
    assert!(out_train.contains("top-1"), "{out_train}");
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
    assert_eq!(effective["method"]["VisualPrompt"]["epochs"], 1);

    let out = ok(&["eval", "--run", &path("run")]);
    assert!(
        out.contains("200 images") && out.contains("prompted  unprompted"),
        "{out}"
    );
    // More epochs of a finished run: ILM-VP's schedule is laid over the run's length, so the
    // run cannot be extended exactly, and says so (a constant rate extends: vprompt-run's tests).
    fails(
        &["train", "--config", &path("run.toml"), "--epochs", "2", "--quiet"],
        "cannot be extended exactly",
    );

    let image = workspace()
        .join("tests/fixtures/rgb-folder/cat/cat0.png")
        .display()
        .to_string();
    let out = ok(&["apply", "--run", &path("run"), "--out", &path("applied"), &image]);
    assert!(out.contains("cat0.png:") && out.contains('%'), "{out}");
    let png = image::open(dir.path().join("applied/cat0.png")).unwrap();
    assert_eq!((png.width(), png.height()), (40, 40));
    // Applying again would overwrite: refused, the first output kept; two inputs that would
    // write the same file are refused before anything is written.
    let written = std::fs::read(dir.path().join("applied/cat0.png")).unwrap();
    fails(
        &["apply", "--run", &path("run"), "--out", &path("applied"), &image],
        "apply never overwrites",
    );
    assert_eq!(
        std::fs::read(dir.path().join("applied/cat0.png")).unwrap(),
        written
    );
    let twin = dir.path().join("twin");
    std::fs::create_dir(&twin).unwrap();
    std::fs::copy(&image, twin.join("cat0.png")).unwrap();
    fails(
        &[
            "apply",
            "--run",
            &path("run"),
            "--out",
            &path("applied-twice"),
            &image,
            &twin.join("cat0.png").display().to_string(),
        ],
        "would both be written to",
    );
    assert!(!dir.path().join("applied-twice").exists());

    let out = ok(&["inspect", &path("run"), "--png", &path("prompt.png")]);
    assert!(out.contains("parameters    4800"), "{out}"); // 3 x 40 x 40
    assert!(dir.path().join("prompt.png").exists());
    // Data parallel over two devices (here both flex): the same run, up to rounding, so the same
    // test report's top-1 line.
    let parallel = ok(&[
        "train",
        "--config",
        &path("run.toml"),
        "--epochs",
        "1",
        "--devices",
        "flex,flex",
        "--run-dir",
        &path("run-parallel"),
        "--quiet",
    ]);
    let top1 = |out: &str| out.lines().find(|l| l.contains("top-1")).map(str::to_string);
    assert_eq!(top1(&parallel), top1(&out_train), "{parallel}");
    fails(
        &["train", "--config", &path("run.toml"), "--devices", "flex,,flex"],
        "empty device name",
    );
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

/// A test folder whose classes differ from the training folder's is refused before anything
/// trains (labels index the class list: they would be scored against the wrong classes).
#[test]
fn folders_with_other_classes_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let folder = workspace().join("tests/fixtures/rgb-folder");
    let test = dir.path().join("test");
    for class in ["cat", "coffee", "tea"] {
        let from = folder.join(if class == "tea" { "rocket" } else { class });
        std::fs::create_dir_all(test.join(class)).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), test.join(class).join(entry.file_name())).unwrap();
        }
    }
    let config = format!(
        "run_dir = \"{}\"\n[data]\nformat = \"folder\"\npath = \"{}\"\ntest_path = \"{}\"\n",
        dir.path().join("run").display(),
        folder.display(),
        test.display()
    );
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    fails(
        &[
            "train",
            "--config",
            &dir.path().join("run.toml").display().to_string(),
        ],
        "only",
    );
    let out = vprompt(&[
        "train",
        "--config",
        &dir.path().join("run.toml").display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`rocket`") && stderr.contains("`tea`"),
        "{stderr}"
    );
    assert!(!dir.path().join("run/metrics.jsonl").exists(), "nothing trained");
}

/// A run directory is resumed only by the same run: another prompt size is refused before
/// anything is written, naming the setting; a directory with checkpoints but no run config is
/// refused, never trained over.
#[test]
fn a_run_directory_resumes_only_its_own_run() {
    let dir = tempfile::tempdir().unwrap();
    let weights_path = dir.path().join("clip.safetensors");
    std::fs::copy(
        fixture("native/transformers-clip/model.safetensors"),
        &weights_path,
    )
    .unwrap();
    let weights = weights_path.display().to_string();
    // A copy of the fixture, changed below.
    let copy = dir.path().join("data");
    std::fs::create_dir(&copy).unwrap();
    for split in ["train", "test"] {
        for part in ["images-idx3", "labels-idx1"] {
            let name = format!("{split}-{part}-ubyte.gz");
            std::fs::copy(
                workspace().join("tests/fixtures/fashion-mnist").join(&name),
                copy.join(&name),
            )
            .unwrap();
        }
    }
    let data = copy.display().to_string();
    let run = dir.path().join("run");
    let config = |pad: usize| {
        format!(
            "run_dir = \"{}\"\n[data]\nformat = \"fashion-mnist\"\npath = \"{data}\"\nfew_shot = 4\ntest_per_class = 2\n\
             [backbone]\npreset = \"tiny-vit\"\nweights = \"{weights}\"\ntext_preset = \"tiny-clip-text\"\n\
             text_weights = \"{weights}\"\n[prompt]\nPadding = {{ pad = {pad} }}\n[method.VisualPrompt]\nepochs = 1\n",
            run.display()
        )
    };
    let file = |name: &str, pad: usize| {
        let path = dir.path().join(name);
        std::fs::write(&path, config(pad)).unwrap();
        path.display().to_string()
    };
    let (four, six) = (file("four.toml", 4), file("six.toml", 4 + 2));
    ok(&["train", "--config", &four, "--quiet"]);
    let recorded = std::fs::read(run.join("run.json")).unwrap();
    fails(
        &["train", "--config", &six, "--quiet"],
        "prompt.Padding.pad: 4 -> 6",
    );
    assert_eq!(
        std::fs::read(run.join("run.json")).unwrap(),
        recorded,
        "nothing rewritten"
    );
    ok(&["train", "--config", &four, "--quiet"]);

    // The same settings over changed files: training and evaluation refuse, naming it.
    for part in ["images-idx3", "labels-idx1"] {
        let (train, test) = (
            copy.join(format!("train-{part}-ubyte.gz")),
            copy.join(format!("test-{part}-ubyte.gz")),
        );
        let swap = copy.join("swap");
        std::fs::rename(&train, &swap).unwrap();
        std::fs::rename(&test, &train).unwrap();
        std::fs::rename(&swap, &test).unwrap();
    }
    let run_path = run.display().to_string();
    fails(&["eval", "--run", &run_path], "is not the one this run recorded");
    fails(
        &["train", "--config", &four, "--quiet"],
        "was trained on other data",
    );
    // Starting again is explicit.
    ok(&["train", "--config", &six, "--quiet", "--fresh"]);
    ok(&["eval", "--run", &run_path]);
    // Other weights under the same name (open_clip's file of another CLIP): refused as well.
    std::fs::copy(
        fixture("native/open-clip/open_clip_pytorch_model.bin"),
        &weights_path,
    )
    .unwrap();
    fails(
        &["eval", "--run", &run_path],
        "backbone.weights names has changed",
    );
    fails(
        &["train", "--config", &six, "--quiet"],
        "has changed since the run was trained",
    );

    std::fs::remove_file(run.join("run.json")).unwrap();
    fails(
        &["train", "--config", &four, "--quiet"],
        "holds checkpoints but no run.json",
    );
    // --fresh removes only what a run writes: a directory of the user's files keeps them, byte
    // for byte, and the config file beside them too.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let text = config(4).replace(&run_path, &other.display().to_string());
    let other_config = other.join("run.toml");
    std::fs::write(&other_config, &text).unwrap();
    let other_config = other_config.display().to_string();
    ok(&["train", "--config", &other_config, "--fresh", "--quiet"]);
    ok(&["train", "--config", &other_config, "--fresh", "--quiet"]);
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_to_string(other.join("run.toml")).unwrap(), text);
    assert!(other.join("run.json").exists() && other.join("best.json").exists());
    // --fresh with inputs that cannot be read trains nothing and loses nothing: the old run stays.
    let recorded = std::fs::read(other.join("run.json")).unwrap();
    let best = std::fs::read(other.join("best.json")).unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, text.replace(&data, "/nonexistent/data")).unwrap();
    fails(
        &[
            "train",
            "--config",
            &broken.display().to_string(),
            "--fresh",
            "--quiet",
        ],
        "/nonexistent/data",
    );
    assert_eq!(std::fs::read(other.join("run.json")).unwrap(), recorded);
    assert_eq!(std::fs::read(other.join("best.json")).unwrap(), best);
    ok(&["eval", "--run", &other.display().to_string()]);
}

/// `validation = 0` (the released code's setting): the whole training split trains, the last
/// epoch's prompt is kept, and the output says which epoch that is.
#[test]
fn without_validation_the_last_epoch_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("native/transformers-clip/model.safetensors");
    let data = workspace()
        .join("tests/fixtures/fashion-mnist")
        .display()
        .to_string();
    let run = dir.path().join("run");
    let config = format!(
        "run_dir = \"{}\"\n[data]\nformat = \"fashion-mnist\"\npath = \"{data}\"\nvalidation = 0.0\nfew_shot = 4\n\
         test_per_class = 2\n[backbone]\npreset = \"tiny-vit\"\nweights = \"{weights}\"\ntext_preset = \"tiny-clip-text\"\n\
         text_weights = \"{weights}\"\n[prompt]\nPadding = {{ pad = 4 }}\n[method.VisualPrompt]\nepochs = 3\n",
        run.display()
    );
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    let out = ok(&[
        "train",
        "--config",
        &dir.path().join("run.toml").display().to_string(),
        "--quiet",
    ]);
    assert!(
        out.contains("selected prompt (epoch 3, the last: no validation split)"),
        "{out}"
    );
    let best = std::fs::read_to_string(run.join("best.json")).unwrap();
    assert!(best.contains("epoch-00003"), "{best}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().take(3).all(|l| l.contains("\"valid_top1\":null")),
        "{metrics}"
    );
    ok(&["eval", "--run", &run.display().to_string()]);
}

/// A checkpoint as its library saves it works where a `.bpk` file does: both CLIP towers straight
/// from one open_clip `.bin`, and `import` of a timm `.safetensors` (detected by content).
#[test]
fn native_checkpoints_are_read_without_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = fixture("native/open-clip/open_clip_pytorch_model.bin");
    let data = workspace()
        .join("tests/fixtures/fashion-mnist")
        .display()
        .to_string();
    let out = ok(&[
        "zero-shot",
        "--image-preset",
        "tiny-vit",
        "--image-weights",
        &checkpoint,
        "--text-preset",
        "tiny-clip-text",
        "--text-weights",
        &checkpoint,
        "--data-format",
        "fashion-mnist",
        "--data",
        &data,
        "--test-per-class",
        "2",
    ]);
    assert!(out.contains("zero-shot on 20 test images"), "{out}");
    let bpk = dir.path().join("bit.bpk").display().to_string();
    let out = ok(&[
        "import",
        "tiny-bit",
        &fixture("native/timm-bit/model.safetensors"),
        &bpk,
    ]);
    assert!(out.contains("tiny-bit: wrote"), "{out}");
    fails(
        &[
            "import",
            "tiny-bit",
            &fixture("native/torchvision-resnet50/resnet50.pth"),
            &bpk,
        ],
        "not a checkpoint `tiny-bit` reads",
    );
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
        "no run config: give --config FILE, or --run-dir, --data-format and --data (missing: --data)",
    );
    // Without arguments: one clean sentence naming what is missing.
    fails(&["train"], "(missing: --run-dir, --data-format, --data)");
    // A data directory that is not there says what was expected and where Debian puts it.
    fails(
        &[
            "train",
            "--run-dir",
            &path("r"),
            "--data-format",
            "fashion-mnist",
            "--data",
            &path("no-such-dir"),
        ],
        "no such directory: MNIST-layout data",
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
    for (backbone, needle) in [
        (
            "preset = \"clip-vit-b32-image\"\nweights = \"x.bpk\"\ninput_size = [288, 288]",
            "position embeddings",
        ),
        ("input_size = [16, 224]", "32..=1024"),
    ] {
        let config = format!(
            "run_dir = \"{}\"\n[data]\nformat = \"fashion-mnist\"\npath = \".\"\n[backbone]\n{backbone}\n",
            path("r")
        );
        std::fs::write(dir.path().join("size.toml"), config).unwrap();
        fails(&["train", "--config", &path("size.toml")], needle);
    }
    fails(&["eval", "--run", &path("nothing")], "run.json");
    fails(&["inspect", &path("nothing.bpk")], "nothing.bpk");
    fails(
        &["import", "resnet50", &fixture("tiny_vit.onnx"), &path("x.bpk")],
        "is not a `resnet50` graph",
    );
    fails(
        &["--device", "cuda", "inspect", "x"],
        "build with `--features cuda`",
    );
    fails(&["--device", "cuda:x", "inspect", "x"], "must be a whole number");
}

/// `vprompt experiment` on the fixtures: a grid of 2 backbones (a vision model and a CLIP pair) x 4
/// methods x 2 seeds through a profile; the JSON of every run, the mean ± std table and the plot; the
/// consistency of the unprompted numbers; resume after an interruption; a refused mismatch.
#[test]
fn experiment_runs_a_grid_writes_its_table_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    ok(&[
        "import",
        "tiny-resnet",
        &fixture("tiny_resnet.onnx"),
        &path("resnet.bpk"),
    ]);
    ok(&["import", "tiny-vit", &fixture("tiny_vit.onnx"), &path("vit.bpk")]);
    ok(&[
        "import",
        "tiny-clip-text",
        &fixture("tiny_clip_text.onnx"),
        &path("text.bpk"),
    ]);
    let config = format!(
        r#"{head}
[[backbones]]
name = "clip"
model = {{ preset = "tiny-vit", weights = "{vit}", text_preset = "tiny-clip-text", text_weights = "{text}" }}

[training]
recipe = "ilm-vp"
learning_rate = 0.05
batch_size = 16

[[methods]]
name = "unprompted"
kind = "unprompted"

[[methods]]
name = "unprompted, frequency"
kind = "unprompted"
mapping = "Frequency"

[[methods]]
name = "vp"
kind = "visual-prompt"
prompt = {{ FullImage = {{ init = "Zeros" }} }}
text_template = "a photo of a {{}}"

[[methods]]
name = "vp, ILM"
kind = "visual-prompt"
prompt = {{ Padding = {{ pad = 4, init = "Zeros" }} }}
mapping = {{ Iterative = {{ every = 1 }} }}

[[methods]]
name = "probe"
kind = "linear-probe"

[probe]
epochs = 5

[plot]
x = "unprompted"
y = "gain"

[profiles.quick]
seeds = [0, 1]
epochs = 1
methods = ["unprompted", "vp", "probe"]
"#,
        head = fixture_grid("Fixture grid", &[0, 1, 2], 8, 5, &path("resnet.bpk")),
        vit = path("vit.bpk"),
        text = path("text.bpk"),
    );
    std::fs::write(dir.path().join("grid.toml"), &config).unwrap();
    let out_dir = dir.path().join("out");
    let run = || {
        let out = vprompt(&[
            "experiment",
            &path("grid.toml"),
            "--profile",
            "quick",
            "--out",
            &out_dir.display().to_string(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "experiment failed:\n{stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    };
    let (stdout, stderr) = run();
    assert!(stderr.contains("[12/12]"), "{stderr}");
    assert!(!stderr.contains("skipped"), "{stderr}");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap()).unwrap()
    };
    let results = read();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 12, "1 dataset x 2 backbones x 2 seeds x 3 methods");
    assert_eq!(results["profile"], "quick");
    let find = |backbone: &str, method: &str, seed: u64| {
        runs.iter()
            .find(|r| r["backbone"] == backbone && r["method"] == method && r["seed"] == seed)
            .unwrap_or_else(|| panic!("no run {backbone} / {method} / {seed}"))
            .clone()
    };
    for r in runs {
        let top1 = r["top1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&top1), "{r}");
        assert_eq!(r["test_images"], 50);
        assert_eq!(r["train_images"], 80, "exactly few_shot images per class");
    }
    for backbone in ["resnet", "clip"] {
        for seed in [0, 1] {
            // The visual-prompt run's "unprompted" is its head without the prompt: for first-N and for
            // a CLIP text head that is exactly the unprompted method's accuracy on the same test images
            // (the CLIP row differs only by the text template, so compare the resnet only).
            let vp = find(backbone, "vp", seed);
            assert!(vp["unprompted_top1"].is_number(), "{vp}");
            if backbone == "resnet" {
                assert_eq!(vp["unprompted_top1"], find(backbone, "unprompted", seed)["top1"]);
            }
            assert!(find(backbone, "probe", seed)["unprompted_top1"].is_null());
        }
    }
    let md = std::fs::read_to_string(out_dir.join("results.md")).unwrap();
    assert!(md.starts_with("# Fixture grid"), "{md}");
    assert!(
        md.contains("| method | F-MNIST / resnet | F-MNIST / clip |"),
        "{md}"
    );
    for method in ["| unprompted |", "| vp |", "| probe |"] {
        assert!(md.contains(method), "{md}");
    }
    assert!(!md.contains("| vp, ILM |"), "the profile runs 3 of the 5 methods");
    assert!(md.contains(" ± "), "{md}");
    assert!(stdout.contains("# Fixture grid"), "{stdout}");
    let png = image::open(out_dir.join("plot.png")).unwrap();
    assert_eq!((png.width(), png.height()), (640, 400));

    // Everything done: a rerun trains nothing.
    let (_, stderr) = run();
    assert_eq!(stderr.matches("done before, skipped").count(), 12, "{stderr}");
    // An interruption after 11 runs (the last run's record lost): only that run runs again.
    let mut cut = read();
    let last = cut["runs"].as_array_mut().unwrap().pop().unwrap();
    std::fs::write(out_dir.join("results.json"), cut.to_string()).unwrap();
    let (_, stderr) = run();
    assert_eq!(stderr.matches("done before, skipped").count(), 11, "{stderr}");
    let again = read();
    assert_eq!(again["runs"].as_array().unwrap().len(), 12);
    let redone = again["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&redone["method"], &redone["seed"]),
        (&last["method"], &last["seed"])
    );
    assert_eq!(
        redone["top1"], last["top1"],
        "a rerun of a seeded run gives the same accuracy"
    );

    // The same output directory with another profile's grid is refused, not mixed.
    std::fs::write(
        dir.path().join("grid2.toml"),
        config.replace("seeds = [0, 1]\nepochs = 1", "seeds = [0]\nepochs = 1"),
    )
    .unwrap();
    fails(
        &[
            "experiment",
            &path("grid2.toml"),
            "--profile",
            "quick",
            "--out",
            &out_dir.display().to_string(),
        ],
        "different config",
    );
    fails(
        &["experiment", &path("grid.toml"), "--profile", "huge"],
        "no profile `huge`",
    );
    std::fs::write(dir.path().join("bad.toml"), "title = 3").unwrap();
    fails(
        &["experiment", &path("bad.toml")],
        "not a valid experiment config",
    );
}

/// Typed configs: a setting that is not a finite number, of the wrong type, misspelt or out of
/// range is refused before anything runs, with its key path; flags are typed the same way.
#[test]
fn config_errors_name_the_key_and_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let data = workspace()
        .join("tests/fixtures/fashion-mnist")
        .display()
        .to_string();
    let write = |name: &str, training: &str| {
        let config = format!(
            "run_dir = \"{}\"\n[data]\nformat = \"fashion-mnist\"\npath = \"{data}\"\n[method.VisualPrompt]\n{training}\n",
            path("r")
        );
        std::fs::write(dir.path().join(name), config).unwrap();
    };
    for (training, needle) in [
        (
            "learning_rate = nan",
            "method.VisualPrompt.learning_rate: must be a finite number, got NaN",
        ),
        (
            "learning_rate = inf",
            "method.VisualPrompt.learning_rate: must be a finite number, got inf",
        ),
        (
            "learning_rate = -1.0",
            "method.VisualPrompt.learning_rate: must be finite and > 0, got -1",
        ),
        ("epochs = \"ten\"", "method.VisualPrompt.epochs: invalid type"),
        ("epoch = 10", "method.VisualPrompt.epoch: unknown field `epoch`"),
        (
            "recipe = \"papper\"",
            "method.VisualPrompt.recipe: unknown variant `papper`",
        ),
        (
            "schedule = { WarmupCosine = { warmpu = 3 } }",
            "method.VisualPrompt.schedule.WarmupCosine: unexpected keys in table: warmpu",
        ),
    ] {
        write("c.toml", training);
        fails(&["train", "--config", &path("c.toml")], needle);
    }
    // Zero images per class is named as the setting it is, not as a few-shot problem.
    let config = format!(
        "run_dir = \"{}\"\n[data]\nformat = \"fashion-mnist\"\npath = \"{data}\"\ntest_per_class = 0\n",
        path("r")
    );
    std::fs::write(dir.path().join("t.toml"), config).unwrap();
    fails(
        &["train", "--config", &path("t.toml")],
        "data.test_per_class: must be at least 1",
    );
    assert!(
        !dir.path().join("r").exists(),
        "nothing was written for a refused config"
    );
    write("ok.toml", "recipe = \"ilm-vp\"");
    fails(
        &["train", "--config", &path("ok.toml"), "--lr", "nan"],
        "invalid value 'nan' for '--lr <LR>': must be a finite number",
    );
    fails(
        &["train", "--config", &path("ok.toml"), "--recipe", "fast"],
        "unknown variant `fast`",
    );
    fails(
        &["train", "--config", &path("ok.toml"), "--preset", "resnet5"],
        "resnet5",
    );
}

/// Without a terminal, progress is plain lines on stderr; with `--quiet`, none.
#[test]
fn progress_is_plain_lines_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    ok(&[
        "import",
        "tiny-resnet",
        &fixture("tiny_resnet.onnx"),
        &path("tiny-resnet.bpk"),
    ]);
    let data = workspace().join("tests/fixtures/fashion-mnist");
    let args = |run: &str, quiet: bool| {
        let mut args = vec![
            "train".to_string(),
            "--run-dir".into(),
            path(run),
            "--data-format".into(),
            "fashion-mnist".into(),
            "--data".into(),
            data.display().to_string(),
            "--preset".into(),
            "tiny-resnet".into(),
            "--weights".into(),
            path("tiny-resnet.bpk"),
            "--few-shot".into(),
            "5".into(),
            "--test-per-class".into(),
            "2".into(),
            "--recipe".into(),
            "ilm-vp".into(),
            "--prompt".into(),
            "{\"FullImage\": {}}".into(),
            "--epochs".into(),
            "1".into(),
        ];
        if quiet {
            args.push("--quiet".into());
        }
        args
    };
    let run = |run: &str, quiet: bool| {
        let args = args(run, quiet);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = vprompt(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = run("loud", false);
    for needle in ["training into", "epoch 1/1: train loss", "validation top-1"] {
        assert!(stderr.contains(needle), "`{needle}` in:\n{stderr}");
    }
    assert!(!stderr.contains('\r'), "no bars redrawn in a log:\n{stderr}");
    assert_eq!(run("quiet", true), "");
}

/// A grid run as a Slurm job array (`experiments/slurm-array.sh`), its three shares started at
/// once as background processes: each share records its own cells, the last to finish writes the
/// merged results, and they equal one process's run of the same grid, cell for cell.
#[test]
fn an_experiment_split_into_shares_merges_into_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    ok(&[
        "import",
        "tiny-resnet",
        &fixture("tiny_resnet.onnx"),
        &path("resnet.bpk"),
    ]);
    let config = format!(
        r#"{head}
[training]
recipe = "ilm-vp"
learning_rate = 0.05
batch_size = 16

[[methods]]
name = "unprompted"
kind = "unprompted"

[[methods]]
name = "vp"
kind = "visual-prompt"
prompt = {{ FullImage = {{ init = "Zeros" }} }}

[[methods]]
name = "probe"
kind = "linear-probe"

# Evaluated when the grid merges, from the vp runs of the shares: one member, so vp's accuracy.
[[methods]]
name = "vp alone"
kind = "ensemble"
members = ["vp"]

[probe]
epochs = 2

[plot]
x = "unprompted"
y = "gain"

[profiles.quick]
epochs = 1
"#,
        head = fixture_grid("Sharded grid", &[0, 1], 4, 4, &path("resnet.bpk")),
    );
    std::fs::write(dir.path().join("grid.toml"), &config).unwrap();
    let grid = path("grid.toml");
    let experiment = |out: &str, extra: &[&str]| -> Vec<String> {
        ["experiment", &grid, "--profile", "quick", "--out", out]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let sharded = path("sharded");
    // Merging before anything ran names what is missing.
    let out = vprompt(&refs(&experiment(&sharded, &["--merge"])));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("6 cells are not recorded yet"),
        "{stderr}"
    );

    let script = workspace().join("experiments/slurm-array.sh");
    // A config without profiles runs through the script too: `-` (or an empty PROFILE) passes
    // no `--profile` (here the tool is `echo`, which prints the command the task would run).
    for none in ["-", ""] {
        let out = Command::new("bash")
            .arg(&script)
            .args(["grid.toml", none, "out"])
            .env("SLURM_ARRAY_TASK_ID", "2")
            .env("SLURM_ARRAY_TASK_COUNT", "3")
            .env("VPROMPT", "echo")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "experiment grid.toml --out out --shard 2/3 --quiet\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let shares: Vec<_> = (1..=3)
        .map(|task| {
            Command::new("bash")
                .arg(&script)
                .args([&path("grid.toml"), "quick", &sharded, "flex"])
                .env("SLURM_ARRAY_TASK_ID", task.to_string())
                .env("SLURM_ARRAY_TASK_COUNT", "3")
                .env("VPROMPT", env!("CARGO_BIN_EXE_vprompt"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut merged_by = Vec::new();
    for (task, share) in shares.into_iter().enumerate() {
        let out = share.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "share {}: {}",
            task + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.contains("# Sharded grid") {
            merged_by.push(task + 1);
        } else {
            assert!(stdout.contains("not recorded yet"), "{stdout}");
        }
    }
    assert!(!merged_by.is_empty(), "the last share to finish merges");
    let read = |dir: &str, file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(Path::new(dir).join(file)).unwrap()).unwrap()
    };
    let mut share_cells = 0;
    for task in 1..=3 {
        share_cells += read(&sharded, &format!("results.shard-{task}-of-3.json"))["runs"]
            .as_array()
            .unwrap()
            .len();
    }
    assert_eq!(share_cells, 6, "every training cell ran in exactly one share");
    let merged = read(&sharded, "results.json");
    let top1 = |method: &str, seed: u64| {
        merged["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == method && r["seed"] == seed)
            .unwrap_or_else(|| panic!("no {method} / {seed}"))["top1"]
            .clone()
    };
    for seed in [0, 1] {
        assert_eq!(
            top1("vp alone", seed),
            top1("vp", seed),
            "a one-run ensemble is the run"
        );
    }
    assert!(Path::new(&sharded).join("results.md").exists() && Path::new(&sharded).join("plot.png").exists());

    let single = path("single");
    ok(&refs(&experiment(&single, &[])));
    let cells = |v: serde_json::Value| -> Vec<(String, String, u64, f64)> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["backbone"].as_str().unwrap().to_string(),
                    r["method"].as_str().unwrap().to_string(),
                    r["seed"].as_u64().unwrap(),
                    r["top1"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        cells(read(&sharded, "results.json")),
        cells(read(&single, "results.json"))
    );
    // The same table; only the line with the runs' wall-clock total may differ.
    let table = |dir: &str| -> Vec<String> {
        std::fs::read_to_string(Path::new(dir).join("results.md"))
            .unwrap()
            .lines()
            .filter(|l| !l.contains(" min in all"))
            .map(String::from)
            .collect()
    };
    assert_eq!(table(&sharded), table(&single));
    // Merging again is idempotent; a share index out of range is refused.
    let again = vprompt(&refs(&experiment(&sharded, &["--merge"])));
    assert!(again.status.success());
    assert_eq!(
        cells(read(&sharded, "results.json")),
        cells(read(&single, "results.json"))
    );
    fails(&refs(&experiment(&sharded, &["--shard", "4/3"])), "1 <= I <= N");
}

/// The learned mappings and prompt ensembles from the command line: `--mapping '"FullyMap"'`
/// trains the layer with the prompt (its learning rate from the config), `eval` reads it back from
/// the run; `eval` and `apply` with two `--run`s combine them; an experiment runs both learned
/// heads as visual-prompt methods and their ensemble, and refuses a learned head on an unprompted
/// method and an ensemble of unknown members.
#[test]
fn learned_mappings_and_ensembles_from_the_cli_and_the_experiment_runner() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let data = workspace()
        .join("tests/fixtures/fashion-mnist")
        .display()
        .to_string();
    let weights = fixture("tiny_resnet.bpk");
    let config = format!(
        r#"run_dir = "{run}"
mapping = "FullyMap"

[data]
format = "fashion-mnist"
path = "{data}"
few_shot = 8
test_per_class = 5

[backbone]
preset = "tiny-resnet"
weights = "{weights}"

[prompt]
Padding = {{ pad = 4, init = "Zeros" }}

[method.VisualPrompt]
recipe = "ilm-vp"
learning_rate = 0.05
mapping_learning_rate = 0.01
batch_size = 16
epochs = 1
"#,
        run = path("run"),
    );
    std::fs::write(dir.path().join("run.toml"), &config).unwrap();
    let out = ok(&["train", "--config", &path("run.toml"), "--quiet"]);
    assert!(out.contains("top-1"), "{out}");
    let best = std::fs::read_to_string(dir.path().join("run/best.json")).unwrap();
    assert!(best.contains("epoch"), "{best}");
    let out = ok(&["eval", "--run", &path("run")]);
    assert!(out.contains("50 images"), "{out}");
    // A second run (another seed, the paper's first-N) and the ensemble of the two.
    ok(&[
        "train",
        "--config",
        &path("run.toml"),
        "--run-dir",
        &path("run2"),
        "--mapping",
        "\"FirstN\"",
        "--seed",
        "5",
        "--quiet",
    ]);
    let out = ok(&["eval", "--run", &path("run"), "--run", &path("run2")]);
    assert!(out.contains("50 images, 2 runs"), "{out}");
    for line in ["members' mean", "ensemble (mean probabilities)", &path("run2")] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let image = workspace()
        .join("tests/fixtures/rgb-folder/cat/cat0.png")
        .display()
        .to_string();
    let out = ok(&[
        "apply",
        "--run",
        &path("run"),
        "--run",
        &path("run2"),
        "--out",
        &path("applied"),
        &image,
    ]);
    assert!(out.contains("cat0.png:") && out.contains('%'), "{out}");
    for k in 0..2 {
        assert!(dir.path().join(format!("applied/cat0.{k}.png")).exists(), "{out}");
    }
    std::fs::write(
        dir.path().join("other.toml"),
        config.replace("few_shot = 8", "few_shot = 6"),
    )
    .unwrap();
    ok(&[
        "train",
        "--config",
        &path("other.toml"),
        "--run-dir",
        &path("run3"),
        "--quiet",
    ]);
    fails(
        &["eval", "--run", &path("run"), "--run", &path("run3")],
        "other data",
    );
    // The layer over the 10 source outputs, learned: another mapping on the same run directory
    // is another run.
    fails(
        &[
            "train",
            "--config",
            &path("run.toml"),
            "--mapping",
            "\"LinearProbe\"",
            "--quiet",
        ],
        "another",
    );
    std::fs::write(
        dir.path().join("bad.toml"),
        config.replace("mapping_learning_rate = 0.01", "mapping_learning_rate = -1"),
    )
    .unwrap();
    fails(&["train", "--config", &path("bad.toml")], "mapping_learning_rate");

    let grid = format!(
        r#"{head}
[training]
recipe = "ilm-vp"
learning_rate = 0.05
mapping_learning_rate = 0.01
batch_size = 16
epochs = 1

[[methods]]
name = "vp, FullyMap"
kind = "visual-prompt"
prompt = {{ Padding = {{ pad = 4 }} }}
mapping = "FullyMap"

[[methods]]
name = "vp + linear probe"
kind = "visual-prompt"
prompt = {{ Padding = {{ pad = 4 }} }}
mapping = "LinearProbe"

[[methods]]
name = "ensemble of both"
kind = "ensemble"
members = ["vp, FullyMap", "vp + linear probe"]
"#,
        head = fixture_grid("Learned heads", &[0], 8, 5, &weights),
    );
    std::fs::write(dir.path().join("grid.toml"), &grid).unwrap();
    let out = ok(&[
        "experiment",
        &path("grid.toml"),
        "--out",
        &path("grid"),
        "--quiet",
    ]);
    for method in [
        "| vp, FullyMap |",
        "| vp + linear probe |",
        "| ensemble of both |",
    ] {
        assert!(out.contains(method), "{out}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("grid/results.json")).unwrap())
            .unwrap();
    let runs = results["runs"].as_array().unwrap();
    let top1 = |method: &str| {
        runs.iter().find(|r| r["method"] == method).unwrap()["top1"]
            .as_f64()
            .unwrap()
    };
    let ensemble = runs.iter().find(|r| r["method"] == "ensemble of both").unwrap();
    let mean = (top1("vp, FullyMap") + top1("vp + linear probe")) / 2.0;
    assert!(
        (ensemble["members_mean_top1"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{ensemble}"
    );
    assert_eq!(ensemble["test_images"], 50);
    std::fs::write(
        dir.path().join("grid-bad-members.toml"),
        grid.replace("\"vp + linear probe\"]", "\"vp + probe\"]"),
    )
    .unwrap();
    fails(
        &[
            "experiment",
            &path("grid-bad-members.toml"),
            "--out",
            &path("grid-bad-members"),
        ],
        "`vp + probe` is not a visual-prompt method",
    );
    std::fs::write(
        dir.path().join("grid-bad.toml"),
        // Without the ensemble, whose members must be visual-prompt methods.
        grid.split("[[methods]]\nname = \"ensemble of both\"")
            .next()
            .unwrap()
            .replace(
                "kind = \"visual-prompt\"\nprompt = { Padding = { pad = 4 } }\nmapping = \"FullyMap\"",
                "kind = \"unprompted\"\nmapping = \"FullyMap\"",
            ),
    )
    .unwrap();
    fails(
        &["experiment", &path("grid-bad.toml"), "--out", &path("grid-bad")],
        "learned together with a prompt",
    );
}
