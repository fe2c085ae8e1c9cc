//! GitHub's side of opusd: commit statuses for every build GitHub triggered, and GitHub
//! Deployments for every deploy of a version such a build made, sent through a durable outbox.
//!
//! The outbox is the event log: a build's state change and its event are one sled transaction, so
//! the status an event makes (`status::status_for`) is stored as soon as its cause is. One task
//! reads the events from the persisted cursor ([`MetaStore::github_status_cursor`]) and sends
//! their statuses one after the other, so the statuses of a commit arrive in the order of its
//! events. After each attempt the status's record ([`StatusDelivery`], listed by
//! `opus github deliveries`) is stored; once it is over the cursor moves past its event in the
//! same transaction, so after a crash the status in flight is sent again, and none is lost.
//!
//! Answers ([`client::judge`]): 2xx delivered; 5xx, 408, 429, a rate-limited 403 and no answer
//! retry with the hooks' capped exponential backoff, never sooner than GitHub's `Retry-After` or
//! `x-ratelimit-reset`; other 4xx fail at once. Without a token (`opus github connect`) a status
//! fails saying so.
//!
//! With a GitHub App (`app`), the calls for a project of an installation go with that
//! installation's token (kept until shortly before it expires); a 401 to one drops the token and
//! the call is made once more with a new one. The same token is git's credential for the
//! project's clones (`askpass`).
//!
//! An environment event (deploy, rollback, removal) makes several calls (`deployment`): one
//! record whose progress (the calls made, the deployment id GitHub answered) is stored after
//! each call, so a restart goes on with the call not answered, and the environment's deployment
//! id survives it for the next deploy or removal to mark inactive. A pull request's preview
//! whose base opus.yml asks for it ends with its one comment made or edited (`comment`).

pub mod app;
pub mod askpass;
pub mod client;
mod comment;
mod deployment;
mod status;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opus_core::artifact::ArtifactStore;
use opus_core::forge::StatusDelivery;
use opus_core::hook::DeliveryState;
use opus_core::model::{Event, ProjectName};
use opus_core::store::MetaStore;
use tokio::task::JoinHandle;
use tracing::{Instrument, info_span, warn};

pub use client::{Client, GithubError, Verdict};

use crate::config::PublicUrl;
use crate::hooks::RetryPolicy;
use crate::sites::SiteServer;
use app::InstallationTokens;
use deployment::Step;

/// What the outbox needs.
struct Ctx {
    store: MetaStore,
    /// GitHub's REST API, without a trailing `/`.
    api: String,
    /// How failed attempts are retried (the hooks' policy).
    policy: RetryPolicy,
    /// Where status links point.
    public_url: Option<PublicUrl>,
    /// Names the environments' URLs (deployments' `environment_url`).
    sites: Arc<SiteServer>,
    /// The GitHub App's installation tokens, when opusd is one.
    app: Option<Arc<InstallationTokens>>,
    /// The versions' manifests, which a pull request's comment compares.
    artifacts: ArtifactStore,
}

/// The running outbox; stopped when dropped.
pub struct StatusOutbox {
    task: JoinHandle<()>,
}

impl StatusOutbox {
    /// Starts sending the statuses and deployments of events from the stored cursor on.
    pub fn start(
        store: MetaStore,
        api: String,
        policy: RetryPolicy,
        public_url: Option<PublicUrl>,
        sites: Arc<SiteServer>,
        app: Option<Arc<InstallationTokens>>,
        artifacts: ArtifactStore,
    ) -> StatusOutbox {
        // Before any request can queue a build: no event of this run may fall before the cursor.
        if let Err(e) = store.init_github_status_cursor() {
            warn!(error = %e, "cannot start the outbox's cursor; it reads the event log from its start");
        }
        let ctx = Arc::new(Ctx {
            store,
            api,
            policy,
            public_url,
            sites,
            app,
            artifacts,
        });
        let task = tokio::spawn(run(ctx).instrument(info_span!("github")));
        StatusOutbox { task }
    }

    /// Stops it; a status in flight is sent again by the next start.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for StatusOutbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads events from the cursor and sends their statuses, waiting for new events at the end.
async fn run(ctx: Arc<Ctx>) {
    let store = &ctx.store;
    let mut changes = store.subscribe_events();
    loop {
        let batch = match store
            .github_status_cursor()
            .and_then(|cursor| store.events_from(cursor, 256))
        {
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
        let mut passed = None;
        for event in &batch {
            match status_of(&ctx, event) {
                Some(record) => {
                    if let Some(next) = passed.take()
                        && let Err(e) = store.advance_github_status_cursor(next)
                    {
                        warn!(error = %e, "cannot store the outbox's cursor");
                    }
                    send(&ctx, record).await;
                }
                None => passed = Some(event.seq + 1),
            }
        }
        if let Some(next) = passed
            && let Err(e) = store.advance_github_status_cursor(next)
        {
            warn!(error = %e, "cannot store the outbox's cursor");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The record of the status or deployment calls `event` makes: the stored one when it was
/// attempted before (a restart), else a new one; none when the event makes no call.
fn status_of(ctx: &Ctx, event: &Event) -> Option<StatusDelivery> {
    if status::build_state(event).is_none() {
        if let Ok(Some(record)) = ctx.store.github_status(event.seq) {
            return Some(record);
        }
        return deployment::record_for(&ctx.store, event, |project, env| {
            ctx.sites.url(project, env)
        });
    }
    if let Ok(Some(record)) = ctx.store.github_status(event.seq) {
        return Some(record);
    }
    let project = ProjectName::new(event.project.as_str()).ok()?;
    let number = event.payload["number"].as_u64()?;
    let build = ctx.store.build_by_number(&project, number).ok()?;
    let status = status::status_for(event, &build, ctx.public_url.as_ref())?;
    Some(status.record(event.seq, &event.project, number))
}

/// Sends one status (or a deploy's calls, one after the other) until it is over (delivered or
/// failed), storing its record after each attempt.
async fn send(ctx: &Ctx, mut record: StatusDelivery) {
    if record.delivery != DeliveryState::Pending {
        // Over before a crash that came before the cursor moved: move it now.
        save(&ctx.store, &record).await;
        return;
    }
    let age_before = SystemTime::now()
        .duration_since(record.created_at)
        .unwrap_or_default();
    let taken_up = tokio::time::Instant::now();
    if let Some(due) = record.next_attempt_at
        && let Ok(wait) = due.duration_since(SystemTime::now())
    {
        tokio::time::sleep(wait.min(ctx.policy.cap)).await;
    }
    let status = status::Status {
        commit: record.commit.clone(),
        state: match record.state.as_str() {
            "success" => "success",
            "failure" => "failure",
            "error" => "error",
            _ => "pending",
        },
        description: record.description.clone(),
        target_url: record.target_url.clone(),
    };
    loop {
        let (verdict, created) = attempt_with_credential(ctx, &record, &status).await;
        record.attempts += 1;
        let now = SystemTime::now();
        record.updated_at = now;
        record.next_attempt_at = None;
        let wait = match verdict {
            Verdict::Delivered(code) => {
                record.last_status = code;
                record.last_error = String::new();
                if let Some(next) = record.deployment.as_mut().and_then(|calls| {
                    match (deployment::next_step(calls), calls.comment.as_mut()) {
                        (Some(Step::Comment), Some(comment)) => {
                            comment.id = comment.id.or(created);
                        }
                        _ => calls.created = calls.created.or(created),
                    }
                    calls.done += 1;
                    deployment::next_step(calls)
                }) {
                    // The deploy's next call, at once.
                    record.state = next.name().to_owned();
                    save(&ctx.store, &record).await;
                    continue;
                }
                record.delivery = DeliveryState::Delivered;
                None
            }
            Verdict::Refused(code, error) => {
                record.delivery = DeliveryState::Failed;
                record.last_status = code;
                record.last_error = error;
                None
            }
            Verdict::Retry {
                status,
                error,
                at_least,
            } => {
                record.last_status = status;
                record.last_error = error;
                if age_before + taken_up.elapsed() >= ctx.policy.give_up_after {
                    record.delivery = DeliveryState::Failed;
                    record.last_error = format!(
                        "{}; gave up after {} attempts",
                        record.last_error, record.attempts
                    );
                    None
                } else {
                    let backoff = ctx.policy.delay(record.attempts);
                    let wait = at_least.map_or(backoff, |least| least.max(backoff));
                    record.next_attempt_at = Some(now + wait);
                    Some(wait)
                }
            }
        };
        save(&ctx.store, &record).await;
        match wait {
            Some(wait) => {
                warn!(
                    build = record.build,
                    status = record.last_status,
                    error = %record.last_error,
                    wait_ms = wait.as_millis() as u64,
                    "commit status not accepted; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            None => return,
        }
    }
}

/// What a record's calls authenticate with.
enum Credential {
    /// The token of the installation (the id) the record's project belongs to.
    Installation(u64, String),
    /// The token `opus github connect` stored.
    Token(String),
}

impl Credential {
    fn token(&self) -> &str {
        match self {
            Credential::Installation(_, token) | Credential::Token(token) => token,
        }
    }
}

/// The credential for `project`'s calls: its installation's token when opusd is a GitHub App
/// and the project belongs to an installation, else the stored token; a verdict when there is
/// none (refused) or GitHub would not give one (judged as its answer).
async fn credential(ctx: &Ctx, project: &str) -> Result<Credential, Verdict> {
    let installation = ProjectName::new(project)
        .ok()
        .and_then(|name| ctx.store.github_installation(&name).ok().flatten());
    if let (Some(tokens), Some(id)) = (&ctx.app, installation) {
        return match tokens.token(id).await {
            Ok(token) => Ok(Credential::Installation(id, token)),
            Err(e) => Err(token_refused(&e)),
        };
    }
    match ctx.store.github_token() {
        Ok(Some(token)) => Ok(Credential::Token(token)),
        Ok(None) => Err(Verdict::Refused(
            0,
            "no GitHub token: run `opus github connect --token-file FILE`, or configure a GitHub \
             App (--github-app-id, --github-app-key-file) installed on the repository"
                .into(),
        )),
        Err(e) => Err(Verdict::Retry {
            status: 0,
            error: e.to_string(),
            at_least: None,
        }),
    }
}

/// How a call whose installation token could not be had is judged: as GitHub's answer to the
/// token request (a 5xx or no answer is retried; 404, an installation that is not the App's,
/// is not).
fn token_refused(e: &app::AppError) -> Verdict {
    match e.status() {
        0 | 408 | 429 | 500.. => Verdict::Retry {
            status: e.status(),
            error: e.to_string(),
            at_least: None,
        },
        status => Verdict::Refused(status, e.to_string()),
    }
}

/// One attempt of `record`'s call with its credential; when GitHub refuses an installation
/// token (401: expired or revoked), the token is dropped and the call made once more with a new
/// one.
async fn attempt_with_credential(
    ctx: &Ctx,
    record: &StatusDelivery,
    status: &status::Status,
) -> (Verdict, Option<u64>) {
    let once = |credential: Credential| async move {
        let outcome = match Client::new(&ctx.api, credential.token(), ctx.policy.timeout) {
            Ok(client) => attempt(ctx, &client, record, status).await,
            Err(e) => (Verdict::Refused(0, e.to_string()), None),
        };
        (outcome, credential)
    };
    let first = match credential(ctx, &record.project).await {
        Ok(credential) => credential,
        Err(verdict) => return (verdict, None),
    };
    let (outcome, used) = once(first).await;
    let (Verdict::Refused(401, _), Credential::Installation(id, token), Some(tokens)) =
        (&outcome.0, &used, &ctx.app)
    else {
        return outcome;
    };
    warn!(
        installation = id,
        project = %record.project,
        "GitHub refused the installation token (401); retrying once with a new one"
    );
    tokens.forget(*id, token);
    match credential(ctx, &record.project).await {
        Ok(credential) => once(credential).await.0,
        Err(verdict) => (verdict, None),
    }
}

/// Makes the call `record` stands at: its commit status, or its deploy's next call. A
/// created deployment's (or comment's) id comes back with the verdict.
async fn attempt(
    ctx: &Ctx,
    client: &Client,
    record: &StatusDelivery,
    status: &status::Status,
) -> (Verdict, Option<u64>) {
    let Some(calls) = &record.deployment else {
        return (client.create_status(&record.project, status).await, None);
    };
    match deployment::next_step(calls) {
        Some(Step::Create) => {
            client
                .create_deployment(
                    &record.commit.repository,
                    &record.commit.sha,
                    &calls.environment,
                    calls.transient,
                )
                .await
        }
        Some(Step::Status { on, state }) => match deployment::target(record, on) {
            Some(target) => {
                let url = (state == "success")
                    .then_some(calls.environment_url.as_deref())
                    .flatten();
                let verdict = client
                    .create_deployment_status(&target.commit.repository, target.id, state, url)
                    .await;
                (verdict, None)
            }
            None => (
                Verdict::Refused(0, "no deployment id to send the status to".into()),
                None,
            ),
        },
        Some(Step::Comment) => match &calls.comment {
            Some(comment) => {
                comment::send(
                    client,
                    &ctx.store,
                    &ctx.artifacts,
                    record,
                    comment,
                    calls.environment_url.as_deref(),
                )
                .await
            }
            None => (Verdict::Delivered(0), None),
        },
        None => (Verdict::Delivered(0), None),
    }
}

/// Stores a record, retrying while the store refuses (a full disk): the cursor must not move
/// past a status whose outcome is not kept.
async fn save(store: &MetaStore, record: &StatusDelivery) {
    while let Err(e) = store.record_github_status(record) {
        warn!(error = %e, "cannot store a commit status's record; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_github_would_not_give_is_retried_only_when_github_failed() {
        let refused = |status| app::AppError::Call {
            call: "POST /app/installations/7/access_tokens".into(),
            status,
            detail: format!("HTTP {status}"),
        };
        assert!(matches!(
            token_refused(&refused(502)),
            Verdict::Retry { status: 502, .. }
        ));
        assert!(matches!(
            token_refused(&refused(0)),
            Verdict::Retry { status: 0, .. }
        ));
        match token_refused(&refused(404)) {
            Verdict::Refused(404, why) => assert!(why.contains("/app/installations/7"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
