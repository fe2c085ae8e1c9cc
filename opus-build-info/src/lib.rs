//! The git commit a binary is built from, for the build scripts of `opus` and `opusd` (so that
//! `opus version`, `opusd --version` and `opus status` can tell which build is which).
//!
//! [`emit_commit`] sets the compile-time variable `OPUS_COMMIT` of the crate whose build script
//! calls it, read with `env!("OPUS_COMMIT")`. Where the commit comes from, first that answers:
//! 1. `OPUS_BUILD_COMMIT` in the build's environment (an image build has no `.git`: its
//!    Dockerfile passes the commit in as a build argument);
//! 2. `git rev-parse HEAD` in the crate's folder (a clone, or cargo's checkout for
//!    `cargo install --git`);
//! 3. [`UNKNOWN`] (a source tarball: no `.git` and nothing passed in).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable a build can set to name the commit itself.
pub const OVERRIDE_VAR: &str = "OPUS_BUILD_COMMIT";

/// The commit of a build made without git and without [`OVERRIDE_VAR`].
pub const UNKNOWN: &str = "unknown";

/// How many hex digits of the commit are kept (as `git log --abbrev=12` shows them).
const ABBREV: usize = 12;

/// Prints the cargo directives that set `OPUS_COMMIT` for the calling crate and rerun its build
/// script when the commit changes (a new commit, a checkout, or a new [`OVERRIDE_VAR`]).
pub fn emit_commit() {
    println!("cargo::rerun-if-env-changed={OVERRIDE_VAR}");
    let from_env = std::env::var(OVERRIDE_VAR).ok();
    if let Some(raw) = from_env
        .as_deref()
        .filter(|raw| !raw.trim().is_empty() && clean_commit(raw).is_none())
    {
        println!("cargo::warning={OVERRIDE_VAR}={raw:?} is not a commit id (hex digits): ignored");
    }
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let found = find_commit(from_env.as_deref(), dir.as_deref());
    for watched in &found.watched {
        println!("cargo::rerun-if-changed={}", watched.display());
    }
    println!("cargo::rustc-env=OPUS_COMMIT={}", found.commit);
}

/// The commit a build names, and the files whose change means another commit.
#[derive(Debug)]
struct Found {
    /// 12 hex digits, or [`UNKNOWN`].
    commit: String,
    /// Git's files that move with HEAD (none when the commit did not come from git).
    watched: Vec<PathBuf>,
}

/// The commit from `from_env` (the value of [`OVERRIDE_VAR`]) when it is one, else from git in
/// `dir`, else [`UNKNOWN`].
fn find_commit(from_env: Option<&str>, dir: Option<&Path>) -> Found {
    if let Some(commit) = from_env.and_then(clean_commit) {
        return Found {
            commit,
            watched: Vec::new(),
        };
    }
    let Some(dir) = dir else {
        return Found {
            commit: UNKNOWN.to_owned(),
            watched: Vec::new(),
        };
    };
    Found {
        commit: git(dir, &["rev-parse", "HEAD"])
            .and_then(|c| clean_commit(&c))
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        watched: git_files_that_move_head(dir),
    }
}

/// The commit abbreviated to [`ABBREV`] digits, or `None` unless `raw` is a hex commit id.
fn clean_commit(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let is_commit = raw.len() >= 7 && raw.chars().all(|c| c.is_ascii_hexdigit());
    is_commit.then(|| raw[..raw.len().min(ABBREV)].to_ascii_lowercase())
}

/// The files git rewrites when HEAD moves: HEAD itself, the branch it points at, packed-refs.
/// Only existing ones (cargo reruns a build script on every build while a watched path is
/// missing).
fn git_files_that_move_head(dir: &Path) -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        names.push(branch);
    }
    names
        .iter()
        .filter_map(|name| {
            git(
                dir,
                &["rev-parse", "--path-format=absolute", "--git-path", name],
            )
        })
        .map(PathBuf::from)
        .filter(|path| path.exists())
        .collect()
}

/// `git <args>` in `dir`: its trimmed stdout when it succeeds, `None` when git is missing or
/// fails (not a repository).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_commit_is_abbreviated_to_twelve_lowercase_digits() {
        assert_eq!(
            clean_commit("5049AAB1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7\n").as_deref(),
            Some("5049aab1c2d3")
        );
        assert_eq!(clean_commit("5049aab").as_deref(), Some("5049aab"));
    }

    #[test]
    fn anything_but_a_hex_commit_id_is_refused() {
        assert_eq!(clean_commit(""), None);
        assert_eq!(clean_commit("  "), None);
        assert_eq!(clean_commit("abc"), None);
        assert_eq!(clean_commit("main-branch"), None);
        assert_eq!(clean_commit("5049aab; rm -rf /"), None);
    }

    #[test]
    fn git_answers_in_a_repository_and_not_outside_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path();
        // The temp dir is in no repository: git fails, which is no commit, not a panic.
        assert_eq!(git(repo, &["rev-parse", "HEAD"]), None);
        git(repo, &["init", "-q", "-b", "main"]);
        let commit = [
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "one",
        ];
        git(repo, &commit);
        let head = git(repo, &["rev-parse", "HEAD"]).and_then(|c| clean_commit(&c));
        assert_eq!(head.as_ref().map(String::len), Some(ABBREV));
        let watched = git_files_that_move_head(repo);
        assert!(
            watched.iter().any(|p| p.ends_with("HEAD")),
            "HEAD is watched: {watched:?}"
        );
        assert!(
            watched.iter().any(|p| p.ends_with("refs/heads/main")),
            "the branch is watched: {watched:?}"
        );

        // What a build finds there: git's commit, unless the environment names one.
        let found = find_commit(None, Some(repo));
        assert_eq!(Some(found.commit.clone()), head);
        assert!(!found.watched.is_empty());
        let named = find_commit(Some("0123456789abcdef"), Some(repo));
        assert_eq!(named.commit, "0123456789ab");
        assert!(named.watched.is_empty());
        // A value that is not a commit id is ignored (emit_commit warns of it).
        assert_eq!(find_commit(Some("v1.2"), Some(repo)).commit, found.commit);
    }

    #[test]
    fn without_git_or_a_named_commit_the_commit_is_unknown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let found = find_commit(None, Some(dir.path()));
        assert_eq!(found.commit, UNKNOWN);
        assert!(found.watched.is_empty(), "{:?}", found.watched);
        assert_eq!(find_commit(Some(""), None).commit, UNKNOWN);
        assert_eq!(find_commit(Some("abcdef1"), None).commit, "abcdef1");
    }
}
