//! `opus trigger`, `opus builds`, `opus logs`, `opus cancel`.

use std::io::Write;
use std::time::Duration;

use opus_core::proto;
use serde::Serialize;
use tokio_stream::StreamExt;

use crate::cli::{BuildsArgs, CancelArgs, GlobalArgs, LogsArgs, OutputFormat, TriggerArgs};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

/// A build as `--output json` prints it.
#[derive(Serialize)]
struct BuildJson {
    /// The build's number within its project (`web#3` is number 3).
    number: u64,
    project: String,
    state: &'static str,
    #[serde(rename = "ref")]
    git_ref: String,
    commit: String,
    version: String,
    reason: String,
    branch: String,
    trigger: String,
    store: String,
    queued_at: String,
    started_at: String,
    finished_at: String,
}

fn build_json(b: &proto::Build) -> BuildJson {
    BuildJson {
        number: b.number,
        project: b.project.clone(),
        state: output::build_state(b.state),
        git_ref: b.r#ref.clone(),
        commit: b.commit.clone(),
        version: b.version.clone(),
        reason: b.reason.clone(),
        branch: b.branch.clone(),
        trigger: b.trigger.clone(),
        store: b.store.clone(),
        queued_at: output::time(b.queued_at.as_ref()),
        started_at: output::time(b.started_at.as_ref()),
        finished_at: output::time(b.finished_at.as_ref()),
    }
}

/// Parses `web#12` into the project and the build's number in it. Numbers count per project,
/// so a number alone names no build.
fn parse_build_ref(text: &str) -> Result<(&str, u64), CliError> {
    let usage = || {
        CliError::Usage(format!(
            "{text:?} is not a build: write its project and number, such as web#12 (each project numbers its builds from 1; see `opus builds`)"
        ))
    };
    let (project, number) = text.split_once('#').ok_or_else(usage)?;
    if project.is_empty() {
        return Err(usage());
    }
    let number = number.parse().map_err(|_| usage())?;
    Ok((project, number))
}

/// The request that names `build` again (by project and number).
fn named(build: &proto::Build) -> proto::GetBuildRequest {
    proto::GetBuildRequest {
        id: 0,
        project: build.project.clone(),
        number: build.number,
    }
}

/// Fetches a build named `web#12`.
async fn get_build(conn: &Connection, text: &str) -> Result<proto::Build, CliError> {
    let (project, number) = parse_build_ref(text)?;
    Ok(conn
        .builds()
        .get_build(proto::GetBuildRequest {
            id: 0,
            project: project.to_owned(),
            number,
        })
        .await?
        .into_inner())
}

pub async fn trigger(
    conn: &Connection,
    global: &GlobalArgs,
    args: TriggerArgs,
) -> Result<(), CliError> {
    let build = conn
        .builds()
        .trigger_build(proto::TriggerBuildRequest {
            project: args.project,
            r#ref: args.git_ref,
            version: args.version.unwrap_or_default(),
            store: args.store.or(args.store_positional).unwrap_or_default(),
        })
        .await?
        .into_inner();
    if !args.wait {
        return match global.output {
            OutputFormat::Json => output::print_json(&build_json(&build)),
            OutputFormat::Table => {
                output::print_line(&format!("{}#{}", build.project, build.number))
            }
        };
    }
    if global.output == OutputFormat::Table {
        output::print_line(&format!("{}#{}", build.project, build.number))?;
    }
    let finished = follow(conn, &build, global.output == OutputFormat::Table).await?;
    if global.output == OutputFormat::Json {
        output::print_json(&build_json(&finished))?;
    } else {
        let state = output::build_state(finished.state);
        let detail = if finished.state == proto::BuildState::Succeeded as i32 {
            format!("version {}", finished.version)
        } else {
            finished.reason.clone()
        };
        eprintln!("{}#{} {state}: {detail}", finished.project, finished.number);
    }
    if finished.state == proto::BuildState::Succeeded as i32 {
        Ok(())
    } else {
        Err(CliError::Silent)
    }
}

/// Shows a queued build's place until it starts, then streams its log to the end; returns the
/// finished build.
///
/// The log stream is opened at once: the server holds it until the build starts, so the first
/// line arrives the moment it does. Meanwhile a build that waits for a slot shows its place,
/// asked for every half second.
async fn follow(
    conn: &Connection,
    build: &proto::Build,
    print: bool,
) -> Result<proto::Build, CliError> {
    let mut stream = open_log(conn, build, true).await?;
    let waiting = |b: &proto::Build| {
        b.state == proto::BuildState::Queued as i32 && b.reason.contains("waiting")
    };
    let mut first = None;
    let mut last_reason = String::new();
    let mut current = build.clone();
    while waiting(&current) {
        if current.reason != last_reason {
            eprintln!("{}", current.reason);
            last_reason = current.reason.clone();
        }
        tokio::select! {
            line = stream.next() => {
                first = Some(line);
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        current = conn.builds().get_build(named(build)).await?.into_inner();
    }
    print_lines(first, stream, print).await?;
    Ok(conn.builds().get_build(named(build)).await?.into_inner())
}

/// Opens a build's log stream (`follow`: until the build ends).
async fn open_log(
    conn: &Connection,
    build: &proto::Build,
    follow: bool,
) -> Result<tonic::Streaming<proto::LogLine>, CliError> {
    Ok(conn
        .builds()
        .stream_logs(proto::StreamLogsRequest {
            id: 0,
            follow,
            project: build.project.clone(),
            number: build.number,
        })
        .await?
        .into_inner())
}

/// Streams a build's log to stdout.
async fn print_log(
    conn: &Connection,
    build: &proto::Build,
    follow: bool,
    print: bool,
) -> Result<(), CliError> {
    let stream = open_log(conn, build, follow).await?;
    print_lines(None, stream, print).await
}

/// Prints the lines of a log stream (after `first`, one already taken from it: `Some(None)` when
/// the stream had ended) to stdout, when `print`; reads it to its end either way.
async fn print_lines(
    first: Option<Option<Result<proto::LogLine, tonic::Status>>>,
    mut stream: tonic::Streaming<proto::LogLine>,
    print: bool,
) -> Result<(), CliError> {
    let mut next = first;
    loop {
        let line = match next.take() {
            Some(taken) => taken,
            None => stream.next().await,
        };
        let Some(line) = line else {
            return Ok(());
        };
        let line = line?;
        if line.final_state != 0 || !print {
            continue;
        }
        let mut out = std::io::stdout().lock();
        if line.stream == "opus" {
            writeln!(out, "==> {}", line.text)?;
        } else {
            writeln!(out, "{}", line.text)?;
        }
    }
}

pub async fn list(
    conn: &Connection,
    global: &GlobalArgs,
    args: BuildsArgs,
) -> Result<(), CliError> {
    let state = match args.state.as_deref() {
        None => proto::BuildState::Unspecified,
        Some(s) => match opus_core::model::BuildState::parse(s) {
            Ok(state) => proto::BuildState::from(state),
            Err(e) => return Err(CliError::Usage(e.to_string())),
        },
    };
    let builds = conn
        .builds()
        .list_builds(proto::ListBuildsRequest {
            project: args.project.unwrap_or_default(),
            state: state as i32,
            limit: args.limit,
        })
        .await?
        .into_inner()
        .builds;
    match global.output {
        OutputFormat::Json => {
            output::print_json(&builds.iter().map(build_json).collect::<Vec<_>>())
        }
        OutputFormat::Table => {
            if builds.is_empty() {
                eprintln!("no builds; start one with `opus trigger <project>`");
                return Ok(());
            }
            let mut t = output::table(&[
                "build", "state", "ref", "version", "queued", "took", "reason",
            ]);
            for b in &builds {
                let took = match (&b.started_at, &b.finished_at) {
                    (Some(s), Some(f)) => {
                        let ms = (f.seconds - s.seconds) * 1000
                            + i64::from(f.nanos - s.nanos) / 1_000_000;
                        format!("{:.1}s", ms.max(0) as f64 / 1000.0)
                    }
                    _ => String::new(),
                };
                t.add_row(vec![
                    format!("{}#{}", b.project, b.number),
                    output::build_state(b.state).to_owned(),
                    b.r#ref.clone(),
                    b.version.clone(),
                    output::ago(b.queued_at.as_ref()),
                    took,
                    b.reason.clone(),
                ]);
            }
            output::print_table(&t)
        }
    }
}

pub async fn logs(conn: &Connection, _global: &GlobalArgs, args: LogsArgs) -> Result<(), CliError> {
    let build = get_build(conn, &args.build).await?;
    if args.follow {
        follow(conn, &build, true).await.map(drop)
    } else {
        print_log(conn, &build, false, true).await
    }
}

pub async fn cancel(
    conn: &Connection,
    global: &GlobalArgs,
    args: CancelArgs,
) -> Result<(), CliError> {
    let build = get_build(conn, &args.build).await?;
    let build = conn
        .builds()
        .cancel_build(proto::CancelBuildRequest {
            id: 0,
            project: build.project.clone(),
            number: build.number,
        })
        .await?
        .into_inner();
    match global.output {
        OutputFormat::Json => output::print_json(&build_json(&build)),
        OutputFormat::Table => {
            output::print_line(&format!("cancelling {}#{}", build.project, build.number))
        }
    }
}
