//! Checks against a real HTTP listener on loopback and real shell processes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opus_core::recipe::checks::{Check, CheckKind, HttpCheckSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;

/// Lines as they came: (step, stream, text).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(String, String, String)>>>);

impl LogSink for Lines {
    fn line(&self, step: &str, stream: &str, text: &str) {
        self.0
            .lock()
            .expect("lines")
            .push((step.into(), stream.into(), text.into()));
    }
}

impl Lines {
    fn text(&self) -> String {
        self.0
            .lock()
            .expect("lines")
            .iter()
            .map(|(s, _, t)| format!("{s}: {t}\n"))
            .collect()
    }
}

/// A server answering every request with `status` and `body`, or never answering when
/// `status` is 0; its base URL under `localhost` (as site hosts are).
async fn server(status: u16, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://1-0-3--v--web.localhost:{port}/")
}

fn http(status: u16, contains: Option<&str>, timeout: Duration) -> Check {
    Check {
        name: "smoke".into(),
        kind: CheckKind::Http(HttpCheckSpec {
            path: "/".into(),
            status,
            contains: contains.map(str::to_owned),
        }),
        timeout,
    }
}

fn shell(steps: &[&str], timeout: Duration) -> Check {
    Check {
        name: "smoke".into(),
        kind: CheckKind::Shell(steps.iter().map(|s| (*s).to_owned()).collect()),
        timeout,
    }
}

async fn run(check: &Check, url: &str, lines: &Lines) -> CheckOutcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = BTreeMap::new();
    let place = CheckPlace {
        dir: dir.path(),
        containment: Containment::Sweep,
        env: &env,
    };
    run_check(check, url, &place, lines, &CancellationToken::new()).await
}

#[tokio::test]
async fn an_http_check_passes_on_the_status_and_the_string() {
    let url = server(200, "<div id=\"root\"></div>").await;
    let lines = Lines::default();
    let check = http(200, Some("<div id=\"root\">"), Duration::from_secs(5));
    assert_eq!(run(&check, &url, &lines).await, CheckOutcome::Passed);
    assert!(
        lines.text().contains("check smoke/check: passed"),
        "{}",
        lines.text()
    );
}

#[tokio::test]
async fn an_http_check_fails_on_another_status_or_a_missing_string() {
    let url = server(200, "<p>hello</p>").await;
    let lines = Lines::default();
    let outcome = run(
        &http(200, Some("root"), Duration::from_secs(5)),
        &url,
        &lines,
    )
    .await;
    let CheckOutcome::Failed { reason, output } = outcome else {
        panic!("passed: {}", lines.text());
    };
    assert!(reason.contains("without \"root\""), "{reason}");
    assert!(output.contains("<p>hello</p>"), "{output}");
    let url = server(404, "gone").await;
    let outcome = run(&http(200, None, Duration::from_secs(5)), &url, &lines).await;
    assert!(
        matches!(&outcome, CheckOutcome::Failed { reason, .. } if reason.contains("answered 404, expected 200")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_http_check_that_gets_no_answer_times_out() {
    let url = server(0, "").await;
    let started = Instant::now();
    let outcome = run(
        &http(200, None, Duration::from_millis(300)),
        &url,
        &Lines::default(),
    )
    .await;
    assert!(
        matches!(&outcome, CheckOutcome::Failed { reason, .. } if reason.contains("timed out after 300ms")),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_shell_check_gets_the_url_and_its_lines_are_labelled() {
    let lines = Lines::default();
    let check = shell(
        &[
            "echo \"checking $OPUS_URL\"",
            "test \"$OPUS_URL\" = http://x.localhost/",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(
        run(&check, "http://x.localhost/", &lines).await,
        CheckOutcome::Passed
    );
    let text = lines.text();
    assert!(
        text.contains("check smoke/step 1: checking http://x.localhost/"),
        "{text}"
    );
    assert!(text.contains("check smoke/step 2: $ test"), "{text}");
    let outcome = run(&check, "http://y.localhost/", &lines).await;
    assert!(
        matches!(&outcome, CheckOutcome::Failed { reason, output } if reason.contains("step 2") && output.contains("checking http://y.localhost/")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_hanging_shell_check_is_killed_at_its_timeout() {
    let marker = tempfile::tempdir().expect("tempdir");
    let pid_file = marker.path().join("pid");
    let step = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let started = Instant::now();
    let outcome = run(
        &shell(&[&step], Duration::from_millis(500)),
        "http://x.localhost/",
        &Lines::default(),
    )
    .await;
    assert!(
        matches!(&outcome, CheckOutcome::Failed { reason, .. } if reason.contains("timed out after 500ms (checks.smoke.timeout")),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    // The sleep it left is gone (killed, and reaped by init).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the check's sleep {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_cancelled_check_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = BTreeMap::new();
    let place = CheckPlace {
        dir: dir.path(),
        containment: Containment::Sweep,
        env: &env,
    };
    let cancel = CancellationToken::new();
    cancel.cancel();
    let check = shell(&["sleep 30"], Duration::from_secs(60));
    let outcome = run_check(
        &check,
        "http://x.localhost/",
        &place,
        &Lines::default(),
        &cancel,
    )
    .await;
    assert_eq!(outcome, CheckOutcome::Cancelled);
}
