//! Build logs: one append-only file per build (`<data-dir>/logs/<id>.log`, one JSON object a line
//! with time, step, stream and text), capped per build with a marker where it was cut, and a live
//! progress signal so that followers tail without polling.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod mask;

use mask::Masks;

use crate::output_lines;

/// The longest text of one stored line: a line cut by the executor ([`output_lines::MAX_LINE`]
/// and its marker) fits; anything longer, from wherever it comes, is cut again.
pub const MAX_STORED_LINE: usize = output_lines::MAX_LINE + 1024;

/// One line as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    /// Milliseconds since the Unix epoch.
    pub t: u64,
    /// The step (`source`, `step 1`, `store`...).
    pub step: String,
    /// `stdout`, `stderr`, or `opus` for lines written by Opus itself.
    pub stream: String,
    /// The text, secrets masked.
    pub text: String,
}

/// How far a live log has been written, and whether it is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// Bytes in the file.
    pub len: u64,
    /// Set once the build has ended and nothing more will be written.
    pub finished: bool,
}

/// The writer of one running build's log. Cloning shares the same file.
#[derive(Clone)]
pub struct BuildLog {
    inner: Arc<Mutex<LogWriter>>,
    progress: Arc<watch::Sender<LogProgress>>,
}

struct LogWriter {
    file: std::fs::File,
    written: u64,
    cap: u64,
    cut: bool,
    masks: Masks,
}

impl BuildLog {
    /// Appends a line (secrets masked). Past the cap, writes one marker and drops the rest. A
    /// failing disk is logged once through tracing; the build goes on. A line longer than
    /// [`MAX_STORED_LINE`] (which the local executor never sends, but a runner could) is cut.
    pub fn line(&self, step: &str, stream: &str, text: &str) {
        let mut w = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if w.cut {
            return;
        }
        let mut text = w.masks.apply(&output_lines::cut(text, MAX_STORED_LINE));
        mask_cut_secret(&mut text, w.masks.needles());
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut record = LogRecord {
            t,
            step: step.to_owned(),
            stream: stream.to_owned(),
            text,
        };
        let mut bytes = serde_json::to_vec(&record).unwrap_or_default();
        bytes.push(b'\n');
        if w.written + bytes.len() as u64 > w.cap {
            record.stream = "opus".into();
            record.text = format!("[log cut here: it reached the limit of {} bytes]", w.cap);
            bytes = serde_json::to_vec(&record).unwrap_or_default();
            bytes.push(b'\n');
            w.cut = true;
        }
        match w.file.write_all(&bytes) {
            Ok(()) => {
                w.written += bytes.len() as u64;
                let len = w.written;
                self.progress.send_modify(|p| p.len = len);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the build log");
                w.cut = true;
            }
        }
    }

    /// A line from Opus itself.
    pub fn opus(&self, step: &str, text: &str) {
        self.line(step, "opus", text);
    }

    /// `text` with the build's secrets masked as its lines are: for what leaves the build other
    /// than through its log (a failed check's output in its `deploy.blocked` event).
    pub fn mask(&self, text: &str) -> String {
        let w = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        w.masks.apply(text)
    }

    /// Marks the log complete: followers drain it and stop.
    pub fn finish(&self) {
        self.progress.send_modify(|p| p.finished = true);
    }
}

/// A line cut at its length limit ([`output_lines::CUT_MARKER`]) may end inside a secret, whose
/// start would then show: it is masked too (a cut that merely ends like a secret's first
/// characters loses those characters, which is the safe side).
fn mask_cut_secret(text: &mut String, masks: &[String]) {
    let Some(kept) = text.strip_suffix(output_lines::CUT_MARKER) else {
        return;
    };
    let start = masks.iter().find_map(|m| {
        (1..m.len())
            .rev()
            .filter(|&k| m.is_char_boundary(k))
            .find(|&k| kept.ends_with(&m[..k]))
            .map(|k| kept.len() - k)
    });
    if let Some(start) = start {
        *text = format!("{}***{}", &kept[..start], output_lines::CUT_MARKER);
    }
}

/// Opens logs and lets readers find the live ones.
#[derive(Clone)]
pub struct LogHub {
    dir: PathBuf,
    cap: u64,
    live: Arc<Mutex<HashMap<u64, watch::Receiver<LogProgress>>>>,
}

impl LogHub {
    /// Logs live in `dir`, each capped at `cap` bytes.
    pub fn new(dir: PathBuf, cap: u64) -> std::io::Result<LogHub> {
        std::fs::create_dir_all(&dir)?;
        Ok(LogHub {
            dir,
            cap,
            live: Arc::default(),
        })
    }

    /// The file of a build's log.
    pub fn path(&self, build: u64) -> PathBuf {
        self.dir.join(format!("{build}.log"))
    }

    /// Opens (appending) the log of a build that starts running; `masks` are secret values.
    pub fn open(&self, build: u64, masks: Vec<String>) -> std::io::Result<BuildLog> {
        let path = self.path(build);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        let masks = Masks::new(masks);
        let (tx, rx) = watch::channel(LogProgress {
            len: written,
            finished: false,
        });
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(build, rx);
        Ok(BuildLog {
            inner: Arc::new(Mutex::new(LogWriter {
                file,
                written,
                cap: self.cap,
                cut: false,
                masks,
            })),
            progress: Arc::new(tx),
        })
    }

    /// Forgets a finished build's live progress (call after [`BuildLog::finish`]).
    pub fn close(&self, build: u64) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&build);
    }

    /// The live progress of a running build, if it is running.
    pub fn follow(&self, build: u64) -> Option<watch::Receiver<LogProgress>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&build)
            .cloned()
    }
}

/// Reads complete lines of a log file from byte `offset`; returns them and the new offset.
pub async fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<LogRecord>, u64)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).await?;
    let complete = buf
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let mut out = Vec::new();
    for line in buf[..complete].split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<LogRecord>(line) {
            Ok(r) => out.push(r),
            Err(_) => out.push(LogRecord {
                t: 0,
                step: String::new(),
                stream: "opus".into(),
                text: String::from_utf8_lossy(line).into_owned(),
            }),
        }
    }
    Ok((out, offset + complete as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_masked_capped_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = LogHub::new(dir.path().to_path_buf(), 400).expect("hub");
        let log = hub
            .open(7, vec!["hunter2".into(), String::new()])
            .expect("open");
        log.line("step 1", "stdout", "token is hunter2!");
        for i in 0..20 {
            log.line("step 1", "stdout", &format!("line {i}"));
        }
        log.finish();
        let (lines, offset) = read_from(&hub.path(7), 0).await.expect("read");
        assert_eq!(lines[0].text, "token is ***!");
        let last = lines.last().expect("lines");
        assert!(last.text.contains("log cut here"), "{last:?}");
        assert!(offset <= 400 + 200);
        assert!(hub.follow(7).expect("live").borrow().finished);
        hub.close(7);
        assert!(hub.follow(7).is_none());
    }

    #[test]
    fn a_secret_cut_in_the_middle_is_masked_from_its_start() {
        let masks = vec!["hunter2".to_owned()];
        let mut text = format!("aaa hunt{}", output_lines::CUT_MARKER);
        mask_cut_secret(&mut text, &masks);
        assert_eq!(text, format!("aaa ***{}", output_lines::CUT_MARKER));
        let mut whole = "aaa hunt".to_owned();
        mask_cut_secret(&mut whole, &masks);
        assert_eq!(whole, "aaa hunt", "only cut lines");
        let mut unrelated = format!("aaa xyz{}", output_lines::CUT_MARKER);
        mask_cut_secret(&mut unrelated, &masks);
        assert_eq!(unrelated, format!("aaa xyz{}", output_lines::CUT_MARKER));
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_cut_with_a_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = LogHub::new(dir.path().to_path_buf(), 1 << 20).expect("hub");
        let log = hub.open(8, Vec::new()).expect("open");
        log.line("step 1", "stdout", &"x".repeat(MAX_STORED_LINE * 4));
        log.finish();
        let (lines, _) = read_from(&hub.path(8), 0).await.expect("read");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].text.ends_with(output_lines::CUT_MARKER));
        assert!(lines[0].text.len() <= MAX_STORED_LINE + output_lines::CUT_MARKER.len());
    }
}
