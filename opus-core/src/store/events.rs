//! Reading the event log: replay from a sequence number and wait for new events.

use tokio::sync::watch;

use super::{MetaStore, T, decode};
use crate::error::StoreError;
use crate::model::Event;

impl MetaStore {
    /// Events with `seq >= from`, oldest first, at most `limit` of them.
    pub fn events_from(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::Events).range(from.to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// A receiver that changes whenever events are committed; watchers read the new ones with
    /// [`MetaStore::events_from`].
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.last_event.subscribe()
    }
}
