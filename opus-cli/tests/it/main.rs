//! Tests of the `opus` binary as a program: its help (a snapshot, so a change to the command line
//! is a visible change to this file) and usage errors. They also make `cargo test --workspace`
//! build `opus`, which the end-to-end tests in `tests/` run.

use std::process::Command;

fn opus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_opus"))
        .args(args)
        .env_remove("OPUS_SERVER")
        .env_remove("OPUS_TOKEN")
        .env("COLUMNS", "100")
        .output()
        .expect("runs")
}

#[test]
fn help_matches_the_snapshot() {
    let out = opus(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).replace("opus.exe", "opus");
    let snapshot_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(snapshot_path, text.as_bytes()).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(snapshot_path).unwrap_or_default();
    assert_eq!(
        text, expected,
        "`opus --help` changed; if intended, run `UPDATE_SNAPSHOTS=1 cargo test -p opus-cli --test it` and commit tests/it/help.txt"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(opus(&[]).status.code(), Some(2));
    assert_eq!(opus(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(opus(&["add", "only-a-name"]).status.code(), Some(2));
    assert_eq!(opus(&["list", "--output", "yaml"]).status.code(), Some(2));
}
