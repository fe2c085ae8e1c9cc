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
