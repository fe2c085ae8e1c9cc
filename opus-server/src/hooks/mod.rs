//! The hook deliverer: posts every event a hook wants to its URL, in order, until it is accepted.
//!
//! One task per enabled hook reads the event log from the hook's persisted cursor
//! ([`MetaStore::hook_cursor`]). For each wanted event it posts the body with `X-Opus-Event`,
//! `X-Opus-Delivery` (`<hook>-<seq>`, the same on every retry) and, for a hook with a secret,
//! `X-Opus-Signature-256: sha256=<hex HMAC-SHA256 of the body>`. After each attempt the
//! [`Delivery`] record is stored; when the delivery is over the cursor moves past the event in the
//! same transaction. So a hook's later events wait for the earlier ones, and after a crash the
//! deliverer resumes with the event in flight, under the same delivery id.
//!
//! Answers: 2xx delivered; 410 Gone disables the hook; 5xx, 408, 429, timeouts and connection
//! errors retry with capped exponential backoff ([`RetryPolicy`]) for the retry period (3 days by
//! default); any other 4xx is a refusal that retrying will not fix: the delivery fails and the
//! hook moves on.
//!
//! A supervisor task starts and stops the per-hook tasks: it reconciles with the `hooks` tree
//! whenever an event is committed (adding, removing and disabling a hook are events).

mod body;
pub mod signature;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opus_core::hook::{Delivery, DeliveryState, Hook, delivery_id};
use opus_core::model::{Event, EventKind};
use opus_core::store::MetaStore;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

pub use body::{SiteLinks, render};

/// How failed deliveries are retried: the defaults here, each settable in the configuration
/// ([`crate::config::Config::hook_retry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt; doubles after each further one.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub cap: Duration,
    /// How long after the first attempt retries stop (the delivery is then `failed`).
    pub give_up_after: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failed` failed attempts (1 or more): `base * 2^(failed-1)`, at most `cap`.
    pub fn delay(&self, failed: u32) -> Duration {
        let exp = failed.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status.
    Status(u16),
    /// No answer: connection refused, timeout, TLS failure. The text says which.
    NoAnswer(String),
}

/// One POST of a delivery.
#[derive(Debug, Clone)]
pub struct Post {
    /// The hook URL.
    pub url: String,
    /// `X-Opus-Event`.
    pub event: String,
    /// `X-Opus-Delivery`.
    pub delivery: String,
    /// `X-Opus-Signature-256`, for signed hooks.
    pub signature: Option<String>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Sends posts; reqwest in opusd, a script in unit tests.
pub trait Transport: Send + Sync + 'static {
    /// Makes one attempt.
    fn post(&self, post: &Post) -> impl Future<Output = Answer> + Send;
}

/// The HTTP transport: reqwest with rustls.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A client whose attempts time out after `timeout`.
    pub fn new(timeout: Duration) -> Result<HttpTransport, reqwest::Error> {
        // reqwest is built without a default crypto provider; ring is the one tonic already uses.
        // Installing fails only when one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("opus-hooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpTransport { client })
    }
}

impl Transport for HttpTransport {
    async fn post(&self, post: &Post) -> Answer {
        let mut req = self
            .client
            .post(&post.url)
            .header("content-type", "application/json")
            .header("x-opus-event", &post.event)
            .header("x-opus-delivery", &post.delivery)
            .body(post.body.clone());
        if let Some(sig) = &post.signature {
            req = req.header("x-opus-signature-256", sig);
        }
        match req.send().await {
            Ok(resp) => Answer::Status(resp.status().as_u16()),
            Err(e) => Answer::NoAnswer(error_chain(&e)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

/// What the deliverer shares between its tasks.
struct Ctx<X> {
    store: MetaStore,
    transport: X,
    policy: RetryPolicy,
    links: SiteLinks,
}

/// The running deliverer; dropping it (or [`Deliverer::stop`]) stops every task. Deliveries in
/// flight are resumed from their records by the next start.
pub struct Deliverer {
    supervisor: JoinHandle<()>,
}

impl Deliverer {
    /// Starts the supervisor and one task per enabled hook.
    pub fn start<X: Transport>(
        store: MetaStore,
        transport: X,
        policy: RetryPolicy,
        links: SiteLinks,
    ) -> Deliverer {
        let ctx = Arc::new(Ctx {
            store,
            transport,
            policy,
            links,
        });
        let supervisor = tokio::spawn(supervise(ctx).instrument(info_span!("hooks")));
        Deliverer { supervisor }
    }

    /// Stops every delivery task.
    pub fn stop(self) {
        self.supervisor.abort();
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Aborts the per-hook tasks when the supervisor itself is aborted.
struct Tasks(HashMap<u64, JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in self.0.values() {
            t.abort();
        }
    }
}

async fn supervise<X: Transport>(ctx: Arc<Ctx<X>>) {
    let mut changes = ctx.store.subscribe_events();
    let mut tasks = Tasks(HashMap::new());
    loop {
        match ctx.store.list_hooks(None) {
            Ok(hooks) => {
                let enabled: HashMap<u64, ()> = hooks
                    .iter()
                    .filter(|h| h.enabled)
                    .map(|h| (h.id, ()))
                    .collect();
                tasks.0.retain(|id, task| {
                    let keep = enabled.contains_key(id) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for id in enabled.keys() {
                    if !tasks.0.contains_key(id) {
                        let ctx = ctx.clone();
                        let span = info_span!("hook", hook = id);
                        tasks
                            .0
                            .insert(*id, tokio::spawn(run_hook(ctx, *id).instrument(span)));
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list hooks; trying again on the next event"),
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Delivers hook `id`'s events from its cursor on, forever (until the hook is removed or disabled).
async fn run_hook<X: Transport>(ctx: Arc<Ctx<X>>, id: u64) {
    let store = &ctx.store;
    let mut changes = store.subscribe_events();
    let mut cursor = match store.hook_cursor(id) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read the hook's cursor; it restarts on the next event");
            return;
        }
    };
    debug!(cursor, "delivering");
    loop {
        let hook = match store.get_hook(id) {
            Ok(h) if h.enabled => h,
            Ok(_) => return,
            Err(opus_core::error::StoreError::HookNotFound(_)) => return,
            Err(e) => {
                warn!(error = %e, "cannot read the hook; it restarts on the next event");
                return;
            }
        };
        let batch = match store.events_from(cursor, 256) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read the event log; it restarts on the next event");
                return;
            }
        };
        if batch.is_empty() {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut skipped = false;
        for event in &batch {
            if !hook.wants(event) {
                cursor = event.seq + 1;
                skipped = true;
                continue;
            }
            if skipped {
                skipped = false;
                if let Err(e) = store.advance_hook_cursor(id, cursor) {
                    warn!(error = %e, "cannot store the hook's cursor");
                }
            }
            match deliver(&ctx, &hook, event).await {
                Some(DeliveryState::Disabled) | None => return,
                Some(_) => cursor = event.seq + 1,
            }
        }
        if skipped && let Err(e) = store.advance_hook_cursor(id, cursor) {
            warn!(error = %e, "cannot store the hook's cursor");
        }
    }
}

/// The post of `event` to `hook` under delivery id `id`.
fn make_post(hook: &Hook, id: &str, event: &Event, links: &SiteLinks) -> Post {
    let body = render(hook.format, id, event, links)
        .to_string()
        .into_bytes();
    Post {
        url: hook.url.clone(),
        event: event.kind.to_string(),
        delivery: id.to_owned(),
        signature: hook
            .secret
            .as_ref()
            .map(|s| signature::sign(s.as_bytes(), &body)),
        body,
    }
}

/// The state an answer leads to, with the error text to record.
fn judge(answer: &Answer) -> (DeliveryState, u16, String) {
    match answer {
        Answer::Status(s @ 200..=299) => (DeliveryState::Delivered, *s, String::new()),
        Answer::Status(410) => (
            DeliveryState::Disabled,
            410,
            "410 Gone: the hook is disabled".into(),
        ),
        Answer::Status(s @ (408 | 429 | 500..)) => {
            (DeliveryState::Pending, *s, format!("HTTP {s}; retrying"))
        }
        Answer::Status(s) => (
            DeliveryState::Failed,
            *s,
            format!("HTTP {s}: refused; not retried"),
        ),
        Answer::NoAnswer(e) => (DeliveryState::Pending, 0, e.clone()),
    }
}

/// Delivers one event to one hook: attempts until it is over, storing the record after each
/// attempt. Returns the final state, or `None` when the hook was removed meanwhile or the store
/// failed (the task then stops; the supervisor restarts it on the next event).
async fn deliver<X: Transport>(ctx: &Ctx<X>, hook: &Hook, event: &Event) -> Option<DeliveryState> {
    let store = &ctx.store;
    let id = delivery_id(hook.id, event.seq);
    let post = make_post(hook, &id, event, &ctx.links);
    let mut record = match store.get_delivery(hook.id, event.seq) {
        Ok(Some(d)) if d.state != DeliveryState::Pending => return Some(d.state),
        Ok(Some(d)) => d,
        Ok(None) => Delivery {
            id: id.clone(),
            hook_id: hook.id,
            event_seq: event.seq,
            event_type: event.kind.to_string(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: 0,
            last_error: String::new(),
            next_attempt_at: None,
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
        },
        Err(e) => {
            warn!(error = %e, "cannot read the delivery record");
            return None;
        }
    };
    // The age of the delivery: what it had when this process took it up, plus tokio's clock
    // since (so the paused clock of tests moves it too).
    let age_before = SystemTime::now()
        .duration_since(record.created_at)
        .unwrap_or_default();
    let taken_up = tokio::time::Instant::now();
    // Resuming after a restart: honour the wait that was scheduled.
    if let Some(due) = record.next_attempt_at
        && let Ok(wait) = due.duration_since(SystemTime::now())
    {
        tokio::time::sleep(wait.min(ctx.policy.cap)).await;
    }
    loop {
        let answer = ctx.transport.post(&post).await;
        let (mut state, status, error) = judge(&answer);
        record.attempts += 1;
        record.last_status = status;
        record.last_error = error;
        let now = SystemTime::now();
        record.updated_at = now;
        let mut wait = None;
        if state == DeliveryState::Pending {
            let age = age_before + taken_up.elapsed();
            if age >= ctx.policy.give_up_after {
                state = DeliveryState::Failed;
                record.last_error = format!(
                    "{}; gave up after {} attempts",
                    record.last_error, record.attempts
                );
            } else {
                let d = ctx.policy.delay(record.attempts);
                record.next_attempt_at = Some(now + d);
                wait = Some(d);
            }
        }
        if state != DeliveryState::Pending {
            record.next_attempt_at = None;
        }
        record.state = state;
        match store.record_delivery(&record) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                warn!(error = %e, delivery = %id, "cannot store the delivery record");
                return None;
            }
        }
        match wait {
            None => {
                info!(delivery = %id, event = %event.kind, state = state.as_str(), status, attempts = record.attempts, "delivery done");
                return Some(state);
            }
            Some(d) => {
                debug!(delivery = %id, error = %record.last_error, retry_in_ms = d.as_millis() as u64, "delivery failed; retrying");
                tokio::time::sleep(d).await;
            }
        }
    }
}

/// Sends a `ping` to `hook` now, once, outside the event log, and returns what happened. A 410
/// disables the hook as a delivery would.
pub async fn test_hook<X: Transport>(
    store: &MetaStore,
    transport: &X,
    links: &SiteLinks,
    hook: &Hook,
) -> Result<Delivery, opus_core::error::StoreError> {
    let now = SystemTime::now();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let id = format!("{}-ping-{nanos}", hook.id);
    let event = Event {
        seq: 0,
        time: now,
        kind: EventKind::Ping,
        project: hook.project.clone(),
        payload: serde_json::json!({ "hook": hook.id, "zen": "Deploys are atomic; rollbacks are instant." }),
    };
    let post = make_post(hook, &id, &event, links);
    let answer = transport.post(&post).await;
    let (state, status, mut error) = judge(&answer);
    // A ping is tried once: what a delivery would retry has failed.
    let state = match state {
        DeliveryState::Pending => {
            if let Some(cut) = error.strip_suffix("; retrying") {
                error = cut.to_owned();
            }
            DeliveryState::Failed
        }
        s => s,
    };
    let record = Delivery {
        id,
        hook_id: hook.id,
        event_seq: 0,
        event_type: "ping".into(),
        state,
        attempts: 1,
        last_status: status,
        last_error: error,
        next_attempt_at: None,
        created_at: now,
        updated_at: SystemTime::now(),
    };
    store.record_delivery(&record)?;
    Ok(record)
}

#[cfg(test)]
mod tests;
