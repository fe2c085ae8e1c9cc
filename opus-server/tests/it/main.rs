//! Tests of the `opusd` binary as a program (flags and help), and in-process tests of its gRPC API
//! (`serve` on port 0 in a temp data dir, real tonic clients). They also make `cargo test
//! --workspace` build `opusd`, which the end-to-end tests in `tests/` run.

mod artifacts;
mod github_app;
mod serve;

use std::process::Command;

#[test]
fn version_names_the_commit_it_was_built_from() {
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .chars()
                .take(12)
                .collect()
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let out = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .arg("--version")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("opusd {} (commit {commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .arg("--help")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--listen", "OPUS_LISTEN"),
        ("--sites-listen", "OPUS_SITES_LISTEN"),
        ("--domain", "OPUS_DOMAIN"),
        ("--data-dir", "OPUS_DATA_DIR"),
        ("--token", "OPUS_TOKEN"),
        ("--token-file", "OPUS_TOKEN_FILE"),
        ("--viewer-token", "OPUS_VIEWER_TOKEN"),
        ("--viewer-token-file", "OPUS_VIEWER_TOKEN_FILE"),
        ("--config", "OPUS_CONFIG"),
        ("--max-builds", "OPUS_MAX_BUILDS"),
        ("--store", "OPUS_STORE"),
        ("--extra-store", "OPUS_EXTRA_STORE"),
        ("--executor", "OPUS_EXECUTOR"),
        ("--tls-cert", "OPUS_TLS_CERT"),
        ("--kubernetes-namespace", "OPUS_KUBERNETES_NAMESPACE"),
        ("--runner-image", "OPUS_RUNNER_IMAGE"),
        ("--runner-server-url", "OPUS_RUNNER_SERVER_URL"),
        ("--public-url", "OPUS_PUBLIC_URL"),
        ("--github-api-url", "OPUS_GITHUB_API_URL"),
        ("--github-app-id", "OPUS_GITHUB_APP_ID"),
        ("--github-app-key-file", "OPUS_GITHUB_APP_KEY_FILE"),
        ("--build-image", "OPUS_BUILD_IMAGE"),
        ("--site-cache-size", "OPUS_SITE_CACHE_SIZE"),
        ("--kubernetes-poll-ms", "OPUS_KUBERNETES_POLL_MS"),
        ("--hook-retry-base-ms", "OPUS_HOOK_RETRY_BASE_MS"),
        ("--hook-retry-cap-ms", "OPUS_HOOK_RETRY_CAP_MS"),
        ("--hook-give-up-secs", "OPUS_HOOK_GIVE_UP_SECS"),
        ("--hook-timeout-ms", "OPUS_HOOK_TIMEOUT_MS"),
    ] {
        assert!(
            text.contains(flag),
            "{flag} missing from opusd --help:\n{text}"
        );
        assert!(
            text.contains(env),
            "{env} missing from opusd --help:\n{text}"
        );
    }
}

/// `--executor` takes the executors clap knows (and lists them in `--help`); anything else is a
/// usage error naming them.
#[test]
fn executor_is_one_of_the_known_executors() {
    let help = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .arg("--help")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("local") && text.contains("kubernetes"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .args(["--executor", "docker"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("docker") && err.contains("kubernetes"),
        "{err}"
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .arg("--no-such-flag")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

/// `opusd runner` with what it needs missing or wrong: exit 2 and one line saying what to fix.
#[test]
fn runner_refuses_to_start_without_a_token_a_usable_url_or_a_reachable_opusd() {
    let runner = |server: &str, token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_opusd"));
        cmd.args([
            "runner",
            "--server",
            server,
            "--build",
            "7",
            "--connect-timeout",
            "1",
        ])
        .env_remove("OPUS_RUNNER_TOKEN");
        if let Some(t) = token {
            cmd.env("OPUS_RUNNER_TOKEN", t);
        }
        let out = cmd.output().expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = runner("http://127.0.0.1:1", None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("opusd runner: no build token: set OPUS_RUNNER_TOKEN"),
        "{err}"
    );

    let (code, err) = runner("opusd:7070", Some("t"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("invalid --server \"opusd:7070\": use an http:// or https:// URL"),
        "{err}"
    );

    // Nothing listens on port 1.
    let (code, err) = runner("http://127.0.0.1:1", Some("t"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("opusd runner: cannot reach opusd at http://127.0.0.1:1 within 1s"),
        "{err}"
    );

    let (code, err) = runner("http://127.0.0.1:1", Some("bad\ntoken"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("holds characters a header cannot carry"),
        "{err}"
    );
}
