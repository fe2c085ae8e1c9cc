//! Passwords (basic auth) in front of an environment or every preview, through the real
//! binaries: `opus env protect|unprotect`, raw HTTP with Host and Authorization headers.

use base64::Engine;
use opus_tests::{Daemon, GitRepo, http};

const OPUS_YML: &str = r#"build:
  steps: ["mkdir -p dist && echo \"built from $OPUS_REF\" > dist/index.html"]
environments:
  production: { branch: main, auto_deploy: true }
previews: true
"#;

fn basic(password: &str) -> String {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("reviewer:{password}"));
    format!("Authorization: Basic {v}")
}

/// `GET /` of `host` with an `Authorization` for `password` (none when `None`).
fn get(d: &Daemon, host: &str, password: Option<&str>) -> (u16, String, String) {
    let auth = password.map(basic);
    let extra: Vec<&str> = auth.iter().map(String::as_str).collect();
    let r = http(&d.sites, "GET", host, "/", &extra);
    (
        r.status,
        r.header("www-authenticate").to_owned(),
        r.text().trim().to_owned(),
    )
}

#[test]
fn previews_and_environments_ask_for_their_password() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write("opus.yml", OPUS_YML);
    repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    let id = d.trigger(&["web", "main"]);
    d.wait_for_state("web", id, "succeeded", 60);
    repo.git(&["checkout", "-q", "-b", "feature-x"]);
    repo.write("x.txt", "x");
    repo.commit("x");
    let id = d.trigger(&["web", "feature-x"]);
    d.wait_for_state("web", id, "succeeded", 60);
    let preview = "feature-x--web.localhost";
    assert_eq!(get(&d, preview, None).0, 200);

    let pw = d.root.path().join("pw");
    std::fs::write(&pw, "open sesame\n").expect("write");
    let out = d.opus(&[
        "env",
        "protect",
        "web",
        "--previews",
        "--password-file",
        pw.to_str().expect("utf-8"),
    ]);
    assert!(
        out.ok()
            .contains("the previews of web now asks for the password"),
        "{}",
        out.stdout
    );

    let (status, challenge, _) = get(&d, preview, None);
    assert_eq!(status, 401);
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    for wrong in ["open sesam", "open sesame and more", ""] {
        assert_eq!(get(&d, preview, Some(wrong)).0, 401, "{wrong:?}");
    }
    assert_eq!(
        get(&d, preview, Some("open sesame")),
        (200, String::new(), "built from feature-x".to_owned())
    );
    // Production is not a preview: open.
    assert_eq!(get(&d, "web.localhost", None).0, 200);
    // A version's own host shows what was built before any environment has it: the previews'
    // password applies there too.
    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    let url = listed[0]["url"].as_str().expect("a version URL").to_owned();
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .expect("host")
        .to_owned();
    assert_eq!(get(&d, &host, None).0, 401, "{host}");
    assert_eq!(get(&d, &host, Some("open sesame")).0, 200, "{host}");
    // The hash only is stored, never the password.
    assert!(!holds(&d.data_dir(), b"open sesame"));

    // One environment; kept across a restart.
    std::fs::write(&pw, "prod-pass").expect("write");
    d.opus(&[
        "env",
        "protect",
        "web",
        "production",
        "--password-file",
        pw.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(get(&d, "web.localhost", None).0, 401);
    let mut d = d;
    d.restart();
    assert_eq!(get(&d, "web.localhost", Some("prod-pass")).0, 200);
    assert_eq!(get(&d, "web.localhost", Some("open sesame")).0, 401);
    assert_eq!(get(&d, preview, Some("open sesame")).0, 200);

    let out = d.opus(&["env", "unprotect", "web", "--previews"]);
    assert!(out.ok().contains("no longer asks"), "{}", out.stdout);
    assert_eq!(get(&d, preview, None).0, 200);
    let out = d.opus(&["env", "unprotect", "web", "--previews"]);
    assert!(out.ok().contains("had no password"), "{}", out.stdout);

    // Bad input.
    let empty = d.root.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let err = d
        .opus(&[
            "env",
            "protect",
            "web",
            "--password-file",
            empty.to_str().expect("utf-8"),
        ])
        .fails(1)
        .to_owned();
    assert!(err.contains("is empty"), "{err}");
    let err = d
        .opus(&[
            "env",
            "protect",
            "web",
            "--password-file",
            "/nonexistent/pw",
        ])
        .fails(1)
        .to_owned();
    assert!(err.contains("cannot read the password file"), "{err}");
    let err = d
        .opus(&[
            "env",
            "protect",
            "nope",
            "--password-file",
            pw.to_str().expect("utf-8"),
        ])
        .fails(1)
        .to_owned();
    assert!(err.contains("nope"), "{err}");
    let err = d
        .opus(&[
            "env",
            "protect",
            "web",
            "staging",
            "--previews",
            "--password-file",
            pw.to_str().expect("utf-8"),
        ])
        .fails(2)
        .to_owned();
    assert!(err.contains("cannot be used with"), "{err}");
}

/// Whether any file under `dir` holds `needle`.
fn holds(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            holds(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}
