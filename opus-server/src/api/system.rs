//! `opus.v1.SystemService`: what this opusd is and how it runs.

use opus_core::proto::{self, system_service_server::SystemService};
use opus_core::wire::timestamp;
use tonic::{Request, Response, Status};

use crate::AppState;
use crate::config::ExecutorKind;

/// Implements `GetServerInfo`.
pub(crate) struct SystemApi {
    state: AppState,
}

impl SystemApi {
    pub(crate) fn new(state: AppState) -> Self {
        SystemApi { state }
    }
}

#[tonic::async_trait]
impl SystemService for SystemApi {
    async fn get_server_info(
        &self,
        _req: Request<proto::GetServerInfoRequest>,
    ) -> Result<Response<proto::ServerInfo>, Status> {
        let cfg = &self.state.config;
        let uptime = self
            .state
            .started_at
            .elapsed()
            .unwrap_or_default()
            .as_secs();
        let health = self.state.health.clone();
        let (data_dir_free_bytes, store_free_bytes, degraded) =
            tokio::task::spawn_blocking(move || {
                (
                    health.data_dir_free(),
                    health.store_free(),
                    health.problem(),
                )
            })
            .await
            .map_err(|e| Status::internal(format!("cannot check the disks: {e}")))?;
        Ok(Response::new(proto::ServerInfo {
            data_dir_free_bytes,
            store_free_bytes,
            degraded: degraded.unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data_dir: cfg.data_dir.display().to_string(),
            store: cfg.store.clone(),
            started_at: Some(timestamp(self.state.started_at)),
            uptime_seconds: uptime,
            executor: match cfg.executor {
                ExecutorKind::Local => "local".into(),
                ExecutorKind::Kubernetes => "kubernetes".into(),
            },
            max_builds: u32::try_from(cfg.max_builds).unwrap_or(u32::MAX),
            running_builds: u32::try_from(self.state.scheduler.running_count()).unwrap_or(u32::MAX),
            queued_builds: u32::try_from(self.state.scheduler.queued_count()).unwrap_or(u32::MAX),
            sites_url: format!("http://{}", cfg.sites_listen),
            projects: u32::try_from(self.state.store.project_count()).unwrap_or(u32::MAX),
            extra_stores: cfg
                .extra_stores
                .iter()
                .map(|(name, _)| name.clone())
                .collect(),
        }))
    }
}
