//! Disk health: whether opusd can write, what `/healthz` answers, the free space `opus status`
//! shows, and the watch that reopens the metadata store once its disk has room again.
//!
//! sled fails every write after its first I/O error until the database is opened again, so
//! without the watch a disk that filled once would wedge opusd until a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use opus_core::CoreError;
use opus_core::store::{MetaStore, is_disk_full};
use tokio_util::sync::CancellationToken;

/// Below this many free bytes a disk counts as full: sled writes its log in 512 KiB segments, and
/// a build needs room for its log and workspace.
pub const FULL_BELOW_BYTES: u64 = 1 << 20;

/// How often the watch looks at a failed store's disk.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The disk health of one opusd: its metadata store and the folders it writes to.
#[derive(Clone)]
pub struct Health {
    /// The metadata store, whose failed writes make opusd degraded.
    store: MetaStore,
    /// `--data-dir`: logs, workspaces, caches and (by default) the store live there.
    data_dir: Arc<PathBuf>,
    /// The default artifact store's folder, when it is on local disk (`file://`).
    artifact_dir: Option<Arc<PathBuf>>,
}

impl Health {
    /// Health of `store`, `data_dir` and the default artifact store at `store_url`.
    pub fn new(store: MetaStore, data_dir: &Path, store_url: &str) -> Health {
        let artifact_dir = store_url
            .strip_prefix("file://")
            .map(|p| Arc::new(PathBuf::from(p)));
        Health {
            store,
            data_dir: Arc::new(data_dir.to_owned()),
            artifact_dir,
        }
    }

    /// Free bytes on the file system of the data directory.
    pub fn data_dir_free(&self) -> Option<u64> {
        free_bytes(&self.data_dir)
    }

    /// Free bytes on the file system of the default artifact store, when it is on local disk.
    pub fn store_free(&self) -> Option<u64> {
        self.artifact_dir.as_deref().and_then(|d| free_bytes(d))
    }

    /// Why opusd is degraded, or `None` while it can write: the metadata store's failed writes,
    /// then a full data directory or artifact store.
    pub fn problem(&self) -> Option<String> {
        if let Some(e) = self.store.failure() {
            return Some(format!("metadata store writes fail: {e}"));
        }
        full_disk_note(&self.data_dir)
            .or_else(|| self.artifact_dir.as_deref().and_then(|d| full_disk_note(d)))
    }

    /// Reopens the metadata store after a failed write as soon as its disk has room again, until
    /// `shutdown` is cancelled.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.store.failure().is_none() {
                continue;
            }
            if free_bytes(self.store.path()).is_some_and(|free| free < FULL_BELOW_BYTES) {
                continue;
            }
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.reopen()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => tracing::debug!("metadata store writes still fail"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot reopen the metadata store"),
                Err(e) => tracing::error!(error = %e, "the reopen task died"),
            }
        }
    }
}

/// `GET /healthz`: `200 ok` while opusd can write, `503 degraded: <why>` while it cannot.
pub async fn healthz(health: Health) -> (StatusCode, String) {
    match tokio::task::spawn_blocking(move || health.problem()).await {
        Ok(None) => (StatusCode::OK, "ok\n".to_owned()),
        Ok(Some(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {why}\n"),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot check health: {e}\n"),
        ),
    }
}

/// Free bytes (for an unprivileged user) on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (blocks, size) = (
        u64::from(st.blocks_available()),
        u64::from(st.fragment_size()),
    );
    Some(blocks.saturating_mul(size))
}

/// "the disk holding <path> is full ..." when the file system of `path` has (almost) no room.
pub fn full_disk_note(path: &Path) -> Option<String> {
    let free = free_bytes(path)?;
    (free < FULL_BELOW_BYTES).then(|| {
        format!(
            "the disk holding {} is full ({free} bytes free): free space and retry",
            path.display()
        )
    })
}

/// Whether a core error comes from a full disk, wherever in its chain the I/O error sits.
pub fn is_disk_full_error(e: &CoreError) -> bool {
    use opus_core::error::{ArtifactError, StoreError};
    if let CoreError::Store(StoreError::DiskFull { .. })
    | CoreError::Artifact(ArtifactError::Meta(StoreError::DiskFull { .. })) = e
    {
        return true;
    }
    // Transparent wrappers hand over their inner error's source, so the chain holds the I/O
    // error itself.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && is_disk_full(io)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_deep_in_the_chain_is_found() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = CoreError::Artifact(opus_core::error::ArtifactError::Io {
            context: "writing x".into(),
            source: io,
        });
        assert!(is_disk_full_error(&e));
        let other = CoreError::Artifact(opus_core::error::ArtifactError::Io {
            context: "writing x".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert!(!is_disk_full_error(&other));
    }

    #[test]
    fn a_full_disk_is_resource_exhausted_with_where_it_is() {
        let e = opus_core::error::StoreError::DiskFull {
            path: PathBuf::from("/srv/opus/meta"),
        };
        let s = crate::api::status(e);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "the disk holding /srv/opus/meta is full: free space and retry"
        );
        let e = opus_core::error::ArtifactError::Io {
            context: "writing /srv/opus/artifacts/web/1/index.html".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        let s = crate::api::status(e);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().starts_with("the disk is full: free space and retry (writing /srv/opus/artifacts/web/1/index.html"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn a_folder_with_room_is_not_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).is_some());
        // The test machine's temp folder has more than a MiB free.
        assert_eq!(full_disk_note(dir.path()), None);
    }
}
