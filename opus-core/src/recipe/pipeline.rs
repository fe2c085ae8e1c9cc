//! `pipeline:` in opus.yml: stages run one after the other, each a set of jobs run in parallel,
//! exactly one of which leaves the output stored as the version.
//!
//! ```yaml
//! pipeline:
//!   - stage: test
//!     jobs:
//!       lint: { steps: [npm run lint] }
//!       unit: { steps: [npm test], image: node:20 }
//!   - stage: build
//!     jobs:
//!       site: { steps: [npm run build], output: dist }
//! ```
//!
//! `build:` is the one-job form of the same thing: [`super::OpusFile::plan`] turns either into a
//! [`Plan`], which is what builds run. `env`, `timeout` and `cache` can be set for the whole
//! pipeline (top level of opus.yml), a stage or a job; the nearest one wins (`env` is merged, the
//! job's keys over the stage's over the pipeline's). `when:` skips a job or a stage.
//!
//! The rules the types cannot hold (exactly one `output`, no empty stage, names that are DNS
//! labels) are checked by `validate`, whose errors name the line, found in the file's text
//! (`lines`), since serde only knows lines while it reads.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::RecipeError;
use crate::model::JobName;

use super::{check_relative, default_timeout, optional_duration};

/// One entry of `pipeline:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's name (a DNS label).
    pub stage: String,
    /// Its jobs, run in parallel; at least one. Names are read as text and checked by
    /// `validate` (a [`JobName`] key would fail in serde, which places the error at the start
    /// of the map rather than at the name).
    pub jobs: BTreeMap<String, JobSpec>,
    /// When the stage runs (absent: always).
    #[serde(default)]
    pub when: Option<When>,
    /// Extra environment of its jobs' steps.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Each job's time limit, unless the job sets its own.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Cache folders of its jobs, unless a job sets its own.
    #[serde(default)]
    pub cache: Option<Vec<String>>,
}

/// One job of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Shell commands, each run with `sh -c` in the job's own copy of the checkout.
    pub steps: Vec<String>,
    /// Container image for the Kubernetes executor; the local executor ignores it.
    #[serde(default)]
    pub image: Option<String>,
    /// The folder stored as the version: exactly one job of the pipeline has it.
    #[serde(default)]
    pub output: Option<String>,
    /// Extra environment of its steps (over the stage's and the pipeline's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The job's time limit (`15m`, `90s`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Folders kept between builds of the project, per job.
    #[serde(default)]
    pub cache: Option<Vec<String>>,
    /// When the job runs (absent: always).
    #[serde(default)]
    pub when: Option<When>,
}

/// `when:` of a job or stage: it runs only when every condition given holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Branch patterns (`main`, `release/*`); the build's branch must match one.
    #[serde(default)]
    pub branch: Vec<String>,
    /// Path patterns (`apps/web/**`); a file changed by the build's commit must match one.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// What a build runs: stages in order, the jobs of each in parallel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The stages, in order.
    pub stages: Vec<PlannedStage>,
    /// Whether it came from `pipeline:` (job names appear in the log) rather than `build:`.
    pub is_pipeline: bool,
}

/// A stage of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    /// Its name (`build` for a `build:` recipe).
    pub name: String,
    /// When it runs.
    pub when: Option<When>,
    /// Its jobs, by name.
    pub jobs: Vec<PlannedJob>,
}

/// A job of a [`Plan`], with the pipeline's and the stage's settings applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedJob {
    /// Its name (`build` for a `build:` recipe).
    pub name: JobName,
    /// Its steps.
    pub steps: Vec<String>,
    /// Its image (Kubernetes).
    pub image: Option<String>,
    /// Its output folder, for the one job that has one.
    pub output: Option<String>,
    /// Its environment (pipeline, then stage, then job).
    pub env: BTreeMap<String, String>,
    /// Its time limit.
    pub timeout: Duration,
    /// Its cache folders.
    pub cache: Vec<String>,
    /// When it runs.
    pub when: Option<When>,
}

impl Plan {
    /// Every job, stage after stage.
    pub fn jobs(&self) -> impl Iterator<Item = &PlannedJob> {
        self.stages.iter().flat_map(|s| s.jobs.iter())
    }

    /// How many jobs there are in all.
    pub fn job_count(&self) -> usize {
        self.jobs().count()
    }

    /// The job whose output is stored.
    pub fn output_job(&self) -> Option<&PlannedJob> {
        self.jobs().find(|j| j.output.is_some())
    }

    /// The build log's description: "2 stage(s), 3 job(s): test (lint, unit), then build
    /// (site), output site:dist".
    pub fn describe(&self) -> String {
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|s| {
                let names: Vec<&str> = s.jobs.iter().map(|j| j.name.as_str()).collect();
                format!("{} ({})", s.name, names.join(", "))
            })
            .collect();
        let output = self
            .output_job()
            .and_then(|j| Some(format!("{}:{}", j.name, j.output.as_deref()?)))
            .unwrap_or_default();
        format!(
            "{} stage(s), {} job(s): {}, output {output}",
            self.stages.len(),
            self.job_count(),
            stages.join(", then ")
        )
    }
}

/// The plan of `pipeline:` with the pipeline-level `env`, `timeout` and `cache` applied.
pub(super) fn plan_of(
    stages: &[StageSpec],
    env: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    cache: Option<&Vec<String>>,
) -> Plan {
    let stages = stages
        .iter()
        .map(|stage| PlannedStage {
            name: stage.stage.clone(),
            when: stage.when.clone(),
            jobs: stage
                .jobs
                .iter()
                // Names were checked by `validate` when the file was parsed.
                .filter_map(|(name, job)| Some((JobName::new(name.as_str()).ok()?, job)))
                .map(|(name, job)| {
                    let mut merged = env.clone();
                    merged.extend(stage.env.clone());
                    merged.extend(job.env.clone());
                    PlannedJob {
                        name,
                        steps: job.steps.clone(),
                        image: job.image.clone(),
                        output: job.output.clone(),
                        env: merged,
                        timeout: job
                            .timeout
                            .or(stage.timeout)
                            .or(timeout)
                            .unwrap_or_else(default_timeout),
                        cache: job
                            .cache
                            .as_ref()
                            .or(stage.cache.as_ref())
                            .or(cache)
                            .cloned()
                            .unwrap_or_default(),
                        when: job.when.clone(),
                    }
                })
                .collect(),
        })
        .collect();
    Plan {
        stages,
        is_pipeline: true,
    }
}

/// Checks a `pipeline:` against the rules the types cannot hold; `text` is the file, to name
/// lines.
pub(super) fn validate(text: &str, stages: &[StageSpec]) -> Result<(), RecipeError> {
    let at = |line: Option<usize>, message: String| RecipeError::Invalid {
        line,
        column: None,
        message: match line {
            Some(n) => format!("{message} (line {n})"),
            None => message,
        },
        file: None,
    };
    let pipeline_line = lines::key(text, 0, "pipeline");
    if stages.is_empty() {
        return Err(at(
            pipeline_line,
            "pipeline: at least one stage is needed".into(),
        ));
    }
    let mut output: Option<&str> = None;
    for (i, stage) in stages.iter().enumerate() {
        let stage_line = lines::stage(text, &stage.stage);
        let field = format!("pipeline[{i}] (stage {})", stage.stage);
        JobName::new(stage.stage.as_str()).map_err(|e| {
            at(
                stage_line,
                format!("{field}.stage: {e}").replace("job name", "stage name"),
            )
        })?;
        if stages[..i].iter().any(|s| s.stage == stage.stage) {
            return Err(at(
                stage_line,
                format!("{field}: another stage has the name {:?}", stage.stage),
            ));
        }
        if stage.jobs.is_empty() {
            return Err(at(
                stage_line,
                format!(
                    "{field}.jobs: a stage needs at least one job, e.g. `jobs: {{ test: {{ steps: [npm test] }} }}`"
                ),
            ));
        }
        check_settings(&field, stage.timeout, stage.cache.as_deref())
            .map_err(|m| at(stage_line, m))?;
        check_when(&field, stage.when.as_ref()).map_err(|m| at(stage_line, m))?;
        for (name, job) in &stage.jobs {
            let job_line = stage_line.and_then(|l| lines::key(text, l, name.as_str()));
            let jfield = format!("{field}.jobs.{name}");
            JobName::new(name.as_str()).map_err(|e| at(job_line, format!("{jfield}: {e}")))?;
            if stages[..i].iter().any(|s| s.jobs.contains_key(name)) {
                return Err(at(
                    job_line,
                    format!(
                        "{jfield}: another stage has a job named {name}; job names are unique in a pipeline"
                    ),
                ));
            }
            if job.steps.is_empty() {
                return Err(at(
                    job_line,
                    format!("{jfield}.steps: at least one step is needed"),
                ));
            }
            check_settings(&jfield, job.timeout, job.cache.as_deref())
                .map_err(|m| at(job_line, m))?;
            check_when(&jfield, job.when.as_ref()).map_err(|m| at(job_line, m))?;
            if let Some(out) = &job.output {
                let out_line = job_line.and_then(|l| lines::key(text, l, "output"));
                check_relative(&format!("{jfield}.output"), out).map_err(|m| at(out_line, m))?;
                if let Some(first) = output {
                    return Err(at(
                        out_line,
                        format!(
                            "{jfield}.output: jobs {first} and {name} both have `output`; exactly one job of a pipeline has `output` (the folder stored as the version)"
                        ),
                    ));
                }
                if job.when.is_some() || stage.when.is_some() {
                    return Err(at(
                        out_line,
                        format!(
                            "{jfield}.when: the job with `output` cannot be skipped: every build stores a version"
                        ),
                    ));
                }
                output = Some(name);
            }
        }
    }
    if output.is_none() {
        return Err(at(
            pipeline_line,
            "pipeline: no job has `output`; exactly one job has it (the folder stored as the version), e.g. `site: { steps: [npm run build], output: dist }`".into(),
        ));
    }
    Ok(())
}

/// `timeout` and `cache` of a stage or job (or the pipeline): more than zero, folders inside.
pub(super) fn check_settings(
    field: &str,
    timeout: Option<Duration>,
    cache: Option<&[String]>,
) -> Result<(), String> {
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(format!("{field}.timeout: must be more than zero"));
    }
    for c in cache.unwrap_or_default() {
        check_relative(&format!("{field}.cache"), c)?;
    }
    Ok(())
}

/// `when:`: at least one condition, and patterns that compile.
fn check_when(field: &str, when: Option<&When>) -> Result<(), String> {
    let Some(when) = when else { return Ok(()) };
    if when.branch.is_empty() && when.paths.is_empty() {
        return Err(format!(
            "{field}.when: give `branch:` or `paths:` (or remove `when:`)"
        ));
    }
    for (key, patterns) in [("branch", &when.branch), ("paths", &when.paths)] {
        for p in patterns {
            globset::Glob::new(p)
                .map_err(|e| format!("{field}.when.{key}: {p:?} is not a pattern: {e}"))?;
        }
    }
    Ok(())
}

/// Finding where a key is in opus.yml's text, for the errors found after serde has read it.
/// Good enough for block and flow style as people write them: a key is a word followed by `:`,
/// at the start of a line (after indentation or `- `) or after `{` or `,`.
pub(crate) mod lines {
    /// The 1-based line, at or after the 1-based line `from` (0: the start), where `key:`
    /// appears as a key.
    pub(crate) fn key(text: &str, from: usize, key: &str) -> Option<usize> {
        text.lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .find(|(_, line)| has_key(line, key))
            .map(|(i, _)| i + 1)
    }

    /// The 1-based line of `stage: <name>`.
    pub(super) fn stage(text: &str, name: &str) -> Option<usize> {
        text.lines()
            .enumerate()
            .find(|(_, line)| {
                key_value(line, "stage")
                    .is_some_and(|v| v.trim_matches(|c| c == '"' || c == '\'') == name)
            })
            .map(|(i, _)| i + 1)
    }

    fn has_key(line: &str, key: &str) -> bool {
        key_value(line, key).is_some()
    }

    /// What follows `key:` on `line` (up to a `,` or `}`), when `key` is a key there.
    fn key_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        let code = line.split(" #").next().unwrap_or(line);
        for quoted in [key.to_owned(), format!("\"{key}\""), format!("'{key}'")] {
            let mut start = 0;
            while let Some(pos) = code[start..].find(&quoted) {
                let at = start + pos;
                let before = code[..at].trim_end();
                let boundary = before.is_empty()
                    || before.ends_with('{')
                    || before.ends_with(',')
                    || before.ends_with('-');
                let after = &code[at + quoted.len()..];
                if boundary && let Some(rest) = after.strip_prefix(':') {
                    let value = rest.split([',', '}']).next().unwrap_or("").trim();
                    return Some(value);
                }
                start = at + quoted.len();
            }
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys_are_found_in_block_and_flow_style() {
            let text = "pipeline:\n  - stage: test\n    jobs:\n      unit: { steps: [a], output: dist }\n      lint:\n        output: x\n";
            assert_eq!(key(text, 0, "pipeline"), Some(1));
            assert_eq!(stage(text, "test"), Some(2));
            assert_eq!(key(text, 2, "unit"), Some(4));
            assert_eq!(key(text, 4, "output"), Some(4));
            assert_eq!(key(text, 5, "output"), Some(6));
            assert_eq!(key(text, 0, "steps"), Some(4));
            assert_eq!(key(text, 0, "nothing"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::recipe::parse;

    const ISSUE: &str = r#"
env: { A: pipeline, B: pipeline }
timeout: 10m
pipeline:
  - stage: test
    env: { B: stage }
    cache: [node_modules]
    jobs:
      lint: { steps: [npm run lint] }
      unit: { steps: [npm test], image: "node:20", env: { C: job }, timeout: 2m }
  - stage: build
    when: { branch: [main, "release/*"] }
    jobs:
      site: { steps: [npm run build], output: dist, cache: [] }
"#;

    /// The issue's example, with a `when:` moved to a stage without output so that it parses.
    const EXAMPLE: &str = r#"
pipeline:
  - stage: test
    jobs:
      lint: { steps: [npm run lint], when: { paths: ["apps/web/**"] } }
      unit: { steps: [npm test], image: node:20 }
  - stage: build
    jobs:
      site: { steps: [npm run build], output: dist }
"#;

    #[test]
    fn the_issue_example_parses_into_stages_of_jobs() {
        let plan = parse(EXAMPLE).expect("parses").plan();
        assert!(plan.is_pipeline);
        assert_eq!(plan.stages.len(), 2);
        let names: Vec<&str> = plan.jobs().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["lint", "unit", "site"]);
        assert_eq!(plan.output_job().expect("output").name.as_str(), "site");
        assert_eq!(plan.stages[0].jobs[1].image.as_deref(), Some("node:20"));
        assert_eq!(
            plan.stages[0].jobs[0].when.as_ref().expect("when").paths,
            ["apps/web/**"]
        );
    }

    #[test]
    fn env_timeout_and_cache_come_from_the_nearest_level() {
        let err = parse(ISSUE).expect_err("output job under when").to_string();
        assert!(
            err.contains("cannot be skipped") && err.contains("line 14"),
            "{err}"
        );
        let text = ISSUE.replace("    when: { branch: [main, \"release/*\"] }\n", "");
        let plan = parse(&text).expect("parses").plan();
        let job = |name: &str| plan.jobs().find(|j| j.name.as_str() == name).expect(name);
        let unit = job("unit");
        assert_eq!(unit.env["A"], "pipeline");
        assert_eq!(unit.env["B"], "stage");
        assert_eq!(unit.env["C"], "job");
        assert_eq!(unit.timeout, std::time::Duration::from_secs(120));
        assert_eq!(unit.cache, ["node_modules"]);
        let lint = job("lint");
        assert_eq!(lint.timeout, std::time::Duration::from_secs(600));
        assert!(!lint.env.contains_key("C"));
        let site = job("site");
        assert!(site.cache.is_empty());
        assert_eq!(site.env["B"], "pipeline");
    }

    #[test]
    fn build_is_a_pipeline_of_one_job() {
        let plan = parse("build:\n  steps: [make]\n  output: out\n")
            .expect("parses")
            .plan();
        assert!(!plan.is_pipeline);
        assert_eq!(plan.job_count(), 1);
        let job = plan.output_job().expect("output");
        assert_eq!(
            (job.name.as_str(), job.output.as_deref()),
            ("build", Some("out"))
        );
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("invalid").to_string()
    }

    #[test]
    fn two_jobs_with_output_name_the_second_and_its_line() {
        let err = error(
            "pipeline:\n  - stage: a\n    jobs:\n      one: { steps: [x], output: dist }\n  - stage: b\n    jobs:\n      two:\n        steps: [y]\n        output: out\n",
        );
        assert!(
            err.contains("jobs.two.output")
                && err.contains("one and two")
                && err.contains("line 9"),
            "{err}"
        );
    }

    #[test]
    fn no_job_with_output_names_the_pipeline_line() {
        let err =
            error("# a comment\npipeline:\n  - stage: a\n    jobs:\n      one: { steps: [x] }\n");
        assert!(
            err.contains("no job has `output`") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn a_stage_without_jobs_names_the_stage_and_its_line() {
        let err = error(
            "pipeline:\n  - stage: a\n    jobs:\n      one: { steps: [x], output: d }\n  - stage: empty\n    jobs: {}\n",
        );
        assert!(
            err.contains("stage empty") && err.contains("jobs") && err.contains("line 5"),
            "{err}"
        );
        let err = error("pipeline:\n  - stage: a\n");
        assert!(err.contains("jobs") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_job_name_that_is_not_a_dns_label_names_the_line() {
        let err = error(
            "pipeline:\n  - stage: a\n    jobs:\n      ok: { steps: [x], output: d }\n      Unit_Tests: { steps: [y] }\n",
        );
        assert!(
            err.contains("invalid job name \"Unit_Tests\"") && err.contains("line 5"),
            "{err}"
        );
    }

    #[test]
    fn other_mistakes_are_refused() {
        for (text, says) in [
            ("build: { steps: [a] }\npipeline: []\n", "both"),
            ("previews: true\n", "needs `build:`"),
            ("pipeline: []\n", "at least one stage"),
            ("build: { steps: [a] }\ntimeout: 5m\n", "top-level"),
            (
                "pipeline:\n  - stage: a\n    jobs: { x: { steps: [], output: d } }\n",
                "jobs.x.steps",
            ),
            (
                "pipeline:\n  - stage: a\n    jobs: { x: { steps: [a], output: ../d } }\n",
                "relative path",
            ),
            (
                "pipeline:\n  - stage: a\n    jobs: { x: { steps: [a], output: d } }\n  - stage: a\n    jobs: { y: { steps: [a] } }\n",
                "another stage has the name",
            ),
            (
                "pipeline:\n  - stage: a\n    jobs: { x: { steps: [a], output: d } }\n  - stage: b\n    jobs: { x: { steps: [a] } }\n",
                "unique",
            ),
            (
                "pipeline:\n  - stage: a\n    jobs: { x: { steps: [a], output: d } }\n  - stage: b\n    jobs: { y: { steps: [a], when: {} } }\n",
                "give `branch:` or `paths:`",
            ),
            (
                "pipeline:\n  - stage: a\n    jobs: { x: { steps: [a], output: d } }\n  - stage: b\n    jobs: { y: { steps: [a], when: { paths: [\"a/[\"] } } }\n",
                "not a pattern",
            ),
            (
                "pipeline:\n  - stage: a\n    jobs: { x: { steps: [a], output: d, timeout: 0s } }\n",
                "more than zero",
            ),
        ] {
            let err = error(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
