//! Which build opus and opusd are: `opus status` shows opusd's version and commit, and warns on
//! stderr when the CLI is another build.

use opus_core::proto::system_service_server::{SystemService, SystemServiceServer};
use opus_core::proto::{GetServerInfoRequest, ServerInfo};
use opus_tests::{Daemon, Run};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The opus and opusd of one build: status shows the server's commit, which is the CLI's, and
/// stderr stays empty.
#[test]
fn status_of_the_same_build_warns_of_nothing() {
    let d = Daemon::start();
    let cli = d.opus(&["version", "-o", "json"]).json();
    let commit = cli["commit"].as_str().expect("commit").to_owned();
    assert!(!commit.is_empty(), "{cli}");

    let json_run = d.opus(&["status", "-o", "json"]);
    let json = json_run.json();
    assert_eq!(json["version"], cli["version"], "{json}");
    assert_eq!(json["commit"], cli["commit"], "{json}");
    assert_eq!(json_run.stderr, "");

    let table = d.opus(&["status"]);
    let version_line = format!(
        "version   {} (commit {commit})",
        cli["version"].as_str().expect("version")
    );
    assert!(table.ok().contains(&version_line), "{}", table.stdout);
    assert_eq!(table.stderr, "");
}

/// A server that answers `GetServerInfo` as an opusd of another build would (its other RPCs are
/// not needed by `opus status`).
struct OtherBuild;

#[tonic::async_trait]
impl SystemService for OtherBuild {
    async fn get_server_info(
        &self,
        _: Request<GetServerInfoRequest>,
    ) -> Result<Response<ServerInfo>, Status> {
        Ok(Response::new(ServerInfo {
            version: "0.0.1".into(),
            commit: "0123456789ab".into(),
            ..ServerInfo::default()
        }))
    }
}

/// The real `opus` against a server of another build: the status is printed as usual, and one
/// line on stderr names both builds.
#[test]
fn status_against_another_build_warns_on_one_stderr_line() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(SystemServiceServer::new(OtherBuild))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let opus = |args: &[&str]| {
        let mut cmd = opus_tests::opus_command(&format!("http://{addr}"), None);
        cmd.args(args);
        opus_tests::run_with_stdin(cmd, "")
    };
    let cli = opus(&["version", "-o", "json"]).json();
    let run: Run = opus(&["status"]);
    assert!(
        run.ok().contains("version   0.0.1 (commit 0123456789ab)"),
        "{}",
        run.stdout
    );
    let this = match (cli["version"].as_str(), cli["commit"].as_str()) {
        (Some(version), Some("unknown")) => version.to_owned(),
        (Some(version), Some(commit)) => format!("{version} (commit {commit})"),
        _ => panic!("`opus version -o json`: {cli}"),
    };
    assert_eq!(
        run.stderr,
        format!(
            "opus: warning: this opus is {this} but opusd is 0.0.1 (commit 0123456789ab); \
             use the opus built with this opusd\n"
        )
    );
}
