//! Printing results: aligned tables for people, JSON for scripts. Results go to stdout, messages
//! to stderr.

use std::io::Write;

use serde::Serialize;
use tabwriter::TabWriter;

use crate::error::CliError;

/// Rows to print as aligned columns with a header and no borders, like `kubectl get`.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Adds a row (one cell per column of the header).
    pub fn add_row(&mut self, cells: Vec<String>) -> &mut Table {
        self.rows.push(cells);
        self
    }
}

/// A table whose header row is `header`, upper-cased.
pub fn table(header: &[&str]) -> Table {
    Table {
        rows: vec![header.iter().map(|h| h.to_uppercase()).collect()],
    }
}

/// Prints a table: columns two spaces apart, no trailing spaces. Aligned by `tabwriter` (Go's
/// elastic tabstops, as kubectl's), in one buffered write, so 10,000 rows take milliseconds.
pub fn print_table(t: &Table) -> Result<(), CliError> {
    let mut aligned = TabWriter::new(Vec::new()).padding(2).minwidth(0);
    for row in &t.rows {
        let mut first = true;
        for cell in row {
            if !first {
                aligned.write_all(b"\t")?;
            }
            first = false;
            // A tab or newline inside a cell would break the columns.
            if cell.contains(['\t', '\n']) {
                aligned.write_all(cell.replace(['\t', '\n'], " ").as_bytes())?;
            } else {
                aligned.write_all(cell.as_bytes())?;
            }
        }
        aligned.write_all(b"\n")?;
    }
    let text = aligned
        .into_inner()
        .map_err(|e| CliError::Other(format!("aligning a table: {e}")))?;
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        out.write_all(line.trim_ascii_end())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
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
    t.map(|t| opus_core::age::ago(opus_core::wire::system_time(t)))
        .unwrap_or_default()
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
        S::AwaitingApproval => "awaiting approval",
    }
}
