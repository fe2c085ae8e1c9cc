//! `opus completions <shell>`: a completion script for the shell, generated from the command
//! definition by `clap_complete`, so it always matches this binary's commands and flags.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::error::CliError;

/// Prints the completion script for `args.shell` on stdout.
pub fn print(args: CompletionsArgs) -> Result<(), CliError> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "opus", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}
