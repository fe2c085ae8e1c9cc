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
    opus_server::serve(listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once. The handlers are
/// installed before this returns, so a signal that comes before the future is first polled (while
/// the store opens) still stops opusd cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let first = Signals::install();
    async move {
        first.wait().await;
        tracing::info!("signal received: stopping (send it again to force exit)");
        tokio::spawn(async {
            Signals::install().wait().await;
            eprintln!("opusd: second signal, exiting now");
            std::process::exit(130);
        });
    }
}

/// SIGINT and SIGTERM streams, registered on creation.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn wait(mut self) {
        let term = async {
            match &mut self.term {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let int = async {
            match &mut self.int {
                Some(s) => {
                    s.recv().await;
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::select! {
            _ = term => {}
            _ = int => {}
        }
    }
}
