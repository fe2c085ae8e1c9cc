//! The kubernetes executor: each build runs as a Job in the configured namespace, whose pod runs
//! `opusd runner` (see [`crate::runner`]). opusd keeps the parts that need its data: it resolves
//! the ref in its git mirror, decides the version, reads the recipe (for `build.image` and
//! `build.timeout`), reserves the version, gives the build a token ([`crate::runners`]), creates
//! the Job, watches the Job and its pod, and commits the version when the runner reports success.
//!
//! - [`KubeExecutor::connect`]: the current kube-context (in a cluster: the pod's service account),
//!   found once at start; opusd refuses to start without one.
//! - `build`: one build's job as a Job (`KubeExecutor::source` and `KubeExecutor::execute`,
//!   called by [`crate::build::run`] through [`crate::build::Executor`]).
//! - `job`: the Job manifest of a build and what a Job's status says; `jobs`: [`BuildJobs`], the
//!   calls to the API server (apply, read the state, delete).
//!
//! The scheduler's slots and queue apply as for local builds: a Job is created only when a slot
//! is free, and the slot is held until the build ends. A `pipeline:` runs each job as its own
//! Job (`opus-<project>-<build>-<job>`, label `opus/job`), through [`crate::build::pipeline`]:
//! the jobs of a stage at once, each with its slot, the stages in order; the first failure
//! cancels the stage, which deletes its siblings' Jobs. Each job's runner has its own key and
//! token (`job::PipelineJob::runner_key`); the job with `output` uploads the version.

mod build;
mod job;
mod jobs;

pub use build::Uploaded;
pub use job::PipelineJob;

use std::sync::Arc;
use std::time::Duration;

use opus_core::kubernetes::{Cluster, KubeError};

pub use jobs::{BuildJobs, JobState};

use crate::config::KubernetesConfig;
use crate::runners::Runners;

/// How long past `build.timeout` opusd waits at most for a Job that Kubernetes did not stop (its
/// `activeDeadlineSeconds` normally does) before it deletes it and fails the build: the timeout
/// again, up to this.
const MAX_DEADLINE_SLACK: Duration = Duration::from_secs(60);

/// Environment variable prefixes of object store settings (credentials, endpoints, regions), as
/// object_store's builders read them.
const SETTING_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// The object store settings in this process's environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), which
/// opusd hands to a runner so that it can write where opusd reads. Credentials that are files or
/// come from the machine (instance roles, workload identity) do not travel: the build pod needs
/// its own.
fn store_settings_from_env() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| SETTING_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect();
    out.sort();
    out
}

/// opusd's own deadline for a build's Job: `build.timeout`, plus as much again up to a minute.
fn deadline_of(timeout: Duration) -> Duration {
    timeout + timeout.min(MAX_DEADLINE_SLACK)
}

struct Inner {
    jobs: BuildJobs,
    config: KubernetesConfig,
    /// The URL build pods reach opusd at.
    server_url: String,
    poll: Duration,
    runners: Runners,
    /// Object store settings from opusd's environment, handed to runners.
    store_settings: Vec<(String, String)>,
}

/// Runs builds as Kubernetes Jobs. Cheap to clone.
#[derive(Clone)]
pub struct KubeExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KubeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeExecutor")
            .field("namespace", &self.inner.config.namespace)
            .field("server_url", &self.inner.server_url)
            .finish_non_exhaustive()
    }
}

impl KubeExecutor {
    /// Finds the current kube-context (`KUBECONFIG`, `~/.kube/config`, or the pod's service
    /// account); builds will reach opusd at `config.server_url(api_port)`. Talks to no API server
    /// yet.
    pub async fn connect(
        config: &KubernetesConfig,
        api_port: u16,
        runners: Runners,
    ) -> Result<KubeExecutor, KubeError> {
        let cluster = Cluster::connect().await?;
        Ok(KubeExecutor {
            inner: Arc::new(Inner {
                jobs: BuildJobs::new(cluster, &config.namespace),
                server_url: config.server_url(api_port),
                config: config.clone(),
                poll: config.poll,
                runners,
                store_settings: store_settings_from_env(),
            }),
        })
    }

    /// The URL build pods reach opusd at.
    pub fn server_url(&self) -> &str {
        &self.inner.server_url
    }

    /// Deletes the Jobs (its one Job, or its pipeline's) of builds that were running when opusd
    /// stopped (they are failed, "opusd restarted", and their tokens are gone). Failures are logged: the Jobs then end by
    /// themselves when their runner is refused.
    pub async fn delete_jobs_of(&self, builds: &[(String, u64)]) {
        for (project, id) in builds {
            match self.inner.jobs.delete_all_of(project, *id).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(build = id, project = %project, jobs = n, "deleted the Jobs of a build that was running when opusd stopped")
                }
                Err(e) => {
                    tracing::warn!(build = id, project = %project, error = %e, "cannot delete the Job of a build that was running when opusd stopped")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opusd_waits_past_the_jobs_deadline_by_at_most_a_minute() {
        assert_eq!(deadline_of(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(
            deadline_of(Duration::from_secs(900)),
            Duration::from_secs(960)
        );
    }
}
