//! opusd's configuration file and flags, as a user meets them.

use std::process::Command;

use opus_tests::{Daemon, bin};

#[test]
fn a_malformed_config_file_names_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("opusd.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax_buidls = 2\n").expect("write");
    let out = Command::new(bin("opusd"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("opusd.toml") && err.contains("max_buidls"),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let out = Command::new(bin("opusd"))
        .args(["--config", "/no/such/opusd.toml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/opusd.toml"), "{err}");
}

#[test]
fn the_config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("opusd.toml");
    std::fs::write(&file, "max_builds = 3\ndomain = \"sites.test\"\n").expect("write");
    let d = Daemon::start_with(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--max-builds",
        "5",
    ]);
    let json = d.opus(&["status", "-o", "json"]).json();
    assert_eq!(json["max_builds"], 5);
}

#[test]
fn no_arguments_uses_working_defaults_in_the_current_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 7070 may be taken on a developer machine; only the data directory default is checked
    // here, with the listen address moved by environment (flags > env > file > defaults).
    let mut child = Command::new(bin("opusd"))
        .current_dir(dir.path())
        .env("OPUS_LISTEN", "127.0.0.1:0")
        .env("OPUS_SITES_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let pid = child.id();
    // Kill it even when an assertion below fails.
    let _guard = KillOnDrop(pid);
    let addr_file = dir.path().join("opus-data").join("opusd.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !addr_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "opusd wrote no address file"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(dir.path().join("opus-data").join("meta").exists());
}

/// Sends SIGKILL to a process when dropped (a no-op once it has exited and been reaped).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

#[test]
fn site_connection_limits_come_from_the_flags() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let d = Daemon::start_with(&[
        "--site-header-timeout",
        "1",
        "--site-connections-per-ip",
        "1",
    ]);
    let addr = d.sites.trim_start_matches("http://").to_owned();
    // A connection that sends half a request head is closed after the header timeout.
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: web.loc")
        .expect("write");
    let start = Instant::now();
    // While it is open it is the one connection this address may hold.
    let mut second = std::net::TcpStream::connect(&addr).expect("connect");
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut answer = String::new();
    let _ = second.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    let waited = start.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
    let err = Command::new(bin("opusd"))
        .args(["--site-idle-timeout", "0", "--data-dir"])
        .arg(d.root.path().join("other"))
        .output()
        .expect("runs");
    assert_eq!(err.status.code(), Some(1));
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        text.contains("site_idle_timeout") && text.contains("at least 1 second"),
        "{text}"
    );
}
