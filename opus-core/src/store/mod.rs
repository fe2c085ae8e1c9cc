//! The metadata store: sled at `<data-dir>/meta`.
//!
//! Every change that touches several keys is one sled transaction over [`Tx`], and the event that
//! describes the change is appended inside that same transaction ([`Tx::append_event`]): nothing
//! happens without its event, and no event describes something that did not happen.
//!
//! Keys are chosen so that sled's ordered iteration answers the common questions directly:
//! numbers are big-endian (so `#9` sorts before `#10`), and per-project indexes are
//! `<project>\0<...>` so a prefix scan finds one project's records.

mod builds;
mod deploys;
mod events;
mod hooks;
mod projects;
mod versions;

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::model::Event;

pub use builds::BuildFilter;
pub use deploys::{EnvironmentRecord, Release, ReleaseReason, RollbackTarget, SiteOptions};
pub use hooks::KeyKind;
pub use projects::NameFilter;

/// The trees of the store, in the order [`Tx`] sees them.
///
/// - `versions`: `<project>\0<version>` -> [`crate::model::VersionRecord`] JSON.
/// - `blob_refs`: `<store>\0<sha256 hex>\0<object key>` -> empty: which stored objects hold a
///   content, for dedup; an entry exists only while its version does.
/// - `environments`: `<project>\0<env>` -> [`EnvironmentRecord`] JSON (the pointer).
/// - `releases`: `<project>\0<env>\0<seq be>` -> [`Release`] JSON, never capped.
/// - `site_options`: `<project>\0<version>` -> [`SiteOptions`] JSON.
/// - `build_numbers`: `<project>\0<number be>` -> build id (be): which build `web#3` is.
const TREE_NAMES: [&str; 19] = [
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
#[derive(Clone)]
pub struct MetaStore {
    /// The database, kept for flushing and for ids.
    db: sled::Db,
    /// Every tree, indexed as in [`TREE_NAMES`].
    trees: Vec<Tree>,
    /// The sequence number of the newest committed event, so that watchers wake without polling.
    last_event: watch::Sender<u64>,
    /// Committed changes since the store was opened (see [`MetaStore::change_count`]).
    changes: Arc<AtomicU64>,
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
        kind: &str,
        project: &str,
        payload: serde_json::Value,
    ) -> TxResult<Event> {
        let seq = self.next_counter("event_seq")?;
        let event = Event {
            seq,
            time: std::time::SystemTime::now(),
            kind: kind.to_owned(),
            project: project.to_owned(),
            payload,
        };
        self.put_json(T::Events, &seq.to_be_bytes(), &event)?;
        self.appended.set(Some(seq));
        Ok(event)
    }
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
        let counters = &trees[T::Counters as usize];
        let last = counters.get("event_seq")?.map(|v| be_u64(&v)).unwrap_or(0);
        let (last_event, _) = watch::channel(last);
        let store = MetaStore {
            db,
            trees,
            last_event,
            changes: Arc::new(AtomicU64::new(0)),
        };
        store.build_indexes()?;
        Ok(store)
    }

    fn tree(&self, t: T) -> &Tree {
        &self.trees[t as usize]
    }

    fn get_json<V: DeserializeOwned>(&self, t: T, key: &[u8]) -> Result<Option<V>, StoreError> {
        match self.tree(t).get(key)? {
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
        let appended = Cell::new(None);
        let result = self.trees.as_slice().transaction(|trees| {
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
            Err(TransactionError::Storage(e)) => return Err(StoreError::Sled(e)),
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
        self.db.flush_async().await?;
        Ok(())
    }

    /// Size of the database on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
