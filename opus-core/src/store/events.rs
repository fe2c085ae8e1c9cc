//! Reading the event log: replay from a sequence number and wait for new events.

use tokio::sync::watch;

use super::{MetaStore, T, decode};
use crate::error::StoreError;
use crate::model::{Event, ProjectName};

impl MetaStore {
    /// Events with `seq >= from`, oldest first, at most `limit` of them.
    pub fn events_from(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .tree(T::Events)?
            .range(from.to_be_bytes()..)
            .take(limit)
        {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Where to start reading to get the newest `count` events (of `project`, when given): the
    /// sequence number of the oldest of them, or 1 past the newest event when `count` is 0.
    /// Read from the newest event backwards, so it costs the events it skips, not the whole log.
    pub fn tail_start(
        &self,
        project: Option<&ProjectName>,
        count: usize,
    ) -> Result<u64, StoreError> {
        let mut start = self.last_event_seq() + 1;
        let mut found = 0;
        for item in self.tree(T::Events)?.iter().rev() {
            if found == count {
                break;
            }
            let (k, v) = item?;
            let event: Event = decode(&k, &v)?;
            if project.is_none_or(|p| event.project == p.as_str()) {
                start = event.seq;
                found += 1;
            }
        }
        Ok(start)
    }

    /// The sequence number of the newest event (0 when there is none).
    pub fn last_event_seq(&self) -> u64 {
        *self.last_event.borrow()
    }

    /// A receiver that changes whenever events are committed; watchers read the new ones with
    /// [`MetaStore::events_from`].
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.last_event.subscribe()
    }
}
