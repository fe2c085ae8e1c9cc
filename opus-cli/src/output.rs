//! Printing results: aligned tables for people, JSON for scripts. Results go to stdout, messages
//! to stderr.

use std::io::Write;
use std::time::{Duration, SystemTime};

use comfy_table::{Table, presets};
use serde::Serialize;

use crate::error::CliError;

/// A table with a header row and no borders, like `kubectl get`.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    t
}

/// Prints a table, trimming trailing spaces of each line.
pub fn print_table(t: &Table) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for line in t.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Prints a value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Other(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// Prints one line of result to stdout.
pub fn print_line(line: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(())
}

/// A protobuf timestamp as RFC 3339 (seconds), or empty.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(opus_core::wire::system_time(t)).to_string())
        .unwrap_or_default()
}

/// How long ago a timestamp was, for tables ("3m ago").
pub fn ago(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    let then = opus_core::wire::system_time(t);
    let secs = SystemTime::now()
        .duration_since(then)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// A duration in seconds as `1h2m3s`.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// A wire build state as the lowercase word people and scripts see.
pub fn build_state(state: i32) -> &'static str {
    use opus_core::proto::BuildState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Unspecified => "unknown",
        S::Queued => "queued",
        S::Running => "running",
        S::Succeeded => "succeeded",
        S::Failed => "failed",
        S::Cancelled => "cancelled",
    }
}
