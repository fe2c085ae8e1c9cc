//! `opus.v1.EventService`: the event log, replayed from a sequence number and then followed live.

use std::pin::Pin;

use futures::Stream;
use opus_core::model::ProjectName;
use opus_core::proto::{self, event_service_server::EventService};
use tonic::{Request, Response, Status};

use super::status;
use opus_core::store::MetaStore;

/// Implements `WatchEvents` over the store's event log and its commit notifications.
pub(crate) struct EventsApi {
    /// The event log.
    store: MetaStore,
}

impl EventsApi {
    pub(crate) fn new(store: MetaStore) -> Self {
        EventsApi { store }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventsApi {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let req = req.into_inner();
        let store = self.store.clone();
        let project = if req.project.is_empty() {
            None
        } else {
            let project = ProjectName::new(req.project.as_str()).map_err(status)?;
            store.get_project(&project).map_err(status)?;
            Some(project)
        };
        // Subscribe before the first read so that nothing committed in between is missed.
        let mut changes = store.subscribe_events();
        let first = match req.tail {
            Some(count) => store
                .tail_start(project.as_ref(), count as usize)
                .map_err(status)?,
            None => req.from,
        };
        let stream = async_stream::try_stream! {
            let mut next = first.max(1);
            loop {
                let batch = store.events_from(next, 512).map_err(status)?;
                let full = batch.len() == 512;
                for event in &batch {
                    next = event.seq + 1;
                    if req.project.is_empty() || event.project == req.project {
                        yield proto::Event::from(event);
                    }
                }
                if full {
                    continue;
                }
                if !req.follow {
                    break;
                }
                if changes.changed().await.is_err() {
                    break;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
