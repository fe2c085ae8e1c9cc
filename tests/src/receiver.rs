//! A real HTTP receiver for hook deliveries: an axum server on 127.0.0.1 that records every request
//! and answers with a status the test sets. It can be stopped and started again on the same port,
//! to play a receiver that is down for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `X-Opus-Event`.
    pub event: String,
    /// `X-Opus-Delivery`.
    pub delivery: String,
    /// `X-Opus-Signature-256`, if sent.
    pub signature: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
    /// When it arrived.
    pub at: std::time::SystemTime,
}

impl Received {
    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Clone, Default)]
struct Shared {
    got: Arc<Mutex<Vec<Received>>>,
    /// The status to answer with (200 unless set).
    status: Arc<AtomicU16>,
    /// Statuses to answer first, one per request, before `status`.
    script: Arc<Mutex<Vec<u16>>>,
}

/// The receiver; stopped on drop.
pub struct Receiver {
    shared: Shared,
    /// Where it listens.
    pub addr: SocketAddr,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

async fn record(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let scripted = s
        .script
        .lock()
        .ok()
        .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)));
    let answer = scripted.unwrap_or_else(|| s.status.load(Ordering::SeqCst));
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Ok(mut got) = s.got.lock() {
        got.push(Received {
            event: h("x-opus-event").unwrap_or_default(),
            delivery: h("x-opus-delivery").unwrap_or_default(),
            signature: h("x-opus-signature-256"),
            body: body.to_vec(),
            answered: answer,
            at: std::time::SystemTime::now(),
        });
    }
    StatusCode::from_u16(answer).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl Receiver {
    /// Starts on a free port.
    pub fn start() -> Receiver {
        let shared = Shared::default();
        shared.status.store(200, Ordering::SeqCst);
        let mut r = Receiver {
            shared,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: None,
        };
        r.run();
        r
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers every later request with `status`.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Answers the next requests with these statuses, one each, then as before.
    pub fn answer_next(&self, statuses: &[u16]) {
        if let Ok(mut s) = self.shared.script.lock() {
            s.extend_from_slice(statuses);
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .got
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// Waits until `pred` holds for what was received (at most `timeout`), and returns it.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver did not get what was expected within {timeout:?}; it got {:#?}",
                got.iter()
                    .map(|r| (&r.delivery, &r.event, r.answered))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops listening (connections are then refused) until [`Receiver::restart`].
    pub fn stop(&mut self) {
        if let Some((tx, thread)) = self.running.take() {
            let _ = tx.send(());
            let _ = thread.join();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn run(&mut self) {
        let std_listener = std::net::TcpListener::bind(self.addr).expect("receiver binds");
        std_listener.set_nonblocking(true).expect("nonblocking");
        self.addr = std_listener.local_addr().expect("bound address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = self.shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                let app = axum::Router::new()
                    .fallback(axum::routing::post(record))
                    .with_state(shared);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        self.running = Some((tx, thread));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}
