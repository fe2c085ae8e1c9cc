//! `on: { schedule: "0 3 * * *" }`: every [`SWEEP_EVERY`], a build of the default branch for
//! each project whose cron expression (UTC) came due since its last scheduled run.
//!
//! The last run is stored with the project's triggers and committed with the build it started
//! (`TriggerMark::Scheduled`), so a restart neither repeats a run nor loses one; runs missed
//! while opusd was down come due together on the first sweep after start, and run once.
//!
//! The wall clock is injected ([`Clock`]): cron times are wall-clock times, so a test moves a
//! fake wall clock while tokio's paused clock drives the sweeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opus_core::model::{Build, Trigger};
use opus_core::store::{MetaStore, TriggerMark};
use tokio_util::sync::CancellationToken;

pub use crate::preview_expiry::{Clock, system_clock};

use super::Starter;

/// How often the sweep looks: a run starts within a second of its time.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Starts a build of every project whose schedule came due by `now`; returns them. A project
/// whose build cannot be queued is logged and comes due again on the next sweep (its last run
/// was not recorded).
pub fn sweep(store: &MetaStore, starter: &dyn Starter, now: SystemTime) -> Vec<Build> {
    let projects = match store.all_triggers() {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "schedule: cannot read the projects' triggers");
            return Vec::new();
        }
    };
    let mut started = Vec::new();
    for (project, triggers) in projects {
        let Some(schedule) = &triggers.spec.schedule else {
            continue;
        };
        let last = triggers.last_scheduled.unwrap_or(triggers.recorded_at);
        let Some(due) = schedule.due(last, now) else {
            continue;
        };
        match starter.start(&project, Trigger::Schedule, TriggerMark::Scheduled(now)) {
            Ok(build) => {
                tracing::info!(
                    project = %project,
                    build = build.number,
                    schedule = %schedule,
                    due = %humantime::format_rfc3339_seconds(due),
                    "scheduled build queued"
                );
                started.push(build);
            }
            Err(e) => {
                tracing::warn!(project = %project, schedule = %schedule, error = %e, "schedule: cannot queue the build; trying again on the next sweep")
            }
        }
    }
    started
}

/// Sweeps every `every` until `shutdown` is cancelled.
pub async fn watch(
    store: MetaStore,
    starter: Arc<dyn Starter>,
    every: Duration,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        sweep(&store, starter.as_ref(), clock());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::triggers::tests::{Recorder, scheduled, store_with};

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).expect("time")
    }

    #[tokio::test(start_paused = true)]
    async fn a_daily_schedule_builds_once_at_its_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(
            dir.path(),
            "{ schedule: \"0 3 * * *\" }",
            at("2026-01-01T02:00:00Z"),
        );
        let wall = Arc::new(Mutex::new(at("2026-01-01T02:59:58Z")));
        let read = wall.clone();
        let clock: Clock = Arc::new(move || *read.lock().expect("clock"));
        let starter = Arc::new(Recorder {
            store: store.clone(),
            failing: AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            store.clone(),
            starter,
            SWEEP_EVERY,
            clock,
            stop.clone(),
        ));
        tokio::time::sleep(SWEEP_EVERY * 3).await;
        assert_eq!(scheduled(&store, Trigger::Schedule), 0, "not 03:00 yet");
        // Each sweep moves the wall clock one second: 03:00:00 comes, then a few more seconds.
        for _ in 0..5 {
            *wall.lock().expect("clock") += Duration::from_secs(1);
            tokio::time::sleep(SWEEP_EVERY).await;
        }
        assert_eq!(
            scheduled(&store, Trigger::Schedule),
            1,
            "one build at 03:00"
        );
        // The next day's 03:00 makes the second.
        *wall.lock().expect("clock") = at("2026-01-02T03:00:00Z");
        tokio::time::sleep(SWEEP_EVERY * 3).await;
        assert_eq!(scheduled(&store, Trigger::Schedule), 2);
        stop.cancel();
        task.await.expect("the sweep ends on shutdown");
    }

    #[test]
    fn runs_missed_while_down_run_once_and_a_restart_does_not_repeat_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = at("2026-01-01T02:00:00Z");
        {
            let store = store_with(dir.path(), "{ schedule: \"0 3 * * *\" }", stored);
            let starter = Recorder {
                store: store.clone(),
                failing: AtomicBool::new(false),
            };
            // Down for three days: the first sweep after start runs one build.
            let back = at("2026-01-04T12:00:00Z");
            assert_eq!(sweep(&store, &starter, back).len(), 1);
            assert!(sweep(&store, &starter, back + Duration::from_secs(1)).is_empty());
        }
        // Another restart the same day: the run was recorded with the build.
        let store =
            MetaStore::open_waiting(&dir.path().join("meta"), std::time::Duration::from_secs(10))
                .expect("reopen");
        let starter = Recorder {
            store: store.clone(),
            failing: AtomicBool::new(false),
        };
        assert!(sweep(&store, &starter, at("2026-01-04T13:00:00Z")).is_empty());
        assert_eq!(sweep(&store, &starter, at("2026-01-05T03:00:00Z")).len(), 1);
        assert_eq!(scheduled(&store, Trigger::Schedule), 2);
    }

    #[test]
    fn a_build_that_cannot_be_queued_comes_due_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(
            dir.path(),
            "{ schedule: \"* * * * *\" }",
            at("2026-01-01T00:00:00Z"),
        );
        let starter = Recorder {
            store: store.clone(),
            failing: AtomicBool::new(true),
        };
        let now = at("2026-01-01T00:01:00Z");
        assert!(sweep(&store, &starter, now).is_empty(), "refused");
        starter.failing.store(false, Ordering::SeqCst);
        assert_eq!(
            sweep(&store, &starter, now).len(),
            1,
            "queued on the next sweep"
        );
        assert!(sweep(&store, &starter, now).is_empty());
    }
}
