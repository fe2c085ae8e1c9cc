//! moto's S3 server (from PyPI, installed by `.ci/setup-s3.sh` into `target/s3-venv`) on
//! 127.0.0.1, started on a free port by a test: a real S3-protocol server, not a mock of
//! object_store. Every S3 test goes through [`Moto::start_or_skip`].
//!
//! Without a Python that has moto the test prints `SKIPPED <test>: <why>` and passes; with
//! `OPUS_REQUIRE_S3=1` (as `.ci/run` sets once the set-up succeeded) it fails instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server; killed when dropped (or by [`Moto::stop`]).
pub struct Moto {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Moto {
    /// Starts moto with `bucket` created, or says why the test `test` is skipped and returns
    /// None. Panics when `OPUS_REQUIRE_S3` is set and moto cannot run.
    pub fn start_or_skip(test: &str, bucket: &str) -> Option<Moto> {
        match python() {
            Ok(python) => Some(Moto::start(&python, bucket)),
            Err(why) if std::env::var_os("OPUS_REQUIRE_S3").is_some() => {
                panic!("OPUS_REQUIRE_S3 is set but {why}")
            }
            Err(why) => {
                println!("SKIPPED {test}: {why}");
                eprintln!("SKIPPED {test}: {why}");
                None
            }
        }
    }

    fn start(python: &Path, bucket: &str) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::var_os("TEST_LOG").is_some();
        let output = || {
            if log { Stdio::inherit() } else { Stdio::null() }
        };
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("moto starts");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // moto does not check signatures: a plain PUT creates the bucket.
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
        write!(
            conn,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("moto answers");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket} failed: {answer}"
        );
        moto
    }

    /// The store URL of `prefix` in `bucket`, with moto's endpoint and test credentials in the
    /// query (how opusd takes per-store settings).
    pub fn store_url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&allow_http=true&region=us-east-1\
             &access_key_id=test&secret_access_key=test",
            self.endpoint()
        )
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server now (to test what happens when the store is down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python that can run moto's server, or why there is none.
fn python() -> Result<PathBuf, String> {
    let can = |p: &Path| {
        Command::new(p)
            .args(["-c", "import moto.server, flask, flask_cors"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Ok(p) = std::env::var("OPUS_MOTO_PYTHON") {
        let p = PathBuf::from(p);
        return if can(&p) {
            Ok(p)
        } else {
            Err(format!(
                "OPUS_MOTO_PYTHON={} cannot import moto.server",
                p.display()
            ))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/s3-venv/bin/python");
    if can(&venv) {
        return Ok(venv);
    }
    if can(Path::new("python3")) {
        return Ok(PathBuf::from("python3"));
    }
    Err("no Python with moto[server] found; run .ci/setup-s3.sh (it installs moto[server] from PyPI into target/s3-venv)".into())
}
