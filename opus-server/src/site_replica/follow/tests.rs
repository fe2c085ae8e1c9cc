//! The follower over a `file://` store: versions stored as opusd stores them, pointers written
//! by hand as opusd writes them.

use std::time::SystemTime;

use opus_core::artifact::pointers::POINTER_FORMAT;
use opus_core::artifact::{ArtifactStore, Origin};
use opus_core::model::{Project, Source, StoreName};
use opus_core::store::{MetaStore, SiteOptions};

use super::*;
use crate::metrics::Metrics;
use crate::sites::SiteCache;

/// A store with versions "1" and "2" of project `web`, the replica's view of it, and a replica.
struct Fixture {
    _dir: tempfile::TempDir,
    store: SiteStore,
    sites: Arc<SiteServer>,
    follower: Follower,
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
    let artifacts = ArtifactStore::open(meta, &url, &[]).expect("artifact store");
    for v in ["1", "2"] {
        let src = dir.path().join("src").join(v);
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("index.html"), format!("version {v}")).expect("write");
        let origin = Origin {
            build_id: 1,
            commit: String::new(),
            store: StoreName::default_store(),
        };
        artifacts
            .store_dir(
                &web,
                &VersionName::new(v).expect("version"),
                &src,
                &origin,
                &SiteOptions::default(),
            )
            .await
            .expect("stored");
    }
    let store = SiteStore::open(&url).expect("site store");
    let metrics = Metrics::new();
    let cache =
        SiteCache::load(&dir.path().join("cache"), 1 << 20, metrics.clone()).expect("cache");
    let sites = Arc::new(SiteServer::new("localhost", metrics, cache));
    let follower = Follower::new(store.clone(), sites.clone());
    Fixture {
        _dir: dir,
        store,
        sites,
        follower,
    }
}

fn pointer(env: &str, version: &str) -> SitePointer {
    SitePointer {
        format: POINTER_FORMAT,
        project: "web".into(),
        env: env.into(),
        version: version.into(),
        store: DEFAULT_STORE.into(),
        release: 1,
        preview: false,
        site: SiteOptions::default(),
        password: None,
        previews_password: None,
        domains: Vec::new(),
        project_created: SystemTime::UNIX_EPOCH,
    }
}

/// The version the table serves for `web`'s environment `env`.
fn served(sites: &SiteServer, env: &str) -> Option<String> {
    sites
        .snapshot()
        .sites
        .get(&SiteKey::new("web", env))
        .map(|v| v.version.to_string())
}

#[tokio::test]
async fn an_empty_store_serves_nothing_and_picks_sites_up_once_they_appear() {
    let mut f = fixture().await;
    assert!(!f.follower.poll().await.expect("poll"), "nothing to change");
    assert!(f.sites.snapshot().sites.is_empty());

    f.store
        .put_pointer(&pointer("production", "2"))
        .await
        .expect("put");
    assert!(f.follower.poll().await.expect("poll"));
    assert_eq!(served(&f.sites, "production").as_deref(), Some("2"));
    // Unchanged pointers are not read again, and nothing is swapped.
    assert!(!f.follower.poll().await.expect("poll"));
}

#[tokio::test]
async fn a_rollback_a_removal_and_the_options_around_a_site_are_followed() {
    let mut f = fixture().await;
    f.store
        .put_pointer(&pointer("production", "2"))
        .await
        .expect("put");
    let mut staging = pointer("staging", "1");
    staging.preview = true;
    staging.password = Some(crate::sites::hash_password("s3cret").expect("hash"));
    staging.domains = vec!["staging.example.com".into()];
    f.store.put_pointer(&staging).await.expect("put");
    assert!(f.follower.poll().await.expect("poll"));
    assert_eq!(served(&f.sites, "staging").as_deref(), Some("1"));
    let table = f.sites.snapshot();
    assert_eq!(
        table.domains.site_of("staging.example.com"),
        Some(&SiteKey::new("web", "staging"))
    );
    let policy = f
        .sites
        .policy(&table, "staging--web.localhost")
        .expect("staging has a policy");
    assert!(policy.noindex && policy.auth.is_some());

    // A rollback is a rewritten pointer.
    f.store
        .put_pointer(&pointer("production", "1"))
        .await
        .expect("put");
    assert!(f.follower.poll().await.expect("poll"));
    assert_eq!(served(&f.sites, "production").as_deref(), Some("1"));

    f.store
        .delete_pointer("web", "staging")
        .await
        .expect("delete");
    assert!(f.follower.poll().await.expect("poll"));
    assert_eq!(served(&f.sites, "staging"), None);
    assert!(
        f.sites
            .snapshot()
            .domains
            .site_of("staging.example.com")
            .is_none()
    );
    assert_eq!(served(&f.sites, "production").as_deref(), Some("1"));
}

#[tokio::test]
async fn a_pointer_that_cannot_be_read_or_served_is_skipped_and_the_rest_served() {
    let mut f = fixture().await;
    f.store
        .put_pointer(&pointer("production", "2"))
        .await
        .expect("put");
    // A version whose manifest is not in the store, and one in another store.
    f.store
        .put_pointer(&pointer("gone", "9"))
        .await
        .expect("put");
    let mut elsewhere = pointer("elsewhere", "1");
    elsewhere.store = "s3".into();
    f.store.put_pointer(&elsewhere).await.expect("put");
    // A damaged pointer.
    let key = f.store.pointer_key("web", "damaged").expect("key");
    let damaged = f._dir.path().join("artifacts").join(key.as_ref());
    std::fs::write(&damaged, "{").expect("write");

    assert!(f.follower.poll().await.expect("poll"));
    assert_eq!(served(&f.sites, "production").as_deref(), Some("2"));
    for env in ["gone", "elsewhere", "damaged"] {
        assert_eq!(served(&f.sites, env), None, "{env}");
    }
    // The damaged pointer is not read again until it changes.
    assert!(!f.follower.poll().await.expect("poll"));
}

#[tokio::test]
async fn a_store_that_fails_leaves_the_table_as_it_was() {
    let mut f = fixture().await;
    f.store
        .put_pointer(&pointer("production", "2"))
        .await
        .expect("put");
    assert!(f.follower.poll().await.expect("poll"));
    // The store's folder becomes a file: listing fails.
    let root = f._dir.path().join("artifacts");
    std::fs::rename(&root, f._dir.path().join("moved")).expect("move");
    std::fs::write(&root, "not a folder").expect("write");
    assert!(!f.follower.poll_logged().await);
    assert!(f.follower.failing.is_some(), "the failure is remembered");
    assert_eq!(served(&f.sites, "production").as_deref(), Some("2"));

    std::fs::remove_file(&root).expect("remove");
    std::fs::rename(f._dir.path().join("moved"), &root).expect("move back");
    assert!(!f.follower.poll_logged().await, "nothing changed meanwhile");
    assert!(f.follower.failing.is_none());
}
