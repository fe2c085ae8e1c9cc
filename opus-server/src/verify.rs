//! Verification after a deploy (opus.yml `environments.<env>.verify: { checks: [smoke], for:
//! 2m, every: 10s }`): after every deploy to such an environment, automatic or by hand, the
//! named checks run against the environment's URL at once and then every `every` until `for`
//! has passed; the first failure rolls the environment back at once (to the release before,
//! pinned, as `opus rollback` does) with a `deploy.rolled_back` event saying why.
//!
//! [`Verifier::watch`] follows the event log from where it stands when opusd starts: each
//! `environment.deployed` event of an environment that has a verify policy (kept by the gate of
//! the latest build of its branch: `crate::build::gate`) starts a window. A window ends early
//! when the environment moves on (a newer release gets its own window) and is abandoned, with a
//! log line, when opusd stops: after a restart, deploys made before it are not verified again.
//! Shell checks run in `<data-dir>/verify/<project>-<env>-<release>`, whose processes a restart
//! kills ([`crate::process_tree::kill_leftovers`]) before it removes the folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opus_core::model::{EnvName, Event, EventKind, ProjectName};
use opus_core::recipe::checks::VerifyPolicy;
use opus_core::store::{MetaStore, VerifyFailure};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::build::steps::LogSink;
use crate::checks::{CheckOutcome, CheckPlace, run_check};
use crate::deploys::Deployer;
use crate::process_tree::Containment;

/// How many events one read of the log takes.
const EVENTS_PER_READ: usize = 256;

/// Starts a verification window for each deploy to an environment that asks for one.
#[derive(Clone)]
pub struct Verifier {
    store: MetaStore,
    deployer: Deployer,
    /// `<data-dir>/verify`: one folder per window, where shell checks start.
    dir: PathBuf,
}

/// One deploy to verify, from its `environment.deployed` event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Deployed {
    project: ProjectName,
    env: EnvName,
    version: String,
    release: u64,
}

impl Deployed {
    /// The deploy an event describes, when it is a deploy (not a rollback or anything else).
    fn from_event(event: &Event) -> Option<Deployed> {
        if event.kind != EventKind::EnvironmentDeployed {
            return None;
        }
        let p = &event.payload;
        Some(Deployed {
            project: ProjectName::new(p["project"].as_str()?.to_owned()).ok()?,
            env: EnvName::new(p["env"].as_str()?.to_owned()).ok()?,
            version: p["version"].as_str()?.to_owned(),
            release: p["seq"].as_u64()?,
        })
    }
}

impl Verifier {
    /// A verifier whose shell checks start in folders below `dir`. What the checks of an opusd
    /// killed during a window left running is ended here, and their folders removed.
    pub fn new(store: MetaStore, deployer: Deployer, dir: PathBuf) -> Verifier {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let killed = crate::process_tree::kill_leftovers(&entry.path());
                if killed > 0 {
                    warn!(dir = %entry.path().display(), killed, "ended the processes of a verification opusd left running");
                }
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Verifier {
            store,
            deployer,
            dir,
        }
    }

    /// Follows the event log from its current end and verifies each deploy that asks for it,
    /// until `shutdown`, which abandons the windows still open; returns once they have ended
    /// (their checks' processes with them).
    pub async fn watch(self, shutdown: CancellationToken) {
        let windows = TaskTracker::new();
        self.follow(&windows, &shutdown).await;
        windows.close();
        windows.wait().await;
    }

    /// Reads the event log and starts windows until `shutdown`.
    async fn follow(&self, windows: &TaskTracker, shutdown: &CancellationToken) {
        let mut changes = self.store.subscribe_events();
        let mut next = self.store.last_event_seq() + 1;
        loop {
            let events = match self.store.events_from(next, EVENTS_PER_READ) {
                Ok(events) => events,
                Err(e) => {
                    warn!(error = %e, "verify: cannot read the event log");
                    Vec::new()
                }
            };
            for event in &events {
                next = event.seq + 1;
                if let Some(deployed) = Deployed::from_event(event) {
                    self.consider(deployed, windows, shutdown);
                }
            }
            if events.len() == EVENTS_PER_READ {
                continue;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Starts the window of `deployed` when its environment has a verify policy.
    fn consider(&self, deployed: Deployed, windows: &TaskTracker, shutdown: &CancellationToken) {
        let policy = match self
            .store
            .verify_policy(deployed.project.as_str(), deployed.env.as_str())
        {
            Ok(Some(policy)) if !policy.checks.is_empty() => policy,
            Ok(_) => return,
            Err(e) => {
                warn!(project = %deployed.project, env = %deployed.env, error = %e, "verify: cannot read the policy; the deploy is not verified");
                return;
            }
        };
        let span = info_span!("verify", project = %deployed.project, env = %deployed.env, version = %deployed.version, release = deployed.release);
        let verifier = self.clone();
        let shutdown = shutdown.clone();
        windows.spawn(
            async move { verifier.window(&deployed, &policy, &shutdown).await }.instrument(span),
        );
    }

    /// Runs the policy's checks against the environment until the window passes, one fails
    /// (rollback), the environment moves on, or opusd stops.
    async fn window(
        &self,
        deployed: &Deployed,
        policy: &VerifyPolicy,
        shutdown: &CancellationToken,
    ) {
        let url = self
            .deployer
            .sites()
            .url(deployed.project.as_str(), deployed.env.as_str());
        let dir = self.dir.join(format!(
            "{}-{}-{}",
            deployed.project, deployed.env, deployed.release
        ));
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            warn!(dir = %dir.display(), error = %e, "verify: cannot create the checks' folder; the deploy is not verified");
            return;
        }
        info!(url = %url, window = %humantime::format_duration(policy.window), every = %humantime::format_duration(policy.every), "verifying the deploy");
        let end = Instant::now() + policy.window;
        let ended = self
            .rounds(deployed, policy, &url, &dir, end, shutdown)
            .await;
        match ended {
            WindowEnd::Passed => info!("deploy verified: every check passed for the whole window"),
            WindowEnd::MovedOn => info!("verification ended: the environment has a newer release"),
            WindowEnd::Stopping => {
                info!("verification abandoned: opusd is stopping (a restart does not resume it)")
            }
            WindowEnd::Failed(failure) => self.roll_back(deployed, &failure).await,
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }

    /// The rounds of checks of one window.
    async fn rounds(
        &self,
        deployed: &Deployed,
        policy: &VerifyPolicy,
        url: &str,
        dir: &Path,
        end: Instant,
        shutdown: &CancellationToken,
    ) -> WindowEnd {
        let env = BTreeMap::from([
            ("OPUS_PROJECT".to_owned(), deployed.project.to_string()),
            ("OPUS_ENV".to_owned(), deployed.env.to_string()),
            ("OPUS_VERSION".to_owned(), deployed.version.clone()),
        ]);
        let place = CheckPlace {
            dir,
            containment: Containment::Sweep,
            env: &env,
        };
        let log = TracingLog;
        loop {
            match self.store.environment(&deployed.project, &deployed.env) {
                Ok(record) if record.current.seq == deployed.release => {}
                _ => return WindowEnd::MovedOn,
            }
            for check in &policy.checks {
                match run_check(check, url, &place, &log, shutdown).await {
                    CheckOutcome::Passed => {}
                    CheckOutcome::Cancelled => return WindowEnd::Stopping,
                    // A check that failed as opusd stops may have failed for that (the site
                    // server stopping): nothing is rolled back.
                    CheckOutcome::Failed { .. } if shutdown.is_cancelled() => {
                        return WindowEnd::Stopping;
                    }
                    CheckOutcome::Failed { reason, output } => {
                        return WindowEnd::Failed(VerifyFailure {
                            release: deployed.release,
                            version: deployed.version.clone(),
                            check: check.name.clone(),
                            reason,
                            output,
                        });
                    }
                }
            }
            let now = Instant::now();
            if now >= end {
                return WindowEnd::Passed;
            }
            let pause = policy.every.min(end - now).max(Duration::from_millis(1));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return WindowEnd::Stopping,
            }
        }
    }

    /// Rolls the environment back after `failure`.
    async fn roll_back(&self, deployed: &Deployed, failure: &VerifyFailure) {
        let actor = format!("verify: check {} failed", failure.check);
        match self
            .deployer
            .rollback_after_verify(&deployed.project, &deployed.env, &actor, failure)
            .await
        {
            Ok(Some(record)) => warn!(
                check = %failure.check,
                reason = %failure.reason,
                to = %record.current.version,
                "verification failed: rolled back and pinned"
            ),
            Ok(None) => {
                info!(check = %failure.check, "verification failed, but the environment has a newer release already: nothing rolled back")
            }
            Err(e) => {
                warn!(check = %failure.check, reason = %failure.reason, error = %e, "verification failed and the rollback could not be made")
            }
        }
    }
}

/// How a window ended.
enum WindowEnd {
    /// Every round passed until the end.
    Passed,
    /// The environment got another release.
    MovedOn,
    /// opusd is stopping.
    Stopping,
    /// A check failed.
    Failed(VerifyFailure),
}

/// Where a verification's check lines go: opusd's own log (there is no build log to write to).
#[derive(Clone)]
struct TracingLog;

impl LogSink for TracingLog {
    fn line(&self, step: &str, stream: &str, text: &str) {
        tracing::debug!(step, stream, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn event(kind: EventKind, payload: serde_json::Value) -> Event {
        Event {
            seq: 7,
            time: SystemTime::now(),
            kind,
            project: "web".into(),
            payload,
        }
    }

    #[test]
    fn only_deploys_start_a_window() {
        let payload = serde_json::json!({
            "project": "web", "env": "production", "version": "1.0.3", "seq": 4,
            "reason": "deploy", "actor": "api", "pinned": false, "preview": false,
        });
        assert_eq!(
            Deployed::from_event(&event(EventKind::EnvironmentDeployed, payload.clone())),
            Some(Deployed {
                project: ProjectName::new("web").expect("name"),
                env: EnvName::new("production").expect("name"),
                version: "1.0.3".into(),
                release: 4,
            })
        );
        // A rollback (by hand, or by a verification) is not verified again.
        assert_eq!(
            Deployed::from_event(&event(EventKind::EnvironmentRolledBack, payload.clone())),
            None
        );
        let mut broken = payload;
        broken["seq"] = serde_json::json!("four");
        assert_eq!(
            Deployed::from_event(&event(EventKind::EnvironmentDeployed, broken)),
            None
        );
    }
}
