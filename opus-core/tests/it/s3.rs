//! The artifact store on S3: a real S3-protocol server (moto's, from PyPI, installed by
//! `.ci/setup-s3.sh`) on 127.0.0.1, started on a free port by the test. Not a mock of
//! object_store: every request goes over HTTP through object_store's S3 client.
//!
//! When no Python with moto is found the test prints why it did not run; with `OPUS_REQUIRE_S3=1`
//! (as `.ci/run` sets once setup succeeded) a missing moto fails it instead.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use object_store::ObjectStoreExt;
use opus_core::artifact::{ArtifactStore, ManifestFile, Origin, sha256_hex};
use opus_core::model::{Project, ProjectName, Source, VersionName};
use opus_core::store::MetaStore;

const BUCKET: &str = "opus-test";

/// A Python that can run moto's server, or why there is none.
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
    let system = PathBuf::from("python3");
    if can(&system) {
        return Ok(system);
    }
    Err("no Python with moto[server] found; run .ci/setup-s3.sh (it installs moto[server] from PyPI into target/s3-venv)".into())
}

/// The moto server; killed (by its own pid) when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto(python: &Path) -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::env::var_os("TEST_LOG").is_some();
    let child = Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(if log { Stdio::inherit() } else { Stdio::null() })
        .stderr(if log { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .expect("start moto");
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
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(conn, "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating the bucket failed: {answer}"
    );
    moto
}

fn s3_url(port: u16) -> String {
    format!(
        "s3://{BUCKET}/opus?endpoint=http://127.0.0.1:{port}&allow_http=true&region=us-east-1\
         &access_key_id=test&secret_access_key=test"
    )
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

fn site(root: &Path, generation: u32) {
    write(
        root,
        "index.html",
        format!("<html>{generation}</html>").as_bytes(),
    );
    write(
        root,
        "static/app.js",
        "let x = 1;\n".repeat(20_000).as_bytes(),
    );
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    write(root, "static/hero.png", &noise);
}

#[tokio::test]
async fn versions_on_a_real_s3_server() {
    let python = match moto_python() {
        Ok(p) => p,
        Err(why) if std::env::var_os("OPUS_REQUIRE_S3").is_some() => {
            panic!("OPUS_REQUIRE_S3 is set but {why}")
        }
        Err(why) => {
            println!("SKIPPED versions_on_a_real_s3_server: {why}");
            eprintln!("SKIPPED versions_on_a_real_s3_server: {why}");
            return;
        }
    };
    let moto = start_moto(&python);
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    meta.create_project(&Project {
        name: ProjectName::new("web").expect("name"),
        source: Source::Git("https://example.com/web.git".into()),
        branch: "main".into(),
        created_at: SystemTime::now(),
        keep_versions: 0,
    })
    .expect("project");
    let default = format!("file://{}", dir.path().join("artifacts").display());
    let extra = [("s3".to_owned(), s3_url(moto.port))];
    let store = ArtifactStore::open(meta.clone(), &default, &extra, &dir.path().join("staging"))
        .expect("open");
    let origin = Origin {
        build_id: 1,
        commit: "c0ffee".into(),
        store: "s3".into(),
    };
    let web = ProjectName::new("web").expect("name");

    let v1 = dir.path().join("v1");
    site(&v1, 1);
    let first = store
        .store_dir(&web, &VersionName::new("1").expect("v"), &v1, &origin)
        .await
        .expect("store v1");
    assert_eq!(first.record.store, "s3");
    assert_eq!(first.files_copied, 0);

    // The layout, as a bucket sees it (under the URL's prefix).
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_url(format!("s3://{BUCKET}"))
        .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("client");
    for key in [
        "opus/web/1/index.html",
        "opus/web/1/static/hero.png",
        "opus/web/archive/1.tar.gz",
        "opus/web/manifest/1.json",
    ] {
        s3.head(&object_store::path::Path::from(key))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }

    // Version 2 changes one file: the others are server-side copies, nothing uploaded again.
    let v2 = dir.path().join("v2");
    site(&v2, 2);
    let second = store
        .store_dir(&web, &VersionName::new("2").expect("v"), &v2, &origin)
        .await
        .expect("store v2");
    assert_eq!(
        (second.files_written, second.files_copied),
        (1, 2),
        "{second:?}"
    );
    let body = store
        .read_file("web", "2", "static/app.js")
        .await
        .expect("read");
    assert_eq!(body.len(), "let x = 1;\n".len() * 20_000);
    let part = store
        .read_range("web", "2", "index.html", 0..6)
        .await
        .expect("range");
    assert_eq!(&part[..], b"<html>");
    assert!(
        store
            .local_path("web", "2", "index.html")
            .expect("path")
            .is_none()
    );

    let (size, mut stream) = store.archive("web", "2").await.expect("archive");
    let mut gz = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        gz.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(gz.len() as u64, size);
    let listed = opus_core::archive::list(&gz[..]).expect("list");
    assert_eq!(listed.len(), 3);

    let report = store.verify("web", None).await.expect("verify");
    assert_eq!(
        (report.versions_checked, report.problems.len()),
        (2, 0),
        "{:?}",
        report.problems
    );

    // Publishing into S3: only new content is uploaded.
    let v3 = dir.path().join("v3");
    site(&v3, 3);
    let files: Vec<ManifestFile> = opus_core::archive::collect_files(&v3)
        .expect("collect")
        .into_iter()
        .map(|f| {
            let data = std::fs::read(&f.abs).expect("read");
            ManifestFile {
                path: f.path,
                size: data.len() as u64,
                sha256: sha256_hex(&data),
                mode: f.mode,
            }
        })
        .collect();
    let started = store
        .begin_publish("web", "3", files.clone(), "s3")
        .expect("begin");
    assert_eq!(started.missing, [sha256_hex(b"<html>3</html>")]);
    let mut blob = store
        .begin_blob(&started.upload_id, &started.missing[0])
        .await
        .expect("blob");
    blob.write(b"<html>3</html>").await.expect("write");
    blob.finish().await.expect("finish");
    let third = store
        .commit_publish(&started.upload_id)
        .await
        .expect("commit");
    assert_eq!((third.files_written, third.files_copied), (1, 2));

    // Retention and deletion keep the index sound: version 3 still verifies after 1 and 2 go.
    let deleted = store
        .apply_retention("web", 1, &HashSet::new())
        .await
        .expect("retention");
    assert_eq!(deleted.len(), 2);
    assert!(
        s3.head(&object_store::path::Path::from("opus/web/1/index.html"))
            .await
            .is_err()
    );
    assert!(
        s3.head(&object_store::path::Path::from("opus/web/archive/1.tar.gz"))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .verify("web", Some("3"))
            .await
            .expect("verify")
            .problems,
        []
    );

    // An interrupted write leaves objects without a record: the sweep removes them.
    s3.put(
        &object_store::path::Path::from("opus/web/9/index.html"),
        object_store::PutPayload::from_static(b"x"),
    )
    .await
    .expect("put orphan");
    let swept = store.remove_orphans().await.expect("sweep");
    assert_eq!(swept.versions, [("web".to_owned(), "9".to_owned())]);
    assert!(
        s3.head(&object_store::path::Path::from("opus/web/9/index.html"))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .verify("web", Some("3"))
            .await
            .expect("verify")
            .problems,
        []
    );
}
