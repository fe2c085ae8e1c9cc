//! `opus github connect|deliveries`.

use opus_core::proto;

use crate::cli::{GithubCommand, GlobalArgs, OutputFormat};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

pub async fn run(
    conn: &Connection,
    global: &GlobalArgs,
    cmd: GithubCommand,
) -> Result<(), CliError> {
    match cmd {
        GithubCommand::Connect { token_file } => connect(conn, global, &token_file).await,
        GithubCommand::Deliveries { limit } => deliveries(conn, global, limit).await,
    }
}

/// Sends the token read from `file`; prints where it will be used, never the token.
async fn connect(
    conn: &Connection,
    global: &GlobalArgs,
    file: &std::path::Path,
) -> Result<(), CliError> {
    let token = std::fs::read_to_string(file).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the token file {}: {e}",
            file.display()
        ))
    })?;
    let answer = conn
        .github()
        .connect_github(proto::ConnectGithubRequest { token })
        .await?
        .into_inner();
    match global.output {
        OutputFormat::Json => {
            output::print_json(&serde_json::json!({ "connected": true, "api_url": answer.api_url }))
        }
        OutputFormat::Table => output::print_line(&format!(
            "GitHub token stored; commit statuses go to {}",
            answer.api_url
        )),
    }
}

/// Lists the outbox's commit statuses.
async fn deliveries(conn: &Connection, global: &GlobalArgs, limit: u32) -> Result<(), CliError> {
    let ds = conn
        .github()
        .list_github_deliveries(proto::ListGithubDeliveriesRequest { limit })
        .await?
        .into_inner()
        .deliveries;
    match global.output {
        OutputFormat::Json => {
            let rows: Vec<_> = ds
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "event": d.event_seq,
                        "build": format!("{}#{}", d.project, d.build),
                        "repository": d.repository,
                        "sha": d.sha,
                        "state": d.state,
                        "description": d.description,
                        "target_url": d.target_url,
                        "delivery": d.delivery,
                        "attempts": d.attempts,
                        "last_status": d.last_status,
                        "last_error": d.last_error,
                    })
                })
                .collect();
            output::print_json(&rows)
        }
        OutputFormat::Table => {
            let mut t = output::table(&[
                "EVENT", "BUILD", "COMMIT", "STATUS", "DELIVERY", "TRIES", "LAST",
            ]);
            for d in &ds {
                let last = if d.last_error.is_empty() {
                    d.last_status.to_string()
                } else {
                    d.last_error.clone()
                };
                t.add_row(vec![
                    d.event_seq.to_string(),
                    format!("{}#{}", d.project, d.build),
                    format!("{}@{}", d.repository, d.sha.get(..7).unwrap_or(&d.sha)),
                    format!("{}: {}", d.state, d.description),
                    d.delivery.clone(),
                    d.attempts.to_string(),
                    last,
                ]);
            }
            output::print_table(&t)
        }
    }
}
