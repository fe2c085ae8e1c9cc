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
    /// failing disk is logged once through tracing; the build goes on.
    pub fn line(&self, step: &str, stream: &str, text: &str) {
        let mut w = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if w.cut {
            return;
        }
        let text = w.masks.apply(text);
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

    /// Marks the log complete: followers drain it and stop.
    pub fn finish(&self) {
        self.progress.send_modify(|p| p.finished = true);
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
}
