//! An HTTP fake of Cloudflare's API v4 (no api.cloudflare.com here), for the DNS records opusd
//! makes and deletes.
//!
//! It holds one zone and its records, answers the calls opusd makes as Cloudflare documents
//! them (`GET /zones?name=`, `GET /zones/{id}`, `GET /zones/{id}/dns_records?name=`,
//! `POST /zones/{id}/dns_records`, `DELETE /zones/{id}/dns_records/{record}`) in Cloudflare's
//! envelope (`success`, `errors`, `result`), checks the bearer token (403 otherwise), and records
//! every request (method, path and query, JSON body, what it answered). Tests seed records
//! opusd did not make ([`FakeCloudflare::seed`]) and script faults for the next record
//! creations ([`FakeCloudflare::script_creates`]).
//!
//! With [`FakeCloudflare::forward_txt_to`], a TXT record created or deleted is also set or
//! cleared in pebble-challtestsrv (its management API's `/set-txt` and `/clear-txt`), the DNS
//! server pebble asks: so the real pebble validates a DNS-01 challenge opusd answered through
//! this fake. What it proves is which calls opusd makes and how it takes the answers; not that
//! Cloudflare accepts them.

use std::collections::VecDeque;
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The zone's id in the fake.
pub const ZONE_ID: &str = "0123456789abcdef0123456789abcdef";

/// One request the fake received, and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The body parsed as JSON (null without one).
    pub body: Value,
    /// The status it answered.
    pub answered: u16,
}

impl Call {
    /// `"POST /zones/<id>/dns_records A www.acme.test 201"`: the call, and for a record the
    /// type and name.
    pub fn line(&self) -> String {
        match (self.body["type"].as_str(), self.body["name"].as_str()) {
            (Some(t), Some(n)) => {
                format!("{} {} {t} {n} {}", self.method, self.path, self.answered)
            }
            _ => format!("{} {} {}", self.method, self.path, self.answered),
        }
    }

    /// Whether this is a record creation Cloudflare accepted.
    pub fn created(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/dns_records") && self.answered == 200
    }

    /// Whether this is a record deletion.
    pub fn deleted(&self) -> bool {
        self.method == "DELETE"
    }
}

/// A record in the fake zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its id.
    pub id: String,
    /// `A`, `CNAME`, `TXT`...
    pub kind: String,
    /// The full name.
    pub name: String,
    /// The value.
    pub content: String,
    /// The comment, if any.
    pub comment: Option<String>,
}

impl Record {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "zone_id": ZONE_ID,
            "type": self.kind,
            "name": self.name,
            "content": self.content,
            "comment": self.comment,
            "proxied": false,
            "ttl": 1,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    zone: String,
    token: String,
    calls: Vec<Call>,
    records: Vec<Record>,
    next_id: u64,
    /// Statuses for the next record creations (then 200 again).
    create_script: VecDeque<u16>,
    /// challtestsrv's management API, `http://127.0.0.1:<port>`.
    challtestsrv: Option<String>,
}

/// A running fake on 127.0.0.1 and a port of its own.
pub struct FakeCloudflare {
    /// `http://127.0.0.1:<port>/client/v4`: opusd's `--cloudflare-api-url`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeCloudflare {
    /// Starts the fake with zone `zone` (a name, `acme.test`), accepting `token` only.
    pub fn start(zone: &str, token: &str) -> FakeCloudflare {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!(
            "http://{}/client/v4",
            listener.local_addr().expect("local addr")
        );
        let inner = Arc::new(Mutex::new(Inner {
            zone: zone.to_owned(),
            token: token.to_owned(),
            next_id: 1,
            ..Inner::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let app = Router::new().fallback(handle).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        FakeCloudflare {
            url,
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards TXT records to pebble-challtestsrv's management API at `management`
    /// (`127.0.0.1:<port>`).
    pub fn forward_txt_to(&self, management: &str) {
        self.lock().challtestsrv = Some(format!("http://{management}"));
    }

    /// Adds a record that opusd did not make (no comment unless given).
    pub fn seed(&self, kind: &str, name: &str, content: &str, comment: Option<&str>) {
        let mut inner = self.lock();
        let id = format!("seeded{}", inner.next_id);
        inner.next_id += 1;
        inner.records.push(Record {
            id,
            kind: kind.to_owned(),
            name: name.to_owned(),
            content: content.to_owned(),
            comment: comment.map(str::to_owned),
        });
    }

    /// Answers the next record creations with these statuses (then 200 again); a scripted
    /// error creates nothing.
    pub fn script_creates(&self, statuses: impl IntoIterator<Item = u16>) {
        self.lock().create_script.extend(statuses);
    }

    /// Drops the statuses still scripted (200 again from the next creation).
    pub fn clear_script(&self) {
        self.lock().create_script.clear();
    }

    /// Every call so far, in the order received.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The zone's records now.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The records named `name`.
    pub fn records_named(&self, name: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.name == name)
            .collect()
    }

    /// Waits up to `secs` seconds until `done` holds for the records; returns them, or panics
    /// with them and the calls.
    pub fn wait_for_records(
        &self,
        secs: u64,
        what: &str,
        done: impl Fn(&[Record]) -> bool,
    ) -> Vec<Record> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let records = self.records();
            if done(&records) {
                return records;
            }
            if Instant::now() > deadline {
                let lines: Vec<_> = self.calls().iter().map(Call::line).collect();
                panic!(
                    "the fake Cloudflare did not get {what} within {secs}s; records {records:#?}, calls {lines:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeCloudflare {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An answer in Cloudflare's envelope.
fn envelope(status: StatusCode, result: Value) -> Response {
    let body = if status.is_success() {
        json!({ "success": true, "errors": [], "messages": [], "result": result })
    } else {
        json!({
            "success": false,
            "errors": [{ "code": 10000 + u32::from(status.as_u16()), "message": result.as_str().unwrap_or("error") }],
            "messages": [],
            "result": null,
        })
    };
    (status, axum::Json(body)).into_response()
}

/// The value of `key` in a query string.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.replace("%2A", "*").replace("%2a", "*"))
    })
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let (status, result, forward) = {
        let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let (status, result, forward) = answer(inner, &method, &path, &query, &headers, &body);
        inner.calls.push(Call {
            method: method.to_string(),
            path: if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            },
            body: body.clone(),
            answered: status.as_u16(),
        });
        (
            status,
            result,
            forward.map(|f| (inner.challtestsrv.clone(), f)),
        )
    };
    if let Some((Some(base), (endpoint, payload))) = forward {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let sent = client
            .post(format!("{base}/{endpoint}"))
            .body(payload.to_string())
            .send()
            .await;
        if !sent.is_ok_and(|r| r.status().is_success()) {
            return envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!("the fake could not forward the TXT record to challtestsrv"),
            );
        }
    }
    envelope(status, result)
}

/// A TXT change to forward to challtestsrv: its endpoint and body.
type Forward = (&'static str, Value);

fn answer(
    inner: &mut Inner,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Value,
) -> (StatusCode, Value, Option<Forward>) {
    let bearer = format!("Bearer {}", inner.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return (StatusCode::FORBIDDEN, json!("Authentication error"), None);
    }
    let zone = json!({ "id": ZONE_ID, "name": inner.zone });
    let parts: Vec<&str> = path.trim_start_matches("/client/v4/").split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["zones"]) => {
            let found = query_value(query, "name").as_deref() == Some(inner.zone.as_str());
            let list = if found { vec![zone] } else { Vec::new() };
            (StatusCode::OK, Value::Array(list), None)
        }
        (Method::GET, ["zones", id]) if *id == ZONE_ID => (StatusCode::OK, zone, None),
        (Method::GET, ["zones", id, "dns_records"]) if *id == ZONE_ID => {
            let name = query_value(query, "name");
            let list: Vec<Value> = inner
                .records
                .iter()
                .filter(|r| name.as_deref().is_none_or(|n| r.name == n))
                .map(Record::json)
                .collect();
            (StatusCode::OK, Value::Array(list), None)
        }
        (Method::POST, ["zones", id, "dns_records"]) if *id == ZONE_ID => {
            if let Some(code) = inner.create_script.pop_front() {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if !status.is_success() {
                    return (status, json!("scripted failure"), None);
                }
            }
            let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
            let record = Record {
                id: format!("rec{}", inner.next_id),
                kind: text("type"),
                name: text("name"),
                content: text("content"),
                comment: body["comment"].as_str().map(str::to_owned),
            };
            inner.next_id += 1;
            let forward = (record.kind == "TXT").then(|| {
                (
                    "set-txt",
                    json!({ "host": format!("{}.", record.name), "value": record.content }),
                )
            });
            let result = record.json();
            inner.records.push(record);
            (StatusCode::OK, result, forward)
        }
        (Method::DELETE, ["zones", id, "dns_records", record]) if *id == ZONE_ID => {
            let Some(at) = inner.records.iter().position(|r| r.id == *record) else {
                return (StatusCode::NOT_FOUND, json!("Record not found"), None);
            };
            let removed = inner.records.remove(at);
            let forward = (removed.kind == "TXT")
                .then(|| ("clear-txt", json!({ "host": format!("{}.", removed.name) })));
            (StatusCode::OK, json!({ "id": removed.id }), forward)
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!("no such endpoint in the fake"),
            None,
        ),
    }
}
