//! DNS routes that opusd keeps in a DNS provider (Cloudflare): one record per custom domain and
//! per environment host, made when the domain is added or the environment deployed, deleted when
//! it goes. [`DnsChange`] is the stored record of one such change, updated after every attempt,
//! so a provider outage loses nothing and a restart goes on with the change in flight.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What a change does to the name's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsAction {
    /// Make the record (to `--public-address`) unless Opus's record is there already.
    Create,
    /// Delete Opus's record of the name.
    Delete,
}

impl DnsAction {
    /// The word the API and the logs show.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsAction::Create => "create",
            DnsAction::Delete => "delete",
        }
    }
}

/// Where a change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsChangeState {
    /// Not done yet; retried with backoff.
    Pending,
    /// Done (or nothing was left to do).
    Done,
    /// Not done, on purpose: the name has a record Opus did not make, or is outside the zone.
    /// The reason is in [`DnsChange::last_error`].
    LeftAlone,
    /// Refused by the provider, or retried until the retry period ended.
    Failed,
}

impl DnsChangeState {
    /// The word the API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsChangeState::Pending => "pending",
            DnsChangeState::Done => "done",
            DnsChangeState::LeftAlone => "left alone",
            DnsChangeState::Failed => "failed",
        }
    }
}

/// One change of one name's record, made from one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsChange {
    /// The event that asked for it (the outbox's position).
    pub event_seq: u64,
    /// The record's name (a custom domain, or an environment's host).
    pub name: String,
    /// What it serves, `<project>/<env>`: written into the record's comment.
    pub owner: String,
    /// Create or delete.
    pub action: DnsAction,
    /// Where it stands.
    pub state: DnsChangeState,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed, or why the change was left alone; empty after a success.
    pub last_error: String,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<SystemTime>,
    /// When the change was first made.
    pub created_at: SystemTime,
    /// When it was last updated.
    pub updated_at: SystemTime,
}

impl DnsChange {
    /// The project part of [`DnsChange::owner`].
    pub fn project(&self) -> &str {
        self.owner.split('/').next().unwrap_or_default()
    }
}
