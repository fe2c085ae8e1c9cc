//! Versions through the CLI: publish, list, download (and extract), verify; the security rules of
//! issue 4 (unsafe paths, links, reserved names, immutability); orphans after a crash.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opus_core::archive::gzip_member;
use opus_tests::Daemon;

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// A small built site.
fn site(root: &Path, generation: u32) {
    write(
        root,
        "index.html",
        format!("<html>v{generation}</html>").as_bytes(),
    );
    write(
        root,
        "static/js/app.js",
        "console.log('opus');\n".repeat(3000).as_bytes(),
    );
    let noise: Vec<u8> = (0..150_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    write(root, "static/media/hero.png", &noise);
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A daemon with project `web`.
fn daemon() -> Daemon {
    let d = Daemon::start();
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", s(&src)]).ok();
    d
}

fn same_tree(a: &Path, b: &Path) {
    for f in ["index.html", "static/js/app.js", "static/media/hero.png"] {
        assert_eq!(
            std::fs::read(a.join(f)).expect("read a"),
            std::fs::read(b.join(f)).expect("read b"),
            "{f} differs"
        );
    }
}

#[test]
fn publish_list_download_extract_and_verify() {
    let d = daemon();
    let dist = d.root.path().join("dist");
    site(&dist, 1);
    let out = d.opus(&["publish", "web", "1.0.0", s(&dist)]);
    assert!(
        out.ok().contains("published web 1.0.0: 3 files"),
        "{}",
        out.stdout
    );

    // The same content again: nothing to upload.
    let json = d
        .opus(&["publish", "web", "1.0.1", s(&dist), "-o", "json"])
        .json();
    assert_eq!(json["uploaded_files"], 0, "{json}");
    assert_eq!(json["version"]["files"], 3);

    let table = d.opus(&["artifacts", "web"]);
    let text = table.ok();
    assert!(text.starts_with("VERSION"), "{text}");
    assert!(
        text.contains("1.0.0") && text.contains("published"),
        "{text}"
    );
    let list = d.opus(&["artifacts", "web", "-o", "json"]).json();
    let versions: Vec<_> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["version"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(versions, ["1.0.1", "1.0.0"], "newest first");
    let files = d.opus(&["artifacts", "web", "1.0.0", "-o", "json"]).json();
    let paths: Vec<_> = files["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        paths,
        ["index.html", "static/js/app.js", "static/media/hero.png"]
    );
    let files_table = d.opus(&["artifacts", "web", "1.0.0"]);
    assert!(
        files_table.ok().contains("static/js/app.js"),
        "{}",
        files_table.stdout
    );

    // The archive is a .tar.gz that GNU tar reads.
    let archive = d.root.path().join("web.tar.gz");
    d.opus(&["download", "web", "1.0.0", "--out", s(&archive)])
        .ok();
    let untarred = d.root.path().join("untarred");
    std::fs::create_dir_all(&untarred).expect("mkdir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&untarred)
        .status()
        .expect("tar runs");
    assert!(status.success());
    same_tree(&dist, &untarred);
    // The file may be the second argument too, as with `curl -o` or `scp`.
    let positional = d.root.path().join("web.tgz");
    d.opus(&["download", "web", "1.0.0", s(&positional)]).ok();
    assert_eq!(
        std::fs::read(&positional).expect("downloaded"),
        std::fs::read(&archive).expect("downloaded before")
    );
    let err = d
        .opus(&["download", "web", "1.0.0", s(&positional), "--out", "x.tgz"])
        .fails(2)
        .to_owned();
    assert!(err.contains("cannot be used with"), "{err}");

    let extracted = d.root.path().join("extracted");
    let out = d.opus(&["download", "web", "1.0.1", "--extract", s(&extracted)]);
    assert!(out.ok().contains("3 files"), "{}", out.stdout);
    same_tree(&dist, &extracted);
    // A folder with content is not extracted into.
    let again = d.opus(&["download", "web", "1.0.1", "--extract", s(&extracted)]);
    assert!(again.fails(1).contains("not empty"), "{}", again.stderr);

    let ok = d.opus(&["verify", "web"]);
    assert!(ok.ok().is_empty());
    assert!(ok.stderr.contains("no damage"), "{}", ok.stderr);

    // Damage one stored file (replaced, as a disk error or a person would).
    let stored = d.data_dir().join("artifacts/web/1.0.0/index.html");
    std::fs::remove_file(&stored).expect("rm");
    std::fs::write(&stored, "<html>vX</html>").expect("write");
    let bad = d.opus(&["verify", "web", "1.0.0"]);
    assert!(bad.fails(1).contains("1 problem"), "{}", bad.stderr);
    assert!(
        bad.stdout.contains("index.html") && bad.stdout.contains("sha256"),
        "{}",
        bad.stdout
    );
    let json = d.opus(&["verify", "web", "1.0.1", "-o", "json"]).json();
    assert_eq!(json["problems"], serde_json::json!([]));
}

#[test]
fn publishing_refuses_what_the_rules_forbid() {
    let d = daemon();
    let dist = d.root.path().join("dist");
    site(&dist, 1);
    d.opus(&["publish", "web", "1.0.0", s(&dist)]).ok();

    let exists = d.opus(&["publish", "web", "1.0.0", s(&dist)]);
    assert!(
        exists.fails(1).contains("already exists"),
        "{}",
        exists.stderr
    );
    for reserved in ["archive", "manifest"] {
        let out = d.opus(&["publish", "web", reserved, s(&dist)]);
        assert!(out.fails(1).contains("reserved"), "{}", out.stderr);
    }
    let invalid = d.opus(&["publish", "web", "../1", s(&dist)]);
    assert!(
        invalid.fails(1).contains("invalid version"),
        "{}",
        invalid.stderr
    );
    let no_project = d.opus(&["publish", "nope", "1", s(&dist)]);
    assert!(
        no_project.fails(1).contains("no project"),
        "{}",
        no_project.stderr
    );
    let missing = d.opus(&["publish", "web", "2", s(&d.root.path().join("nothing"))]);
    assert!(missing.fails(1).contains("nothing"), "{}", missing.stderr);
    let store = d.opus(&["publish", "web", "2", s(&dist), "--store", "elsewhere"]);
    assert!(
        store.fails(1).contains("no artifact store"),
        "{}",
        store.stderr
    );

    #[cfg(unix)]
    {
        std::fs::write(d.root.path().join("secret.txt"), "s").expect("write");
        std::os::unix::fs::symlink("../secret.txt", dist.join("leak.txt")).expect("symlink");
        let out = d.opus(&["publish", "web", "2", s(&dist)]);
        assert!(out.fails(1).contains("outside"), "{}", out.stderr);
    }
    let none = d.opus(&["download", "web", "9.9.9"]);
    assert!(none.fails(1).contains("no version"), "{}", none.stderr);
    assert_eq!(
        d.opus(&["artifacts", "web", "-o", "json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// A ustar header for `path` (written by hand: tar libraries refuse to write `..`).
fn tar_entry(path: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn extract_refuses_a_tampered_archive() {
    let d = daemon();
    let dist = d.root.path().join("dist");
    site(&dist, 1);
    d.opus(&["publish", "web", "1", s(&dist)]).ok();
    let stored = d.data_dir().join("artifacts/web/archive/1.tar.gz");
    let cases: [(&str, Vec<u8>); 3] = [
        ("..", tar_entry("../evil.txt", b'0', "", b"evil")),
        (
            "absolute",
            tar_entry("/tmp/opus-evil.txt", b'0', "", b"evil"),
        ),
        ("outside", tar_entry("link", b'2', "../../etc", b"")),
    ];
    for (expect, entry) in cases {
        let mut tar = tar_entry("ok.txt", b'0', "", b"fine");
        tar.extend(entry);
        tar.extend_from_slice(&[0u8; 1024]);
        std::fs::remove_file(&stored).expect("rm");
        std::fs::write(&stored, gzip_member(&tar, 6).expect("gzip")).expect("write");
        let dest = d.root.path().join(format!("x-{expect}"));
        let out = d.opus(&["download", "web", "1", "--extract", s(&dest)]);
        let err = out.fails(1);
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(!d.root.path().join("evil.txt").exists());
        assert!(!Path::new("/tmp/opus-evil.txt").exists());
    }
}

/// Waits until `cond` holds (the orphan sweep runs in the background after start).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_crash_leaves_no_half_version_and_the_next_start_removes_orphans() {
    let mut d = daemon();
    let dist = d.root.path().join("dist");
    site(&dist, 1);
    d.opus(&["publish", "web", "1", s(&dist)]).ok();

    // What opusd killed between writing files and committing leaves behind.
    let artifacts = d.data_dir().join("artifacts/web");
    write(&artifacts, "2/index.html", b"half");
    write(&artifacts, "archive/2.tar.gz#7", b"partial");
    d.kill();

    // A publish of a bigger site, killed while it is being stored.
    d.restart();
    eventually("the sweep", || {
        !artifacts.join("2").exists() && !artifacts.join("archive/2.tar.gz#7").exists()
    });
    let big = d.root.path().join("big");
    for i in 0..40u32 {
        let noise: Vec<u8> = (0..500_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 5) as u8)
            .collect();
        write(&big, &format!("media/{i}.bin"), &noise);
    }
    let mut publish = opus_tests::opus_command(&d.server, None);
    publish
        .args(["publish", "web", "3", s(&big)])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = publish.spawn().expect("publish starts");
    eventually("the publish to start storing", || {
        artifacts.join("3").exists() || child.try_wait().ok().flatten().is_some()
    });
    d.kill();
    let _ = child.wait();

    d.restart();
    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    let has3 = listed
        .as_array()
        .expect("array")
        .iter()
        .any(|v| v["version"] == "3");
    if has3 {
        // It committed before the kill: then it is whole.
        d.opus(&["verify", "web", "3"]).ok();
    } else {
        eventually("the orphan of version 3 to go", || {
            !artifacts.join("3").exists()
        });
        assert!(!artifacts.join("archive/3.tar.gz").exists());
    }
    d.opus(&["verify", "web", "1"]).ok();
}

#[test]
fn retention_keeps_the_newest_versions_and_their_content() {
    let d = daemon();
    let out = d.opus(&["keep", "web", "2"]);
    assert!(out.ok().contains("keeps the newest 2"), "{}", out.stdout);
    for generation in 1..=4u32 {
        let dist = d.root.path().join(format!("dist{generation}"));
        site(&dist, generation);
        d.opus(&["publish", "web", &format!("{generation}.0"), s(&dist)])
            .ok();
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    let versions: Vec<_> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["version"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(versions, ["4.0", "3.0"]);
    let artifacts = d.data_dir().join("artifacts/web");
    assert!(!artifacts.join("1.0").exists() && !artifacts.join("2.0").exists());
    assert!(!artifacts.join("archive/1.0.tar.gz").exists());
    // Content shared with deleted versions is still there for the kept ones.
    d.opus(&["verify", "web"]).ok();
}

/// The environments each listed version is deployed to, from `opus artifacts -o json`.
fn deployed_to(d: &Daemon) -> Vec<(String, Vec<String>)> {
    d.opus(&["artifacts", "web", "-o", "json"])
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|v| {
            let envs = v["deployed_to"]
                .as_array()
                .expect("deployed_to is a list")
                .iter()
                .map(|e| e.as_str().unwrap_or_default().to_owned())
                .collect();
            (v["version"].as_str().unwrap_or_default().to_owned(), envs)
        })
        .collect()
}

#[test]
fn versions_say_which_environments_serve_them() {
    let d = daemon();
    for generation in 1..=2u32 {
        let dist = d.root.path().join(format!("dist{generation}"));
        site(&dist, generation);
        d.publish("web", &format!("{generation}.0"), &dist);
        std::thread::sleep(Duration::from_millis(20));
    }
    let none: Vec<String> = Vec::new();
    assert_eq!(
        deployed_to(&d),
        [
            ("2.0".to_owned(), none.clone()),
            ("1.0".to_owned(), none.clone())
        ]
    );

    d.opus(&["deploy", "web", "1.0"]).ok();
    d.opus(&["deploy", "web", "1.0", "-e", "staging"]).ok();
    assert_eq!(
        deployed_to(&d),
        [
            ("2.0".to_owned(), none.clone()),
            (
                "1.0".to_owned(),
                vec!["production".to_owned(), "staging".to_owned()]
            )
        ]
    );

    // Moving production moves the column; the table shows the same.
    d.opus(&["deploy", "web", "2.0"]).ok();
    assert_eq!(
        deployed_to(&d),
        [
            ("2.0".to_owned(), vec!["production".to_owned()]),
            ("1.0".to_owned(), vec!["staging".to_owned()])
        ]
    );
    let table = d.opus(&["artifacts", "web"]);
    let text = table.ok();
    let row = |version: &str| {
        text.lines()
            .find(|l| l.starts_with(version))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("2.0").trim_end().ends_with("production"), "{text}");
    assert!(row("1.0").trim_end().ends_with("staging"), "{text}");

    // A rollback is a deploy too.
    d.opus(&["rollback", "web"]).ok();
    assert_eq!(
        deployed_to(&d),
        [
            ("2.0".to_owned(), none),
            (
                "1.0".to_owned(),
                vec!["production".to_owned(), "staging".to_owned()]
            )
        ]
    );
}
