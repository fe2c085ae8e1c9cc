//! `opus domain add|list|remove`.

use opus_core::proto;
use serde_json::{Value, json};

use crate::cli::{DomainCommand, GlobalArgs, OutputFormat};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

pub async fn run(
    conn: &Connection,
    global: &GlobalArgs,
    cmd: DomainCommand,
) -> Result<(), CliError> {
    let mut client = conn.domains();
    match cmd {
        DomainCommand::Add {
            project,
            domain,
            env,
        } => {
            let d = client
                .add_domain(proto::AddDomainRequest {
                    project,
                    env,
                    domain,
                })
                .await?
                .into_inner();
            match global.output {
                OutputFormat::Json => output::print_json(&domain_json(&d)),
                OutputFormat::Table => output::print_line(&format!(
                    "{} serves {} {} at {}",
                    d.domain, d.project, d.env, d.url
                )),
            }
        }
        DomainCommand::List { project } => {
            let domains = client
                .list_domains(proto::ListDomainsRequest {
                    project: project.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .domains;
            match global.output {
                OutputFormat::Json => {
                    output::print_json(&domains.iter().map(domain_json).collect::<Vec<_>>())
                }
                OutputFormat::Table => {
                    let mut t = output::table(&[
                        "domain",
                        "project",
                        "env",
                        "certificate",
                        "issuer",
                        "expires",
                        "error",
                        "dns",
                    ]);
                    for d in &domains {
                        let c = d.certificate.clone().unwrap_or_default();
                        let state = match c.state.as_str() {
                            "" if d.certificate.is_none() => "-".to_owned(),
                            s => s.to_owned(),
                        };
                        t.add_row(vec![
                            d.domain.clone(),
                            d.project.clone(),
                            d.env.clone(),
                            state,
                            c.issuer,
                            output::time(c.not_after.as_ref()),
                            c.last_error,
                            dns_cell(d.dns.as_ref()),
                        ]);
                    }
                    output::print_table(&t)
                }
            }
        }
        DomainCommand::Remove { domain } => {
            let d = client
                .remove_domain(proto::RemoveDomainRequest { domain })
                .await?
                .into_inner();
            match global.output {
                OutputFormat::Json => output::print_json(&domain_json(&d)),
                OutputFormat::Table => output::print_line(&format!(
                    "removed {} (served {} {})",
                    d.domain, d.project, d.env
                )),
            }
        }
    }
}

/// The DNS column: `-` without a change, else the state, and why when it is not done.
fn dns_cell(dns: Option<&proto::DnsRoute>) -> String {
    match dns {
        None => "-".to_owned(),
        Some(d) if d.error.is_empty() => format!("{} {}", d.action, d.state),
        Some(d) => format!("{} {}: {}", d.action, d.state, d.error),
    }
}

/// A domain as scripts read it.
fn domain_json(d: &proto::Domain) -> Value {
    let certificate = d.certificate.as_ref().map(|c| {
        json!({
            "state": c.state,
            "issuer": c.issuer,
            "not_after": output::time(c.not_after.as_ref()),
            "last_error": c.last_error,
            "next_attempt": output::time(c.next_attempt.as_ref()),
        })
    });
    json!({
        "domain": d.domain,
        "project": d.project,
        "env": d.env,
        "added_at": output::time(d.added_at.as_ref()),
        "url": d.url,
        "certificate": certificate,
        "dns": d.dns.as_ref().map(|r| json!({
            "action": r.action,
            "state": r.state,
            "error": r.error,
            "attempts": r.attempts,
        })),
    })
}
