use std::path::Path as FsPath;

use object_store::ObjectStoreExt;

use super::*;
use crate::error::{ArchiveError, StoreError};
use crate::model::{EnvName, Project, Source, StoreName};
use crate::store::{ReleaseReason, SiteOptions};

struct Fixture {
    dir: tempfile::TempDir,
    meta: MetaStore,
    store: ArtifactStore,
}

fn fixture() -> Fixture {
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
    let url = format!("file://{}", dir.path().join("artifacts").display());
    let extra = [(sn("mem"), "memory:///".to_owned())];
    let store = ArtifactStore::open(meta.clone(), &url, &extra).expect("open");
    Fixture { dir, meta, store }
}

fn write(root: &FsPath, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// A small site: text that compresses, noise that does not, nested folders.
fn site(root: &FsPath, generation: u8) {
    write(
        root,
        "index.html",
        format!("<html>generation {generation}</html>").as_bytes(),
    );
    write(
        root,
        "static/js/app.js",
        "console.log('hello');\n".repeat(5000).as_bytes(),
    );
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    write(root, "static/media/logo.png", &noise);
    write(root, "robots.txt", b"User-agent: *\n");
}

fn name(p: &str) -> ProjectName {
    ProjectName::new(p).expect("project name")
}

fn ver(v: &str) -> VersionName {
    VersionName::new(v).expect("version name")
}

/// A store name as requests carry it: empty is the default store.
fn sn(s: &str) -> StoreName {
    StoreName::or_default(s).expect("store name")
}

fn origin(build: u64) -> Origin {
    Origin {
        build_id: build,
        commit: "abc123".into(),
        store: StoreName::default_store(),
    }
}

async fn store_site(f: &Fixture, version: &str, generation: u8, store: &str) -> StoredVersion {
    let src = f.dir.path().join(format!("src-{version}-{store}"));
    site(&src, generation);
    let o = Origin {
        store: sn(store),
        ..origin(7)
    };
    f.store
        .store_dir(
            &name("web"),
            &ver(version),
            &src,
            &o,
            &SiteOptions::default(),
        )
        .await
        .expect("store")
}

#[tokio::test]
async fn a_stored_folder_reads_back_in_the_layout() {
    let f = fixture();
    let src = f.dir.path().join("dist");
    site(&src, 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        write(&src, "bin/run.sh", b"#!/bin/sh\n");
        std::fs::set_permissions(
            src.join("bin/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
    }
    let stored = f
        .store
        .store_dir(
            &name("web"),
            &ver("1.0.0"),
            &src,
            &origin(3),
            &SiteOptions::default(),
        )
        .await
        .expect("store");
    let record = &stored.record;
    assert_eq!(
        (
            record.build_id,
            record.commit.as_str(),
            record.store.as_str()
        ),
        (3, "abc123", "default")
    );
    assert_eq!(stored.files_written, record.file_count);

    let root = f.dir.path().join("artifacts/web");
    assert!(root.join("1.0.0/index.html").is_file());
    assert!(root.join("1.0.0/static/media/logo.png").is_file());
    assert!(root.join("archive/1.0.0.tar.gz").is_file());
    assert!(root.join("manifest/1.0.0.json").is_file());

    let manifest = f
        .store
        .manifest(&name("web"), &ver("1.0.0"))
        .await
        .expect("manifest");
    let paths: Vec<_> = manifest.files.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.windows(2).all(|w| w[0] < w[1]), "sorted: {paths:?}");
    let index = manifest.file("index.html").expect("index.html listed");
    assert_eq!(index.sha256, sha256_hex(b"<html>generation 1</html>"));
    assert_eq!(manifest.archive.size, record.archive_size);
    #[cfg(unix)]
    assert_eq!(manifest.file("bin/run.sh").map(|e| e.mode), Some(0o755));

    let mut streamed = Vec::new();
    let mut chunks = f
        .store
        .file_stream(&name("web"), &ver("1.0.0"), "static/js/app.js")
        .await
        .expect("stream");
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        streamed.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(streamed, "console.log('hello');\n".repeat(5000).as_bytes());
    assert!(
        f.store
            .file_stream(&name("web"), &ver("1.0.0"), "nope.txt")
            .await
            .is_err(),
        "a missing file is an error"
    );
    let local = f
        .store
        .local_path(&name("web"), &ver("1.0.0"), "static/js/app.js")
        .expect("path")
        .expect("local store");
    assert!(local.is_file());
    assert!(matches!(
        f.store.local_path(&name("web"), &ver("1.0.0"), "../x"),
        Err(ArtifactError::Archive(_))
    ));

    // The archive holds exactly the files, and extracts to the same bytes.
    let (size, mut stream) = f
        .store
        .archive(&name("web"), &ver("1.0.0"))
        .await
        .expect("archive");
    let mut gz = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        gz.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(gz.len() as u64, size);
    assert_eq!(sha256_hex(&gz), record.archive_sha256);
    let out = f.dir.path().join("extracted");
    crate::archive::extract(&gz[..], &out).expect("extract");
    for e in &manifest.files {
        let data = std::fs::read(out.join(&e.path)).expect("extracted file");
        assert_eq!(sha256_hex(&data), e.sha256, "{}", e.path);
    }

    let events = f.meta.events_from(0, 100).expect("events");
    assert_eq!(
        events.last().map(|e| e.kind.as_str()),
        Some("version.stored")
    );
    let listed = f.store.list_versions(&name("web")).expect("list");
    assert_eq!(listed.len(), 1);
    let report = f.store.verify(&name("web"), None).await.expect("verify");
    assert_eq!(
        (report.versions_checked, report.problems.len()),
        (1, 0),
        "{:?}",
        report.problems
    );
}

#[cfg(unix)]
#[tokio::test]
async fn unchanged_files_are_hard_links_of_the_previous_version() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture();
    let first = store_site(&f, "1", 1, "").await;
    assert_eq!(first.files_copied, 0);
    let second = store_site(&f, "2", 2, "").await;
    // Only index.html changed.
    assert_eq!(second.files_written, 1, "{second:?}");
    assert_eq!(second.files_copied, first.record.file_count - 1);
    let root = f.dir.path().join("artifacts/web");
    let ino = |v: &str, p: &str| std::fs::metadata(root.join(v).join(p)).expect("stat").ino();
    assert_eq!(
        ino("1", "static/media/logo.png"),
        ino("2", "static/media/logo.png")
    );
    assert_ne!(ino("1", "index.html"), ino("2", "index.html"));
}

#[tokio::test]
async fn output_errors_name_the_folder_and_leave_nothing() {
    let f = fixture();
    let missing = f.dir.path().join("no-such-dist");
    let err = f
        .store
        .store_dir(
            &name("web"),
            &ver("1"),
            &missing,
            &origin(1),
            &SiteOptions::default(),
        )
        .await
        .expect_err("missing");
    assert!(matches!(err, ArtifactError::OutputMissing(_)));
    assert!(err.to_string().contains("no-such-dist"), "{err}");

    #[cfg(unix)]
    {
        let src = f.dir.path().join("dist");
        site(&src, 1);
        std::fs::write(f.dir.path().join("secret.txt"), "s").expect("write");
        std::os::unix::fs::symlink("../secret.txt", src.join("leak.txt")).expect("symlink");
        let err = f
            .store
            .store_dir(
                &name("web"),
                &ver("1"),
                &src,
                &origin(1),
                &SiteOptions::default(),
            )
            .await
            .expect_err("escape");
        assert!(
            matches!(
                err,
                ArtifactError::Archive(ArchiveError::LinkEscapes { .. })
            ),
            "{err}"
        );
        assert!(
            f.meta
                .get_version(&name("web"), &ver("1"))
                .expect("get")
                .is_none()
        );
        assert!(!f.dir.path().join("artifacts/web/1").exists());
    }

    let src = f.dir.path().join("ok");
    site(&src, 1);
    let err = f
        .store
        .store_dir(
            &name("nope"),
            &ver("1"),
            &src,
            &origin(1),
            &SiteOptions::default(),
        )
        .await
        .expect_err("no project");
    assert!(
        matches!(err, ArtifactError::Meta(StoreError::ProjectNotFound(_))),
        "{err}"
    );
    let err = f
        .store
        .store_dir(
            &name("web"),
            &ver("1"),
            &src,
            &Origin {
                store: sn("elsewhere"),
                ..origin(1)
            },
            &SiteOptions::default(),
        )
        .await
        .expect_err("unknown store");
    assert!(matches!(err, ArtifactError::UnknownStore { .. }), "{err}");
    f.store
        .store_dir(
            &name("web"),
            &ver("1"),
            &src,
            &origin(1),
            &SiteOptions::default(),
        )
        .await
        .expect("store");
    let err = f
        .store
        .store_dir(
            &name("web"),
            &ver("1"),
            &src,
            &origin(2),
            &SiteOptions::default(),
        )
        .await
        .expect_err("exists");
    assert!(matches!(err, ArtifactError::VersionExists { .. }), "{err}");
    // The failed attempt did not touch the stored version.
    assert_eq!(
        f.store
            .verify(&name("web"), Some(&ver("1")))
            .await
            .expect("verify")
            .problems,
        []
    );
}

/// Every index entry names an object that exists.
async fn index_is_sound(f: &Fixture, store_name: &str) {
    let backend = f.store.backend(&sn(store_name)).expect("backend");
    for record in f.meta.list_versions(&name("web")).expect("list") {
        let manifest = f
            .store
            .manifest(&name("web"), &ver(record.version.as_str()))
            .await
            .expect("manifest");
        for file in &manifest.files {
            for holder in f
                .meta
                .blob_holders(&sn(store_name), &file.sha256)
                .expect("holders")
            {
                assert!(
                    read::read_object(backend.store.as_ref(), &holder)
                        .await
                        .is_some(),
                    "index names {holder}, which is gone"
                );
            }
        }
    }
}

async fn retention_keeps_protected_and_index_sound(store_name: &str) {
    let f = fixture();
    for (i, v) in ["1", "2", "3", "4"].iter().enumerate() {
        store_site(&f, v, i as u8 + 1, store_name).await;
        // Distinct creation times order the versions.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Deployed, so protected: retention keeps it beyond the newest two.
    f.meta
        .deploy(
            &name("web"),
            &EnvName::production(),
            &ver("1"),
            "test",
            ReleaseReason::Deploy,
            false,
        )
        .expect("deploy");
    let deleted = f
        .store
        .apply_retention(&name("web"), 2)
        .await
        .expect("retention");
    assert_eq!(deleted, [ver("2")]);
    let left: Vec<_> = f
        .store
        .list_versions(&name("web"))
        .expect("list")
        .into_iter()
        .map(|r| r.version.to_string())
        .collect();
    assert_eq!(left, ["4", "3", "1"]);
    index_is_sound(
        &f,
        if store_name.is_empty() {
            DEFAULT_STORE
        } else {
            store_name
        },
    )
    .await;
    for v in ["1", "3", "4"] {
        assert_eq!(
            f.store
                .verify(&name("web"), Some(&ver(v)))
                .await
                .expect("verify")
                .problems,
            [],
            "version {v}"
        );
    }
    let err = f
        .store
        .delete_version(&name("web"), &ver("1"), "api")
        .await
        .expect_err("protected");
    assert!(matches!(err, ArtifactError::VersionProtected { .. }));
    f.store
        .delete_version(&name("web"), &ver("4"), "api")
        .await
        .expect("delete");
    let err = f
        .store
        .delete_version(&name("web"), &ver("4"), "api")
        .await
        .expect_err("gone");
    assert!(matches!(err, ArtifactError::VersionNotFound { .. }));
    index_is_sound(
        &f,
        if store_name.is_empty() {
            DEFAULT_STORE
        } else {
            store_name
        },
    )
    .await;
    // Storing again after deletions still dedups from what is left, and reads back.
    let again = store_site(&f, "5", 3, store_name).await;
    assert!(again.files_copied >= 2, "{again:?}");
    assert_eq!(
        f.store
            .verify(&name("web"), Some(&ver("5")))
            .await
            .expect("verify")
            .problems,
        []
    );
    let kinds: Vec<_> = f
        .meta
        .events_from(0, 100)
        .expect("events")
        .into_iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "version.deleted").count(), 2);
}

#[tokio::test]
async fn retention_on_local_disk() {
    retention_keeps_protected_and_index_sound("").await;
}

#[tokio::test]
async fn retention_on_a_remote_style_store() {
    retention_keeps_protected_and_index_sound("mem").await;
}

#[tokio::test]
async fn orphans_of_interrupted_writes_are_removed() {
    let f = fixture();
    store_site(&f, "1", 1, "").await;
    store_site(&f, "1b", 1, "mem").await;
    let root = f.dir.path().join("artifacts/web");
    // What a SIGKILL between the files and the commit leaves behind.
    write(&root, "2/index.html", b"half");
    write(&root, "2/static/app.js#12", b"staging");
    write(&root, "archive/2.tar.gz#3", b"partial");
    write(&root, "manifest/3.json", b"{}");
    let mem = f.store.backend(&sn("mem")).expect("mem");
    let key = object_store::path::Path::parse("web/9/index.html").expect("key");
    mem.store
        .put(&key, object_store::PutPayload::from_static(b"x"))
        .await
        .expect("put");
    // Something that is not ours is left alone.
    write(
        &f.dir.path().join("artifacts"),
        "unrelated/stuff/file",
        b"keep",
    );

    let report = f.store.remove_orphans().await.expect("sweep");
    let mut found = report.versions.clone();
    found.sort();
    assert_eq!(
        found,
        [
            ("web".to_owned(), "2".to_owned()),
            ("web".into(), "3".into()),
            ("web".into(), "9".into())
        ]
    );
    assert!(!root.join("2").exists());
    assert!(!root.join("archive/2.tar.gz#3").exists());
    assert!(!root.join("manifest/3.json").exists());
    assert!(root.join("1/index.html").exists());
    assert!(f.dir.path().join("artifacts/unrelated/stuff/file").exists());
    assert!(
        read::read_object(mem.store.as_ref(), "web/9/index.html")
            .await
            .is_none()
    );
    assert!(
        read::read_object(mem.store.as_ref(), "web/1b/index.html")
            .await
            .is_some()
    );
    assert_eq!(
        f.store
            .verify(&name("web"), None)
            .await
            .expect("verify")
            .problems,
        []
    );
}

#[tokio::test]
async fn verify_reports_damage() {
    let f = fixture();
    store_site(&f, "1", 1, "").await;
    let root = f.dir.path().join("artifacts/web/1");
    // Replace (not rewrite in place) so only this version's copy changes.
    std::fs::remove_file(root.join("index.html")).expect("rm");
    std::fs::write(root.join("index.html"), b"<html>generation X</html>").expect("write");
    std::fs::remove_file(root.join("robots.txt")).expect("rm");
    std::fs::remove_file(root.join("static/js/app.js")).expect("rm");
    std::fs::write(root.join("static/js/app.js"), b"short").expect("write");
    let report = f
        .store
        .verify(&name("web"), Some(&ver("1")))
        .await
        .expect("verify");
    let mut kinds: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.path.as_str(), p.kind.as_str()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("index.html", "sha256"),
            ("robots.txt", "missing"),
            ("static/js/app.js", "size")
        ]
    );
    assert_eq!(report.files_checked, 4);
    let err = f
        .store
        .verify(&name("web"), Some(&ver("2")))
        .await
        .expect_err("no version");
    assert!(matches!(err, ArtifactError::VersionNotFound { .. }));
}

fn manifest_of(root: &FsPath) -> Vec<ManifestFile> {
    crate::archive::collect_files(root)
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
        .collect()
}

/// Stages the content of each missing digest as `staged/<sha256>`, as opusd's publish sessions
/// do once an upload checks out.
fn stage(staged: &FsPath, root: &FsPath, files: &[ManifestFile], missing: &[&String]) {
    std::fs::create_dir_all(staged).expect("mkdir");
    for sha in missing {
        let file = files.iter().find(|e| &e.sha256 == *sha).expect("listed");
        std::fs::copy(root.join(&file.path), staged.join(sha)).expect("stage");
    }
}

#[tokio::test]
async fn publishing_uploads_only_what_is_missing() {
    let f = fixture();
    let src = f.dir.path().join("built");
    site(&src, 1);
    let files = manifest_of(&src);
    let plan = f
        .store
        .plan_publish("web", "1.0", files.clone(), &sn(""))
        .expect("plan");
    assert_eq!(plan.missing.len(), files.len());

    // Storing before every digest was staged is refused, and stores nothing.
    let staged = f.dir.path().join("staged");
    let missing: Vec<&String> = plan.missing.keys().collect();
    stage(&staged, &src, &files, &missing[1..]);
    let err = f
        .store
        .store_published(&plan, &staged)
        .await
        .expect_err("missing content");
    assert!(
        matches!(err, ArtifactError::ContentMissing { count: 1, .. }),
        "{err}"
    );
    assert!(
        f.store
            .list_versions(&name("web"))
            .expect("list")
            .is_empty()
    );

    stage(&staged, &src, &files, &missing);
    let stored = f
        .store
        .store_published(&plan, &staged)
        .await
        .expect("store");
    assert_eq!(
        (stored.record.build_id, stored.record.file_count as usize),
        (0, files.len())
    );
    assert_eq!(
        f.store
            .verify(&name("web"), Some(&ver("1.0")))
            .await
            .expect("verify")
            .problems,
        []
    );

    // The same content again: nothing to upload, everything copied.
    let again = f
        .store
        .plan_publish("web", "1.1", files.clone(), &sn(""))
        .expect("plan");
    assert!(again.missing.is_empty());
    let stored = f
        .store
        .store_published(&again, &f.dir.path().join("nothing-staged"))
        .await
        .expect("store");
    assert_eq!(stored.files_copied as usize, files.len());
    assert_eq!(stored.bytes_written, 0);
    assert_eq!(
        f.store
            .verify(&name("web"), Some(&ver("1.1")))
            .await
            .expect("verify")
            .problems,
        []
    );

    // Errors of step 1.
    let err = f
        .store
        .plan_publish("web", "1.0", files.clone(), &sn(""))
        .expect_err("exists");
    assert!(matches!(err, ArtifactError::VersionExists { .. }));
    for bad in ["archive", "manifest", "../x", ""] {
        let err = f
            .store
            .plan_publish("web", bad, files.clone(), &sn(""))
            .expect_err("bad version");
        assert!(matches!(err, ArtifactError::Model(_)), "{bad}: {err}");
    }
    for bad in ["../etc/passwd", "/abs", "a/../b"] {
        let mut evil = files.clone();
        evil[0].path = bad.to_owned();
        let err = f
            .store
            .plan_publish("web", "2.0", evil, &sn(""))
            .expect_err("unsafe path");
        assert!(
            matches!(err, ArtifactError::Archive(ArchiveError::UnsafePath { .. })),
            "{bad}: {err}"
        );
    }
    let mut dup = files.clone();
    dup.push(files[0].clone());
    assert!(matches!(
        f.store.plan_publish("web", "2.0", dup, &sn("")),
        Err(ArtifactError::InvalidManifest(_))
    ));
    let mut short = files.clone();
    short[0].sha256 = "abc".into();
    assert!(matches!(
        f.store.plan_publish("web", "2.0", short, &sn("")),
        Err(ArtifactError::InvalidManifest(_))
    ));
    let mut two_sizes = files.clone();
    two_sizes[1].sha256 = two_sizes[0].sha256.clone();
    two_sizes[1].size = two_sizes[0].size + 1;
    assert!(matches!(
        f.store.plan_publish("web", "2.0", two_sizes, &sn("")),
        Err(ArtifactError::InvalidManifest(_))
    ));
    assert!(matches!(
        f.store.plan_publish("web", "2.0", Vec::new(), &sn("")),
        Err(ArtifactError::InvalidManifest(_))
    ));
    assert!(matches!(
        f.store.plan_publish("nope", "2.0", files.clone(), &sn("")),
        Err(ArtifactError::Meta(StoreError::ProjectNotFound(_)))
    ));
    assert!(matches!(
        f.store
            .plan_publish("web", "2.0", files.clone(), &sn("nope")),
        Err(ArtifactError::UnknownStore { .. })
    ));
}

#[test]
fn store_urls_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    for bad in ["ftp://x/y", "file://", "not a url"] {
        let err = ArtifactStore::open(meta.clone(), bad, &[]).expect_err("bad url");
        assert!(
            matches!(err, ArtifactError::InvalidStoreUrl { .. }),
            "{bad}: {err}"
        );
    }
    let url = format!("file://{}", dir.path().join("a").display());
    let twice = [
        (sn("x"), "memory:///".to_owned()),
        (sn("x"), "memory:///".to_owned()),
    ];
    assert!(ArtifactStore::open(meta.clone(), &url, &twice).is_err());
    let store = ArtifactStore::open(meta, &url, &twice[..1]).expect("open");
    assert_eq!(
        store
            .stores()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["default", "x"]
    );
    assert!(matches!(
        store.configured_store("y"),
        Err(ArtifactError::UnknownStore { .. })
    ));
}

#[tokio::test]
async fn one_version_is_stored_once_when_two_writers_race() {
    let f = fixture();
    let src = f.dir.path().join("dist");
    site(&src, 1);
    let (web, one, o1, o2) = (name("web"), ver("1"), origin(1), origin(2));
    let options = SiteOptions::default();
    let (a, b) = tokio::join!(
        f.store.store_dir(&web, &one, &src, &o1, &options),
        f.store.store_dir(&web, &one, &src, &o2, &options),
    );
    let (ok, err) = match (a, b) {
        (Ok(s), Err(e)) | (Err(e), Ok(s)) => (s, e),
        other => panic!("exactly one writer should win: {other:?}"),
    };
    assert!(
        matches!(
            err,
            ArtifactError::VersionBusy { .. } | ArtifactError::VersionExists { .. }
        ),
        "{err}"
    );
    assert_eq!(
        f.store
            .verify(&name("web"), Some(&ver("1")))
            .await
            .expect("verify")
            .problems,
        []
    );
    assert_eq!(
        f.store
            .version(&name("web"), &ver("1"))
            .expect("record")
            .build_id,
        ok.record.build_id
    );
}

/// The URL of the fixture's default store, as a runner would be told.
fn default_url(f: &Fixture) -> String {
    f.store
        .store_url(&StoreName::default_store())
        .expect("default store")
}

#[tokio::test]
async fn a_runner_upload_is_committed_after_its_manifest_and_objects_check_out() {
    let f = fixture();
    let reservation = f
        .store
        .reserve_version(&name("web"), &ver("main-5-abc"), &sn(""))
        .expect("reserve");
    // While reserved, nothing else stores that version.
    let err = f
        .store
        .reserve_version(&name("web"), &ver("main-5-abc"), &sn(""))
        .expect_err("busy");
    assert!(matches!(err, ArtifactError::VersionBusy { .. }), "{err}");

    let src = f.dir.path().join("out");
    site(&src, 1);
    let uploader = Uploader::open(&default_url(&f), &[]).expect("uploader");
    let uploaded = uploader
        .upload_dir(&name("web"), &ver("main-5-abc"), &src, &origin(5))
        .await
        .expect("upload");
    assert_eq!(uploaded.files, 4);
    // Uploaded is not stored: the version exists once opusd commits.
    assert!(
        f.meta
            .get_version(&name("web"), &ver("main-5-abc"))
            .expect("get")
            .is_none()
    );

    let stored = reservation
        .commit_uploaded(&origin(5), &SiteOptions::default())
        .await
        .expect("commit");
    assert_eq!(stored.record.file_count, 4);
    assert_eq!(stored.record.build_id, 5);
    let manifest = f
        .store
        .manifest(&name("web"), &ver("main-5-abc"))
        .await
        .expect("manifest");
    assert_eq!(
        (&manifest.files, &manifest.archive),
        (&uploaded.manifest.files, &uploaded.manifest.archive)
    );
    assert!(
        f.store
            .verify(&name("web"), Some(&ver("main-5-abc")))
            .await
            .expect("verify")
            .problems
            .is_empty()
    );
    // A runner's digests are not trusted for dedup.
    let sha = &manifest.files[0].sha256;
    assert!(
        f.meta
            .blob_holder(&StoreName::default_store(), sha)
            .expect("index")
            .is_none()
    );
    // Committed versions are not discarded.
    reservation.discard().await.expect("discard is a no-op");
    assert!(
        f.store
            .manifest(&name("web"), &ver("main-5-abc"))
            .await
            .is_ok()
    );
    drop(reservation);

    // A stored version is never overwritten by a runner.
    let err = uploader
        .upload_dir(&name("web"), &ver("main-5-abc"), &src, &origin(6))
        .await
        .expect_err("exists");
    assert!(matches!(err, ArtifactError::VersionExists { .. }), "{err}");
    let err = f
        .store
        .reserve_version(&name("web"), &ver("main-5-abc"), &sn(""))
        .expect_err("exists");
    assert!(matches!(err, ArtifactError::VersionExists { .. }), "{err}");
}

#[tokio::test]
async fn a_runner_upload_that_does_not_match_its_assignment_is_refused() {
    let f = fixture();
    let src = f.dir.path().join("out");
    site(&src, 1);
    let uploader = Uploader::open(&default_url(&f), &[]).expect("uploader");
    let reservation = f
        .store
        .reserve_version(&name("web"), &ver("v1"), &sn(""))
        .expect("reserve");
    uploader
        .upload_dir(&name("web"), &ver("v1"), &src, &origin(5))
        .await
        .expect("upload");

    // Another build's or commit's upload.
    let err = reservation
        .commit_uploaded(&origin(6), &SiteOptions::default())
        .await
        .expect_err("wrong build");
    assert!(
        err.to_string()
            .contains("the manifest names build 5 at commit \"abc123\", not build 6"),
        "{err}"
    );

    // An object the manifest lists is missing.
    let root = f.dir.path().join("artifacts");
    std::fs::remove_file(root.join("web/v1/robots.txt")).expect("remove");
    let err = reservation
        .commit_uploaded(&origin(5), &SiteOptions::default())
        .await
        .expect_err("missing");
    assert!(matches!(err, ArtifactError::UploadInvalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("web/v1/robots.txt, listed in the manifest, is not in the store"),
        "{err}"
    );

    // A size that does not match.
    std::fs::write(root.join("web/v1/robots.txt"), "changed").expect("write");
    let err = reservation
        .commit_uploaded(&origin(5), &SiteOptions::default())
        .await
        .expect_err("size");
    assert!(err.to_string().contains("the manifest says 14"), "{err}");

    // A path that escapes the version.
    let key = root.join("web/manifest/v1.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&key).expect("read")).expect("json");
    manifest["files"][0]["path"] = serde_json::json!("../../etc/passwd");
    std::fs::write(&key, serde_json::to_vec(&manifest).expect("json")).expect("write");
    let err = reservation
        .commit_uploaded(&origin(5), &SiteOptions::default())
        .await
        .expect_err("path");
    assert!(matches!(err, ArtifactError::Archive(_)), "{err}");
    assert!(
        f.meta
            .get_version(&name("web"), &ver("v1"))
            .expect("get")
            .is_none()
    );

    // The failed build's objects are removed.
    reservation.discard().await.expect("discard");
    assert!(!root.join("web/v1").exists());
    assert!(!key.exists());
    assert!(!root.join("web/archive/v1.tar.gz").exists());
}

#[tokio::test]
async fn a_runner_that_wrote_elsewhere_is_told_where_the_store_is() {
    let f = fixture();
    let reservation = f
        .store
        .reserve_version(&name("web"), &ver("v1"), &sn(""))
        .expect("reserve");
    let err = reservation
        .commit_uploaded(&origin(5), &SiteOptions::default())
        .await
        .expect_err("nothing uploaded");
    let text = err.to_string();
    assert!(
        text.contains("has no manifest at web/manifest/v1.json"),
        "{text}"
    );
    assert!(text.contains("use s3://, gs:// or az://"), "{text}");
}

#[test]
fn store_settings_reach_the_builder_over_the_environment() {
    // An unknown setting is ignored (as object_store ignores unknown environment variables); a
    // known one is used: a region makes an S3 store without the environment's.
    let settings = vec![
        ("AWS_REGION".to_owned(), "eu-west-3".to_owned()),
        ("AWS_NOT_A_SETTING".to_owned(), "x".to_owned()),
    ];
    let uploader = Uploader::open("s3://bucket/prefix", &settings).expect("s3 uploader");
    assert!(format!("{uploader:?}").contains("s3://bucket/prefix"));
    let err = Uploader::open("ftp://x", &settings).expect_err("bad scheme");
    assert!(
        matches!(err, ArtifactError::InvalidStoreUrl { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_stored_folder_commits_its_site_options_with_the_version() {
    let f = fixture();
    let src = f.dir.path().join("dist");
    site(&src, 1);
    let spa = SiteOptions {
        spa: true,
        ..SiteOptions::default()
    };
    f.store
        .store_dir(&name("web"), &ver("1"), &src, &origin(1), &spa)
        .await
        .expect("stored");
    assert_eq!(
        f.meta
            .site_options(&name("web"), &ver("1"))
            .expect("options"),
        spa
    );
    // A version that fails to store records no options.
    let missing = f.dir.path().join("missing");
    f.store
        .store_dir(&name("web"), &ver("2"), &missing, &origin(2), &spa)
        .await
        .expect_err("no folder");
    assert_eq!(
        f.meta
            .site_options(&name("web"), &ver("2"))
            .expect("options"),
        SiteOptions::default()
    );
}

#[tokio::test]
async fn a_versions_rules_files_are_parsed_and_committed_after_opus_yml_rules() {
    let f = fixture();
    let src = f.dir.path().join("dist");
    site(&src, 1);
    write(
        &src,
        "_redirects",
        b"# moved\n/old /new 302\n/blog/* /posts/:splat 301!\n",
    );
    write(&src, "_headers", b"/*\n  X-Frame-Options: DENY\n");
    let yml = SiteOptions {
        spa: false,
        rules: crate::site_rules::SiteRules::from_spec(&["/old /yml 301".into()], [])
            .expect("rules"),
    };
    f.store
        .store_dir(&name("web"), &ver("1"), &src, &origin(1), &yml)
        .await
        .expect("stored");
    let rules = f
        .meta
        .site_options(&name("web"), &ver("1"))
        .expect("options")
        .rules;
    let froms: Vec<(&str, &str)> = rules
        .redirects
        .iter()
        .map(|r| (r.from.as_str(), r.to.as_str()))
        .collect();
    assert_eq!(
        froms,
        [
            ("/old", "/new"),
            ("/blog/*", "/posts/:splat"),
            ("/old", "/yml")
        ]
    );
    assert_eq!(rules.headers[0].headers[0].0, "x-frame-options");
}

#[tokio::test]
async fn a_malformed_rules_file_fails_the_store_naming_file_and_line_and_leaves_nothing() {
    let f = fixture();
    for (file, text, words) in [
        (
            "_redirects",
            "/a /b 302\n/loop /loop 301\n",
            "_redirects line 2: ",
        ),
        ("_redirects", "/a /b 299\n", "_redirects line 1: status 299"),
        (
            "_headers",
            "/*\n  X-A: 1\n  not a header\n",
            "_headers line 3: ",
        ),
    ] {
        let src = f.dir.path().join(format!("dist-{file}-{}", text.len()));
        site(&src, 1);
        write(&src, file, text.as_bytes());
        let e = f
            .store
            .store_dir(
                &name("web"),
                &ver("1"),
                &src,
                &origin(1),
                &SiteOptions::default(),
            )
            .await
            .expect_err("malformed");
        assert!(matches!(e, ArtifactError::SiteRules(_)), "{e}");
        assert!(e.to_string().contains(words), "{e}");
        assert!(
            f.meta
                .get_version(&name("web"), &ver("1"))
                .expect("read")
                .is_none()
        );
        assert!(
            !f.dir.path().join("artifacts/web/1").exists()
                || std::fs::read_dir(f.dir.path().join("artifacts/web/1"))
                    .expect("dir")
                    .next()
                    .is_none(),
            "the written files were removed"
        );
    }
}
