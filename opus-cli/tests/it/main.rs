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

/// The commit `git` says the checkout is at (its first 12 digits), or `unknown` outside a
/// repository: what the binaries must say they were built from.
fn expected_commit() -> String {
    Command::new("git")
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
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let line = format!(
        "opus {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        expected_commit()
    );
    for args in [&["--version"][..], &["version"]] {
        let out = opus(args);
        assert!(out.status.success(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), line, "{args:?}");
    }
    let out = opus(&["version", "-o", "json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "commit": expected_commit()})
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(opus(&[]).status.code(), Some(2));
    assert_eq!(opus(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(opus(&["add", "only-a-name"]).status.code(), Some(2));
    assert_eq!(opus(&["list", "--output", "yaml"]).status.code(), Some(2));
}

#[test]
fn the_main_commands_help_ends_with_examples() {
    for command in [
        &["add"][..],
        &["trigger"],
        &["deploy"],
        &["rollback"],
        &["logs"],
        &["publish"],
        &["download"],
        &["secret"],
        &["completions"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = opus(&args);
        assert!(out.status.success(), "{command:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let (_, examples) = text
            .rsplit_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("`opus {} --help` has no examples:\n{text}", command[0]));
        let lines: Vec<_> = examples.lines().collect();
        assert!(!lines.is_empty(), "{text}");
        for line in lines {
            assert!(
                line.trim_start().starts_with("opus ")
                    || line.contains("| opus ")
                    || line.contains("&& opus "),
                "`opus {} --help`: {line:?} is not an example",
                command[0]
            );
        }
    }
}

/// Runs `script` with bash, `opus` first on its PATH.
fn bash(script: &str) -> std::process::Output {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_opus"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .env("PATH", path)
        .output()
        .expect("bash runs")
}

#[test]
fn completions_are_scripts_the_shells_load() {
    // bash loads the script and then completes subcommands and their flags.
    let out = bash(
        r#"source <(opus completions bash) || exit 1
complete -p opus || exit 1
COMP_WORDS=(opus dep); COMP_CWORD=1; COMP_LINE="opus dep"; COMP_POINT=8
_opus opus dep opus; echo "words: ${COMPREPLY[*]}"
COMP_WORDS=(opus download web 1.0 --ex); COMP_CWORD=4; COMP_LINE="opus download web 1.0 --ex"; COMP_POINT=27
_opus opus --ex 1.0; echo "flags: ${COMPREPLY[*]}""#,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("-F _opus opus"), "{text}");
    assert!(text.contains("words: deploy"), "{text}");
    assert!(text.contains("flags: --extract"), "{text}");

    let zsh = opus(&["completions", "zsh"]);
    assert!(zsh.status.success());
    let zsh = String::from_utf8_lossy(&zsh.stdout);
    assert!(zsh.starts_with("#compdef opus"), "{zsh}");
    assert!(zsh.contains("'completions:"), "subcommands are listed");
    let fish = opus(&["completions", "fish"]);
    assert!(fish.status.success());
    let fish = String::from_utf8_lossy(&fish.stdout);
    assert!(fish.contains("complete -c opus"), "{fish}");
    assert!(fish.contains("-a \"rollback\""), "subcommands are listed");

    // An unknown shell is a usage error that lists the known ones.
    let out = opus(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}
