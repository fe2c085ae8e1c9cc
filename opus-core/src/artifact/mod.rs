//! The artifact store: every version of every project in an object store.
//!
//! [`ArtifactStore`] holds one object store per configured store name (`default`, built from
//! `--store`, and one per `--extra-store NAME=URL`), each built from a URL by `object_store`:
//! `file://` (local disk), `s3://` (AWS and every S3-compatible server), `gs://`, `az://`, with
//! credentials and endpoints read from the environment by object_store's builders
//! (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...).
//!
//! Query parameters of a URL are settings of that store's builder, over the environment's, so that
//! two stores can use different endpoints: `s3://bucket/opus?endpoint=http://127.0.0.1:9000&allow_http=true&region=us-east-1`
//! (keys as object_store names them: `endpoint`, `region`, `allow_http`, `virtual_hosted_style_request`...).
//! Credentials belong in the environment, not in a URL that `opus` commands may show.
//!
//! Layout inside a store (after the URL's own path prefix), so a bucket or CDN can serve a version
//! as it is:
//!
//! ```text
//! <project>/<version>/<path>...            the files, exactly as built
//! <project>/archive/<version>.tar.gz       the whole version as one archive
//! <project>/manifest/<version>.json        path, size, sha256, mode of every file; build id, commit, time
//! ```
//!
//! Write order: files, archive, manifest, then the metadata commit (version record, content index
//! entries and the `version.stored` event in one sled transaction). A version exists only once that
//! commit lands; objects of versions that never committed are orphans that
//! [`ArtifactStore::remove_orphans`] deletes on start.
//!
//! Dedup: the metadata store indexes which objects hold which sha256. A file whose content is
//! already stored is `copy`'d from one of them (a hard link on local disk, a server-side copy on
//! S3) instead of written again. Deleting a version removes its index entries in the same
//! transaction as its record, before any object is deleted, so the index never names a deleted
//! object.
//!
//! Modules: `write` (storing a folder or a publish), `read` (manifests, files, archives, verify),
//! `remove` (delete, retention, orphans), `publish` (the store's part of publishing a folder),
//! `pointers` (`_opus/sites/`: what site replicas serve, readable without the metadata store).
//!
//! Without the `store` feature only the manifest types and the digest helpers are here (what
//! the CLI uses).

#[cfg(feature = "store")]
mod certs;
mod diff;
#[cfg(feature = "store")]
pub mod pointers;
#[cfg(feature = "store")]
mod publish;
#[cfg(feature = "store")]
mod read;
#[cfg(feature = "store")]
mod remote;
#[cfg(feature = "store")]
mod remove;
#[cfg(feature = "store")]
mod rules;
#[cfg(feature = "store")]
mod write;

use std::time::SystemTime;
#[cfg(feature = "store")]
use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
};

#[cfg(feature = "store")]
use object_store::{ObjectStore, path::Path};
use serde::{Deserialize, Serialize};

#[cfg(feature = "store")]
use crate::error::ArtifactError;
#[cfg(feature = "store")]
use crate::model::VersionRecord;
use crate::model::{ProjectName, StoreName, VersionName};
#[cfg(feature = "store")]
use crate::store::MetaStore;

#[cfg(feature = "store")]
pub use certs::CertStamp;
pub use diff::{ChangedFile, ManifestDiff};
#[cfg(feature = "store")]
pub use publish::PublishPlan;
#[cfg(feature = "store")]
pub use read::{VerifyProblem, VerifyReport};
#[cfg(feature = "store")]
pub use remote::{Reservation, Uploaded, Uploader};
#[cfg(feature = "store")]
pub use remove::OrphanReport;
#[cfg(feature = "store")]
pub use write::StoredVersion;

pub use crate::model::DEFAULT_STORE;

/// One file of a version, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the version, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
}

/// The archive of a version, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the `.tar.gz`, lowercase hex.
    pub sha256: String,
}

/// A version's manifest, stored as `<project>/manifest/<version>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionManifest {
    /// The project.
    pub project: ProjectName,
    /// The version.
    pub version: VersionName,
    /// The number within the project of the build that produced it (0 for a published folder).
    pub build_id: u64,
    /// The commit built (empty when unknown).
    pub commit: String,
    /// When it was stored.
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// Its archive.
    pub archive: ArchiveInfo,
    /// Every file, sorted by path.
    pub files: Vec<ManifestFile>,
}

impl VersionManifest {
    /// The entry for `path`, if the version has that file.
    pub fn file(&self, path: &str) -> Option<&ManifestFile> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }
}

/// Where a version comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The number within the project of the build that produced it (0 for a published folder).
    pub build_id: u64,
    /// The commit built (empty when unknown).
    pub commit: String,
    /// The store to put it in: a configured store (the default one is [`StoreName::default_store`]).
    pub store: StoreName,
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "store")]
/// One configured object store.
pub(crate) struct Backend {
    /// Its name (`default` or an extra store's name).
    pub(crate) name: StoreName,
    /// The URL it was built from.
    pub(crate) url: String,
    /// The object store.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The URL's path, under which every key lives (empty for none).
    pub(crate) prefix: String,
    /// For `file://` stores: the folder on disk (so readers can use local paths).
    pub(crate) local_root: Option<PathBuf>,
}

#[cfg(feature = "store")]
impl Backend {
    /// Builds the object store named `name` from `url`.
    fn from_url(name: &StoreName, url: &str) -> Result<Backend, ArtifactError> {
        Backend::from_url_with(name, url, &[])
    }

    /// Builds the object store named `name` from `url`, with `settings` (environment-style names:
    /// `AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_KEY`...) over the process environment and under
    /// the URL's query. Names that are no setting of the store's builder are ignored, as the
    /// builders ignore such environment variables.
    fn from_url_with(
        name: &StoreName,
        url: &str,
        settings: &[(String, String)],
    ) -> Result<Backend, ArtifactError> {
        let invalid = |why: String| ArtifactError::InvalidStoreUrl {
            url: url.to_owned(),
            why,
        };
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(invalid(
                    "give a folder, e.g. file:///var/lib/opus/artifacts".into(),
                ));
            }
            let path = std::path::absolute(rest).map_err(|e| invalid(e.to_string()))?;
            std::fs::create_dir_all(&path)
                .map_err(|e| invalid(format!("cannot create {}: {e}", path.display())))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| invalid(e.to_string()))?;
            let root = std::fs::canonicalize(&path).map_err(|e| invalid(e.to_string()))?;
            return Ok(Backend {
                name: name.clone(),
                url: url.to_owned(),
                store: Arc::new(local),
                prefix: String::new(),
                local_root: Some(root),
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        // Query parameters are builder settings for this store alone (`?endpoint=...&region=...`),
        // applied over the environment's.
        let options: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut base = parsed.clone();
        base.set_query(None);
        let (scheme, path) =
            object_store::ObjectStoreScheme::parse(&base).map_err(|e| invalid(e.to_string()))?;
        use object_store::ObjectStoreScheme as S;
        let bad_option = |k: &str, e: object_store::Error| {
            invalid(format!("unknown setting {k:?} in the query: {e}"))
        };
        // The three cloud builders differ only in their type and their variables' prefix.
        macro_rules! cloud_store {
            ($builder:ty, $prefix:literal) => {{
                let mut b = <$builder>::from_env().with_url(base.as_str());
                for (k, v) in settings_with(settings, $prefix) {
                    if let Ok(key) = k.parse() {
                        b = b.with_config(key, v);
                    }
                }
                for (k, v) in &options {
                    b = b.with_config(k.parse().map_err(|e| bad_option(k, e))?, v);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }};
        }
        let store: Arc<dyn ObjectStore> = match scheme {
            S::AmazonS3 => cloud_store!(object_store::aws::AmazonS3Builder, "AWS_"),
            S::GoogleCloudStorage => {
                cloud_store!(object_store::gcp::GoogleCloudStorageBuilder, "GOOGLE_")
            }
            S::MicrosoftAzure => cloud_store!(object_store::azure::MicrosoftAzureBuilder, "AZURE_"),
            S::Memory => Arc::new(object_store::memory::InMemory::new()),
            _ => {
                return Err(invalid(
                    "unsupported scheme; use file://, s3://, gs:// or az://".into(),
                ));
            }
        };
        let prefix = path.as_ref().trim_matches('/').to_owned();
        Path::parse(&prefix).map_err(|e| invalid(e.to_string()))?;
        Ok(Backend {
            name: name.clone(),
            url: url.to_owned(),
            store,
            prefix,
            local_root: None,
        })
    }

    /// `<prefix>/<rest>` as an object path.
    fn path(&self, rest: &str) -> Result<Path, ArtifactError> {
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

    /// The key prefix of everything a project has in this store, with a trailing `/`.
    pub(crate) fn project_prefix(&self, project: &str) -> String {
        if self.prefix.is_empty() {
            format!("{project}/")
        } else {
            format!("{}/{project}/", self.prefix)
        }
    }

    /// The key prefix of a version's files, with a trailing `/`.
    pub(crate) fn files_prefix(&self, project: &str, version: &str) -> String {
        if self.prefix.is_empty() {
            format!("{project}/{version}/")
        } else {
            format!("{}/{project}/{version}/", self.prefix)
        }
    }

    /// Key of a version's file.
    pub(crate) fn file_key(
        &self,
        project: &str,
        version: &str,
        rel: &str,
    ) -> Result<Path, ArtifactError> {
        self.path(&format!("{project}/{version}/{rel}"))
    }

    /// Key of a version's archive.
    pub(crate) fn archive_key(&self, project: &str, version: &str) -> Result<Path, ArtifactError> {
        self.path(&format!("{project}/archive/{version}.tar.gz"))
    }

    /// Key of a version's manifest.
    pub(crate) fn manifest_key(&self, project: &str, version: &str) -> Result<Path, ArtifactError> {
        self.path(&format!("{project}/manifest/{version}.json"))
    }

    /// Wraps an object store error with this store's name and what was being done.
    pub(crate) fn err(
        &self,
        action: impl Into<String>,
    ) -> impl FnOnce(object_store::Error) -> ArtifactError {
        let store = self.name.clone();
        let action = action.into();
        move |source| ArtifactError::ObjectStore {
            store,
            action,
            source,
        }
    }
}

#[cfg(feature = "store")]
/// The settings whose names start with `prefix`, lowercased as the builders' `from_env` parses
/// them (`AWS_ACCESS_KEY_ID` -> `aws_access_key_id`).
fn settings_with<'a>(
    settings: &'a [(String, String)],
    prefix: &'a str,
) -> impl Iterator<Item = (String, &'a str)> + 'a {
    settings
        .iter()
        .filter(move |(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
}

#[cfg(feature = "store")]
/// State shared by every clone of an [`ArtifactStore`].
struct Inner {
    /// The metadata store: version records, the content index, events.
    meta: MetaStore,
    /// The configured stores by name.
    backends: BTreeMap<StoreName, Backend>,
    /// Versions being stored right now, so two writers never write the same keys.
    inflight: Mutex<HashSet<(String, String)>>,
    /// Storing holds it shared, deleting exclusively: a copy from a dedup source never races the
    /// deletion of that source.
    delete_lock: tokio::sync::RwLock<()>,
}

#[cfg(feature = "store")]
/// Versions in object stores: storing folders, reading manifests, files and archives, verifying,
/// deleting and retention. Cheap to clone.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<Inner>,
}

#[cfg(feature = "store")]
impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores: Vec<_> = self
            .inner
            .backends
            .values()
            .map(|b| (&b.name, &b.url))
            .collect();
        f.debug_struct("ArtifactStore")
            .field("stores", &stores)
            .finish()
    }
}

#[cfg(feature = "store")]
/// Removes a version from the in-progress set when storing ends, however it ends.
pub(crate) struct InflightGuard {
    inner: Arc<Inner>,
    key: (String, String),
}

#[cfg(feature = "store")]
impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.inner.inflight.lock() {
            set.remove(&self.key);
        }
    }
}

#[cfg(feature = "store")]
impl ArtifactStore {
    /// Opens the stores: `default_url` as [`DEFAULT_STORE`] and each `(name, url)` of `extra`.
    pub fn open(
        meta: MetaStore,
        default_url: &str,
        extra: &[(StoreName, String)],
    ) -> Result<ArtifactStore, ArtifactError> {
        let mut backends = BTreeMap::new();
        let default = StoreName::default_store();
        backends.insert(default.clone(), Backend::from_url(&default, default_url)?);
        for (name, url) in extra {
            if backends.contains_key(name) {
                return Err(ArtifactError::InvalidStoreUrl {
                    url: url.clone(),
                    why: format!("the store name {:?} is used twice", name.as_str()),
                });
            }
            backends.insert(name.clone(), Backend::from_url(name, url)?);
        }
        Ok(ArtifactStore {
            inner: Arc::new(Inner {
                meta,
                backends,
                inflight: Mutex::new(HashSet::new()),
                delete_lock: tokio::sync::RwLock::new(()),
            }),
        })
    }

    /// The configured stores as `(name, url)`, `default` first.
    pub fn stores(&self) -> Vec<(StoreName, String)> {
        let mut out: Vec<_> = self
            .inner
            .backends
            .values()
            .map(|b| (b.name.clone(), b.url.clone()))
            .collect();
        out.sort_by_key(|(n, _)| !n.is_default());
        out
    }

    /// Checks that `name` is a configured store: `UnknownStore` when it is not.
    pub fn check_store(&self, name: &StoreName) -> Result<(), ArtifactError> {
        self.backend(name).map(|_| ())
    }

    /// Reads a store name as a request carries it (empty means [`DEFAULT_STORE`]): the configured
    /// store of that name, or `UnknownStore` naming the configured ones (also for a name that
    /// is no valid store name at all).
    pub fn configured_store(&self, requested: &str) -> Result<StoreName, ArtifactError> {
        let name = if requested.is_empty() {
            DEFAULT_STORE
        } else {
            requested
        };
        match self.inner.backends.get_key_value(name) {
            Some((name, _)) => Ok(name.clone()),
            None => Err(self.unknown_store(name)),
        }
    }

    /// The store named `name`, or `UnknownStore`.
    pub(crate) fn backend(&self, name: &StoreName) -> Result<&Backend, ArtifactError> {
        self.inner
            .backends
            .get(name)
            .ok_or_else(|| self.unknown_store(name.as_str()))
    }

    /// `UnknownStore` for `name`, naming the configured stores.
    fn unknown_store(&self, name: &str) -> ArtifactError {
        ArtifactError::UnknownStore {
            name: name.to_owned(),
            known: self
                .inner
                .backends
                .keys()
                .map(StoreName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The metadata store.
    pub(crate) fn meta(&self) -> &MetaStore {
        &self.inner.meta
    }

    /// Marks a version as being stored; `VersionBusy` when it already is.
    pub(crate) fn reserve(
        &self,
        project: &str,
        version: &str,
    ) -> Result<InflightGuard, ArtifactError> {
        let key = (project.to_owned(), version.to_owned());
        let mut set = self
            .inner
            .inflight
            .lock()
            .map_err(|_| ArtifactError::Task("inflight lock poisoned".into()))?;
        if !set.insert(key.clone()) {
            return Err(ArtifactError::VersionBusy {
                project: project.to_owned(),
                version: version.to_owned(),
            });
        }
        Ok(InflightGuard {
            inner: self.inner.clone(),
            key,
        })
    }

    /// Whether a version is being stored right now.
    pub(crate) fn is_inflight(&self, project: &str, version: &str) -> bool {
        self.inner
            .inflight
            .lock()
            .map(|s| s.contains(&(project.to_owned(), version.to_owned())))
            .unwrap_or(true)
    }

    /// A version's record, or `VersionNotFound`.
    pub fn version(
        &self,
        project: &ProjectName,
        version: &VersionName,
    ) -> Result<VersionRecord, ArtifactError> {
        self.inner
            .meta
            .get_version(project, version)?
            .ok_or_else(|| ArtifactError::VersionNotFound {
                project: project.to_string(),
                version: version.to_string(),
            })
    }

    /// A project's versions, newest first; `ProjectNotFound` when the project does not exist.
    pub fn list_versions(
        &self,
        project: &ProjectName,
    ) -> Result<Vec<VersionRecord>, ArtifactError> {
        self.inner.meta.get_project(project)?;
        Ok(self.inner.meta.list_versions(project)?)
    }
}

/// sha256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Whether `s` looks like a sha256 digest in lowercase hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
#[cfg(feature = "store")]
mod tests;
