//! Publish sessions: the state `BeginPublish`, `UploadBlob` and `CommitPublish` share.
//!
//! A session is the plan the artifact store made ([`ArtifactStore::plan_publish`]) and a staging
//! folder `<data-dir>/uploads/<upload id>` where each uploaded digest is checked ([`BlobUpload`])
//! and kept as a file named by the digest, until [`Publishes::commit`] hands the folder to
//! [`ArtifactStore::store_published`]. Sessions live in memory: a restart (which empties the
//! uploads folder) or [`SESSION_IDLE`] without activity forgets them, and the client publishes
//! again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opus_core::artifact::{ArtifactStore, ManifestFile, PublishPlan, StoredVersion, sha256_hex};
use opus_core::error::ArtifactError;
use opus_core::model::StoreName;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tracing::info;

/// Idle time after which a publish is forgotten.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// What [`Publishes::begin`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishStarted {
    /// Identifies the publish in the next steps.
    pub(crate) upload_id: String,
    /// Digests whose content must be uploaded, each once, sorted.
    pub(crate) missing: Vec<String>,
}

/// One publish in progress.
struct Session {
    plan: PublishPlan,
    /// Where its uploads are staged.
    dir: PathBuf,
    touched: Instant,
}

/// State shared by every clone of [`Publishes`].
struct Inner {
    artifacts: ArtifactStore,
    /// The parent of every session's staging folder.
    staging: PathBuf,
    /// How long a session lives without activity.
    idle: Duration,
    /// Makes upload ids and temporary file names unique within this opusd.
    next_id: AtomicU64,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The publishes in progress, by upload id. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Publishes {
    inner: Arc<Inner>,
}

impl Publishes {
    /// Sessions staged under `staging` (`<data-dir>/uploads`), which is emptied now: sessions of
    /// an earlier opusd are gone with it. Failing to empty it is logged; a publish that then
    /// cannot create its folder says so.
    pub(crate) fn new(artifacts: ArtifactStore, staging: PathBuf, idle: Duration) -> Publishes {
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %staging.display(), error = %e, "cannot empty the uploads folder")
            }
        }
        Publishes {
            inner: Arc::new(Inner {
                artifacts,
                staging,
                idle,
                next_id: AtomicU64::new(1),
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn sessions(&self) -> Result<MutexGuard<'_, HashMap<String, Session>>, ArtifactError> {
        self.inner
            .sessions
            .lock()
            .map_err(|_| ArtifactError::Task("publish sessions lock poisoned".into()))
    }

    /// Step 1: checks the manifest with the artifact store, opens a session (forgetting idle
    /// ones), and answers the digests to upload.
    pub(crate) fn begin(
        &self,
        project: &str,
        version: &str,
        files: Vec<ManifestFile>,
        store: &StoreName,
    ) -> Result<PublishStarted, ArtifactError> {
        let plan = self
            .inner
            .artifacts
            .plan_publish(project, version, files, store)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let upload_id = sha256_hex(
            format!(
                "{nanos}-{n}-{}-{}-{}",
                std::process::id(),
                plan.project,
                plan.version
            )
            .as_bytes(),
        )[..32]
            .to_owned();
        let dir = self.inner.staging.join(&upload_id);
        std::fs::create_dir_all(&dir).map_err(|source| ArtifactError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let missing: Vec<String> = plan.missing.keys().cloned().collect();
        let mut sessions = self.sessions()?;
        sessions.retain(|_, s| {
            let keep = s.touched.elapsed() <= self.inner.idle;
            if !keep {
                let _ = std::fs::remove_dir_all(&s.dir);
            }
            keep
        });
        sessions.insert(
            upload_id.clone(),
            Session {
                plan,
                dir,
                touched: Instant::now(),
            },
        );
        info!(missing = missing.len(), "publish started");
        Ok(PublishStarted { upload_id, missing })
    }

    /// Step 2: starts receiving the content of digest `sha256`; `ContentMismatch` for a digest
    /// [`Publishes::begin`] did not ask for.
    pub(crate) async fn begin_blob(
        &self,
        upload_id: &str,
        sha256: &str,
    ) -> Result<BlobUpload, ArtifactError> {
        let (dir, size) = {
            let mut sessions = self.sessions()?;
            let session = sessions
                .get_mut(upload_id)
                .ok_or_else(|| ArtifactError::UploadNotFound(upload_id.to_owned()))?;
            session.touched = Instant::now();
            let Some(size) = session.plan.missing.get(sha256) else {
                return Err(ArtifactError::ContentMismatch(format!(
                    "sha256 {sha256:?} was not asked for by BeginPublish"
                )));
            };
            (session.dir.clone(), *size)
        };
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{sha256}.part{n}"));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|source| ArtifactError::Io {
                context: format!("cannot create {}", tmp.display()),
                source,
            })?;
        Ok(BlobUpload {
            publishes: self.clone(),
            upload_id: upload_id.to_owned(),
            sha256: sha256.to_owned(),
            expected_size: size,
            size: 0,
            hasher: sha2::Sha256::new(),
            file,
            final_path: dir.join(sha256),
            tmp,
        })
    }

    /// Step 3: stores the version from the session's staged content and forgets the session,
    /// whatever the outcome (`UploadNotFound` when there is none).
    pub(crate) async fn commit(&self, upload_id: &str) -> Result<StoredVersion, ArtifactError> {
        let session = self
            .sessions()?
            .remove(upload_id)
            .ok_or_else(|| ArtifactError::UploadNotFound(upload_id.to_owned()))?;
        let result = self
            .inner
            .artifacts
            .store_published(&session.plan, &session.dir)
            .await;
        let _ = tokio::fs::remove_dir_all(&session.dir).await;
        result
    }

    /// Marks a session active; `UploadNotFound` when it is gone.
    fn touch(&self, upload_id: &str) -> Result<(), ArtifactError> {
        match self.sessions()?.get_mut(upload_id) {
            Some(s) => {
                s.touched = Instant::now();
                Ok(())
            }
            None => Err(ArtifactError::UploadNotFound(upload_id.to_owned())),
        }
    }
}

/// The content of one digest being uploaded; see [`Publishes::begin_blob`]. It is staged under
/// its digest only once size and sha256 match.
pub(crate) struct BlobUpload {
    publishes: Publishes,
    upload_id: String,
    sha256: String,
    expected_size: u64,
    size: u64,
    hasher: sha2::Sha256,
    file: tokio::fs::File,
    tmp: PathBuf,
    final_path: PathBuf,
}

impl BlobUpload {
    /// Appends bytes; more than the manifest's size for this digest is `ContentMismatch`.
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), ArtifactError> {
        self.size += data.len() as u64;
        if self.size > self.expected_size {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Err(ArtifactError::ContentMismatch(format!(
                "more than the {} bytes announced for sha256 {}",
                self.expected_size, self.sha256
            )));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|source| ArtifactError::Io {
                context: format!("cannot write {}", self.tmp.display()),
                source,
            })
    }

    /// Checks size and digest and keeps the content for the commit.
    pub(crate) async fn finish(mut self) -> Result<(), ArtifactError> {
        let io = |context: String| move |source| ArtifactError::Io { context, source };
        self.file
            .flush()
            .await
            .map_err(io(format!("cannot write {}", self.tmp.display())))?;
        drop(self.file);
        let actual = hex::encode(self.hasher.finalize());
        if self.size != self.expected_size || actual != self.sha256 {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Err(ArtifactError::ContentMismatch(format!(
                "expected {} bytes with sha256 {}, received {} bytes with sha256 {actual}",
                self.expected_size, self.sha256, self.size
            )));
        }
        tokio::fs::rename(&self.tmp, &self.final_path)
            .await
            .map_err(io(format!("cannot keep {}", self.final_path.display())))?;
        self.publishes.touch(&self.upload_id)
    }
}

#[cfg(test)]
mod tests {
    use opus_core::model::{Project, ProjectName, Source};
    use opus_core::store::MetaStore;

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        staging: PathBuf,
        publishes: Publishes,
    }

    fn fixture(idle: Duration) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        meta.create_project(&Project {
            name: ProjectName::new("web").expect("name"),
            source: Source::Git("https://example.com/web.git".into()),
            branch: "main".into(),
            created_at: SystemTime::now(),
            keep_versions: 0,
        })
        .expect("project");
        let url = format!("file://{}", dir.path().join("artifacts").display());
        let artifacts = ArtifactStore::open(meta, &url, &[]).expect("artifact store");
        let staging = dir.path().join("uploads");
        std::fs::create_dir_all(staging.join("left-by-an-earlier-opusd")).expect("mkdir");
        let publishes = Publishes::new(artifacts, staging.clone(), idle);
        Fixture {
            _dir: dir,
            staging,
            publishes,
        }
    }

    fn file(path: &str, data: &[u8]) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            size: data.len() as u64,
            sha256: sha256_hex(data),
            mode: 0o644,
        }
    }

    async fn upload(p: &Publishes, id: &str, data: &[u8]) -> Result<(), ArtifactError> {
        let mut blob = p.begin_blob(id, &sha256_hex(data)).await?;
        blob.write(data).await?;
        blob.finish().await
    }

    #[tokio::test]
    async fn a_session_checks_every_upload_and_ends_with_its_commit() {
        let f = fixture(SESSION_IDLE);
        assert!(
            !f.staging.join("left-by-an-earlier-opusd").exists(),
            "the uploads folder is emptied on start"
        );
        let files = vec![file("index.html", b"<html>1</html>"), file("a.js", b"js")];
        let started = f
            .publishes
            .begin("web", "1.0", files.clone(), &StoreName::default_store())
            .expect("begin");
        assert_eq!(started.missing.len(), 2);

        // Content that does not match its digest, too much of it, or a digest not asked for.
        let sha = sha256_hex(b"js");
        let mut wrong = f
            .publishes
            .begin_blob(&started.upload_id, &sha)
            .await
            .expect("blob");
        wrong.write(b"JS").await.expect("write");
        assert!(matches!(
            wrong.finish().await,
            Err(ArtifactError::ContentMismatch(_))
        ));
        let mut long = f
            .publishes
            .begin_blob(&started.upload_id, &sha)
            .await
            .expect("blob");
        assert!(matches!(
            long.write(b"js and more").await,
            Err(ArtifactError::ContentMismatch(_))
        ));
        assert!(matches!(
            upload(&f.publishes, &started.upload_id, b"not listed").await,
            Err(ArtifactError::ContentMismatch(_))
        ));
        assert!(matches!(
            upload(&f.publishes, "no-such-id", b"js").await,
            Err(ArtifactError::UploadNotFound(_))
        ));

        // A commit before every digest arrived is refused, and forgets the publish.
        let early = f
            .publishes
            .begin("web", "0.9", files.clone(), &StoreName::default_store())
            .expect("begin");
        upload(&f.publishes, &early.upload_id, b"js")
            .await
            .expect("upload");
        let err = f
            .publishes
            .commit(&early.upload_id)
            .await
            .expect_err("missing");
        assert!(
            matches!(err, ArtifactError::ContentMissing { count: 1, .. }),
            "{err}"
        );
        assert!(matches!(
            f.publishes.commit(&early.upload_id).await,
            Err(ArtifactError::UploadNotFound(_))
        ));
        assert!(!f.staging.join(&early.upload_id).exists());

        upload(&f.publishes, &started.upload_id, b"js")
            .await
            .expect("upload");
        upload(&f.publishes, &started.upload_id, b"<html>1</html>")
            .await
            .expect("upload");
        let stored = f
            .publishes
            .commit(&started.upload_id)
            .await
            .expect("commit");
        assert_eq!(stored.record.file_count, 2);
        assert!(!f.staging.join(&started.upload_id).exists());
    }

    #[tokio::test]
    async fn idle_sessions_are_forgotten() {
        let f = fixture(Duration::ZERO);
        let files = vec![file("index.html", b"<html>1</html>")];
        let first = f
            .publishes
            .begin("web", "1.0", files.clone(), &StoreName::default_store())
            .expect("begin");
        // Idle means longer than zero: wait until the clock has moved past the first begin.
        let begun = Instant::now();
        while Instant::now() <= begun {
            tokio::task::yield_now().await;
        }
        f.publishes
            .begin("web", "1.1", files, &StoreName::default_store())
            .expect("a later begin forgets idle sessions");
        assert!(matches!(
            upload(&f.publishes, &first.upload_id, b"<html>1</html>").await,
            Err(ArtifactError::UploadNotFound(_))
        ));
        assert!(!f.staging.join(&first.upload_id).exists());
    }
}
