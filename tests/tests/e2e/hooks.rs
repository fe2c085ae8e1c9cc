//! Outgoing hooks against a real HTTP receiver: order, retries under one delivery id, restarts,
//! 500 and 410 answers; and `opus events`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use hmac::{Hmac, Mac};
use opus_tests::receiver::{Received, Receiver};
use opus_tests::{Daemon, opus_command};
use sha2::Sha256;

/// Fast retries so that tests take seconds.
const FAST: &[(&str, &str)] = &[
    ("OPUS_HOOK_RETRY_BASE_MS", "50"),
    ("OPUS_HOOK_RETRY_CAP_MS", "200"),
    ("OPUS_HOOK_TIMEOUT_MS", "2000"),
];

const WAIT: Duration = Duration::from_secs(20);

fn add_project(d: &Daemon, name: &str) {
    d.opus(&["add", name, "https://example.com/site.git"]).ok();
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// The distinct deliveries, in the order first received.
fn distinct(got: &[Received]) -> Vec<Received> {
    let mut out: Vec<Received> = Vec::new();
    for r in got {
        if !out.iter().any(|o| o.delivery == r.delivery) {
            out.push(r.clone());
        }
    }
    out
}

/// Polls `opus hook deliveries <id>` until `done` holds for them; panics after [`WAIT`].
fn wait_for_deliveries(
    d: &Daemon,
    id: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ds = d.opus(&["hook", "deliveries", id, "-o", "json"]).json();
        let ds = ds.as_array().cloned().unwrap_or_default();
        if !ds.is_empty() && done(&ds) {
            return ds;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries of {id} never got there: {ds:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn delivered_projects(got: &[Received]) -> Vec<String> {
    distinct(got)
        .iter()
        .filter(|r| r.event == "project.added")
        .map(|r| r.json()["project"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn receiver_down_then_back_gets_every_event_in_order_signed() {
    let mut rx = Receiver::start();
    let d = Daemon::start_with_env(&[], FAST);
    let hook = d
        .opus(&[
            "hook",
            "add",
            "--all",
            &rx.url(),
            "--events",
            "project.added",
            "--secret",
            "s3cret",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(hook["signed"], true);
    assert_eq!(hook["project"], "");
    rx.stop();
    for name in ["a1", "a2", "a3", "a4"] {
        add_project(&d, name);
    }
    // While it is down the first delivery is retried and the others wait behind it.
    let id = hook["id"].as_str().expect("id");
    let ds = wait_for_deliveries(&d, id, |ds| ds[0]["attempts"].as_u64().unwrap_or(0) >= 2);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["state"], "pending");
    assert!(ds[0]["attempts"].as_u64().unwrap_or(0) >= 2, "{ds:?}");
    assert!(ds[0]["last_error"].as_str().is_some_and(|e| !e.is_empty()));

    rx.restart();
    let got = rx.wait_for(WAIT, |g| delivered_projects(g).len() == 4);
    assert_eq!(delivered_projects(&got), ["a1", "a2", "a3", "a4"]);
    let mut seqs = vec![];
    for r in distinct(&got) {
        assert_eq!(
            r.signature.as_deref(),
            Some(sign("s3cret", &r.body).as_str())
        );
        let body = r.json();
        assert_eq!(body["id"], r.delivery.as_str());
        assert_eq!(body["event"], "project.added");
        seqs.push(body["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let ds = d.opus(&["hook", "deliveries", id, "-o", "json"]).json();
    assert!(
        ds.as_array()
            .is_some_and(|a| a.len() == 4 && a.iter().all(|x| x["state"] == "delivered")),
        "{ds}"
    );
}

#[test]
fn sigkill_with_deliveries_pending_delivers_after_restart() {
    let mut rx = Receiver::start();
    let mut d = Daemon::start_with_env(&[], FAST);
    let hook = d
        .opus(&[
            "hook",
            "add",
            "--all",
            &rx.url(),
            "--events",
            "project.*",
            "-o",
            "json",
        ])
        .json();
    let id = hook["id"].as_str().expect("id").to_owned();
    rx.stop();
    for name in ["k1", "k2", "k3"] {
        add_project(&d, name);
    }
    // The crash comes once the last project (and its event, in the same transaction) is on disk.
    d.wait_until_on_disk("{\"name\":\"k3\",\"source\"", 30);
    d.kill();
    rx.restart();
    d.restart();
    let got = rx.wait_for(WAIT, |g| delivered_projects(g).len() == 3);
    assert_eq!(delivered_projects(&got), ["k1", "k2", "k3"]);
    // Nothing is delivered twice once accepted: once every delivery is recorded delivered,
    // nothing is left to send.
    wait_for_deliveries(&d, &id, |ds| {
        ds.iter().filter(|x| x["state"] == "delivered").count() == 3
    });
    let all = rx.received();
    assert_eq!(
        all.len(),
        distinct(&all).len(),
        "no repeats after acceptance"
    );
}

#[test]
fn answer_500_is_retried_under_the_same_id_and_410_disables() {
    let rx = Receiver::start();
    let d = Daemon::start_with_env(&[], FAST);
    add_project(&d, "web");
    let hook = d
        .opus(&["hook", "add", "web", &rx.url(), "-o", "json"])
        .json();
    let id = hook["id"].as_str().expect("id").to_owned();
    assert_eq!(hook["signed"], false);

    rx.answer_next(&[500, 502, 503]);
    d.opus(&["secret", "set", "web", "TOKEN", "--value", "xxxx"])
        .ok();
    let got = rx.wait_for(WAIT, |g| g.iter().any(|r| r.answered == 200));
    assert_eq!(got.len(), 4, "three failures then success");
    assert!(got.iter().all(|r| r.delivery == got[0].delivery), "one id");
    assert!(got[0].signature.is_none(), "unsigned without a secret");
    assert_eq!(got[0].event, "secret.set");

    rx.answer(410);
    d.opus(&["secret", "set", "web", "OTHER", "--value", "yyyy"])
        .ok();
    rx.wait_for(WAIT, |g| g.iter().any(|r| r.answered == 410));
    let listed = d.opus(&["hook", "list", "web", "-o", "json"]).json();
    let wait_disabled = std::time::Instant::now() + WAIT;
    let mut listed = listed;
    while listed[0]["enabled"] != false && std::time::Instant::now() < wait_disabled {
        std::thread::sleep(Duration::from_millis(20));
        listed = d.opus(&["hook", "list", "web", "-o", "json"]).json();
    }
    assert_eq!(listed[0]["enabled"], false, "{listed}");
    rx.answer(200);
    // A second hook on the same receiver witnesses that the next event has been dispatched.
    let witness = d
        .opus(&[
            "hook",
            "add",
            "web",
            &rx.url(),
            "--events",
            "secret.set",
            "-o",
            "json",
        ])
        .json();
    let witness = format!("{}-", witness["id"].as_str().expect("id"));
    let of_hook = |got: &[Received]| {
        got.iter()
            .filter(|r| r.delivery.starts_with(&format!("{id}-")))
            .count()
    };
    let before = of_hook(&rx.received());
    d.opus(&["secret", "set", "web", "THIRD", "--value", "zzzz"])
        .ok();
    let got = rx.wait_for(WAIT, |g| {
        g.iter().any(|r| {
            r.delivery.starts_with(&witness) && String::from_utf8_lossy(&r.body).contains("THIRD")
        })
    });
    assert_eq!(of_hook(&got), before, "a disabled hook gets nothing");
    let ds = d.opus(&["hook", "deliveries", &id, "-o", "json"]).json();
    assert_eq!(ds[0]["state"], "disabled");
    assert_eq!(ds[0]["last_status"], 410);
    assert_eq!(ds[1]["state"], "delivered");
    assert_eq!(ds[1]["attempts"], 4);
}

#[test]
fn hook_commands_and_their_errors() {
    let rx = Receiver::start();
    let d = Daemon::start_with_env(&[], FAST);
    add_project(&d, "web");

    // Errors: each one line that says what is wrong.
    let err = d
        .opus(&["hook", "add", "web", "ftp://x"])
        .fails(1)
        .to_owned();
    assert!(err.contains("http://"), "{err}");
    let err = d
        .opus(&["hook", "add", "nope", &rx.url()])
        .fails(1)
        .to_owned();
    assert!(err.contains("no project named"), "{err}");
    let err = d
        .opus(&["hook", "add", "web", &rx.url(), "--events", "Build"])
        .fails(1)
        .to_owned();
    assert!(err.contains("invalid event pattern"), "{err}");
    let err = d
        .opus(&["hook", "add", "web", "--all", &rx.url()])
        .fails(1)
        .to_owned();
    assert!(err.contains("only the URL"), "{err}");
    let err = d.opus(&["hook", "remove", "99"]).fails(1).to_owned();
    assert!(err.contains("no hook 99"), "{err}");
    let err = d.opus(&["hook", "remove", "abc"]).fails(1).to_owned();
    assert!(err.contains("invalid hook id"), "{err}");
    d.opus(&["hook", "deliveries", "99"]).fails(1);
    d.opus(&["hook", "test", "99"]).fails(1);
    let err = d.opus(&["hook", "list", "nope"]).fails(1).to_owned();
    assert!(err.contains("no project named"), "{err}");

    let out = d
        .opus(&[
            "hook",
            "add",
            "web",
            &rx.url(),
            "--format",
            "slack",
            "--events",
            "build.*,deploy",
        ])
        .ok()
        .to_owned();
    assert!(out.contains("added hook"), "{out}");
    let table = d.opus(&["hook", "list"]).ok().to_owned();
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("slack") && table.contains("build.*,deploy"),
        "{table}"
    );

    // A ping: delivered, as a Slack message.
    let ping = d.opus(&["hook", "test", "1", "-o", "json"]).json();
    assert_eq!(ping[0]["state"], "delivered");
    let got = rx.wait_for(WAIT, |g| !g.is_empty());
    assert_eq!(got[0].event, "ping");
    assert!(
        got[0].json()["text"]
            .as_str()
            .is_some_and(|t| t.contains("works"))
    );
    // A ping to a receiver that refuses fails the command.
    rx.answer(500);
    let err = d.opus(&["hook", "test", "1"]).fails(1).to_owned();
    assert!(err.contains("HTTP 500"), "{err}");
    // Both pings are in the hook's deliveries like any other delivery, newest first.
    let ds = d.opus(&["hook", "deliveries", "1", "-o", "json"]).json();
    let listed: Vec<_> = ds
        .as_array()
        .expect("array")
        .iter()
        .map(|d| {
            (
                d["event"].clone(),
                d["state"].clone(),
                d["last_status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("ping".into(), "failed".into(), 500.into()),
            ("ping".into(), "delivered".into(), 200.into())
        ],
        "{ds}"
    );
    let table = d.opus(&["hook", "deliveries", "1"]).ok().to_owned();
    let pings: Vec<_> = table.lines().filter(|l| l.contains(" ping ")).collect();
    assert_eq!(pings.len(), 2, "{table}");
    assert!(
        pings[0].trim_end().ends_with("HTTP 500"),
        "tried once, not retried: {table}"
    );

    d.opus(&["hook", "remove", "1"]).ok();
    assert_eq!(
        d.opus(&["hook", "list", "-o", "json"]).json(),
        serde_json::json!([])
    );

    // Removing a project removes its hooks.
    d.opus(&["hook", "add", "web", &rx.url()]).ok();
    d.opus(&["remove", "web", "--yes"]).ok();
    assert_eq!(
        d.opus(&["hook", "list", "-o", "json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn events_prints_the_log_and_follows() {
    let d = Daemon::start();
    add_project(&d, "web");
    add_project(&d, "api");
    let out = d.opus(&["events", "-o", "json"]).ok().to_owned();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["type"], "project.added");
    assert_eq!(lines[0]["project"], "web");
    assert_eq!(lines[1]["payload"]["name"], "api");
    let only = d.opus(&["events", "--project", "api"]).ok().to_owned();
    assert_eq!(only.lines().count(), 1, "{only}");
    assert!(
        only.contains("project.added") && only.contains("api"),
        "{only}"
    );
    let err = d.opus(&["events", "--project", "nope"]).fails(1).to_owned();
    assert!(err.contains("no project named"), "{err}");

    // -f: prints what exists, then new events as they happen.
    let mut cmd = opus_command(&d.server, None);
    cmd.args(["events", "-f", "--from", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("opus events -f starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("api"), "{first}");
    add_project(&d, "new");
    let next = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        next.contains("project.added") && next.contains("new"),
        "{next}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn events_tail_starts_with_the_newest_and_follows() {
    let d = Daemon::start();
    for name in ["one", "two", "three", "four"] {
        add_project(&d, name);
    }
    let projects = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).expect("NDJSON");
                e["project"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    let out = d
        .opus(&["events", "--tail", "2", "-o", "json"])
        .ok()
        .to_owned();
    assert_eq!(projects(&out), ["three", "four"]);
    let out = d
        .opus(&["events", "--tail", "10", "-o", "json"])
        .ok()
        .to_owned();
    assert_eq!(projects(&out), ["one", "two", "three", "four"]);
    // With a project: its newest events, not the log's.
    d.opus(&["secret", "set", "two", "TOKEN", "--value", "s3cret"])
        .ok();
    let out = d
        .opus(&["events", "--tail", "1", "--project", "one", "-o", "json"])
        .ok()
        .to_owned();
    assert_eq!(projects(&out), ["one"]);
    let out = d.opus(&["events", "--tail", "0"]).ok().to_owned();
    assert_eq!(out, "");
    let err = d
        .opus(&["events", "--tail", "2", "--from", "1"])
        .fails(2)
        .to_owned();
    assert!(err.contains("cannot be used with"), "{err}");

    // -f --tail 1: the newest event, then new ones as they happen.
    let mut cmd = opus_command(&d.server, None);
    cmd.args(["events", "-f", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("opus events -f starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.contains("secret.set") && first.contains("two"),
        "{first}"
    );
    add_project(&d, "five");
    let next = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        next.contains("project.added") && next.contains("five"),
        "{next}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
