//! opus-core's artifact store on S3, called directly (no daemon): a real S3-protocol server
//! (moto, see [`opus_tests::moto`]) on 127.0.0.1. Not a mock of object_store: every request goes
//! over HTTP through object_store's S3 client.

use std::path::Path;
use std::time::SystemTime;

use object_store::ObjectStoreExt;
use opus_core::artifact::{ArtifactStore, ManifestFile, Origin, sha256_hex};
use opus_core::model::{Project, ProjectName, Source, StoreName, VersionName};
use opus_core::store::{MetaStore, SiteOptions};
use opus_tests::moto::Moto;

const BUCKET: &str = "opus-test";

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
    let Some(moto) = Moto::start_or_skip("versions_on_a_real_s3_server", BUCKET) else {
        return;
    };
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
    let s3 = StoreName::new("s3").expect("store name");
    let extra = [(s3.clone(), moto.store_url(BUCKET, "opus"))];
    let store = ArtifactStore::open(meta.clone(), &default, &extra).expect("open");
    let origin = Origin {
        build_id: 1,
        commit: "c0ffee".into(),
        store: s3.clone(),
    };
    let web = ProjectName::new("web").expect("name");

    let v1 = dir.path().join("v1");
    site(&v1, 1);
    let first = store
        .store_dir(
            &web,
            &VersionName::new("1").expect("v"),
            &v1,
            &origin,
            &SiteOptions::default(),
        )
        .await
        .expect("store v1");
    assert_eq!(first.record.store, s3);
    assert_eq!(first.files_copied, 0);

    // The layout, as a bucket sees it (under the URL's prefix).
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_url(format!("s3://{BUCKET}"))
        .with_endpoint(moto.endpoint())
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
        .store_dir(
            &web,
            &VersionName::new("2").expect("v"),
            &v2,
            &origin,
            &SiteOptions::default(),
        )
        .await
        .expect("store v2");
    assert_eq!(
        (second.files_written, second.files_copied),
        (1, 2),
        "{second:?}"
    );
    let mut body = Vec::new();
    let mut chunks = store
        .file_stream(
            &web,
            &VersionName::new("2").expect("version"),
            "static/app.js",
        )
        .await
        .expect("read");
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        body.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(body.len(), "let x = 1;\n".len() * 20_000);
    assert!(
        store
            .local_path(&web, &VersionName::new("2").expect("version"), "index.html")
            .expect("path")
            .is_none()
    );

    let (size, mut stream) = store
        .archive(&web, &VersionName::new("2").expect("version"))
        .await
        .expect("archive");
    let mut gz = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        gz.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(gz.len() as u64, size);
    let listed = opus_core::archive::list(&gz[..]).expect("list");
    assert_eq!(listed.len(), 3);

    let report = store.verify(&web, None).await.expect("verify");
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
    let plan = store
        .plan_publish("web", "3", files.clone(), &origin.store)
        .expect("plan");
    let new = sha256_hex(b"<html>3</html>");
    assert_eq!(plan.missing.keys().collect::<Vec<_>>(), [&new]);
    let staged = dir.path().join("staged");
    std::fs::create_dir_all(&staged).expect("mkdir");
    std::fs::write(staged.join(&new), b"<html>3</html>").expect("stage");
    let third = store.store_published(&plan, &staged).await.expect("store");
    assert_eq!((third.files_written, third.files_copied), (1, 2));

    // Retention and deletion keep the index sound: version 3 still verifies after 1 and 2 go.
    let deleted = store.apply_retention(&web, 1).await.expect("retention");
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
            .verify(&web, Some(&VersionName::new("3").expect("version")))
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
            .verify(&web, Some(&VersionName::new("3").expect("version")))
            .await
            .expect("verify")
            .problems,
        []
    );
}
