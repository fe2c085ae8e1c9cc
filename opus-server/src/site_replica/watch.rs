//! The watch on opusd's event stream (`WatchEvents`, live only): an event that can change what a
//! site serves wakes the follower at once, so a replica follows a deploy or rollback within
//! milliseconds of its pointer landing instead of at the next poll. The store stays the only
//! source of what is served; a lost stream only slows the replica down to the poll, and is
//! reconnected with backoff.

use std::sync::Arc;
use std::time::Duration;

use opus_core::proto;
use opus_core::proto::event_service_client::EventServiceClient;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::ReplicaError;

/// The longest wait before reconnecting to a stream that failed.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// Whether an event of this type can change what a site serves.
fn changes_sites(kind: &str) -> bool {
    kind.starts_with("environment.")
        || kind.starts_with("domain.")
        || kind.starts_with("preview.")
        || matches!(kind, "deploy" | "rollback" | "project.removed")
}

/// A watch of one opusd's events.
pub(super) struct Watcher {
    /// The API's URL, for logs.
    url: String,
    /// The endpoint, connected lazily.
    endpoint: Endpoint,
    /// The token interceptor.
    bearer: Bearer,
}

impl Watcher {
    /// A watcher of the opusd at `url`, authenticating with `token` when given.
    pub(super) fn new(url: &str, token: Option<&str>) -> Result<Watcher, ReplicaError> {
        let url = url.trim_end_matches('/').to_owned();
        let bad = |detail: String| ReplicaError::Api {
            url: url.clone(),
            detail,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("use an http:// or https:// URL".into()));
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .map_err(|e| bad(format!("TLS setup failed: {e}")))?;
        }
        let bearer = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| bad("the token holds characters a header cannot carry".into()))?,
            ),
            None => None,
        };
        Ok(Watcher {
            url,
            endpoint,
            bearer: Bearer(bearer),
        })
    }

    /// Follows the event stream until `stop`, notifying `wake` on every event that can change a
    /// site (and on each (re)connection, which may have missed some).
    pub(super) async fn run(self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = self.follow(&wake) => r,
            };
            match result {
                Ok(()) => {
                    tracing::info!(api = %self.url, "the event stream ended; reconnecting");
                    backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    tracing::warn!(api = %self.url, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot follow opusd's events; polling the store meanwhile");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    /// One connection: follows the stream until it ends or fails.
    async fn follow(&self, wake: &Notify) -> Result<(), WatchError> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| WatchError::Connect(opus_core::error::innermost_cause(&e)))?;
        let mut client: EventServiceClient<InterceptedService<Channel, Bearer>> =
            EventServiceClient::with_interceptor(channel, self.bearer.clone());
        let mut stream = client
            .watch_events(proto::WatchEventsRequest {
                from: 0,
                project: String::new(),
                follow: true,
                tail: Some(0),
            })
            .await
            .map_err(WatchError::Refused)?
            .into_inner();
        tracing::info!(api = %self.url, "following opusd's events");
        // Changes made while not connected are picked up by a poll now.
        wake.notify_one();
        while let Some(event) = stream.message().await.map_err(WatchError::Refused)? {
            if changes_sites(&event.r#type) {
                wake.notify_one();
            }
        }
        Ok(())
    }
}

/// Why the event stream could not be followed.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    /// opusd could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// opusd refused the call or the stream broke.
    #[error("{}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_that_change_sites_wake_the_follower() {
        for kind in [
            "environment.deployed",
            "environment.rolled_back",
            "environment.removed",
            "domain.added",
            "preview.expired",
            "project.removed",
            "rollback",
        ] {
            assert!(changes_sites(kind), "{kind}");
        }
        for kind in [
            "build.queued",
            "version.stored",
            "hook.added",
            "project.added",
        ] {
            assert!(!changes_sites(kind), "{kind}");
        }
    }

    #[test]
    fn an_api_url_that_is_no_http_url_is_refused() {
        assert!(matches!(
            Watcher::new("opusd:7070", None),
            Err(ReplicaError::Api { .. })
        ));
        assert!(Watcher::new("http://127.0.0.1:7070/", Some("t")).is_ok());
        assert!(matches!(
            Watcher::new("http://127.0.0.1:7070", Some("bad\ntoken")),
            Err(ReplicaError::Api { .. })
        ));
    }
}
