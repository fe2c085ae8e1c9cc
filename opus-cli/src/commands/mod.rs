//! One module per command group; each turns its arguments into gRPC calls and prints the result.

mod builds;
mod events;
mod hook;
mod projects;
mod secret;
mod status;

use crate::cli::{Cli, Command};
use crate::connection::Connection;
use crate::error::CliError;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    let conn = Connection::open(&global).await?;
    match cli.command {
        Command::Add(args) => projects::add(&conn, &global, args).await,
        Command::Remove(args) => projects::remove(&conn, &global, args).await,
        Command::List(args) => projects::list(&conn, &global, args).await,
        Command::Status => status::show(&conn, &global).await,
        Command::Secret(cmd) => secret::run(&conn, &global, cmd).await,
        Command::Hook(cmd) => hook::run(&conn, &global, cmd).await,
        Command::Events(args) => events::run(&conn, &global, args).await,
        Command::Trigger(args) => builds::trigger(&conn, &global, args).await,
        Command::Builds(args) => builds::list(&conn, &global, args).await,
        Command::Logs(args) => builds::logs(&conn, &global, args).await,
        Command::Cancel(args) => builds::cancel(&conn, &global, args).await,
    }
}
