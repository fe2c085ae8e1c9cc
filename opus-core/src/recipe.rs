//! `opus.yml`, the build manifest at a repository's root, and the fallback to `package.json`.
//!
//! A malformed file is an error that names the line and the field, because that is what a person
//! needs to fix it. Unknown keys are refused (a typo such as `step:` would otherwise silently do
//! nothing).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::RecipeError;

pub mod checks;
pub mod package;
pub mod pipeline;
mod previews;
mod pull_requests;
pub mod site;
pub mod triggers;

pub use pipeline::{Plan, PlannedJob, PlannedStage, When};
pub use previews::PreviewsSpec;
pub use pull_requests::PullRequestsSpec;
pub use triggers::TriggersSpec;

/// The whole `opus.yml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpusFile {
    /// How to build, as one job (absent when `pipeline:` is given).
    #[serde(default)]
    pub build: Option<BuildSpec>,
    /// Named environments and the branches that deploy to them automatically.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentSpec>,
    /// Whether every other branch deploys to its own preview environment, and how long a
    /// preview lives without a deploy (`previews: true` or `previews: { expire: 7d }`).
    #[serde(default)]
    pub previews: PreviewsSpec,
    /// Whether unknown paths serve `index.html` (single-page apps).
    #[serde(default)]
    pub spa: bool,
    /// How many versions to keep (0 or absent: all).
    #[serde(default)]
    pub retention: Option<u32>,
    // Pipelines: stages of jobs instead of `build:` (see `pipeline`).
    /// Stages of parallel jobs, instead of `build:`.
    #[serde(default)]
    pub pipeline: Option<Vec<pipeline::StageSpec>>,
    /// Environment of every job of the pipeline.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Each job's time limit, unless its stage or itself sets one.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Cache folders of every job, unless its stage or itself sets them.
    #[serde(default)]
    pub cache: Option<Vec<String>>,
    /// Redirect and header rules (`site: { redirects: [...], headers: {...} }`), applied after
    /// those of the output's `_redirects` and `_headers` files.
    #[serde(default)]
    pub site: site::SiteSpec,
    /// Which pull requests build into their preview `pr-<number>` (absent: none).
    #[serde(default)]
    pub pull_requests: PullRequestsSpec,
    /// What else starts a build (`on: { schedule, after, release }`); opusd keeps the default
    /// branch's.
    #[serde(default, rename = "on")]
    pub on: TriggersSpec,
    // Checks before promotion (see `checks`).
    /// Checks a stored version must pass before any environment moves to it, by name.
    #[serde(default)]
    pub checks: BTreeMap<String, checks::CheckSpec>,
}

impl OpusFile {
    /// What a build runs: the stages of `pipeline:`, or `build:` as one stage of one job, both
    /// named `build`.
    pub fn plan(&self) -> Plan {
        if let Some(stages) = &self.pipeline {
            return pipeline::plan_of(stages, &self.env, self.timeout, self.cache.as_ref());
        }
        let Some(build) = &self.build else {
            return Plan {
                stages: Vec::new(),
                is_pipeline: false,
            };
        };
        let name = crate::model::JobName::new("build").unwrap_or_else(|_| unreachable!());
        Plan {
            stages: vec![PlannedStage {
                name: "build".to_owned(),
                when: None,
                jobs: vec![PlannedJob {
                    name,
                    steps: build.steps.clone(),
                    image: build.image.clone(),
                    output: Some(build.output.clone()),
                    env: build.env.clone(),
                    timeout: build.timeout,
                    cache: build.cache.clone(),
                    when: None,
                }],
            }],
            is_pipeline: false,
        }
    }
}

/// The `build:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Container image for the Kubernetes executor; the local executor ignores it.
    #[serde(default)]
    pub image: Option<String>,
    /// Shell commands, each run with `sh -c` in the workspace.
    pub steps: Vec<String>,
    /// The folder stored as the version.
    #[serde(default = "default_output")]
    pub output: String,
    /// Extra environment of every step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The whole build's time limit (`15m`, `90s`, `1h 30m`).
    #[serde(default = "default_timeout", deserialize_with = "human_duration")]
    pub timeout: Duration,
    /// Folders kept between builds of the project (`node_modules`).
    #[serde(default)]
    pub cache: Vec<String>,
}

/// One entry of `environments:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// The branch whose builds go to this environment.
    pub branch: String,
    /// Whether each successful build of the branch deploys at once.
    #[serde(default)]
    pub auto_deploy: bool,
    /// Checks run again against the environment for a while after each deploy to it; a failure
    /// rolls it back (see `checks`).
    #[serde(default)]
    pub verify: Option<checks::VerifySpec>,
    // Approvals.
    /// Whether an automatic deploy here waits for `opus approve` (the build awaits approval).
    #[serde(default)]
    pub approval: bool,
}

fn default_output() -> String {
    "dist".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    /// Reads a number of seconds or a humantime string, reporting errors at the value itself
    /// (an untagged enum would buffer the value and lose its line).
    struct DurationVisitor;

    impl serde::de::Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as 15m, 90s or 1h 30m, or a number of seconds")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(|e| {
                E::custom(format!(
                    "invalid duration {v:?} ({e}); write it like 15m, 90s or 1h 30m"
                ))
            })
        }
    }

    d.deserialize_any(DurationVisitor)
}

/// An optional duration, read like `build.timeout` (absent: `None`, with `#[serde(default)]`).
fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    human_duration(d).map(Some)
}

/// Where a build's recipe came from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecOrigin {
    /// `opus.yml` (or `opus.yaml`).
    OpusYml,
    /// Detected from `package.json`'s `build` script.
    PackageJson,
}

impl SpecOrigin {
    /// The build log's line about the recipe `spec` found here: "opus.yml: 2 step(s), output dist",
    /// or that package.json's build script is used. Every executor logs the same line.
    pub fn describe(self, spec: &OpusFile) -> String {
        let plan = spec.plan();
        let steps: Vec<String> = plan.jobs().flat_map(|j| j.steps.clone()).collect();
        let output = plan
            .output_job()
            .and_then(|j| j.output.clone())
            .unwrap_or_default();
        match self {
            SpecOrigin::OpusYml if plan.is_pipeline => {
                format!("opus.yml: pipeline of {}", plan.describe())
            }
            SpecOrigin::OpusYml => format!("opus.yml: {} step(s), output {output}", steps.len()),
            SpecOrigin::PackageJson => format!(
                "no opus.yml: package.json has a build script: {}; production deploys from the project's branch, other branches get previews{}",
                steps.join(", then "),
                if spec.spa {
                    "; a single-page app (a client-side router is a dependency): unknown paths serve index.html"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Parses `opus.yml` text; errors name the line, column and field.
pub fn parse(text: &str) -> Result<OpusFile, RecipeError> {
    let file: OpusFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let location = e.location().map(|l| (l.line(), l.column()));
        RecipeError::Invalid {
            line: location.map(|l| l.0),
            column: location.map(|l| l.1),
            message: e.to_string(),
            file: None,
        }
    })?;
    validate(&file)?;
    if let Some(stages) = &file.pipeline {
        pipeline::validate(text, stages)?;
    }
    checks::validate_file(text, &file)?;
    Ok(file)
}

/// Checks what the types alone cannot: steps present, output a relative path inside the
/// workspace, cache folders likewise, environment names valid.
fn validate(file: &OpusFile) -> Result<(), RecipeError> {
    let invalid = |message: String| RecipeError::Invalid {
        line: None,
        column: None,
        message,
        file: None,
    };
    for name in file.environments.keys() {
        crate::model::EnvName::for_new(name.clone())
            .map_err(|e| invalid(format!("environments.{name}: {e}")))?;
    }
    file.pull_requests.validate().map_err(invalid)?;
    file.on.validate().map_err(invalid)?;
    let build = match (&file.build, &file.pipeline) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "opus.yml has both `build:` and `pipeline:`; keep one (`build:` is a pipeline of one job)".into(),
            ));
        }
        (None, None) => {
            return Err(invalid(
                "opus.yml needs `build:` (one job) or `pipeline:` (stages of jobs), e.g. `build: { steps: [npm ci, npm run build], output: dist }`".into(),
            ));
        }
        (None, Some(_)) => {
            return pipeline::check_settings("pipeline", file.timeout, file.cache.as_deref())
                .map_err(invalid);
        }
        (Some(build), None) => build,
    };
    if !file.env.is_empty() || file.timeout.is_some() || file.cache.is_some() {
        return Err(invalid(
            "top-level `env`, `timeout` and `cache` are the pipeline's; with `build:`, set them under `build:`".into(),
        ));
    }
    if build.steps.is_empty() {
        return Err(invalid(
            "build.steps: at least one step is needed, e.g. `steps: [npm ci, npm run build]`"
                .into(),
        ));
    }
    check_relative("build.output", &build.output).map_err(invalid)?;
    for c in &build.cache {
        check_relative("build.cache", c).map_err(invalid)?;
    }
    if build.timeout.is_zero() {
        return Err(invalid("build.timeout: must be more than zero".into()));
    }
    Ok(())
}

/// A path that stays inside the workspace: relative, no `..`.
fn check_relative(field: &str, path: &str) -> Result<(), String> {
    let p = Path::new(path);
    let escapes = p.is_absolute()
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if path.is_empty() || escapes {
        return Err(format!(
            "{field}: {path:?} must be a relative path inside the repository (no `..`, not absolute)"
        ));
    }
    Ok(())
}

/// Finds the recipe of the checkout at `dir`: `opus.yml` if present, else a `package.json` with a
/// `build` script (`package::recipe`: install with the repository's package manager, then its
/// build script, output `dist` or else `build`, previews on, `spa` for a router dependency), else
/// an error that says what to add.
pub fn discover(dir: &Path) -> Result<(OpusFile, SpecOrigin), RecipeError> {
    for name in ["opus.yml", "opus.yaml"] {
        let path = dir.join(name);
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| RecipeError::Unreadable {
                file: name.to_owned(),
                detail: e.to_string(),
            })?;
            return parse(&text)
                .map(|f| (f, SpecOrigin::OpusYml))
                .map_err(|e| e.in_file(name));
        }
    }
    let pkg_path = dir.join("package.json");
    if pkg_path.is_file() {
        let text = std::fs::read_to_string(&pkg_path).map_err(|e| RecipeError::Unreadable {
            file: "package.json".into(),
            detail: e.to_string(),
        })?;
        let pkg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| RecipeError::Invalid {
                line: Some(e.line()),
                column: Some(e.column()),
                message: format!("package.json: {e}"),
                file: None,
            })?;
        if pkg["scripts"]["build"].is_string() {
            return Ok((package::recipe(dir, &pkg), SpecOrigin::PackageJson));
        }
        return Err(RecipeError::NoRecipe(
            "package.json has no \"build\" script; add one (\"scripts\": {\"build\": \"vite build\"}) or add an opus.yml".into(),
        ));
    }
    Err(RecipeError::NoRecipe(
        "no opus.yml and no package.json at the repository root; add an opus.yml such as:\n  build:\n    steps: [npm ci, npm run build]\n    output: dist".into(),
    ))
}

/// For a recipe detected from package.json, the output folder is `dist`, or else `build` when only
/// that exists after the build.
pub fn resolve_output(dir: &Path, output: &str, origin: SpecOrigin) -> String {
    if origin == SpecOrigin::PackageJson && !dir.join(output).is_dir() && dir.join("build").is_dir()
    {
        return "build".to_owned();
    }
    output.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
build:
  image: node:20
  steps: [npm ci, npm run build]
  output: dist
  env: { NODE_ENV: production }
  timeout: 15m
  cache: [node_modules]
environments:
  production: { branch: main, auto_deploy: true }
  staging:    { branch: develop, auto_deploy: true }
previews: true
spa: true
"#;

    impl OpusFile {
        fn build(&self) -> &BuildSpec {
            self.build.as_ref().expect("a build: recipe")
        }
    }

    #[test]
    fn the_design_example_parses() {
        let f = parse(FULL).expect("parses");
        assert_eq!(f.build().steps, ["npm ci", "npm run build"]);
        assert_eq!(f.build().timeout, Duration::from_secs(900));
        assert_eq!(f.build().env["NODE_ENV"], "production");
        assert_eq!(f.build().cache, ["node_modules"]);
        assert!(f.environments["production"].auto_deploy);
        assert!(f.previews.enabled && f.spa);
    }

    #[test]
    fn defaults_apply() {
        let f = parse("build:\n  steps: [make]\n").expect("parses");
        assert_eq!(f.build().output, "dist");
        assert_eq!(f.build().timeout, Duration::from_secs(900));
        assert!(!f.spa);
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let err = parse("build:\n  steps: [npm ci\n  output: dist\n")
            .expect_err("bad yaml")
            .to_string();
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_field_and_line() {
        let err = parse("build:\n  steps: npm ci\n")
            .expect_err("wrong type")
            .to_string();
        assert!(
            err.contains("build.steps") && err.contains("line 2"),
            "{err}"
        );
        let err = parse("build:\n  steps: [a]\n  timeout: soon\n")
            .expect_err("bad duration")
            .to_string();
        assert!(err.contains("timeout") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("build:\n  step: [a]\n")
            .expect_err("typo")
            .to_string();
        assert!(err.contains("step") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn outputs_must_stay_inside() {
        for bad in ["/etc", "../x", "a/../../b", ""] {
            let text = format!("build:\n  steps: [a]\n  output: {bad:?}\n");
            assert!(parse(&text).is_err(), "{bad}");
        }
        assert!(parse("build:\n  steps: []\n").is_err());
    }

    #[test]
    fn package_json_detection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = discover(dir.path()).expect_err("nothing there").to_string();
        assert!(err.contains("add an opus.yml"), "{err}");
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts":{"test":"x"}}"#,
        )
        .expect("write");
        let err = discover(dir.path())
            .expect_err("no build script")
            .to_string();
        assert!(err.contains("no \"build\" script"), "{err}");
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts":{"build":"vite build"}}"#,
        )
        .expect("write");
        let (f, origin) = discover(dir.path()).expect("detected");
        assert_eq!(origin, SpecOrigin::PackageJson);
        assert_eq!(f.build().steps, ["npm install", "npm run build"]);
        std::fs::write(dir.path().join("package-lock.json"), "{}").expect("write");
        assert_eq!(
            discover(dir.path()).expect("detected").0.build().steps[0],
            "npm ci"
        );
        std::fs::create_dir(dir.path().join("build")).expect("mkdir");
        assert_eq!(resolve_output(dir.path(), "dist", origin), "build");
    }

    #[test]
    fn opus_yml_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("opus.yml"), "build:\n  steps: 5\n").expect("write");
        let err = discover(dir.path()).expect_err("bad").to_string();
        assert!(err.starts_with("opus.yml"), "{err}");
    }
}
