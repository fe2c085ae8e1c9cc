//! The runner's [`LogSink`]: lines go to opusd over one `RunnerService.PushLogs` stream, which
//! appends them to the build's log (masking secrets) so that `opus logs -f` shows them live.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opus_core::proto;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::Client;
use crate::build::steps::LogSink;
use crate::runners::BUILD_ID_METADATA;

/// Bytes of lines waiting to be sent past which new lines are dropped (a build that prints faster
/// than the network carries must not fill the pod's memory); a marker says how many were.
const MAX_PENDING: u64 = 16 << 20;

/// Sends log lines to opusd. Cloning shares the stream; it ends when every clone is dropped.
#[derive(Clone)]
pub(crate) struct RemoteLog {
    tx: mpsc::UnboundedSender<proto::LogLine>,
    pending: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// Opens the `PushLogs` stream of `build`; the handle answers once every line is delivered (or
/// the stream failed).
pub(crate) fn start(
    mut client: Client,
    build: u64,
) -> (RemoteLog, JoinHandle<Result<(), tonic::Status>>) {
    let (tx, rx) = mpsc::unbounded_channel::<proto::LogLine>();
    let pending = Arc::new(AtomicU64::new(0));
    let sent = pending.clone();
    let lines = UnboundedReceiverStream::new(rx).map(move |line| {
        sent.fetch_sub(size(&line), Ordering::Relaxed);
        line
    });
    let handle = tokio::spawn(async move {
        let mut request = tonic::Request::new(lines);
        let id = build
            .to_string()
            .parse()
            .map_err(|_| tonic::Status::internal("build id is not a header value"))?;
        request.metadata_mut().insert(BUILD_ID_METADATA, id);
        client.push_logs(request).await.map(drop)
    });
    let log = RemoteLog {
        tx,
        pending,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    (log, handle)
}

fn size(line: &proto::LogLine) -> u64 {
    (line.text.len() + line.step.len() + 16) as u64
}

fn log_line(step: &str, stream: &str, text: &str) -> proto::LogLine {
    proto::LogLine {
        time: Some(opus_core::wire::timestamp(std::time::SystemTime::now())),
        step: step.to_owned(),
        text: text.to_owned(),
        stream: stream.to_owned(),
        final_state: 0,
    }
}

impl LogSink for RemoteLog {
    fn line(&self, step: &str, stream: &str, text: &str) {
        if stream == "opus" {
            // The runner's own lines also go to its stderr (`kubectl logs`); output of the steps
            // does not, since only opusd masks secrets.
            tracing::info!(step, "{text}");
        }
        let line = log_line(step, stream, text);
        let n = size(&line);
        if self.pending.load(Ordering::Relaxed) + n > MAX_PENDING {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let marker = log_line(
                step,
                "opus",
                &format!(
                    "[{dropped} line(s) dropped: the build printed faster than they could be sent to opusd]"
                ),
            );
            self.pending.fetch_add(size(&marker), Ordering::Relaxed);
            let _ = self.tx.send(marker);
        }
        self.pending.fetch_add(n, Ordering::Relaxed);
        // A closed stream (opusd refused it) loses the line; the runner learns why at the end.
        let _ = self.tx.send(line);
    }
}
