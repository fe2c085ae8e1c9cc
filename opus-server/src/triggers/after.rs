//! `on: { after: { project: api, event: deploy, env: production } }`: another project's event
//! starts a build of this one (its default branch).
//!
//! Each project with an `after` trigger has its own cursor over the event log, stored with its
//! triggers (it starts at the event after the trigger was first stored). A matching event queues
//! a build, and the build and the cursor past that event commit in one transaction
//! (`TriggerMark::AfterCursor`); events that match nothing move the cursor on in one write after
//! each pass. So across a restart no event is missed and none starts a build twice.

use std::sync::Arc;
use std::time::Duration;

use opus_core::model::{Build, Trigger};
use opus_core::store::{MetaStore, TriggerMark};
use tokio_util::sync::CancellationToken;

use super::Starter;

/// Events read at a time.
const BATCH: usize = 256;

/// How soon a pass that could not queue a build (or read the log) is tried again, when no new
/// event wakes it sooner.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// The builds it queued.
    pub started: Vec<Build>,
    /// Whether something failed (a build not queued, the log not read): try again later.
    pub failed: bool,
}

/// Reads every `after` trigger's events from its cursor to the end of the log, queuing a build
/// for each matching event.
pub fn pass(store: &MetaStore, starter: &dyn Starter) -> Pass {
    let mut out = Pass::default();
    let projects = match store.all_triggers() {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "after: cannot read the projects' triggers");
            out.failed = true;
            return out;
        }
    };
    for (project, triggers) in projects {
        let Some(after) = &triggers.spec.after else {
            continue;
        };
        let mut cursor = triggers.after_cursor;
        // The cursor as the store has it: moved by each queued build.
        let mut stored = cursor;
        'events: loop {
            let batch = match store.events_from(cursor, BATCH) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(project = %project, error = %e, "after: cannot read the event log");
                    out.failed = true;
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            for event in &batch {
                if after.matches(event) {
                    let mark = TriggerMark::AfterCursor(event.seq + 1);
                    match starter.start(&project, Trigger::After, mark) {
                        Ok(build) => {
                            tracing::info!(
                                project = %project,
                                build = build.number,
                                after = %after.project,
                                event = %event.kind,
                                seq = event.seq,
                                "after-trigger build queued"
                            );
                            stored = event.seq + 1;
                            out.started.push(build);
                        }
                        Err(e) => {
                            tracing::warn!(project = %project, seq = event.seq, error = %e, "after: cannot queue the build; trying again");
                            out.failed = true;
                            break 'events;
                        }
                    }
                }
                cursor = event.seq + 1;
            }
        }
        if cursor > stored
            && !out.failed
            && let Err(e) = store.advance_after_cursor(&project, cursor)
        {
            tracing::warn!(project = %project, error = %e, "after: cannot store the cursor");
            out.failed = true;
        }
    }
    out
}

/// Runs a pass whenever events are committed (and [`RETRY_AFTER`] after a pass that failed),
/// until `shutdown` is cancelled.
pub async fn watch(store: MetaStore, starter: Arc<dyn Starter>, shutdown: CancellationToken) {
    let mut changes = store.subscribe_events();
    loop {
        let failed = pass(&store, starter.as_ref()).failed;
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY_AFTER).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            () = retry => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::SystemTime;

    use opus_core::model::{BuildState, ProjectName};

    use super::*;
    use crate::triggers::tests::{Recorder, scheduled, store_with};

    fn api() -> ProjectName {
        ProjectName::new("api").expect("name")
    }

    /// An event of `api` as the log has it: a build of api that succeeds.
    fn api_build_succeeds(store: &MetaStore) {
        let build = store
            .create_build(&opus_core::model::Build {
                trigger: Trigger::Cli,
                ..crate::triggers::tests::template(&api())
            })
            .expect("api build");
        store
            .update_build(build.id, |b| b.state = BuildState::Succeeded)
            .expect("succeeded");
    }

    #[test]
    fn each_matching_event_starts_one_build_and_a_restart_repeats_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = store_with(
                dir.path(),
                "{ after: { project: api, event: build } }",
                SystemTime::now(),
            );
            let starter = Recorder {
                store: store.clone(),
                failing: AtomicBool::new(false),
            };
            assert!(
                pass(&store, &starter).started.is_empty(),
                "nothing happened yet"
            );
            api_build_succeeds(&store);
            api_build_succeeds(&store);
            assert_eq!(pass(&store, &starter).started.len(), 2);
            assert!(pass(&store, &starter).started.is_empty());
        }
        let store =
            MetaStore::open_waiting(&dir.path().join("meta"), std::time::Duration::from_secs(10))
                .expect("reopen");
        let starter = Recorder {
            store: store.clone(),
            failing: AtomicBool::new(false),
        };
        assert!(pass(&store, &starter).started.is_empty(), "none twice");
        api_build_succeeds(&store);
        assert_eq!(pass(&store, &starter).started.len(), 1);
        assert_eq!(scheduled(&store, Trigger::After), 3);
    }

    #[test]
    fn an_event_whose_build_cannot_be_queued_is_not_missed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(
            dir.path(),
            "{ after: { project: api, event: build } }",
            SystemTime::now(),
        );
        let starter = Recorder {
            store: store.clone(),
            failing: AtomicBool::new(true),
        };
        api_build_succeeds(&store);
        let refused = pass(&store, &starter);
        assert!(refused.failed && refused.started.is_empty());
        starter.failing.store(false, Ordering::SeqCst);
        assert_eq!(pass(&store, &starter).started.len(), 1, "tried again");
        assert!(pass(&store, &starter).started.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_retries_a_failed_pass_without_a_new_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with(
            dir.path(),
            "{ after: { project: api, event: build } }",
            SystemTime::now(),
        );
        let starter = Arc::new(Recorder {
            store: store.clone(),
            failing: AtomicBool::new(true),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(store.clone(), starter.clone(), stop.clone()));
        api_build_succeeds(&store);
        tokio::time::sleep(RETRY_AFTER / 2).await;
        assert_eq!(scheduled(&store, Trigger::After), 0);
        starter.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(RETRY_AFTER * 2).await;
        assert_eq!(scheduled(&store, Trigger::After), 1);
        stop.cancel();
        task.await.expect("the watch ends on shutdown");
    }
}
