//! `checks:` in opus.yml: what must hold of a stored version before any environment moves to it,
//! and `environments.<env>.verify:`, which runs some of them again against an environment for a
//! while after each deploy to it (a failure rolls the environment back).
//!
//! ```yaml
//! checks:
//!   smoke: { run: "curl -fsS $OPUS_URL" }
//!   root:  { http: { path: /, status: 200, contains: "<div id=\"root\">" }, timeout: 10s }
//! environments:
//!   production:
//!     branch: main
//!     auto_deploy: true
//!     verify: { checks: [root], for: 2m, every: 10s }
//! ```
//!
//! A check is a shell step (`run:`) or steps (`steps:`), run with `OPUS_URL` set to the URL
//! checked, or the built-in `http:` (one GET, its status and, optionally, a string the body
//! contains). Each has its own `timeout` (default [`DEFAULT_CHECK_TIMEOUT`]). Serde reads the
//! shapes (with line and field); `validate` the rules between them, naming lines found in the
//! text as `pipeline` does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RecipeError;
use crate::model::JobName;

use super::optional_duration;
use super::pipeline::lines;

/// How long a check may run when it does not say.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `verify:` watches an environment after a deploy when it does not say.
pub const DEFAULT_VERIFY_WINDOW: Duration = Duration::from_secs(120);

/// How often `verify:` runs its checks within the window when it does not say.
pub const DEFAULT_VERIFY_EVERY: Duration = Duration::from_secs(10);

/// One entry of `checks:`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// One shell command (`sh -c`), with `OPUS_URL` set.
    #[serde(default)]
    pub run: Option<String>,
    /// Shell commands run in order, with `OPUS_URL` set.
    #[serde(default)]
    pub steps: Option<Vec<String>>,
    /// The built-in HTTP check.
    #[serde(default)]
    pub http: Option<HttpCheckSpec>,
    /// The check's time limit (`30s`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
}

/// `http:` of a check: one GET of `path` on the URL checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckSpec {
    /// The path requested (`/`).
    #[serde(default = "root_path")]
    pub path: String,
    /// The status expected (200).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Text the body must contain, when given.
    #[serde(default)]
    pub contains: Option<String>,
}

fn root_path() -> String {
    "/".to_owned()
}

fn ok_status() -> u16 {
    200
}

/// `environments.<env>.verify:`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Names of entries of `checks:`.
    pub checks: Vec<String>,
    /// How long after a deploy the checks keep running (`2m`).
    #[serde(default, rename = "for", deserialize_with = "optional_duration")]
    pub window: Option<Duration>,
    /// How often they run within that window (`10s`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub every: Option<Duration>,
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Shell commands run in order with `OPUS_URL`; the check fails at the first that fails.
    Shell(Vec<String>),
    /// One GET.
    Http(HttpCheckSpec),
}

/// A check ready to run: named, with its time limit decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Its name in `checks:` (a DNS label: it names its lines in the build log).
    pub name: String,
    /// What it does.
    pub kind: CheckKind,
    /// Its time limit.
    pub timeout: Duration,
}

/// What an environment's `verify:` asks for, with the checks it names resolved: what opusd keeps
/// for the environment, so that a deploy by hand is verified as an automatic one is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// The checks, in the order `verify.checks` names them.
    pub checks: Vec<Check>,
    /// How long after a deploy they keep running.
    pub window: Duration,
    /// How often.
    pub every: Duration,
}

/// The checks of `checks:`, by name, ready to run (the file was validated when parsed).
pub fn resolve(checks: &BTreeMap<String, CheckSpec>) -> Vec<Check> {
    checks
        .iter()
        .filter_map(|(name, spec)| {
            let kind = match (&spec.run, &spec.steps, &spec.http) {
                (Some(run), None, None) => CheckKind::Shell(vec![run.clone()]),
                (None, Some(steps), None) => CheckKind::Shell(steps.clone()),
                (None, None, Some(http)) => CheckKind::Http(http.clone()),
                _ => return None,
            };
            Some(Check {
                name: name.clone(),
                kind,
                timeout: spec.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT),
            })
        })
        .collect()
}

/// The policy of one `verify:`, its check names resolved against `checks`.
pub fn verify_policy(verify: &VerifySpec, checks: &[Check]) -> VerifyPolicy {
    VerifyPolicy {
        checks: verify
            .checks
            .iter()
            .filter_map(|name| checks.iter().find(|c| &c.name == name).cloned())
            .collect(),
        window: verify.window.unwrap_or(DEFAULT_VERIFY_WINDOW),
        every: verify.every.unwrap_or(DEFAULT_VERIFY_EVERY),
    }
}

impl super::OpusFile {
    /// Every check of `checks:`, by name, ready to run.
    pub fn resolved_checks(&self) -> Vec<Check> {
        resolve(&self.checks)
    }

    /// What `environments.<env>.verify:` asks for, when it is there.
    pub fn verify_policy(&self, env: &str) -> Option<VerifyPolicy> {
        let verify = self.environments.get(env)?.verify.as_ref()?;
        Some(verify_policy(verify, &self.resolved_checks()))
    }
}

/// Checks a parsed file's `checks:` and `verify:` (see [`validate`]).
pub(super) fn validate_file(text: &str, file: &super::OpusFile) -> Result<(), RecipeError> {
    let verifies: Vec<(&str, &VerifySpec)> = file
        .environments
        .iter()
        .filter_map(|(env, spec)| Some((env.as_str(), spec.verify.as_ref()?)))
        .collect();
    validate(text, &file.checks, &verifies)
}

/// Checks `checks:` and every `verify:` against the rules the types cannot hold; `text` is the
/// file, to name lines.
fn validate(
    text: &str,
    checks: &BTreeMap<String, CheckSpec>,
    verifies: &[(&str, &VerifySpec)],
) -> Result<(), RecipeError> {
    let checks_line = lines::key(text, 0, "checks");
    for (name, spec) in checks {
        let line = checks_line.and_then(|l| lines::key(text, l, name));
        let field = format!("checks.{name}");
        JobName::new(name.as_str()).map_err(|e| {
            at(
                line,
                format!("{field}: {e}").replace("job name", "check name"),
            )
        })?;
        check_one(&field, spec).map_err(|(key, m)| {
            let key_line = key.and_then(|k| line.and_then(|l| lines::key(text, l, k)));
            at(key_line.or(line), m)
        })?;
    }
    let envs_line = lines::key(text, 0, "environments");
    for (env, verify) in verifies {
        let env_line = envs_line.and_then(|l| lines::key(text, l, env));
        let line = env_line
            .and_then(|l| lines::key(text, l, "verify"))
            .or(env_line);
        let field = format!("environments.{env}.verify");
        if verify.checks.is_empty() {
            return Err(at(
                line,
                format!("{field}.checks: name at least one check of `checks:`"),
            ));
        }
        for name in &verify.checks {
            if !checks.contains_key(name) {
                let known: Vec<&str> = checks.keys().map(String::as_str).collect();
                return Err(at(
                    line,
                    format!(
                        "{field}.checks: no check is named {name:?} in `checks:` ({})",
                        if known.is_empty() {
                            "opus.yml has none".to_owned()
                        } else {
                            format!("it has {}", known.join(", "))
                        }
                    ),
                ));
            }
        }
        for (key, value) in [("for", verify.window), ("every", verify.every)] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(at(line, format!("{field}.{key}: must be more than zero")));
            }
        }
    }
    Ok(())
}

/// One check's rules; the error names the key whose line is the best place to point at.
fn check_one(field: &str, spec: &CheckSpec) -> Result<(), (Option<&'static str>, String)> {
    let kinds = [
        spec.run.is_some(),
        spec.steps.is_some(),
        spec.http.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err((
            None,
            format!(
                "{field}: give exactly one of `run:` (a shell command), `steps:` (shell commands) or `http:` (e.g. `http: {{ path: /, status: 200 }}`)"
            ),
        ));
    }
    if spec.run.as_ref().is_some_and(|r| r.trim().is_empty())
        || spec
            .steps
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.iter().any(|c| c.trim().is_empty()))
    {
        return Err((
            None,
            format!("{field}: a shell check needs a command that is not empty"),
        ));
    }
    if spec.timeout.is_some_and(|t| t.is_zero()) {
        return Err((
            Some("timeout"),
            format!("{field}.timeout: must be more than zero"),
        ));
    }
    if let Some(http) = &spec.http {
        if !(100..=599).contains(&http.status) {
            return Err((
                Some("status"),
                format!(
                    "{field}.http.status: {} is not an HTTP status (100 to 599)",
                    http.status
                ),
            ));
        }
        if !http.path.starts_with('/') {
            return Err((
                Some("path"),
                format!(
                    "{field}.http.path: {:?} must start with `/` (a path on the version's own site)",
                    http.path
                ),
            ));
        }
        if http.contains.as_ref().is_some_and(String::is_empty) {
            return Err((
                Some("contains"),
                format!("{field}.http.contains: must not be empty (or leave it out)"),
            ));
        }
    }
    Ok(())
}

/// An `Invalid` error at `line`, which the message names too.
fn at(line: Option<usize>, message: String) -> RecipeError {
    RecipeError::Invalid {
        line,
        column: None,
        message: match line {
            Some(n) => format!("{message} (line {n})"),
            None => message,
        },
        file: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::parse;

    const GOOD: &str = r#"
build:
  steps: [make]
checks:
  smoke: { run: "curl -fsS $OPUS_URL" }
  root:
    http: { path: /, status: 200, contains: "<div id=\"root\">" }
    timeout: 5s
  two: { steps: [a, b] }
environments:
  production:
    branch: main
    auto_deploy: true
    verify: { checks: [root, smoke], for: 1m, every: 5s }
  staging: { branch: develop, verify: { checks: [smoke] } }
"#;

    fn error(text: &str) -> String {
        parse(text).expect_err("refused").to_string()
    }

    #[test]
    fn checks_and_verify_parse_with_their_defaults() {
        let f = parse(GOOD).expect("parses");
        let checks = f.resolved_checks();
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["root", "smoke", "two"]);
        assert_eq!(checks[0].timeout, Duration::from_secs(5));
        assert_eq!(checks[1].timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!(
            checks[0].kind,
            CheckKind::Http(HttpCheckSpec {
                path: "/".into(),
                status: 200,
                contains: Some("<div id=\"root\">".into())
            })
        );
        assert_eq!(
            checks[2].kind,
            CheckKind::Shell(vec!["a".into(), "b".into()])
        );
        let prod = f.verify_policy("production").expect("verify");
        assert_eq!(prod.window, Duration::from_secs(60));
        assert_eq!(prod.every, Duration::from_secs(5));
        let order: Vec<&str> = prod.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(order, ["root", "smoke"]);
        let staging = f.verify_policy("staging").expect("verify");
        assert_eq!(staging.window, DEFAULT_VERIFY_WINDOW);
        assert_eq!(staging.every, DEFAULT_VERIFY_EVERY);
        assert!(f.verify_policy("preview").is_none());
    }

    #[test]
    fn an_unknown_check_in_verify_names_it_the_field_and_the_line() {
        let err = error(
            "build:\n  steps: [make]\nchecks:\n  smoke: { run: \"true\" }\nenvironments:\n  production:\n    branch: main\n    verify: { checks: [smok] }\n",
        );
        assert!(
            err.contains("environments.production.verify.checks")
                && err.contains("\"smok\"")
                && err.contains("it has smoke")
                && err.contains("line 8"),
            "{err}"
        );
        let err = error(
            "build:\n  steps: [make]\nenvironments:\n  production: { branch: main, verify: { checks: [smoke] } }\n",
        );
        assert!(
            err.contains("opus.yml has none") && err.contains("line 4"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_http_status_names_the_field_and_the_line() {
        let err = error(
            "build:\n  steps: [make]\nchecks:\n  root:\n    http:\n      path: /\n      status: 999\n",
        );
        assert!(
            err.contains("checks.root.http.status")
                && err.contains("999")
                && err.contains("line 7"),
            "{err}"
        );
        let err = error("build:\n  steps: [make]\nchecks:\n  root: { http: { status: ok } }\n");
        assert!(err.contains("status") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn other_mistakes_are_refused_with_their_field() {
        let cases = [
            (
                "checks:\n  a: { run: x, http: {} }\n",
                "checks.a: give exactly one",
            ),
            (
                "checks:\n  a: { timeout: 5s }\n",
                "checks.a: give exactly one",
            ),
            ("checks:\n  a: { run: \" \" }\n", "not empty"),
            ("checks:\n  a: { steps: [] }\n", "not empty"),
            (
                "checks:\n  a: { run: x, timeout: 0s }\n",
                "checks.a.timeout",
            ),
            (
                "checks:\n  a: { http: { path: index.html } }\n",
                "checks.a.http.path",
            ),
            (
                "checks:\n  a: { http: { contains: \"\" } }\n",
                "checks.a.http.contains",
            ),
            ("checks:\n  Bad_Name: { run: x }\n", "check name"),
            ("checks:\n  a: { run: x, retries: 3 }\n", "retries"),
            (
                "checks:\n  a: { run: x }\nenvironments:\n  production: { branch: main, verify: { checks: [] } }\n",
                "at least one check",
            ),
            (
                "checks:\n  a: { run: x }\nenvironments:\n  production: { branch: main, verify: { checks: [a], every: 0s } }\n",
                "verify.every",
            ),
        ];
        for (text, expected) in cases {
            let err = error(&format!("build:\n  steps: [make]\n{text}"));
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("line"), "{text}: {err}");
        }
    }

    #[test]
    fn a_policy_round_trips_as_json() {
        let f = parse(GOOD).expect("parses");
        let policy = f.verify_policy("production").expect("verify");
        let json = serde_json::to_string(&policy).expect("encode");
        let back: VerifyPolicy = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, policy);
    }
}
