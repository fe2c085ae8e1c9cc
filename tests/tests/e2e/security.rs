//! Tokens, the refusal to listen publicly without one, and an unreachable server.

use std::process::Command;

use opus_tests::{Daemon, bin, opus_command, run_with_stdin};

#[test]
fn a_token_is_required_when_configured() {
    let mut d = Daemon::start_with(&["--token", "s3cret-token"]);
    let err = d.opus(&["list"]).fails(1).to_owned();
    assert!(err.contains("requires an API token"), "{err}");

    d.token = Some("wrong".into());
    let err = d.opus(&["list"]).fails(1).to_owned();
    assert!(err.contains("token is wrong"), "{err}");

    d.token = Some("s3cret-token".into());
    d.opus(&["list"]).ok();

    // --token on the command line works as well as OPUS_TOKEN.
    d.token = None;
    d.opus(&["--token", "s3cret-token", "status"]).ok();
}

#[test]
fn a_token_file_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").expect("write");
    let mut d = Daemon::start_with(&["--token-file", file.to_str().expect("utf-8")]);
    // Without the token the call is refused, so the file was read (a server without a token
    // would admit it); the file's trailing newline is not part of the token.
    let err = d.opus(&["list"]).fails(1).to_owned();
    assert!(err.contains("requires an API token"), "{err}");
    d.token = Some("from-fil".into());
    let err = d.opus(&["list"]).fails(1).to_owned();
    assert!(err.contains("token is wrong"), "{err}");
    d.token = Some("from-file".into());
    d.opus(&["list"]).ok();
}

#[test]
fn public_listen_without_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("opusd"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("OPUS_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.contains("--token"),
        "{err}"
    );
}

/// Runs opusd with `args` (and a fresh data dir) to its exit, which must come within 30 s without
/// a signal; returns the exit code and stderr.
fn opusd_exit(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(bin("opusd"))
        .args(args)
        .args(["--sites-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("OPUS_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("opusd {args:?} did not exit by itself");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn public_listen_with_a_short_token_is_refused_with_how_to_make_one() {
    let (code, err) = opusd_exit(&["--listen", "0.0.0.0:0", "--token", "short-token"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("11 characters") && err.contains("openssl rand -hex 32"),
        "{err}"
    );
}

#[test]
fn an_unreadable_tls_cert_exits_at_once_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("tls.key");
    std::fs::write(&key, "key").expect("write");
    let cert = dir.path().join("missing.crt");
    let (code, err) = opusd_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot read the tls_cert file {}", cert.display())),
        "{err}"
    );
}

#[test]
fn no_server_running_says_where_and_how() {
    // Port 9 on loopback: nothing listens there.
    let out = run_with_stdin(opus_command("http://127.0.0.1:9", None), "");
    assert_eq!(out.code, 2, "no command is a usage error: {}", out.stderr);
    let mut cmd = opus_command("http://127.0.0.1:9", None);
    cmd.arg("list");
    let out = run_with_stdin(cmd, "");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("cannot reach opusd at http://127.0.0.1:9"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("start it with `opusd`"),
        "{}",
        out.stderr
    );
}

#[test]
fn health_and_unimplemented_answer() {
    let d = Daemon::start_with(&["--token", "t"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(d.server.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        // Health needs no token (probes cannot send one).
        let mut health = tonic_health_client(channel.clone());
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(resp.is_ok(), "{resp:?}");
        // The runner service is served without the API token, and refuses a call without its
        // build's token.
        let mut runner =
            opus_core::proto::runner_service_client::RunnerServiceClient::new(channel.clone());
        let err = runner
            .get_assignment(opus_core::proto::GetAssignmentRequest::default())
            .await
            .expect_err("no build token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("build's token"), "{}", err.message());
        // A service this opusd does not serve answers Unimplemented with a message.
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let err = grpc
            .unary::<_, opus_core::proto::PushLogsResponse, _>(
                tonic::Request::new(opus_core::proto::GetAssignmentRequest::default()),
                tonic::codegen::http::uri::PathAndQuery::from_static("/opus.v1.NoSuchService/Call"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("not served");
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert!(
            err.message().contains("not implemented"),
            "{}",
            err.message()
        );
    });
}

fn tonic_health_client(
    channel: tonic::transport::Channel,
) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
    tonic_health::pb::health_client::HealthClient::new(channel)
}
