//! Outgoing hooks, their delivery cursors and records; inbound webhook keys and GitHub delivery ids.
//!
//! Trees:
//! - `hooks`: hook id (big-endian) -> [`Hook`].
//! - `hook_cursors`: hook id -> the sequence number of the next event the hook has not finished
//!   (delivered, given up, or skipped as unwanted). The deliverer resumes from it after a restart.
//! - `deliveries`: hook id ++ event seq -> [`Delivery`], so a prefix scan lists a hook's deliveries
//!   in event order.
//! - `github_deliveries`: `<project>\0<X-GitHub-Delivery>` -> unix seconds, to ignore repeats.
//! - `project_keys`: `<project>\0github` (webhook secret) and `<project>\0trigger` (trigger token).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{MetaStore, T, Tx, TxResult, abort, be_u64, decode, pair_key, prefix};
use crate::error::StoreError;
use crate::hook::{Delivery, Hook};
use crate::model::{EventKind, ProjectName};

/// Which per-project key of the inbound webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The secret GitHub signs `X-Hub-Signature-256` with.
    GithubSecret,
    /// The bearer token of `POST /hooks/trigger/<project>`.
    TriggerToken,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::GithubSecret => "github",
            KeyKind::TriggerToken => "trigger",
        }
    }
}

fn delivery_key(hook: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&hook.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Where a test ping's delivery is kept: after the delivery of `after` (the newest event when it
/// was sent) in the hook's list, ordered among pings by the time it was sent. The key is longer
/// than [`delivery_key`]'s, so it never takes an event's place, and it shares the hook's prefix,
/// so listing and removing the hook's deliveries include it.
fn ping_key(hook: u64, after: u64, sent: SystemTime) -> Vec<u8> {
    let nanos = sent
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut k = delivery_key(hook, after);
    k.extend_from_slice(&nanos.to_be_bytes());
    k
}

impl Tx<'_> {
    /// Reads a hook or aborts with `HookNotFound`.
    fn hook(&self, id: u64) -> TxResult<Hook> {
        match self.get_json(T::Hooks, &id.to_be_bytes())? {
            Some(h) => Ok(h),
            None => abort(StoreError::HookNotFound(id)),
        }
    }
}

/// The JSON an event carries about a hook (never its secret).
fn hook_payload(h: &Hook) -> serde_json::Value {
    json!({
        "id": h.id,
        "project": h.project,
        "url": h.url,
        "events": h.events,
        "format": h.format,
        "signed": h.secret.is_some(),
        "enabled": h.enabled,
    })
}

impl MetaStore {
    /// Adds a hook (its id is assigned here) with a `hook.added` event. The hook gets the events
    /// that come after that one. A project hook needs its project to exist.
    pub fn add_hook(&self, template: &Hook) -> Result<Hook, StoreError> {
        self.transact(|tx| {
            if !template.project.is_empty() {
                tx.project(&template.project)?;
            }
            let mut hook = template.clone();
            hook.id = tx.next_counter("hook_id")?;
            let key = hook.id.to_be_bytes();
            tx.put_json(T::Hooks, &key, &hook)?;
            let event =
                tx.append_event(EventKind::HookAdded, &hook.project, hook_payload(&hook))?;
            tx.tree(T::HookCursors)
                .insert(&key, &(event.seq + 1).to_be_bytes())?;
            Ok(hook)
        })
    }

    /// One hook.
    pub fn get_hook(&self, id: u64) -> Result<Hook, StoreError> {
        self.get_json(T::Hooks, &id.to_be_bytes())?
            .ok_or(StoreError::HookNotFound(id))
    }

    /// Hooks in id order: all of them, or those that get `project`'s events (its own and the
    /// all-project ones).
    pub fn list_hooks(&self, project: Option<&ProjectName>) -> Result<Vec<Hook>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::Hooks)?.iter() {
            let (k, v) = item?;
            let hook: Hook = decode(&k, &v)?;
            if project.is_none_or(|p| hook.project.is_empty() || hook.project == p.as_str()) {
                out.push(hook);
            }
        }
        Ok(out)
    }

    /// Removes a hook with its cursor and delivery records, with a `hook.removed` event.
    pub fn remove_hook(&self, id: u64) -> Result<(), StoreError> {
        let keys: Vec<_> = self
            .tree(T::Deliveries)?
            .scan_prefix(id.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        self.transact(|tx| {
            let hook = tx.hook(id)?;
            tx.tree(T::Hooks).remove(&id.to_be_bytes())?;
            tx.tree(T::HookCursors).remove(&id.to_be_bytes())?;
            for k in &keys {
                tx.tree(T::Deliveries).remove(k.as_ref())?;
            }
            tx.append_event(EventKind::HookRemoved, &hook.project, json!({ "id": id }))?;
            Ok(())
        })
    }

    /// The ids of `project`'s own hooks (not the all-project ones), for removing the project.
    pub(crate) fn project_hook_ids(&self, project: &ProjectName) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .list_hooks(Some(project))?
            .into_iter()
            .filter(|h| h.project == project.as_str())
            .map(|h| h.id)
            .collect())
    }

    /// The sequence number of the next event hook `id` has not finished (1 when unknown).
    pub fn hook_cursor(&self, id: u64) -> Result<u64, StoreError> {
        Ok(self
            .tree(T::HookCursors)?
            .get(id.to_be_bytes())?
            .map(|v| be_u64(&v))
            .unwrap_or(1))
    }

    /// Moves a hook's cursor forward past events it does not want. Does nothing for a hook that
    /// was removed meanwhile.
    pub fn advance_hook_cursor(&self, id: u64, next: u64) -> Result<(), StoreError> {
        self.transact(|tx| {
            let key = id.to_be_bytes();
            if tx.tree(T::Hooks).get(key)?.is_none() {
                return Ok(());
            }
            let current = tx
                .tree(T::HookCursors)
                .get(key)?
                .map(|v| be_u64(&v))
                .unwrap_or(1);
            if next > current {
                tx.tree(T::HookCursors).insert(&key, &next.to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// Stores a delivery after an attempt. When the delivery is over (delivered, failed or
    /// disabled), the hook's cursor moves past its event in the same transaction, so a crash
    /// never loses an event and redelivers at most the one in flight (under the same id).
    /// A `Disabled` delivery also disables the hook, with a `hook.disabled` event.
    /// A test ping (`event_seq` 0) is kept in the hook's list after the newest event's delivery
    /// and moves no cursor.
    /// Returns false when the hook was removed meanwhile (nothing is written).
    pub fn record_delivery(&self, d: &Delivery) -> Result<bool, StoreError> {
        use crate::hook::DeliveryState as S;
        let newest_event = self.last_event_seq();
        self.transact(|tx| {
            let key = d.hook_id.to_be_bytes();
            let Some(mut hook) = tx.get_json::<Hook>(T::Hooks, &key)? else {
                return Ok(false);
            };
            if d.event_seq == 0 {
                tx.put_json(
                    T::Deliveries,
                    &ping_key(d.hook_id, newest_event, d.created_at),
                    d,
                )?;
            } else {
                tx.put_json(T::Deliveries, &delivery_key(d.hook_id, d.event_seq), d)?;
                if d.state != S::Pending {
                    tx.tree(T::HookCursors)
                        .insert(&key, &(d.event_seq + 1).to_be_bytes())?;
                }
            }
            if d.state == S::Disabled && hook.enabled {
                hook.enabled = false;
                tx.put_json(T::Hooks, &key, &hook)?;
                tx.append_event(EventKind::HookDisabled, &hook.project, hook_payload(&hook))?;
            }
            Ok(true)
        })
    }

    /// The delivery of event `seq` to `hook`, if one was attempted.
    pub fn get_delivery(&self, hook: u64, seq: u64) -> Result<Option<Delivery>, StoreError> {
        self.get_json(T::Deliveries, &delivery_key(hook, seq))
    }

    /// A hook's deliveries, newest first, at most `limit` (0: 50).
    pub fn list_deliveries(&self, hook: u64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.get_hook(hook)?;
        let limit = if limit == 0 { 50 } else { limit };
        let mut out = Vec::new();
        for item in self
            .tree(T::Deliveries)?
            .scan_prefix(hook.to_be_bytes())
            .rev()
            .take(limit)
        {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// A project's webhook key of `kind`, if it has one.
    pub fn project_key(
        &self,
        project: &ProjectName,
        kind: KeyKind,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree(T::ProjectKeys)?
            .get(pair_key(project.as_str(), kind.name().as_bytes()))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A project's webhook key of `kind`: the stored one, or `fresh` stored now when there is none
    /// or `rotate` is set (with a `webhook.key_set` event that names the kind, never the value).
    pub fn ensure_project_key(
        &self,
        project: &ProjectName,
        kind: KeyKind,
        rotate: bool,
        fresh: &str,
    ) -> Result<String, StoreError> {
        let project = project.as_str();
        self.transact(|tx| {
            tx.project(project)?;
            let key = pair_key(project, kind.name().as_bytes());
            if !rotate && let Some(v) = tx.tree(T::ProjectKeys).get(&key)? {
                return Ok(String::from_utf8_lossy(&v).into_owned());
            }
            tx.tree(T::ProjectKeys).insert(key, fresh.as_bytes())?;
            tx.append_event(
                EventKind::WebhookKeySet,
                project,
                json!({ "kind": kind.name(), "rotated": rotate }),
            )?;
            Ok(fresh.to_owned())
        })
    }

    /// Records GitHub delivery `id` for `project`; false when it was seen before (a redelivery,
    /// to be ignored).
    pub fn record_github_delivery(
        &self,
        project: &ProjectName,
        id: &str,
    ) -> Result<bool, StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let previous = self
            .tree(T::GithubDeliveries)?
            .compare_and_swap(
                pair_key(project.as_str(), id.as_bytes()),
                None as Option<&[u8]>,
                Some(&now.to_be_bytes()[..]),
            )
            .map_err(|e| self.failed(e))?;
        self.changed();
        Ok(previous.is_ok())
    }

    /// Forgets GitHub delivery `id` (when queueing its build failed, so GitHub's redelivery can
    /// try again).
    pub fn forget_github_delivery(
        &self,
        project: &ProjectName,
        id: &str,
    ) -> Result<(), StoreError> {
        self.tree(T::GithubDeliveries)?
            .remove(pair_key(project.as_str(), id.as_bytes()))
            .map_err(|e| self.failed(e))?;
        self.changed();
        Ok(())
    }

    /// Keys of everything webhook-related that belongs to `project`, for removing the project:
    /// (project keys, GitHub delivery ids).
    pub(crate) fn project_webhook_keys(
        &self,
        project: &str,
    ) -> Result<(Vec<sled::IVec>, Vec<sled::IVec>), StoreError> {
        let p = prefix(project);
        let keys = self
            .tree(T::ProjectKeys)?
            .scan_prefix(&p)
            .keys()
            .collect::<Result<_, _>>()?;
        let deliveries = self
            .tree(T::GithubDeliveries)?
            .scan_prefix(&p)
            .keys()
            .collect::<Result<_, _>>()?;
        Ok((keys, deliveries))
    }
}

impl Tx<'_> {
    /// Removes a project's hooks (with cursors and delivery records) and webhook keys, inside the
    /// transaction that removes the project. `hooks` and `delivery_keys` were collected before.
    pub(crate) fn remove_project_webhooks(
        &self,
        hooks: &[u64],
        delivery_keys: &[sled::IVec],
        project_keys: &[sled::IVec],
        github_ids: &[sled::IVec],
    ) -> TxResult<()> {
        for id in hooks {
            self.tree(T::Hooks).remove(&id.to_be_bytes())?;
            self.tree(T::HookCursors).remove(&id.to_be_bytes())?;
        }
        for k in delivery_keys {
            self.tree(T::Deliveries).remove(k.as_ref())?;
        }
        for k in project_keys {
            self.tree(T::ProjectKeys).remove(k.as_ref())?;
        }
        for k in github_ids {
            self.tree(T::GithubDeliveries).remove(k.as_ref())?;
        }
        Ok(())
    }
}

impl MetaStore {
    /// Delivery record keys of the given hooks.
    pub(crate) fn delivery_keys(&self, hooks: &[u64]) -> Result<Vec<sled::IVec>, StoreError> {
        let mut out = Vec::new();
        for id in hooks {
            for k in self
                .tree(T::Deliveries)?
                .scan_prefix(id.to_be_bytes())
                .keys()
            {
                out.push(k?);
            }
        }
        Ok(out)
    }
}
