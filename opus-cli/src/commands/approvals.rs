//! `opus approve` and `opus reject`: decide on a build awaiting approval.

use opus_core::proto;
use serde::Serialize;

use super::builds::{BuildJson, build_json, parse_build_ref};
use crate::cli::{ApproveArgs, GlobalArgs, OutputFormat, RejectArgs};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

/// What `--output json` prints for a decision.
#[derive(Serialize)]
struct DecisionJson {
    build: Option<BuildJson>,
    releases: Vec<ReleaseJson>,
}

/// One release an approval made.
#[derive(Serialize)]
struct ReleaseJson {
    env: String,
    seq: u64,
    version: String,
    actor: String,
    url: String,
}

/// Who decides: `--as`, else the login name, else nothing (the server records its own actor).
fn approver(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_default()
}

/// `opus approve web#12`.
pub async fn approve(
    conn: &Connection,
    global: &GlobalArgs,
    args: ApproveArgs,
) -> Result<(), CliError> {
    let (project, number) = parse_build_ref(&args.build)?;
    let response = conn
        .approvals()
        .approve_build(proto::ApproveBuildRequest {
            project: project.to_owned(),
            number,
            approver: approver(args.approver),
        })
        .await?
        .into_inner();
    let releases: Vec<ReleaseJson> = response
        .releases
        .iter()
        .zip(&response.urls)
        .map(|(r, url)| ReleaseJson {
            env: r.env.clone(),
            seq: r.seq,
            version: r.version.clone(),
            actor: r.actor.clone(),
            url: url.clone(),
        })
        .collect();
    match global.output {
        OutputFormat::Json => output::print_json(&DecisionJson {
            build: response.build.as_ref().map(build_json),
            releases,
        }),
        OutputFormat::Table => {
            for r in &releases {
                output::print_line(&format!(
                    "{project}#{number} approved: {} is live in {} ({}), release #{} by {}",
                    r.version, r.env, r.url, r.seq, r.actor
                ))?;
            }
            Ok(())
        }
    }
}

/// `opus reject web#12 --reason ...`.
pub async fn reject(
    conn: &Connection,
    global: &GlobalArgs,
    args: RejectArgs,
) -> Result<(), CliError> {
    let (project, number) = parse_build_ref(&args.build)?;
    let response = conn
        .approvals()
        .reject_build(proto::RejectBuildRequest {
            project: project.to_owned(),
            number,
            approver: approver(args.approver),
            reason: args.reason.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let build = response.build.as_ref();
    match global.output {
        OutputFormat::Json => output::print_json(&DecisionJson {
            build: build.map(build_json),
            releases: Vec::new(),
        }),
        OutputFormat::Table => output::print_line(&format!(
            "{project}#{number} {}",
            build.map_or("rejected", |b| b.reason.as_str())
        )),
    }
}
