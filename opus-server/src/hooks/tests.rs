//! The deliverer against a scripted transport, on tokio's paused clock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use opus_core::hook::{DeliveryState, Hook, HookFormat};
use opus_core::model::{Project, ProjectName, Source};
use opus_core::store::MetaStore;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;

/// Answers from a script (then 200), and reports every post with the (paused) time it came.
struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    seen: mpsc::UnboundedSender<(Instant, Post)>,
}

impl Transport for Scripted {
    async fn post(&self, post: &Post) -> Answer {
        let _ = self.seen.send((Instant::now(), post.clone()));
        let next = self.answers.lock().ok().and_then(|mut a| a.pop_front());
        next.unwrap_or(Answer::Status(200))
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(8),
        give_up_after: Duration::from_secs(3600),
        timeout: Duration::from_secs(10),
    }
}

fn links() -> SiteLinks {
    SiteLinks {
        domain: "localhost".into(),
        port: 7080,
    }
}

fn store() -> (tempfile::TempDir, MetaStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MetaStore::open(&dir.path().join("meta")).expect("store opens");
    (dir, store)
}

fn add_project(store: &MetaStore, name: &str) {
    store
        .create_project(&Project {
            name: ProjectName::new(name.to_owned()).expect("valid name"),
            source: Source::parse("https://example.com/x.git").expect("valid source"),
            branch: "main".into(),
            created_at: SystemTime::now(),
            keep_versions: 0,
        })
        .expect("project added");
}

fn hook(project: &str, events: &[&str], secret: Option<&str>) -> Hook {
    Hook {
        id: 0,
        project: project.into(),
        url: "http://127.0.0.1:9/hook".into(),
        events: events.iter().map(|s| s.to_string()).collect(),
        format: HookFormat::Json,
        secret: secret.map(str::to_owned),
        enabled: true,
        created_at: SystemTime::now(),
    }
}

fn start(
    store: &MetaStore,
    answers: Vec<Answer>,
) -> (Deliverer, mpsc::UnboundedReceiver<(Instant, Post)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let transport = Scripted {
        answers: Mutex::new(answers.into()),
        seen: tx,
    };
    (
        Deliverer::start(store.clone(), transport, policy(), links()),
        rx,
    )
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(Instant, Post)>) -> (Instant, Post) {
    tokio::time::timeout(Duration::from_secs(3600), rx.recv())
        .await
        .expect("a post within an hour")
        .expect("the transport lives")
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = policy();
    let waits: Vec<u64> = (1..=6).map(|n| p.delay(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    assert_eq!(p.delay(1000), p.cap, "no overflow");
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_in_order_under_one_id() {
    let (_dir, store) = store();
    let h = store
        .add_hook(&hook("", &["project.*"], Some("s3cret")))
        .expect("hook");
    let (_deliverer, mut rx) = start(
        &store,
        vec![
            Answer::Status(500),
            Answer::NoAnswer("connection refused".into()),
            Answer::Status(503),
        ],
    );
    add_project(&store, "web");
    add_project(&store, "api");

    let (t0, first) = next(&mut rx).await;
    assert_eq!(first.event, "project.added");
    let body: serde_json::Value = serde_json::from_slice(&first.body).expect("JSON body");
    assert_eq!(body["project"], "web");
    assert_eq!(
        first.signature.as_deref(),
        Some(signature::sign(b"s3cret", &first.body).as_str())
    );
    let mut times = vec![];
    for _ in 0..3 {
        let (t, p) = next(&mut rx).await;
        assert_eq!(p.delivery, first.delivery, "a retry reuses the delivery id");
        times.push((t - t0).as_secs());
    }
    assert_eq!(times, [1, 3, 7], "waits of 1s, 2s, 4s");
    let (_, second) = next(&mut rx).await;
    let body: serde_json::Value = serde_json::from_slice(&second.body).expect("JSON body");
    assert_eq!(
        body["project"], "api",
        "the later event waited for the earlier"
    );
    assert_ne!(second.delivery, first.delivery);

    // Records: newest first; the first took four attempts.
    tokio::task::yield_now().await;
    let ds = store.list_deliveries(h.id, 0).expect("deliveries");
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[1].attempts, 4);
    assert_eq!(ds[1].state, DeliveryState::Delivered);
    assert_eq!(ds[1].last_status, 200);
}

#[tokio::test(start_paused = true)]
async fn gone_disables_and_4xx_is_not_retried() {
    let (_dir, store) = store();
    let h = store
        .add_hook(&hook("", &["project.added"], None))
        .expect("hook");
    let (_deliverer, mut rx) = start(&store, vec![Answer::Status(404), Answer::Status(410)]);
    add_project(&store, "a");
    add_project(&store, "b");
    add_project(&store, "c");
    let (_, p1) = next(&mut rx).await;
    assert_eq!(p1.signature, None, "a hook without a secret is unsigned");
    let (_, p2) = next(&mut rx).await;
    assert_ne!(p1.delivery, p2.delivery, "a 404 moved on to the next event");
    // After the 410 nothing more is posted, even an hour later.
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), rx.recv())
            .await
            .is_err()
    );
    let hook = store.get_hook(h.id).expect("hook");
    assert!(!hook.enabled);
    let ds = store.list_deliveries(h.id, 0).expect("deliveries");
    let states: Vec<_> = ds.iter().map(|d| d.state).collect();
    assert_eq!(states, [DeliveryState::Disabled, DeliveryState::Failed]);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_the_retry_period() {
    let (_dir, store) = store();
    let mut p = policy();
    p.give_up_after = Duration::from_secs(10);
    let h = store
        .add_hook(&hook("", &["project.added"], None))
        .expect("hook");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let transport = Scripted {
        answers: Mutex::new(std::iter::repeat_n(Answer::Status(500), 100).collect()),
        seen: tx,
    };
    let _d = Deliverer::start(store.clone(), transport, p, links());
    add_project(&store, "a");
    let mut n = 0;
    while tokio::time::timeout(Duration::from_secs(3600), rx.recv())
        .await
        .is_ok_and(|p| p.is_some())
    {
        n += 1;
    }
    // Attempts at 0, 1, 3, 7, 15 (s): the fifth is past 10 s, so it gives up.
    assert_eq!(n, 5);
    let d = &store.list_deliveries(h.id, 0).expect("deliveries")[0];
    assert_eq!(d.state, DeliveryState::Failed);
    assert!(d.last_error.contains("gave up"), "{}", d.last_error);
}

#[tokio::test(start_paused = true)]
async fn only_wanted_events_of_its_project() {
    let (_dir, store) = store();
    add_project(&store, "web");
    add_project(&store, "api");
    store
        .add_hook(&hook("web", &["secret.*"], None))
        .expect("hook");
    let (_deliverer, mut rx) = start(&store, vec![]);
    store
        .set_secret(
            &opus_core::model::ProjectName::new("api").expect("name"),
            "A",
            "1",
        )
        .expect("secret");
    store
        .set_secret(
            &opus_core::model::ProjectName::new("web").expect("name"),
            "B",
            "1",
        )
        .expect("secret");
    let (_, p) = next(&mut rx).await;
    let body: serde_json::Value = serde_json::from_slice(&p.body).expect("JSON");
    assert_eq!(body["project"], "web");
    assert_eq!(body["event"], "secret.set");
}

#[tokio::test(start_paused = true)]
async fn ping_reports_and_gone_disables() {
    let (_dir, store) = store();
    let h = store.add_hook(&hook("", &[], None)).expect("hook");
    let (tx, _rx) = mpsc::unbounded_channel();
    let t = Scripted {
        answers: Mutex::new(vec![Answer::Status(200), Answer::Status(410)].into()),
        seen: tx,
    };
    let d = test_hook(&store, &t, &links(), &h).await.expect("ping");
    assert_eq!(d.state, DeliveryState::Delivered);
    let d = test_hook(&store, &t, &links(), &h).await.expect("ping");
    assert_eq!(d.state, DeliveryState::Disabled);
    assert!(!store.get_hook(h.id).expect("hook").enabled);
    // Both pings are in the hook's deliveries, newest first, after the event that disabled it.
    let listed: Vec<_> = store
        .list_deliveries(h.id, 0)
        .expect("deliveries")
        .into_iter()
        .map(|d| (d.event_type, d.state))
        .collect();
    assert_eq!(
        listed,
        [
            ("ping".to_owned(), DeliveryState::Disabled),
            ("ping".to_owned(), DeliveryState::Delivered)
        ]
    );
}
