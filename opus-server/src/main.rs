//! `opusd`: parses flags, sets up tracing, binds the API listener and runs [`opus_server::serve`]
//! until SIGINT or SIGTERM. A second signal forces exit.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use opus_server::config::{Config, ConfigArgs};
use tracing_subscriber::EnvFilter;

/// The Opus daemon: builds frontend projects, stores versions, deploys and serves them.
#[derive(Debug, Parser)]
#[command(name = "opusd", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
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
    let config = Config::resolve(cli.config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another opusd running? try --listen)",
                config.listen
            )
        })?;
    // Registered before serving starts, so a signal during start-up stops opusd cleanly instead
    // of killing it.
    let signals = Signals::register()?;
    opus_server::serve(listener, config, shutdown_signal(signals)).await?;
    Ok(())
}

/// SIGINT and SIGTERM streams, registered up front.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once.
async fn shutdown_signal(mut signals: Signals) {
    signals.next().await;
    tracing::info!("signal received: stopping (send it again to force exit)");
    tokio::spawn(async move {
        signals.next().await;
        eprintln!("opusd: second signal, exiting now");
        std::process::exit(130);
    });
}
