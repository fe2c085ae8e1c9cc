//! Site pointers: what each environment serves, kept in the default artifact store under
//! `_opus/sites/<project>/<env>.json`, so that a site replica (`opusd sites`) serves exactly what
//! opusd serves while reading nothing but the store.
//!
//! opusd writes a [`SitePointer`] after every committed change of an environment (deploy,
//! rollback, removal, a domain or password change); a replica lists the prefix, reads the
//! pointers whose stamp changed, and loads their versions' manifests and files through a
//! [`SiteStore`]. The prefix `_opus/` can never be a project's folder: project names are DNS
//! labels, which cannot start with `_`.
//!
//! Architecture Invariant: only [`SITES_PREFIX`] is listed or written here; other `_opus/`
//! folders (certificates) belong to their own owners.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
pub use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{ArtifactStore, Backend, VersionManifest};
use crate::archive::check_relative_path;
use crate::error::ArtifactError;
use crate::model::StoreName;
use crate::store::SiteOptions;

/// The folder of site pointers, inside the store's own prefix.
pub const SITES_PREFIX: &str = "_opus/sites";

/// The pointer format this opusd writes; a replica refuses a newer one rather than misread it.
pub const POINTER_FORMAT: u32 = 1;

/// What one environment serves, and everything around it the site server applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePointer {
    /// [`POINTER_FORMAT`] when written.
    pub format: u32,
    /// The project.
    pub project: String,
    /// The environment.
    pub env: String,
    /// The version it serves.
    pub version: String,
    /// The store holding the version (replicas serve versions of the default store).
    pub store: String,
    /// The release's sequence number (for logs and for telling two pointers apart).
    pub release: u64,
    /// Whether the environment is a preview (noindex, the previews' password).
    pub preview: bool,
    /// The version's site options (SPA, redirect and header rules).
    #[serde(default)]
    pub site: SiteOptions,
    /// The argon2 PHC string of the environment's own password, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The argon2 PHC string of the project's previews' password, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previews_password: Option<String>,
    /// The custom domains routed to the environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// When the project was added (two sites reaching one host: the older project keeps it).
    #[serde(with = "super::rfc3339")]
    pub project_created: SystemTime,
}

/// A listed pointer: its key and what changes whenever it is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerStamp {
    /// The object's key.
    pub key: Path,
    /// The store's ETag, when it gives one.
    pub e_tag: Option<String>,
    /// When it was last written.
    pub last_modified: SystemTime,
    /// Its size.
    pub size: u64,
}

/// One object store read as a site replica reads it: pointers, manifests and files, with no
/// metadata store. Cheap to clone.
#[derive(Clone)]
pub struct SiteStore {
    /// The store's name (for errors).
    name: StoreName,
    /// The object store.
    pub(super) store: Arc<dyn ObjectStore>,
    /// The URL's path, under which every key lives (empty for none).
    prefix: String,
    /// For `file://` stores: the folder on disk.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for SiteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl SiteStore {
    /// The store at `url` (`file://`, `s3://`, `gs://`, `az://`, settings in the query as for
    /// `--store`).
    pub fn open(url: &str) -> Result<SiteStore, ArtifactError> {
        Ok(SiteStore::of(&Backend::from_url(
            &StoreName::default_store(),
            url,
        )?))
    }

    fn of(backend: &Backend) -> SiteStore {
        SiteStore {
            name: backend.name.clone(),
            store: backend.store.clone(),
            prefix: backend.prefix.clone(),
            local_root: backend.local_root.clone(),
        }
    }

    /// `<prefix>/<rest>` as an object path.
    pub(super) fn path(&self, rest: &str) -> Result<Path, ArtifactError> {
        let full = if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.prefix)
        };
        Path::parse(&full).map_err(|e| ArtifactError::BadFileName {
            path: PathBuf::from(&full),
            why: e.to_string(),
        })
    }

    pub(super) fn err(&self, action: String) -> impl FnOnce(object_store::Error) -> ArtifactError {
        let store = self.name.clone();
        move |source| ArtifactError::ObjectStore {
            store,
            action,
            source,
        }
    }

    /// The key of `project`'s environment `env`'s pointer.
    pub fn pointer_key(&self, project: &str, env: &str) -> Result<Path, ArtifactError> {
        self.path(&format!("{SITES_PREFIX}/{project}/{env}.json"))
    }

    /// Writes `pointer` (replacing the one before, atomically as the store puts objects).
    pub async fn put_pointer(&self, pointer: &SitePointer) -> Result<(), ArtifactError> {
        let key = self.pointer_key(&pointer.project, &pointer.env)?;
        let json =
            serde_json::to_vec_pretty(pointer).map_err(|e| ArtifactError::PointerCorrupt {
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        self.store
            .put(&key, PutPayload::from(json))
            .await
            .map_err(self.err(format!("writing {key}")))?;
        Ok(())
    }

    /// Deletes the pointer of `project`'s environment `env` (nothing when there is none).
    pub async fn delete_pointer(&self, project: &str, env: &str) -> Result<(), ArtifactError> {
        let key = self.pointer_key(project, env)?;
        self.delete(&key).await
    }

    /// Deletes the object at `key` (nothing when there is none).
    pub async fn delete(&self, key: &Path) -> Result<(), ArtifactError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("deleting {key}"))(e)),
        }
    }

    /// Every pointer in the store (or only `project`'s) with its stamp: one listing of
    /// [`SITES_PREFIX`].
    pub async fn list_pointers(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<PointerStamp>, ArtifactError> {
        let prefix = match project {
            Some(p) => self.path(&format!("{SITES_PREFIX}/{p}"))?,
            None => self.path(SITES_PREFIX)?,
        };
        self.store
            .list(Some(&prefix))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".json")))
            .map_ok(|m| PointerStamp {
                key: m.location,
                e_tag: m.e_tag,
                last_modified: SystemTime::from(m.last_modified),
                size: m.size,
            })
            .try_collect()
            .await
            .map_err(self.err(format!("listing {prefix}/")))
    }

    /// The pointer at `key` (a key [`SiteStore::list_pointers`] gave). `PointerCorrupt` when it
    /// is not a pointer this opusd can read.
    pub async fn read_pointer(&self, key: &Path) -> Result<SitePointer, ArtifactError> {
        let bytes = self.get(key).await?;
        let corrupt = |detail: String| ArtifactError::PointerCorrupt {
            key: key.to_string(),
            detail,
        };
        let pointer: SitePointer =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if pointer.format > POINTER_FORMAT {
            return Err(corrupt(format!(
                "format {} is newer than this opusd's {POINTER_FORMAT}; upgrade the replica",
                pointer.format
            )));
        }
        Ok(pointer)
    }

    /// A whole object.
    pub(super) async fn get(&self, key: &Path) -> Result<Bytes, ArtifactError> {
        self.store
            .get(key)
            .await
            .map_err(self.err(format!("reading {key}")))?
            .bytes()
            .await
            .map_err(self.err(format!("reading {key}")))
    }

    /// A version's manifest.
    pub async fn manifest(
        &self,
        project: &str,
        version: &str,
    ) -> Result<VersionManifest, ArtifactError> {
        let key = self.path(&format!("{project}/manifest/{version}.json"))?;
        let bytes = self.get(&key).await?;
        serde_json::from_slice(&bytes).map_err(|e| ArtifactError::ManifestCorrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })
    }

    /// A version's folder on local disk, for `file://` stores (`None` for remote stores).
    pub fn local_dir(&self, project: &str, version: &str) -> Option<PathBuf> {
        self.local_root
            .as_ref()
            .map(|root| root.join(project).join(version))
    }

    /// A file of a version as a stream of its bytes (for the site server's disk cache).
    pub async fn file_stream(
        &self,
        project: &str,
        version: &str,
        path: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, ArtifactError>>, ArtifactError> {
        check_relative_path(path)?;
        let key = self.path(&format!("{project}/{version}/{path}"))?;
        let result = self
            .store
            .get(&key)
            .await
            .map_err(self.err(format!("reading {key}")))?;
        let store = self.name.clone();
        let action = format!("reading {key}");
        Ok(result
            .into_stream()
            .map(move |r| {
                r.map_err(|source| ArtifactError::ObjectStore {
                    store: store.clone(),
                    action: action.clone(),
                    source,
                })
            })
            .boxed())
    }
}

impl ArtifactStore {
    /// The default store, as site replicas read it: where opusd writes site pointers.
    pub fn site_store(&self) -> Result<SiteStore, ArtifactError> {
        Ok(SiteStore::of(self.backend(&StoreName::default_store())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(version: &str) -> SitePointer {
        SitePointer {
            format: POINTER_FORMAT,
            project: "web".into(),
            env: "production".into(),
            version: version.into(),
            store: "default".into(),
            release: 1,
            preview: false,
            site: SiteOptions::default(),
            password: None,
            previews_password: None,
            domains: vec!["www.example.com".into()],
            project_created: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        }
    }

    #[tokio::test]
    async fn pointers_round_trip_and_list_only_their_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let store = SiteStore::open(&url).expect("store");
        assert!(store.list_pointers(None).await.expect("list").is_empty());
        // Another owner's object under `_opus/` is never listed.
        std::fs::create_dir_all(dir.path().join("_opus/certs")).expect("mkdir");
        std::fs::write(dir.path().join("_opus/certs/a.json"), "{}").expect("write");

        store.put_pointer(&pointer("1")).await.expect("put");
        let listed = store.list_pointers(None).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key.as_ref(), "_opus/sites/web/production.json");
        let read = store.read_pointer(&listed[0].key).await.expect("read");
        assert_eq!(read, pointer("1"));

        store
            .delete_pointer("web", "production")
            .await
            .expect("delete");
        store
            .delete_pointer("web", "production")
            .await
            .expect("deleting twice is fine");
        assert!(store.list_pointers(None).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_damaged_or_newer_pointer_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let store = SiteStore::open(&url).expect("store");
        let key = store.pointer_key("web", "production").expect("key");
        std::fs::create_dir_all(dir.path().join("_opus/sites/web")).expect("mkdir");
        std::fs::write(
            dir.path().join("_opus/sites/web/production.json"),
            "{not json",
        )
        .expect("write");
        let err = store.read_pointer(&key).await.expect_err("damaged");
        assert!(matches!(err, ArtifactError::PointerCorrupt { .. }), "{err}");

        let mut newer = pointer("1");
        newer.format = POINTER_FORMAT + 1;
        store.put_pointer(&newer).await.expect("put");
        let err = store.read_pointer(&key).await.expect_err("newer");
        assert!(err.to_string().contains("upgrade the replica"), "{err}");
    }

    #[test]
    fn no_project_name_can_take_the_opus_prefix() {
        assert!(crate::model::ProjectName::new("_opus").is_err());
        assert!(crate::model::ProjectName::new("_x").is_err());
    }
}
