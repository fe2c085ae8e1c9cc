//! One module per command group; each turns its arguments into gRPC calls and prints the result.

mod artifacts;
mod builds;
mod completions;
mod deploys;
mod events;
mod hook;
mod install;
mod projects;
mod secret;
mod status;

use crate::cli::{Cli, Command};
use crate::connection::Connection;
use crate::error::CliError;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    // These talk to Kubernetes, not to opusd (which may not exist yet), or to nothing.
    let command = match cli.command {
        Command::Completions(args) => return completions::print(args),
        Command::Install(args) => return install::install(&global, args).await,
        Command::Uninstall(args) => return install::uninstall(&global, args).await,
        other => other,
    };
    let conn = Connection::open(&global).await?;
    match command {
        Command::Add(args) => projects::add(&conn, &global, args).await,
        Command::Remove(args) => projects::remove(&conn, &global, args).await,
        Command::Keep(args) => projects::keep(&conn, &global, args).await,
        Command::List(args) => projects::list(&conn, &global, args).await,
        Command::Status => status::show(&conn, &global).await,
        Command::Secret(cmd) => secret::run(&conn, &global, cmd).await,
        Command::Deploy(args) => deploys::deploy(&conn, &global, args).await,
        Command::Rollback(args) => deploys::rollback(&conn, &global, args).await,
        Command::Releases(args) => deploys::releases(&conn, &global, args).await,
        Command::Env(cmd) => deploys::env(&conn, &global, cmd).await,
        Command::Artifacts(args) => artifacts::list(&conn, &global, args).await,
        Command::Download(args) => artifacts::download(&conn, &global, args).await,
        Command::Publish(args) => artifacts::publish(&conn, &global, args).await,
        Command::Verify(args) => artifacts::verify(&conn, &global, args).await,
        Command::Hook(cmd) => hook::run(&conn, &global, cmd).await,
        Command::Events(args) => events::run(&conn, &global, args).await,
        Command::Trigger(args) => builds::trigger(&conn, &global, args).await,
        Command::Builds(args) => builds::list(&conn, &global, args).await,
        Command::Logs(args) => builds::logs(&conn, &global, args).await,
        Command::Cancel(args) => builds::cancel(&conn, &global, args).await,
        Command::Install(args) => install::install(&global, args).await,
        Command::Uninstall(args) => install::uninstall(&global, args).await,
        Command::Completions(args) => completions::print(args),
    }
}
