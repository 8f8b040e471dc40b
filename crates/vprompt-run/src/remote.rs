//! Black boxes outside this process: a program speaking the line protocol on its stdin and stdout,
//! or an HTTP endpoint taking the same JSON. Both are [`BlackBoxModel`]s, so black-box training
//! counts their queries and keeps to its budget as for a local model.
//!
//! # The protocol
//!
//! One request per query, one JSON object (for a program: on one line):
//!
//! ```json
//! {"shape": [2, 3, 32, 32], "pixels": [0.0, 0.5, ...]}
//! ```
//!
//! `pixels` are the `[batch, 3, height, width]` images in `[0, 1]`, row-major. The reply is
//! `{"scores": [...]}`, `batch * classes` values row-major (logits or probabilities, as the run
//! config says), or `{"error": "what went wrong"}`. Over HTTP the request is a `POST` with
//! `content-type: application/json`; a `429` or `5xx` status, a dropped connection and a timeout
//! are transient (retried with exponential backoff), any other failure is not.
//! `vprompt serve` answers the protocol for a local model.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_train::{BlackBoxModel, QueryError, Scores};

use crate::error::Result;

/// A query as sent.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// An identifier the reply echoes, so that a client can tell which request a reply answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// `[batch, 3, height, width]`.
    pub shape: [usize; 4],
    /// The images in `[0, 1]`, row-major.
    pub pixels: Vec<f32>,
}

/// A reply: scores, or the model's own error.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The request's `id`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// `batch * classes` scores, row-major.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<f32>>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How failed queries are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts after the first one, for transient failures.
    pub retries: u32,
    /// The wait before the first retry; doubled before each further one.
    pub backoff: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// Where the model is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A program and its arguments, started once and restarted after it fails.
    Command(Vec<String>),
    /// An HTTP (or HTTPS) URL.
    Http(String),
}

/// A failed attempt: worth retrying or not.
enum Failure {
    Transient(String),
    Permanent(String),
}

/// A model reached through an [`Endpoint`].
pub struct RemoteModel {
    endpoint: Endpoint,
    input_size: [usize; 2],
    classes: usize,
    scores: Scores,
    retry: Retry,
    process: Option<LineProcess>,
    agent: ureq::Agent,
    /// The id of the next request.
    next_id: u64,
    /// Attempts that failed transiently and were retried.
    pub retried: u64,
}

impl RemoteModel {
    /// A model at `endpoint` taking `input_size` images and scoring `classes` classes.
    pub fn new(
        endpoint: Endpoint,
        input_size: [usize; 2],
        classes: usize,
        scores: Scores,
        retry: Retry,
    ) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(retry.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            endpoint,
            input_size,
            classes,
            scores,
            retry,
            process: None,
            agent,
            next_id: 0,
            retried: 0,
        }
    }

    fn attempt(&mut self, body: &str) -> Result<Reply, Failure> {
        let text = match &self.endpoint {
            Endpoint::Command(argv) => {
                if self.process.is_none() {
                    self.process = Some(LineProcess::start(argv).map_err(Failure::Permanent)?);
                }
                let process = self.process.as_mut().expect("started above");
                match process.exchange(body, self.retry.timeout) {
                    Ok(line) => line,
                    Err(reason) => {
                        // Started again for the next attempt.
                        self.process = None;
                        return Err(Failure::Transient(reason));
                    }
                }
            }
            Endpoint::Http(url) => {
                let response = self
                    .agent
                    .post(url)
                    .header("content-type", "application/json")
                    .send(body);
                let mut response = match response {
                    Ok(response) => response,
                    Err(e) => return Err(Failure::Transient(format!("{url}: {e}"))),
                };
                let status = response.status().as_u16();
                let text = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| Failure::Transient(format!("{url}: reading the reply: {e}")))?;
                if status == 429 || status >= 500 {
                    return Err(Failure::Transient(format!("{url}: HTTP {status}")));
                }
                if !(200..300).contains(&status) {
                    return Err(Failure::Permanent(format!(
                        "{url}: HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    )));
                }
                text
            }
        };
        serde_json::from_str(&text).map_err(|e| {
            Failure::Permanent(format!(
                "the reply is not the protocol's JSON ({e}): {}",
                text.chars().take(200).collect::<String>()
            ))
        })
    }
}

impl BlackBoxModel for RemoteModel {
    fn input_size(&self) -> [usize; 2] {
        self.input_size
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn scores(&self) -> Scores {
        self.scores
    }

    fn query(&mut self, images: Tensor<4>) -> Result<Vec<f32>, QueryError> {
        let shape: [usize; 4] = images.dims();
        let pixels = images
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let id = self.next_id;
        self.next_id += 1;
        let body = serde_json::to_string(&Request {
            id: Some(id),
            shape,
            pixels,
        })
        .expect("requests serialise");
        let mut wait = self.retry.backoff;
        let mut attempt = 0;
        loop {
            match self.attempt(&body) {
                Ok(Reply { id: answered, .. }) if answered != Some(id) => {
                    return Err(format!(
                        "the model answered request {id} with {}: a reply to another request (or a server \
                         that does not echo the protocol's `id`)",
                        answered.map_or("no id".to_string(), |a| format!("id {a}"))
                    )
                    .into());
                }
                Ok(Reply {
                    scores: Some(scores), ..
                }) => {
                    if self.scores == Scores::Probabilities
                        && let Some(bad) = scores.iter().find(|p| !(0.0..=1.0).contains(*p))
                    {
                        return Err(format!(
                            "the model returned {bad} where the run config says it returns probabilities \
                             (in [0, 1]): set `scores = \"Logits\"`, or fix the model"
                        )
                        .into());
                    }
                    return Ok(scores);
                }
                Ok(Reply { error, .. }) => {
                    return Err(format!(
                        "the model answered with an error: {}",
                        error.unwrap_or_else(|| "a reply without scores".into())
                    )
                    .into());
                }
                Err(Failure::Permanent(reason)) => return Err(reason.into()),
                Err(Failure::Transient(reason)) if attempt >= self.retry.retries => {
                    return Err(format!("{reason} (after {} attempts)", attempt + 1).into());
                }
                Err(Failure::Transient(_)) => {
                    attempt += 1;
                    self.retried += 1;
                    std::thread::sleep(wait);
                    wait *= 2;
                }
            }
        }
    }
}

/// A program answering one line per request line; its replies are read on a thread, so that a
/// program that hangs times out.
struct LineProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
}

impl LineProcess {
    fn start(argv: &[String]) -> Result<Self, String> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| "the black-box command is empty".to_string())?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start `{program}`: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self { child, stdin, lines })
    }

    fn exchange(&mut self, request: &str, timeout: Duration) -> Result<String, String> {
        self.stdin
            .write_all(request.as_bytes())
            .and_then(|()| self.stdin.write_all(b"\n"))
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the black-box program does not read its input: {e}"))?;
        match self.lines.recv_timeout(timeout) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(format!("reading the black-box program's reply: {e}")),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "the black-box program did not answer within {:.1} s",
                timeout.as_secs_f64()
            )),
            Err(RecvTimeoutError::Disconnected) => Err("the black-box program exited".into()),
        }
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
