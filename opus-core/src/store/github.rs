//! GitHub's side of the store: the API token (`opus github connect`) and the outbox of commit
//! statuses.
//!
//! The outbox is the event log itself: a build's state change and its event are one transaction,
//! and the status is made from that event. `github` holds the cursor (the next event not
//! finished); `github_statuses` the record of each status, stored after every attempt, with the
//! cursor moved past its event in the same transaction once it is over. So a status is never
//! lost to a crash, and after one the status in flight is sent again.
//!
//! A deploy's record also carries its GitHub Deployment calls ([`crate::forge::DeploymentCalls`]);
//! the deployment each environment shows ([`GithubDeployment`]) is kept in the same transaction
//! as the record that created it (or that marked it inactive for good), so the next deploy or
//! the removal names it, across restarts.
//!
//! Trees:
//! - `github`: `token` -> the token (never returned by the API), `status_cursor` -> seq (be),
//!   `deployment\0<project>\0<env>` -> [`GithubDeployment`], `comment\0<project>\0<number>` ->
//!   the id (be) of the pull request comment opusd keeps, `comment_wanted\0<project>\0<number>`
//!   -> 1 or 0 (the base branch's `pull_requests.comment` when the pull request last built).
//! - `github_statuses`: event seq (be) -> [`StatusDelivery`].

use super::{MetaStore, T, be_u64, decode};
use crate::error::StoreError;
use crate::forge::{GithubDeployment, StatusDelivery};
use crate::hook::DeliveryState;

const TOKEN: &[u8] = b"token";
const CURSOR: &[u8] = b"status_cursor";

/// The key of the deployment `env` of `project` shows.
fn deployment_key(project: &str, env: &str) -> Vec<u8> {
    format!("deployment\0{project}\0{env}").into_bytes()
}

/// The key of the comment id kept on pull request `number` of `project`.
fn comment_key(project: &str, number: u64) -> Vec<u8> {
    format!("comment\0{project}\0{number}").into_bytes()
}

/// The key of whether pull request `number` of `project` wants its comment.
fn comment_wanted_key(project: &str, number: u64) -> Vec<u8> {
    format!("comment_wanted\0{project}\0{number}").into_bytes()
}

impl MetaStore {
    /// Stores the GitHub API token, replacing any before it.
    pub fn set_github_token(&self, token: &str) -> Result<(), StoreError> {
        self.tree(T::Github)?.insert(TOKEN, token.as_bytes())?;
        Ok(())
    }

    /// The GitHub API token, when one is stored.
    pub fn github_token(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree(T::Github)?
            .get(TOKEN)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The next event the GitHub outbox has not finished (1 when it never ran).
    pub fn github_status_cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .tree(T::Github)?
            .get(CURSOR)?
            .map(|v| be_u64(&v))
            .unwrap_or(1))
    }

    /// Starts the outbox's cursor after the newest event when it has none (the first start of
    /// an opusd that sends statuses): the events of an older store made no statuses, and reading
    /// them all would only cost time.
    pub fn init_github_status_cursor(&self) -> Result<(), StoreError> {
        let next = self.last_event_seq() + 1;
        self.transact(|tx| {
            if tx.tree(T::Github).get(CURSOR)?.is_none() {
                tx.tree(T::Github).insert(CURSOR, &next.to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// Moves the outbox's cursor forward past events that send no status.
    pub fn advance_github_status_cursor(&self, next: u64) -> Result<(), StoreError> {
        self.transact(|tx| {
            let current = tx
                .tree(T::Github)
                .get(CURSOR)?
                .map(|v| be_u64(&v))
                .unwrap_or(1);
            if next > current {
                tx.tree(T::Github).insert(CURSOR, &next.to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// Stores a status's record after an attempt; once it is over (delivered or failed), the
    /// cursor moves past its event in the same transaction. A deploy's record whose deployment
    /// GitHub created becomes its environment's deployment; one that creates none (a version
    /// not from GitHub, a removal) leaves its environment with none.
    pub fn record_github_status(&self, d: &StatusDelivery) -> Result<(), StoreError> {
        self.transact(|tx| {
            tx.put_json(T::GithubStatuses, &d.event_seq.to_be_bytes(), d)?;
            if let Some(calls) = &d.deployment {
                let key = deployment_key(&d.project, &calls.environment);
                if let Some(id) = calls.created {
                    let shown = GithubDeployment {
                        id,
                        commit: d.commit.clone(),
                        environment: calls.environment.clone(),
                    };
                    tx.put_json(T::Github, &key, &shown)?;
                } else if !calls.create {
                    tx.tree(T::Github).remove(key)?;
                }
                if let Some(crate::forge::PrComment {
                    number,
                    id: Some(id),
                    ..
                }) = calls.comment
                {
                    tx.tree(T::Github)
                        .insert(comment_key(&d.project, number), &id.to_be_bytes())?;
                }
            }
            if d.delivery != DeliveryState::Pending {
                tx.tree(T::Github)
                    .insert(CURSOR, &(d.event_seq + 1).to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// The GitHub Deployment environment `env` of `project` shows, when opusd created one.
    pub fn github_deployment(
        &self,
        project: &str,
        env: &str,
    ) -> Result<Option<GithubDeployment>, StoreError> {
        self.get_json(T::Github, &deployment_key(project, env))
    }

    /// Records whether pull request `number` of `project` wants its comment (the base branch's
    /// `pull_requests.comment`, read when the pull request's build was admitted).
    pub fn set_github_comment_wanted(
        &self,
        project: &str,
        number: u64,
        wanted: bool,
    ) -> Result<(), StoreError> {
        self.tree(T::Github)?
            .insert(comment_wanted_key(project, number), &[u8::from(wanted)][..])?;
        Ok(())
    }

    /// Whether pull request `number` of `project` wants its comment (never said: no).
    pub fn github_comment_wanted(&self, project: &str, number: u64) -> Result<bool, StoreError> {
        Ok(self
            .tree(T::Github)?
            .get(comment_wanted_key(project, number))?
            .is_some_and(|v| v.as_ref() == [1]))
    }

    /// The id of the comment opusd keeps on pull request `number` of `project`, once GitHub
    /// gave one.
    pub fn github_comment(&self, project: &str, number: u64) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree(T::Github)?
            .get(comment_key(project, number))?
            .map(|v| be_u64(&v)))
    }

    /// The status made from event `seq`, if one was attempted.
    pub fn github_status(&self, seq: u64) -> Result<Option<StatusDelivery>, StoreError> {
        self.get_json(T::GithubStatuses, &seq.to_be_bytes())
    }

    /// The statuses sent, newest first, at most `limit` (0: 50).
    pub fn list_github_statuses(&self, limit: usize) -> Result<Vec<StatusDelivery>, StoreError> {
        let limit = if limit == 0 { 50 } else { limit };
        let mut out = Vec::new();
        for item in self.tree(T::GithubStatuses)?.iter().rev().take(limit) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::forge::GithubCommit;

    fn status(seq: u64, delivery: DeliveryState) -> StatusDelivery {
        StatusDelivery {
            event_seq: seq,
            project: "web".into(),
            build: 1,
            commit: GithubCommit {
                repository: "acme/web".into(),
                sha: "a".repeat(40),
            },
            state: "pending".into(),
            description: "queued".into(),
            target_url: None,
            delivery,
            attempts: 1,
            last_status: 500,
            last_error: String::new(),
            next_attempt_at: None,
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
            deployment: None,
        }
    }

    fn deploy_record(seq: u64, create: bool, created: Option<u64>) -> StatusDelivery {
        let mut d = status(seq, DeliveryState::Pending);
        d.deployment = Some(crate::forge::DeploymentCalls {
            environment: "pr-7".into(),
            create,
            transient: true,
            environment_url: None,
            created,
            previous: None,
            done: 0,
            comment: None,
        });
        d
    }

    #[test]
    fn a_pull_requests_comment_id_is_kept_with_the_record_that_made_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        assert!(!store.github_comment_wanted("web", 7).expect("get"));
        store
            .set_github_comment_wanted("web", 7, true)
            .expect("set");
        assert!(store.github_comment_wanted("web", 7).expect("get"));
        assert!(!store.github_comment_wanted("web", 8).expect("get"));
        let mut record = deploy_record(5, true, Some(77));
        if let Some(calls) = record.deployment.as_mut() {
            calls.comment = Some(crate::forge::PrComment {
                number: 7,
                id: None,
                version: "pr-7-1-abc1234".into(),
            });
        }
        store.record_github_status(&record).expect("record");
        assert_eq!(store.github_comment("web", 7).expect("get"), None);
        if let Some(calls) = record.deployment.as_mut() {
            calls.comment = Some(crate::forge::PrComment {
                number: 7,
                id: Some(4242),
                version: "pr-7-1-abc1234".into(),
            });
        }
        store.record_github_status(&record).expect("record");
        assert_eq!(store.github_comment("web", 7).expect("get"), Some(4242));
        assert_eq!(store.github_comment("other", 7).expect("get"), None);
        store
            .set_github_comment_wanted("web", 7, false)
            .expect("set");
        assert!(!store.github_comment_wanted("web", 7).expect("get"));
    }

    #[test]
    fn an_environment_shows_the_deployment_created_until_one_creates_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        store
            .record_github_status(&deploy_record(5, true, None))
            .expect("record");
        assert_eq!(store.github_deployment("web", "pr-7").expect("get"), None);
        store
            .record_github_status(&deploy_record(5, true, Some(77)))
            .expect("record");
        let shown = store
            .github_deployment("web", "pr-7")
            .expect("get")
            .expect("a deployment");
        assert_eq!((shown.id, shown.environment.as_str()), (77, "pr-7"));
        assert_eq!(shown.commit.repository, "acme/web");
        assert_eq!(
            store.github_deployment("web", "production").expect("get"),
            None
        );
        store
            .record_github_status(&deploy_record(6, false, None))
            .expect("record");
        assert_eq!(store.github_deployment("web", "pr-7").expect("get"), None);
    }

    #[test]
    fn the_cursor_moves_only_when_a_status_is_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        assert_eq!(store.github_status_cursor().expect("cursor"), 1);
        let fresh = tempfile::tempdir().expect("tempdir");
        let other = MetaStore::open(fresh.path()).expect("open");
        other.init_github_status_cursor().expect("init");
        assert_eq!(
            other.github_status_cursor().expect("cursor"),
            other.last_event_seq() + 1
        );
        store
            .record_github_status(&status(3, DeliveryState::Pending))
            .expect("record");
        assert_eq!(store.github_status_cursor().expect("cursor"), 1);
        store
            .record_github_status(&status(3, DeliveryState::Delivered))
            .expect("record");
        assert_eq!(store.github_status_cursor().expect("cursor"), 4);
        store.advance_github_status_cursor(2).expect("not back");
        assert_eq!(store.github_status_cursor().expect("cursor"), 4);
        assert_eq!(store.github_token().expect("token"), None);
        store.init_github_status_cursor().expect("init");
        assert_eq!(
            store.github_status_cursor().expect("cursor"),
            4,
            "a cursor is kept"
        );
        store.set_github_token("ghp_secret").expect("token");
        assert_eq!(
            store.github_token().expect("token").as_deref(),
            Some("ghp_secret")
        );
        let listed = store.list_github_statuses(0).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].delivery, DeliveryState::Delivered);
    }
}
