//! Source fetching: a git URL is mirrored once per project (`<data-dir>/git/<project>.git`) and
//! fetched before each build, then the build's commit is checked out from the mirror into the
//! build's workspace; a local directory is copied. Git is the `git` program, so every transport
//! and credential helper git has works. A project of a GitHub App installation is fetched over
//! HTTP(S) with that installation's token, handed to git through `GIT_ASKPASS` and the
//! environment ([`crate::github::askpass`]), never in the URL or the command line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use opus_core::model::{Project, ProjectName, Source};
use thiserror::Error;
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::github::askpass::{AskpassScript, GitCredential, GitCredentials};

/// Why the source could not be prepared. Messages name the ref or folder at fault.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The ref is no branch, tag or commit of the repository.
    #[error("ref {git_ref:?} is not a branch, tag or commit of {url}")]
    UnknownRef {
        /// The ref asked for.
        git_ref: String,
        /// The repository.
        url: String,
    },
    /// A ref was asked of a local directory, which has none.
    #[error(
        "ref {git_ref:?} cannot be built: the source {dir} is a local directory, which has no branches or tags; trigger `latest`"
    )]
    LocalRef {
        /// The ref asked for.
        git_ref: String,
        /// The directory.
        dir: String,
    },
    /// A git command failed.
    #[error("git {action} failed: {detail}")]
    Git {
        /// What was being done.
        action: String,
        /// git's stderr.
        detail: String,
    },
    /// The GitHub App's installation token for a clone could not be had.
    #[error(
        "cannot get the GitHub App installation token to fetch {project}'s repository with: {detail}"
    )]
    Credential {
        /// The project.
        project: String,
        /// Why (GitHub's answer).
        detail: String,
    },
    /// A git command ran past [`GIT_TIMEOUT`] (a remote that stopped answering) and was killed.
    #[error(
        "git {action} did not finish within {} and was stopped: is the repository reachable? (a transfer slower than 1 KB/s for 60 s also stops it)",
        humantime::format_duration(*limit)
    )]
    GitTimedOut {
        /// What was being done.
        action: String,
        /// The limit it ran past.
        limit: Duration,
    },
    /// The local source folder holds a file that is not a regular file, folder or link (a FIFO,
    /// a socket, a device): reading it could block forever, so the copy refuses it.
    #[error(
        "the source folder holds {path}, a {kind}, which cannot be copied: remove it or move it out of the folder"
    )]
    SpecialFile {
        /// The file.
        path: String,
        /// What it is (`FIFO (named pipe)`, `socket`, ...).
        kind: &'static str,
    },
    /// Files could not be copied or created.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What was checked out.
#[derive(Debug, Clone, Default)]
pub struct Checkout {
    /// The full commit id (empty for a local directory).
    pub commit: String,
    /// The branch, when the ref is one.
    pub branch: Option<String>,
    /// Whether the ref is a tag.
    pub is_tag: bool,
}

/// Prepares workspaces from project sources; serializes fetches per project.
#[derive(Clone)]
pub struct SourceFetcher {
    git_dir: PathBuf,
    locks: Arc<StdMutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Installation tokens as git credentials, when opusd is a GitHub App.
    credentials: Option<Arc<GitCredentials>>,
}

impl SourceFetcher {
    /// Mirrors live under `git_dir`.
    pub fn new(git_dir: PathBuf) -> SourceFetcher {
        SourceFetcher {
            git_dir,
            locks: Arc::default(),
            credentials: None,
        }
    }

    /// Fetches the projects of a GitHub App installation with its token.
    pub fn with_credentials(mut self, credentials: Option<Arc<GitCredentials>>) -> SourceFetcher {
        self.credentials = credentials;
        self
    }

    fn lock_for(&self, project: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(project.to_owned()).or_default().clone()
    }

    /// Fills `workspace` (which must exist and be empty) with the project's source at `git_ref`.
    pub async fn checkout(
        &self,
        project: &Project,
        git_ref: &str,
        workspace: &Path,
    ) -> Result<Checkout, SourceError> {
        match &project.source {
            Source::Local(dir) => {
                if git_ref != project.branch {
                    return Err(SourceError::LocalRef {
                        git_ref: git_ref.to_owned(),
                        dir: dir.display().to_string(),
                    });
                }
                copy_tree(dir.clone(), workspace.to_path_buf()).await?;
                Ok(Checkout {
                    commit: String::new(),
                    branch: Some(project.branch.clone()),
                    is_tag: false,
                })
            }
            Source::Git(url) => {
                let mirror = self.git_dir.join(format!("{}.git", project.name));
                let (commit, branch, is_tag) = {
                    let lock = self.lock_for(project.name.as_str());
                    let _guard = lock.lock().await;
                    self.update_mirror(&project.name, url, &mirror).await?;
                    resolve(&mirror, url, git_ref).await?
                };
                git(
                    "clone",
                    Command::new("git")
                        .args(["clone", "--quiet", "--shared", "--no-checkout"])
                        .arg(&mirror)
                        .arg(workspace),
                )
                .await?;
                git(
                    "checkout",
                    Command::new("git")
                        .arg("-C")
                        .arg(workspace)
                        .args(["checkout", "--quiet", "--detach", &commit]),
                )
                .await?;
                Ok(Checkout {
                    commit,
                    branch,
                    is_tag,
                })
            }
        }
    }

    /// Updates the mirror of a git source and finds what `git_ref` names, checking nothing out:
    /// what the kubernetes executor needs before it creates a build's Job.
    pub async fn resolve_git(
        &self,
        project: &Project,
        url: &str,
        git_ref: &str,
    ) -> Result<Checkout, SourceError> {
        let mirror = self.mirror(project);
        let lock = self.lock_for(project.name.as_str());
        let _guard = lock.lock().await;
        self.update_mirror(&project.name, url, &mirror).await?;
        let (commit, branch, is_tag) = resolve(&mirror, url, git_ref).await?;
        Ok(Checkout {
            commit,
            branch,
            is_tag,
        })
    }

    /// Copies the files that decide a build's recipe (`opus.yml`, `opus.yaml`, `package.json` and
    /// the lockfiles that name its package manager) from the root of `commit` in the project's mirror into `dest`, so that
    /// [`opus_core::recipe::discover`] can read them without a checkout.
    pub async fn read_recipe(
        &self,
        project: &Project,
        commit: &str,
        dest: &Path,
    ) -> Result<(), SourceError> {
        const RECIPE_FILES: [&str; 9] = [
            "opus.yml",
            "opus.yaml",
            "package.json",
            "package-lock.json",
            "npm-shrinkwrap.json",
            "pnpm-lock.yaml",
            "yarn.lock",
            "bun.lockb",
            "bun.lock",
        ];
        let mirror = self.mirror(project);
        let listing = git(
            "ls-tree",
            Command::new("git")
                .arg("--git-dir")
                .arg(&mirror)
                .args(["ls-tree", "--name-only", commit, "--"])
                .args(RECIPE_FILES),
        )
        .await?;
        for name in listing.lines().filter(|n| RECIPE_FILES.contains(n)) {
            let text = git(
                "cat-file",
                Command::new("git").arg("--git-dir").arg(&mirror).args([
                    "cat-file",
                    "blob",
                    &format!("{commit}:{name}"),
                ]),
            )
            .await?;
            let path = dest.join(name);
            tokio::fs::write(&path, text)
                .await
                .map_err(|source| SourceError::Io {
                    action: format!("write {}", path.display()),
                    source,
                })?;
        }
        Ok(())
    }

    /// Deletes a project's git mirror, for the project's removal (a project added again under
    /// the name clones afresh); waits for a fetch into it to end first.
    pub async fn remove_mirror(&self, project: &ProjectName) -> Result<(), SourceError> {
        let lock = self.lock_for(project.as_str());
        let _held = lock.lock().await;
        remove_dir_if_present(&self.git_dir.join(format!("{project}.git"))).await
    }

    fn mirror(&self, project: &Project) -> PathBuf {
        self.git_dir.join(format!("{}.git", project.name))
    }

    /// Clones or fetches the mirror of `project`, with its installation's token when it has
    /// one; a token the server refuses is replaced and the fetch tried once more.
    async fn update_mirror(
        &self,
        project: &ProjectName,
        url: &str,
        mirror: &Path,
    ) -> Result<(), SourceError> {
        let Some(credentials) = &self.credentials else {
            return self.mirror_once(url, mirror, None).await;
        };
        let credential = || async {
            credentials
                .for_project(project, url)
                .await
                .map_err(|e| SourceError::Credential {
                    project: project.to_string(),
                    detail: e.to_string(),
                })
        };
        let Some(first) = credential().await? else {
            return self.mirror_once(url, mirror, None).await;
        };
        match self.mirror_once(url, mirror, Some(&first)).await {
            Err(SourceError::Git { detail, .. }) if detail.contains("Authentication failed") => {
                tracing::warn!(%project, "the git server refused the installation token; retrying once with a new one");
                credentials.refused(project, &first);
                let second = credential().await?;
                self.mirror_once(url, mirror, second.as_ref()).await
            }
            other => other,
        }
    }

    /// Clones the mirror on first use (into a temporary name, renamed when complete, so a crash
    /// leaves no half mirror), fetches after that; answers a server's 401 with `credential`.
    async fn mirror_once(
        &self,
        url: &str,
        mirror: &Path,
        credential: Option<&GitCredential>,
    ) -> Result<(), SourceError> {
        let with_credential = |cmd: &mut Command| {
            if let (Some(credentials), Some(credential)) = (&self.credentials, credential) {
                credentials.apply(cmd, credential);
            }
        };
        if mirror.join("HEAD").exists() {
            let mut cmd = Command::new("git");
            cmd.arg("--git-dir")
                .arg(mirror)
                .args(["fetch", "--quiet", "--prune", "--force", "origin"]);
            with_credential(&mut cmd);
            return git("fetch", &mut cmd).await.map(drop);
        }
        tokio::fs::create_dir_all(&self.git_dir)
            .await
            .map_err(|source| SourceError::Io {
                action: format!("create {}", self.git_dir.display()),
                source,
            })?;
        let tmp = mirror.with_extension("git.partial");
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        let mut cmd = Command::new("git");
        cmd.args(["clone", "--quiet", "--mirror", "--", url])
            .arg(&tmp);
        with_credential(&mut cmd);
        git("clone", &mut cmd).await?;
        tokio::fs::rename(&tmp, mirror)
            .await
            .map_err(|source| SourceError::Io {
                action: format!("move mirror into {}", mirror.display()),
                source,
            })
    }
}

/// Fetches one commit of the repository at `url` into `workspace` (created when missing) and
/// checks it out: what `opusd runner` does, with no mirror. Tries a shallow fetch of just that
/// commit first (one round trip, no history), then, for servers that refuse to serve a commit by
/// its id, a fetch of every branch and tag. `credential`: what git answers a server's 401 with,
/// through the askpass script (a runner's installation token).
pub async fn fetch_commit(
    url: &str,
    commit: &str,
    workspace: &Path,
    credential: Option<(&AskpassScript, &GitCredential)>,
) -> Result<(), SourceError> {
    if commit.len() < 7 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(SourceError::Git {
            action: "fetch".into(),
            detail: format!("{commit:?} is not a commit id"),
        });
    }
    tokio::fs::create_dir_all(workspace)
        .await
        .map_err(|source| SourceError::Io {
            action: format!("create {}", workspace.display()),
            source,
        })?;
    let in_workspace = || {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(workspace);
        if let Some((script, credential)) = credential {
            script.apply(&mut cmd, credential);
        }
        cmd
    };
    git("init", in_workspace().args(["init", "--quiet"])).await?;
    let shallow = git(
        "fetch",
        in_workspace().args(["fetch", "--quiet", "--depth", "1", "--", url, commit]),
    )
    .await;
    if shallow.is_err() {
        git(
            "fetch",
            in_workspace().args([
                "fetch",
                "--quiet",
                "--tags",
                "--",
                url,
                "+refs/heads/*:refs/remotes/origin/*",
            ]),
        )
        .await?;
    }
    git(
        "checkout",
        in_workspace().args(["checkout", "--quiet", "--detach", commit]),
    )
    .await
    .map_err(|e| match e {
        SourceError::Git { detail, .. } => SourceError::Git {
            action: "checkout".into(),
            detail: format!("commit {commit} is not in {url}: {detail}"),
        },
        other => other,
    })
    .map(drop)
}

/// Finds what `git_ref` names in the mirror: a tag, a branch, or a commit (in that order).
async fn resolve(
    mirror: &Path,
    url: &str,
    git_ref: &str,
) -> Result<(String, Option<String>, bool), SourceError> {
    let rev_parse = |spec: String| async move {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(mirror)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ])
            .stdin(Stdio::null())
            .output()
            .await
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let plain = git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref);
    if !git_ref.starts_with("refs/heads/")
        && let Some(c) = rev_parse(format!("refs/tags/{plain}^{{commit}}")).await
    {
        return Ok((c, None, true));
    }
    if !git_ref.starts_with("refs/tags/")
        && let Some(c) = rev_parse(format!("refs/heads/{plain}^{{commit}}")).await
    {
        return Ok((c, Some(plain.to_owned()), false));
    }
    let looks_like_sha =
        plain.len() >= 4 && plain.len() <= 64 && plain.chars().all(|c| c.is_ascii_hexdigit());
    if looks_like_sha && let Some(c) = rev_parse(format!("{plain}^{{commit}}")).await {
        return Ok((c, None, false));
    }
    Err(SourceError::UnknownRef {
        git_ref: git_ref.to_owned(),
        url: url.to_owned(),
    })
}

/// How long reading a local repository's current branch may take (a local command).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The branch checked out in the local git repository `repo` (its `HEAD`), which a project added
/// by that folder builds as `latest`; `None` on a detached `HEAD` or when git cannot tell.
pub async fn current_branch(repo: &Path) -> Option<String> {
    let out = git_within(
        "symbolic-ref",
        Command::new("git").arg("-C").arg(repo).args([
            "symbolic-ref",
            "--quiet",
            "--short",
            "HEAD",
        ]),
        HEAD_TIMEOUT,
    )
    .await
    .ok()?;
    let branch = out.trim();
    (!branch.is_empty()).then(|| branch.to_owned())
}

/// The longest a git command of a build may run: 10 minutes, enough for a first clone of a large
/// repository over a slow link, and a bound on a remote that accepts the connection and then
/// says nothing (before it, git would wait forever). A transfer that stalls is stopped sooner by
/// git itself: HTTP(S) under 1 KB/s for 60 s (`LOW_SPEED`).
pub const GIT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// `GIT_HTTP_LOW_SPEED_LIMIT` (bytes a second) and `GIT_HTTP_LOW_SPEED_TIME` (seconds).
const LOW_SPEED: (&str, &str) = ("1000", "60");

/// Runs a git command, turning failure into its stderr.
async fn git(action: &str, cmd: &mut Command) -> Result<String, SourceError> {
    git_within(action, cmd, GIT_TIMEOUT).await
}

/// Runs a git command in its own process group (ssh, git-remote-https and the like in it), killing
/// the whole group when it runs past `limit` or is dropped (a cancelled build).
async fn git_within(
    action: &str,
    cmd: &mut Command,
    limit: Duration,
) -> Result<String, SourceError> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_HTTP_LOW_SPEED_LIMIT", LOW_SPEED.0)
        .env("GIT_HTTP_LOW_SPEED_TIME", LOW_SPEED.1)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SourceError::Io {
            action: format!("run git {action} (is git installed?)"),
            source,
        })?;
    let mut group = GroupKiller(child.id().and_then(|id| i32::try_from(id).ok()));
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.map_err(|source| SourceError::Io {
            action: format!("run git {action}"),
            source,
        })?,
        Err(_) => {
            return Err(SourceError::GitTimedOut {
                action: action.to_owned(),
                limit,
            });
        }
    };
    // Ended by itself: what it left detached (`gc --auto`) is not ours to kill.
    group.0 = None;
    if !out.status.success() {
        return Err(SourceError::Git {
            action: action.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills a process group when dropped, unless cleared.
struct GroupKiller(Option<i32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Copies a directory tree (files, folders, symlinks as links), leaving out `.git`.
async fn copy_tree(from: PathBuf, to: PathBuf) -> Result<(), SourceError> {
    tokio::task::spawn_blocking(move || copy_tree_blocking(&from, &to))
        .await
        .map_err(|e| SourceError::Io {
            action: "copy the source".into(),
            source: std::io::Error::other(e),
        })?
}

fn copy_tree_blocking(from: &Path, to: &Path) -> Result<(), SourceError> {
    let io = |action: String| move |source| SourceError::Io { action, source };
    let entries = std::fs::read_dir(from).map_err(io(format!("read {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("read {}", from.display())))?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let kind = entry
            .file_type()
            .map_err(io(format!("stat {}", src.display())))?;
        if kind.is_dir() {
            std::fs::create_dir(&dst).map_err(io(format!("create {}", dst.display())))?;
            copy_tree_blocking(&src, &dst)?;
        } else if let Some(special) = special_kind(&kind) {
            return Err(SourceError::SpecialFile {
                path: src.display().to_string(),
                kind: special,
            });
        } else if kind.is_symlink() {
            let target =
                std::fs::read_link(&src).map_err(io(format!("read link {}", src.display())))?;
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(io(format!("create link {}", dst.display())))?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(format!("copy {}", src.display())))?;
        }
    }
    Ok(())
}

/// What a file that is neither a regular file, a folder nor a link is, for the message.
fn special_kind(kind: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        Some("FIFO (named pipe)")
    } else if kind.is_socket() {
        Some("socket")
    } else if kind.is_block_device() || kind.is_char_device() {
        Some("device")
    } else {
        None
    }
}

/// Removes a folder and everything in it; a folder that is not there is already removed.
pub(crate) async fn remove_dir_if_present(dir: &Path) -> Result<(), SourceError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SourceError::Io {
            action: format!("remove {}", dir.display()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fifo_or_a_socket_in_a_source_folder_fails_the_copy_and_says_which() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        std::fs::write(src.join("index.html"), "hi").expect("write");
        let status = std::process::Command::new("mkfifo")
            .arg(src.join("sub").join("pipe"))
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        let to = dir.path().join("to");
        std::fs::create_dir(&to).expect("mkdir");
        let err = tokio::time::timeout(Duration::from_secs(10), copy_tree(src.clone(), to))
            .await
            .expect("the copy does not block")
            .expect_err("a FIFO is refused");
        assert!(
            matches!(
                err,
                SourceError::SpecialFile {
                    kind: "FIFO (named pipe)",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("sub/pipe, a FIFO (named pipe), which cannot be copied"),
            "{err}"
        );

        std::fs::remove_file(src.join("sub").join("pipe")).expect("rm");
        let _socket = std::os::unix::net::UnixListener::bind(src.join("app.sock")).expect("bind");
        let to = dir.path().join("to2");
        std::fs::create_dir(&to).expect("mkdir");
        let err = copy_tree(src, to).await.expect_err("a socket is refused");
        assert!(err.to_string().contains("app.sock, a socket"), "{err}");
    }

    #[tokio::test]
    async fn a_git_command_past_its_limit_is_killed_with_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let started = std::time::Instant::now();
        let err = git_within(
            "fetch",
            Command::new("sh").arg("-c").arg(format!(
                "sleep 3005 & echo $! > {}; wait",
                pidfile.display()
            )),
            Duration::from_millis(300),
        )
        .await
        .expect_err("timed out");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, SourceError::GitTimedOut { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("git fetch did not finish within 300ms"),
            "{err}"
        );
        let pid = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "git's child {pid} survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs git in `dir` with a fixed identity, panicking on failure; returns stdout.
    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.email=t@opus.invalid", "-c", "user.name=t"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[tokio::test]
    async fn fetch_commit_checks_out_one_commit_and_names_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        git_in(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("a.txt"), "first").expect("write");
        git_in(&repo, &["add", "-A"]);
        git_in(&repo, &["commit", "-q", "-m", "first"]);
        let first = git_in(&repo, &["rev-parse", "HEAD"]);
        std::fs::write(repo.join("a.txt"), "second").expect("write");
        git_in(&repo, &["commit", "-q", "-am", "second"]);
        let url = format!("file://{}", repo.display());

        // An older commit than the branch's head.
        let ws = dir.path().join("ws");
        fetch_commit(&url, &first, &ws, None).await.expect("fetch");
        assert_eq!(
            std::fs::read_to_string(ws.join("a.txt")).expect("read"),
            "first"
        );

        let missing = "0123456789abcdef0123456789abcdef01234567";
        let err = fetch_commit(&url, missing, &dir.path().join("ws2"), None)
            .await
            .expect_err("no such commit");
        assert!(
            err.to_string().starts_with(&format!(
                "git checkout failed: commit {missing} is not in {url}"
            )),
            "{err}"
        );
        let err = fetch_commit(&url, "main; rm -rf /", &dir.path().join("ws3"), None)
            .await
            .expect_err("not a commit id");
        assert!(err.to_string().contains("is not a commit id"), "{err}");
    }
}
