//! The Kubernetes calls of opusd's kubernetes executor: [`BuildJobs`] creates a build's Job
//! (server-side apply, field manager `opus`), reads what its Job and pod say ([`JobState`]), and
//! deletes it (background propagation, so the pod goes with it). The manifest and the reading of
//! status into reasons are the pure part, in [`super::job`].

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use opus_core::kubernetes::{
    Cluster, FIELD_MANAGER, KubeError, Op, pod_failure_reason, pod_waiting_reason,
};

use super::job::{self, BUILD_LABEL, JobRef, PROJECT_LABEL};

/// What a build's Job and pod say, as far as the executor cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not started yet: the pod is pending (scheduling, pulling, creating), with what it waits
    /// for when it says ([`pod_waiting_reason`]).
    Pending(Option<String>),
    /// The build container runs.
    Running,
    /// The pod cannot go on (an image that cannot be pulled, a failed copy of opusd, an eviction):
    /// the build fails with this reason ([`pod_failure_reason`]).
    PodFailed(String),
    /// The Job failed (its deadline, the build's timeout, or its pod failed): the reason
    /// (`job::job_failure_reason`).
    Failed(String),
    /// The Job completed: its pod exited 0.
    Succeeded,
    /// There is no such Job (deleted by someone, or never created).
    Missing,
}

/// The Jobs of builds in one namespace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BuildJobs {
    cluster: Cluster,
    namespace: String,
}

impl BuildJobs {
    /// Build Jobs go into `namespace` of `cluster`.
    pub fn new(cluster: Cluster, namespace: &str) -> BuildJobs {
        BuildJobs {
            cluster,
            namespace: namespace.to_owned(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn op<'a>(&'a self, verb: &'static str, resource: &'static str, name: &'a str) -> Op<'a> {
        Op {
            server: self.cluster.server(),
            verb,
            resource,
            name,
            namespace: Some(&self.namespace),
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.cluster.client().clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client().clone(), &self.namespace)
    }

    /// Creates (or, applied again, leaves as it is) the Job of a build: server-side apply with
    /// field manager `opus`. Returns its name.
    pub async fn apply(&self, job: &Job) -> Result<String, KubeError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.jobs()
            .patch(&name, &params, &Patch::Apply(job))
            .await
            .map_err(|e| self.op("patch", "jobs.batch", &name).error(e))?;
        Ok(name)
    }

    /// What the Job `job` and its pod say now.
    pub async fn state(&self, job: &JobRef<'_>) -> Result<JobState, KubeError> {
        let name = job.name();
        let Some(found) = self
            .jobs()
            .get_opt(&name)
            .await
            .map_err(|e| self.op("get", "jobs.batch", &name).error(e))?
        else {
            return Ok(JobState::Missing);
        };
        if let Some(reason) = job::job_failure_reason(&found) {
            return Ok(JobState::Failed(reason));
        }
        if found
            .status
            .as_ref()
            .and_then(|s| s.succeeded)
            .is_some_and(|n| n > 0)
        {
            return Ok(JobState::Succeeded);
        }
        let selector = job.selector();
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.op("list", "pods", &selector).error(e))?;
        let mut state = JobState::Pending(None);
        for pod in &pods.items {
            if let Some(reason) = pod_failure_reason(pod) {
                return Ok(JobState::PodFailed(reason));
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Running") {
                state = JobState::Running;
            } else if state == JobState::Pending(None) {
                state = JobState::Pending(pod_waiting_reason(pod));
            }
        }
        Ok(state)
    }

    /// Deletes the Job of a build with background propagation (Kubernetes removes its pod, which
    /// stops the build). `false` when there was none.
    pub async fn delete(&self, project: &str, build: u64) -> Result<bool, KubeError> {
        self.delete_job(&JobRef {
            project,
            build,
            job: None,
        })
        .await
    }

    /// Deletes every Job of a build (its one Job, or its pipeline's), found by their labels.
    /// How many there were.
    pub async fn delete_all_of(&self, project: &str, build: u64) -> Result<usize, KubeError> {
        let selector = format!("{PROJECT_LABEL}={project},{BUILD_LABEL}={build}");
        let found = self
            .jobs()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.op("list", "jobs.batch", &selector).error(e))?;
        let mut deleted = 0;
        for job in &found.items {
            let Some(name) = job.metadata.name.as_deref() else {
                continue;
            };
            match self.jobs().delete(name, &DeleteParams::background()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(self.op("delete", "jobs.batch", name).error(e)),
            }
        }
        Ok(deleted)
    }

    /// Deletes the Job `job` with background propagation. `false` when there was none.
    pub async fn delete_job(&self, job: &JobRef<'_>) -> Result<bool, KubeError> {
        let name = job.name();
        match self.jobs().delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(self.op("delete", "jobs.batch", &name).error(e)),
        }
    }
}
