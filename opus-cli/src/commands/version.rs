//! `opus version`: this CLI's version and the git commit it was built from, without a server
//! (`opus status` shows the server's).

use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::version;

/// `opus version -o json`.
#[derive(Serialize)]
struct VersionJson {
    version: &'static str,
    commit: &'static str,
}

/// Prints `opus 0.1.0 (commit 5049aab1c2d3)`, or the two fields as JSON.
pub fn print(global: &GlobalArgs) -> Result<(), CliError> {
    match global.output {
        OutputFormat::Json => output::print_json(&VersionJson {
            version: version::VERSION,
            commit: version::COMMIT,
        }),
        OutputFormat::Table => output::print_line(&format!("opus {}", version::LONG)),
    }
}
