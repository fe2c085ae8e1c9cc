//! Stored versions and the content index used for dedup.
//!
//! A version record is written in the same transaction as the `blob_refs` entries of its files and
//! the `version.stored` event; removing a version removes all three together. So the index never
//! names an object of a version that does not exist, and the artifact store deletes a version's
//! objects only after its record is gone.

use serde_json::json;

use super::{MetaStore, SiteOptions, T, decode, pair_key, prefix};
use crate::error::StoreError;
use crate::model::{EventKind, ProjectName, StoreName, VersionName, VersionRecord};

/// `<store>\0<sha256>\0`: the prefix of every holder of a content in a store.
fn blob_prefix(store: &StoreName, sha256: &str) -> Vec<u8> {
    let mut k = pair_key(store.as_str(), sha256.as_bytes());
    k.push(0);
    k
}

/// `<store>\0<sha256>\0<object key>`.
fn blob_key(store: &StoreName, sha256: &str, object: &str) -> Vec<u8> {
    let mut k = blob_prefix(store, sha256);
    k.extend_from_slice(object.as_bytes());
    k
}

/// What [`MetaStore::remove_version`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionRemoval {
    /// The record was removed; here it is.
    Removed(VersionRecord),
    /// There was no such version.
    NotFound,
    /// An environment points at the version or would roll back to it; nothing was removed.
    Protected,
}

impl MetaStore {
    /// One version's record, if it exists.
    pub fn get_version(
        &self,
        project: &ProjectName,
        version: &VersionName,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.get_json(
            T::Versions,
            &pair_key(project.as_str(), version.as_str().as_bytes()),
        )
    }

    /// A project's versions, newest first.
    pub fn list_versions(&self, project: &ProjectName) -> Result<Vec<VersionRecord>, StoreError> {
        let mut out: Vec<VersionRecord> = Vec::new();
        for item in self
            .tree(T::Versions)?
            .scan_prefix(prefix(project.as_str()))
        {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.version.cmp(&a.version))
        });
        Ok(out)
    }

    /// Every version of every project (for the orphan sweep on start).
    pub fn all_versions(&self) -> Result<Vec<VersionRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::Versions)?.iter() {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Makes a version exist: its record, the index entries of its files (`(sha256, object key)`),
    /// how it is served (`options`) and a `version.stored` event, in one transaction. `Ok(false)`
    /// when the version exists already (nothing is written); `ProjectNotFound` when the project
    /// is gone.
    pub fn commit_version(
        &self,
        record: &VersionRecord,
        blobs: &[(String, String)],
        options: &SiteOptions,
    ) -> Result<bool, StoreError> {
        let key = pair_key(record.project.as_str(), record.version.as_str().as_bytes());
        self.transact(|tx| {
            tx.project(record.project.as_str())?;
            if tx.tree(T::Versions).get(&key)?.is_some() {
                return Ok(false);
            }
            tx.put_json(T::Versions, &key, record)?;
            tx.put_json(T::SiteOptions, &key, options)?;
            let refs = tx.tree(T::BlobRefs);
            for (sha, object) in blobs {
                refs.insert(blob_key(&record.store, sha, object), &[])?;
            }
            tx.append_event(
                EventKind::VersionStored,
                record.project.as_str(),
                json!({
                    "project": record.project,
                    "version": record.version,
                    "store": record.store,
                    "build_id": record.build_id,
                    "commit": record.commit,
                    "files": record.file_count,
                    "size": record.size,
                }),
            )?;
            Ok(true)
        })
    }

    /// Removes a version's record and the index entries of its files, with a `version.deleted`
    /// event naming `reason`, unless an environment points at the version or would roll back to
    /// it ([`MetaStore::protected_versions`]).
    ///
    /// `blobs` are the `(sha256, object key)` pairs of its files; index entries under the version's
    /// object prefix `objects_prefix` that `blobs` missed (a damaged manifest) are found by a scan
    /// of the store's index and removed too.
    ///
    /// Architecture Invariant: no environment points at (or rolls back to) a version that does
    /// not exist. Deploy and rollback check in their transaction that the version exists; this
    /// removal reads the protected versions, then commits only if no release of the project was
    /// made since (a counter both transactions touch), else reads them again.
    pub fn remove_version(
        &self,
        name: &ProjectName,
        version_name: &VersionName,
        blobs: &[(String, String)],
        objects_prefix: Option<&str>,
        reason: &str,
    ) -> Result<VersionRemoval, StoreError> {
        let (project, version) = (name.as_str(), version_name.as_str());
        let key = pair_key(project, version.as_bytes());
        let Some(record) = self.get_version(name, version_name)? else {
            return Ok(VersionRemoval::NotFound);
        };
        let mut keys: Vec<Vec<u8>> = blobs
            .iter()
            .map(|(sha, obj)| blob_key(&record.store, sha, obj))
            .collect();
        if let Some(objects) = objects_prefix {
            for k in self
                .tree(T::BlobRefs)?
                .scan_prefix(prefix(record.store.as_str()))
                .keys()
            {
                let k = k?;
                let object = k.rsplit(|b| *b == 0).next().unwrap_or_default();
                if object.starts_with(objects.as_bytes()) {
                    keys.push(k.to_vec());
                }
            }
        }
        loop {
            let releases_made = self.releases_made(project)?;
            if self.protected_versions(name)?.contains(version) {
                return Ok(VersionRemoval::Protected);
            }
            let removal = self.transact(|tx| {
                if tx.releases_made(project)? != releases_made {
                    return Ok(None);
                }
                let Some(current) = tx.get_json::<VersionRecord>(T::Versions, &key)? else {
                    return Ok(Some(VersionRemoval::NotFound));
                };
                tx.tree(T::Versions).remove(key.as_slice())?;
                for k in &keys {
                    tx.tree(T::BlobRefs).remove(k.as_slice())?;
                }
                tx.append_event(
                    EventKind::VersionDeleted,
                    project,
                    json!({ "project": project, "version": version, "store": current.store, "reason": reason }),
                )?;
                Ok(Some(VersionRemoval::Removed(current)))
            })?;
            if let Some(removal) = removal {
                return Ok(removal);
            }
        }
    }

    /// Removes every version record of `project`, with the content index entries of its objects
    /// (those under `object_prefixes`: `(store, key prefix of the project)` for each store), in
    /// one commit with a `version.deleted` event per version. Unlike [`MetaStore::remove_version`]
    /// no version is protected: the project's environments go with the project. Returns the
    /// records removed, so the caller deletes their objects after this commit.
    pub fn remove_project_versions(
        &self,
        project: &ProjectName,
        object_prefixes: &[(StoreName, String)],
        reason: &str,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let project = project.as_str();
        // Collect the keys first: a transaction cannot iterate.
        let version_keys: Vec<_> = self
            .tree(T::Versions)?
            .scan_prefix(prefix(project))
            .keys()
            .collect::<Result<_, _>>()?;
        let mut blob_keys = Vec::new();
        for (store, objects) in object_prefixes {
            for k in self
                .tree(T::BlobRefs)?
                .scan_prefix(prefix(store.as_str()))
                .keys()
            {
                let k = k?;
                let object = k.rsplit(|b| *b == 0).next().unwrap_or_default();
                if object.starts_with(objects.as_bytes()) {
                    blob_keys.push(k);
                }
            }
        }
        self.transact(|tx| {
            let mut removed = Vec::with_capacity(version_keys.len());
            for k in &version_keys {
                let Some(record) = tx.get_json::<VersionRecord>(T::Versions, k)? else {
                    continue;
                };
                tx.tree(T::Versions).remove(k.as_ref())?;
                tx.append_event(
                    EventKind::VersionDeleted,
                    project,
                    json!({ "project": project, "version": record.version, "store": record.store, "reason": reason }),
                )?;
                removed.push(record);
            }
            for k in &blob_keys {
                tx.tree(T::BlobRefs).remove(k.as_ref())?;
            }
            Ok(removed)
        })
    }

    /// An object in `store` that holds content `sha256`, if any version has one.
    pub fn blob_holder(
        &self,
        store: &StoreName,
        sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        let p = blob_prefix(store, sha256);
        match self.tree(T::BlobRefs)?.scan_prefix(&p).keys().next() {
            Some(k) => Ok(Some(String::from_utf8_lossy(&k?[p.len()..]).into_owned())),
            None => Ok(None),
        }
    }

    /// Every object in `store` that holds content `sha256`.
    pub fn blob_holders(&self, store: &StoreName, sha256: &str) -> Result<Vec<String>, StoreError> {
        let p = blob_prefix(store, sha256);
        let mut out = Vec::new();
        for k in self.tree(T::BlobRefs)?.scan_prefix(&p).keys() {
            out.push(String::from_utf8_lossy(&k?[p.len()..]).into_owned());
        }
        Ok(out)
    }
}
