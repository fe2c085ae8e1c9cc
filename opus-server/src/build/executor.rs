//! Where a build runs: the [`Executor`] and what it hands back ([`Produced`]).
//!
//! An enum, not a trait: there are two executors, both known here, both async; an enum keeps
//! [`super::run`] one plain function (no boxed futures, no generic parameter threaded through
//! the scheduler), and a third executor is one more arm in each method.

use std::collections::BTreeMap;
use std::path::Path;

use opus_core::model::{Build, Project};
use opus_core::recipe::{OpusFile, SpecOrigin};
use tokio_util::sync::CancellationToken;

use super::failure::BuildFailure;
use super::job::{Job, Output};
use super::{BuildContext, local};
use crate::kubernetes::{KubeExecutor, Uploaded};
use crate::logs::BuildLog;
use crate::process_tree::Containment;
use crate::source::Checkout;

/// Runs builds' jobs: the two executors differ in how the source reaches the steps, how the steps
/// run and where the output comes from; everything else is [`super::run`]'s.
#[derive(Clone, Debug)]
pub enum Executor {
    /// Steps run here, as child processes of opusd, in `<data-dir>/work/<build>`, their
    /// processes kept together as the containment says (`--build-cgroups`).
    Local(Containment),
    /// Steps run in a Kubernetes Job's pod (`opusd runner`), which uploads the output.
    Kubernetes(KubeExecutor),
}

/// What a job left to store.
pub(crate) enum Produced {
    /// A folder of opusd's workspace.
    Folder(Output),
    /// A version a runner uploaded to the artifact store, waiting for opusd's commit.
    Uploaded(Uploaded),
}

impl Executor {
    /// Fetches the build's source into `workspace`: the whole tree (local), or only the recipe
    /// files once the ref is resolved (kubernetes: the pod fetches the tree itself).
    pub(crate) async fn source(
        &self,
        ctx: &BuildContext,
        project: &Project,
        build: &Build,
        workspace: &Path,
        log: &BuildLog,
        cancel: &CancellationToken,
    ) -> Result<Checkout, BuildFailure> {
        match self {
            Executor::Local(_) => local::source(ctx, project, build, workspace, log, cancel).await,
            Executor::Kubernetes(k) => k.source(ctx, project, build, workspace, log, cancel).await,
        }
    }

    /// Says in the log which recipe the build follows (and, for a Job, which image).
    pub(crate) fn describe_recipe(&self, spec: &OpusFile, origin: SpecOrigin, log: &BuildLog) {
        match self {
            Executor::Local(_) => log.opus("recipe", &origin.describe(spec)),
            Executor::Kubernetes(k) => log.opus(
                "recipe",
                &format!(
                    "{}; image {}",
                    origin.describe(spec),
                    k.image_of(spec.plan().output_job().and_then(|j| j.image.as_deref()))
                ),
            ),
        }
    }

    /// Runs `job` with `env`; what its output is, when it has one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn execute(
        &self,
        ctx: &BuildContext,
        project: &Project,
        build: &Build,
        job: &Job,
        env: BTreeMap<String, String>,
        workspace: &Path,
        log: &BuildLog,
        cancel: &CancellationToken,
    ) -> Result<Option<Produced>, BuildFailure> {
        match self {
            Executor::Local(containment) => {
                local::execute(ctx, *containment, build, job, &env, workspace, log, cancel).await
            }
            Executor::Kubernetes(k) => k.execute(ctx, project, build, job, env, log, cancel).await,
        }
    }
}
