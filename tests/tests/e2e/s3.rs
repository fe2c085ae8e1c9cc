//! opusd with an S3 store: `--extra-store s3=s3://...` against a real S3-protocol server (moto's,
//! installed by `.ci/setup-s3.sh`) on 127.0.0.1, driven by the real `opus`.
//!
//! Without a Python that has moto the test prints why it did not run; `OPUS_REQUIRE_S3=1` makes
//! that a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opus_tests::Daemon;

fn moto_python() -> Result<PathBuf, String> {
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
    Err("no Python with moto[server] found; run .ci/setup-s3.sh".into())
}

/// moto's server, stopped (by its own pid) when dropped.
struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto(python: &Path, bucket: &str) -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto starts");
    let moto = Moto(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not listen within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        conn,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "bucket: {answer}");
    moto
}

#[test]
fn publish_download_and_verify_through_an_s3_store() {
    let python = match moto_python() {
        Ok(p) => p,
        Err(why) if std::env::var_os("OPUS_REQUIRE_S3").is_some() => {
            panic!("OPUS_REQUIRE_S3 is set but {why}")
        }
        Err(why) => {
            println!("SKIPPED publish_download_and_verify_through_an_s3_store: {why}");
            eprintln!("SKIPPED publish_download_and_verify_through_an_s3_store: {why}");
            return;
        }
    };
    let moto = start_moto(&python, "opus-e2e");
    let store = format!(
        "s3=s3://opus-e2e/sites?endpoint=http://127.0.0.1:{}&allow_http=true&region=us-east-1\
         &access_key_id=test&secret_access_key=test",
        moto.1
    );
    let d = Daemon::start_with(&["--extra-store", &store]);
    let src = d.root.path().join("src");
    std::fs::create_dir_all(src.join("static")).expect("mkdir");
    std::fs::write(src.join("index.html"), "<html>s3</html>").expect("write");
    std::fs::write(src.join("static/app.js"), "x=1;\n".repeat(5000)).expect("write");
    let src_s = src.to_str().expect("utf-8");
    d.opus(&["add", "web", src_s]).ok();

    d.opus(&["publish", "web", "1", src_s, "--store", "s3"])
        .ok();
    let again = d
        .opus(&["publish", "web", "2", src_s, "--store", "s3", "-o", "json"])
        .json();
    assert_eq!(again["uploaded_files"], 0, "{again}");
    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(listed[0]["store"], "s3", "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    // Nothing went to the local default store.
    assert!(!d.data_dir().join("artifacts/web").exists());

    let out = d.root.path().join("out");
    d.opus(&[
        "download",
        "web",
        "1",
        "--extract",
        out.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(
        std::fs::read(out.join("static/app.js")).expect("extracted"),
        std::fs::read(src.join("static/app.js")).expect("source")
    );
    d.opus(&["verify", "web"]).ok();
}
