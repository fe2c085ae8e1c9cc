//! Deciding `when:` of a pipeline's jobs and stages: whether the build's branch and the files its
//! commit changed let a job run, and if not, the reason recorded for its skip.

use std::path::Path;

use globset::Glob;
use opus_core::recipe::When;
use tokio::process::Command;

/// What `when:` is decided against, gathered once per build.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// The branch built (`None`: a tag or a commit).
    pub branch: Option<String>,
    /// The files the commit changed, against its first parent (every file for a first commit);
    /// `None` when not known (a local folder source has no commits) or not needed.
    pub changed: Option<Vec<String>>,
}

impl Facts {
    /// The facts of the checkout at `workspace` of `commit` on `branch`; the changed files are
    /// read from git only when some `when:` asks for paths.
    pub async fn gather(
        branch: Option<String>,
        commit: &str,
        workspace: &Path,
        needs_paths: bool,
    ) -> Facts {
        let changed = if needs_paths && !commit.is_empty() {
            changed_files(workspace).await
        } else {
            None
        };
        Facts { branch, changed }
    }
}

/// The files changed by HEAD of the checkout at `workspace`, or `None` when git cannot say.
async fn changed_files(workspace: &Path) -> Option<Vec<String>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args([
            "diff-tree",
            "-r",
            "--root",
            "-m",
            "--first-parent",
            "--no-commit-id",
            "--name-only",
            "HEAD",
        ])
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Why `when` skips, given `facts`; `None`: it runs. Unknown changed files (a local source) let
/// a job with `paths:` run: [`note`] says so in its log.
pub(crate) fn skip_reason(when: Option<&When>, facts: &Facts) -> Option<String> {
    let when = when?;
    let matches = |pattern: &str, text: &str| {
        Glob::new(pattern).is_ok_and(|g| g.compile_matcher().is_match(text))
    };
    if !when.branch.is_empty() {
        let patterns = when.branch.join(", ");
        match &facts.branch {
            None => return Some(format!("not on a branch (when.branch: {patterns})")),
            Some(b) if !when.branch.iter().any(|p| matches(p, b)) => {
                return Some(format!(
                    "branch {b} matches none of {patterns} (when.branch)"
                ));
            }
            Some(_) => {}
        }
    }
    if !when.paths.is_empty()
        && let Some(changed) = &facts.changed
        && !changed
            .iter()
            .any(|f| when.paths.iter().any(|p| matches(p, f)))
    {
        return Some(format!(
            "no changed file matches {} (when.paths; {} file(s) changed)",
            when.paths.join(", "),
            changed.len()
        ));
    }
    None
}

/// A note for a job or stage that runs although its `paths:` could not be decided.
pub(crate) fn note(when: Option<&When>, facts: &Facts) -> Option<&'static str> {
    let when = when?;
    (!when.paths.is_empty() && facts.changed.is_none())
        .then_some("when.paths not decided (the source has no commits to compare): it runs")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when(branch: &[&str], paths: &[&str]) -> When {
        When {
            branch: branch.iter().map(|s| (*s).to_owned()).collect(),
            paths: paths.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn facts(branch: Option<&str>, changed: Option<&[&str]>) -> Facts {
        Facts {
            branch: branch.map(str::to_owned),
            changed: changed.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn branches_match_patterns() {
        let w = when(&["main", "release/*"], &[]);
        assert_eq!(skip_reason(Some(&w), &facts(Some("main"), None)), None);
        assert_eq!(
            skip_reason(Some(&w), &facts(Some("release/1.2"), None)),
            None
        );
        let reason = skip_reason(Some(&w), &facts(Some("feature/x"), None)).expect("skips");
        assert_eq!(
            reason,
            "branch feature/x matches none of main, release/* (when.branch)"
        );
        assert!(skip_reason(Some(&w), &facts(None, None)).is_some());
        assert_eq!(skip_reason(None, &facts(None, None)), None);
    }

    #[test]
    fn paths_match_changed_files() {
        let w = when(&[], &["apps/web/**"]);
        let changed = ["apps/web/src/main.js", "README.md"];
        assert_eq!(skip_reason(Some(&w), &facts(None, Some(&changed))), None);
        let reason = skip_reason(Some(&w), &facts(None, Some(&["apps/api/x.rs"]))).expect("skips");
        assert!(
            reason.contains("no changed file matches apps/web/**"),
            "{reason}"
        );
        // Unknown: runs, with a note.
        assert_eq!(skip_reason(Some(&w), &facts(None, None)), None);
        assert!(note(Some(&w), &facts(None, None)).is_some());
    }

    #[tokio::test]
    async fn changed_files_come_from_the_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .status()
                .expect("git")
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::create_dir_all(dir.path().join("apps/web")).expect("mkdir");
        std::fs::write(dir.path().join("README.md"), "a").expect("write");
        git(&["add", "."]);
        git(&["commit", "-qm", "first"]);
        let first = Facts::gather(None, "c", dir.path(), true).await;
        assert_eq!(
            first.changed.as_deref(),
            Some(&["README.md".to_owned()][..])
        );
        std::fs::write(dir.path().join("apps/web/x.js"), "b").expect("write");
        git(&["add", "."]);
        git(&["commit", "-qm", "second"]);
        let second = Facts::gather(None, "c", dir.path(), true).await;
        assert_eq!(
            second.changed.as_deref(),
            Some(&["apps/web/x.js".to_owned()][..])
        );
        assert!(
            Facts::gather(None, "", dir.path(), true)
                .await
                .changed
                .is_none()
        );
    }
}
