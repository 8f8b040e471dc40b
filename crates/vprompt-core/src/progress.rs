//! Progress of long-running work: training, evaluation, data preparation, experiments.
//!
//! Library code never prints on its own: it reports to a [`Progress`] that its caller chose.
//! [`Lines`] prints a plain line every few units (what a log file or CI wants), [`Quiet`] nothing;
//! the `vprompt` tool draws progress bars with a rate and an ETA when stderr is a terminal.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Where long-running work reports how far it is.
pub trait Progress: Send + Sync {
    /// Starts a task of `total` units (`unit`: `images`, `runs`, ...), labelled `label`
    /// (`epoch 3/20`, `validation`). Dropping the handle ends the task.
    fn task(&self, label: &str, total: u64, unit: &'static str) -> Box<dyn Task + '_>;

    /// A line of its own (an epoch's summary, a note), printed above any running task.
    fn line(&self, text: &str);
}

/// A running task of a [`Progress`].
pub trait Task {
    /// `units` more are done. `status` says how it goes (`loss 0.731 lr 0.04`); it is only called
    /// when the status is shown.
    fn advance(&mut self, units: u64, status: &dyn Fn() -> String);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn task(&self, _: &str, _: u64, _: &'static str) -> Box<dyn Task + '_> {
        Box::new(Quiet)
    }

    fn line(&self, _: &str) {}
}

impl Task for Quiet {
    fn advance(&mut self, _: u64, _: &dyn Fn() -> String) {}
}

/// Plain lines on stderr: every line as it comes, and a task's position, status and rate every
/// `every` advances (never, with `every = 0`). For logs and terminals alike; nothing is redrawn.
#[derive(Debug)]
pub struct Lines {
    every: u64,
    out: Mutex<()>,
}

impl Lines {
    /// A line every `every` advances of a task (0: only [`Progress::line`]s).
    pub fn every(every: u64) -> Self {
        Self {
            every,
            out: Mutex::new(()),
        }
    }

    fn print(&self, text: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A closed stderr is no reason to stop a run.
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

struct LineTask<'a> {
    lines: &'a Lines,
    label: String,
    total: u64,
    unit: &'static str,
    done: u64,
    advances: u64,
    started: Instant,
}

impl Progress for Lines {
    fn task(&self, label: &str, total: u64, unit: &'static str) -> Box<dyn Task + '_> {
        Box::new(LineTask {
            lines: self,
            label: label.to_string(),
            total,
            unit,
            done: 0,
            advances: 0,
            started: Instant::now(),
        })
    }

    fn line(&self, text: &str) {
        self.print(text);
    }
}

impl Task for LineTask<'_> {
    fn advance(&mut self, units: u64, status: &dyn Fn() -> String) {
        self.done += units;
        self.advances += 1;
        if self.lines.every > 0 && self.advances.is_multiple_of(self.lines.every) {
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let status = status();
            self.lines.print(&format!(
                "{} {}/{} {}{}{} ({rate:.1} {}/s)",
                self.label,
                self.done,
                self.total,
                self.unit,
                if status.is_empty() { "" } else { ", " },
                status,
                self.unit
            ));
        }
    }
}
