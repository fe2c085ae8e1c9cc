//! Builds: ids, per-project numbers, states, and the per-project indexes.
//!
//! A build has two numbers: its `id`, opusd's own key (records, logs, workspaces, runner tokens),
//! one counter for the whole store; and its `number` within its project, which is what users see
//! and name (`web#3`), one counter per project in `counters` (`build_number\0<project>`).

use std::collections::BTreeMap;

use serde_json::json;

use super::{MetaStore, T, Tx, TxResult, abort, decode, encode, pair_key, prefix};
use crate::error::StoreError;
use crate::model::{Build, BuildState, EventKind, ProjectName};

/// Which builds `list_builds` returns.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    /// Only this project's builds.
    pub project: Option<ProjectName>,
    /// Only builds in this state.
    pub state: Option<BuildState>,
    /// At most this many (newest first); 0 means 50.
    pub limit: usize,
}

/// The counter of a project's build numbers, in `counters`.
fn number_counter(project: &str) -> String {
    format!("build_number\0{project}")
}

/// A build as read from the store: a record written before per-project numbers has none, and
/// its number is its id (the number it was shown with then).
fn numbered(mut build: Build) -> Build {
    if build.number == 0 {
        build.number = build.id;
    }
    build
}

/// Decodes a build record (see [`numbered`]).
fn decode_build(key: &[u8], bytes: &[u8]) -> Result<Build, StoreError> {
    decode(key, bytes).map(numbered)
}

impl Tx<'_> {
    /// Reads a build or aborts with `BuildNotFound`.
    pub(crate) fn build(&self, id: u64) -> TxResult<Build> {
        match self.get_json(T::Builds, &id.to_be_bytes())? {
            Some(b) => Ok(numbered(b)),
            None => abort(StoreError::BuildNotFound(id)),
        }
    }

    /// Writes a build, keeps the index of unfinished builds, and appends the event of its state.
    pub(crate) fn put_build(&self, build: &Build, kind: EventKind) -> TxResult<()> {
        let key = build.id.to_be_bytes();
        self.put_json(T::Builds, &key, build)?;
        if build.state.is_finished() {
            self.tree(T::UnfinishedBuilds).remove(&key)?;
        } else {
            self.tree(T::UnfinishedBuilds).insert(&key, &[])?;
        }
        self.append_event(kind, build.project.as_str(), build_payload(build))?;
        Ok(())
    }
}

/// The JSON an event carries about a build.
pub fn build_payload(b: &Build) -> serde_json::Value {
    json!({
        "number": b.number,
        "project": b.project,
        "state": b.state,
        "ref": b.git_ref,
        "commit": b.commit,
        // "" until decided, as hook receivers have always seen it.
        "version": b.version.as_ref().map_or("", crate::model::VersionName::as_str),
        "reason": b.reason,
        "branch": b.branch,
        "trigger": b.trigger,
    })
}

impl MetaStore {
    /// Stores a new build: allocates its id and the next number of its project, indexes it
    /// under its project and its number, appends `build.queued`. The project must exist.
    pub fn create_build(&self, template: &Build) -> Result<Build, StoreError> {
        self.create_build_with(template, |_| Ok(()))
    }

    /// [`MetaStore::create_build`], with `also` done in the same transaction (a trigger's
    /// bookkeeping: the build and the record that it was started commit together).
    pub(crate) fn create_build_with(
        &self,
        template: &Build,
        also: impl Fn(&Tx<'_>) -> TxResult<()>,
    ) -> Result<Build, StoreError> {
        self.transact(|tx| {
            also(tx)?;
            let project = template.project.as_str();
            tx.project(project)?;
            let id = tx.next_counter("build_id")?;
            let number = tx.next_counter(&number_counter(project))?;
            let mut build = template.clone();
            build.id = id;
            build.number = number;
            tx.tree(T::ProjectBuilds)
                .insert(pair_key(project, &id.to_be_bytes()), &[])?;
            tx.tree(T::BuildNumbers)
                .insert(pair_key(project, &number.to_be_bytes()), &id.to_be_bytes())?;
            tx.tree(T::LastBuilds)
                .insert(build.project.as_str().as_bytes(), &id.to_be_bytes())?;
            tx.put_build(&build, EventKind::Build(BuildState::Queued))?;
            Ok(build)
        })
    }

    /// Changes a build with `change`; when its state changes, appends `build.<state>` in the
    /// same transaction.
    ///
    /// A change that leaves the state alone (a running build's commit and version) has no event
    /// and touches one key, so it is a compare-and-swap of that key, retried when the build
    /// changed meanwhile: a sled transaction also writes out sled's log buffer (twice), which
    /// adds up over the few changes of every build.
    pub fn update_build(&self, id: u64, change: impl Fn(&mut Build)) -> Result<Build, StoreError> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        let key = id.to_be_bytes();
        let builds = self.tree(T::Builds)?;
        loop {
            let Some(current) = builds.get(key)? else {
                return Err(StoreError::BuildNotFound(id));
            };
            let mut build = decode_build(&key, &current)?;
            let before = build.state;
            change(&mut build);
            if build.state != before {
                break;
            }
            let bytes = encode(&key, &build)?;
            if builds
                .compare_and_swap(key, Some(current), Some(bytes))
                .map_err(|e| self.failed(e))?
                .is_ok()
            {
                self.changed();
                return Ok(build);
            }
        }
        self.transact(|tx| {
            let mut build = tx.build(id)?;
            let before = build.state;
            change(&mut build);
            if build.state != before {
                tx.put_build(&build, EventKind::Build(build.state))?;
            } else {
                tx.put_json(T::Builds, &id.to_be_bytes(), &build)?;
            }
            Ok(build)
        })
    }

    /// One build, by its id.
    pub fn get_build(&self, id: u64) -> Result<Build, StoreError> {
        self.get_json(T::Builds, &id.to_be_bytes())?
            .map(numbered)
            .ok_or(StoreError::BuildNotFound(id))
    }

    /// One build, by its project and number (`web#3`). Builds of a removed project stay
    /// readable this way, as their records do.
    pub fn build_by_number(&self, project: &ProjectName, number: u64) -> Result<Build, StoreError> {
        let not_found = || StoreError::BuildNumberNotFound {
            project: project.to_string(),
            number,
        };
        let id = self
            .tree(T::BuildNumbers)?
            .get(pair_key(project.as_str(), &number.to_be_bytes()))?
            .ok_or_else(not_found)?;
        self.get_build(super::be_u64(&id))
    }

    /// Builds, newest first.
    pub fn list_builds(&self, filter: &BuildFilter) -> Result<Vec<Build>, StoreError> {
        let limit = if filter.limit == 0 { 50 } else { filter.limit };
        let mut out = Vec::new();
        let keep = |b: &Build| filter.state.is_none_or(|s| s == b.state);
        match &filter.project {
            Some(project) => {
                for key in self
                    .tree(T::ProjectBuilds)?
                    .scan_prefix(prefix(project.as_str()))
                    .keys()
                    .rev()
                {
                    let key = key?;
                    let id = super::be_u64(&key[key.len() - 8..]);
                    let build = self.get_build(id)?;
                    if keep(&build) {
                        out.push(build);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            None => {
                for item in self.tree(T::Builds)?.iter().rev() {
                    let (k, v) = item?;
                    let build = decode_build(&k, &v)?;
                    if keep(&build) {
                        out.push(build);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The newest build of a project: one read of the `last_builds` index and one of the build.
    pub fn last_build(&self, project: &ProjectName) -> Result<Option<Build>, StoreError> {
        match self.tree(T::LastBuilds)?.get(project.as_str().as_bytes())? {
            Some(id) => Ok(Some(self.get_build(super::be_u64(&id))?)),
            None => Ok(None),
        }
    }

    /// Every build in one of `states` (for recovery on start), oldest first. Queued and running
    /// builds come from the index of unfinished builds, so this costs what is unfinished, not the
    /// whole history; asking for a finished state scans every build.
    pub fn builds_in_states(&self, states: &[BuildState]) -> Result<Vec<Build>, StoreError> {
        let mut out = Vec::new();
        if states.iter().all(|s| !s.is_finished()) {
            for key in self.tree(T::UnfinishedBuilds)?.iter().keys() {
                let build = self.get_build(super::be_u64(&key?))?;
                if states.contains(&build.state) {
                    out.push(build);
                }
            }
            return Ok(out);
        }
        for item in self.tree(T::Builds)?.iter() {
            let (k, v) = item?;
            let build = decode_build(&k, &v)?;
            if states.contains(&build.state) {
                out.push(build);
            }
        }
        Ok(out)
    }

    /// Builds the derived indexes of a store written before them (or by a version that was
    /// stopped while building them): one pass over the builds and the per-project index, once.
    /// The version counter is written last, so a crash part-way only means doing it again.
    ///
    /// A store from before per-project numbers gets its number index (each old build's number
    /// is its id) and each project's counter set to its largest number, so its builds keep
    /// their names and new ones continue after them.
    pub(crate) fn build_indexes(&self) -> Result<(), StoreError> {
        let counters = self.tree(T::Counters)?;
        let have = counters
            .get("index_version")?
            .map(|v| super::be_u64(&v))
            .unwrap_or(0);
        if have >= super::INDEX_VERSION {
            return Ok(());
        }
        let unfinished = self.tree(T::UnfinishedBuilds)?;
        unfinished.clear()?;
        let numbers = self.tree(T::BuildNumbers)?;
        let mut largest: BTreeMap<String, u64> = BTreeMap::new();
        for item in self.tree(T::Builds)?.iter() {
            let (k, v) = item?;
            let build = decode_build(&k, &v)?;
            if !build.state.is_finished() {
                unfinished.insert(&k, &[])?;
            }
            let project = build.project.as_str();
            numbers.insert(pair_key(project, &build.number.to_be_bytes()), &k)?;
            let top = largest.entry(project.to_owned()).or_default();
            *top = (*top).max(build.number);
        }
        for (project, top) in largest {
            let name = number_counter(&project);
            let have = counters.get(&name)?.map(|v| super::be_u64(&v)).unwrap_or(0);
            if top > have {
                counters.insert(name.as_bytes(), &top.to_be_bytes())?;
            }
        }
        let last = self.tree(T::LastBuilds)?;
        last.clear()?;
        // Keys are `<project>\0<id, big-endian>` in order: the last key of a project is its
        // newest build.
        for key in self.tree(T::ProjectBuilds)?.iter().keys() {
            let key = key?;
            if let Some(sep) = key.iter().position(|&b| b == 0) {
                last.insert(&key[..sep], &key[key.len() - 8..])?;
            }
        }
        counters.insert("index_version", &super::INDEX_VERSION.to_be_bytes())?;
        self.db()?.db.flush().map_err(|e| self.failed(e))?;
        Ok(())
    }
}
