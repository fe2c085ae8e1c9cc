//! `opus.v1.ArtifactService`: stored versions, manifests, archives, publishing, verify, delete.
//! `publish`: the sessions of publishes in progress.

mod publish;

use std::collections::HashMap;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use opus_core::artifact::ManifestFile;
use opus_core::model::{ProjectName, VersionName};
use opus_core::proto::{self, artifact_service_server::ArtifactService};
use opus_core::store::EnvironmentRecord;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use self::publish::{Publishes, SESSION_IDLE};
use super::status;
use opus_core::artifact::ArtifactStore;
use opus_core::store::MetaStore;

/// Largest message of the artifact API (a manifest of about 400,000 files).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// Bytes per `DataChunk` of a download.
const CHUNK: usize = 1 << 20;

/// Implements the artifact RPCs over the [`opus_core::artifact::ArtifactStore`].
pub(crate) struct ArtifactsApi {
    /// Projects (their retention setting).
    store: MetaStore,
    /// The stored versions: listing, reading, deleting, retention.
    artifacts: ArtifactStore,
    /// Publishes in progress; their uploads are staged in `<data-dir>/uploads`.
    publishes: Publishes,
    /// The site server, which names each version's own URL.
    sites: std::sync::Arc<crate::sites::SiteServer>,
}

impl ArtifactsApi {
    /// The service; publish sessions start empty (and so does `<data-dir>/uploads`).
    pub(crate) fn new(
        store: MetaStore,
        artifacts: ArtifactStore,
        data_dir: &std::path::Path,
        sites: std::sync::Arc<crate::sites::SiteServer>,
    ) -> Self {
        let publishes = Publishes::new(artifacts.clone(), data_dir.join("uploads"), SESSION_IDLE);
        ArtifactsApi {
            store,
            artifacts,
            publishes,
            sites,
        }
    }

    /// Applies the project's retention after a version was published (`keep N`, see
    /// [`crate::promotion::keep_count`]); failures are logged, the publish itself succeeded.
    async fn apply_retention(&self, project: &ProjectName) {
        let keep = match self.store.get_project(project) {
            Ok(p) => crate::promotion::keep_count(&p, None),
            Err(_) => return,
        };
        if let Err(e) = self.artifacts.apply_retention(project, keep).await {
            tracing::warn!(project = %project, error = %e, "retention failed");
        }
    }
}

/// Which environments currently serve each version (version -> environment names, sorted), from
/// the environments' current releases: what `deployed_to` of a listed version says.
fn serving_environments(environments: &[EnvironmentRecord]) -> HashMap<&str, Vec<String>> {
    let mut serving: HashMap<&str, Vec<String>> = HashMap::new();
    for env in environments {
        serving
            .entry(env.current.version.as_str())
            .or_default()
            .push(env.name.clone());
    }
    for names in serving.values_mut() {
        names.sort();
    }
    serving
}

/// The project and version a request names, checked once here.
fn names(project: &str, version: &str) -> Result<(ProjectName, VersionName), Status> {
    Ok((
        ProjectName::new(project).map_err(status)?,
        VersionName::new(version).map_err(status)?,
    ))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::DataChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ArtifactService for ArtifactsApi {
    #[instrument(skip_all, fields(project = %req.get_ref().project))]
    async fn list_versions(
        &self,
        req: Request<proto::ListVersionsRequest>,
    ) -> Result<Response<proto::ListVersionsResponse>, Status> {
        let project = ProjectName::new(req.get_ref().project.as_str()).map_err(status)?;
        let versions = self.artifacts.list_versions(&project).map_err(status)?;
        let environments = self.store.environments(&project).map_err(status)?;
        let serving = serving_environments(&environments);
        Ok(Response::new(proto::ListVersionsResponse {
            versions: versions
                .iter()
                .map(|v| {
                    let mut version = proto::Version::from(v);
                    version.deployed_to =
                        serving.get(v.version.as_str()).cloned().unwrap_or_default();
                    version.url = self.sites.version_url(&v.project, &v.version);
                    version
                })
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, version = %req.get_ref().version))]
    async fn get_manifest(
        &self,
        req: Request<proto::GetManifestRequest>,
    ) -> Result<Response<proto::Manifest>, Status> {
        let req = req.into_inner();
        let (project, version) = names(&req.project, &req.version)?;
        let manifest = self
            .artifacts
            .manifest(&project, &version)
            .await
            .map_err(status)?;
        Ok(Response::new((&manifest).into()))
    }

    type DownloadArchiveStream = ChunkStream;

    #[instrument(skip_all, fields(project = %req.get_ref().project, version = %req.get_ref().version))]
    async fn download_archive(
        &self,
        req: Request<proto::DownloadArchiveRequest>,
    ) -> Result<Response<Self::DownloadArchiveStream>, Status> {
        let req = req.into_inner();
        let (project, version) = names(&req.project, &req.version)?;
        let (size, mut source) = self
            .artifacts
            .archive(&project, &version)
            .await
            .map_err(status)?;
        let stream = async_stream::try_stream! {
            let mut buf = Vec::with_capacity(CHUNK);
            let mut first = true;
            while let Some(bytes) = source.next().await {
                let bytes = bytes.map_err(status)?;
                buf.extend_from_slice(&bytes);
                while buf.len() >= CHUNK {
                    let rest = buf.split_off(CHUNK);
                    let data = std::mem::replace(&mut buf, rest);
                    yield proto::DataChunk { data, total_size: if first { size } else { 0 } };
                    first = false;
                }
            }
            if !buf.is_empty() || first {
                yield proto::DataChunk { data: buf, total_size: if first { size } else { 0 } };
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, version = %req.get_ref().version))]
    async fn begin_publish(
        &self,
        req: Request<proto::BeginPublishRequest>,
    ) -> Result<Response<proto::BeginPublishResponse>, Status> {
        let req = req.into_inner();
        let files: Vec<ManifestFile> = req.files.into_iter().map(Into::into).collect();
        let started = self
            .publishes
            .begin(
                &req.project,
                &req.version,
                files,
                &self
                    .artifacts
                    .configured_store(&req.store)
                    .map_err(status)?,
            )
            .map_err(status)?;
        Ok(Response::new(proto::BeginPublishResponse {
            upload_id: started.upload_id,
            missing: started.missing,
        }))
    }

    #[instrument(skip_all)]
    async fn upload_blob(
        &self,
        req: Request<Streaming<proto::UploadBlobRequest>>,
    ) -> Result<Response<proto::UploadBlobResponse>, Status> {
        let mut stream = req.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument(
                "UploadBlob received no message; send upload_id and sha256 first",
            ));
        };
        if first.upload_id.is_empty() || first.sha256.is_empty() {
            return Err(Status::invalid_argument(
                "the first UploadBlob message must set upload_id and sha256",
            ));
        }
        let mut blob = self
            .publishes
            .begin_blob(&first.upload_id, &first.sha256)
            .await
            .map_err(status)?;
        blob.write(&first.data).await.map_err(status)?;
        while let Some(msg) = stream.message().await? {
            blob.write(&msg.data).await.map_err(status)?;
        }
        blob.finish().await.map_err(status)?;
        Ok(Response::new(proto::UploadBlobResponse {}))
    }

    #[instrument(skip_all, fields(upload = %req.get_ref().upload_id))]
    async fn commit_publish(
        &self,
        req: Request<proto::CommitPublishRequest>,
    ) -> Result<Response<proto::Version>, Status> {
        let stored = self
            .publishes
            .commit(&req.get_ref().upload_id)
            .await
            .map_err(status)?;
        self.apply_retention(&stored.record.project).await;
        Ok(Response::new((&stored.record).into()))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, version = %req.get_ref().version))]
    async fn verify_version(
        &self,
        req: Request<proto::VerifyVersionRequest>,
    ) -> Result<Response<proto::VerifyVersionResponse>, Status> {
        let req = req.into_inner();
        let project = ProjectName::new(req.project).map_err(status)?;
        let version = if req.version.is_empty() {
            None
        } else {
            Some(VersionName::new(req.version).map_err(status)?)
        };
        let report = self
            .artifacts
            .verify(&project, version.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new((&report).into()))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, version = %req.get_ref().version))]
    async fn delete_version(
        &self,
        req: Request<proto::DeleteVersionRequest>,
    ) -> Result<Response<proto::DeleteVersionResponse>, Status> {
        let req = req.into_inner();
        let (project, version) = names(&req.project, &req.version)?;
        self.artifacts
            .delete_version(&project, &version, "api")
            .await
            .map_err(status)?;
        Ok(Response::new(proto::DeleteVersionResponse {}))
    }
}
