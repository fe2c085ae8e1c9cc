//! `opus.v1.SystemService`: what this opusd is and how it runs.

use std::sync::Arc;
use std::time::SystemTime;

use opus_core::proto::{self, system_service_server::SystemService};
use opus_core::store::MetaStore;
use opus_core::wire::timestamp;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::health::Health;
use crate::scheduler::Scheduler;
use crate::version;

/// Implements `GetServerInfo`.
pub(crate) struct SystemApi {
    /// How many projects there are.
    store: MetaStore,
    /// How many builds run and wait.
    scheduler: Scheduler,
    /// What this opusd was started with (data dir, stores, executor, limits, addresses).
    config: Arc<Config>,
    /// When this opusd started (for uptime).
    started_at: SystemTime,
    /// Free space of the data dir and the store, and what is degraded.
    health: Health,
}

impl SystemApi {
    pub(crate) fn new(
        store: MetaStore,
        scheduler: Scheduler,
        config: Arc<Config>,
        started_at: SystemTime,
        health: Health,
    ) -> Self {
        SystemApi {
            store,
            scheduler,
            config,
            started_at,
            health,
        }
    }
}

#[tonic::async_trait]
impl SystemService for SystemApi {
    async fn get_server_info(
        &self,
        _req: Request<proto::GetServerInfoRequest>,
    ) -> Result<Response<proto::ServerInfo>, Status> {
        let cfg = &self.config;
        let uptime = self.started_at.elapsed().unwrap_or_default().as_secs();
        let health = self.health.clone();
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
            version: version::VERSION.to_owned(),
            commit: version::COMMIT.to_owned(),
            data_dir: cfg.data_dir.display().to_string(),
            store: cfg.store.clone(),
            started_at: Some(timestamp(self.started_at)),
            uptime_seconds: uptime,
            executor: cfg.executor.as_str().to_owned(),
            max_builds: u32::try_from(cfg.max_builds).unwrap_or(u32::MAX),
            running_builds: u32::try_from(self.scheduler.running_count()).unwrap_or(u32::MAX),
            queued_builds: u32::try_from(self.scheduler.queued_count()).unwrap_or(u32::MAX),
            sites_url: format!("http://{}", cfg.sites_listen),
            projects: u32::try_from(self.store.project_count()).unwrap_or(u32::MAX),
            extra_stores: cfg
                .extra_stores
                .iter()
                .map(|(name, _)| name.to_string())
                .collect(),
        }))
    }
}
