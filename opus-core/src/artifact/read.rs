//! Reading versions: manifests, files (whole, by range, or as a local path), archives, and
//! verifying stored content against the manifest.

use std::path::PathBuf;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use serde::Serialize;
use sha2::Digest;
use tracing::instrument;

use super::{ArtifactStore, Backend, VersionManifest, sha256_hex};
use crate::archive::check_relative_path;
use crate::error::ArtifactError;
use crate::model::{ProjectName, VersionName, VersionRecord};

/// Files re-hashed at once by verify.
const VERIFY_AT_ONCE: usize = 8;

/// One problem [`ArtifactStore::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// The version.
    pub version: String,
    /// The file (empty for the archive or manifest).
    pub path: String,
    /// `missing`, `size`, `sha256`, `archive` or `manifest`.
    pub kind: String,
    /// What was expected and found.
    pub detail: String,
}

/// What [`ArtifactStore::verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Versions checked.
    pub versions_checked: u32,
    /// Files re-hashed.
    pub files_checked: u32,
    /// Damage found; empty when everything matches.
    pub problems: Vec<VerifyProblem>,
}

impl ArtifactStore {
    /// A version's manifest, read from its store.
    pub async fn manifest(
        &self,
        project: &ProjectName,
        version: &VersionName,
    ) -> Result<VersionManifest, ArtifactError> {
        let record = self.version(project, version)?;
        let backend = self.backend(&record.store)?;
        read_manifest(backend, &record).await
    }

    /// A file of a version as a stream of its bytes, so that a caller can copy it elsewhere (the
    /// site server's disk cache) without holding it in memory.
    pub async fn file_stream(
        &self,
        project: &ProjectName,
        version: &VersionName,
        path: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, ArtifactError>>, ArtifactError> {
        let (backend, key) = self.file_location(project, version, path)?;
        let (project, version) = (project.as_str(), version.as_str());
        let result = backend
            .store
            .get(&key)
            .await
            .map_err(not_found_as(project, version, backend, &key))?;
        let store = backend.name.clone();
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

    /// Where a file of a version lies on local disk, for `file://` stores (`None` for remote
    /// stores). The path is checked to stay inside the version; whether the file exists is the
    /// manifest's to say.
    pub fn local_path(
        &self,
        project: &ProjectName,
        version: &VersionName,
        path: &str,
    ) -> Result<Option<PathBuf>, ArtifactError> {
        check_relative_path(path)?;
        let record = self.version(project, version)?;
        let (project, version) = (project.as_str(), version.as_str());
        let backend = self.backend(&record.store)?;
        Ok(backend.local_root.as_ref().map(|root| {
            let mut p = root.join(project).join(version);
            p.extend(path.split('/'));
            p
        }))
    }

    fn file_location(
        &self,
        project: &ProjectName,
        version: &VersionName,
        path: &str,
    ) -> Result<(&Backend, object_store::path::Path), ArtifactError> {
        check_relative_path(path)?;
        let record = self.version(project, version)?;
        let backend = self.backend(&record.store)?;
        let key = backend.file_key(project.as_str(), version.as_str(), path)?;
        Ok((backend, key))
    }

    /// A version's tar.gz archive: its size and a stream of its bytes.
    pub async fn archive(
        &self,
        project: &ProjectName,
        version: &VersionName,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, ArtifactError>>), ArtifactError> {
        let record = self.version(project, version)?;
        let (project, version) = (project.as_str(), version.as_str());
        let backend = self.backend(&record.store)?;
        let key = backend.archive_key(project, version)?;
        let result = backend
            .store
            .get(&key)
            .await
            .map_err(not_found_as(project, version, backend, &key))?;
        let size = result.meta.size;
        let store = backend.name.clone();
        let action = format!("reading {key}");
        let stream = result
            .into_stream()
            .map(move |r| {
                r.map_err(|source| ArtifactError::ObjectStore {
                    store: store.clone(),
                    action: action.clone(),
                    source,
                })
            })
            .boxed();
        Ok((size, stream))
    }

    /// Re-hashes the files of one version (or of every version of the project when `version` is
    /// `None`) and its archive against its manifest.
    #[instrument(skip(self))]
    pub async fn verify(
        &self,
        project: &ProjectName,
        version: Option<&VersionName>,
    ) -> Result<VerifyReport, ArtifactError> {
        let records = match version {
            Some(v) => vec![self.version(project, v)?],
            None => self.list_versions(project)?,
        };
        let mut report = VerifyReport::default();
        for record in &records {
            let backend = self.backend(&record.store)?;
            report.versions_checked += 1;
            verify_version(backend, record, &mut report).await;
        }
        Ok(report)
    }
}

/// Maps `NotFound` on a version's object to a damage message; other errors as they are.
fn not_found_as<'a>(
    project: &'a str,
    version: &'a str,
    backend: &'a Backend,
    key: &'a object_store::path::Path,
) -> impl FnOnce(object_store::Error) -> ArtifactError + 'a {
    move |e| match e {
        object_store::Error::NotFound { .. } => ArtifactError::ObjectStore {
            store: backend.name.clone(),
            action: format!(
                "reading {key} of version {version:?} of {project} (missing: run `opus verify {project}`)"
            ),
            source: e,
        },
        e => backend.err(format!("reading {key}"))(e),
    }
}

pub(crate) async fn read_manifest(
    backend: &Backend,
    record: &VersionRecord,
) -> Result<VersionManifest, ArtifactError> {
    let key = backend.manifest_key(record.project.as_str(), record.version.as_str())?;
    let bytes = backend
        .store
        .get(&key)
        .await
        .map_err(backend.err(format!("reading {key}")))?
        .bytes()
        .await
        .map_err(backend.err(format!("reading {key}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ArtifactError::ManifestCorrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

async fn verify_version(backend: &Backend, record: &VersionRecord, report: &mut VerifyReport) {
    let version = record.version.to_string();
    let problem = |path: &str, kind: &str, detail: String| VerifyProblem {
        version: version.clone(),
        path: path.to_owned(),
        kind: kind.to_owned(),
        detail,
    };
    let manifest = match read_manifest(backend, record).await {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(problem("", "manifest", e.to_string()));
            return;
        }
    };
    let checks = futures::stream::iter(manifest.files.iter().cloned().map(|f| async move {
        let key = backend.file_key(record.project.as_str(), record.version.as_str(), &f.path)?;
        let data = match backend.store.get(&key).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(backend.err(format!("reading {key}")))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Some(("missing", "the file is not in the store".to_owned())));
            }
            Err(e) => return Err(backend.err(format!("reading {key}"))(e)),
        };
        if data.len() as u64 != f.size {
            return Ok(Some((
                "size",
                format!("expected {} bytes, found {}", f.size, data.len()),
            )));
        }
        let actual = tokio::task::spawn_blocking(move || sha256_hex(&data))
            .await
            .map_err(|e| ArtifactError::Task(e.to_string()))?;
        if actual != f.sha256 {
            return Ok(Some((
                "sha256",
                format!("expected {}, found {actual}", f.sha256),
            )));
        }
        Ok::<_, ArtifactError>(None)
    }))
    .buffered(VERIFY_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    for (file, check) in manifest.files.iter().zip(checks) {
        report.files_checked += 1;
        match check {
            Ok(None) => {}
            Ok(Some((kind, detail))) => report.problems.push(problem(&file.path, kind, detail)),
            Err(e) => report
                .problems
                .push(problem(&file.path, "missing", e.to_string())),
        }
    }
    match archive_digest(backend, record).await {
        Ok((size, sha)) if size == manifest.archive.size && sha == manifest.archive.sha256 => {}
        Ok((size, sha)) => report.problems.push(problem(
            "",
            "archive",
            format!(
                "expected {} bytes with sha256 {}, found {size} bytes with sha256 {sha}",
                manifest.archive.size, manifest.archive.sha256
            ),
        )),
        Err(e) => report.problems.push(problem("", "archive", e.to_string())),
    }
}

async fn archive_digest(
    backend: &Backend,
    record: &VersionRecord,
) -> Result<(u64, String), ArtifactError> {
    let key = backend.archive_key(record.project.as_str(), record.version.as_str())?;
    let mut stream = backend
        .store
        .get(&key)
        .await
        .map_err(backend.err(format!("reading {key}")))?
        .into_stream();
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(backend.err(format!("reading {key}")))?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Reads a whole object (for tests and small objects).
#[cfg(test)]
pub(crate) async fn read_object(store: &dyn object_store::ObjectStore, key: &str) -> Option<Bytes> {
    let key = object_store::path::Path::parse(key).ok()?;
    store.get(&key).await.ok()?.bytes().await.ok()
}
