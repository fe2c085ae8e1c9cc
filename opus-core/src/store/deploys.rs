//! Environments, releases and per-version site options.
//!
//! An environment is a pointer at its current release; a release is (sequence number, version,
//! time, actor, reason). Deploy and rollback append a release, move the pointer and append the
//! event in one transaction. Releases are never removed (removing an environment removes only
//! its pointer), so the history is complete.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{MetaStore, T, Tx, TxResult, abort, be_u64, decode, pair_key, prefix};
use crate::error::StoreError;
use crate::model::{EnvName, EventKind, ProjectName, VersionName, VersionRecord};

mod verify_rollback;
pub use verify_rollback::VerifyFailure;

/// Why a release was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseReason {
    /// `opus deploy`.
    Deploy,
    /// `opus rollback`.
    Rollback,
    /// A successful build of the environment's branch.
    Auto,
}

impl ReleaseReason {
    /// The lowercase name (`deploy`, `rollback`, `auto`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Deploy => "deploy",
            ReleaseReason::Rollback => "rollback",
            ReleaseReason::Auto => "auto",
        }
    }
}

/// One entry of an environment's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Per-environment sequence number, from 1.
    pub seq: u64,
    /// The project.
    pub project: String,
    /// The environment.
    pub env: String,
    /// The version it points at.
    pub version: String,
    /// When it was made.
    pub time: SystemTime,
    /// Who made it (`cli`, `build #42`...).
    pub actor: String,
    /// Why.
    pub reason: ReleaseReason,
    /// For a rollback: the sequence number of the release whose version it restores, so that a
    /// second rollback goes further back instead of flipping between two versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<u64>,
}

/// An environment: the pointer at its current release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    /// The project.
    pub project: String,
    /// The environment name.
    pub name: String,
    /// The current release.
    pub current: Release,
    /// Set by a rollback: automatic deploys skip it until the next deploy or unpin.
    pub pinned: bool,
    /// Whether it is a per-branch preview.
    pub preview: bool,
    /// Set by `opus env lock`: every deploy to it fails with the lock's reason until unlocked
    /// (a rollback still goes through). See `locks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<super::locks::EnvLock>,
    /// For a preview: how long it lives without a deploy, and whether `opus env keep` exempts
    /// it. See `preview_expiry`.
    #[serde(
        default,
        skip_serializing_if = "super::preview_expiry::PreviewExpiry::is_unset"
    )]
    pub expiry: super::preview_expiry::PreviewExpiry,
}

/// Where a rollback goes ([`MetaStore::rollback_target`]), to commit with
/// [`MetaStore::rollback`] once the version is known to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackTarget {
    /// The version the environment goes back to.
    pub version: VersionName,
    /// The release it restores (none for a rollback to a named version).
    restores: Option<u64>,
    /// Whether the environment is a preview.
    preview: bool,
}

/// How the site server serves one version (from the build's opus.yml).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteOptions {
    /// Unknown paths serve `index.html`.
    #[serde(default)]
    pub spa: bool,
    /// Redirect and header rules (`_redirects`, `_headers`, opus.yml `site:`), parsed when the
    /// version was stored, so a rollback restores them with the version.
    #[serde(
        default,
        skip_serializing_if = "crate::site_rules::SiteRules::is_empty"
    )]
    pub rules: crate::site_rules::SiteRules,
}

pub(super) fn env_key(project: &str, env: &str) -> Vec<u8> {
    pair_key(project, env.as_bytes())
}

fn release_prefix(project: &str, env: &str) -> Vec<u8> {
    let mut k = env_key(project, env);
    k.push(0);
    k
}

/// The counter of releases made in any environment of `project`: a removal of a version reads
/// which versions are protected, then commits only if no release was made since.
pub(super) fn releases_made_key(project: &str) -> String {
    format!("releases_made\0{project}")
}

/// The start of the keys of `project`'s per-environment release counters
/// (`release\0<project>\0<env>`), which number its releases.
pub(super) fn release_counter_prefix(project: &str) -> Vec<u8> {
    format!("release\0{project}\0").into_bytes()
}

fn release_key(project: &str, env: &str, seq: u64) -> Vec<u8> {
    let mut k = release_prefix(project, env);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What a new release is.
struct NewRelease<'a> {
    project: &'a str,
    env: &'a str,
    version: &'a str,
    actor: &'a str,
    reason: ReleaseReason,
    restores: Option<u64>,
    pinned: bool,
    preview: bool,
}

impl Tx<'_> {
    /// How many releases `project` has had ([`releases_made_key`]), in this transaction.
    pub(super) fn releases_made(&self, project: &str) -> TxResult<u64> {
        Ok(self
            .tree(T::Counters)
            .get(releases_made_key(project).as_bytes())?
            .map(|v| be_u64(&v))
            .unwrap_or(0))
    }

    fn version_exists(&self, project: &str, version: &str) -> TxResult<()> {
        if self
            .tree(T::Versions)
            .get(pair_key(project, version.as_bytes()))?
            .is_none()
        {
            return abort(StoreError::VersionNotFound {
                project: project.to_owned(),
                version: version.to_owned(),
            });
        }
        Ok(())
    }

    /// See [`MetaStore::rollback_target`].
    fn rollback_target(
        &self,
        project: &str,
        env: &str,
        to: Option<&VersionName>,
    ) -> TxResult<RollbackTarget> {
        self.project(project)?;
        let Some(current) =
            self.get_json::<EnvironmentRecord>(T::Environments, &env_key(project, env))?
        else {
            return abort(StoreError::EnvironmentNotFound {
                project: project.to_owned(),
                env: env.to_owned(),
            });
        };
        let preview = current.preview;
        if let Some(v) = to {
            self.version_exists(project, v.as_str())?;
            return Ok(RollbackTarget {
                version: v.clone(),
                restores: None,
                preview,
            });
        }
        let base = current.current.restores.unwrap_or(current.current.seq);
        let mut seq = base;
        while seq > 1 {
            seq -= 1;
            let Some(r) = self.get_json::<Release>(T::Releases, &release_key(project, env, seq))?
            else {
                continue;
            };
            if r.version == current.current.version {
                continue;
            }
            // The version's record, when the version still exists: its name comes typed.
            let stored: Option<VersionRecord> =
                self.get_json(T::Versions, &pair_key(project, r.version.as_bytes()))?;
            if let Some(stored) = stored {
                return Ok(RollbackTarget {
                    restores: Some(r.restores.unwrap_or(r.seq)),
                    version: stored.version,
                    preview,
                });
            }
        }
        abort(StoreError::NoEarlierRelease {
            project: project.to_owned(),
            env: env.to_owned(),
        })
    }

    /// Appends a release, moves the pointer, appends the event.
    fn release(&self, new: &NewRelease<'_>) -> TxResult<EnvironmentRecord> {
        // A lock outlives the releases made while it holds (rollbacks); so do a preview's
        // expiry settings.
        let existing =
            self.get_json::<EnvironmentRecord>(T::Environments, &env_key(new.project, new.env))?;
        let expiry = existing.as_ref().map(|r| r.expiry).unwrap_or_default();
        let lock = existing.and_then(|r| r.lock);
        let counter = format!("release\0{}\0{}", new.project, new.env);
        let seq = self.next_counter(&counter)?;
        self.next_counter(&releases_made_key(new.project))?;
        let release = Release {
            seq,
            project: new.project.to_owned(),
            env: new.env.to_owned(),
            version: new.version.to_owned(),
            time: SystemTime::now(),
            actor: new.actor.to_owned(),
            reason: new.reason,
            restores: new.restores,
        };
        self.put_json(
            T::Releases,
            &release_key(new.project, new.env, seq),
            &release,
        )?;
        let record = EnvironmentRecord {
            project: new.project.to_owned(),
            name: new.env.to_owned(),
            current: release,
            pinned: new.pinned,
            preview: new.preview,
            lock,
            expiry,
        };
        self.put_json(T::Environments, &env_key(new.project, new.env), &record)?;
        let kind = match new.reason {
            ReleaseReason::Rollback => EventKind::EnvironmentRolledBack,
            ReleaseReason::Deploy | ReleaseReason::Auto => EventKind::EnvironmentDeployed,
        };
        self.append_event(
            kind,
            new.project,
            json!({
                "project": new.project,
                "env": new.env,
                "version": new.version,
                "seq": seq,
                "reason": new.reason.as_str(),
                "actor": new.actor,
                "pinned": new.pinned,
                "preview": new.preview,
            }),
        )?;
        Ok(record)
    }
}

impl MetaStore {
    /// Points `env` at `version` with a new release. A deploy (`Deploy`) unpins the environment;
    /// an automatic one (`Auto`) to a pinned environment fails with `EnvironmentPinned` and
    /// changes nothing. `VersionNotFound` when the project has no such version.
    pub fn deploy(
        &self,
        project: &ProjectName,
        env: &EnvName,
        version: &VersionName,
        actor: &str,
        reason: ReleaseReason,
        preview: bool,
    ) -> Result<EnvironmentRecord, StoreError> {
        let (project, env, version) = (project.as_str(), env.as_str(), version.as_str());
        self.transact(|tx| {
            tx.project(project)?;
            tx.version_exists(project, version)?;
            let current: Option<EnvironmentRecord> =
                tx.get_json(T::Environments, &env_key(project, env))?;
            if let Some(lock) = current.as_ref().and_then(|c| c.lock.as_ref()) {
                return abort(StoreError::EnvironmentLocked {
                    project: project.to_owned(),
                    env: env.to_owned(),
                    reason: lock.reason.clone(),
                });
            }
            if reason == ReleaseReason::Auto && current.as_ref().is_some_and(|c| c.pinned) {
                return abort(StoreError::EnvironmentPinned {
                    project: project.to_owned(),
                    env: env.to_owned(),
                });
            }
            tx.release(&NewRelease {
                project,
                env,
                version,
                actor,
                reason,
                restores: None,
                pinned: false,
                preview: current.map_or(preview, |c| c.preview),
            })
        })
    }

    /// Where a rollback of `env` goes, without changing anything: the release before the current
    /// one (skipping releases of the same version, and versions since deleted), or version `to`.
    /// The deployer loads that version before [`MetaStore::rollback`] commits it.
    pub fn rollback_target(
        &self,
        project: &ProjectName,
        env: &EnvName,
        to: Option<&VersionName>,
    ) -> Result<RollbackTarget, StoreError> {
        self.transact(|tx| tx.rollback_target(project.as_str(), env.as_str(), to))
    }

    /// Points `env` at `target` (from [`MetaStore::rollback_target`]) and pins it. The caller
    /// keeps the environment from changing in between (the deployer holds the site writer lock).
    pub fn rollback(
        &self,
        project: &ProjectName,
        env: &EnvName,
        target: &RollbackTarget,
        actor: &str,
    ) -> Result<EnvironmentRecord, StoreError> {
        let (project, env) = (project.as_str(), env.as_str());
        self.transact(|tx| {
            tx.project(project)?;
            tx.version_exists(project, target.version.as_str())?;
            tx.release(&NewRelease {
                project,
                env,
                version: target.version.as_str(),
                actor,
                reason: ReleaseReason::Rollback,
                restores: target.restores,
                pinned: true,
                preview: target.preview,
            })
        })
    }

    /// One environment.
    pub fn environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<EnvironmentRecord, StoreError> {
        self.get_json(T::Environments, &env_key(project.as_str(), env.as_str()))?
            .ok_or_else(|| StoreError::EnvironmentNotFound {
                project: project.to_string(),
                env: env.to_string(),
            })
    }

    /// A project's environments, by name.
    pub fn environments(
        &self,
        project: &ProjectName,
    ) -> Result<Vec<EnvironmentRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .tree(T::Environments)?
            .scan_prefix(prefix(project.as_str()))
        {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Every environment of every project (for the site table on start).
    pub fn all_environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::Environments)?.iter() {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Release history, newest first: of one environment, or of all (`env` `None`), at most
    /// `limit` (0: all).
    pub fn releases(
        &self,
        project: &ProjectName,
        env: Option<&EnvName>,
        limit: usize,
    ) -> Result<Vec<Release>, StoreError> {
        let scan = match env {
            Some(e) => release_prefix(project.as_str(), e.as_str()),
            None => prefix(project.as_str()),
        };
        let mut out: Vec<Release> = Vec::new();
        for item in self.tree(T::Releases)?.scan_prefix(scan).rev() {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
            if env.is_some() && limit > 0 && out.len() >= limit {
                break;
            }
        }
        if env.is_none() {
            out.sort_by(|a, b| b.time.cmp(&a.time).then(b.seq.cmp(&a.seq)));
            if limit > 0 {
                out.truncate(limit);
            }
        }
        Ok(out)
    }

    /// Removes an environment's pointer (its history stays), with an `environment.removed` event.
    pub fn remove_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<(), StoreError> {
        let (project, env) = (project.as_str(), env.as_str());
        self.transact(|tx| {
            let key = env_key(project, env);
            if tx.tree(T::Environments).remove(key)?.is_none() {
                return abort(StoreError::EnvironmentNotFound {
                    project: project.to_owned(),
                    env: env.to_owned(),
                });
            }
            tx.append_event(
                EventKind::EnvironmentRemoved,
                project,
                json!({ "project": project, "env": env }),
            )?;
            Ok(())
        })
    }

    /// Clears an environment's pin, with an `environment.unpinned` event.
    pub fn unpin_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
    ) -> Result<EnvironmentRecord, StoreError> {
        let (project, env) = (project.as_str(), env.as_str());
        self.transact(|tx| {
            let key = env_key(project, env);
            let Some(mut record) = tx.get_json::<EnvironmentRecord>(T::Environments, &key)? else {
                return abort(StoreError::EnvironmentNotFound {
                    project: project.to_owned(),
                    env: env.to_owned(),
                });
            };
            if record.pinned {
                record.pinned = false;
                tx.put_json(T::Environments, &key, &record)?;
                tx.append_event(
                    EventKind::EnvironmentUnpinned,
                    project,
                    json!({ "project": project, "env": env }),
                )?;
            }
            Ok(record)
        })
    }

    /// How many releases `project` has had (see [`Tx::releases_made`]).
    pub(super) fn releases_made(&self, project: &str) -> Result<u64, StoreError> {
        Ok(self
            .tree(T::Counters)?
            .get(releases_made_key(project).as_bytes())?
            .map(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// The versions of `project` that must stay stored: each environment's current version and
    /// the one a rollback of it would go back to (the newest earlier release of another version).
    /// [`MetaStore::remove_version`] refuses them.
    pub fn protected_versions(
        &self,
        project: &ProjectName,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for env in self.environments(project)? {
            let current = env.current.version.clone();
            for item in self
                .tree(T::Releases)?
                .scan_prefix(release_prefix(project.as_str(), &env.name))
                .rev()
            {
                let (k, v) = item?;
                let r: Release = decode(&k, &v)?;
                if r.version != current {
                    out.insert(r.version);
                    break;
                }
            }
            out.insert(current);
        }
        Ok(out)
    }

    /// How a version is served (defaults when nothing was recorded).
    pub fn site_options(
        &self,
        project: &ProjectName,
        version: &VersionName,
    ) -> Result<SiteOptions, StoreError> {
        Ok(self
            .get_json(
                T::SiteOptions,
                &pair_key(project.as_str(), version.as_str().as_bytes()),
            )?
            .unwrap_or_default())
    }
}
