//! A running `opusd sites` (a site replica) on port 0, with its own cache folder; killed when
//! dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{HttpResponse, bin, http};

/// A running site replica.
pub struct Replica {
    child: Option<Child>,
    /// Its cache folder, address file and log.
    pub root: tempfile::TempDir,
    /// `http://127.0.0.1:<port>` of its site server.
    pub sites: String,
    /// `127.0.0.1:<port>` of its HTTPS listener, when started with `--sites-tls-listen`.
    pub https: Option<String>,
    log_path: PathBuf,
}

impl Replica {
    /// Starts `opusd sites --store <store>` with `args` added (`--api`, `--poll-interval-ms`).
    pub fn start(store: &str, args: &[&str]) -> Replica {
        let root = tempfile::tempdir().expect("temp dir");
        let addr_file = root.path().join("address");
        let log_path = root.path().join("replica.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(bin("opusd"))
            .arg("sites")
            .arg("--store")
            .arg(store)
            .args(["--sites-listen", "127.0.0.1:0", "--cache-dir"])
            .arg(root.path().join("cache"))
            .arg("--address-file")
            .arg(&addr_file)
            .args(args)
            .env(
                "OPUS_LOG",
                std::env::var("OPUS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("OPUS_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("opusd sites starts");
        let mut r = Replica {
            child: Some(child),
            root,
            sites: String::new(),
            https: None,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&addr_file)
                && !addr.is_empty()
            {
                let mut lines = addr.lines();
                r.sites = format!("http://{}", lines.next().unwrap_or_default());
                r.https = lines.next().map(str::to_owned);
                return r;
            }
            if let Some(Ok(Some(status))) = r.child.as_mut().map(Child::try_wait) {
                panic!(
                    "opusd sites exited during start-up ({status}):\n{}",
                    r.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "opusd sites did not start within 20s:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The replica's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path` with `Host: host`.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        http(&self.sites, "GET", host, path, &[])
    }

    /// Waits until `GET path` on `host` answers `body`, at most `secs` seconds; how long it took.
    pub fn wait_for_body(&self, host: &str, path: &str, body: &str, secs: u64) -> Duration {
        let start = Instant::now();
        loop {
            let r = self.get(host, path);
            if r.status == 200 && r.text() == body {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "the replica at {} did not serve {body:?} at {host}{path} within {secs}s (last: {} {:?}):\n{}",
                self.sites,
                r.status,
                r.text(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
