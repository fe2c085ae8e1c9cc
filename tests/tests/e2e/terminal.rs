//! What `opus` does on a terminal, driven through tmux (a real pseudo-terminal, read back with
//! `capture-pane`): the status line of a followed build, and the hidden, confirmed prompt of
//! `opus secret set`; and that neither shows when the streams are not terminals.
//!
//! tmux is on this project's machines; where it is missing these tests say so and pass, unless
//! `OPUS_REQUIRE_TMUX=1` makes that a failure (as `OPUS_REQUIRE_S3` does for the S3 tests).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use opus_tests::{Daemon, bin, site_with_opus_yml};

const WRITE_DIST: &str = "mkdir -p dist && echo '<h1>hello</h1>' > dist/index.html";

/// A tmux server of its own (its socket in a temporary folder) running one command in a window
/// of 160x40; killed on drop.
struct Terminal {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Terminal {
    /// Runs `opus <args>` against `d` in a new terminal; `None` when tmux is not installed.
    fn opus(d: &Daemon, args: &str) -> Option<Terminal> {
        let found = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("OPUS_REQUIRE_TMUX").is_none(),
                "tmux is not installed (apt-get install tmux)"
            );
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("tmux.sock");
        // The exit code stays on the screen; the shell then waits to be killed with the server.
        let script = format!(
            "OPUS_SERVER={} {} {args}; echo \"exit=$?\"; sleep 600",
            d.server,
            bin("opus").display()
        );
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "40",
                &script,
            ])
            .env_remove("TMUX")
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        Some(Terminal { socket, _dir: dir })
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// What the terminal shows now.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Types `text` and presses Enter.
    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
        self.tmux(&["send-keys", "Enter"]);
    }

    /// Waits until the screen satisfies `cond`; panics with the screen after `secs`.
    fn wait_for(&self, what: &str, secs: u64, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {secs}s; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// The seconds the status line shows for the line holding `what` (`⠁   2s step 1: sleep 6`).
fn shown_seconds(screen: &str, what: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains(what))?;
    line.split_whitespace()
        .find_map(|word| word.strip_suffix('s')?.parse().ok())
}

fn add_site(d: &Daemon, name: &str, opus_yml: &str) {
    let dir = site_with_opus_yml(d.root.path(), name, opus_yml);
    d.opus(&["add", name, dir.to_str().expect("utf-8")]).ok();
}

#[test]
fn a_silent_step_shows_its_name_and_time_on_a_terminal() {
    let d = Daemon::start();
    // Long enough that the status line shows while the whole suite loads both cores.
    add_site(
        &d,
        "web",
        &format!("build:\n  steps:\n    - sleep 6\n    - {WRITE_DIST}\n"),
    );
    let Some(term) = Terminal::opus(&d, "trigger web --wait") else {
        return;
    };
    // While the step prints nothing, the status line names it and counts its seconds.
    term.wait_for("status line with a running time", 20, |s| {
        shown_seconds(s, "step 1: sleep 6").is_some_and(|secs| secs >= 1)
    });
    let done = term.wait_for("the end of the build", 30, |s| s.contains("exit="));
    assert!(
        done.contains("web#1 succeeded") && done.contains("exit=0"),
        "{done}"
    );
    assert!(done.contains("==> step 1 finished in"), "{done}");
    // The status line is gone once the build ended.
    assert!(!done.contains("step 1: sleep 6"), "{done}");
    assert!(!done.contains("step 2: mkdir"), "{done}");

    // `logs -f` of a build that is already running shows the same, timed from the step's start.
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "running", 20);
    std::thread::sleep(Duration::from_millis(1200));
    let Some(term) = Terminal::opus(&d, &format!("logs web#{id} -f")) else {
        return;
    };
    let screen = term.wait_for("status line of the running step", 20, |s| {
        shown_seconds(s, "step 1: sleep 6").is_some()
    });
    assert!(screen.contains("==> $ sleep 6"), "{screen}");
    let done = term.wait_for("the end of the build", 30, |s| s.contains("exit="));
    assert!(
        done.contains("exit=0") && !done.contains("step 1: sleep 6"),
        "{done}"
    );
}

#[test]
fn secret_set_asks_a_terminal_twice_without_echo() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps:\n    - '[ \"$API_KEY\" = \"hunter22 two\" ] && echo value-matches'\n    - {WRITE_DIST}\n"
        ),
    );
    let Some(term) = Terminal::opus(&d, "secret set web API_KEY") else {
        return;
    };
    term.wait_for("the prompt", 10, |s| s.contains("Value of API_KEY:"));
    term.type_line("hunter22 two");
    term.wait_for("the second prompt", 10, |s| {
        s.contains("Value of API_KEY again:")
    });
    term.type_line("hunter22 two");
    let done = term.wait_for("the end", 10, |s| s.contains("exit="));
    assert!(
        done.contains("set secret API_KEY of web") && done.contains("exit=0"),
        "{done}"
    );
    assert!(!done.contains("hunter22"), "the value was echoed:\n{done}");
    let log = d.opus(&["trigger", "web", "--wait"]).ok().to_owned();
    assert!(log.contains("value-matches"), "{log}");

    // Two different answers: an error that says so, and nothing is set.
    let Some(term) = Terminal::opus(&d, "secret set web OTHER") else {
        return;
    };
    term.wait_for("the prompt", 10, |s| s.contains("Value of OTHER:"));
    term.type_line("first-value");
    term.wait_for("the second prompt", 10, |s| {
        s.contains("Value of OTHER again:")
    });
    term.type_line("second-value");
    let done = term.wait_for("the end", 10, |s| s.contains("exit="));
    assert!(
        done.contains("the two values of OTHER differ; nothing was set") && done.contains("exit=1"),
        "{done}"
    );
    assert_eq!(
        d.opus(&["secret", "list", "web", "-o", "json"]).json(),
        serde_json::json!(["API_KEY"])
    );
}

#[test]
fn secret_set_reads_a_pipe_as_it_is_without_prompting() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps:\n    - '[ \"$API_KEY\" = \"from stdin\" ] && echo value-matches'\n    - {WRITE_DIST}\n"
        ),
    );
    let out = d.opus_with_stdin(&["secret", "set", "web", "API_KEY"], "from stdin\n");
    assert!(
        out.ok().contains("set secret API_KEY of web"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stderr, "", "no prompt when stdin is not a terminal");
    let log = d.opus(&["trigger", "web", "--wait"]).ok().to_owned();
    assert!(log.contains("value-matches"), "{log}");
}
