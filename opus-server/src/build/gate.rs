//! The gate between a stored version and the environments it would move (opus.yml `checks:`):
//! every check runs against the version's own URL (served by the site server before any
//! deploy); the first that fails leaves every environment where it was, appends a
//! `deploy.blocked` event, and fails the build ("check smoke failed; production stays on
//! 1.0.3"). It also keeps the `verify:` policies of the environments the build's branch deploys
//! to, for `crate::verify` (a deploy by hand is verified as an automatic one is).
//!
//! It runs after `store` and before [`crate::promotion::after_stored`] (and so before anything
//! that waits for an approval).

use std::collections::BTreeMap;
use std::path::Path;

use opus_core::error::StoreError;
use opus_core::model::{Build, EnvName, Project, VersionName};
use opus_core::recipe::{OpusFile, SpecOrigin};
use opus_core::store::{Blocked, MetaStore};
use tokio_util::sync::CancellationToken;

use super::{BuildContext, BuildFailure, Executor, FailureKind, Stage};
use crate::checks::{CheckOutcome, CheckPlace, run_check};
use crate::logs::BuildLog;
use crate::promotion::{DeployTarget, deploy_targets, environments};

/// What a build brings to its checks: its records, recipe, version, and where its steps ran.
pub(super) struct Gate<'a> {
    /// The build.
    pub build: &'a Build,
    /// Its project.
    pub project: &'a Project,
    /// Its recipe and where it came from.
    pub recipe: (&'a OpusFile, SpecOrigin),
    /// The version stored.
    pub version: &'a VersionName,
    /// The steps' environment (secrets included; the log masks them).
    pub env: &'a BTreeMap<String, String>,
    /// The build's workspace, where shell checks start.
    pub workspace: &'a Path,
}

/// Runs the recipe's checks against the version's own URL, in name order, up to the first
/// failure, which fails the build.
pub(super) async fn before_promotion(
    ctx: &BuildContext,
    store: &MetaStore,
    gate: Gate<'_>,
    log: &BuildLog,
    cancel: &CancellationToken,
) -> Result<(), BuildFailure> {
    let (spec, _) = gate.recipe;
    keep_verify_policies(store, &gate, log);
    let checks = spec.resolved_checks();
    if checks.is_empty() {
        return Ok(());
    }
    let url = ctx
        .deployer
        .sites()
        .version_url(&gate.build.project, gate.version);
    log.opus(
        "checks",
        &format!(
            "{} check(s) against {url} before any environment moves",
            checks.len()
        ),
    );
    let place = CheckPlace {
        dir: gate.workspace,
        containment: match &ctx.executor {
            Executor::Local(containment) => *containment,
            _ => Default::default(),
        },
        env: gate.env,
    };
    for check in &checks {
        match run_check(check, &url, &place, log, cancel).await {
            CheckOutcome::Passed => {}
            CheckOutcome::Cancelled => return Err(BuildFailure::cancelled()),
            CheckOutcome::Failed { reason, output } => {
                // The event leaves the build: the secrets its steps saw stay masked.
                let (reason, output) = (log.mask(&reason), log.mask(&output));
                let stays = where_environments_stay(store, &gate);
                let build_name = format!("{}#{}", gate.build.project, gate.build.number);
                let blocked = Blocked {
                    build: &build_name,
                    version: gate.version.as_str(),
                    check: &check.name,
                    reason: &reason,
                    output: &output,
                    stays: &stays,
                };
                if let Err(e) = store.record_deploy_blocked(&gate.build.project, &blocked) {
                    log.opus(
                        "checks",
                        &format!("cannot record the deploy.blocked event: {e}"),
                    );
                }
                let stays = if stays.is_empty() {
                    "no environment moves to it".to_owned()
                } else {
                    stays.join(", ")
                };
                return Err(BuildFailure::new(
                    Stage::Checks,
                    FailureKind::CheckFailed {
                        check: check.name.clone(),
                        stays,
                    },
                ));
            }
        }
    }
    Ok(())
}

/// The environments this build would move, as the build's outcome says where they stay:
/// "production stays on 1.0.3", "staging has no version yet".
fn where_environments_stay(store: &MetaStore, gate: &Gate<'_>) -> Vec<String> {
    targets(gate)
        .into_iter()
        .map(|target| {
            let current = EnvName::new(target.env.clone())
                .ok()
                .map(|env| store.environment(&gate.build.project, &env));
            match current {
                Some(Ok(record)) => {
                    format!("{} stays on {}", target.env, record.current.version)
                }
                Some(Err(StoreError::EnvironmentNotFound { .. })) | None => {
                    format!("{} has no version yet", target.env)
                }
                Some(Err(e)) => format!("{} stays where it was ({e})", target.env),
            }
        })
        .collect()
}

/// Where promotion would deploy the build (as [`crate::promotion::after_stored`] decides).
fn targets(gate: &Gate<'_>) -> Vec<DeployTarget> {
    let (spec, origin) = gate.recipe;
    match &gate.build.pull_request {
        Some(pr) => vec![DeployTarget {
            env: pr.environment(),
            preview: true,
        }],
        None => deploy_targets(
            &environments(spec, origin, &gate.project.branch),
            spec.previews.enabled,
            gate.build.branch.as_deref(),
            gate.build.is_tag,
        ),
    }
}

/// Keeps the `verify:` of each environment whose branch this build is (not a tag, not a pull
/// request): the latest build of an environment's branch decides how a deploy to it is
/// verified, whoever makes the deploy.
fn keep_verify_policies(store: &MetaStore, gate: &Gate<'_>, log: &BuildLog) {
    let (spec, origin) = gate.recipe;
    let build = gate.build;
    let Some(branch) = build.branch.as_deref() else {
        return;
    };
    if build.is_tag || build.pull_request.is_some() {
        return;
    }
    for (name, env) in environments(spec, origin, &gate.project.branch).iter() {
        if env.branch != branch {
            continue;
        }
        let Ok(env_name) = EnvName::new(name.clone()) else {
            continue;
        };
        let policy = spec.verify_policy(name);
        match store.set_verify_policy(&build.project, &env_name, policy.as_ref()) {
            Ok(()) => {
                if let Some(policy) = policy {
                    let names: Vec<&str> = policy.checks.iter().map(|c| c.name.as_str()).collect();
                    log.opus(
                        "checks",
                        &format!(
                            "deploys to {name} are verified by {} for {} (every {})",
                            names.join(", "),
                            humantime::format_duration(policy.window),
                            humantime::format_duration(policy.every)
                        ),
                    );
                }
            }
            Err(e) => log.opus(
                "checks",
                &format!("cannot keep the verify policy of {name}: {e}"),
            ),
        }
    }
}
