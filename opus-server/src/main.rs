//! `opusd`: parses flags, sets up tracing, binds the API listener and runs [`opus_server::serve`]
//! until SIGINT or SIGTERM. A second signal forces exit. `opusd runner` runs one build that an
//! opusd assigned ([`opus_server::runner`]); `opusd sites` runs a site replica
//! ([`opus_server::site_replica`]).

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use opus_server::config::{Config, ConfigArgs};
use opus_server::runner::{self, RunnerArgs};
use opus_server::site_replica::{self, ReplicaArgs};
use tracing_subscriber::EnvFilter;

/// The Opus daemon: builds frontend projects, stores versions, deploys and serves them.
#[derive(Debug, Parser)]
#[command(name = "opusd", version = opus_server::version::LONG, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one build that an opusd assigned (what a build Job's pod runs): fetch the source, run
    /// the steps, upload the version, report back. The build's token is read from
    /// OPUS_RUNNER_TOKEN. Exits 0 when the build succeeded, 1 when it failed, 2 when it could not
    /// run or report.
    Runner(RunnerArgs),
    /// Run a site replica: only the site server, with no metadata store. It follows what opusd
    /// writes into the artifact store (`_opus/sites/`) and serves those versions through its own
    /// disk cache; with --api it also follows opusd's events to pick changes up at once. The API
    /// token is read from OPUS_TOKEN or --token-file.
    Sites(ReplicaArgs),
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("OPUS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = run().await {
        eprintln!("opusd: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Runner(args)) => run_runner(args).await,
        Some(Command::Sites(args)) => {
            let shutdown = shutdown_signal()?;
            let token = std::env::var("OPUS_TOKEN").ok();
            return Ok(site_replica::run(args, token, shutdown).await?);
        }
        None => {}
    }
    let config = Config::resolve(cli.config)?;
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another opusd running? try --listen)",
                config.listen
            )
        })?;
    opus_server::serve(listener, config, shutdown).await?;
    Ok(())
}

/// `opusd runner`: runs the build and exits with its outcome (0 succeeded, 1 failed, 2 could not
/// run or report). SIGTERM or SIGINT (the pod is being deleted) stops the steps.
async fn run_runner(args: RunnerArgs) -> ! {
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("signal received: stopping the build");
        stop.cancel();
    });
    let token = std::env::var(runner::TOKEN_ENV).ok();
    match runner::run(&args, token, cancel).await {
        Ok(runner::Outcome::Succeeded) => {
            tracing::info!(build = args.build, "build succeeded");
            std::process::exit(0)
        }
        Ok(runner::Outcome::Failed(reason)) => {
            eprintln!("opusd runner: build {} failed: {reason}", args.build);
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("opusd runner: {e}");
            std::process::exit(2)
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives during start-up is not
/// fatal) and returns a future that completes on the first one; a second one exits at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: stopping (send it again to force exit)");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("opusd: second signal, exiting now");
            std::process::exit(130);
        });
    })
}
