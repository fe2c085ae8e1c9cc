//! `opus env protect` and `opus env unprotect`: a password (basic auth) in front of an
//! environment or every preview of a project.

use std::path::Path;

use opus_core::proto;
use serde_json::json;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

/// What the command names: `previews of web`, `staging of web`.
fn what(project: &str, env: Option<&str>, previews: bool) -> String {
    match (previews, env) {
        (true, _) => format!("the previews of {project}"),
        (false, Some(env)) => format!("{env} of {project}"),
        (false, None) => format!("production of {project}"),
    }
}

/// `opus env protect <project> [<env> | --previews] --password-file F`.
pub async fn protect(
    conn: &Connection,
    global: &GlobalArgs,
    project: String,
    env: Option<String>,
    previews: bool,
    password_file: &Path,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(password_file).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the password file {}: {e}",
            password_file.display()
        ))
    })?;
    // One line: the trailing newline an editor or `echo` adds is not part of the password.
    let password = text.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(CliError::Usage(format!(
            "the password file {} is empty",
            password_file.display()
        )));
    }
    conn.site_access()
        .protect(proto::ProtectRequest {
            project: project.clone(),
            env: env.clone().unwrap_or_default(),
            previews,
            password,
        })
        .await?;
    let what = what(&project, env.as_deref(), previews);
    match global.output {
        OutputFormat::Json => output::print_json(&json!({
            "project": project, "env": env, "previews": previews, "protected": true,
        })),
        OutputFormat::Table => {
            output::print_line(&format!("{what} now asks for the password (any user name)"))
        }
    }
}

/// `opus env unprotect <project> [<env> | --previews]`.
pub async fn unprotect(
    conn: &Connection,
    global: &GlobalArgs,
    project: String,
    env: Option<String>,
    previews: bool,
) -> Result<(), CliError> {
    let removed = conn
        .site_access()
        .unprotect(proto::UnprotectRequest {
            project: project.clone(),
            env: env.clone().unwrap_or_default(),
            previews,
        })
        .await?
        .into_inner()
        .removed;
    let what = what(&project, env.as_deref(), previews);
    match global.output {
        OutputFormat::Json => output::print_json(&json!({
            "project": project, "env": env, "previews": previews, "removed": removed,
        })),
        OutputFormat::Table => output::print_line(&if removed {
            format!("{what} no longer asks for a password")
        } else {
            format!("{what} had no password")
        }),
    }
}
