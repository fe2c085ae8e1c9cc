//! `on:` in opus.yml: what starts a build besides a push or a person.
//!
//! ```yaml
//! on:
//!   schedule: "0 3 * * *"                                      # cron, UTC: builds the default branch
//!   after: { project: api, event: deploy, env: production }   # another project's event
//!   release: true                                              # GitHub releases build their tag
//! ```
//!
//! A cron expression is checked when the file is read: one that does not parse is an opus.yml
//! error naming the line and the cron field. Whether `after` triggers form a cycle depends on
//! the other projects, so it is checked where opusd stores a project's triggers
//! ([`after_cycle`]).

use std::fmt;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{BuildState, EnvName, Event, EventKind, ProjectName};

/// The `on:` section: the triggers of a project, from the opus.yml of its default branch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersSpec {
    /// Build the default branch whenever this cron expression (UTC) comes due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<CronSchedule>,
    /// Build the default branch when another project's event happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterSpec>,
    /// Build the tag of every published GitHub release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
}

impl TriggersSpec {
    /// Whether no trigger is set (a project without `on:`).
    pub fn is_empty(&self) -> bool {
        self.schedule.is_none() && self.after.is_none() && !self.release
    }

    /// Checks what the types alone cannot (`env` only with `event: deploy`); the message names
    /// the field.
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(after) = &self.after
            && after.env.is_some()
            && after.event != AfterEvent::Deploy
        {
            return Err(format!(
                "on.after.env: only `event: deploy` has an environment (this one is `event: {}`); remove `env` or use `event: deploy`",
                after.event
            ));
        }
        Ok(())
    }
}

/// The names of a cron expression's five fields, in order, for error messages.
const CRON_FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

/// A cron expression of five fields (minute hour day-of-month month day-of-week), evaluated in
/// UTC; stored as its text.
#[derive(Clone)]
pub struct CronSchedule {
    /// The expression as written.
    text: String,
    /// The parsed expression.
    cron: Cron,
}

impl CronSchedule {
    /// Parses a five-field cron expression (or a macro such as `@daily`); the error names the
    /// field that is wrong.
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let trimmed = text.trim();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if !trimmed.starts_with('@') && fields.len() != CRON_FIELDS.len() {
            return Err(format!(
                "invalid cron expression {text:?}: it needs 5 fields ({}), it has {}",
                CRON_FIELDS.join(", "),
                fields.len()
            ));
        }
        match parser.parse(trimmed) {
            Ok(cron) => Ok(CronSchedule {
                text: trimmed.to_owned(),
                cron,
            }),
            Err(e) => {
                // Name the field: the first one that fails with every other field `*`.
                let field = (0..fields.len()).find(|&i| {
                    let alone: Vec<&str> = (0..fields.len())
                        .map(|j| if i == j { fields[j] } else { "*" })
                        .collect();
                    parser.parse(&alone.join(" ")).is_err()
                });
                Err(match field {
                    Some(i) => format!(
                        "invalid cron expression {text:?}: the {} field {:?} is wrong ({e})",
                        CRON_FIELDS[i], fields[i]
                    ),
                    None => format!("invalid cron expression {text:?}: {e}"),
                })
            }
        }
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time the expression matches strictly after `after`; `None` when it never does
    /// again.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let after: DateTime<Utc> = after.into();
        self.cron
            .find_next_occurrence(&after, false)
            .ok()
            .map(SystemTime::from)
    }

    /// Whether a run came due in `(last, now]`: the first such time, or `None`. However many
    /// came due (opusd was down), a caller runs one build and records `now` as its last run.
    pub fn due(&self, last: SystemTime, now: SystemTime) -> Option<SystemTime> {
        self.next_after(last).filter(|at| *at <= now)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronSchedule {}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads a string and parses it, so the error is reported at the value (its line).
        struct CronVisitor;

        impl serde::de::Visitor<'_> for CronVisitor {
            type Value = CronSchedule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cron expression such as \"0 3 * * *\" (minute hour day-of-month month day-of-week, UTC)")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CronSchedule, E> {
                CronSchedule::parse(v).map_err(E::custom)
            }
        }

        d.deserialize_str(CronVisitor)
    }
}

/// `on.after`: another project's event that starts a build of this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterSpec {
    /// The project whose event it is.
    pub project: ProjectName,
    /// Which event.
    pub event: AfterEvent,
    /// For `event: deploy`, the environment deployed to (absent: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvName>,
}

impl AfterSpec {
    /// Whether `event` is the one this trigger waits for.
    pub fn matches(&self, event: &Event) -> bool {
        if event.project != self.project.as_str() {
            return false;
        }
        match self.event {
            AfterEvent::Deploy => {
                event.kind == EventKind::EnvironmentDeployed
                    && self
                        .env
                        .as_ref()
                        .is_none_or(|env| event.payload["env"] == env.as_str())
            }
            AfterEvent::Build => event.kind == EventKind::Build(BuildState::Succeeded),
            AfterEvent::Version => event.kind == EventKind::VersionStored,
        }
    }
}

/// The events an `after` trigger can wait for, each an event kind of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterEvent {
    /// `environment.deployed` (a deploy, by hand or automatic; not a rollback).
    Deploy,
    /// `build.succeeded`.
    Build,
    /// `version.stored`.
    Version,
}

impl fmt::Display for AfterEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AfterEvent::Deploy => "deploy",
            AfterEvent::Build => "build",
            AfterEvent::Version => "version",
        })
    }
}

/// A cycle of `after` triggers: each project waits for the next, and the last for the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("after-trigger cycle: {}", .0.iter().map(ProjectName::as_str).collect::<Vec<_>>().join(" → "))]
pub struct TriggerCycle(pub Vec<ProjectName>);

/// The cycle that `project` waiting for `after` would close, given which project every other
/// project waits for (`waits_for`): `web → api → web` when `api` waits for `web`.
pub fn after_cycle(
    project: &ProjectName,
    after: &ProjectName,
    waits_for: impl Fn(&ProjectName) -> Option<ProjectName>,
) -> Option<TriggerCycle> {
    let mut chain = vec![project.clone()];
    let mut next = Some(after.clone());
    while let Some(current) = next {
        let closes = &current == project;
        let seen = chain.contains(&current);
        chain.push(current.clone());
        if closes {
            return Some(TriggerCycle(chain));
        }
        if seen {
            // A loop among other projects (stored before cycles were refused): not ours.
            return None;
        }
        next = waits_for(&current);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::recipe::parse;

    fn name(s: &str) -> ProjectName {
        ProjectName::new(s).expect("name")
    }

    const BUILD: &str = "build:\n  steps: [make]\n";

    #[test]
    fn every_trigger_parses() {
        let f = parse(&format!(
            "{BUILD}on:\n  schedule: \"0 3 * * *\"\n  after: {{ project: api, event: deploy, env: production }}\n  release: true\n"
        ))
        .expect("parses");
        assert_eq!(
            f.on.schedule.as_ref().map(CronSchedule::as_str),
            Some("0 3 * * *")
        );
        let after = f.on.after.expect("after");
        assert_eq!(after.project.as_str(), "api");
        assert_eq!(after.event, AfterEvent::Deploy);
        assert_eq!(after.env.as_ref().map(EnvName::as_str), Some("production"));
        assert!(f.on.release);
        assert!(parse(BUILD).expect("parses").on.is_empty());
    }

    #[test]
    fn a_cron_expression_that_does_not_parse_names_line_and_field() {
        let err = parse(&format!("{BUILD}on:\n  schedule: \"0 25 * * *\"\n"))
            .expect_err("hour 25")
            .to_string();
        assert!(
            err.contains("on.schedule") && err.contains("line 4") && err.contains("hour field"),
            "{err}"
        );
        let err = parse(&format!("{BUILD}on:\n  schedule: \"* * *\"\n"))
            .expect_err("three fields")
            .to_string();
        assert!(
            err.contains("on.schedule") && err.contains("line 4") && err.contains("5 fields"),
            "{err}"
        );
        let err = parse(&format!("{BUILD}on:\n  schedule: \"0 3 * * funday\"\n"))
            .expect_err("no such weekday")
            .to_string();
        assert!(err.contains("day of week field"), "{err}");
    }

    #[test]
    fn after_fields_are_checked() {
        let err = parse(&format!(
            "{BUILD}on:\n  after: {{ project: api, event: launch }}\n"
        ))
        .expect_err("unknown event")
        .to_string();
        assert!(
            err.contains("on.after.event") && err.contains("line 4") && err.contains("deploy"),
            "{err}"
        );
        let err = parse(&format!(
            "{BUILD}on:\n  after: {{ project: Api, event: build }}\n"
        ))
        .expect_err("not a project name")
        .to_string();
        assert!(
            err.contains("on.after") && err.contains("project name") && err.contains("line 4"),
            "{err}"
        );
        let err = parse(&format!(
            "{BUILD}on:\n  after: {{ project: api, event: build, env: production }}\n"
        ))
        .expect_err("env without deploy")
        .to_string();
        assert!(err.contains("on.after.env"), "{err}");
        let err = parse(&format!("{BUILD}on:\n  nightly: true\n"))
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("nightly") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn a_schedule_is_due_once_however_many_runs_were_missed() {
        let daily = CronSchedule::parse("0 3 * * *").expect("cron");
        let t = |s: &str| -> SystemTime {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
                .into()
        };
        let last = t("2026-01-01T03:00:00Z");
        assert_eq!(daily.due(last, t("2026-01-02T02:59:59Z")), None);
        assert_eq!(
            daily.due(last, t("2026-01-02T03:00:00Z")),
            Some(t("2026-01-02T03:00:00Z"))
        );
        // Three days down: one run is due (the first missed), the caller records `now`.
        assert_eq!(
            daily.due(last, t("2026-01-05T12:00:00Z")),
            Some(t("2026-01-02T03:00:00Z"))
        );
        assert_eq!(
            daily.due(t("2026-01-05T12:00:00Z"), t("2026-01-05T12:00:00Z")),
            None
        );
        let minutely = CronSchedule::parse("* * * * *").expect("cron");
        assert_eq!(
            minutely.next_after(last),
            Some(last + Duration::from_secs(60))
        );
    }

    #[test]
    fn a_cycle_of_after_triggers_is_named() {
        let waits: HashMap<ProjectName, ProjectName> =
            [(name("api"), name("web")), (name("db"), name("api"))].into();
        let lookup = |p: &ProjectName| waits.get(p).cloned();
        let cycle = after_cycle(&name("web"), &name("api"), lookup).expect("cycle");
        assert_eq!(cycle.to_string(), "after-trigger cycle: web → api → web");
        let cycle = after_cycle(&name("web"), &name("db"), lookup).expect("longer cycle");
        assert_eq!(
            cycle.to_string(),
            "after-trigger cycle: web → db → api → web"
        );
        let cycle = after_cycle(&name("web"), &name("web"), lookup).expect("itself");
        assert_eq!(cycle.to_string(), "after-trigger cycle: web → web");
        assert_eq!(after_cycle(&name("site"), &name("api"), lookup), None);
        // A loop the new trigger is not part of is not this project's cycle.
        let looped: HashMap<ProjectName, ProjectName> =
            [(name("a"), name("b")), (name("b"), name("a"))].into();
        assert_eq!(
            after_cycle(&name("web"), &name("a"), |p| looped.get(p).cloned()),
            None
        );
    }

    #[test]
    fn after_matches_its_project_event_and_environment() {
        let event = |project: &str, kind: EventKind, env: &str| Event {
            seq: 1,
            time: SystemTime::now(),
            kind,
            project: project.into(),
            payload: serde_json::json!({ "env": env }),
        };
        let deploy = AfterSpec {
            project: name("api"),
            event: AfterEvent::Deploy,
            env: Some(EnvName::new("production").expect("env")),
        };
        assert!(deploy.matches(&event("api", EventKind::EnvironmentDeployed, "production")));
        assert!(!deploy.matches(&event("api", EventKind::EnvironmentDeployed, "staging")));
        assert!(!deploy.matches(&event("web", EventKind::EnvironmentDeployed, "production")));
        assert!(!deploy.matches(&event(
            "api",
            EventKind::EnvironmentRolledBack,
            "production"
        )));
        let build = AfterSpec {
            project: name("api"),
            event: AfterEvent::Build,
            env: None,
        };
        assert!(build.matches(&event("api", EventKind::Build(BuildState::Succeeded), "")));
        assert!(!build.matches(&event("api", EventKind::Build(BuildState::Failed), "")));
        let version = AfterSpec {
            event: AfterEvent::Version,
            ..build
        };
        assert!(version.matches(&event("api", EventKind::VersionStored, "")));
    }

    #[test]
    fn triggers_round_trip_through_json() {
        let f = parse(&format!(
            "{BUILD}on:\n  schedule: \"*/5 * * * *\"\n  after: {{ project: api, event: version }}\n"
        ))
        .expect("parses");
        let json = serde_json::to_string(&f.on).expect("json");
        let back: TriggersSpec = serde_json::from_str(&json).expect("read back");
        assert_eq!(back, f.on);
    }
}
