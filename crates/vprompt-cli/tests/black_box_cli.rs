//! `vprompt black-box` against the three kinds of model: the run's own (local), a program speaking
//! the line protocol (`vprompt serve` on the same backbone), and an HTTP endpoint on 127.0.0.1
//! started here (it forwards to `vprompt serve` and fails every third request with a 503). The
//! three train the same prompt, query for query; failures are retried with backoff, a hung model
//! times out, and wrong replies are clear errors.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

/// A run config on the committed fixtures whose method is a black box querying `model` (TOML).
fn config(run_dir: &str, model: &str, extra: &str) -> String {
    format!(
        r#"run_dir = "{run_dir}"

[data]
format = "fashion-mnist"
path = "{data}"
few_shot = 6
validation_per_class = 2
test_per_class = 3

[backbone]
preset = "tiny-resnet"
weights = "{weights}"

[prompt]
FullImage = {{ init = "Zeros", space = {{ Pixel = {{ clamp = true }} }} }}

{black_box}backoff_ms = 10
{extra}
"#,
        data = workspace().join("tests/fixtures/fashion-mnist").display(),
        weights = fixture("tiny_resnet.bpk"),
        black_box = black_box_section(model).replacen("[black_box]", "[method.BlackBox]", 1),
    )
}

/// A `[black_box]` section querying `model` (TOML) with one SPSA-GC draw per step, one epoch of
/// batches of 20.
fn black_box_section(model: &str) -> String {
    format!(
        r#"[black_box]
model = {model}
optimizer = {{ SpsaGc = {{ draws = 1, a = 0.01, c = 0.01, o = 0.0, alpha = 0.6, gamma = 0.1, momentum = 0.9 }} }}
epochs = 1
batch_size = 20
"#
    )
}

/// The lines of a `vprompt black-box` report that must agree between models: top-1 and queries.
fn result_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("top-1") || l.starts_with("queries"))
        .map(|l| l.split("; ").next().unwrap().to_string())
        .collect()
}

/// Reads one HTTP request from `stream` and returns its body.
fn read_body(stream: &mut TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// An HTTP endpoint on 127.0.0.1 answering with `vprompt serve --config SERVE` (10 classes), and
/// failing every `fail_every`-th request with 503; returns its URL and the count of failed ones.
fn http_model(serve_config: &str, fail_every: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/scores", listener.local_addr().unwrap());
    let failed = Arc::new(AtomicUsize::new(0));
    let counter = failed.clone();
    // Never waited for: it serves until this test process exits and its stdin closes.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(env!("CARGO_BIN_EXE_vprompt"))
        .args(["serve", "--config", serve_config, "--classes", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::spawn(move || {
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        for (k, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let body = read_body(&mut stream);
            let (status, reply) = if (k + 1) % fail_every == 0 {
                counter.fetch_add(1, Ordering::SeqCst);
                ("503 Service Unavailable", "busy".to_string())
            } else {
                writeln!(stdin, "{body}").unwrap();
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                ("200 OK", line)
            };
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        }
    });
    (url, failed)
}

#[test]
fn black_box_training_against_a_local_model_a_program_and_an_http_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let write = |name: &str, text: String| {
        std::fs::write(dir.path().join(name), text).unwrap();
        path(name)
    };
    let local = write("local.toml", config(&path("local"), "\"Local\"", ""));
    let out = ok(&["black-box", "--config", &local, "--quiet"]);
    let expected = result_lines(&out);
    // 60 training images, 1 draw: 2 queries per image per step; 20 validation images; the test
    // split (30 images) prompted and unprompted.
    assert_eq!(
        expected.last().map(String::as_str),
        Some("queries: training 120, validation 20, test 60"),
        "{out}"
    );
    assert!(dir.path().join("local/prompt.png").exists());
    // `vprompt train` runs whatever method its config names: the same black-box run.
    let out = ok(&[
        "train",
        "--config",
        &local,
        "--run-dir",
        &path("via-train"),
        "--quiet",
    ]);
    assert_eq!(result_lines(&out), expected, "{out}");
    // A black-box run against a local model loads back like any run: `eval` reports the same
    // prompted top-1 as the training command's test evaluation, and `apply` classifies an image.
    let top1 = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("top-1"))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    let eval = ok(&["eval", "--run", &path("local")]);
    assert!(eval.contains("30 images"), "{eval}");
    assert_eq!(top1(&eval), top1(&out), "{eval}\n{out}");
    let image = workspace().join("tests/fixtures/rgb-folder/cat/cat0.png");
    let applied = ok(&[
        "apply",
        "--run",
        &path("local"),
        "--out",
        &path("applied"),
        &image.display().to_string(),
    ]);
    assert!(applied.contains("cat0.png:"), "{applied}");

    // The same model behind the line protocol: the same prompt, query for query.
    let serve = local.clone();
    let bin = env!("CARGO_BIN_EXE_vprompt");
    let command = format!(r#"{{ Command = ["{bin}", "serve", "--config", "{serve}", "--classes", "10"] }}"#);
    let program = write("program.toml", config(&path("program"), &command, ""));
    let out = ok(&["black-box", "--config", &program, "--quiet"]);
    assert_eq!(result_lines(&out), expected, "{out}");

    // And behind HTTP, every third request failing with 503 and retried.
    let (url, failed) = http_model(&serve, 3);
    let http = write(
        "http.toml",
        config(&path("http"), &format!(r#"{{ Http = "{url}" }}"#), ""),
    );
    let out = ok(&["black-box", "--config", &http, "--quiet"]);
    assert_eq!(result_lines(&out), expected, "{out}");
    let failed = failed.load(Ordering::SeqCst);
    assert!(
        failed > 0 && out.contains(&format!("{failed} attempts retried")),
        "{failed}: {out}"
    );

    // `vprompt serve --http` serves the same model itself: the same prompt, query for query.
    let mut server = Command::new(bin)
        .args([
            "serve",
            "--config",
            &serve,
            "--classes",
            "10",
            "--http",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().strip_prefix("serving on ").unwrap().to_string() + "/";
    let served = write(
        "served.toml",
        config(&path("served"), &format!(r#"{{ Http = "{url}" }}"#), ""),
    );
    let out = ok(&["black-box", "--config", &served, "--quiet"]);
    assert_eq!(result_lines(&out), expected, "{out}");
    server.kill().unwrap();
    server.wait().unwrap();

    // A trained run served as a black box: its prompt, backbone and head, one reply per request.
    let mut server = Command::new(bin)
        .args(["serve", "--run", &path("local")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let request = format!(
        "{{\"id\": 3, \"shape\": [2, 3, 32, 32], \"pixels\": {:?}}}\nnot json\n",
        vec![0.5f32; 2 * 3 * 32 * 32]
    );
    server
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let output = server.wait_with_output().unwrap();
    let replies: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0]["id"], 3);
    assert_eq!(replies[0]["scores"].as_array().unwrap().len(), 20);
    assert!(replies[1]["error"].as_str().unwrap().contains("not a request"));

    // A budget ends training early, and says so.
    let budget = write(
        "budget.toml",
        config(&path("budget"), "\"Local\"", "query_budget = 40"),
    );
    let out = ok(&["black-box", "--config", &budget, "--quiet"]);
    assert!(
        out.contains("queries: training 40,") && out.contains("the budget ended training"),
        "{out}"
    );
}

#[test]
fn a_hung_or_wrong_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let write = |name: &str, text: String| {
        std::fs::write(dir.path().join(name), text).unwrap();
        path(name)
    };
    // An endpoint that reads the request and never answers: each attempt times out.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            read_body(&mut stream);
            held.push(stream);
        }
    });
    let hung = write(
        "hung.toml",
        config(
            &path("hung"),
            &format!(r#"{{ Http = "{url}" }}"#),
            "retries = 1\ntimeout_s = 0.5",
        ),
    );
    fails(&["black-box", "--config", &hung, "--quiet"], "(after 2 attempts)");

    // A program scoring 5 classes for a 10-class task.
    let local = write("local.toml", config(&path("local"), "\"Local\"", ""));
    let bin = env!("CARGO_BIN_EXE_vprompt");
    let command = format!(r#"{{ Command = ["{bin}", "serve", "--config", "{local}", "--classes", "5"] }}"#);
    let wrong = write("wrong.toml", config(&path("wrong"), &command, ""));
    fails(&["black-box", "--config", &wrong, "--quiet"], "scores");
    // Logits where the config says probabilities: refused, not trained on.
    let ten = format!(r#"{{ Command = ["{bin}", "serve", "--config", "{local}", "--classes", "10"] }}"#);
    let logits = write(
        "logits.toml",
        config(&path("logits"), &ten, "scores = \"Probabilities\""),
    );
    fails(
        &["black-box", "--config", &logits, "--quiet"],
        "where the run config says it returns probabilities",
    );
    // A program that does not exist, and settings out of range.
    let missing = write(
        "missing.toml",
        config(&path("missing"), r#"{ Command = ["/nonexistent/model"] }"#, ""),
    );
    fails(
        &["black-box", "--config", &missing, "--quiet"],
        "cannot start `/nonexistent/model`",
    );
    let bad = write("bad.toml", config(&path("bad"), r#"{ Http = "ftp://x" }"#, ""));
    fails(&["black-box", "--config", &bad], "method.BlackBox.model.Http");
    let bad = write("bad2.toml", config(&path("bad2"), "\"Local\"", "timeout_s = 0"));
    fails(&["black-box", "--config", &bad], "method.BlackBox.timeout_s");
    // `vprompt black-box` runs black-box configs only; a visual-prompt one is named as such.
    let visual = write(
        "visual.toml",
        format!(
            "run_dir = \"{}\"\n[data]\nformat = \"fashion-mnist\"\npath = \"{}\"\n",
            path("visual"),
            workspace().join("tests/fixtures/fashion-mnist").display()
        ),
    );
    fails(
        &["black-box", "--config", &visual],
        "this one's is visual-prompt: run it with `vprompt train --config`",
    );
}

/// A black-box method in an experiment: the column's backbone queried through the `[black_box]`
/// settings, its accuracy and unprompted accuracy recorded like a visual prompt's; a black-box
/// method without the section is refused.
#[test]
fn an_experiment_runs_a_black_box_method() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let grid = format!(
        r#"{head}
{black_box}
[[methods]]
name = "black-box VP"
kind = "black-box"
prompt = {{ FullImage = {{ init = "Zeros", space = {{ Pixel = {{ clamp = true }} }} }} }}
"#,
        head = fixture_grid("Black box", &[0], 6, 3, &fixture("tiny_resnet.bpk")),
        black_box = black_box_section("\"Local\""),
    );
    std::fs::write(dir.path().join("grid.toml"), &grid).unwrap();
    let out = ok(&["experiment", &path("grid.toml"), "--out", &path("out"), "--quiet"]);
    assert!(out.contains("| black-box VP |"), "{out}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/results.json")).unwrap()).unwrap();
    let run = &results["runs"][0];
    assert_eq!(
        (run["train_images"].as_u64(), run["test_images"].as_u64()),
        (Some(60), Some(30)),
        "{run}"
    );
    assert!(run["unprompted_top1"].is_number(), "{run}");
    let without = grid.split("[black_box]").next().unwrap().to_string()
        + "[[methods]]\nname = \"black-box VP\"\nkind = \"black-box\"\n";
    std::fs::write(dir.path().join("bad.toml"), without).unwrap();
    fails(
        &["experiment", &path("bad.toml"), "--out", &path("bad")],
        "needs a [black_box] section",
    );
}

/// Input-conditional prompts from the command line: `vprompt black-box` trains one by queries,
/// `inspect` reports its template's and its generator's learned values apart, and an experiment
/// trains one white-box and one by queries, recording each method's learned values beside the
/// fixed prompt's.
#[test]
fn conditional_prompts_from_the_cli_and_the_experiment_runner() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let full = r#"{ FullImage = { init = "Zeros", space = { Pixel = { clamp = true } } } }"#;
    let run = config(&path("run"), "\"Local\"", "").replace(
        &full[2..full.len() - 2],
        &format!("Conditional = {{ template = {full} }}"),
    );
    assert!(run.contains("Conditional"), "{run}");
    std::fs::write(dir.path().join("run.toml"), &run).unwrap();
    let out = ok(&["black-box", "--config", &path("run.toml"), "--quiet"]);
    assert!(out.contains("top-1"), "{out}");
    // 32 x 32 x 3 full-image values and the generator's 3,203.
    let out = ok(&["inspect", &path("run")]);
    assert!(
        out.contains("parameters    6275 (template 3072 + generator 3203)"),
        "{out}"
    );

    let grid = format!(
        r#"{head}
[training]
recipe = "ilm-vp"
learning_rate = 0.05
batch_size = 16
epochs = 1

{black_box}
[[methods]]
name = "pad 4"
kind = "visual-prompt"
prompt = {{ Padding = {{ pad = 4 }} }}

[[methods]]
name = "conditional pad 4"
kind = "visual-prompt"
prompt = {{ Conditional = {{ template = {{ Padding = {{ pad = 4 }} }}, hidden = 8 }} }}

[[methods]]
name = "black-box conditional"
kind = "black-box"
prompt = {{ Conditional = {{ template = {full} }} }}
"#,
        head = fixture_grid("Conditional", &[0], 6, 3, &fixture("tiny_resnet.bpk")),
        black_box = black_box_section("\"Local\""),
    );
    std::fs::write(dir.path().join("grid.toml"), &grid).unwrap();
    let out = ok(&["experiment", &path("grid.toml"), "--out", &path("out"), "--quiet"]);
    for method in ["| pad 4 |", "| conditional pad 4 |", "| black-box conditional |"] {
        assert!(out.contains(method), "{out}");
    }
    // Padding 4 on 32 x 32: 1,344; a generator with 8 hidden channels: 9 (3 8 + 8 8 + 8 3) + 19.
    let table = std::fs::read_to_string(dir.path().join("out/results.md")).unwrap();
    assert!(
        table.contains(
            "Learned prompt values: black-box conditional 6275; conditional pad 4 2371; pad 4 1344."
        ),
        "{table}"
    );
}
