//! A full disk: opusd's data directory on a small file system of its own, filled up. Writes fail
//! with a message that says the disk is full and where, builds end failed (and stay failed),
//! `/healthz` says degraded, and once space is freed every write works again without a restart.
//!
//! The small file system is a tmpfs mounted by the test (`mount -t tmpfs -o size=...`), else an
//! ext4 image in a size-limited file mounted through a loop device; a machine that allows
//! neither (not root, no mount in the sandbox) skips the test with a `SKIPPED` line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opus_tests::{Daemon, http, site_with_opus_yml};

/// The size of the small file system: room for the store, a few logs and builds.
const DISK_MB: u64 = 48;

/// A size-limited file system mounted for one test, unmounted (lazily: opusd may still hold
/// files) when dropped.
struct SmallDisk {
    /// Where it is mounted.
    path: PathBuf,
    /// The image file of a loop mount, removed after unmounting.
    image: Option<PathBuf>,
    /// Which kind it is, for the test's messages.
    kind: &'static str,
}

impl SmallDisk {
    /// Mounts a tmpfs at `path`, else an ext4 loop image kept in `scratch`; `None` when this
    /// machine allows neither.
    fn mount(path: &Path, scratch: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).expect("mount point");
        let size = format!("size={DISK_MB}m");
        if run(
            "mount",
            &["-t", "tmpfs", "-o", &size, "tmpfs", as_str(path)],
        ) {
            return Some(SmallDisk {
                path: path.to_owned(),
                image: None,
                kind: "tmpfs",
            });
        }
        let image = scratch.join("disk.img");
        let file = std::fs::File::create(&image).expect("image file");
        file.set_len(DISK_MB << 20).expect("image size");
        drop(file);
        if run("mkfs.ext4", &["-q", "-F", as_str(&image)])
            && run("mount", &["-o", "loop", as_str(&image), as_str(path)])
        {
            return Some(SmallDisk {
                path: path.to_owned(),
                image: Some(image),
                kind: "ext4 loop image",
            });
        }
        let _ = std::fs::remove_file(&image);
        None
    }

    /// Fills the file system with one file until a write fails for lack of space.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let mut chunk = vec![0xA5u8; 1 << 20];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => {
                    // Fill the last partial megabyte too.
                    if chunk.len() <= 4096 {
                        break;
                    }
                    chunk.truncate(chunk.len() / 4);
                }
                Err(e) => panic!("filling the {}: {e}", self.kind),
            }
        }
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        run("umount", &["-l", as_str(&self.path)]);
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
        // The mount point, and the test's root around it, which could not be removed while
        // mounted (both empty by now; `remove_dir` removes nothing else).
        let _ = std::fs::remove_dir(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn as_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Runs a command quietly; whether it succeeded.
fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `GET /healthz` on the API port: (status, body).
fn healthz(d: &Daemon) -> (u16, String) {
    let r = http(&d.server, "GET", "localhost", "/healthz", &[]);
    (r.status, r.text())
}

/// Waits until `/healthz` answers `want`, or panics after `secs` with the log.
fn wait_for_health(d: &Daemon, want: u16, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, body) = healthz(d);
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz did not answer {want} within {secs}s (last: {status} {body})\nopusd log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn says_disk_full(text: &str) -> bool {
    text.contains("is full") && text.contains("free space")
}

#[test]
fn a_full_disk_fails_writes_with_its_reason_and_opusd_recovers_once_space_is_freed() {
    let root = tempfile::tempdir().expect("temp dir");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let data = root.path().join("data");
    let Some(disk) = SmallDisk::mount(&data, scratch.path()) else {
        eprintln!(
            "SKIPPED a_full_disk_fails_writes...: this machine allows neither a tmpfs mount nor a loop mount (run as root)"
        );
        return;
    };
    eprintln!("the data directory is a {DISK_MB} MB {}", disk.kind);
    let site = site_with_opus_yml(
        scratch.path(),
        "web",
        "build:\n  steps:\n    - mkdir -p dist && echo '<h1>hi</h1>' > dist/index.html\n",
    );
    let mut d = Daemon::start_in(root, &[], &[]);
    d.opus(&["add", "web", as_str(&site)]).ok();
    let out = d.opus(&["trigger", "web", "--wait"]);
    out.ok();
    assert_eq!(healthz(&d).0, 200);
    let status = d.opus(&["status", "-o", "json"]).json();
    assert!(
        status["data_dir_free_bytes"].as_u64().unwrap_or(0) > 1 << 20,
        "{status}"
    );
    assert!(status["store_free_bytes"].as_u64().is_some(), "{status}");

    let filler = disk.fill();

    // A build on the full disk ends, failed, and says why.
    let started = Instant::now();
    let out = d.opus(&["trigger", "web", "--wait"]);
    assert_ne!(out.code, 0, "{out:?}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(says_disk_full(&said), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "trigger --wait took {:?}",
        started.elapsed()
    );

    // Writes fail with the same reason, naming the data directory.
    let data_dir = d.data_dir();
    for args in [
        &["deploy", "web", "main-1"][..],
        &["secret", "set", "web", "TOKEN", "--value", "hunter22"],
        &["add", "other", as_str(&site)],
    ] {
        let out = d.opus(args);
        assert_ne!(out.code, 0, "{args:?} on a full disk: {out:?}");
        assert!(
            says_disk_full(&out.stderr) && out.stderr.contains(as_str(&data_dir)),
            "{args:?}: {}",
            out.stderr
        );
    }
    let degraded = wait_for_health(&d, 503, 10);
    assert!(
        degraded.starts_with("degraded:") && says_disk_full(&degraded),
        "{degraded}"
    );
    let status = d.opus(&["status"]);
    assert!(
        status.ok().contains("free)") && status.stdout.contains("degraded"),
        "{}",
        status.stdout
    );

    // Space comes back: everything works again, with no restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    assert_eq!(wait_for_health(&d, 200, 20), "ok\n");
    d.opus(&["secret", "set", "web", "TOKEN", "--value", "hunter22"])
        .ok();
    d.opus(&["add", "other", as_str(&site)]).ok();
    d.opus(&["deploy", "web", "main-1"]).ok();
    let out = d.opus(&["trigger", "web", "--wait"]);
    out.ok();

    // The build that met the full disk is recorded failed, and stays so across a restart.
    let failed: Vec<u64> = d
        .builds("web")
        .iter()
        .filter(|b| b["number"] != 1 && b["state"] != "succeeded")
        .filter_map(|b| b["number"].as_u64())
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", d.builds("web"));
    let b = d.wait_for_state("web", failed[0], "failed", 10);
    assert!(says_disk_full(b["reason"].as_str().unwrap_or("")), "{b}");
    d.restart();
    let b = d.build("web", failed[0]);
    assert_eq!(b["state"], "failed", "{b}");
    d.stop();
    drop(d);
    drop(disk);
}
