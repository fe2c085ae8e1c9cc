//! One module per command group; each turns its arguments into gRPC calls and prints the result.

mod approvals;
mod artifacts;
mod builds;
mod completions;
mod deploys;
mod domains;
mod events;
mod github;
mod hook;
mod install;
mod projects;
mod secret;
mod site_access;
mod status;
mod version;

use crate::cli::{Cli, Command};
use crate::connection::Connection;
use crate::error::CliError;

/// Runs the parsed command line. Every command but `install` and `uninstall` (which talk to
/// Kubernetes, not to opusd, which may not exist yet), `completions` and `version` opens the
/// connection first.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    let conn = || Connection::open(&global);
    match cli.command {
        Command::Install(args) => install::install(&global, args).await,
        Command::Uninstall(args) => install::uninstall(&global, args).await,
        Command::Completions(args) => completions::print(args),
        Command::Version => version::print(&global),
        Command::Add(args) => projects::add(&conn().await?, &global, args).await,
        Command::Remove(args) => projects::remove(&conn().await?, &global, args).await,
        Command::Keep(args) => projects::keep(&conn().await?, &global, args).await,
        Command::List(args) => projects::list(&conn().await?, &global, args).await,
        Command::Status => status::show(&conn().await?, &global).await,
        Command::Secret(cmd) => secret::run(&conn().await?, &global, cmd).await,
        Command::Deploy(args) => deploys::deploy(&conn().await?, &global, args).await,
        Command::Rollback(args) => deploys::rollback(&conn().await?, &global, args).await,
        Command::Releases(args) => deploys::releases(&conn().await?, &global, args).await,
        Command::Env(cmd) => deploys::env(&conn().await?, &global, cmd).await,
        Command::Artifacts(args) => artifacts::list(&conn().await?, &global, args).await,
        Command::Download(args) => artifacts::download(&conn().await?, &global, args).await,
        Command::Publish(args) => artifacts::publish(&conn().await?, &global, args).await,
        Command::Verify(args) => artifacts::verify(&conn().await?, &global, args).await,
        Command::Hook(cmd) => hook::run(&conn().await?, &global, cmd).await,
        Command::Events(args) => events::run(&conn().await?, &global, args).await,
        Command::Trigger(args) => builds::trigger(&conn().await?, &global, args).await,
        Command::Builds(args) => builds::list(&conn().await?, &global, args).await,
        Command::Logs(args) => builds::logs(&conn().await?, &global, args).await,
        Command::Cancel(args) => builds::cancel(&conn().await?, &global, args).await,
        Command::Domain(cmd) => domains::run(&conn().await?, &global, cmd).await,
        Command::Github(cmd) => github::run(&conn().await?, &global, cmd).await,
        Command::Approve(args) => approvals::approve(&conn().await?, &global, args).await,
        Command::Reject(args) => approvals::reject(&conn().await?, &global, args).await,
    }
}
