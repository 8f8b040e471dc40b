//! `hf:ORG/REPO` weights against a stand-in for the Hugging Face Hub: a small HTTP server on
//! 127.0.0.1 started here, serving what the `hf-hub` client reads (an `ETag`, `x-repo-commit`,
//! ranges with `Content-Range`, 404 for absent files). No test touches the real hub.
//!
//! The first run downloads into `HF_HOME` and converts; the second runs with the server gone and
//! `HF_HUB_OFFLINE=1`, from the cache; a name that was never fetched is then an error saying what
//! to fetch.
#![cfg(feature = "hub")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The stand-in hub: `GET /<repo>/resolve/<revision>/<file>` for the files in `files`; records
/// each request's path and counts the checkpoint downloads (whole files, not configs, not the
/// one-byte metadata requests). Runs until the process ends.
struct Hub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
    downloads: Arc<AtomicUsize>,
}

fn serve(files: BTreeMap<String, Vec<u8>>) -> Hub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let downloads = Arc::new(AtomicUsize::new(0));
    let (seen, count) = (requests.clone(), downloads.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((key, value)) = line.split_once(':')
                    && key.eq_ignore_ascii_case("range")
                {
                    range = value.trim().strip_prefix("bytes=").map(str::to_string);
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
            seen.lock().unwrap().push(path.clone());
            let response = match files.get(&path) {
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                Some(body) => {
                    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
                        Some((s, e)) => (
                            s.parse().unwrap_or(0),
                            e.parse().map_or(body.len() - 1, |e: usize| e.min(body.len() - 1)),
                        ),
                        None => (0, body.len() - 1),
                    };
                    if end + 1 - start > 1 && !path.ends_with(".json") {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut head = format!(
                        "HTTP/1.1 206 Partial Content\r\nETag: \"{:016x}{:08x}\"\r\nx-repo-commit: {}\r\n\
                         Content-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len(),
                        body.iter().take(4096).map(|b| *b as u32).sum::<u32>(),
                        "0123456789abcdef0123456789abcdef01234567",
                        body.len(),
                        end + 1 - start
                    )
                    .into_bytes();
                    head.extend_from_slice(&body[start..=end]);
                    head
                }
            };
            let _ = stream.write_all(&response);
        }
    });
    Hub {
        endpoint,
        requests,
        downloads,
    }
}

fn vprompt(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vprompt"));
    command.args(args);
    for key in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.output().expect("the binary runs")
}

fn zero_shot_args<'a>(weights: &'a str, data: &'a str) -> Vec<&'a str> {
    vec![
        "zero-shot",
        "--image-preset",
        "tiny-vit",
        "--image-weights",
        weights,
        "--text-preset",
        "tiny-clip-text",
        "--text-weights",
        weights,
        "--data-format",
        "fashion-mnist",
        "--data",
        data,
        "--test-per-class",
        "2",
    ]
}

#[test]
fn hub_names_download_once_convert_once_and_work_offline() {
    let checkpoint = std::fs::read(
        workspace()
            .join("crates/vprompt-backbone/tests/fixtures/native/open-clip/open_clip_pytorch_model.bin"),
    )
    .unwrap();
    let hub = serve(BTreeMap::from([
        (
            "/vprompt-test/tiny-clip/resolve/main/open_clip_pytorch_model.bin".to_string(),
            checkpoint.clone(),
        ),
        (
            "/vprompt-test/tiny-clip/resolve/main/open_clip_config.json".to_string(),
            br#"{"model_cfg": {"quick_gelu": true}}"#.to_vec(),
        ),
        // The same tensors with GELU in their config (as LAION's ViT-B-32): refused.
        (
            "/vprompt-test/gelu-clip/resolve/main/open_clip_pytorch_model.bin".to_string(),
            checkpoint,
        ),
        (
            "/vprompt-test/gelu-clip/resolve/main/open_clip_config.json".to_string(),
            br#"{"model_cfg": {"embed_dim": 16}}"#.to_vec(),
        ),
    ]));
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().display().to_string();
    let data = workspace()
        .join("tests/fixtures/fashion-mnist")
        .display()
        .to_string();

    let online = [
        ("HF_ENDPOINT", hub.endpoint.as_str()),
        ("HF_HOME", home_path.as_str()),
    ];
    let out = vprompt(&zero_shot_args("hf:vprompt-test/tiny-clip", &data), &online);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let first = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(first.contains("zero-shot on 20 test images"), "{first}");
    // Downloaded once for both towers, after asking for the candidate files it lacks.
    assert_eq!(hub.downloads.load(Ordering::SeqCst), 1);
    let requests = hub.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.ends_with("/model.safetensors")),
        "{requests:?}"
    );
    // In the standard cache layout, with a converted file per tower beside it.
    let repo = home.path().join("hub/models--vprompt-test--tiny-clip");
    assert!(repo.join("refs/main").exists() && repo.join("snapshots").exists());
    for preset in ["tiny-vit", "tiny-clip-text"] {
        let dir = home
            .path()
            .join("hub/vprompt")
            .join(preset)
            .join("models--vprompt-test--tiny-clip");
        let converted: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            converted.len() == 1 && converted[0].extension().is_some_and(|e| e == "bpk"),
            "{preset}: {converted:?}"
        );
    }

    // Offline, with nothing listening at the endpoint: the same result, from the cache.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let requests_before = hub.requests.lock().unwrap().len();
    for env in [
        vec![
            ("HF_ENDPOINT", nowhere.as_str()),
            ("HF_HOME", home_path.as_str()),
            ("HF_HUB_OFFLINE", "1"),
        ],
        vec![
            ("HF_ENDPOINT", hub.endpoint.as_str()),
            ("HF_HOME", home_path.as_str()),
        ],
    ] {
        let out = vprompt(&zero_shot_args("hf:vprompt-test/tiny-clip", &data), &env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), first);
    }
    assert_eq!(
        hub.requests.lock().unwrap().len(),
        requests_before,
        "a cached name asks the hub nothing"
    );

    // Never fetched: offline, or the hub unreachable, is an error saying what to fetch.
    for env in [
        vec![
            ("HF_ENDPOINT", hub.endpoint.as_str()),
            ("HF_HOME", home_path.as_str()),
            ("HF_HUB_OFFLINE", "1"),
        ],
        vec![("HF_ENDPOINT", nowhere.as_str()), ("HF_HOME", home_path.as_str())],
    ] {
        let out = vprompt(&zero_shot_args("hf:openai/clip-vit-base-patch32", &data), &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("hf:openai/clip-vit-base-patch32")
                && stderr.contains("huggingface-cli download openai/clip-vit-base-patch32")
                && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    // The config downloaded beside the checkpoint is read: GELU is not the preset's QuickGELU.
    let out = vprompt(&zero_shot_args("hf:vprompt-test/gelu-clip", &data), &online);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("QuickGELU"), "{stderr}");
    // A repository without any checkpoint file names what it looked for.
    let out = vprompt(&zero_shot_args("hf:vprompt-test/empty", &data), &online);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("none of model.safetensors"),
        "{stderr}"
    );
}
