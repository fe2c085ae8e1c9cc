//! Running a build's steps as child processes: what the local executor does in opusd, and what
//! `opusd runner` does inside a build pod.
//!
//! Each step is `sh -c <step>` in the workspace, in its own process group, and every process the
//! steps start is tracked by [`crate::process_tree`], so that cancel, timeout and the build's end
//! kill everything they started (npm, node, their children, what they left in the background).
//! Output lines go to a [`LogSink`] as they come, cut at a fixed length
//! ([`crate::output_lines`]): the build log in opusd (which masks secrets), or the stream back to
//! opusd in a runner.
//!
//! `sh` is looked up in the step's own `PATH` here, and started by its path: so the standard
//! library starts it with `posix_spawn` (a vfork-style clone) rather than `fork`, which copies
//! opusd's page tables and then makes opusd pay copy-on-write faults while the child starts.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::logs::BuildLog;
use crate::output_lines::LineSplitter;
use crate::process_tree::{BuildProcesses, Containment};

/// Where the lines of a build go: the seam between running steps and keeping their output. opusd
/// writes them to the build's log file ([`BuildLog`]); `opusd runner` sends them to opusd
/// (`RunnerService.PushLogs`), which writes them to the same log.
pub trait LogSink: Clone + Send + Sync + 'static {
    /// One line of output (`stream` is `stdout` or `stderr`) or of Opus itself (`opus`).
    fn line(&self, step: &str, stream: &str, text: &str);

    /// A line from Opus itself.
    fn opus(&self, step: &str, text: &str) {
        self.line(step, "opus", text);
    }
}

impl LogSink for BuildLog {
    fn line(&self, step: &str, stream: &str, text: &str) {
        BuildLog::line(self, step, stream, text);
    }
}

/// Why the steps did not all succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepFailure {
    /// A step exited non-zero (or was killed by a signal).
    Exited {
        /// 1-based step number.
        step: usize,
        /// The command.
        command: String,
        /// Exit code, or None for a signal.
        code: Option<i32>,
    },
    /// The build ran past its time limit.
    TimedOut(Duration),
    /// Cancelled by a user or a newer push.
    Cancelled,
    /// The step could not be started at all.
    Spawn(String),
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepFailure::Exited {
                step,
                command,
                code: Some(code),
            } => {
                write!(f, "step {step} `{command}` exited with code {code}")
            }
            StepFailure::Exited {
                step,
                command,
                code: None,
            } => {
                write!(f, "step {step} `{command}` was killed by a signal")
            }
            StepFailure::TimedOut(limit) => {
                write!(
                    f,
                    "timed out after {} (build.timeout in opus.yml)",
                    humantime::format_duration(*limit)
                )
            }
            StepFailure::Cancelled => write!(f, "cancelled"),
            StepFailure::Spawn(e) => write!(f, "could not start the step: {e}"),
        }
    }
}

/// How long the end of a step waits for the rest of its output once its shell has exited: output
/// of a process it left running in the background is read on while the build goes on, not waited
/// for.
const OUTPUT_GRACE: Duration = Duration::from_millis(250);

/// How long the end of the build waits for the last output once every process is killed.
const FINAL_OUTPUT_WAIT: Duration = Duration::from_millis(500);

/// Runs `steps` in order in `workspace` with `env`, stopping at the first failure, at
/// `cancel`, or when `timeout` has passed since the first step started. Whatever way it ends,
/// every process the steps started is killed before it returns ([`BuildProcesses`]).
pub async fn run_steps<L: LogSink>(
    steps: &[String],
    workspace: &Path,
    env: &BTreeMap<String, String>,
    log: &L,
    cancel: &CancellationToken,
    timeout: Duration,
    containment: Containment,
) -> Result<(), StepFailure> {
    let inherited = inherited_env();
    let path = env
        .get("PATH")
        .or_else(|| inherited.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v));
    let mut run = StepRun {
        sh: shell(path.map(String::as_str), workspace),
        workspace,
        inherited,
        env,
        log,
        cancel,
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
        processes: BuildProcesses::new(workspace, containment),
        pumps: Vec::new(),
    };
    let mut result = Ok(());
    for (i, command) in steps.iter().enumerate() {
        result = run.step(i + 1, command).await;
        if result.is_err() {
            break;
        }
    }
    run.end().await;
    result
}

/// The steps of one build as they run: what each is started with, the limits, the processes
/// they started and the tasks copying their output into the log.
struct StepRun<'a, L: LogSink> {
    sh: PathBuf,
    workspace: &'a Path,
    inherited: Vec<(String, String)>,
    env: &'a BTreeMap<String, String>,
    log: &'a L,
    cancel: &'a CancellationToken,
    deadline: tokio::time::Instant,
    timeout: Duration,
    processes: BuildProcesses,
    pumps: Vec<JoinHandle<()>>,
}

impl<L: LogSink> StepRun<'_, L> {
    /// Runs step `number` (`command`) until its shell exits, then reads the rest of its output
    /// for a moment; fails when it exits non-zero, is cancelled or runs past the deadline.
    async fn step(&mut self, number: usize, command: &str) -> Result<(), StepFailure> {
        let step = format!("step {number}");
        self.log.opus(&step, &format!("$ {command}"));
        let started = tokio::time::Instant::now();
        let mut child = self
            .processes
            .spawn_step(&self.sh, command, |cmd| {
                cmd.current_dir(self.workspace)
                    .envs(self.inherited.iter().cloned())
                    .envs(self.env)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            })
            .map_err(|e| StepFailure::Spawn(e.to_string()))?;
        let first = self.pumps.len();
        if let Some(s) = child.stdout.take() {
            let log = self.log.clone();
            self.pumps
                .push(tokio::spawn(pump(s, log, step.clone(), "stdout")));
        }
        if let Some(s) = child.stderr.take() {
            let log = self.log.clone();
            self.pumps
                .push(tokio::spawn(pump(s, log, step.clone(), "stderr")));
        }
        // The step ends when its shell exits, not when its output closes (which a process left
        // in the background holds open); the rest of its output is read for a moment.
        let (cancel, deadline, timeout) = (self.cancel, self.deadline, self.timeout);
        let pumps = &mut self.pumps[first..];
        let ran = async {
            let status = child
                .wait()
                .await
                .map_err(|e| StepFailure::Spawn(e.to_string()))?;
            let rest_of_output = async {
                for pump in pumps {
                    let _ = pump.await;
                }
            };
            let _ = tokio::time::timeout(OUTPUT_GRACE, rest_of_output).await;
            Ok(status)
        };
        let status = tokio::select! {
            status = ran => status,
            () = cancel.cancelled() => Err(StepFailure::Cancelled),
            () = tokio::time::sleep_until(deadline) => Err(StepFailure::TimedOut(timeout)),
        };
        // `opus builds <build>` reads step durations from these lines.
        let took = started.elapsed().as_secs_f64();
        self.log
            .opus(&step, &format!("{step} finished in {took:.1} s"));
        let status = status?;
        if !status.success() {
            let failure = StepFailure::Exited {
                step: number,
                command: command.to_owned(),
                code: status.code(),
            };
            self.log.opus(&step, &failure.to_string());
            return Err(failure);
        }
        Ok(())
    }

    /// Kills whatever the steps left running, then reads their last output (bounded: a process
    /// that escaped, see process_tree, could hold a pipe open).
    async fn end(mut self) {
        let killed = self.processes.end().await;
        if killed > 0 {
            tracing::debug!(killed, "ended processes the steps left running");
        }
        let last_output = async {
            for pump in self.pumps.iter_mut().filter(|p| !p.is_finished()) {
                let _ = pump.await;
            }
        };
        let _ = tokio::time::timeout(FINAL_OUTPUT_WAIT, last_output).await;
        for pump in &self.pumps {
            pump.abort();
        }
    }
}

/// Where `sh` is for a step whose `PATH` is `path` (`execvp`'s default `/bin:/usr/bin` when it
/// has none): the first executable `sh` in it, relative entries (and the empty one) taken from
/// the workspace as the step would. Plain `sh` when there is none, so that starting the step
/// fails the way it always did.
fn shell(path: Option<&str>, workspace: &Path) -> PathBuf {
    for dir in path.unwrap_or("/bin:/usr/bin").split(':') {
        let candidate = workspace.join(dir).join("sh");
        let executable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
            return candidate;
        }
    }
    PathBuf::from("sh")
}

/// What steps inherit from opusd's own environment: everything (PATH, HOME, proxies, CA bundles
/// that npm needs) except opusd's own `OPUS_*` settings, which may hold the API token.
fn inherited_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !k.starts_with("OPUS_"))
        .collect()
}

/// Copies a child's output into the log, one line at a time (invalid UTF-8 replaced), in bounded
/// memory: lines longer than [`MAX_LINE`](crate::output_lines::MAX_LINE) are cut.
async fn pump<L: LogSink>(
    mut stream: impl AsyncRead + Unpin,
    log: L,
    step: String,
    name: &'static str,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut lines = LineSplitter::default();
    let emit = |text: &str| log.line(&step, name, text);
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.feed(&chunk[..n], emit),
        }
    }
    lines.finish(emit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn sh_is_found_in_the_steps_path_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).expect("mkdir");
        }
        // Not executable: skipped, as execvp would.
        std::fs::write(a.join("sh"), "").expect("write");
        executable(&b.join("sh"));
        executable(&c.join("sh"));
        let path = format!(
            "{}:/nonexistent:{}:{}",
            a.display(),
            b.display(),
            c.display()
        );
        assert_eq!(shell(Some(&path), Path::new("/")), b.join("sh"));
    }

    #[test]
    fn relative_path_entries_are_taken_from_the_workspace() {
        let workspace = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(workspace.path().join("bin")).expect("mkdir");
        executable(&workspace.path().join("bin").join("sh"));
        assert_eq!(
            shell(Some("/nonexistent:bin"), workspace.path()),
            workspace.path().join("bin").join("sh")
        );
        executable(&workspace.path().join("sh"));
        assert_eq!(
            shell(Some(":/nonexistent"), workspace.path()),
            workspace.path().join("sh")
        );
    }

    #[test]
    fn without_a_shell_in_path_the_step_fails_to_start() {
        let workspace = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            shell(Some("/nonexistent"), workspace.path()),
            PathBuf::from("sh")
        );
        // No PATH at all: execvp's default.
        assert!(shell(None, workspace.path()).is_absolute());
    }

    #[tokio::test]
    async fn a_step_whose_path_has_no_shell_is_a_spawn_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = crate::logs::LogHub::new(dir.path().join("logs"), 1 << 20).expect("hub");
        let log = hub.open(1, Vec::new()).expect("log");
        let env = BTreeMap::from([("PATH".to_owned(), "/nonexistent".to_owned())]);
        let failure = run_steps(
            &["true".to_owned()],
            dir.path(),
            &env,
            &log,
            &CancellationToken::new(),
            Duration::from_secs(10),
            Containment::Sweep,
        )
        .await
        .expect_err("no shell");
        assert!(matches!(failure, StepFailure::Spawn(_)), "{failure:?}");
    }

    #[tokio::test]
    async fn steps_run_with_sh_in_their_workspace_and_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = crate::logs::LogHub::new(dir.path().join("logs"), 1 << 20).expect("hub");
        let log = hub.open(1, Vec::new()).expect("log");
        let env = BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
        let steps = [
            // $0 is `sh`, as with `sh -c`; the step leads its own process group.
            r#"echo "$0 $GREETING" > out && read -r _ _ _ _ g _ < /proc/$$/stat && [ "$g" = "$$" ] && echo ok >> out"#
                .to_owned(),
        ];
        run_steps(
            &steps,
            dir.path(),
            &env,
            &log,
            &CancellationToken::new(),
            Duration::from_secs(10),
            // The step's shell joins the cgroup first, where the machine has one.
            Containment::Cgroup,
        )
        .await
        .expect("step succeeds");
        let out = std::fs::read_to_string(dir.path().join("out")).expect("out");
        assert_eq!(out, "sh hi\nok\n");
    }
}
