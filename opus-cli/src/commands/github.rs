//! `opus github connect|deliveries|import`.

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
        GithubCommand::Import { repositories } if repositories.is_empty() => {
            importable(conn, global).await
        }
        GithubCommand::Import { repositories } => import(conn, global, repositories).await,
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

/// Lists the repositories the App's installations see, and what each is or would be imported as.
async fn importable(conn: &Connection, global: &GlobalArgs) -> Result<(), CliError> {
    let repos = conn
        .github_app()
        .list_github_repositories(proto::ListGithubRepositoriesRequest {})
        .await?
        .into_inner()
        .repositories;
    match global.output {
        OutputFormat::Json => {
            let rows: Vec<_> = repos
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "repository": r.full_name,
                        "clone_url": r.clone_url,
                        "default_branch": r.default_branch,
                        "private": r.private,
                        "installation": r.installation,
                        "project": r.project,
                        "import_as": r.import_as,
                    })
                })
                .collect();
            output::print_json(&rows)
        }
        OutputFormat::Table => {
            let mut t = output::table(&["REPOSITORY", "VISIBILITY", "INSTALLATION", "PROJECT"]);
            for r in &repos {
                let project = if !r.project.is_empty() {
                    r.project.clone()
                } else if r.import_as.is_empty() {
                    "- (no valid name: use `opus add`)".to_owned()
                } else {
                    format!("- (imports as {})", r.import_as)
                };
                t.add_row(vec![
                    r.full_name.clone(),
                    if r.private { "private" } else { "public" }.to_owned(),
                    r.installation.to_string(),
                    project,
                ]);
            }
            output::print_table(&t)?;
            if repos.iter().any(|r| r.project.is_empty()) {
                eprintln!("add them with `opus github import OWNER/REPO...`");
            }
            Ok(())
        }
    }
}

/// Adds the named repositories as projects; says which were added and which skipped, and why.
async fn import(
    conn: &Connection,
    global: &GlobalArgs,
    repositories: Vec<String>,
) -> Result<(), CliError> {
    let results = conn
        .github_app()
        .import_github_repositories(proto::ImportGithubRepositoriesRequest { repositories })
        .await?
        .into_inner()
        .results;
    match global.output {
        OutputFormat::Json => {
            let rows: Vec<_> = results
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "repository": r.full_name,
                        "project": r.project,
                        "added": r.added,
                        "message": r.message,
                    })
                })
                .collect();
            output::print_json(&rows)
        }
        OutputFormat::Table => {
            for r in &results {
                output::print_line(&format!("{}: {}", r.full_name, r.message))?;
            }
            Ok(())
        }
    }
}
