//! An HTTP fake of the Kubernetes API server, for testing `opus install` and `opus uninstall`
//! without a cluster (none can run on the test machines).
//!
//! It answers what those commands and opusd's kubernetes executor ask for, and only that:
//! `GET /version`, server-side apply (`PATCH` with `application/apply-patch+yaml`), `GET` and
//! `DELETE` of single objects by path, `GET` of the `jobs` and `pods` collections of a namespace
//! with an equality `labelSelector`, with a StatefulSet status that turns ready after a chosen
//! number of looks. Tests set the status of Jobs and put pods ([`FakeApiServer::set_status`],
//! [`FakeApiServer::put`]) the way a cluster would. It records every request so that tests can
//! assert the calls made, and it can refuse chosen calls with 403.
//! It is not a validating API server: it stores what it is sent, so what it proves is which calls
//! are made with which bodies, not that a real cluster accepts those bodies.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `PATCH`, `DELETE`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query parameters.
    pub query: BTreeMap<String, String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body parsed as JSON (kube sends apply patches as JSON, which is YAML too).
    pub body: Option<Value>,
}

impl Recorded {
    /// `"PATCH /api/v1/namespaces/opus"`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// How the fake behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Requests answered with 403: (method, path).
    pub forbid: Vec<(String, String)>,
    /// How many looks at the StatefulSet answer "not ready" before it is ready; `None`: never.
    pub ready_after: Option<u32>,
    /// The waiting reason the pod `opusd-0` shows while the StatefulSet is not ready.
    pub pod_waiting: Option<(String, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    behaviour: Behaviour,
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    not_ready_left: Option<u32>,
    /// What the last look at the StatefulSet said: the pod shows its waiting reason while not.
    last_ready: bool,
    resource_version: u64,
}

/// A running fake API server on 127.0.0.1 and a port of its own.
pub struct FakeApiServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts the fake with a StatefulSet that is ready at the first look.
    pub fn start() -> FakeApiServer {
        FakeApiServer::start_with(Behaviour {
            ready_after: Some(0),
            ..Behaviour::default()
        })
    }

    /// Starts the fake with the given behaviour.
    pub fn start_with(behaviour: Behaviour) -> FakeApiServer {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let inner = Arc::new(Mutex::new(Inner {
            not_ready_left: behaviour.ready_after,
            behaviour,
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
        FakeApiServer {
            url,
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Forgets the requests so far (the stored objects stay).
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The stored object at an API path, as last applied.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// The paths of the stored objects.
    pub fn paths(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Stores an object as if someone had created it before the test.
    pub fn put(&self, path: &str, object: Value) {
        self.lock().objects.insert(path.to_owned(), object);
    }

    /// Removes an object as if someone had deleted it (`kubectl delete`); `false` when absent.
    pub fn remove(&self, path: &str) -> bool {
        self.lock().objects.remove(path).is_some()
    }

    /// Sets the `status` of a stored object (a Job's conditions, a pod's container states), as
    /// the cluster's controllers would; `false` when there is no such object.
    pub fn set_status(&self, path: &str, status: Value) -> bool {
        match self.lock().objects.get_mut(path) {
            Some(object) => {
                object["status"] = status;
                true
            }
            None => false,
        }
    }

    /// Waits up to `secs` seconds for an object to be stored at `path` and returns it.
    pub fn wait_for_object(&self, path: &str, secs: u64) -> Option<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(object) = self.object(path) {
                return Some(object);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Changes the behaviour (for the next requests).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        let mut inner = self.lock();
        inner.not_ready_left = behaviour.ready_after;
        inner.behaviour = behaviour;
    }

    /// Writes a kubeconfig whose current context is this fake (user token `fake-token`) into
    /// `dir` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             users:\n- name: fake\n  user:\n    token: fake-token\n",
            self.url
        );
        let mut file = std::fs::File::create(&path).expect("create kubeconfig");
        file.write_all(text.as_bytes()).expect("write kubeconfig");
        path
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// `/apis/apps/v1/namespaces/opus/statefulsets/opusd` -> ("statefulsets", "opusd").
fn resource_and_name(path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let n = parts.len();
    if n >= 2 {
        (parts[n - 2].to_owned(), parts[n - 1].to_owned())
    } else {
        (String::new(), String::new())
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    inner.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: parsed.clone(),
    });

    let (resource, name) = resource_and_name(&path);
    if inner
        .behaviour
        .forbid
        .iter()
        .any(|(m, p)| *m == method.as_str() && *p == path)
    {
        let verb = match method.as_str() {
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "get",
        };
        let message = format!(
            "{resource} \"{name}\" is forbidden: User \"dev\" cannot {verb} resource \"{resource}\" in the namespace \"opus\""
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }

    if path == "/version" {
        return axum::Json(json!({
            "major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "gitCommit": "0", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64",
        }))
        .into_response();
    }

    match method {
        Method::PATCH => {
            if header("content-type").as_deref() != Some("application/apply-patch+yaml") {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "only server-side apply",
                );
            }
            let Some(mut object) = parsed else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON",
                );
            };
            let previous = inner.objects.get(&path).cloned();
            let same = previous
                .as_ref()
                .is_some_and(|p| strip_server_fields(p) == object);
            let (rv, generation) = match (&previous, same) {
                (Some(p), true) => (
                    p["metadata"]["resourceVersion"].clone(),
                    p["metadata"]["generation"].clone(),
                ),
                (p, _) => {
                    inner.resource_version += 1;
                    let generation = p
                        .as_ref()
                        .and_then(|p| p["metadata"]["generation"].as_i64())
                        .unwrap_or(0)
                        + 1;
                    (json!(inner.resource_version.to_string()), json!(generation))
                }
            };
            object["metadata"]["resourceVersion"] = rv;
            object["metadata"]["generation"] = generation;
            object["metadata"]["uid"] = json!(format!("uid-{resource}-{name}"));
            inner.objects.insert(path, object.clone());
            let code = if previous.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (code, axum::Json(object)).into_response()
        }
        Method::GET if name == "jobs" || name == "pods" => {
            let selector = decode(query.get("labelSelector").map(String::as_str).unwrap_or(""));
            let wanted: Vec<(&str, &str)> = selector
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let prefix = format!("{path}/");
            let items: Vec<Value> = inner
                .objects
                .iter()
                .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
                .map(|(_, o)| o.clone())
                .filter(|o| {
                    wanted
                        .iter()
                        .all(|(k, v)| o["metadata"]["labels"][*k].as_str() == Some(*v))
                })
                .collect();
            let kind = if name == "jobs" { "JobList" } else { "PodList" };
            let api_version = if name == "jobs" { "batch/v1" } else { "v1" };
            axum::Json(json!({
                "kind": kind, "apiVersion": api_version,
                "metadata": { "resourceVersion": inner.resource_version.to_string() },
                "items": items,
            }))
            .into_response()
        }
        Method::GET => {
            let Some(mut object) = inner.objects.get(&path).cloned() else {
                if resource == "pods"
                    && !inner.last_ready
                    && let Some((reason, message)) = inner.behaviour.pod_waiting.clone()
                {
                    return axum::Json(waiting_pod(&name, &reason, &message)).into_response();
                }
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{resource} \"{name}\" not found"),
                );
            };
            if resource == "statefulsets" {
                let ready = match inner.not_ready_left {
                    Some(0) => true,
                    Some(n) => {
                        inner.not_ready_left = Some(n - 1);
                        false
                    }
                    None => false,
                };
                inner.last_ready = ready;
                object["status"] = stateful_set_status(&object, ready);
            }
            axum::Json(object).into_response()
        }
        Method::DELETE => match inner.objects.remove(&path) {
            Some(_) => axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": { "name": name, "kind": resource },
            }))
            .into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{resource} \"{name}\" not found"),
            ),
        },
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake does not do that",
        ),
    }
}

/// Percent-decodes a query value (`opus%2Fbuild%3D1` -> `opus/build=1`).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The object as a client sent it: without the fields the fake adds.
fn strip_server_fields(stored: &Value) -> Value {
    let mut object = stored.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("generation");
        meta.remove("uid");
    }
    object
}

fn stateful_set_status(object: &Value, ready: bool) -> Value {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    let n = i64::from(ready);
    json!({
        "observedGeneration": generation,
        "replicas": 1,
        "readyReplicas": n,
        "updatedReplicas": 1,
        "availableReplicas": n,
        "currentRevision": "opusd-1",
        "updateRevision": "opusd-1",
    })
}

fn waiting_pod(name: &str, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "opus" },
        "spec": { "containers": [{ "name": "opusd", "image": "opusd" }] },
        "status": {
            "phase": "Pending",
            "containerStatuses": [{
                "name": "opusd", "image": "opusd", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": reason, "message": message } },
            }],
        },
    })
}
