//! A git server over HTTP that requires basic auth, as GitHub does for a private repository:
//! git's own `git http-backend` (the smart HTTP protocol, run as a CGI program) behind a small
//! axum server on 127.0.0.1 that answers 401 to a request without an accepted username and
//! password.
//!
//! It records what it was sent (the credentials of each request, whether they were accepted),
//! and, while an accepted request is being served (so while the git client that sent it is
//! running), whether any process's command line on this machine holds the password: the proof
//! that a credential reached git without being put in an argument.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::AsyncWriteExt;

/// Decides whether a username and password may read.
pub type Check = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// One request's credentials, as the server saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The path asked for.
    pub path: String,
    /// Basic auth's username and password, when sent.
    pub credentials: Option<(String, String)>,
    /// Whether they were accepted.
    pub accepted: bool,
}

struct Inner {
    root: PathBuf,
    check: Check,
    seen: Vec<Seen>,
    /// Command lines (of processes running during an accepted request) holding its password.
    leaks: Vec<String>,
}

/// A running server on 127.0.0.1; repositories are the bare ones under its root.
pub struct GitHttpServer {
    /// `http://127.0.0.1:<port>`: a repository `<root>/acme/web.git` is `<url>/acme/web.git`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` to whoever `check` accepts.
    pub fn start(root: &Path, check: Check) -> GitHttpServer {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let inner = Arc::new(Mutex::new(Inner {
            root: root.to_path_buf(),
            check,
            seen: Vec::new(),
            leaks: Vec::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
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
        GitHttpServer {
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
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Command lines that held an accepted password while its request was served.
    pub fn leaks(&self) -> Vec<String> {
        self.lock().leaks.clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Basic auth's username and password.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Every process's command line that contains `secret`.
pub fn command_lines_holding(secret: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(secret) {
                out.push(line);
            }
        }
    }
    out
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = basic(&headers);
    let (root, accepted) = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        let accepted = credentials
            .as_ref()
            .is_some_and(|(user, password)| (inner.check)(user, password));
        inner.seen.push(Seen {
            path: uri.path().to_owned(),
            credentials: credentials.clone(),
            accepted,
        });
        (inner.root.clone(), accepted)
    };
    if !accepted {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"git\"")],
            "authentication required\n",
        )
            .into_response();
    }
    if let Some((_, password)) = &credentials {
        let leaks = command_lines_holding(password);
        if !leaks.is_empty() {
            inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .leaks
                .extend(leaks);
        }
    }
    cgi(&root, &method, &uri, &headers, body).await
}

/// Runs `git http-backend` for one request, as a web server runs a CGI program.
async fn cgi(
    root: &Path,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "git")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git http-backend: {e}"),
            )
                .into_response();
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
    }
    let out = match child.wait_with_output().await {
        Ok(out) => out,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git http-backend: {e}"),
            )
                .into_response();
        }
    };
    // A CGI answer: headers, a blank line, the body.
    let raw = out.stdout;
    let (head_len, sep) = match find(&raw, b"\r\n\r\n") {
        Some(i) => (i, 4),
        None => match find(&raw, b"\n\n") {
            Some(i) => (i, 2),
            None => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
                    .into_response();
            }
        },
    };
    let head = String::from_utf8_lossy(&raw[..head_len]).into_owned();
    let mut response = Response::new(axum::body::Body::from(raw[head_len + sep..].to_vec()));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            *response.status_mut() = code;
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            axum::http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
