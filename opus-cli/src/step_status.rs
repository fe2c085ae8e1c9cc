//! The status line of a followed build (`trigger --wait`, `logs -f`): on a terminal, a spinner
//! on stderr with the running step, its command and how long it has been running, so that a
//! step that prints nothing for a minute does not look hung. Nothing when stderr is not a
//! terminal (scripts and CI logs get the log lines only).

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use opus_core::proto;

use crate::steps::{self, StepLine};

/// How often the spinner and the elapsed time are redrawn.
const TICK: Duration = Duration::from_millis(120);

/// The status line: one spinner for the step being shown, replaced when a line of another step
/// arrives.
pub struct StepStatus {
    /// Whether to show anything at all (stderr is a terminal).
    enabled: bool,
    /// The step shown (the `step` of the last line).
    step: String,
    /// The spinner of that step.
    bar: Option<ProgressBar>,
}

impl StepStatus {
    /// A status line on stderr when it is a terminal and `wanted`; otherwise one that shows
    /// nothing.
    pub fn on_stderr(wanted: bool) -> StepStatus {
        StepStatus {
            enabled: wanted && std::io::stderr().is_terminal(),
            step: String::new(),
            bar: None,
        }
    }

    /// Takes in a log line before it is printed: the first line of another step shows that step
    /// from then on, timed from that line's time (so following a build that is already running
    /// shows the time its step has really been running).
    pub fn observe(&mut self, line: &proto::LogLine) {
        if !self.enabled || line.step == self.step || line.final_state != 0 {
            return;
        }
        self.step.clone_from(&line.step);
        let what = match steps::parse(line) {
            Some(StepLine::Started { command }) => {
                let command = command.lines().next().unwrap_or_default();
                format!("{}: {command}", line.step)
            }
            _ if line.step.is_empty() => "opusd".to_owned(),
            _ => line.step.clone(),
        };
        let running_for = line
            .time
            .as_ref()
            .map(opus_core::wire::system_time)
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        self.clear();
        let style = ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bar = ProgressBar::new_spinner().with_style(style);
        // indicatif panics on an elapsed time before the clock's origin (a skewed server clock).
        if Instant::now().checked_sub(running_for).is_some() {
            bar = bar.with_elapsed(running_for);
        }
        bar.set_message(what);
        bar.enable_steady_tick(TICK);
        self.bar = Some(bar);
    }

    /// Runs `print` (which writes a log line) with the status line out of the way, then shows
    /// it again below.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Removes the status line (the build ended, or the stream did).
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for StepStatus {
    fn drop(&mut self) {
        self.clear();
    }
}
