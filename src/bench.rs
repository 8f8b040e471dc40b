//! A small benchmark harness for `cargo bench`: every benchmark reports images per second (the
//! unit the paper's costs and PyTorch's reference timings are compared in), the median and the
//! spread of its iterations, and the process's peak resident memory.
//!
//! Criterion's statistics are not needed for throughput numbers of multi-millisecond steps, and a
//! custom harness can run the same closure on every compiled backend and print one table.
//!
//! Environment: `VPROMPT_BENCH_SECONDS` (default 3) is the time budget per benchmark after one
//! warm-up call; at least 3 and at most 1000 timed iterations are run.

use std::time::{Duration, Instant};

use vprompt::prelude::Device;

/// One benchmark's measurement.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Benchmark name.
    pub name: String,
    /// Device name (`flex`, `cuda:0`, `host` for work off the device).
    pub backend: String,
    /// Images processed per call.
    pub images_per_call: usize,
    /// Timed iterations.
    pub iterations: usize,
    /// Median time of one call.
    pub median: Duration,
    /// Fastest call.
    pub min: Duration,
    /// Slowest call.
    pub max: Duration,
    /// Peak resident set size of the process so far, in MiB (Linux; `None` elsewhere).
    pub peak_rss_mib: Option<f64>,
}

impl Measurement {
    /// Images per second at the median call time.
    pub fn images_per_second(&self) -> f64 {
        self.images_per_call as f64 / self.median.as_secs_f64()
    }
}

/// A positive integer from the environment variable `name`, or `default` when it is unset.
///
/// # Panics
/// If the variable is set to anything but a positive integer (benchmarks are run by hand, and a
/// typo must not silently measure the default).
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Err(_) => default,
        Ok(value) => value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}={value:?} is not a positive integer")),
    }
}

fn budget() -> Duration {
    let seconds = std::env::var("VPROMPT_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

/// Times `call` on `device`: one warm-up call, then timed calls until the time budget is spent.
/// `call` must finish its work before returning (read a value back, or call `device.sync()`), so
/// that asynchronous backends are timed honestly.
pub fn measure(
    name: &str,
    backend: &str,
    images_per_call: usize,
    device: &Device,
    mut call: impl FnMut(),
) -> Measurement {
    call();
    sync(device);
    let budget = budget();
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || (started.elapsed() < budget && times.len() < 1000) {
        let t = Instant::now();
        call();
        sync(device);
        times.push(t.elapsed());
    }
    times.sort();
    Measurement {
        name: name.to_string(),
        backend: backend.to_string(),
        images_per_call,
        iterations: times.len(),
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        peak_rss_mib: peak_rss_mib(),
    }
}

fn sync(device: &Device) {
    device.sync().expect("device synchronisation failed");
}

/// Peak resident set size (`VmHWM`) of this process in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Prints measurements as a Markdown table.
pub fn print_table(rows: &[Measurement]) {
    println!("| benchmark | backend | images/s | median | min | max | iterations | peak RSS |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for m in rows {
        println!(
            "| {} | {} | {:.1} | {:.2?} | {:.2?} | {:.2?} | {} | {} |",
            m.name,
            m.backend,
            m.images_per_second(),
            m.median,
            m.min,
            m.max,
            m.iterations,
            m.peak_rss_mib.map_or("-".into(), |v| format!("{v:.0} MiB")),
        );
    }
}
