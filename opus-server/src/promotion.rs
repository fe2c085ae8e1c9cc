//! What follows a stored version of a build: where it goes (automatic deploys and previews, from
//! the build's own opus.yml) and which older versions go (retention). How it is served (its site
//! options) is committed with the version itself.
//!
//! [`after_stored`] is called by [`crate::build::run`] once a build's version is committed,
//! whichever executor ran it, and
//! before the build is recorded as succeeded, so `opus trigger --wait` returns with the site
//! already live. Nothing here fails the build: the version is stored; a deploy that cannot happen
//! is said in the build log (and a pinned environment is skipped on purpose).

use opus_core::CoreError;
use opus_core::error::StoreError;
use std::borrow::Cow;
use std::collections::BTreeMap;

use opus_core::model::{Build, EnvName, PRODUCTION, Project, VersionName, branch_slug};
use opus_core::recipe::{EnvironmentSpec, OpusFile, SpecOrigin};
use opus_core::store::{MetaStore, ReleaseReason};

use crate::deploys::Deployer;
use crate::logs::BuildLog;

/// One automatic deploy a build asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployTarget {
    /// The environment.
    pub env: String,
    /// Whether it is a branch preview (removed with its branch).
    pub preview: bool,
}

/// The environments a build's recipe names: opus.yml's `environments:`; or, for a recipe detected
/// from package.json (no opus.yml), production following the project's branch with automatic
/// deploys: a new project goes live on its first build of that branch.
pub fn environments<'a>(
    spec: &'a OpusFile,
    origin: SpecOrigin,
    project_branch: &str,
) -> Cow<'a, BTreeMap<String, EnvironmentSpec>> {
    match origin {
        SpecOrigin::OpusYml => Cow::Borrowed(&spec.environments),
        SpecOrigin::PackageJson => Cow::Owned(BTreeMap::from([(
            PRODUCTION.to_owned(),
            EnvironmentSpec {
                branch: project_branch.to_owned(),
                auto_deploy: true,
                ..EnvironmentSpec::default()
            },
        )])),
    }
}

/// Where a successful build of `branch` deploys, given the recipe's `environments` (see
/// [`environments`]) and `previews`: every environment whose `branch` it is with
/// `auto_deploy: true`; or, when no environment names the branch and `previews` is on, the
/// preview environment named by the branch slug. Tags and detached commits deploy nowhere.
pub fn deploy_targets(
    environments: &BTreeMap<String, EnvironmentSpec>,
    previews: bool,
    branch: Option<&str>,
    is_tag: bool,
) -> Vec<DeployTarget> {
    let Some(branch) = branch.filter(|_| !is_tag) else {
        return Vec::new();
    };
    let named: Vec<_> = environments
        .iter()
        .filter(|(_, e)| e.branch == branch)
        .collect();
    if !named.is_empty() {
        return named
            .into_iter()
            .filter(|(_, e)| e.auto_deploy)
            .map(|(name, _)| DeployTarget {
                env: name.clone(),
                preview: false,
            })
            .collect();
    }
    if previews {
        return vec![DeployTarget {
            env: branch_slug(branch),
            preview: true,
        }];
    }
    Vec::new()
}

/// What the build log says when a version deploys nowhere: why, and the commands that deploy it.
fn nowhere(build: &Build, origin: SpecOrigin, version: &str) -> String {
    let project = &build.project;
    let by_hand = format!("deploy it with `opus deploy {project} {version} production`");
    match (build.branch.as_deref(), build.is_tag) {
        (Some(_), true) | (None, _) => {
            format!("not deployed: a tag or a commit deploys nowhere by itself; {by_hand}")
        }
        (Some(branch), false) if origin == SpecOrigin::OpusYml => format!(
            "not deployed: opus.yml deploys no environment from branch {branch:?}; {by_hand}, or add to opus.yml `environments: {{ production: {{ branch: {branch}, auto_deploy: true }} }}` (and `previews: true` for other branches)"
        ),
        (Some(branch), false) => {
            format!("not deployed: branch {branch:?} has no automatic deploy; {by_hand}")
        }
    }
}

/// How many versions a project keeps: the project's own setting (`opus keep`) when set, else the
/// build's `retention:` from opus.yml; 0 keeps all.
pub fn keep_count(project: &Project, from_opus_yml: Option<u32>) -> usize {
    match project.keep_versions {
        0 => from_opus_yml.unwrap_or(0) as usize,
        n => n as usize,
    }
}

/// Deploys the stored version where its recipe says (opus.yml, or without one production from the
/// project's branch and previews from the others; a pull request's build to its preview
/// `pr-<number>`), then applies retention. Every outcome goes to
/// the build log. Returns the environments that await approval instead (`approval: true`, see
/// [`crate::approval`]): the build awaits approval when there are any.
pub async fn after_stored(
    store: &MetaStore,
    deployer: &Deployer,
    build: &Build,
    project: &Project,
    (spec, origin): (&OpusFile, SpecOrigin),
    version: &VersionName,
    log: &BuildLog,
) -> Vec<EnvName> {
    let environments = environments(spec, origin, &project.branch);
    let targets = match &build.pull_request {
        // Admitted by its base branch's opus.yml: it goes to its own preview, nowhere else.
        Some(pr) => vec![DeployTarget {
            env: pr.environment(),
            preview: true,
        }],
        None => deploy_targets(
            &environments,
            spec.previews.enabled,
            build.branch.as_deref(),
            build.is_tag,
        ),
    };
    if targets.is_empty() {
        log.opus("deploy", &nowhere(build, origin, version.as_str()));
    }
    let (gated, targets): (Vec<_>, Vec<_>) = targets
        .into_iter()
        .partition(|t| crate::approval::awaits_approval(&environments, t));
    let awaiting = awaiting_approval(build, version, gated, log);
    for target in targets {
        let deployed =
            deploy_one(store, deployer, build, &environments, version, &target, log).await;
        if deployed && target.preview {
            record_expiry(deployer, build, &target, spec.previews.expire, log).await;
        }
    }
    let keep = keep_count(project, spec.retention);
    match deployer
        .artifacts()
        .apply_retention(&build.project, keep)
        .await
    {
        Ok(deleted) if !deleted.is_empty() => {
            let names: Vec<_> = deleted.iter().map(|v| v.to_string()).collect();
            log.opus(
                "store",
                &format!("retention (keep {keep}) deleted {}", names.join(", ")),
            );
        }
        Ok(_) => {}
        Err(e) => log.opus("store", &format!("retention failed: {e}")),
    }
    awaiting
}

/// The environments of `gated` (automatic deploys that wait for approval), each said in the log.
fn awaiting_approval(
    build: &Build,
    version: &VersionName,
    gated: Vec<DeployTarget>,
    log: &BuildLog,
) -> Vec<EnvName> {
    let mut awaiting = Vec::new();
    for target in gated {
        match EnvName::new(target.env.clone()) {
            Ok(env) => {
                log.opus(
                    "deploy",
                    &format!(
                        "{env} needs an approval: `opus approve {p}#{n}` deploys {version} there, `opus reject {p}#{n}` leaves it as it is",
                        p = build.project,
                        n = build.number
                    ),
                );
                awaiting.push(env);
            }
            Err(e) => log.opus(
                "deploy",
                &format!(
                    "not deployed: {:?} is not an environment name: {e}",
                    target.env
                ),
            ),
        }
    }
    awaiting
}

/// Keeps the build's opus.yml `previews: { expire: ... }` with the preview it just deployed,
/// where the expiry sweep (`crate::preview_expiry`) reads it: the latest build decides.
async fn record_expiry(
    deployer: &Deployer,
    build: &Build,
    target: &DeployTarget,
    expire: Option<std::time::Duration>,
    log: &BuildLog,
) {
    let Ok(env) = EnvName::new(target.env.clone()) else {
        return;
    };
    match deployer
        .set_preview_expire(&build.project, &env, expire)
        .await
    {
        Ok(_) => {
            if let Some(expire) = expire {
                log.opus(
                    "deploy",
                    &format!(
                        "preview {} expires {} after its last deploy (`opus env keep {} {}` keeps it)",
                        target.env,
                        humantime::format_duration(expire),
                        build.project,
                        target.env
                    ),
                );
            }
        }
        Err(e) => log.opus(
            "deploy",
            &format!("cannot record the expiry of preview {}: {e}", target.env),
        ),
    }
}

/// One automatic deploy, its outcome said in the log; whether it deployed.
async fn deploy_one(
    store: &MetaStore,
    deployer: &Deployer,
    build: &Build,
    environments: &BTreeMap<String, EnvironmentSpec>,
    version: &VersionName,
    target: &DeployTarget,
    log: &BuildLog,
) -> bool {
    let project = &build.project;
    let env = match EnvName::new(target.env.clone()) {
        Ok(env) => env,
        Err(e) => {
            log.opus(
                "deploy",
                &format!(
                    "no preview: {:?} is not an environment name: {e}",
                    target.env
                ),
            );
            return false;
        }
    };
    if target.preview {
        // A preview never takes over an environment that is not a preview (a branch called
        // `production`, or `staging` deployed by hand).
        let taken = target.env == PRODUCTION || environments.contains_key(&target.env);
        let existing = match store.environment(project, &env) {
            Ok(env) => Some(env),
            Err(StoreError::EnvironmentNotFound { .. }) => None,
            Err(e) => {
                log.opus("deploy", &format!("no preview: {e}"));
                return false;
            }
        };
        if taken || existing.is_some_and(|e| !e.preview) {
            log.opus(
                "deploy",
                &format!(
                    "no preview: environment {:?} exists and is not a preview (rename the branch or remove the environment)",
                    target.env
                ),
            );
            return false;
        }
    }
    let actor = format!("build {}#{}", build.project, build.number);
    match deployer
        .deploy(
            project,
            &env,
            version,
            &actor,
            ReleaseReason::Auto,
            target.preview,
        )
        .await
    {
        Ok(record) => {
            let what = if target.preview {
                "preview"
            } else {
                "deployed"
            };
            log.opus(
                "deploy",
                &format!(
                    "{what}: {version} is live in {} ({}), release #{}",
                    target.env,
                    deployer.sites().url(project.as_str(), &target.env),
                    record.current.seq
                ),
            );
            true
        }
        Err(CoreError::Store(StoreError::EnvironmentPinned { .. })) => {
            log.opus(
            "deploy",
            &format!(
                "not deployed to {env}: the environment is pinned by a rollback (`opus env unpin {project} {env}` or the next `opus deploy` to it resumes automatic deploys)",
                env = target.env
            ),
        );
            false
        }
        Err(e) => {
            log.opus(
                "deploy",
                &format!("automatic deploy to {} failed: {e}", target.env),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> OpusFile {
        opus_core::recipe::parse(yaml).expect("a valid opus.yml")
    }

    /// Where a build of `branch` goes by the opus.yml `yaml`.
    fn targets(yaml: &str, branch: Option<&str>, is_tag: bool) -> Vec<DeployTarget> {
        let s = spec(yaml);
        let envs = environments(&s, SpecOrigin::OpusYml, "main");
        deploy_targets(&envs, s.previews.enabled, branch, is_tag)
    }

    const YML: &str = "build:\n  steps: [\"true\"]\nenvironments:\n  production: { branch: main, auto_deploy: true }\n  staging: { branch: develop }\npreviews: true\n";

    #[test]
    fn an_auto_deploy_branch_goes_to_its_environment() {
        assert_eq!(
            targets(YML, Some("main"), false),
            vec![DeployTarget {
                env: PRODUCTION.into(),
                preview: false
            }]
        );
    }

    #[test]
    fn a_named_branch_without_auto_deploy_goes_nowhere_not_even_to_a_preview() {
        assert!(targets(YML, Some("develop"), false).is_empty());
    }

    #[test]
    fn other_branches_get_previews_by_slug() {
        assert_eq!(
            targets(YML, Some("feature/Login_page"), false),
            vec![DeployTarget {
                env: "feature-login-page".into(),
                preview: true
            }]
        );
    }

    #[test]
    fn tags_and_detached_commits_deploy_nowhere() {
        assert!(targets(YML, Some("main"), true).is_empty());
        assert!(targets(YML, None, false).is_empty());
    }

    #[test]
    fn without_previews_other_branches_deploy_nowhere() {
        assert!(targets("build:\n  steps: [\"true\"]\n", Some("feature"), false).is_empty());
    }

    #[test]
    fn without_opus_yml_production_follows_the_project_branch_and_others_get_previews() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts":{"build":"vite build"}}"#,
        )
        .expect("write");
        let (s, origin) = opus_core::recipe::discover(dir.path()).expect("detected");
        assert_eq!(origin, SpecOrigin::PackageJson);
        let envs = environments(&s, origin, "trunk");
        assert_eq!(
            deploy_targets(&envs, s.previews.enabled, Some("trunk"), false),
            vec![DeployTarget {
                env: PRODUCTION.into(),
                preview: false
            }]
        );
        assert_eq!(
            deploy_targets(&envs, s.previews.enabled, Some("main"), false),
            vec![DeployTarget {
                env: "main".into(),
                preview: true
            }]
        );
        assert!(deploy_targets(&envs, s.previews.enabled, Some("trunk"), true).is_empty());
    }

    #[test]
    fn the_project_setting_wins_over_opus_yml() {
        let mut p = Project {
            name: opus_core::model::ProjectName::new("web").expect("valid"),
            source: opus_core::model::Source::Git("https://example.com/web.git".into()),
            branch: "main".into(),
            keep_versions: 0,
            created_at: std::time::SystemTime::UNIX_EPOCH,
        };
        assert_eq!(keep_count(&p, None), 0);
        assert_eq!(keep_count(&p, Some(3)), 3);
        p.keep_versions = 5;
        assert_eq!(keep_count(&p, Some(3)), 5);
    }
}
