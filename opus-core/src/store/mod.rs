//! The metadata store: sled at `<data-dir>/meta`.
//!
//! Every change that touches several keys is one sled transaction over [`Tx`], and the event that
//! describes the change is appended inside that same transaction ([`Tx::append_event`]): nothing
//! happens without its event, and no event describes something that did not happen.
//!
//! Keys are chosen so that sled's ordered iteration answers the common questions directly:
//! numbers are big-endian (so `#9` sorts before `#10`), and per-project indexes are
//! `<project>\0<...>` so a prefix scan finds one project's records.

mod approvals;
mod builds;
mod deploys;
mod dns;
mod domains;
mod events;
mod gates;
mod github;
mod github_installations;
mod hooks;
mod jobs;
mod locks;
mod preview_expiry;
mod projects;
mod protection;
mod triggers;
mod versions;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::model::{Event, EventKind};

pub use approvals::{ApprovalDecision, PendingApproval};
pub use builds::BuildFilter;
pub use deploys::VerifyFailure;
pub use deploys::{EnvironmentRecord, Release, ReleaseReason, RollbackTarget, SiteOptions};
pub use domains::DomainAdded;
pub use gates::Blocked;
pub use hooks::KeyKind;
pub use locks::EnvLock;
pub use preview_expiry::PreviewExpiry;
pub use projects::NameFilter;
pub use protection::{Protection, ProtectionTarget};
pub use triggers::{ProjectTriggers, SetTriggersError, TriggerMark};
pub use versions::VersionRemoval;

/// The trees of the store, in the order [`Tx`] sees them.
///
/// - `versions`: `<project>\0<version>` -> [`crate::model::VersionRecord`] JSON.
/// - `blob_refs`: `<store>\0<sha256 hex>\0<object key>` -> empty: which stored objects hold a
///   content, for dedup; an entry exists only while its version does.
/// - `environments`: `<project>\0<env>` -> [`EnvironmentRecord`] JSON (the pointer).
/// - `releases`: `<project>\0<env>\0<seq be>` -> [`Release`] JSON, never capped.
/// - `site_options`: `<project>\0<version>` -> [`SiteOptions`] JSON.
/// - `build_numbers`: `<project>\0<number be>` -> build id (be): which build `web#3` is.
/// - `domains`: host name -> [`crate::domain::DomainRecord`] JSON (custom domains).
/// - `triggers`: project -> [`ProjectTriggers`] JSON (opus.yml `on:` and its bookkeeping).
/// - `verify_policies`: `<project>\0<env>` -> the `verify:` policy of the latest build (see [`T::VerifyPolicies`]).
/// - `dns`, `dns_changes`: the DNS (Cloudflare) outbox: cursor, newest change per name, changes.
/// - `approvals`: build id -> its pending approval.
/// - `github_installations`: project -> its GitHub App installation id.
const TREE_NAMES: [&str; 29] = [
    "projects",
    "secrets",
    "builds",
    "project_builds",
    "events",
    "counters",
    "versions",
    "blob_refs",
    "environments",
    "releases",
    "site_options",
    "hooks",
    "hook_cursors",
    "deliveries",
    "github_deliveries",
    "project_keys",
    "unfinished_builds",
    "last_builds",
    "build_numbers",
    "site_protection",
    "domains",
    "github_statuses",
    "github",
    "triggers",
    "verify_policies",
    "dns",
    "dns_changes",
    "approvals",
    "github_installations",
];

/// sled's page cache, in bytes.
const CACHE_BYTES: u64 = 32 << 20;

/// The version of the derived indexes (`unfinished_builds`, `last_builds`, `build_numbers` and
/// the per-project build counters) a store holds, in `counters`; a store from before them gets
/// them built once when it is opened.
const INDEX_VERSION: u64 = 2;

/// The sled metadata store shared by every part of opusd.
///
/// Cloning is cheap (sled handles are reference counted), so every service holds its own clone.
///
/// sled keeps the first I/O error of its background writes and fails every later write with it
/// until the database is opened again, so a full disk would wedge the store for good. A write
/// that fails that way marks the store failed ([`MetaStore::failure`]); [`MetaStore::reopen`]
/// (called by opusd once the disk has room again) opens the database anew, behind the same
/// handles.
#[derive(Clone)]
pub struct MetaStore {
    /// The open database; `None` only while [`MetaStore::reopen`] swaps it.
    open: Arc<ArcSwapOption<OpenDb>>,
    /// Where the database lives (its folder), for reopening and for naming it in errors.
    path: Arc<PathBuf>,
    /// Why writes fail, since the write that found out; cleared by a successful reopen.
    failure: Arc<Mutex<Option<StoreError>>>,
    /// Held while reopening, so two callers do not race on sled's file lock.
    reopening: Arc<Mutex<()>>,
    /// The sequence number of the newest committed event, so that watchers wake without polling.
    last_event: watch::Sender<u64>,
    /// Committed changes since the store was opened (see [`MetaStore::change_count`]).
    changes: Arc<AtomicU64>,
}

/// One opening of the sled database: the handle and its trees.
struct OpenDb {
    /// The database, kept for flushing.
    db: sled::Db,
    /// Every tree, indexed as in [`TREE_NAMES`].
    trees: Vec<Tree>,
}

impl OpenDb {
    fn open(path: &Path) -> Result<OpenDb, sled::Error> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            // sled's default page cache is 1 GiB, which a store of a million builds fills after
            // one pass over it; opusd reads by key and bounded scans, and the OS caches the file.
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let trees = TREE_NAMES
            .iter()
            .map(|n| db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OpenDb { db, trees })
    }

    fn last_event(&self) -> Result<u64, sled::Error> {
        Ok(self.trees[T::Counters as usize]
            .get("event_seq")?
            .map(|v| be_u64(&v))
            .unwrap_or(0))
    }
}

/// Whether an I/O error says the file system is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// Indexes into [`TREE_NAMES`].
#[derive(Clone, Copy)]
enum T {
    Projects = 0,
    Secrets = 1,
    Builds = 2,
    ProjectBuilds = 3,
    Events = 4,
    Counters = 5,
    Versions = 6,
    BlobRefs = 7,
    Environments = 8,
    Releases = 9,
    SiteOptions = 10,
    Hooks = 11,
    HookCursors = 12,
    Deliveries = 13,
    GithubDeliveries = 14,
    ProjectKeys = 15,
    /// Build id -> nothing, for every queued or running build (recovery on start).
    UnfinishedBuilds = 16,
    /// Project -> the id of its newest build (`opus list`).
    LastBuilds = 17,
    /// `<project>\0<number>` -> build id: builds by the name users give them (`web#3`). Kept
    /// when the project is removed, as the build records are.
    BuildNumbers = 18,
    /// `<project>\0env:<env>` or `<project>\0previews` -> a password's argon2 PHC string:
    /// basic auth in front of an environment or all previews.
    SiteProtection = 19,
    /// Host name -> the custom domain's record.
    Domains = 20,
    /// Event seq -> [`crate::forge::StatusDelivery`]: the GitHub outbox's records.
    GithubStatuses = 21,
    /// `token` (the GitHub API token) and `status_cursor` (the next event the GitHub outbox has
    /// not finished).
    Github = 22,
    /// Project -> its opus.yml `on:` triggers, the last scheduled run and the `after` cursor.
    Triggers = 23,
    /// `<project>\0<env>` -> [`crate::recipe::checks::VerifyPolicy`] JSON: what opus.yml's
    /// `verify:` of the project's latest stored build asks for after a deploy to `env`.
    VerifyPolicies = 24,
    /// `cursor` (the next event the DNS outbox has not finished) and `name\0<name>` -> the
    /// newest [`crate::dns::DnsChange`] of that name.
    Dns = 25,
    /// Event seq -> [`crate::dns::DnsChange`]: the DNS outbox's records.
    DnsChanges = 26,
    /// Build id -> [`PendingApproval`]: the environments a build awaiting approval waits for.
    Approvals = 27,
    /// Project -> the GitHub App installation (id, be) whose token opusd uses for it.
    GithubInstallations = 28,
}

/// Why a transaction body stopped: a store error to return as is.
pub(crate) type TxResult<R> = Result<R, ConflictableTransactionError<StoreError>>;

/// The view of the store inside one transaction.
pub struct Tx<'a> {
    trees: &'a [TransactionalTree],
    /// The newest event appended by this attempt, to announce after commit.
    appended: Cell<Option<u64>>,
}

impl Tx<'_> {
    fn tree(&self, t: T) -> &TransactionalTree {
        &self.trees[t as usize]
    }

    /// Reads and decodes a JSON record.
    fn get_json<V: DeserializeOwned>(&self, t: T, key: &[u8]) -> TxResult<Option<V>> {
        match self.tree(t).get(key)? {
            Some(bytes) => decode(key, &bytes)
                .map(Some)
                .map_err(ConflictableTransactionError::Abort),
            None => Ok(None),
        }
    }

    /// Encodes and writes a JSON record.
    fn put_json<V: Serialize>(&self, t: T, key: &[u8], value: &V) -> TxResult<()> {
        let bytes = encode(key, value).map_err(ConflictableTransactionError::Abort)?;
        self.tree(t).insert(key, bytes)?;
        Ok(())
    }

    /// Increments a named counter and returns its new value (the first is 1).
    fn next_counter(&self, name: &str) -> TxResult<u64> {
        let counters = self.tree(T::Counters);
        let current = counters
            .get(name.as_bytes())?
            .map(|v| be_u64(&v))
            .unwrap_or(0);
        let next = current + 1;
        counters.insert(name.as_bytes(), &next.to_be_bytes())?;
        Ok(next)
    }

    /// Appends an event in this transaction: it becomes visible exactly when the change does.
    pub fn append_event(
        &self,
        kind: EventKind,
        project: &str,
        payload: serde_json::Value,
    ) -> TxResult<Event> {
        let seq = self.next_counter("event_seq")?;
        let event = Event {
            seq,
            time: std::time::SystemTime::now(),
            kind,
            project: project.to_owned(),
            payload,
        };
        self.put_json(T::Events, &seq.to_be_bytes(), &event)?;
        self.appended.set(Some(seq));
        Ok(event)
    }
}

/// A sled error as the store's: [`StoreError::DiskFull`] naming `path` when the disk is full.
fn locate(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull {
            path: path.to_owned(),
        },
        e => StoreError::Sled(e),
    }
}

/// Whether sled refused to open because another handle still holds its file lock.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Aborts a transaction with a store error.
pub(crate) fn abort<R>(e: StoreError) -> TxResult<R> {
    Err(ConflictableTransactionError::Abort(e))
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}

fn decode<V: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<V, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        detail: e.to_string(),
    })
}

fn encode<V: Serialize>(key: &[u8], value: &V) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        detail: e.to_string(),
    })
}

/// `<a>\0<b>`: the key of a record that belongs to `a`.
fn pair_key(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

/// `<a>\0`: the prefix of every record that belongs to `a`.
fn prefix(a: &str) -> Vec<u8> {
    pair_key(a, &[])
}

impl MetaStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<MetaStore, StoreError> {
        let open = OpenDb::open(path).map_err(|e| locate(path, e))?;
        let (last_event, _) = watch::channel(open.last_event()?);
        let store = MetaStore {
            open: Arc::new(ArcSwapOption::from_pointee(open)),
            path: Arc::new(path.to_owned()),
            failure: Arc::new(Mutex::new(None)),
            reopening: Arc::new(Mutex::new(())),
            last_event,
            changes: Arc::new(AtomicU64::new(0)),
        };
        store.build_indexes()?;
        Ok(store)
    }

    /// Opens the store at `path` like [`MetaStore::open`], waiting up to `patience` while
    /// another handle of this process still holds sled's file lock. sled releases that lock from
    /// its flusher thread a moment after the last handle is dropped, so a store reopened at once
    /// in the same process (tests that drop a store and open it again) can find it still held.
    pub fn open_waiting(path: &Path, patience: Duration) -> Result<MetaStore, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match MetaStore::open(path) {
                Err(StoreError::Sled(e))
                    if is_lock_error(&e) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// The folder of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why writes fail right now (the store's first failed write since it was opened), or `None`
    /// while they work.
    pub fn failure(&self) -> Option<StoreError> {
        self.failure
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Turns a sled error of a write into the store's error, naming the disk when it is full,
    /// and remembers that writes fail (sled fails every later one the same way).
    fn failed(&self, e: sled::Error) -> StoreError {
        let e = locate(&self.path, e);
        if matches!(
            e,
            StoreError::DiskFull { .. } | StoreError::Sled(sled::Error::Io(_))
        ) {
            let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            if failure.is_none() {
                tracing::error!(error = %e, "metadata store writes fail");
                *failure = Some(e.clone());
                drop(failure);
                // Wake whoever waits for the store to move (a build log's follower), so they
                // see that it will not.
                self.last_event.send_modify(|_| {});
            }
        }
        e
    }

    /// Opens the database again after a failed write, so writes work once the disk has room
    /// (sled fails every write after its first I/O error until it is reopened). Returns whether
    /// writes work now: `Ok(false)` while the disk is still full. Blocks (sled's open reads its
    /// log, and waits for in-flight users of the old handle to let go of its file lock); call it
    /// off the async runtime.
    ///
    /// Changes sled had accepted but not yet written when the disk filled are lost; the store is
    /// what the disk holds, as after a crash.
    pub fn reopen(&self) -> Result<bool, StoreError> {
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if self.failure().is_none() {
            return Ok(true);
        }
        // sled holds an exclusive lock on its file until every handle of the old opening is
        // gone: take ours away, then wait for the operations still holding one to finish.
        drop(self.open.swap(None));
        let mut attempts = 0;
        let open = loop {
            match OpenDb::open(&self.path) {
                Ok(open) => break open,
                Err(e) if attempts < 100 && is_lock_error(&e) => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(locate(&self.path, e)),
            }
        };
        // Prove that a write reaches the disk before saying that writes work.
        let probe = open.trees[T::Counters as usize]
            .insert("write_probe", &[])
            .and_then(|_| open.db.flush());
        let last = open.last_event();
        self.open.store(Some(Arc::new(open)));
        match probe.and(last) {
            Ok(last) => {
                self.last_event.send_if_modified(|l| {
                    let moved = *l != last;
                    *l = last;
                    moved
                });
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.changed();
                tracing::info!(path = %self.path.display(), "metadata store writes work again");
                Ok(true)
            }
            Err(e) => {
                let e = locate(&self.path, e);
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Ok(false)
            }
        }
    }

    /// The current opening of the database.
    fn db(&self) -> Result<Arc<OpenDb>, StoreError> {
        self.open
            .load_full()
            .ok_or_else(|| StoreError::Reopening(self.path.as_ref().clone()))
    }

    fn tree(&self, t: T) -> Result<Tree, StoreError> {
        Ok(self.db()?.trees[t as usize].clone())
    }

    fn get_json<V: DeserializeOwned>(&self, t: T, key: &[u8]) -> Result<Option<V>, StoreError> {
        match self.tree(t)?.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Runs `body` as one transaction over every tree, retrying on conflict, and announces the
    /// events it appended once it has committed.
    pub(crate) fn transact<R>(
        &self,
        body: impl Fn(&Tx<'_>) -> TxResult<R>,
    ) -> Result<R, StoreError> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        let appended = Cell::new(None);
        let open = self.db()?;
        let result = open.trees.as_slice().transaction(|trees| {
            let tx = Tx {
                trees,
                appended: Cell::new(None),
            };
            let r = body(&tx)?;
            appended.set(tx.appended.get());
            Ok(r)
        });
        let r = match result {
            Ok(r) => r,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(self.failed(e)),
        };
        self.changed();
        if let Some(seq) = appended.get() {
            self.last_event.send_if_modified(|last| {
                let newer = seq > *last;
                if newer {
                    *last = seq;
                }
                newer
            });
        }
        Ok(r)
    }

    /// How many changes this store has committed since it was opened: a view derived from the
    /// store (the project list) can be kept as long as this number has not moved. Read it before
    /// reading what the view is made of, so a change in between only makes the view look older.
    pub fn change_count(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Counts a committed change; every write path calls it after its commit.
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Writes everything to disk; called on shutdown and after critical commits.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let open = self.db()?;
        open.db.flush_async().await.map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Size of the database on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.db()
            .ok()
            .and_then(|o| o.db.size_on_disk().ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
