//! [`DnsRoutes`]: the durable outbox of DNS changes. It reads the event log from its persisted
//! cursor ([`MetaStore::dns_cursor`]) and, one change after the other (so a name's removal never
//! overtakes its creation):
//!
//! - `domain.added` makes the domain's record; `domain.removed` deletes it;
//! - `environment.deployed` / `environment.rolled_back` make the environment host's record
//!   (`<env>--<project>.<domain>`, `<project>.<domain>` for production) unless Opus made it
//!   already; `environment.removed` / `preview.expired` delete it;
//! - `project.removed` deletes every record Opus made for the project.
//!
//! Each change ([`DnsChange`]) is stored after every attempt: an outage (no answer, 5xx, 429) is
//! retried with the hooks' capped exponential backoff until their retry period ends; a refusal
//! fails at once; a name with a record Opus did not make is left alone, with the reason (`opus
//! domain list` shows it). The cursor moves past an event once all its changes are over, so a
//! crash or an outage loses no change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opus_core::dns::{DnsAction, DnsChange, DnsChangeState};
use opus_core::model::{Event, EventKind};
use opus_core::store::MetaStore;
use tokio::task::JoinHandle;
use tracing::{Instrument, info_span, warn};

use super::{Cloudflare, Outcome};
use crate::hooks::RetryPolicy;

/// One change an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    name: String,
    owner: String,
    action: DnsAction,
}

struct Ctx {
    store: MetaStore,
    cloudflare: Arc<Cloudflare>,
    policy: RetryPolicy,
    /// The sites' `--domain`, under which environment hosts are named.
    domain: String,
}

/// The running outbox; stopped when dropped.
pub struct DnsRoutes {
    task: JoinHandle<()>,
}

impl DnsRoutes {
    /// Starts making the DNS changes of events from the stored cursor on (after the newest event
    /// at the very first start).
    pub fn start(
        store: MetaStore,
        cloudflare: Arc<Cloudflare>,
        policy: RetryPolicy,
        domain: String,
    ) -> DnsRoutes {
        if let Err(e) = store.init_dns_cursor() {
            warn!(error = %e, "cannot start the DNS outbox's cursor; it reads the event log from its start");
        }
        let ctx = Arc::new(Ctx {
            store,
            cloudflare,
            policy,
            domain,
        });
        DnsRoutes {
            task: tokio::spawn(run(ctx).instrument(info_span!("dns"))),
        }
    }
}

impl Drop for DnsRoutes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads events from the cursor and makes their changes, waiting for new events at the end.
async fn run(ctx: Arc<Ctx>) {
    let store = &ctx.store;
    let mut changes = store.subscribe_events();
    loop {
        let batch = match store.dns_cursor().and_then(|c| store.events_from(c, 256)) {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %e, "cannot read the event log; trying again on the next event");
                Vec::new()
            }
        };
        if batch.is_empty() {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        for event in &batch {
            for wanted in wanted_by(&ctx, event) {
                make(&ctx, event.seq, &wanted).await;
            }
            while let Err(e) = store.advance_dns_cursor(event.seq + 1) {
                warn!(error = %e, "cannot store the DNS outbox's cursor; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The host of `project`'s environment `env` under the sites' domain.
fn env_host(ctx: &Ctx, project: &str, env: &str) -> String {
    crate::sites::host_of(project, env, &ctx.domain)
}

/// The changes `event` asks for (none for most events).
fn wanted_by(ctx: &Ctx, event: &Event) -> Vec<Wanted> {
    let project = event.project.as_str();
    let text = |key: &str| event.payload[key].as_str().unwrap_or_default().to_owned();
    let one = |name: String, env: &str, action| {
        if name.is_empty() {
            return Vec::new();
        }
        vec![Wanted {
            name,
            owner: format!("{project}/{env}"),
            action,
        }]
    };
    match event.kind {
        EventKind::DomainAdded => one(text("domain"), &text("environment"), DnsAction::Create),
        EventKind::DomainRemoved => one(text("domain"), &text("environment"), DnsAction::Delete),
        EventKind::EnvironmentDeployed | EventKind::EnvironmentRolledBack => {
            if !ctx.cloudflare.routes_names() {
                return Vec::new();
            }
            let env = text("env");
            let host = env_host(ctx, project, &env);
            // A record Opus made already, and a change of this event already begun, need no new one.
            let routed = matches!(
                ctx.store.dns_status(&host),
                Ok(Some(c)) if c.action == DnsAction::Create && c.state == DnsChangeState::Done && c.event_seq != event.seq
            );
            if routed {
                return Vec::new();
            }
            one(host, &env, DnsAction::Create)
        }
        EventKind::EnvironmentRemoved | EventKind::PreviewExpired => {
            let env = text("env");
            one(env_host(ctx, project, &env), &env, DnsAction::Delete)
        }
        EventKind::ProjectRemoved => {
            let names = ctx.store.dns_names().unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the DNS names of a removed project");
                Vec::new()
            });
            names
                .into_iter()
                .filter(|c| {
                    c.project() == project
                        && (c.event_seq == event.seq
                            || (c.action == DnsAction::Create && c.state == DnsChangeState::Done))
                })
                .map(|c| Wanted {
                    name: c.name,
                    owner: c.owner,
                    action: DnsAction::Delete,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Makes one change until it is over, storing its record after every attempt; a change over
/// before a restart is not made again.
async fn make(ctx: &Ctx, seq: u64, wanted: &Wanted) {
    let now = SystemTime::now();
    let mut change = match ctx.store.dns_change(seq, &wanted.name) {
        Ok(Some(c)) => c,
        _ => DnsChange {
            event_seq: seq,
            name: wanted.name.clone(),
            owner: wanted.owner.clone(),
            action: wanted.action,
            state: DnsChangeState::Pending,
            attempts: 0,
            last_error: String::new(),
            next_attempt_at: None,
            created_at: now,
            updated_at: now,
        },
    };
    let span = info_span!("dns_change", name = %change.name, action = change.action.as_str());
    async {
        while change.state == DnsChangeState::Pending {
            if let Some(due) = change.next_attempt_at
                && let Ok(wait) = due.duration_since(SystemTime::now())
            {
                tokio::time::sleep(wait.min(ctx.policy.cap)).await;
            }
            let result = match change.action {
                DnsAction::Create => ctx.cloudflare.route(&change.name, &change.owner).await,
                DnsAction::Delete => ctx.cloudflare.unroute(&change.name).await,
            };
            let now = SystemTime::now();
            change.attempts += 1;
            change.updated_at = now;
            change.next_attempt_at = None;
            match result {
                Ok(Outcome::Done) => {
                    change.state = DnsChangeState::Done;
                    change.last_error.clear();
                }
                Ok(Outcome::LeftAlone(why)) => {
                    warn!(reason = %why, "DNS record left alone");
                    change.state = DnsChangeState::LeftAlone;
                    change.last_error = why;
                }
                Err(e) => {
                    change.last_error = e.to_string();
                    let age = now.duration_since(change.created_at).unwrap_or_default();
                    if !e.is_retryable() {
                        change.state = DnsChangeState::Failed;
                    } else if age >= ctx.policy.give_up_after {
                        change.state = DnsChangeState::Failed;
                        change.last_error =
                            format!("{e}; gave up after {} attempts", change.attempts);
                    } else {
                        let wait = ctx.policy.delay(change.attempts);
                        change.next_attempt_at = Some(now + wait);
                        warn!(error = %e, wait_ms = wait.as_millis() as u64, "Cloudflare call failed; retrying");
                    }
                    if change.state == DnsChangeState::Failed {
                        warn!(error = %change.last_error, "DNS change failed");
                    }
                }
            }
            while let Err(e) = ctx.store.record_dns_change(&change) {
                warn!(error = %e, "cannot store a DNS change; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    .instrument(span)
    .await;
}
