//! The server side of the black-box protocol ([`crate::remote`]): any [`BlackBoxModel`] (a loaded
//! run with its prompt, or a backbone and mapping) answering requests on a stream of lines
//! ([`serve_lines`], what `vprompt serve` runs on stdin and stdout) or over HTTP
//! ([`serve_http`], `vprompt serve --http ADDR`).
//!
//! Every bad request gets an error reply and the server goes on: a line that is not UTF-8 or
//! not a request, a shape whose size overflows or does not fit the model, too many images, a
//! body over the limit. A request's `id` is echoed in its reply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use burn::prelude::*;
use vprompt_prompt::Phase;
use vprompt_train::{BlackBoxModel, QueryError};

use crate::error::{Result, io};
use crate::remote::{Reply, Request};
use crate::run::LoadedRun;

/// What a server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most images in one request.
    pub max_batch: usize,
    /// Most bytes of one HTTP request's body (its JSON).
    pub max_body_bytes: usize,
    /// How long reading one HTTP request may take.
    pub read_timeout: Duration,
}

impl Default for Limits {
    /// 256 images (the black-box client's `query_batch` default), 512 MiB of JSON (256 images of
    /// 224 x 224 at about 10 bytes a value), 60 s to read a request.
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_body_bytes: 512 << 20,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Answers one request (a JSON text) with `model`: its reply, and whether the request itself was
/// at fault (malformed, or not what the model takes) rather than the model.
pub fn answer(model: &mut dyn BlackBoxModel, text: &str, limits: &Limits, device: &Device) -> (Reply, bool) {
    let request: Request = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(e) => {
            return (
                Reply {
                    error: Some(format!("not a request: {e}")),
                    ..Reply::default()
                },
                true,
            );
        }
    };
    let id = request.id;
    let (result, bad_request) = match check(model, &request, limits) {
        Err(reason) => (Err(reason), true),
        Ok(()) => {
            let images = Tensor::from_data(TensorData::new(request.pixels, request.shape), device);
            (model.query(images).map_err(|e| e.to_string()), false)
        }
    };
    let reply = match result {
        Ok(scores) => Reply {
            id,
            scores: Some(scores),
            error: None,
        },
        Err(error) => Reply {
            id,
            scores: None,
            error: Some(error),
        },
    };
    (reply, bad_request)
}

/// Refuses a request the model cannot take, before any tensor is made.
fn check(model: &dyn BlackBoxModel, request: &Request, limits: &Limits) -> std::result::Result<(), String> {
    let [batch, channels, height, width] = request.shape;
    let [h, w] = model.input_size();
    if channels != 3 || [height, width] != [h, w] || batch == 0 {
        return Err(format!(
            "images of shape {:?}: this model takes [batch, 3, {h}, {w}]",
            request.shape
        ));
    }
    if batch > limits.max_batch {
        return Err(format!(
            "{batch} images in one request: this server takes at most {}",
            limits.max_batch
        ));
    }
    let size = [channels, height, width]
        .iter()
        .try_fold(batch, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} is too large", request.shape))?;
    if request.pixels.len() != size {
        return Err(format!(
            "{} pixels for shape {:?} ({size} expected)",
            request.pixels.len(),
            request.shape
        ));
    }
    Ok(())
}

/// Answers the line protocol with `model`, one reply line per request line read from `input`,
/// until `input` ends: what `vprompt serve` runs on stdin and stdout. Blank lines are skipped;
/// every other line gets a reply, an error reply when it is not a request the model takes
/// (`limits.max_batch` applies; the body limit is HTTP's).
pub fn serve_lines(
    model: &mut dyn BlackBoxModel,
    device: &Device,
    limits: &Limits,
    mut input: impl BufRead,
    mut output: impl Write,
) -> Result<()> {
    let (stdin, stdout) = (Path::new("<input>"), Path::new("<output>"));
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(io("read", stdin))? == 0 {
            return Ok(());
        }
        let reply = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => answer(model, text, limits, device).0,
            Err(e) => Reply {
                error: Some(format!("not a request: the line is not UTF-8 ({e})")),
                ..Reply::default()
            },
        };
        writeln!(
            output,
            "{}",
            serde_json::to_string(&reply).expect("replies serialise")
        )
        .and_then(|()| output.flush())
        .map_err(io("write", stdout))?;
    }
}

/// Serves the protocol over HTTP on `listener`: each `POST` carries one request as its JSON body
/// and gets the reply as `200` (scores, or the model's own error), `400` (a request the model
/// cannot take), `411` (no content length), `413` (a body over the limit) or `405` (not a POST).
/// Connections are answered one at a time and closed after their reply. Stops after `requests`
/// requests, or never.
pub fn serve_http(
    model: &mut dyn BlackBoxModel,
    device: &Device,
    listener: &TcpListener,
    limits: &Limits,
    requests: Option<u64>,
) -> Result<()> {
    let mut served = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        // A client that goes away or sends garbage costs its own connection, nothing more.
        let _ = handle(model, device, &mut stream, limits);
        served += 1;
        if requests.is_some_and(|n| served >= n) {
            break;
        }
    }
    Ok(())
}

/// Reads one HTTP request from `stream` and answers it.
fn handle(
    model: &mut dyn BlackBoxModel,
    device: &Device,
    stream: &mut TcpStream,
    limits: &Limits,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(limits.read_timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    let mut length = None;
    let mut method = String::new();
    // The request line and headers, at most 64 KiB of them.
    let mut read = 0;
    loop {
        head.clear();
        let n = (&mut reader).take(16 << 10).read_line(&mut head)?;
        read += n;
        if n == 0 || read > 64 << 10 {
            return respond(stream, 400, &error_reply("a request head that does not end"));
        }
        if method.is_empty() {
            method = head.split_whitespace().next().unwrap_or("").to_string();
            continue;
        }
        if head == "\r\n" || head == "\n" {
            break;
        }
        if let Some((name, value)) = head.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    if method != "POST" {
        return respond(stream, 405, &error_reply("POST a request as JSON"));
    }
    let Some(length) = length else {
        return respond(stream, 411, &error_reply("a request needs its content-length"));
    };
    if length > limits.max_body_bytes {
        return respond(
            stream,
            413,
            &error_reply(&format!(
                "a body of {length} bytes: this server takes at most {}",
                limits.max_body_bytes
            )),
        );
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (reply, bad) = match std::str::from_utf8(&body) {
        Ok(text) => answer(model, text, limits, device),
        Err(_) => (error_reply("the body is not UTF-8"), true),
    };
    respond(stream, if bad { 400 } else { 200 }, &reply)
}

fn error_reply(reason: &str) -> Reply {
    Reply {
        error: Some(reason.to_string()),
        ..Reply::default()
    }
}

fn respond(stream: &mut TcpStream, status: u16, reply: &Reply) -> std::io::Result<()> {
    let body = serde_json::to_string(reply).expect("replies serialise");
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        _ => "Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// A loaded run as a black box: its prompt applied, then its backbone and mapping (logits).
impl BlackBoxModel for LoadedRun {
    fn input_size(&self) -> [usize; 2] {
        self.classifier.input_size()
    }

    fn num_classes(&self) -> usize {
        self.classifier.num_classes()
    }

    fn query(&mut self, images: Tensor<4>) -> std::result::Result<Vec<f32>, QueryError> {
        let logits = self
            .classifier
            .forward(images, Phase::Eval { batch: 0 })
            .map_err(|e| e.to_string())?;
        Ok(logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of 2 classes on 2 x 2 images that scores each image by its mean.
    struct Mean;

    impl BlackBoxModel for Mean {
        fn input_size(&self) -> [usize; 2] {
            [2, 2]
        }
        fn num_classes(&self) -> usize {
            2
        }
        fn query(&mut self, images: Tensor<4>) -> std::result::Result<Vec<f32>, QueryError> {
            let values = images.into_data().try_to_vec::<f32>().unwrap();
            Ok(values
                .chunks(12)
                .flat_map(|c| {
                    let m = c.iter().sum::<f32>() / 12.0;
                    [m, 1.0 - m]
                })
                .collect())
        }
    }

    fn lines(input: &[u8]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        serve_lines(&mut Mean, &Device::flex(), &Limits::default(), input, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every bad line gets an error reply and the server goes on; ids are echoed.
    #[test]
    fn bad_lines_get_error_replies_and_the_server_goes_on() {
        let good = format!(
            r#"{{"id": 7, "shape": [1, 3, 2, 2], "pixels": {:?}}}"#,
            [0.5f32; 12]
        );
        let mut input = Vec::new();
        for line in [
            r#"{"shape": [18014398509481984, 3, 224, 224], "pixels": []}"#.as_bytes(),
            b"\xff\xfe not utf-8",
            b"{\"shape\": [1, 3, 2, 2]}",
            br#"{"shape": [1, 3, 4, 4], "pixels": []}"#,
            br#"{"shape": [300, 3, 2, 2], "pixels": []}"#,
            br#"{"shape": [1, 3, 2, 2], "pixels": [0.5]}"#,
            b"",
            good.as_bytes(),
        ] {
            input.extend_from_slice(line);
            input.push(b'\n');
        }
        let replies = lines(&input);
        assert_eq!(replies.len(), 7, "{replies:?}");
        let error = |i: usize| replies[i]["error"].as_str().unwrap().to_string();
        assert!(
            error(0).contains("this model takes [batch, 3, 2, 2]"),
            "{}",
            error(0)
        );
        assert!(error(1).contains("not UTF-8"));
        assert!(error(2).contains("not a request"));
        assert!(error(3).contains("[1, 3, 4, 4]"));
        assert!(error(4).contains("at most 256"));
        assert!(error(5).contains("1 pixels for shape"));
        assert_eq!(replies[6]["id"], 7);
        assert_eq!(replies[6]["scores"], serde_json::json!([0.5, 0.5]));
        // A size that wraps around is refused, not allocated.
        let limits = Limits {
            max_batch: usize::MAX,
            ..Limits::default()
        };
        let huge = Request {
            id: None,
            shape: [1 << 62, 3, 2, 2],
            pixels: vec![],
        };
        assert!(check(&Mean, &huge, &limits).unwrap_err().contains("too large"));
    }

    /// Over HTTP on the loopback: a good request, a bad one (400), a body over the limit (413),
    /// a GET (405); the server answers each and goes on.
    #[test]
    fn http_answers_each_request_with_its_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let limits = Limits {
            max_body_bytes: 1000,
            ..Limits::default()
        };
        let server = std::thread::spawn(move || {
            serve_http(&mut Mean, &Device::flex(), &listener, &limits, Some(4)).unwrap();
        });
        let send = |request: String| -> (u16, serde_json::Value) {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            let status = text[9..12].parse().unwrap();
            let body = text.split("\r\n\r\n").nth(1).unwrap();
            (status, serde_json::from_str(body).unwrap())
        };
        let post = |body: &str| {
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let good = format!(
            r#"{{"id": 1, "shape": [1, 3, 2, 2], "pixels": {:?}}}"#,
            [1.0f32; 12]
        );
        let (status, reply) = send(post(&good));
        assert_eq!((status, reply["id"].clone()), (200, serde_json::json!(1)));
        assert_eq!(reply["scores"], serde_json::json!([1.0, 0.0]));
        let (status, reply) = send(post(r#"{"shape": [1, 3, 9, 9], "pixels": []}"#));
        assert_eq!(status, 400, "{reply}");
        let (status, _) = send(post(&"x".repeat(1001)));
        assert_eq!(status, 413);
        let (status, _) = send("GET / HTTP/1.1\r\nhost: x\r\n\r\n".into());
        assert_eq!(status, 405);
        server.join().unwrap();
    }
}
