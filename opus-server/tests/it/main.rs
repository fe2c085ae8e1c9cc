//! Tests of the `opusd` binary as a program (flags and help), and in-process tests of its gRPC API
//! (`serve` on port 0 in a temp data dir, real tonic clients). They also make `cargo test
//! --workspace` build `opusd`, which the end-to-end tests in `tests/` run.

mod artifacts;

use std::process::Command;

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
        ("--config", "OPUS_CONFIG"),
        ("--max-builds", "OPUS_MAX_BUILDS"),
        ("--store", "OPUS_STORE"),
        ("--extra-store", "OPUS_EXTRA_STORE"),
        ("--executor", "OPUS_EXECUTOR"),
        ("--tls-cert", "OPUS_TLS_CERT"),
        ("--kubernetes-namespace", "OPUS_KUBERNETES_NAMESPACE"),
        ("--runner-image", "OPUS_RUNNER_IMAGE"),
        ("--runner-server-url", "OPUS_RUNNER_SERVER_URL"),
        ("--build-image", "OPUS_BUILD_IMAGE"),
        ("--site-cache-size", "OPUS_SITE_CACHE_SIZE"),
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

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .arg("--no-such-flag")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}
