//! What a hook receives: the JSON event, or a Slack incoming-webhook message.

use opus_core::hook::HookFormat;
use opus_core::model::{BuildState, Event, EventKind, PRODUCTION};
use serde_json::{Value, json};

/// How the Slack message links to a deployed site: `http://<host>.<domain>:<port>/`.
#[derive(Debug, Clone)]
pub struct SiteLinks {
    /// The site domain (`localhost` by default).
    pub domain: String,
    /// The site listener's port.
    pub port: u16,
}

impl SiteLinks {
    /// The URL of `project`'s environment `env` (`production` is the bare project host).
    pub fn url(&self, project: &str, env: &str) -> String {
        let host = if env.is_empty() || env == PRODUCTION {
            project.to_owned()
        } else {
            format!("{env}--{project}")
        };
        let port = match self.port {
            80 => String::new(),
            p => format!(":{p}"),
        };
        format!("http://{host}.{}{port}/", self.domain)
    }
}

/// The body posted for `event` under `delivery_id`.
pub fn render(format: HookFormat, delivery_id: &str, event: &Event, links: &SiteLinks) -> Value {
    match format {
        HookFormat::Json => json!({
            "id": delivery_id,
            "event": event.kind,
            "seq": event.seq,
            "time": humantime::format_rfc3339_millis(event.time).to_string(),
            "project": event.project,
            "payload": event.payload,
        }),
        HookFormat::Slack => json!({ "text": slack_text(event, links) }),
    }
}

/// One line of Slack mrkdwn: what happened, and a link to the deployed site when there is one.
fn slack_text(event: &Event, links: &SiteLinks) -> String {
    let p = &event.payload;
    let project = event.project.as_str();
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    // Events recorded before per-project numbers carry the build's `id`, its number then.
    let number = p
        .get("number")
        .or_else(|| p.get("id"))
        .and_then(Value::as_u64);
    let build = match number {
        Some(n) if matches!(event.kind, EventKind::Build(_)) => format!("{project}#{n}"),
        _ => project.to_owned(),
    };
    let env = match s("environment") {
        "" => s("env"),
        e => e,
    };
    let link = match s("url") {
        "" if matches!(
            event.kind,
            EventKind::EnvironmentDeployed | EventKind::EnvironmentRolledBack
        ) =>
        {
            Some(links.url(project, env))
        }
        "" => None,
        u => Some(u.to_owned()),
    };
    let mut text = match event.kind {
        EventKind::Build(BuildState::Queued) => format!("Build {build} queued ({})", s("ref")),
        EventKind::Build(BuildState::Running) => format!("Build {build} started"),
        EventKind::Build(BuildState::Succeeded) => {
            format!("Build {build} succeeded: version {}", s("version"))
        }
        EventKind::Build(BuildState::Failed) => format!("Build {build} failed: {}", s("reason")),
        EventKind::Build(BuildState::Cancelled) => format!("Build {build} cancelled"),
        EventKind::Build(BuildState::AwaitingApproval) => {
            format!("Build {build} awaits approval: {}", s("reason"))
        }
        EventKind::BuildApproved => format!("Build {build} approved by {}", s("by")),
        EventKind::BuildRejected => format!("Build {build} {}", s("reason")),
        EventKind::VersionStored => format!("Version {} of {project} stored", s("version")),
        EventKind::EnvironmentDeployed => {
            format!("Deployed {} of {project} to {env}", s("version"))
        }
        EventKind::EnvironmentRolledBack => {
            format!("Rolled {project} {env} back to {}", s("version"))
        }
        EventKind::Ping => "Opus hook test: this hook works".to_owned(),
        kind if project.is_empty() => format!("Opus: {kind}"),
        kind => format!("Opus: {kind} ({project})"),
    };
    if let Some(url) = link {
        text.push_str(&format!(" <{url}|{url}>"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn links() -> SiteLinks {
        SiteLinks {
            domain: "localhost".into(),
            port: 7080,
        }
    }

    fn event(kind: &str, payload: Value) -> Event {
        Event {
            seq: 7,
            time: SystemTime::UNIX_EPOCH,
            kind: EventKind::parse(kind).expect("a known kind"),
            project: "web".into(),
            payload,
        }
    }

    #[test]
    fn json_body_carries_the_event() {
        let b = render(
            HookFormat::Json,
            "3-7",
            &event("build.failed", json!({"number": 4})),
            &links(),
        );
        assert_eq!(b["id"], "3-7");
        assert_eq!(b["event"], "build.failed");
        assert_eq!(b["seq"], 7);
        assert_eq!(b["project"], "web");
        assert_eq!(b["payload"]["number"], 4);
        assert_eq!(b["time"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn slack_text_links_the_site() {
        let b = render(
            HookFormat::Slack,
            "1-1",
            &event(
                "environment.deployed",
                json!({"version": "1.0.3", "environment": "staging"}),
            ),
            &links(),
        );
        assert_eq!(
            b["text"],
            "Deployed 1.0.3 of web to staging <http://staging--web.localhost:7080/|http://staging--web.localhost:7080/>"
        );
        let b = render(
            HookFormat::Slack,
            "1-1",
            &event("build.failed", json!({"number": 9, "reason": "exit 1"})),
            &links(),
        );
        assert_eq!(b["text"], "Build web#9 failed: exit 1");
        // An event recorded before per-project numbers names the build by its id.
        let b = render(
            HookFormat::Slack,
            "1-1",
            &event("build.cancelled", json!({"id": 12})),
            &links(),
        );
        assert_eq!(b["text"], "Build web#12 cancelled");
        assert_eq!(links().url("web", PRODUCTION), "http://web.localhost:7080/");
    }
}
