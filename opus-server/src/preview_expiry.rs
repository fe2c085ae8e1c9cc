//! The preview expiry sweep: every [`SWEEP_EVERY`], opusd removes the previews whose opus.yml
//! `previews: { expire: ... }` has passed since their last deploy (see
//! `opus_core::store::PreviewExpiry`). Removals go through the [`Deployer`], so the site table
//! follows and each one appends its `preview.expired` event in the removal's transaction.
//!
//! The clock is injected ([`Clock`]): release times are wall-clock times, so a test moves a fake
//! wall clock while tokio's paused clock drives the ticks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opus_core::model::{EnvName, ProjectName};
use opus_core::store::{EnvironmentRecord, MetaStore};
use tokio_util::sync::CancellationToken;

use crate::deploys::Deployer;

/// How often the sweep looks: short enough that a preview goes within a second or so of its
/// time (a scan of the environment records is cheap).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Where the sweep reads the time: the system clock in opusd, a fake one in tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Removes every preview expired by `now`; returns the removed ones. A failure to remove one is
/// logged and the others still go.
pub async fn sweep(
    store: &MetaStore,
    deployer: &Deployer,
    now: SystemTime,
) -> Vec<EnvironmentRecord> {
    let environments = match store.all_environments() {
        Ok(envs) => envs,
        Err(e) => {
            tracing::warn!(error = %e, "preview expiry: cannot read the environments");
            return Vec::new();
        }
    };
    let mut removed = Vec::new();
    for record in environments {
        if record.expires_at().is_none_or(|at| at > now) {
            continue;
        }
        let (Ok(project), Ok(env)) = (
            ProjectName::new(record.project.clone()),
            EnvName::new(record.name.clone()),
        ) else {
            continue;
        };
        match deployer.expire_preview(&project, &env, now).await {
            Ok(Some(gone)) => {
                tracing::info!(project = %project, env = %env, version = %gone.current.version, "preview expired: removed");
                removed.push(gone);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(project = %project, env = %env, error = %e, "preview expiry: cannot remove")
            }
        }
    }
    removed
}

/// Sweeps every `every` until `shutdown` is cancelled.
pub async fn watch(
    store: MetaStore,
    deployer: Deployer,
    every: Duration,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        sweep(&store, &deployer, clock()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opus_core::artifact::{ArtifactStore, Origin};
    use opus_core::model::{Project, Source, VersionName};
    use opus_core::store::{ReleaseReason, SiteOptions};

    use super::*;
    use crate::metrics::Metrics;
    use crate::sites::{SiteCache, SiteServer};

    /// A deployer over a fresh store with project `web`, version `1` in production and in the
    /// previews `old` (expiring after an hour) and `kept` (the same, but kept).
    async fn setup(dir: &std::path::Path) -> (MetaStore, Deployer) {
        let meta = MetaStore::open(&dir.join("meta")).expect("meta");
        let web = ProjectName::new("web").expect("name");
        meta.create_project(&Project {
            name: web.clone(),
            source: Source::Git("https://example.com/web.git".into()),
            branch: "main".into(),
            created_at: SystemTime::now(),
            keep_versions: 0,
        })
        .expect("project");
        let url = format!("file://{}", dir.join("artifacts").display());
        let artifacts = ArtifactStore::open(meta.clone(), &url, &[]).expect("artifact store");
        let src = dir.join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("index.html"), "v1").expect("write");
        let one = VersionName::new("1").expect("version");
        let origin = Origin {
            build_id: 1,
            commit: String::new(),
            store: opus_core::model::StoreName::default_store(),
        };
        artifacts
            .store_dir(&web, &one, &src, &origin, &SiteOptions::default())
            .await
            .expect("stored");
        let metrics = Metrics::new();
        let cache =
            SiteCache::load(&dir.join("site-cache"), 1 << 20, metrics.clone()).expect("cache");
        let sites = Arc::new(SiteServer::new("localhost", metrics.clone(), cache));
        let deployer = Deployer::new(meta.clone(), artifacts, sites, metrics);
        for (env, preview) in [("production", false), ("old", true), ("kept", true)] {
            let env = EnvName::new(env).expect("env");
            deployer
                .deploy(&web, &env, &one, "test", ReleaseReason::Auto, preview)
                .await
                .expect("deploy");
            meta.set_preview_expire(&web, &env, Some(HOUR))
                .expect("expire");
        }
        deployer
            .keep_environment(&web, &EnvName::new("kept").expect("env"), true)
            .await
            .expect("keep");
        (meta, deployer)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn names(store: &MetaStore) -> Vec<String> {
        store
            .all_environments()
            .expect("environments")
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_removes_a_preview_on_the_first_tick_after_its_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, deployer) = setup(dir.path()).await;
        let wall = Arc::new(Mutex::new(SystemTime::now()));
        let read = wall.clone();
        let clock: Clock = Arc::new(move || *read.lock().expect("clock"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            store.clone(),
            deployer,
            SWEEP_EVERY,
            clock,
            stop.clone(),
        ));
        // Ticks before the hour has passed remove nothing.
        tokio::time::sleep(SWEEP_EVERY * 5).await;
        assert_eq!(names(&store), ["kept", "old", "production"]);
        *wall.lock().expect("clock") += HOUR + Duration::from_secs(1);
        // The next tick removes the expired preview, and only it.
        tokio::time::sleep(SWEEP_EVERY + SWEEP_EVERY / 2).await;
        assert_eq!(names(&store), ["kept", "production"]);
        stop.cancel();
        task.await.expect("the sweep ends on shutdown");
    }

    #[tokio::test]
    async fn a_sweep_says_what_it_removed_and_a_second_finds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, deployer) = setup(dir.path()).await;
        let later = SystemTime::now() + 2 * HOUR;
        let gone = sweep(&store, &deployer, later).await;
        assert_eq!(
            gone.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["old"]
        );
        assert!(sweep(&store, &deployer, later).await.is_empty());
        assert!(sweep(&store, &deployer, SystemTime::now()).await.is_empty());
    }
}
