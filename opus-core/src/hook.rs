//! Outgoing hooks and their deliveries: where events are posted, and what happened to each post.
//!
//! A [`Hook`] names a URL, the events it wants (all of one project, or of every project) and a
//! body [`HookFormat`]. The deliverer in opusd posts each wanted event once per hook, in order,
//! and keeps a [`Delivery`] record per (hook, event): its id is stable, so a retry carries the same
//! `X-Opus-Delivery` and a receiver can drop repeats.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::model::{Event, EventKind};

/// The body a hook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HookFormat {
    /// The event as JSON: `{"id", "event", "seq", "time", "project", "payload"}`.
    #[default]
    Json,
    /// A Slack incoming-webhook message: `{"text": ...}` with a link.
    Slack,
}

/// An outgoing hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    /// Server-assigned, increasing.
    pub id: u64,
    /// The project whose events it gets; empty for every project.
    pub project: String,
    /// Where deliveries are posted (http or https).
    pub url: String,
    /// Event types it wants (`build.failed`, or a prefix pattern `build.*`); empty for all.
    pub events: Vec<String>,
    /// The body format.
    pub format: HookFormat,
    /// The HMAC key of `X-Opus-Signature-256`; `None` sends unsigned deliveries.
    pub secret: Option<String>,
    /// False once a receiver answered 410 Gone.
    pub enabled: bool,
    /// When it was added.
    pub created_at: SystemTime,
}

impl Hook {
    /// Whether this hook gets `event`: its project matches and its type is among the wanted ones.
    pub fn wants(&self, event: &Event) -> bool {
        if !self.project.is_empty() && self.project != event.project {
            return false;
        }
        self.events.is_empty() || self.events.iter().any(|p| event_matches(p, event.kind))
    }
}

/// Whether event type `kind` matches a pattern: `*`, `prefix.*`, or the kind's name, old names
/// included (a filter `deploy` written before the rename still gets `environment.deployed`).
pub fn event_matches(pattern: &str, kind: EventKind) -> bool {
    if pattern == "*" || EventKind::parse(pattern) == Some(kind) {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => kind.as_str().starts_with(prefix),
        _ => false,
    }
}

/// Checks a hook URL: http or https with a host. Returns it unchanged.
pub fn validate_hook_url(url: &str) -> Result<&str, ModelError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            ModelError::Invalid(format!(
                "invalid hook URL {url:?}: it must start with http:// or https://"
            ))
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || url.chars().any(char::is_whitespace) {
        return Err(ModelError::Invalid(format!(
            "invalid hook URL {url:?}: it needs a host and no spaces"
        )));
    }
    Ok(url)
}

/// Checks an event pattern of `--events`: lowercase words separated by dots, or ending in `.*`.
pub fn validate_event_pattern(p: &str) -> Result<(), ModelError> {
    let body = p.strip_suffix(".*").unwrap_or(p);
    let ok = p == "*"
        || (!body.is_empty()
            && body.split('.').all(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            }));
    if ok {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "invalid event pattern {p:?}: use an event type such as build.failed, or a prefix such as build.*"
        )))
    }
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not yet accepted by the receiver; retried.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Retried until the retry period ended, or refused with a 4xx that retrying will not fix.
    Failed,
    /// The receiver answered 410 Gone: the hook is disabled.
    Disabled,
}

impl DeliveryState {
    /// The lowercase word the API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Disabled => "disabled",
        }
    }
}

/// One event's delivery to one hook, updated after every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `<hook>-<event seq>`: the same on every retry.
    pub id: String,
    /// The hook.
    pub hook_id: u64,
    /// The event delivered (0 for a test ping).
    pub event_seq: u64,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// HTTP status of the last attempt (0: no answer).
    pub last_status: u16,
    /// Why the last attempt failed, if it did.
    pub last_error: String,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<SystemTime>,
    /// When the first attempt was made (retries stop a retry period after it).
    pub created_at: SystemTime,
    /// When this record last changed.
    pub updated_at: SystemTime,
}

/// The stable id of the delivery of event `seq` to hook `hook`.
pub fn delivery_id(hook: u64, seq: u64) -> String {
    format!("{hook}-{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, project: &str) -> Event {
        Event {
            seq: 1,
            time: SystemTime::now(),
            kind: EventKind::parse(kind).expect("a known kind"),
            project: project.into(),
            payload: serde_json::json!({}),
        }
    }

    fn hook(project: &str, events: &[&str]) -> Hook {
        Hook {
            id: 1,
            project: project.into(),
            url: "http://x".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            format: HookFormat::Json,
            secret: None,
            enabled: true,
            created_at: SystemTime::now(),
        }
    }

    #[test]
    fn filters_by_project_and_type() {
        assert!(hook("", &[]).wants(&event("build.failed", "web")));
        assert!(hook("web", &[]).wants(&event("build.failed", "web")));
        assert!(!hook("api", &[]).wants(&event("build.failed", "web")));
        assert!(hook("", &["build.*"]).wants(&event("build.failed", "web")));
        assert!(!hook("", &["build.*"]).wants(&event("environment.deployed", "web")));
        assert!(hook("", &["environment.*"]).wants(&event("environment.rolled_back", "web")));
        assert!(
            hook("", &["environment.rolled_back"]).wants(&event("environment.rolled_back", "web"))
        );
        assert!(
            !hook("", &["environment.deployed"]).wants(&event("environment.rolled_back", "web"))
        );
        assert!(!hook("", &["build"]).wants(&event("build.failed", "web")));
    }

    #[test]
    fn validates_urls_and_patterns() {
        assert!(validate_hook_url("http://127.0.0.1:9/x").is_ok());
        assert!(validate_hook_url("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(validate_hook_url("ftp://x").is_err());
        assert!(validate_hook_url("http://").is_err());
        assert!(validate_hook_url("http://a b").is_err());
        for ok in ["build.failed", "build.*", "*", "deploy"] {
            assert!(validate_event_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Build", "build.", ".*", "a..b"] {
            assert!(validate_event_pattern(bad).is_err(), "{bad}");
        }
    }
}
