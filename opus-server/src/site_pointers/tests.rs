//! Pointers written through the deployer, as opusd writes them, over a `file://` store.

use std::sync::Arc;
use std::time::SystemTime;

use opus_core::artifact::pointers::SitePointer;
use opus_core::artifact::{ArtifactStore, Origin};
use opus_core::model::{Project, Source};
use opus_core::store::{ReleaseReason, SiteOptions};

use super::*;
use crate::deploys::Deployer;
use crate::sites::{Credential, SiteCache, SiteServer};

struct Fixture {
    dir: tempfile::TempDir,
    meta: MetaStore,
    store: SiteStore,
    pointers: PointerPublisher,
    deployer: Deployer,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    let web = ProjectName::new("web").expect("name");
    meta.create_project(&Project {
        name: web.clone(),
        source: Source::Git("https://example.com/web.git".into()),
        branch: "main".into(),
        created_at: SystemTime::now(),
        keep_versions: 0,
    })
    .expect("project");
    let url = format!("file://{}", dir.path().join("artifacts").display());
    let artifacts = ArtifactStore::open(meta.clone(), &url, &[]).expect("artifact store");
    for v in ["1", "2"] {
        let src = dir.path().join("src").join(v);
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("index.html"), format!("version {v}")).expect("write");
        let origin = Origin {
            build_id: 1,
            commit: String::new(),
            store: StoreName::default_store(),
        };
        let options = SiteOptions {
            spa: v == "2",
            ..SiteOptions::default()
        };
        artifacts
            .store_dir(
                &web,
                &VersionName::new(v).expect("version"),
                &src,
                &origin,
                &options,
            )
            .await
            .expect("stored");
    }
    let metrics = Metrics::new();
    let cache =
        SiteCache::load(&dir.path().join("cache"), 1 << 20, metrics.clone()).expect("cache");
    let sites = Arc::new(SiteServer::new("localhost", metrics.clone(), cache));
    let store = artifacts.site_store().expect("site store");
    let pointers = PointerPublisher::new(meta.clone(), store.clone(), "localhost", metrics.clone());
    let deployer =
        Deployer::new(meta.clone(), artifacts, sites, metrics).with_pointers(pointers.clone());
    Fixture {
        dir,
        meta,
        store,
        pointers,
        deployer,
    }
}

fn web() -> ProjectName {
    ProjectName::new("web").expect("name")
}

async fn deploy(f: &Fixture, env: &str, version: &str) {
    f.deployer
        .deploy(
            &web(),
            &EnvName::new(env).expect("env"),
            &VersionName::new(version).expect("version"),
            "test",
            ReleaseReason::Deploy,
            false,
        )
        .await
        .expect("deploy");
}

async fn read(f: &Fixture, env: &str) -> Option<SitePointer> {
    let key = f.store.pointer_key("web", env).expect("key");
    match f.store.read_pointer(&key).await {
        Ok(p) => Some(p),
        Err(e) if e.is_object_not_found() => None,
        Err(e) => panic!("reading {key}: {e}"),
    }
}

#[tokio::test]
async fn deploys_rollbacks_removals_and_passwords_rewrite_the_pointers() {
    let f = fixture().await;
    deploy(&f, "production", "1").await;
    deploy(&f, "production", "2").await;
    let p = read(&f, "production").await.expect("written");
    assert_eq!((p.version.as_str(), p.release, p.site.spa), ("2", 2, true));
    assert_eq!(p.store, "default");

    f.deployer
        .rollback(&web(), &EnvName::production(), None, "test")
        .await
        .expect("rollback");
    let p = read(&f, "production").await.expect("written");
    assert_eq!((p.version.as_str(), p.site.spa), ("1", false));

    deploy(&f, "staging", "2").await;
    let phc = crate::sites::hash_password("s3cret").expect("hash");
    f.deployer
        .protect(
            &web(),
            &ProtectionTarget::Env(EnvName::new("staging").expect("env")),
            Credential::new(&phc).expect("credential"),
        )
        .await
        .expect("protect");
    assert_eq!(
        read(&f, "staging").await.expect("written").password,
        Some(phc)
    );
    assert_eq!(
        read(&f, "production").await.expect("written").password,
        None
    );

    f.deployer
        .remove_environment(&web(), &EnvName::new("staging").expect("env"))
        .await
        .expect("remove");
    assert!(read(&f, "staging").await.is_none());

    f.deployer
        .remove_project(&web())
        .await
        .expect("remove project");
    assert!(f.store.list_pointers(None).await.expect("list").is_empty());
    assert!(!f.pointers.has_pending());
}

#[tokio::test]
async fn a_failed_write_is_kept_and_retried_until_the_store_takes_it() {
    let f = fixture().await;
    // `_opus/sites/web` is a file: no pointer of `web` can be written under it.
    let blocker = f.dir.path().join("artifacts/_opus/sites/web");
    std::fs::create_dir_all(blocker.parent().expect("parent")).expect("mkdir");
    std::fs::write(&blocker, "in the way").expect("write");

    // The deploy itself succeeds: it is committed and served by opusd.
    deploy(&f, "production", "1").await;
    assert!(f.pointers.has_pending());
    assert_eq!(
        f.meta
            .environment(&web(), &EnvName::production())
            .expect("env")
            .current
            .version,
        "1"
    );

    std::fs::remove_file(&blocker).expect("unblock");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.pointers.has_pending() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry did not land"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(read(&f, "production").await.expect("written").version, "1");
}

#[tokio::test]
async fn publishing_everything_writes_missing_pointers_and_deletes_stale_ones() {
    let f = fixture().await;
    deploy(&f, "production", "2").await;
    // A pointer of an environment that no longer exists (a crash before its deletion), and a
    // missing one (a crash before its write).
    let mut stale = read(&f, "production").await.expect("written");
    stale.env = "old".into();
    f.store.put_pointer(&stale).await.expect("put");
    f.store
        .delete_pointer("web", "production")
        .await
        .expect("delete");

    assert!(f.pointers.publish([Target::All]).await);
    assert!(read(&f, "old").await.is_none());
    assert_eq!(read(&f, "production").await.expect("written").version, "2");
}
