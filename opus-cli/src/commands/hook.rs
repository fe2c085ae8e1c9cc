//! `opus hook add|list|remove|test|deliveries|github|trigger|gitlab|gitea`.

use opus_core::proto;
use serde::Serialize;

use crate::cli::{GlobalArgs, HookCommand, HookFormatArg, OutputFormat};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

/// A hook as `--output json` prints it.
#[derive(Serialize)]
struct HookJson {
    id: String,
    project: String,
    url: String,
    events: Vec<String>,
    format: &'static str,
    signed: bool,
    enabled: bool,
    created_at: String,
}

fn format_name(f: i32) -> &'static str {
    match proto::HookFormat::try_from(f) {
        Ok(proto::HookFormat::Slack) => "slack",
        _ => "json",
    }
}

fn hook_json(h: &proto::Hook) -> HookJson {
    HookJson {
        id: h.id.clone(),
        project: h.project.clone(),
        url: h.url.clone(),
        events: h.events.clone(),
        format: format_name(h.format),
        signed: h.signed,
        enabled: h.enabled,
        created_at: output::time(h.created_at.as_ref()),
    }
}

/// A delivery as `--output json` prints it.
#[derive(Serialize)]
struct DeliveryJson {
    id: String,
    hook: String,
    event_seq: u64,
    event: String,
    state: String,
    attempts: u32,
    last_status: u32,
    last_error: String,
    next_attempt_at: String,
    updated_at: String,
}

fn delivery_json(d: &proto::Delivery) -> DeliveryJson {
    DeliveryJson {
        id: d.id.clone(),
        hook: d.hook_id.clone(),
        event_seq: d.event_seq,
        event: d.event_type.clone(),
        state: d.state.clone(),
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error.clone(),
        next_attempt_at: output::time(d.next_attempt_at.as_ref()),
        updated_at: output::time(d.updated_at.as_ref()),
    }
}

fn print_deliveries(global: &GlobalArgs, ds: &[proto::Delivery]) -> Result<(), CliError> {
    match global.output {
        OutputFormat::Json => output::print_json(&ds.iter().map(delivery_json).collect::<Vec<_>>()),
        OutputFormat::Table => {
            let mut t = output::table(&[
                "id", "event", "state", "attempts", "status", "updated", "error",
            ]);
            for d in ds {
                t.add_row(vec![
                    d.id.clone(),
                    d.event_type.clone(),
                    d.state.clone(),
                    d.attempts.to_string(),
                    if d.last_status == 0 {
                        "-".into()
                    } else {
                        d.last_status.to_string()
                    },
                    output::ago(d.updated_at.as_ref()),
                    d.last_error.clone(),
                ]);
            }
            output::print_table(&t)
        }
    }
}

/// Runs one `opus hook` subcommand.
pub async fn run(conn: &Connection, global: &GlobalArgs, cmd: HookCommand) -> Result<(), CliError> {
    match cmd {
        HookCommand::Add {
            target,
            all,
            events,
            secret,
            format,
        } => {
            let (project, url) = add_target(all, &target)?;
            let request = proto::AddHookRequest {
                project,
                all_projects: all,
                url,
                events,
                secret: secret.unwrap_or_default(),
                format: match format {
                    HookFormatArg::Json => proto::HookFormat::Json,
                    HookFormatArg::Slack => proto::HookFormat::Slack,
                } as i32,
            };
            add(conn, global, request).await
        }
        HookCommand::List { project } => list(conn, global, project).await,
        HookCommand::Remove { id } => remove(conn, global, id).await,
        HookCommand::Test { id } => test(conn, global, id).await,
        HookCommand::Deliveries { id, limit } => deliveries(conn, global, id, limit).await,
        HookCommand::Github { project, rotate } => github(conn, global, project, rotate).await,
        HookCommand::Trigger { project, rotate } => trigger(conn, global, project, rotate).await,
        HookCommand::Gitlab { project, rotate } => {
            forge(conn, global, project, rotate, "gitlab").await
        }
        HookCommand::Gitea { project, rotate } => {
            forge(conn, global, project, rotate, "gitea").await
        }
    }
}

/// The project and URL of `opus hook add`: `<PROJECT> <URL>`, or `--all <URL>` (no project).
fn add_target(all: bool, target: &[String]) -> Result<(String, String), CliError> {
    match (all, target) {
        (true, [url]) => Ok((String::new(), url.clone())),
        (false, [project, url]) => Ok((project.clone(), url.clone())),
        (true, _) => Err(CliError::Usage(
            "with --all, give only the URL: `opus hook add --all <URL>`".into(),
        )),
        (false, _) => Err(CliError::Usage(
            "give a project and a URL (`opus hook add <PROJECT> <URL>`), or --all and a URL".into(),
        )),
    }
}

/// `opus hook add`.
async fn add(
    conn: &Connection,
    global: &GlobalArgs,
    request: proto::AddHookRequest,
) -> Result<(), CliError> {
    let hook = conn.projects().add_hook(request).await?.into_inner();
    match global.output {
        OutputFormat::Json => output::print_json(&hook_json(&hook)),
        OutputFormat::Table => {
            let scope = if hook.project.is_empty() {
                "all projects".to_owned()
            } else {
                hook.project.clone()
            };
            output::print_line(&format!("added hook {} ({scope} -> {})", hook.id, hook.url))
        }
    }
}

/// `opus hook list`.
async fn list(
    conn: &Connection,
    global: &GlobalArgs,
    project: Option<String>,
) -> Result<(), CliError> {
    let hooks = conn
        .projects()
        .list_hooks(proto::ListHooksRequest {
            project: project.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .hooks;
    match global.output {
        OutputFormat::Json => output::print_json(&hooks.iter().map(hook_json).collect::<Vec<_>>()),
        OutputFormat::Table => print_hooks_table(&hooks),
    }
}

/// The table of `opus hook list`.
fn print_hooks_table(hooks: &[proto::Hook]) -> Result<(), CliError> {
    let mut t = output::table(&[
        "id", "project", "url", "events", "format", "signed", "enabled",
    ]);
    for h in hooks {
        t.add_row(vec![
            h.id.clone(),
            if h.project.is_empty() {
                "*".into()
            } else {
                h.project.clone()
            },
            h.url.clone(),
            if h.events.is_empty() {
                "*".into()
            } else {
                h.events.join(",")
            },
            format_name(h.format).into(),
            if h.signed { "yes" } else { "no" }.into(),
            if h.enabled { "yes" } else { "no (410 Gone)" }.into(),
        ]);
    }
    output::print_table(&t)
}

/// `opus hook remove`.
async fn remove(conn: &Connection, global: &GlobalArgs, id: String) -> Result<(), CliError> {
    conn.projects()
        .remove_hook(proto::RemoveHookRequest { id: id.clone() })
        .await?;
    match global.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({ "removed": id })),
        OutputFormat::Table => output::print_line(&format!("removed hook {id}")),
    }
}

/// `opus hook test`: fails unless the hook accepted the ping.
async fn test(conn: &Connection, global: &GlobalArgs, id: String) -> Result<(), CliError> {
    let d = conn
        .projects()
        .test_hook(proto::TestHookRequest { id })
        .await?
        .into_inner();
    print_deliveries(global, std::slice::from_ref(&d))?;
    if d.state == "delivered" {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "the hook did not accept the ping ({})",
            if d.last_error.is_empty() {
                d.state.clone()
            } else {
                d.last_error.clone()
            }
        )))
    }
}

/// `opus hook deliveries`.
async fn deliveries(
    conn: &Connection,
    global: &GlobalArgs,
    id: String,
    limit: u32,
) -> Result<(), CliError> {
    let ds = conn
        .projects()
        .list_deliveries(proto::ListDeliveriesRequest { hook_id: id, limit })
        .await?
        .into_inner()
        .deliveries;
    print_deliveries(global, &ds)
}

/// The URL a webhook posts to: the one opusd gives under its `--public-url`; else `path` on the
/// address this CLI reaches opusd by, with a note on stderr when that is one only this machine
/// can reach.
fn webhook_url(conn: &Connection, public: &str, path: &str) -> String {
    if !public.is_empty() {
        return public.to_owned();
    }
    let server = conn.server.trim_end_matches('/');
    let host = server
        .parse::<tonic::codegen::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .unwrap_or_default();
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local {
        eprintln!(
            "note: {server} is reachable from this machine only; start opusd with --public-url https://<its public address> to give out a URL GitHub can reach"
        );
    }
    format!("{server}{path}")
}

/// `opus hook github`.
async fn github(
    conn: &Connection,
    global: &GlobalArgs,
    project: String,
    rotate: bool,
) -> Result<(), CliError> {
    let h = conn
        .projects()
        .get_github_hook(proto::GetGithubHookRequest {
            project,
            rotate,
            forge: String::new(),
        })
        .await?
        .into_inner();
    let url = webhook_url(conn, &h.url, &h.path);
    match global.output {
        OutputFormat::Json => {
            output::print_json(&serde_json::json!({ "url": url, "secret": h.secret }))
        }
        OutputFormat::Table => {
            output::print_line(&format!("Payload URL:  {url}"))?;
            output::print_line("Content type: application/json")?;
            output::print_line(&format!("Secret:       {}", h.secret))?;
            output::print_line("Events:       pushes and pull requests")
        }
    }
}

/// `opus hook gitlab` and `opus hook gitea`: the payload URL and the project's webhook secret
/// (shared with GitHub's), and where each goes in the forge's settings.
async fn forge(
    conn: &Connection,
    global: &GlobalArgs,
    project: String,
    rotate: bool,
    forge: &str,
) -> Result<(), CliError> {
    let h = conn
        .projects()
        .get_github_hook(proto::GetGithubHookRequest {
            project,
            rotate,
            forge: forge.to_owned(),
        })
        .await?
        .into_inner();
    let url = webhook_url(conn, &h.url, &h.path);
    match global.output {
        OutputFormat::Json => {
            output::print_json(&serde_json::json!({ "url": url, "secret": h.secret }))
        }
        OutputFormat::Table if forge == "gitlab" => {
            output::print_line(&format!("URL:          {url}"))?;
            output::print_line(&format!("Secret token: {}", h.secret))?;
            output::print_line("Trigger:      push events, tag push events, merge request events")
        }
        OutputFormat::Table => {
            output::print_line(&format!("Target URL:   {url}"))?;
            output::print_line("Content type: application/json")?;
            output::print_line(&format!("Secret:       {}", h.secret))?;
            output::print_line("Events:       push, delete, pull request (Gitea or Forgejo)")
        }
    }
}

/// `opus hook trigger`.
async fn trigger(
    conn: &Connection,
    global: &GlobalArgs,
    project: String,
    rotate: bool,
) -> Result<(), CliError> {
    let t = conn
        .projects()
        .get_trigger_token(proto::GetTriggerTokenRequest { project, rotate })
        .await?
        .into_inner();
    let url = webhook_url(conn, &t.url, &t.path);
    match global.output {
        OutputFormat::Json => {
            output::print_json(&serde_json::json!({ "url": url, "token": t.token }))
        }
        OutputFormat::Table => {
            output::print_line(&format!("URL:   {url}"))?;
            output::print_line(&format!("Token: {}", t.token))?;
            output::print_line(&format!(
                "curl -X POST -H 'authorization: Bearer {}' -d '{{\"ref\":\"main\"}}' {url}",
                t.token
            ))
        }
    }
}
