//! `opus status`: what the server is and how it runs.

use opus_core::proto;
use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;
use crate::version::{self, Build};

#[derive(Serialize)]
struct StatusJson {
    server: String,
    version: String,
    data_dir: String,
    store: String,
    executor: String,
    uptime_seconds: u64,
    max_builds: u32,
    running_builds: u32,
    queued_builds: u32,
    projects: u32,
    sites_url: String,
    /// Free bytes where the data directory lives.
    data_dir_free_bytes: Option<u64>,
    /// Free bytes where the default artifact store lives (file:// stores only).
    store_free_bytes: Option<u64>,
    /// Why the server is degraded; absent while it is healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<String>,
    /// The git commit opusd was built from; empty from an opusd that does not say.
    commit: String,
}

pub async fn show(conn: &Connection, global: &GlobalArgs) -> Result<(), CliError> {
    let info = conn
        .system()
        .get_server_info(proto::GetServerInfoRequest {})
        .await?
        .into_inner();
    let server = Build {
        version: &info.version,
        commit: &info.commit,
    };
    if let Some(warning) = version::mismatch_warning(Build::THIS, server) {
        eprintln!("opus: {warning}");
    }
    let s = StatusJson {
        server: conn.server.clone(),
        version: info.version,
        data_dir: info.data_dir,
        store: info.store,
        executor: info.executor,
        uptime_seconds: info.uptime_seconds,
        max_builds: info.max_builds,
        running_builds: info.running_builds,
        queued_builds: info.queued_builds,
        projects: info.projects,
        sites_url: info.sites_url,
        data_dir_free_bytes: info.data_dir_free_bytes,
        store_free_bytes: info.store_free_bytes,
        degraded: Some(info.degraded).filter(|d| !d.is_empty()),
        commit: info.commit,
    };
    match global.output {
        OutputFormat::Json => output::print_json(&s),
        OutputFormat::Table => {
            let free = |bytes: Option<u64>| {
                bytes
                    .map(|b| format!(" ({} free)", super::artifacts::size(b)))
                    .unwrap_or_default()
            };
            let mut lines = vec![
                ("server", s.server.clone()),
                (
                    "version",
                    if s.commit.is_empty() {
                        s.version.clone()
                    } else {
                        format!("{} (commit {})", s.version, s.commit)
                    },
                ),
                (
                    "data dir",
                    format!("{}{}", s.data_dir, free(s.data_dir_free_bytes)),
                ),
                ("store", format!("{}{}", s.store, free(s.store_free_bytes))),
                ("executor", s.executor.clone()),
                (
                    "builds",
                    format!(
                        "{} running, {} queued, limit {}",
                        s.running_builds, s.queued_builds, s.max_builds
                    ),
                ),
                ("projects", s.projects.to_string()),
                ("sites", s.sites_url.clone()),
                ("uptime", output::duration(s.uptime_seconds)),
            ];
            if let Some(why) = &s.degraded {
                lines.push(("health", format!("degraded: {why}")));
            }
            for (k, v) in lines {
                output::print_line(&format!("{k:<10}{v}"))?;
            }
            Ok(())
        }
    }
}
