//! Progress on stderr: bars with a rate and an ETA on a terminal (indicatif), plain lines
//! otherwise (CI logs, files), nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use vprompt::train::{Lines, Progress, Quiet, Task};

/// Plain-line progress prints a task's line every this many steps.
const LINE_EVERY: u64 = 50;

/// The progress reporter for this process: bars when stderr is a terminal, plain lines when it is
/// not, nothing when `quiet`.
pub fn stderr(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars::new())
    } else {
        Arc::new(Lines::every(LINE_EVERY))
    }
}

/// indicatif bars, one per running task, under the lines already printed.
struct Bars {
    multi: MultiProgress,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }
}

/// A running bar; it is cleared when the task ends.
struct Bar(ProgressBar);

impl Progress for Bars {
    fn task(&self, label: &str, total: u64, unit: &'static str) -> Box<dyn Task + '_> {
        let bar = self.multi.add(ProgressBar::new(total));
        let template = format!(
            "{{prefix:>18}} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {unit} ({{rate}}, ETA {{eta}}) {{msg}}"
        );
        bar.set_style(
            ProgressStyle::with_template(&template)
                .expect("a valid template")
                .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}/s", state.per_sec());
                })
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Box::new(Bar(bar))
    }

    fn line(&self, text: &str) {
        // Printed above the bars; a terminal that went away is no reason to stop.
        let _ = self.multi.println(text);
    }
}

impl Task for Bar {
    fn advance(&mut self, units: u64, status: &dyn Fn() -> String) {
        self.0.inc(units);
        self.0.set_message(status());
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
