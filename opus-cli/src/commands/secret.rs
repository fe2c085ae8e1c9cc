//! `opus secret set|unset|list`.
//!
//! `set` without `--value` asks a terminal for the value twice without echo (as `passwd` does),
//! and reads a script's standard input as it is.

use std::io::{IsTerminal, Read};

use opus_core::proto;

use crate::cli::{GlobalArgs, OutputFormat, SecretCommand};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

pub async fn run(
    conn: &Connection,
    global: &GlobalArgs,
    cmd: SecretCommand,
) -> Result<(), CliError> {
    let mut client = conn.projects();
    match cmd {
        SecretCommand::Set {
            project,
            name,
            value,
        } => {
            let value = match value {
                Some(v) => v,
                None if std::io::stdin().is_terminal() => prompt_twice(&name)?,
                None => read_stdin()?,
            };
            client
                .set_secret(proto::SetSecretRequest {
                    project: project.clone(),
                    name: name.clone(),
                    value,
                })
                .await?;
            match global.output {
                OutputFormat::Json => {
                    output::print_json(&serde_json::json!({ "project": project, "set": name }))
                }
                OutputFormat::Table => {
                    output::print_line(&format!("set secret {name} of {project}"))
                }
            }
        }
        SecretCommand::Unset { project, name } => {
            client
                .unset_secret(proto::UnsetSecretRequest {
                    project: project.clone(),
                    name: name.clone(),
                })
                .await?;
            match global.output {
                OutputFormat::Json => {
                    output::print_json(&serde_json::json!({ "project": project, "unset": name }))
                }
                OutputFormat::Table => {
                    output::print_line(&format!("removed secret {name} of {project}"))
                }
            }
        }
        SecretCommand::List { project } => {
            let names = client
                .list_secrets(proto::ListSecretsRequest { project })
                .await?
                .into_inner()
                .names;
            match global.output {
                OutputFormat::Json => output::print_json(&names),
                OutputFormat::Table => {
                    for n in names {
                        output::print_line(&n)?;
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Asks the terminal for the value of secret `name` twice, without echo; the two must match.
fn prompt_twice(name: &str) -> Result<String, CliError> {
    let first = rpassword::prompt_password(format!("Value of {name}: "))?;
    let again = rpassword::prompt_password(format!("Value of {name} again: "))?;
    if first != again {
        return Err(CliError::Usage(format!(
            "the two values of {name} differ; nothing was set"
        )));
    }
    Ok(first)
}

/// The value from standard input (not a terminal): all of it, less one trailing newline.
fn read_stdin() -> Result<String, CliError> {
    let mut v = String::new();
    std::io::stdin().read_to_string(&mut v)?;
    if v.ends_with('\n') {
        v.pop();
        if v.ends_with('\r') {
            v.pop();
        }
    }
    Ok(v)
}
