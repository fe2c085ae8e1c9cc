//! `opus`: the command line of Opus, a thin gRPC client of opusd.
//!
//! `main` only parses arguments (accepting the original single-dash forms such as `opus -add`),
//! runs one command from [`commands`], and turns its error into one line on stderr and exit code 1.
//! Usage errors exit 2 (clap's convention).

mod cli;
mod commands;
mod connection;
mod error;
mod job_lines;
mod output;
mod step_status;
mod steps;
mod version;

use clap::Parser;

use crate::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = cli::translate_legacy_args(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    let code = match commands::run(cli).await {
        Ok(()) => 0,
        Err(e) if e.is_broken_pipe() => 0,
        Err(error::CliError::Silent) => 1,
        Err(e) => {
            eprintln!("opus: {e}");
            1
        }
    };
    std::process::exit(code);
}
