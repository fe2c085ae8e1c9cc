//! `opus events [--project P] [-f] [--from SEQ | --tail N]`: the event log, one line per event.
//!
//! Events stream, so they are printed as they arrive rather than as one table: a fixed-width line
//! per event for people, one JSON object per line (NDJSON) with `--output json`.

use std::io::Write;

use opus_core::proto;
use tokio_stream::StreamExt;

use crate::cli::{EventsArgs, GlobalArgs, OutputFormat};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

pub async fn run(conn: &Connection, global: &GlobalArgs, args: EventsArgs) -> Result<(), CliError> {
    let mut stream = conn
        .events()
        .watch_events(proto::WatchEventsRequest {
            from: args.from.unwrap_or(1),
            project: args.project.unwrap_or_default(),
            follow: args.follow,
            tail: args.tail,
        })
        .await?
        .into_inner();
    while let Some(event) = stream.next().await {
        let e = event?;
        let payload: serde_json::Value =
            serde_json::from_str(&e.payload_json).unwrap_or(serde_json::Value::Null);
        let mut out = std::io::stdout().lock();
        match global.output {
            OutputFormat::Json => {
                let line = serde_json::json!({
                    "seq": e.seq,
                    "time": output::time(e.time.as_ref()),
                    "type": e.r#type,
                    "project": e.project,
                    "payload": payload,
                });
                writeln!(out, "{line}")?;
            }
            OutputFormat::Table => {
                writeln!(
                    out,
                    "{:>6}  {}  {:<16}  {:<16}  {}",
                    e.seq,
                    output::time(e.time.as_ref()),
                    e.r#type,
                    if e.project.is_empty() {
                        "-"
                    } else {
                        &e.project
                    },
                    e.payload_json
                )?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
