//! `opus deploy`, `opus rollback`, `opus releases`, `opus env list|remove|unpin|lock|unlock`.

use opus_core::proto;
use serde_json::json;

use crate::cli::{DeployArgs, EnvCommand, GlobalArgs, OutputFormat, ReleasesArgs, RollbackArgs};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

/// A wire release reason as a word.
fn reason(r: i32) -> &'static str {
    match proto::ReleaseReason::try_from(r).unwrap_or(proto::ReleaseReason::Unspecified) {
        proto::ReleaseReason::Deploy => "deploy",
        proto::ReleaseReason::Rollback => "rollback",
        proto::ReleaseReason::Auto => "auto",
        proto::ReleaseReason::Unspecified => "unknown",
    }
}

fn release_json(r: &proto::Release) -> serde_json::Value {
    json!({
        "seq": r.seq,
        "project": r.project,
        "env": r.env,
        "version": r.version,
        "time": output::time(r.time.as_ref()),
        "actor": r.actor,
        "reason": reason(r.reason),
    })
}

fn print_deployed(
    global: &GlobalArgs,
    resp: &proto::DeployResponse,
    verb: &str,
) -> Result<(), CliError> {
    let release = resp.release.clone().unwrap_or_default();
    match global.output {
        OutputFormat::Json => {
            let mut v = release_json(&release);
            v["url"] = json!(resp.url);
            v["pinned"] = json!(resp.pinned);
            v["lock_reason"] = json!(resp.lock_reason);
            output::print_json(&v)
        }
        OutputFormat::Table => {
            output::print_line(&format!(
                "{verb} {}@{} to {} (release #{}): {}",
                release.project, release.version, release.env, release.seq, resp.url
            ))?;
            if !resp.lock_reason.is_empty() {
                eprintln!(
                    "{} is locked ({}): a rollback is allowed on a locked environment; deploys stay refused until `opus env unlock {} {}`",
                    release.env, resp.lock_reason, release.project, release.env
                );
            } else if resp.pinned {
                eprintln!(
                    "{} is pinned: automatic deploys pause until the next `opus deploy` or `opus env unpin {} {}`",
                    release.env, release.project, release.env
                );
            }
            Ok(())
        }
    }
}

/// `opus deploy <project> <version> [--env E]`.
pub async fn deploy(
    conn: &Connection,
    global: &GlobalArgs,
    args: DeployArgs,
) -> Result<(), CliError> {
    let resp = conn
        .deploys()
        .deploy(proto::DeployRequest {
            project: args.project,
            version: args.version_name,
            env: args.env,
        })
        .await?
        .into_inner();
    print_deployed(global, &resp, "deployed")
}

/// `opus rollback <project> [--env E] [--to V]`.
pub async fn rollback(
    conn: &Connection,
    global: &GlobalArgs,
    args: RollbackArgs,
) -> Result<(), CliError> {
    let resp = conn
        .deploys()
        .rollback(proto::RollbackRequest {
            project: args.project,
            env: args.env,
            to: args.to.unwrap_or_default(),
        })
        .await?
        .into_inner();
    print_deployed(global, &resp, "rolled back")
}

/// `opus releases <project> [--env E]`.
pub async fn releases(
    conn: &Connection,
    global: &GlobalArgs,
    args: ReleasesArgs,
) -> Result<(), CliError> {
    let releases = conn
        .deploys()
        .list_releases(proto::ListReleasesRequest {
            project: args.project,
            env: args.env.unwrap_or_default(),
            limit: args.limit,
        })
        .await?
        .into_inner()
        .releases;
    match global.output {
        OutputFormat::Json => {
            output::print_json(&releases.iter().map(release_json).collect::<Vec<_>>())
        }
        OutputFormat::Table => {
            let mut t = output::table(&["seq", "env", "version", "reason", "actor", "when"]);
            for r in &releases {
                t.add_row(vec![
                    r.seq.to_string(),
                    r.env.clone(),
                    r.version.clone(),
                    reason(r.reason).to_owned(),
                    r.actor.clone(),
                    output::ago(r.time.as_ref()),
                ]);
            }
            output::print_table(&t)
        }
    }
}

fn env_json(e: &proto::Environment) -> serde_json::Value {
    let cur = e.current.clone().unwrap_or_default();
    json!({
        "project": e.project,
        "name": e.name,
        "version": cur.version,
        "seq": cur.seq,
        "pinned": e.pinned,
        "preview": e.preview,
        "url": e.url,
        "lock_reason": e.lock_reason,
        "kept": e.kept,
        "expires_at": e.expires_at.map(|t| t.to_string()),
    })
}

/// `opus env list|remove|unpin|protect|unprotect`.
pub async fn env(conn: &Connection, global: &GlobalArgs, cmd: EnvCommand) -> Result<(), CliError> {
    let mut client = conn.deploys();
    match cmd {
        EnvCommand::List { project } => {
            let envs = client
                .list_environments(proto::ListEnvironmentsRequest { project })
                .await?
                .into_inner()
                .environments;
            match global.output {
                OutputFormat::Json => {
                    output::print_json(&envs.iter().map(env_json).collect::<Vec<_>>())
                }
                OutputFormat::Table => {
                    let mut t = output::table(&["env", "version", "release", "pinned", "url"]);
                    for e in &envs {
                        let cur = e.current.clone().unwrap_or_default();
                        t.add_row(vec![
                            e.name.clone(),
                            cur.version,
                            format!("#{}", cur.seq),
                            if e.pinned { "yes" } else { "" }.to_owned(),
                            e.url.clone(),
                        ]);
                    }
                    output::print_table(&t)
                }
            }
        }
        EnvCommand::Remove { project, env } => {
            client
                .remove_environment(proto::RemoveEnvironmentRequest {
                    project: project.clone(),
                    env: env.clone(),
                })
                .await?;
            match global.output {
                OutputFormat::Json => {
                    output::print_json(&json!({ "project": project, "removed": env }))
                }
                OutputFormat::Table => {
                    output::print_line(&format!("removed environment {env} of {project}"))
                }
            }
        }
        EnvCommand::Protect {
            project,
            env,
            previews,
            password_file,
        } => {
            super::site_access::protect(conn, global, project, env, previews, &password_file).await
        }
        EnvCommand::Unprotect {
            project,
            env,
            previews,
        } => super::site_access::unprotect(conn, global, project, env, previews).await,
        EnvCommand::Unpin { project, env } => {
            let e = client
                .unpin_environment(proto::UnpinEnvironmentRequest { project, env })
                .await?
                .into_inner();
            match global.output {
                OutputFormat::Json => output::print_json(&env_json(&e)),
                OutputFormat::Table => output::print_line(&format!(
                    "unpinned {} of {}: automatic deploys move it again",
                    e.name, e.project
                )),
            }
        }
        EnvCommand::Lock {
            project,
            env,
            reason,
        } => {
            let e = client
                .lock_environment(proto::LockEnvironmentRequest {
                    project,
                    env,
                    reason,
                })
                .await?
                .into_inner();
            match global.output {
                OutputFormat::Json => output::print_json(&env_json(&e)),
                OutputFormat::Table => output::print_line(&format!(
                    "locked {} of {} ({}): deploys to it fail until `opus env unlock {} {}`",
                    e.name, e.project, e.lock_reason, e.project, e.name
                )),
            }
        }
        EnvCommand::Unlock { project, env } => {
            let e = client
                .unlock_environment(proto::UnlockEnvironmentRequest { project, env })
                .await?
                .into_inner();
            match global.output {
                OutputFormat::Json => output::print_json(&env_json(&e)),
                OutputFormat::Table => output::print_line(&format!(
                    "unlocked {} of {}: deploys go to it again",
                    e.name, e.project
                )),
            }
        }
        EnvCommand::Keep { project, env, off } => keep(conn, global, project, env, !off).await,
        EnvCommand::Unkeep { project, env } => keep(conn, global, project, env, false).await,
    }
}

/// `opus env keep|unkeep`: exempts a preview from expiry, or lets it expire again.
async fn keep(
    conn: &Connection,
    global: &GlobalArgs,
    project: String,
    env: String,
    kept: bool,
) -> Result<(), CliError> {
    let e = conn
        .deploys()
        .keep_environment(proto::KeepEnvironmentRequest { project, env, kept })
        .await?
        .into_inner();
    match global.output {
        OutputFormat::Json => output::print_json(&env_json(&e)),
        OutputFormat::Table if !e.preview => output::print_line(&format!(
            "{} of {} is not a preview: it never expires",
            e.name, e.project
        )),
        OutputFormat::Table if kept => output::print_line(&format!(
            "kept {} of {}: it does not expire (`opus env unkeep {} {}` lets it)",
            e.name, e.project, e.project, e.name
        )),
        OutputFormat::Table => output::print_line(&format!(
            "{} of {} expires again{}",
            e.name,
            e.project,
            if e.expires_at.is_some() {
                " after its opus.yml `previews: { expire: ... }`"
            } else {
                " once its opus.yml sets `previews: { expire: ... }`"
            }
        )),
    }
}
