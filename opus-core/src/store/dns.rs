//! The DNS routes' side of the store: the outbox of DNS changes ([`DnsChange`]).
//!
//! Like the GitHub outbox, it is the event log itself: an event that adds or removes a name
//! (`domain.added`, `environment.deployed`, `environment.removed`, ...) is committed with its
//! cause, and each change it makes (one per name; a project's removal makes several) is stored
//! after every attempt; once all of an event's changes are over, the cursor moves past it. So a
//! change is never lost to a crash or to an outage of the provider, and after a crash the
//! changes already over are not made again.
//!
//! Trees:
//! - `dns`: `cursor` -> seq (be): the next event the outbox has not finished;
//!   `name\0<name>` -> the newest [`DnsChange`] of that name (what `opus domain list` shows).
//! - `dns_changes`: event seq (be) + name -> [`DnsChange`].

use super::{MetaStore, T, be_u64, decode};
use crate::dns::DnsChange;
use crate::error::StoreError;

const CURSOR: &[u8] = b"cursor";

fn name_key(name: &str) -> Vec<u8> {
    format!("name\0{name}").into_bytes()
}

fn change_key(seq: u64, name: &str) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

impl MetaStore {
    /// The next event the DNS outbox has not finished (1 when it never ran).
    pub fn dns_cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .tree(T::Dns)?
            .get(CURSOR)?
            .map(|v| be_u64(&v))
            .unwrap_or(1))
    }

    /// Starts the DNS outbox's cursor after the newest event when it has none (the first start
    /// with a DNS provider): names added before were not routed by Opus, and are left as they are.
    pub fn init_dns_cursor(&self) -> Result<(), StoreError> {
        let next = self.last_event_seq() + 1;
        self.transact(|tx| {
            if tx.tree(T::Dns).get(CURSOR)?.is_none() {
                tx.tree(T::Dns).insert(CURSOR, &next.to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// Moves the cursor forward past events whose changes are over (or that make none).
    pub fn advance_dns_cursor(&self, next: u64) -> Result<(), StoreError> {
        self.transact(|tx| {
            let current = tx
                .tree(T::Dns)
                .get(CURSOR)?
                .map(|v| be_u64(&v))
                .unwrap_or(1);
            if next > current {
                tx.tree(T::Dns).insert(CURSOR, &next.to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// Stores a change after an attempt, as its name's newest.
    pub fn record_dns_change(&self, c: &DnsChange) -> Result<(), StoreError> {
        self.transact(|tx| {
            tx.put_json(T::DnsChanges, &change_key(c.event_seq, &c.name), c)?;
            tx.put_json(T::Dns, &name_key(&c.name), c)?;
            Ok(())
        })
    }

    /// The change of `name` made from event `seq`, if one was attempted.
    pub fn dns_change(&self, seq: u64, name: &str) -> Result<Option<DnsChange>, StoreError> {
        self.get_json(T::DnsChanges, &change_key(seq, name))
    }

    /// The newest change of `name`, if any.
    pub fn dns_status(&self, name: &str) -> Result<Option<DnsChange>, StoreError> {
        self.get_json(T::Dns, &name_key(name))
    }

    /// The newest change of every name, by name.
    pub fn dns_names(&self) -> Result<Vec<DnsChange>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::Dns)?.scan_prefix(b"name\0") {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::dns::{DnsAction, DnsChangeState};

    fn change(seq: u64, state: DnsChangeState) -> DnsChange {
        DnsChange {
            event_seq: seq,
            name: "www.acme.com".into(),
            owner: "web/production".into(),
            action: DnsAction::Create,
            state,
            attempts: 1,
            last_error: String::new(),
            next_attempt_at: None,
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
        }
    }

    #[test]
    fn changes_are_kept_by_event_and_name_and_the_cursor_only_moves_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        assert_eq!(store.dns_cursor().expect("cursor"), 1);
        store
            .record_dns_change(&change(4, DnsChangeState::Pending))
            .expect("record");
        assert_eq!(
            store
                .dns_change(4, "www.acme.com")
                .expect("get")
                .map(|c| c.state),
            Some(DnsChangeState::Pending)
        );
        assert_eq!(store.dns_change(4, "acme.com").expect("get"), None);
        store
            .record_dns_change(&change(4, DnsChangeState::Done))
            .expect("record");
        store.advance_dns_cursor(5).expect("advance");
        assert_eq!(store.dns_cursor().expect("cursor"), 5);
        let status = store.dns_status("www.acme.com").expect("get").expect("one");
        assert_eq!(
            (status.state, status.project()),
            (DnsChangeState::Done, "web")
        );
        assert_eq!(store.dns_names().expect("names").len(), 1);
        store.advance_dns_cursor(3).expect("advance");
        assert_eq!(store.dns_cursor().expect("cursor"), 5);
        store.advance_dns_cursor(9).expect("advance");
        assert_eq!(store.dns_cursor().expect("cursor"), 9);
    }
}
