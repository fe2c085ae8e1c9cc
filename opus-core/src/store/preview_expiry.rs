//! Expiring previews: opus.yml's `previews: { expire: 7d }` is kept on each preview's
//! environment record when a build deploys it ([`MetaStore::set_preview_expire`]); a preview
//! whose last release is older than that is removed by [`MetaStore::expire_preview`], with a
//! `preview.expired` event in the same transaction. `opus env keep` exempts one
//! ([`MetaStore::keep_environment`]). Only previews expire: production, environments named in
//! opus.yml and environments deployed by hand are never marked as previews.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::deploys::{EnvironmentRecord, env_key};
use super::{MetaStore, T, abort};
use crate::error::StoreError;
use crate::model::{EnvName, EventKind, ProjectName};

/// A preview's expiry settings, kept on its environment record and across its releases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewExpiry {
    /// How long after its last release the preview is removed (from the opus.yml of the build
    /// that deployed it last; absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<Duration>,
    /// Set by `opus env keep`: never expired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
}

impl PreviewExpiry {
    /// Whether nothing is set (what records written before expiry existed read as).
    pub fn is_unset(&self) -> bool {
        *self == PreviewExpiry::default()
    }
}

impl EnvironmentRecord {
    /// When it expires: its last release's time plus its `expire_after`, for a preview that is
    /// not kept; `None` for everything else.
    pub fn expires_at(&self) -> Option<SystemTime> {
        if !self.preview || self.expiry.kept {
            return None;
        }
        self.expiry
            .expire_after
            .and_then(|d| self.current.time.checked_add(d))
    }
}

impl MetaStore {
    /// Records how long the preview `env` lives without a deploy (`None`: forever), as the
    /// opus.yml of the build that just deployed it says. Does nothing to an environment that is
    /// not a preview.
    pub fn set_preview_expire(
        &self,
        project: &ProjectName,
        env: &EnvName,
        expire_after: Option<Duration>,
    ) -> Result<EnvironmentRecord, StoreError> {
        self.update_expiry(project, env, |record| {
            if record.preview {
                record.expiry.expire_after = expire_after;
            }
        })
    }

    /// Exempts `env` from expiry (`kept`), or lets it expire again. An environment that is not
    /// a preview never expires either way.
    pub fn keep_environment(
        &self,
        project: &ProjectName,
        env: &EnvName,
        kept: bool,
    ) -> Result<EnvironmentRecord, StoreError> {
        self.update_expiry(project, env, |record| record.expiry.kept = kept)
    }

    fn update_expiry(
        &self,
        project: &ProjectName,
        env: &EnvName,
        change: impl Fn(&mut EnvironmentRecord),
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
            change(&mut record);
            tx.put_json(T::Environments, &key, &record)?;
            Ok(record)
        })
    }

    /// Removes the preview `env` if it has expired by `now` (checked again in the removal's own
    /// transaction, so a deploy since the caller looked keeps it), with a `preview.expired`
    /// event. Returns the removed record, or `None` when it was not due (or is gone).
    pub fn expire_preview(
        &self,
        project: &ProjectName,
        env: &EnvName,
        now: SystemTime,
    ) -> Result<Option<EnvironmentRecord>, StoreError> {
        let (project, env) = (project.as_str(), env.as_str());
        self.transact(|tx| {
            let key = env_key(project, env);
            let Some(record) = tx.get_json::<EnvironmentRecord>(T::Environments, &key)? else {
                return Ok(None);
            };
            let Some(at) = record.expires_at().filter(|at| *at <= now) else {
                return Ok(None);
            };
            tx.tree(T::Environments).remove(key)?;
            let expire_seconds = record.expiry.expire_after.map_or(0, |d| d.as_secs());
            tx.append_event(
                EventKind::PreviewExpired,
                project,
                json!({
                    "project": project,
                    "env": env,
                    "version": record.current.version,
                    "last_release": record.current.seq,
                    "expire_seconds": expire_seconds,
                    "expired_at": humantime::format_rfc3339_seconds(at).to_string(),
                }),
            )?;
            Ok(Some(record))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VersionName;
    use crate::store::{ReleaseReason, SiteOptions};

    fn pn(s: &str) -> ProjectName {
        ProjectName::new(s).expect("project")
    }
    fn en(s: &str) -> EnvName {
        EnvName::new(s).expect("env")
    }

    /// A store with project `web`, version `1`, production and the preview `feature-x` on it.
    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        store
            .create_project(&crate::store::tests::project("web"))
            .expect("create");
        store
            .commit_version(
                &crate::store::tests::version("web", "1"),
                &[],
                &SiteOptions::default(),
            )
            .expect("version");
        for (env, preview) in [("production", false), ("feature-x", true)] {
            store
                .deploy(
                    &pn("web"),
                    &en(env),
                    &VersionName::new("1").expect("v"),
                    "test",
                    ReleaseReason::Auto,
                    preview,
                )
                .expect("deploy");
        }
        (dir, store)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_preview_expires_only_once_its_time_has_passed() {
        let (_dir, store) = store();
        let (web, fx) = (pn("web"), en("feature-x"));
        let record = store
            .set_preview_expire(&web, &fx, Some(HOUR))
            .expect("set");
        let at = record.expires_at().expect("expires");
        assert_eq!(at, record.current.time + HOUR);
        assert_eq!(
            store
                .expire_preview(&web, &fx, at - Duration::from_secs(1))
                .expect("sweep"),
            None
        );
        let removed = store
            .expire_preview(&web, &fx, at)
            .expect("sweep")
            .expect("removed");
        assert_eq!(removed.current.version, "1");
        assert!(matches!(
            store.environment(&web, &fx),
            Err(StoreError::EnvironmentNotFound { .. })
        ));
        let events = store.events_from(0, usize::MAX).expect("events");
        let last = events.last().expect("an event");
        assert_eq!(last.kind, EventKind::PreviewExpired);
        assert_eq!(last.payload["env"], "feature-x");
        assert_eq!(last.payload["expire_seconds"], 3600);
        // Gone: a second sweep finds nothing; the version stays.
        assert_eq!(store.expire_preview(&web, &fx, at).expect("sweep"), None);
        assert!(
            store
                .get_version(&web, &VersionName::new("1").expect("v"))
                .expect("read")
                .is_some()
        );
    }

    #[test]
    fn kept_previews_and_other_environments_never_expire() {
        let (_dir, store) = store();
        let (web, fx, prod) = (pn("web"), en("feature-x"), en("production"));
        let far = SystemTime::now() + 1000 * HOUR;
        // Production ignores an expiry and a keep.
        let p = store
            .set_preview_expire(&web, &prod, Some(HOUR))
            .expect("set");
        assert_eq!(p.expiry.expire_after, None);
        assert_eq!(p.expires_at(), None);
        assert_eq!(store.expire_preview(&web, &prod, far).expect("sweep"), None);
        // No expire set: the preview lives on.
        assert_eq!(store.expire_preview(&web, &fx, far).expect("sweep"), None);
        store
            .set_preview_expire(&web, &fx, Some(HOUR))
            .expect("set");
        let kept = store.keep_environment(&web, &fx, true).expect("keep");
        assert!(kept.expiry.kept && kept.expires_at().is_none());
        assert_eq!(store.expire_preview(&web, &fx, far).expect("sweep"), None);
        // A new release keeps both settings; unkeeping lets it expire.
        let again = store
            .deploy(
                &web,
                &fx,
                &VersionName::new("1").expect("v"),
                "test",
                ReleaseReason::Auto,
                true,
            )
            .expect("deploy");
        assert_eq!(again.expiry.expire_after, Some(HOUR));
        assert!(again.expiry.kept);
        store.keep_environment(&web, &fx, false).expect("unkeep");
        assert!(
            store
                .expire_preview(&web, &fx, far)
                .expect("sweep")
                .is_some()
        );
        assert!(matches!(
            store.keep_environment(&web, &fx, true),
            Err(StoreError::EnvironmentNotFound { .. })
        ));
    }
}
