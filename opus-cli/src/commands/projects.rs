//! `opus add`, `opus remove`, `opus list`.

use std::io::{IsTerminal, Write};

use opus_core::proto;
use serde::Serialize;

use crate::cli::{
    AddArgs, GlobalArgs, KeepArgs, ListArgs, OutputFormat, RemoveArgs, absolute_source,
};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

/// A project as `--output json` prints it.
#[derive(Serialize)]
struct ProjectJson {
    name: String,
    source: String,
    branch: String,
    created_at: String,
    keep_versions: u32,
    last_build: Option<LastBuildJson>,
}

/// The last build of a project, in JSON.
#[derive(Serialize)]
struct LastBuildJson {
    number: u64,
    state: &'static str,
    version: String,
}

fn project_json(p: &proto::Project) -> ProjectJson {
    ProjectJson {
        name: p.name.clone(),
        source: p
            .source
            .as_ref()
            .map(opus_core::wire::source_text)
            .unwrap_or_default(),
        branch: p.branch.clone(),
        created_at: output::time(p.created_at.as_ref()),
        keep_versions: p.keep_versions,
        last_build: p.last_build.as_ref().map(|b| LastBuildJson {
            number: b.number,
            state: output::build_state(b.state),
            version: b.version.clone(),
        }),
    }
}

pub async fn add(conn: &Connection, global: &GlobalArgs, args: AddArgs) -> Result<(), CliError> {
    let sent = absolute_source(&args.source);
    let project = conn
        .projects()
        .create_project(proto::CreateProjectRequest {
            name: args.name,
            source: sent.clone(),
            branch: args.branch.unwrap_or_default(),
        })
        .await?
        .into_inner();
    match global.output {
        OutputFormat::Json => output::print_json(&project_json(&project)),
        OutputFormat::Table => {
            let p = project_json(&project);
            output::print_line(&format!(
                "added {} ({}, branch {})",
                p.name, p.source, p.branch
            ))?;
            if sent != args.source || std::path::Path::new(&sent).is_absolute() {
                eprintln!("{}", local_folder_note(&args.source, &project));
            }
            eprintln!("next: opus trigger {}", p.name);
            Ok(())
        }
    }
}

/// What `opus add` of the local folder `given` means, as opusd decided it (a git repository is
/// added as a git source, a plain folder as a copy).
fn local_folder_note(given: &str, project: &proto::Project) -> String {
    let git = matches!(
        project.source.as_ref().and_then(|s| s.kind.as_ref()),
        Some(proto::source::Kind::GitUrl(_))
    );
    if git {
        format!(
            "{given} is a git repository: builds fetch its commits (branches, tags); uncommitted changes are not built"
        )
    } else {
        format!(
            "{given} is a plain folder (not a git repository): each build copies it as it is, and only `latest` builds"
        )
    }
}

pub async fn remove(
    conn: &Connection,
    global: &GlobalArgs,
    args: RemoveArgs,
) -> Result<(), CliError> {
    if !args.yes {
        // An unknown name fails here, before anything is asked.
        conn.projects()
            .get_project(proto::GetProjectRequest {
                name: args.name.clone(),
            })
            .await?;
        confirm_removal(&args.name)?;
    }
    conn.projects()
        .delete_project(proto::DeleteProjectRequest {
            name: args.name.clone(),
        })
        .await?;
    match global.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({ "removed": args.name })),
        OutputFormat::Table => output::print_line(&format!("removed {}", args.name)),
    }
}

/// Asks a terminal to type the project's name before it is removed (as GitHub does for a
/// repository); without a terminal there is no one to ask, so `--yes` is required.
fn confirm_removal(name: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "removing {name} deletes its versions and releases for good; standard input is not a terminal to confirm on, so pass --yes (opus remove {name} --yes)"
        )));
    }
    eprintln!(
        "This removes {name} for good: its versions (files, archives, manifests), releases, environments, site options, secrets, hooks, build cache and git mirror; its sites stop being served."
    );
    eprint!("Type the project name ({name}) to confirm: ");
    std::io::stderr().flush()?;
    let mut typed = String::new();
    std::io::stdin().read_line(&mut typed)?;
    if typed.trim() != name {
        return Err(CliError::Other(format!(
            "the name typed is not {name}; nothing was removed"
        )));
    }
    Ok(())
}

pub async fn keep(conn: &Connection, global: &GlobalArgs, args: KeepArgs) -> Result<(), CliError> {
    let project = match args.count {
        Some(n) => conn
            .projects()
            .update_project(proto::UpdateProjectRequest {
                name: args.project.clone(),
                branch: None,
                keep_versions: Some(n),
            })
            .await?
            .into_inner(),
        None => conn
            .projects()
            .get_project(proto::GetProjectRequest {
                name: args.project.clone(),
            })
            .await?
            .into_inner(),
    };
    let keep = project.keep_versions;
    match global.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "project": project.name,
            "keep_versions": keep,
        })),
        OutputFormat::Table => {
            let line = match keep {
                0 => format!(
                    "{} keeps every version (unless its opus.yml sets retention: N)",
                    project.name
                ),
                n => format!(
                    "{} keeps the newest {n} version(s); older ones are deleted, except deployed versions and rollback targets",
                    project.name
                ),
            };
            output::print_line(&line)
        }
    }
}

pub async fn list(conn: &Connection, global: &GlobalArgs, args: ListArgs) -> Result<(), CliError> {
    let projects = conn
        .projects()
        .list_projects(proto::ListProjectsRequest {
            filter: args.filter.unwrap_or_default(),
            brief: true,
        })
        .await?
        .into_inner()
        .projects;
    let rows: Vec<ProjectJson> = projects.iter().map(project_json).collect();
    match global.output {
        OutputFormat::Json => output::print_json(&rows),
        OutputFormat::Table => {
            if rows.is_empty() {
                eprintln!("no projects; add one with `opus add <name> <git-url|dir>`");
                return Ok(());
            }
            let mut t = output::table(&["name", "source", "branch", "last build", "state"]);
            for (p, wire) in rows.iter().zip(&projects) {
                let (last, state) = match &wire.last_build {
                    Some(b) => (
                        format!(
                            "{}#{} {}",
                            p.name,
                            b.number,
                            output::ago(b.queued_at.as_ref())
                        ),
                        output::build_state(b.state).to_owned(),
                    ),
                    None => ("-".to_owned(), "-".to_owned()),
                };
                t.add_row(vec![
                    p.name.clone(),
                    p.source.clone(),
                    p.branch.clone(),
                    last,
                    state,
                ]);
            }
            output::print_table(&t)
        }
    }
}
