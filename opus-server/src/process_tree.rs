//! Every process a build's steps start, found and ended together: at the build's end (success
//! included), at its timeout or cancel, and at the next start of opusd after a crash.
//!
//! Two ways to find them ([`Containment`]):
//!
//! - A cgroup (v2) per build, when opusd is told to (`--build-cgroups`) and the machine lets it
//!   create one below its own cgroup: a step
//!   joins it before it runs anything (the step's shell writes its own pid into the cgroup's
//!   `cgroup.procs`, then runs the step itself: no second shell), and nothing started below it can
//!   leave. Ending the build writes
//!   `cgroup.kill` (or, on kernels before 5.14, freezes the cgroup and kills what it holds).
//! - A sweep of `/proc`, for where there is no cgroup to create (a build pod, a container with
//!   `/sys/fs/cgroup` read-only) or a step could not join it: a process belongs to the build when
//!   it carries the build's scope in its environment ([`SCOPE_ENV`], inherited by everything a
//!   step starts), is in the process group of one of the build's steps (which `setsid` leaves but
//!   the scope does not), or descends from such a process. The sweep repeats until it finds
//!   nothing, so children forked while it runs are caught too. It only reads the processes whose
//!   pid the kernel can have handed out since the build's first step (`PidWindow`), and a build
//!   whose steps all joined its cgroup skips it.
//!
//! The sweep is the default: it costs about a millisecond at the end of a build. A cgroup also
//! holds a process that clears its environment and detaches (`env -i setsid ...`), but each step
//! joining it waits for an RCU grace period in the kernel (10 to 15 ms measured here; nothing
//! with cgroup2 mounted `favordynmods`), which is most of a trivial build's time.
//!
//! opusd does not make itself a child subreaper: orphans it adopted would become its zombies, and
//! the only way to reap an unknown child (`waitpid(-1)`) would also steal the exit status of the
//! children tokio waits for (git, tar). Orphans go to init, which reaps them, and the scope still
//! finds them.
//!
//! The scope and the cgroup's name derive from the build's workspace path, which opusd knows again
//! after a restart: [`kill_leftovers`] ends what a build that was running when opusd was killed
//! left behind.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

/// The environment variable that marks every process of a build: its value is the build's scope.
pub const SCOPE_ENV: &str = "OPUS_BUILD_SCOPE";

/// How long ending a build waits for its cgroup to empty before it gives up on removing it.
const CGROUP_EMPTY_WAIT: Duration = Duration::from_secs(2);

/// How many times a sweep looks again for processes forked while it was killing.
const SWEEP_ROUNDS: usize = 50;

/// What a step's shell runs when the build has a cgroup: it moves itself into the cgroup (`$1` is
/// its `cgroup.procs`), or, should that fail, creates the file `$2` (so that the end of the build
/// knows to sweep); then it runs the step (`$3`) itself, with no arguments, as `sh -c` would.
const JOIN_CGROUP: &str = r#"{ echo $$ > "$1"; } 2>/dev/null || : > "$2"; eval "set --; $3""#;

/// How a build's processes are kept together, so that all of them end with it (see the module
/// documentation for what each finds and costs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Containment {
    /// Found in `/proc` by the build's scope, its steps' process groups, and parentage.
    #[default]
    Sweep,
    /// A cgroup per build where one can be created (and the sweep where it cannot).
    Cgroup,
}

/// Whether opusd can create build cgroups on this machine: `Ok` with the folder they go in, or
/// why not (for the log at start when `--build-cgroups` is asked for).
pub fn cgroups_available() -> Result<PathBuf, String> {
    let own = own_cgroup().ok_or("no cgroup v2 hierarchy is mounted")?;
    let probe = own.join(format!("opus-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| format!("cannot create a cgroup in {}: {e}", own.display()))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(own)
}

/// A build's cgroup, and the file a step creates when it could not join it.
struct Cgroup {
    dir: PathBuf,
    unjoined: PathBuf,
}

/// The processes of one running build. Ends them all when dropped, should [`BuildProcesses::end`]
/// not have been called.
pub struct BuildProcesses {
    scope: String,
    cgroup: Option<Cgroup>,
    /// The build's steps, as the sweep looks for what they started.
    steps: Mutex<StartedSteps>,
    ended: AtomicBool,
}

impl BuildProcesses {
    /// Starts tracking the processes of the build whose workspace is `workspace`, kept together
    /// as `containment` says (a cgroup only where the machine allows one).
    pub fn new(workspace: &Path, containment: Containment) -> BuildProcesses {
        let scope = scope_of(workspace);
        let cgroup = match containment {
            Containment::Cgroup => create_cgroup(&scope),
            Containment::Sweep => None,
        }
        .map(|dir| Cgroup {
            dir,
            unjoined: std::env::temp_dir().join(format!("opus-{scope}.unjoined")),
        });
        match &cgroup {
            Some(c) => tracing::debug!(cgroup = %c.dir.display(), "build processes in a cgroup"),
            None => tracing::debug!("no cgroup for the build: its processes are found in /proc"),
        }
        BuildProcesses {
            scope,
            cgroup,
            steps: Mutex::default(),
            ended: AtomicBool::new(false),
        }
    }

    /// The cgroup that holds the build's processes, when there is one.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(|c| c.dir.as_path())
    }

    /// Starts `step` with the shell `sh` (`sh -c <step>`, `$0` being `sh`), in its own process
    /// group, marked with the build's scope, in the build's cgroup when it has one; `configure`
    /// sets the rest (folder, stdio, environment: with `envs`, not `env_clear`, which would drop
    /// the scope).
    pub fn spawn_step(
        &self,
        sh: &Path,
        step: &str,
        configure: impl FnOnce(&mut Command),
    ) -> std::io::Result<Child> {
        let mut cmd = Command::new(sh);
        cmd.arg0("sh").arg("-c");
        match &self.cgroup {
            Some(cgroup) => cmd
                .arg(JOIN_CGROUP)
                .arg("sh")
                .arg(cgroup.dir.join("cgroup.procs"))
                .arg(&cgroup.unjoined)
                .arg(step),
            None => cmd.arg(step),
        };
        cmd.env_clear()
            .env(SCOPE_ENV, &self.scope)
            .process_group(0)
            .kill_on_drop(true);
        configure(&mut cmd);
        let child = cmd.spawn()?;
        self.started(child.id());
        Ok(child)
    }

    /// Whether ending the build must sweep `/proc` for its processes: it has no cgroup, or a step
    /// could not join it.
    fn needs_sweep(&self) -> bool {
        self.cgroup.as_ref().is_none_or(|c| c.unjoined.exists())
    }

    /// Records a started step (its pid, which is its process group).
    fn started(&self, pid: Option<u32>) {
        let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        if steps.window.is_none() {
            steps.window = Some(PidWindow::open(pid));
        }
        steps.groups.push(pid);
    }

    /// Kills every process of the build and waits until they are gone (the cgroup empty, the
    /// sweep finding nothing), then removes the cgroup. Returns how many processes the sweep
    /// killed (the cgroup's are not counted).
    pub async fn end(&self) -> usize {
        if self.ended.swap(true, Ordering::SeqCst) {
            return 0;
        }
        let began = Instant::now();
        let scope = self.scope.clone();
        let cgroup = self.cgroup().map(Path::to_path_buf);
        let sweep = self.needs_sweep().then(|| self.started_steps());
        let unjoined = self.cgroup.as_ref().map(|c| c.unjoined.clone());
        let killed = tokio::task::spawn_blocking(move || {
            let killed = end_blocking(&scope, cgroup.as_deref(), sweep);
            if let Some(file) = unjoined {
                let _ = std::fs::remove_file(file);
            }
            killed
        })
        .await
        .unwrap_or(0);
        tracing::debug!(killed, took = ?began.elapsed(), "the build's processes ended");
        killed
    }

    fn started_steps(&self) -> StartedSteps {
        self.steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for BuildProcesses {
    fn drop(&mut self) {
        if !self.ended.swap(true, Ordering::SeqCst) {
            let sweep = self.needs_sweep().then(|| self.started_steps());
            end_blocking(&self.scope, self.cgroup(), sweep);
            if let Some(c) = &self.cgroup {
                let _ = std::fs::remove_file(&c.unjoined);
            }
        }
    }
}

/// Ends what the build whose workspace was `workspace` left running when opusd stopped (killed, so
/// it could not end them itself): its cgroup's processes and every process marked with its scope.
/// Returns how many processes were found outside a cgroup.
pub fn kill_leftovers(workspace: &Path) -> usize {
    let scope = scope_of(workspace);
    let cgroup = own_cgroup()
        .map(|dir| dir.join(cgroup_name(&scope)))
        .filter(|dir| dir.is_dir());
    end_blocking(&scope, cgroup.as_deref(), Some(StartedSteps::default()))
}

/// What the sweep knows of a build's steps.
#[derive(Debug, Clone, Default)]
struct StartedSteps {
    /// Their process groups (each step leads its own).
    groups: Vec<i32>,
    /// The pids handed out since the first one started: no other belongs to the build. `None`
    /// when unknown (every process is looked at).
    window: Option<PidWindow>,
}

/// The pids the kernel can have handed out since a build's first step: it gives them in a cycle
/// (the next free one after the last, wrapping at `pid_max`), so they lie between the first
/// step's pid and the last one handed out, unless the cycle may have come round again. That takes
/// `pid_max` forks, so a window is trusted for `pid_max` / [`FORKS_PER_SECOND`] seconds (4 s at
/// Linux's usual 4194304); a longer build's sweep reads every process, which costs it nothing
/// noticeable.
#[derive(Debug, Clone, Copy)]
struct PidWindow {
    /// The first step's pid.
    first: i32,
    /// When it started.
    opened: Instant,
}

/// More forks a second than any machine makes, for how long a [`PidWindow`] can be trusted.
const FORKS_PER_SECOND: u64 = 1_000_000;

impl PidWindow {
    /// The window opened by the step whose pid is `first`.
    fn open(first: i32) -> PidWindow {
        PidWindow {
            first,
            opened: Instant::now(),
        }
    }

    /// Whether a process with `pid` can have been started since the window opened, as of now;
    /// `None` when any pid can (the cycle may have come round, or the kernel does not say).
    fn test(&self) -> Option<impl Fn(i32) -> bool + use<>> {
        let trusted = Duration::from_secs_f64(*pid_max()? as f64 / FORKS_PER_SECOND as f64);
        if self.opened.elapsed() >= trusted {
            return None;
        }
        let last: i32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let first = self.first;
        Some(move |pid: i32| {
            if last >= first {
                (first..=last).contains(&pid)
            } else {
                pid >= first || pid <= last
            }
        })
    }
}

/// The kernel's `pid_max`, read once.
fn pid_max() -> Option<&'static u64> {
    static PID_MAX: OnceLock<Option<u64>> = OnceLock::new();
    PID_MAX
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .as_ref()
}

/// Kills the build's cgroup, then (when `sweep` names the steps' process groups) every process
/// marked with its scope; removes the cgroup. Returns how many processes the sweep killed.
fn end_blocking(scope: &str, cgroup: Option<&Path>, sweep: Option<StartedSteps>) -> usize {
    if let Some(cgroup) = cgroup {
        kill_cgroup(cgroup);
    }
    let killed = sweep.map_or(0, |steps| sweep_scope(scope, &steps));
    if let Some(cgroup) = cgroup {
        remove_cgroup(cgroup);
    }
    killed
}

/// The scope of a build: a digest of its workspace's absolute path (unique per build and per data
/// dir, and the same again after a restart; a runner's relative `.` is made absolute so that two
/// runners on one machine differ).
fn scope_of(workspace: &Path) -> String {
    let absolute = std::path::absolute(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..12])
}

fn cgroup_name(scope: &str) -> String {
    format!("opus-build-{scope}")
}

/// opusd's own cgroup (v2) directory, if the unified hierarchy is mounted: read once.
fn own_cgroup() -> Option<PathBuf> {
    static OWN: OnceLock<Option<PathBuf>> = OnceLock::new();
    OWN.get_or_init(find_own_cgroup).clone()
}

fn find_own_cgroup() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(cgroup2_mount_point)?;
    Some(mount.join(own.trim_start_matches('/')))
}

/// The mount point of a `/proc/self/mountinfo` line when it mounts cgroup2 at its root.
fn cgroup2_mount_point(line: &str) -> Option<PathBuf> {
    let (fields, fs) = line.split_once(" - ")?;
    if fs.split(' ').next() != Some("cgroup2") {
        return None;
    }
    let mut fields = fields.split(' ');
    let root = fields.nth(3)?;
    let point = fields.next()?;
    // Mountinfo escapes spaces and such as octal (`\040`); such a mount point is not used.
    (root == "/" && !point.contains('\\')).then(|| PathBuf::from(point))
}

fn create_cgroup(scope: &str) -> Option<PathBuf> {
    let dir = own_cgroup()?.join(cgroup_name(scope));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        // A previous build of the same workspace path left it: empty it and use it.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => kill_cgroup(&dir),
        Err(e) => {
            tracing::debug!(cgroup = %dir.display(), error = %e, "cannot create a cgroup");
            return None;
        }
    }
    dir.join("cgroup.procs").exists().then_some(dir)
}

/// Kills everything in a cgroup and waits (bounded) until it is empty.
fn kill_cgroup(cgroup: &Path) {
    if std::fs::write(cgroup.join("cgroup.kill"), "1").is_err() {
        // Before Linux 5.14: freeze so that nothing forks, kill each, thaw so that they die.
        let _ = std::fs::write(cgroup.join("cgroup.freeze"), "1");
        for pid in cgroup_pids(cgroup) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::write(cgroup.join("cgroup.freeze"), "0");
    }
    let deadline = Instant::now() + CGROUP_EMPTY_WAIT;
    while cgroup_populated(cgroup) {
        if Instant::now() > deadline {
            tracing::warn!(cgroup = %cgroup.display(), "processes of the build are still in its cgroup");
            return;
        }
        for pid in cgroup_pids(cgroup) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cgroup_pids(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether a cgroup still holds a live process (zombies do not count: `cgroup.events`).
fn cgroup_populated(cgroup: &Path) -> bool {
    match std::fs::read_to_string(cgroup.join("cgroup.events")) {
        Ok(events) => events.lines().any(|l| l.trim() == "populated 1"),
        Err(_) => !cgroup_pids(cgroup).is_empty(),
    }
}

fn remove_cgroup(cgroup: &Path) {
    let deadline = Instant::now() + CGROUP_EMPTY_WAIT;
    loop {
        match std::fs::remove_dir(cgroup) {
            Ok(()) => return,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) if Instant::now() > deadline => {
                tracing::warn!(cgroup = %cgroup.display(), error = %e, "cannot remove the build's cgroup");
                return;
            }
            Err(_) => {
                kill_cgroup(cgroup);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone, Copy)]
struct ProcInfo {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    zombie: bool,
}

/// Kills, until none is left, the processes that carry `scope`, are in one of the steps' process
/// groups, or descend from one that does (only those started since the first step can).
/// Returns how many it killed.
fn sweep_scope(scope: &str, steps: &StartedSteps) -> usize {
    let marker = format!("{SCOPE_ENV}={scope}");
    let me = std::process::id() as i32;
    let mut killed = HashSet::new();
    for _ in 0..SWEEP_ROUNDS {
        let procs = match steps.window.as_ref().and_then(PidWindow::test) {
            Some(in_window) => processes(in_window),
            None => processes(|_| true),
        };
        let mut members: HashSet<i32> = procs
            .iter()
            .filter(|p| {
                p.pid != me
                    && !p.zombie
                    && (steps.groups.contains(&p.pgrp) || carries(p.pid, marker.as_bytes()))
            })
            .map(|p| p.pid)
            .collect();
        // Their descendants, whatever their environment or group.
        loop {
            let before = members.len();
            for p in &procs {
                if p.pid != me && !p.zombie && members.contains(&p.ppid) {
                    members.insert(p.pid);
                }
            }
            if members.len() == before {
                break;
            }
        }
        if members.is_empty() {
            break;
        }
        for &pid in &members {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.len()
}

/// Every process in `/proc` (those that vanish while read are left out).
fn processes(pids: impl Fn(i32) -> bool) -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pids(pid))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(pid, &stat)
        })
        .collect()
}

/// Reads state, parent and process group from a `/proc/<pid>/stat` line. The command name (in
/// parentheses) may hold spaces and parentheses, so the fields are read after its last `)`.
fn parse_stat(pid: i32, stat: &str) -> Option<ProcInfo> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        pgrp,
        zombie: state == "Z" || state == "X",
    })
}

/// Whether a process's environment holds `marker` (`NAME=value`) as one entry.
fn carries(pid: i32, marker: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|entry| entry == marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let p = parse_stat(42, "42 (a) b (c)) S 7 42 42 0 -1").expect("parsed");
        assert_eq!((p.pid, p.ppid, p.pgrp, p.zombie), (42, 7, 42, false));
        let z = parse_stat(43, "43 (sh) Z 1 43 43 0").expect("parsed");
        assert!(z.zombie);
        assert!(parse_stat(44, "44 (broken").is_none());
    }

    #[test]
    fn the_pid_window_holds_what_started_since_and_not_what_started_before() {
        let spawn = || {
            let mut child = std::process::Command::new("true").spawn().expect("spawn");
            let pid = i32::try_from(child.id()).expect("a pid");
            child.wait().expect("wait");
            pid
        };
        let before = spawn();
        let first = spawn();
        let window = PidWindow::open(first);
        let after = spawn();
        let test = window.test().expect("the kernel says its last pid");
        assert!(
            test(first) && test(after),
            "{first} and {after} are in the window"
        );
        assert!(!test(before), "{before} started before the window");
        assert!(!test(1), "init");
    }

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let v2 = "35 25 0:30 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount_point(v2),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v1 = "36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount_point(v1), None);
        let nested = "37 25 0:30 /sub /mnt/cg rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount_point(nested), None);
    }

    #[test]
    fn scopes_differ_per_workspace_and_stay_the_same_across_restarts() {
        let a = scope_of(Path::new("/data/work/1"));
        assert_eq!(a, scope_of(Path::new("/data/work/1")));
        assert_ne!(a, scope_of(Path::new("/data/work/2")));
        assert_ne!(a, scope_of(Path::new("/other/work/1")));
        assert_eq!(a.len(), 24);
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(scope_of(Path::new("ws")), scope_of(&cwd.join("ws")));
    }

    /// Starts `sh -c script` as a step of `processes` would be.
    fn start(processes: &BuildProcesses, script: &str) -> tokio::process::Child {
        processes
            .spawn_step(Path::new("/bin/sh"), script, |cmd| {
                cmd.env("PATH", "/bin:/usr/bin")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            })
            .expect("spawn")
    }

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(pid, &s))
            .is_some_and(|p| !p.zombie)
    }

    async fn pid_in(file: &Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(file)
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn background_and_setsid_processes_end_with_the_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let processes = BuildProcesses::new(&dir.path().join("work"), Containment::Cgroup);
        let bg = dir.path().join("bg");
        let detached = dir.path().join("detached");
        let script = format!(
            "sleep 3001 & echo $! > {}; setsid sh -c 'echo $$ > {}; exec sleep 3002' &",
            bg.display(),
            detached.display()
        );
        let mut step = start(&processes, &script);
        assert!(step.wait().await.expect("wait").success());
        let (bg, detached) = (pid_in(&bg).await, pid_in(&detached).await);
        assert!(alive(bg) && alive(detached));
        processes.end().await;
        assert!(!alive(bg), "background sleep survived");
        assert!(!alive(detached), "setsid sleep survived");
        if let Some(cgroup) = processes.cgroup() {
            assert!(!cgroup.exists(), "cgroup left behind");
        }
    }

    #[tokio::test]
    async fn without_a_cgroup_the_scope_finds_what_left_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut processes = BuildProcesses::new(&dir.path().join("work"), Containment::Cgroup);
        // The sweep alone: as in a container where no cgroup can be made.
        if let Some(cgroup) = processes.cgroup.take() {
            remove_cgroup(&cgroup.dir);
        }
        let detached = dir.path().join("detached");
        let script = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 3003' &",
            detached.display()
        );
        let mut step = start(&processes, &script);
        assert!(step.wait().await.expect("wait").success());
        let detached = pid_in(&detached).await;
        assert!(processes.end().await >= 1);
        assert!(!alive(detached), "setsid sleep survived the sweep");
    }

    #[tokio::test]
    async fn a_step_that_cannot_join_the_cgroup_runs_and_its_processes_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut processes = BuildProcesses::new(&dir.path().join("work"), Containment::Cgroup);
        if let Some(cgroup) = processes.cgroup.take() {
            remove_cgroup(&cgroup.dir);
        }
        // A cgroup whose `cgroup.procs` cannot be written.
        processes.cgroup = Some(Cgroup {
            dir: dir.path().join("no-such-cgroup"),
            unjoined: dir.path().join("unjoined"),
        });
        let (ran, detached) = (dir.path().join("ran"), dir.path().join("detached"));
        let script = format!(
            "echo yes > {}; setsid sh -c 'echo $$ > {}; exec sleep 3005' &",
            ran.display(),
            detached.display()
        );
        let mut step = start(&processes, &script);
        assert!(step.wait().await.expect("wait").success());
        assert!(ran.exists(), "the step ran outside the cgroup");
        assert!(processes.needs_sweep());
        let detached = pid_in(&detached).await;
        assert!(processes.end().await >= 1);
        assert!(!alive(detached), "setsid sleep survived the sweep");
        assert!(!dir.path().join("unjoined").exists(), "marker left behind");
    }

    #[tokio::test]
    async fn a_step_in_the_cgroup_runs_as_sh_c_would_with_no_arguments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let processes = BuildProcesses::new(&dir.path().join("work"), Containment::Cgroup);
        let out = dir.path().join("out");
        let script = format!("echo \"$# [$1] $0\" > {}; exit 7", out.display());
        let mut step = start(&processes, &script);
        assert_eq!(step.wait().await.expect("wait").code(), Some(7));
        let text = std::fs::read_to_string(&out).expect("written");
        assert_eq!(text.trim(), "0 [] sh");
        if processes.cgroup().is_some() {
            assert!(!processes.needs_sweep(), "the step joined the cgroup");
        }
        processes.end().await;
    }

    #[tokio::test]
    async fn leftovers_of_a_build_are_found_again_by_its_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let workspace = dir.path().join("work");
        let processes = BuildProcesses::new(&workspace, Containment::Cgroup);
        let bg = dir.path().join("bg");
        let mut step = start(
            &processes,
            &format!("sleep 3004 & echo $! > {}", bg.display()),
        );
        assert!(step.wait().await.expect("wait").success());
        let bg = pid_in(&bg).await;
        // As if opusd had been killed: the handle is forgotten, not ended.
        std::mem::forget(processes);
        assert!(alive(bg));
        kill_leftovers(&workspace);
        assert!(!alive(bg), "leftover survived");
        assert!(!own_cgroup().is_some_and(|c| c.join(cgroup_name(&scope_of(&workspace))).exists()));
    }
}
