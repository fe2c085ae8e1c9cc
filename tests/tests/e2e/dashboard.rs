//! The web dashboard over plain HTTP, through the real opusd: every page's status, user values
//! shown as text, the login form and its cookie, CSRF refusal, the viewer token's refusal, and
//! the actions behind their confirmation pages. (The same in a real browser:
//! `dashboard_browser`.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use opus_tests::{Daemon, GitRepo, HttpResponse, http, http_with_body};

const TOKEN: &str = "dashboard-api-token-1234";
const VIEWER: &str = "dashboard-viewer-token-5678";

/// `GET path` on the API listener, with a session cookie when given.
pub(crate) fn get(d: &Daemon, path: &str, cookie: Option<&str>) -> HttpResponse {
    let header = cookie.map(|c| format!("Cookie: {c}"));
    let extra: Vec<&str> = header.iter().map(String::as_str).collect();
    http(&d.server, "GET", "127.0.0.1", path, &extra)
}

/// A form's fields, URL-encoded.
fn form_body(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST path` with a URL-encoded form.
pub(crate) fn post(
    d: &Daemon,
    path: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> HttpResponse {
    let header = cookie.map(|c| format!("Cookie: {c}"));
    let mut extra = vec!["Content-Type: application/x-www-form-urlencoded"];
    extra.extend(header.iter().map(String::as_str));
    http_with_body(
        &d.server,
        "POST",
        "127.0.0.1",
        path,
        &extra,
        form_body(fields).as_bytes(),
    )
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {page}"))
        + "name=\"csrf\" value=\"".len();
    page[start..].split('"').next().expect("a value").to_owned()
}

/// Logs in with `token`; returns the `Cookie` value of the session.
fn login(d: &Daemon, token: &str) -> String {
    let r = post(d, "/login", None, &[("token", token), ("next", "/")]);
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.header("set-cookie");
    assert!(set.starts_with("opus_session="), "{set}");
    set.split(';').next().expect("name=value").to_owned()
}

/// A folder with `index.html` saying `version <v>`.
fn site(d: &Daemon, version: &str) -> PathBuf {
    let dir = d.root.path().join(format!("site-{version}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("index.html"), format!("version {version}")).expect("write");
    dir
}

/// Project `web` with versions 1.0.3 and 1.0.4 published, 1.0.3 then 1.0.4 deployed to
/// production.
fn with_two_releases(d: &Daemon) {
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    for v in ["1.0.3", "1.0.4"] {
        d.publish("web", v, &site(d, v));
        d.opus(&["deploy", "web", v]).ok();
    }
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.4");
}

#[test]
fn every_page_answers_and_user_values_are_text() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        "build:\n  steps:\n    - echo '<script>alert(1)</script>'\n    - mkdir -p dist && echo hi > dist/index.html\n  output: dist\n",
    );
    repo.commit("first");
    let evil_ref = "<script>alert(2)</script>";
    repo.git(&["branch", evil_ref]);
    d.opus(&["add", "web", &repo.url()]).ok();
    let n = d.trigger(&["web", evil_ref]);
    d.wait_for_state("web", n, "succeeded", 60);

    for (path, status) in [
        ("/", 200),
        ("/?q=we", 200),
        ("/?q=w*&page=2", 200),
        ("/queue", 200),
        ("/projects/web", 200),
        ("/projects/web?state=succeeded&page=1", 200),
        (&format!("/projects/web/builds/{n}") as &str, 200),
        ("/projects/nope", 404),
        ("/projects/web/builds/99", 404),
        ("/projects/Not_A_Name", 400),
        ("/projects/web?state=sleeping", 400),
        ("/login", 303),
        ("/no/such/page", 404),
    ] {
        let r = get(&d, path, None);
        assert_eq!(r.status, status, "GET {path}: {}", r.text());
    }
    let page = get(&d, &format!("/projects/web/builds/{n}"), None);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("x-frame-options"), "DENY");
    let text = page.text();
    assert!(
        text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the log line is shown as text: {text}"
    );
    assert!(
        text.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "the ref is shown as text"
    );
    for path in ["/", "/projects/web", &format!("/projects/web/builds/{n}")] {
        let text = get(&d, path, None).text();
        assert!(
            !text.contains("<script>alert"),
            "{path} lets markup through: {text}"
        );
    }
    assert!(
        get(&d, "/projects/web", None)
            .text()
            .contains("&lt;script&gt;alert(2)")
    );

    // The assets the pages name: long-cached under their hashed names.
    let css = text
        .split("href=\"")
        .find_map(|s| s.strip_prefix("/assets/"))
        .and_then(|s| s.split('"').next())
        .expect("a stylesheet link");
    let r = get(&d, &format!("/assets/{css}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(r.header("content-type").starts_with("text/css"));
    assert_eq!(get(&d, "/assets/app.000000000000.css", None).status, 404);
    // Without a token, only loopback names are answered (a rebound name of another site is not).
    let r = http(&d.server, "GET", "evil.example", "/", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("loopback"), "{}", r.text());
    assert_eq!(http(&d.server, "GET", "localhost", "/", &[]).status, 200);
    // gRPC keeps its paths: the CLI still works beside the pages.
    d.opus(&["list"]).ok();
}

#[test]
fn a_token_asks_for_login_and_actions_need_the_csrf_token() {
    let mut d = Daemon::start_with(&["--token", TOKEN, "--viewer-token", VIEWER]);
    d.token = Some(TOKEN.into());
    with_two_releases(&d);

    let r = get(&d, "/projects/web", None);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/login?next=%2Fprojects%2Fweb");
    assert_eq!(get(&d, "/login", None).status, 200);
    let wrong = post(&d, "/login", None, &[("token", "nope"), ("next", "/")]);
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_empty());
    assert!(wrong.text().contains("not this opusd"), "{}", wrong.text());

    let r = post(
        &d,
        "/login",
        None,
        &[("token", TOKEN), ("next", "//evil.example/")],
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/", "never another site");
    let set = r.header("set-cookie").to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    assert!(!set.contains("Secure"), "no Secure without TLS: {set}");
    let cookie = set.split(';').next().expect("name=value").to_owned();
    assert_eq!(get(&d, "/", Some("opus_session=forged")).status, 303);

    let confirm = get(
        &d,
        "/projects/web/environments/production/rollback",
        Some(&cookie),
    );
    assert_eq!(confirm.status, 200, "{}", confirm.text());
    let page = confirm.text();
    assert!(
        page.contains("<strong>production</strong> goes from <strong>1.0.4</strong> back to <strong>1.0.3</strong>"),
        "{page}"
    );
    assert!(!page.contains(TOKEN), "the token is never rendered");
    let csrf = csrf_of(&page);

    let path = "/projects/web/environments/production/rollback";
    for fields in [
        vec![("from", "1.0.4")],
        vec![("csrf", "forged"), ("from", "1.0.4")],
    ] {
        let r = post(&d, path, Some(&cookie), &fields);
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("CSRF"), "{}", r.text());
    }
    let r = post(&d, path, None, &[("csrf", &csrf), ("from", "1.0.4")]);
    assert_eq!(r.status, 401, "no session, no action");
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.4");

    // Another deploy since the confirmation: nothing happens.
    let r = post(
        &d,
        path,
        Some(&cookie),
        &[("csrf", &csrf), ("from", "1.0.2")],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.4");

    let r = post(
        &d,
        path,
        Some(&cookie),
        &[("csrf", &csrf), ("from", "1.0.4")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("back to <strong>1.0.3</strong>"),
        "{}",
        r.text()
    );
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.3");
    let releases = d.opus(&["releases", "web", "-o", "json"]).json();
    assert_eq!(releases[0]["actor"], "dashboard", "{releases}");
    assert_eq!(releases[0]["version"], "1.0.3");

    // The rollback pinned production; unpin it from its confirmation page.
    let unpin = "/projects/web/environments/production/unpin";
    let r = get(&d, unpin, Some(&cookie));
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("keeps serving <strong>1.0.3</strong>"),
        "{}",
        r.text()
    );
    assert_eq!(post(&d, unpin, Some(&cookie), &[]).status, 403);
    let r = post(&d, unpin, Some(&cookie), &[("csrf", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let env = d.opus(&["env", "list", "web", "-o", "json"]).json();
    assert_eq!(env[0]["pinned"], false, "{env}");

    // Logging out ends the session.
    let r = post(&d, "/logout", Some(&cookie), &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(get(&d, "/", Some(&cookie)).status, 303);
}

#[test]
fn the_viewer_token_sees_everything_and_acts_on_nothing() {
    let mut d = Daemon::start_with(&["--token", TOKEN, "--viewer-token", VIEWER]);
    d.token = Some(TOKEN.into());
    with_two_releases(&d);
    let cookie = login(&d, VIEWER);
    for path in ["/", "/projects/web", "/queue"] {
        let r = get(&d, path, Some(&cookie));
        assert_eq!(r.status, 200, "{path}");
        assert!(r.text().contains("read-only"), "{path} says so");
        assert!(!r.text().contains(VIEWER) && !r.text().contains(TOKEN));
    }
    assert!(
        !get(&d, "/projects/web", Some(&cookie))
            .text()
            .contains("Roll back…"),
        "no action links for a viewer"
    );
    let path = "/projects/web/environments/production/rollback";
    let r = get(&d, path, Some(&cookie));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("viewer token"), "{}", r.text());
    let csrf = csrf_of(&get(&d, "/", Some(&cookie)).text());
    let r = post(&d, path, Some(&cookie), &[("csrf", &csrf)]);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post(
        &d,
        "/projects/web/deploy",
        Some(&cookie),
        &[("csrf", &csrf), ("version", "1.0.3"), ("env", "production")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.4");
}

#[test]
fn deploy_trigger_and_cancel_behind_their_confirmation_pages() {
    let d = Daemon::start();
    with_two_releases(&d);
    // Without a token nobody logs in, but actions still carry the CSRF token.
    let confirm = get(
        &d,
        "/projects/web/deploy?version=1.0.3&env=production",
        None,
    );
    assert_eq!(confirm.status, 200);
    let page = confirm.text();
    assert!(
        page.contains(
            "<strong>production</strong> goes from <strong>1.0.4</strong> to <strong>1.0.3</strong>"
        ),
        "{page}"
    );
    let csrf = csrf_of(&page);
    assert_eq!(
        get(
            &d,
            "/projects/web/deploy?version=9.9.9&env=production",
            None
        )
        .status,
        404
    );

    // A version's files, and its diff against another, from the two manifests.
    let r = get(&d, "/projects/web/versions/1.0.4?against=1.0.3", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains("0 added, 1 changed, 0 removed"), "{text}");
    assert!(text.contains("<code>index.html</code>"), "{text}");
    assert_eq!(get(&d, "/projects/web/versions/0.0.1", None).status, 404);
    assert_eq!(
        get(&d, "/projects/web/versions/1.0.4?against=0.0.1", None).status,
        404
    );

    let deploy = [("version", "1.0.3"), ("env", "staging")];
    assert_eq!(post(&d, "/projects/web/deploy", None, &deploy).status, 403);
    let r = post(
        &d,
        "/projects/web/deploy",
        None,
        &[("csrf", &csrf), ("version", "1.0.3"), ("env", "staging")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text()
            .contains("<strong>staging</strong> now serves <strong>1.0.3</strong>")
    );
    assert_eq!(d.get("staging--web.localhost", "/").text(), "version 1.0.3");
    let remove = "/projects/web/environments/staging/remove";
    let r = get(&d, remove, None);
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("stops serving <strong>1.0.3</strong>"),
        "{}",
        r.text()
    );
    let r = post(&d, remove, None, &[("csrf", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get("staging--web.localhost", "/").status, 404);
    assert_eq!(get(&d, remove, None).status, 404, "no such environment now");
    let r = post(
        &d,
        "/projects/web/deploy",
        None,
        &[("csrf", &csrf), ("version", "9.9.9"), ("env", "staging")],
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // A build whose step waits for a file: trigger it from the dashboard, then cancel it.
    let src = d.root.path().join("src");
    let gate = d.root.path().join("gate");
    std::fs::write(
        src.join("opus.yml"),
        format!(
            "build:\n  steps:\n    - while [ ! -f {} ]; do sleep 0.05; done\n  output: dist\n",
            gate.display()
        ),
    )
    .expect("write opus.yml");
    let confirm = get(&d, "/projects/web/trigger?ref=&version=2.0.0", None);
    assert_eq!(confirm.status, 200);
    assert!(confirm.text().contains("as version <strong>2.0.0</strong>"));
    let r = post(
        &d,
        "/projects/web/trigger",
        None,
        &[("csrf", &csrf), ("ref", ""), ("version", "2.0.0")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("web#1 is queued"), "{}", r.text());
    d.wait_for_state("web", 1, "running", 30);
    assert_eq!(d.build("web", 1)["trigger"], "dashboard");
    assert_eq!(get(&d, "/projects/web/builds/1/cancel", None).status, 200);
    let r = post(
        &d,
        "/projects/web/builds/1/cancel",
        None,
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    d.wait_for_state("web", 1, "cancelled", 30);
    let r = post(
        &d,
        "/projects/web/builds/1/cancel",
        None,
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn a_running_build_streams_its_log_as_server_sent_events() {
    use std::io::{BufRead, BufReader, Write};
    let d = Daemon::start();
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let gate = d.root.path().join("gate");
    std::fs::write(
        src.join("opus.yml"),
        format!(
            "build:\n  steps:\n    - echo before-gate; while [ ! -f {} ]; do sleep 0.05; done; echo 'after <b>gate</b>'\n    - mkdir -p dist && echo hi > dist/index.html\n  output: dist\n",
            gate.display()
        ),
    )
    .expect("write opus.yml");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    let n = d.trigger(&["web"]);
    d.wait_for_state("web", n, "running", 30);
    // The page holds what was written so far and where the stream goes on from.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream_path = loop {
        let page = get(&d, &format!("/projects/web/builds/{n}"), None).text();
        // The step's own line (its command, shown above it, names it too).
        if page.contains("\nbefore-gate\n") {
            let start = page.find("data-stream=\"").expect("a live log") + "data-stream=\"".len();
            break page[start..].split('"').next().expect("a path").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the step's first line never showed: {page}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let addr = d.server.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {stream_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send");
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    reader.read_line(&mut head).expect("status line");
    assert!(head.contains("200"), "{head}");
    std::fs::write(&gate, "").expect("open the gate");
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended before its end event: {seen:?}");
        seen.push(line.trim_end().to_owned());
        if seen.iter().any(|l| l == "event: end") && line.starts_with("data: ") {
            break;
        }
    }
    let text = seen.join("\n");
    assert!(
        text.contains("data: after &lt;b&gt;gate&lt;/b&gt;"),
        "{text}"
    );
    assert!(
        !text.contains("before-gate"),
        "the stream starts where the page ended: {text}"
    );
    assert!(text.contains("event: end\ndata: succeeded"), "{text}");
}

#[test]
fn the_event_stream_tells_each_change_of_a_project() {
    use std::io::{BufRead, BufReader, Write};
    let d = Daemon::start();
    with_two_releases(&d);
    let addr = d.server.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET /events?project=web HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send");
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    reader.read_line(&mut head).expect("status line");
    assert!(head.contains("200"), "{head}");
    // Read the headers: the stream starts after them, with events from now on only.
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header");
        if line == "\r\n" {
            break;
        }
    }
    d.opus(&["rollback", "web"]).ok();
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended: {seen:?}");
        let line = line.trim_end().to_owned();
        let done = line.starts_with("data: ");
        seen.push(line);
        if done {
            break;
        }
    }
    let text = seen.join("\n");
    assert!(text.contains("event: change"), "{text}");
    assert!(text.contains("data: environment.rolled_back web"), "{text}");
    assert!(
        !text.contains("environment.deployed"),
        "only what happened since: {text}"
    );
}

#[test]
fn a_queued_build_says_why_it_waits_and_the_queue_page_lists_it() {
    let d = Daemon::start_with(&["--max-builds", "1"]);
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let gate = d.root.path().join("gate");
    std::fs::write(
        src.join("opus.yml"),
        format!(
            "build:\n  steps:\n    - while [ ! -f {} ]; do sleep 0.05; done; mkdir -p dist && echo hi > dist/index.html\n  output: dist\n",
            gate.display()
        ),
    )
    .expect("write opus.yml");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    let first = d.trigger(&["web", "--version", "1.0.0"]);
    d.wait_for_state("web", first, "running", 30);
    let second = d.trigger(&["web", "--version", "2.0.0"]);
    let page = get(&d, &format!("/projects/web/builds/{second}"), None).text();
    assert!(
        page.contains("queued: 1st, waiting for a free slot (1/1 running)"),
        "{page}"
    );
    let queue = get(&d, "/queue", None).text();
    assert!(queue.contains("1 running, 1 waiting."), "{queue}");
    assert!(queue.contains(&format!("web#{first}")) && queue.contains(&format!("web#{second}")));
    std::fs::write(&gate, "").expect("open the gate");
    d.wait_for_state("web", second, "succeeded", 60);
    assert!(
        get(&d, "/queue", None)
            .text()
            .contains("Nothing runs and nothing waits.")
    );
}
