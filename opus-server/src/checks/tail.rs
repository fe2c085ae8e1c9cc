//! The lines of a running check: passed on to the log under the check's label, and the last of
//! them kept for the event that a failure appends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use crate::build::steps::LogSink;

/// How many of the last lines are kept.
const KEEP_LINES: usize = 20;

/// How many bytes of them at most (a line is cut to fit).
const KEEP_BYTES: usize = 4096;

/// A [`LogSink`] in front of another: lines go on with their step under `label`, as a
/// pipeline job's do (`check smoke/step 1`: `opus logs` marks them `[check smoke]`, and `--job
/// "check smoke"` shows only them), and the last `KEEP_LINES` (20) are kept.
#[derive(Clone)]
pub struct OutputTail<L: LogSink> {
    inner: L,
    label: String,
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl<L: LogSink> OutputTail<L> {
    /// A tail passing lines to `inner` under `label`.
    pub fn new(inner: L, label: String) -> OutputTail<L> {
        OutputTail {
            inner,
            label,
            lines: Arc::default(),
        }
    }

    /// The kept lines, oldest first, at most `KEEP_BYTES` (4 KiB).
    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<&str> = Vec::new();
        let mut size = 0;
        for line in lines.iter().rev() {
            if size + line.len() + 1 > KEEP_BYTES {
                break;
            }
            size += line.len() + 1;
            out.push(line);
        }
        out.reverse();
        out.join("\n")
    }

    fn keep(&self, text: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == KEEP_LINES {
            lines.pop_front();
        }
        let mut cut = text.len().min(KEEP_BYTES);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        lines.push_back(text[..cut].to_owned());
    }
}

impl<L: LogSink> LogSink for OutputTail<L> {
    fn line(&self, step: &str, stream: &str, text: &str) {
        self.keep(text);
        self.inner
            .line(&format!("{}/{step}", self.label), stream, text);
    }
}
