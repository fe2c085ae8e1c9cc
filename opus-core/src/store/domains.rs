//! Custom domains: `domains` tree, host name -> [`DomainRecord`].
//!
//! A host belongs to one project's environment: adding it again for the same environment changes
//! nothing, adding it for another one is refused naming the owner. Removing a project removes
//! its domains in the same transaction ([`MetaStore::delete_project`]).

use std::time::SystemTime;

use serde_json::json;

use super::{MetaStore, T, Tx, TxResult, abort, decode};
use crate::domain::{DomainName, DomainRecord};
use crate::error::StoreError;
use crate::model::{EnvName, EventKind, ProjectName};

/// What [`MetaStore::add_domain`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainAdded {
    /// The domain is new; a `domain.added` event was appended.
    Added(DomainRecord),
    /// The domain already served that environment; nothing changed.
    Unchanged(DomainRecord),
}

impl DomainAdded {
    /// The domain's record, either way.
    pub fn record(&self) -> &DomainRecord {
        match self {
            DomainAdded::Added(r) | DomainAdded::Unchanged(r) => r,
        }
    }
}

impl Tx<'_> {
    /// The keys of `project`'s domains, to remove with it.
    pub(crate) fn remove_domains(&self, keys: &[sled::IVec]) -> TxResult<()> {
        for k in keys {
            self.tree(T::Domains).remove(k)?;
        }
        Ok(())
    }
}

impl MetaStore {
    /// Routes `host` to `project`'s environment `env`, with a `domain.added` event. The project
    /// must exist (the environment need not be deployed yet). A host that another project or
    /// environment has is refused with [`StoreError::DomainTaken`].
    pub fn add_domain(
        &self,
        host: &DomainName,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<DomainAdded, StoreError> {
        self.transact(|tx| {
            tx.project(project.as_str())?;
            let key = host.as_str().as_bytes();
            if let Some(existing) = tx.get_json::<DomainRecord>(T::Domains, key)? {
                if existing.project == project.as_str() && existing.env == env.as_str() {
                    return Ok(DomainAdded::Unchanged(existing));
                }
                return abort(StoreError::DomainTaken {
                    host: host.to_string(),
                    project: existing.project,
                    env: existing.env,
                });
            }
            let record = DomainRecord {
                host: host.clone(),
                project: project.to_string(),
                env: env.to_string(),
                added_at: SystemTime::now(),
            };
            tx.put_json(T::Domains, key, &record)?;
            tx.append_event(
                EventKind::DomainAdded,
                project.as_str(),
                json!({ "domain": host, "environment": env.as_str() }),
            )?;
            Ok(DomainAdded::Added(record))
        })
    }

    /// Stops routing `host`, with a `domain.removed` event; returns what it was.
    pub fn remove_domain(&self, host: &DomainName) -> Result<DomainRecord, StoreError> {
        self.transact(|tx| {
            let key = host.as_str().as_bytes();
            let Some(record) = tx.get_json::<DomainRecord>(T::Domains, key)? else {
                return abort(StoreError::DomainNotFound(host.to_string()));
            };
            tx.tree(T::Domains).remove(key)?;
            tx.append_event(
                EventKind::DomainRemoved,
                &record.project,
                json!({ "domain": host, "environment": record.env }),
            )?;
            Ok(record)
        })
    }

    /// Every custom domain in host order, or those of `project`.
    pub fn list_domains(
        &self,
        project: Option<&ProjectName>,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::Domains)?.iter() {
            let (k, v) = item?;
            let record: DomainRecord = decode(&k, &v)?;
            if project.is_none_or(|p| record.project == p.as_str()) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The keys of `project`'s domains (a transaction cannot scan).
    pub(crate) fn domain_keys(&self, project: &ProjectName) -> Result<Vec<sled::IVec>, StoreError> {
        Ok(self
            .list_domains(Some(project))?
            .into_iter()
            .map(|d| sled::IVec::from(d.host.as_str().as_bytes()))
            .collect())
    }
}
