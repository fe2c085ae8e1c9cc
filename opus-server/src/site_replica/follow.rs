//! Following the store's site pointers: one listing per poll, only pointers whose stamp (ETag,
//! time, size) changed are read, new versions' manifests loaded, and the whole table swapped
//! when anything changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opus_core::artifact::pointers::{Path, PointerStamp, SitePointer, SiteStore};
use opus_core::error::ArtifactError;
use opus_core::model::{DEFAULT_STORE, ProjectName, VersionName};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sites::{
    Access, Content, Credential, CustomDomains, FileInfo, ProjectAges, SiteKey, SiteServer,
    SiteVersion,
};

/// Loaded versions no pointer serves that are kept for a quick rollback to them.
const KEPT_UNUSED: usize = 16;
/// After a wake-up from the event stream, how often the store is polled until the change shows.
const BURST_EVERY: Duration = Duration::from_millis(25);
/// How long such a burst lasts at most.
const BURST_FOR: Duration = Duration::from_secs(3);

/// What the replica knows of one pointer object.
struct Known {
    /// Its stamp when it was read.
    stamp: PointerStamp,
    /// Its content; `None` when it could not be read at that stamp (logged once).
    pointer: Option<SitePointer>,
}

/// Follows the store's pointers and keeps the site table in step with them.
pub struct Follower {
    store: SiteStore,
    sites: Arc<SiteServer>,
    /// The pointers as last read, by key.
    known: HashMap<Path, Known>,
    /// Versions loaded, by (project, version), with when each was last served.
    loaded: HashMap<(String, String), (Arc<SiteVersion>, SystemTime)>,
    /// The last poll's failure, so that a store that stays down is logged once.
    failing: Option<String>,
    /// With HTTPS: the store's certificates, followed on the same poll.
    certs: Option<super::certs::CertFollower>,
}

impl Follower {
    /// A follower of `store`'s pointers, feeding `sites`.
    pub fn new(store: SiteStore, sites: Arc<SiteServer>) -> Follower {
        Follower {
            store,
            sites,
            known: HashMap::new(),
            loaded: HashMap::new(),
            failing: None,
            certs: None,
        }
    }

    /// Also follows the store's certificates (`_opus/certs/`) on every poll.
    pub fn with_certs(mut self, certs: super::certs::CertFollower) -> Follower {
        self.certs = Some(certs);
        self
    }

    /// Polls every `every` (and at once, then in a short burst, when `wake` is notified) until
    /// `stop`. A failed poll leaves the table as it is.
    pub async fn run(mut self, every: Duration, wake: Arc<Notify>, stop: CancellationToken) {
        let mut burst_until: Option<tokio::time::Instant> = None;
        loop {
            let changed = self.poll_logged().await;
            if changed {
                burst_until = None;
            }
            let wait = match burst_until {
                Some(until) if tokio::time::Instant::now() < until => BURST_EVERY,
                _ => every,
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = wake.notified() => {
                    burst_until = Some(tokio::time::Instant::now() + BURST_FOR);
                }
            }
        }
    }

    /// One poll, its failure logged once while it lasts; whether the table changed.
    async fn poll_logged(&mut self) -> bool {
        match self.poll().await {
            Ok(changed) => {
                if self.failing.take().is_some() {
                    tracing::info!("the store answers again; following its site pointers");
                }
                changed
            }
            Err(e) => {
                let why = e.to_string();
                if self.failing.as_deref() != Some(why.as_str()) {
                    tracing::warn!(error = %why, "cannot read the site pointers; serving what this replica has");
                    self.failing = Some(why);
                }
                false
            }
        }
    }

    /// Lists the certificates (with HTTPS) and serves the changed ones; lists the pointers, reads the changed ones and, when anything changed, loads what is new
    /// and swaps the table. Nothing is kept of a poll that fails part-way (the next one starts
    /// over). Whether the table changed.
    pub async fn poll(&mut self) -> Result<bool, ArtifactError> {
        if let Some(certs) = &mut self.certs {
            certs.poll(&self.store).await?;
        }
        let listed = self.store.list_pointers(None).await?;
        let mut changed = listed.len() != self.known.len();
        let mut next = HashMap::with_capacity(listed.len());
        for stamp in listed {
            if let Some(k) = self.known.get(&stamp.key).filter(|k| k.stamp == stamp) {
                next.insert(
                    stamp.key.clone(),
                    Known {
                        stamp,
                        pointer: k.pointer.clone(),
                    },
                );
                continue;
            }
            changed = true;
            let pointer = match self.store.read_pointer(&stamp.key).await {
                Ok(p) => Some(p),
                // Deleted between the listing and the read: the next poll sees it gone.
                Err(e) if e.is_object_not_found() => continue,
                Err(e @ ArtifactError::PointerCorrupt { .. }) => {
                    tracing::warn!(error = %e, "skipping a site pointer");
                    None
                }
                Err(e) => return Err(e),
            };
            next.insert(stamp.key.clone(), Known { stamp, pointer });
        }
        if !changed && next.keys().all(|k| self.known.contains_key(k)) {
            return Ok(false);
        }
        self.apply(next).await?;
        Ok(true)
    }

    /// Loads the versions `next` points at and swaps the table to it.
    async fn apply(&mut self, next: HashMap<Path, Known>) -> Result<(), ArtifactError> {
        let now = SystemTime::now();
        let mut sites = HashMap::new();
        let mut access = Access::default();
        let mut ages = Vec::new();
        let mut domains = Vec::new();
        for pointer in next.values().filter_map(|k| k.pointer.as_ref()) {
            let Some(version) = self.version(pointer, now).await? else {
                continue;
            };
            let key = SiteKey::new(pointer.project.as_str(), pointer.env.as_str());
            if pointer.preview {
                access.preview_envs.insert(key.clone());
            }
            if let Some(phc) = &pointer.password {
                access.envs.insert(key.clone(), credential(phc, pointer));
            }
            if let Some(phc) = &pointer.previews_password {
                access
                    .previews
                    .insert(pointer.project.clone(), credential(phc, pointer));
            }
            ages.push((pointer.project.clone(), pointer.project_created));
            domains.extend(pointer.domains.iter().map(|d| (d.clone(), key.clone())));
            tracing::debug!(project = %pointer.project, env = %pointer.env, version = %pointer.version, release = pointer.release, "serving");
            sites.insert(key, version);
        }
        let guard = self.sites.lock().await;
        self.sites.replace(
            &guard,
            sites,
            access,
            ProjectAges::new(ages),
            CustomDomains::new(domains),
        );
        drop(guard);
        self.known = next;
        self.forget_unused(now);
        Ok(())
    }

    /// The loaded version a pointer names (loading its manifest when new); `None` when it cannot
    /// be served here (another store, a missing manifest, a name that is not valid), logged.
    async fn version(
        &mut self,
        pointer: &SitePointer,
        now: SystemTime,
    ) -> Result<Option<Arc<SiteVersion>>, ArtifactError> {
        let id = (pointer.project.clone(), pointer.version.clone());
        if let Some((v, used)) = self.loaded.get_mut(&id) {
            *used = now;
            return Ok(Some(v.clone()));
        }
        if pointer.store != DEFAULT_STORE {
            tracing::warn!(project = %pointer.project, env = %pointer.env, store = %pointer.store, "the version lives in another store than this replica's; not served here");
            return Ok(None);
        }
        let (Ok(project), Ok(version)) = (
            ProjectName::new(pointer.project.as_str()),
            VersionName::new(pointer.version.as_str()),
        ) else {
            tracing::warn!(project = %pointer.project, version = %pointer.version, "not a valid project or version name; not served");
            return Ok(None);
        };
        let manifest = match self
            .store
            .manifest(project.as_str(), version.as_str())
            .await
        {
            Ok(m) => m,
            Err(e) if e.is_object_not_found() => {
                tracing::warn!(project = %project, version = %version, "the version's manifest is not in the store; not served");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let content = match self.store.local_dir(project.as_str(), version.as_str()) {
            Some(dir) => Content::Local(dir),
            None => Content::Remote {
                artifacts: Arc::new(self.store.clone()),
                cache: self.sites.cache().clone(),
            },
        };
        let files: HashMap<String, FileInfo> = manifest
            .files
            .into_iter()
            .map(|f| {
                (
                    f.path,
                    FileInfo {
                        size: f.size,
                        sha256: f.sha256,
                    },
                )
            })
            .collect();
        let loaded = Arc::new(
            SiteVersion::new(&project, &version, content, pointer.site.spa, Some(files))
                .with_rules(&pointer.site.rules),
        );
        loaded.warm();
        self.loaded.insert(id, (loaded.clone(), now));
        Ok(Some(loaded))
    }

    /// Drops loaded versions nothing serves since `now`, beyond the [`KEPT_UNUSED`] most
    /// recently served.
    fn forget_unused(&mut self, now: SystemTime) {
        let mut unused: Vec<((String, String), SystemTime)> = self
            .loaded
            .iter()
            .filter(|(_, (_, used))| *used < now)
            .map(|(id, (_, used))| (id.clone(), *used))
            .collect();
        if unused.len() <= KEPT_UNUSED {
            return;
        }
        unused.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
        for (id, _) in unused.into_iter().skip(KEPT_UNUSED) {
            self.loaded.remove(&id);
        }
    }
}

/// The password a pointer carries, ready to check; one that cannot be read refuses everyone
/// (better than serving a protected site openly), as opusd does.
fn credential(phc: &str, pointer: &SitePointer) -> Arc<Credential> {
    match Credential::new(phc) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(project = %pointer.project, env = %pointer.env, error = %e, "a site password in the store cannot be read; its site answers 401");
            Arc::new(Credential::unusable())
        }
    }
}

#[cfg(test)]
mod tests;
