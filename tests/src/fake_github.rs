//! An HTTP fake of GitHub's REST API (no github.com here), for the commit statuses and
//! deployments opusd sends.
//!
//! It answers `POST /repos/{owner}/{repo}/statuses/{sha}` with 201 and the status,
//! `POST /repos/{owner}/{repo}/deployments` with 201 and a deployment with a new id (from 1001
//! on), and `POST /repos/{owner}/{repo}/deployments/{id}/statuses` with 201 and the deployment
//! status, `POST /repos/{owner}/{repo}/issues/{number}/comments` with 201 and a comment with a
//! new id (from 5001 on) and `PATCH /repos/{owner}/{repo}/issues/comments/{id}` with 200, as
//! GitHub documents them, and records every request it gets (method, path, `Authorization`, JSON body, and
//! what it answered), so that tests assert the exact calls and their order. Tests script faults
//! in advance ([`FakeGithub::script`] for commit statuses,
//! [`FakeGithub::script_deployment_statuses`]): a queue of answers (a status with headers such
//! as `Retry-After` or `x-ratelimit-reset`) given to the next requests before it answers 201
//! again.
//! What it proves is which calls opusd makes with which bodies, and how it takes GitHub's
//! answers; not that github.com accepts them.
//!
//! As a GitHub App's API ([`FakeGithub::enable_app`]) it also answers `GET /app/installations`
//! and `POST /app/installations/{id}/access_tokens` only to a JWT that verifies (RS256) with
//! the App's public key, has `iss` = the App's id and expires within 10 minutes, as GitHub
//! does; issues installation tokens (`ghs_...`, with `expires_at`) and answers
//! `GET /installation/repositories` to them; and from then on answers the `/repos/...` calls
//! only to a live installation token (else 401 "Bad credentials"). Tokens can be revoked
//! ([`FakeGithub::revoke_tokens`]) to play an expired or revoked one.

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

/// One request the fake received, and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `POST`...
    pub method: String,
    /// The path.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body parsed as JSON.
    pub body: Value,
    /// The status it answered.
    pub answered: u16,
    /// The JSON it answered.
    pub answer: Value,
    /// When it arrived (the benchmarks' clock: a build's end to its status's arrival).
    pub received: std::time::SystemTime,
}

impl Call {
    /// `"POST /repos/acme/web/statuses/<sha> pending"`: the call and the status's state.
    pub fn line(&self) -> String {
        match self.body["state"].as_str() {
            Some(state) => format!("{} {} {state}", self.method, self.path),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

/// An answer scripted for a coming request.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// Its status.
    pub status: u16,
    /// Its headers.
    pub headers: Vec<(String, String)>,
}

impl Scripted {
    /// An answer with `status` and no headers.
    pub fn status(status: u16) -> Scripted {
        Scripted {
            status,
            headers: Vec::new(),
        }
    }
}

/// An installation of the fake App and the repositories it sees (GitHub's JSON shape:
/// `full_name`, `name`, `clone_url`, `private`, `default_branch`...).
#[derive(Debug, Clone)]
pub struct FakeInstallation {
    /// Its id (`installation.id` in webhook payloads).
    pub id: u64,
    /// The repositories it can see.
    pub repositories: Vec<Value>,
}

/// The fake's GitHub App.
#[derive(Debug)]
struct App {
    id: u64,
    key: jsonwebtoken::DecodingKey,
    installations: Vec<FakeInstallation>,
    /// How long an installation token lives.
    token_lifetime: Duration,
    /// Issued tokens: token -> (installation, revoked).
    tokens: Vec<(String, u64, bool)>,
}

#[derive(Debug, Default)]
struct Inner {
    app: Option<App>,
    calls: Vec<Call>,
    script: VecDeque<Scripted>,
    /// Answers scripted for deployment statuses.
    deployment_script: VecDeque<Scripted>,
    /// Deployments created so far.
    deployments: u64,
    /// Pull request comments created (their ids count from 5001).
    comments: u64,
}

/// What a request is, by its method and path.
enum Endpoint {
    /// `POST /repos/{owner}/{repo}/statuses/{sha}`: scripted answers apply.
    CommitStatus,
    /// `POST /repos/{owner}/{repo}/deployments`.
    Deployment,
    /// `POST /repos/{owner}/{repo}/deployments/{id}/statuses`.
    DeploymentStatus,
    /// `GET /app/installations`.
    Installations,
    /// `POST /app/installations/{id}/access_tokens`.
    AccessToken(u64),
    /// `GET /installation/repositories`.
    Repositories,
    /// `POST /repos/{owner}/{repo}/issues/{number}/comments`.
    Comment,
    /// `PATCH /repos/{owner}/{repo}/issues/comments/{id}`.
    CommentEdit,
    /// Anything else: 404.
    Unknown,
}

fn endpoint(method: &Method, path: &str) -> Endpoint {
    if method == Method::GET && path == "/app/installations" {
        return Endpoint::Installations;
    }
    if method == Method::GET && path == "/installation/repositories" {
        return Endpoint::Repositories;
    }
    if method == Method::POST
        && let Some(id) = path
            .strip_prefix("/app/installations/")
            .and_then(|rest| rest.strip_suffix("/access_tokens"))
            .and_then(|id| id.parse().ok())
    {
        return Endpoint::AccessToken(id);
    }
    let Some(rest) = path.strip_prefix("/repos/") else {
        return Endpoint::Unknown;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if method == Method::PATCH {
        return match parts.as_slice() {
            [_, _, "issues", "comments", id] if id.parse::<u64>().is_ok() => Endpoint::CommentEdit,
            _ => Endpoint::Unknown,
        };
    }
    if method != Method::POST {
        return Endpoint::Unknown;
    }
    match parts.as_slice() {
        [_, _, "statuses", sha] if !sha.is_empty() => Endpoint::CommitStatus,
        [_, _, "deployments"] => Endpoint::Deployment,
        [_, _, "deployments", id, "statuses"] if id.parse::<u64>().is_ok() => {
            Endpoint::DeploymentStatus
        }
        [_, _, "issues", n, "comments"] if n.parse::<u64>().is_ok() => Endpoint::Comment,
        _ => Endpoint::Unknown,
    }
}

/// A running fake on 127.0.0.1 and a port of its own.
pub struct FakeGithub {
    /// `http://127.0.0.1:<port>`: opusd's `--github-api-url`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGithub {
    /// Starts the fake, answering every status with 201.
    pub fn start() -> FakeGithub {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let inner = Arc::new(Mutex::new(Inner::default()));
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
        FakeGithub {
            url,
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, in the order received.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Queues answers for the next requests (then 201 again).
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.lock().script.extend(answers);
    }

    /// Queues answers for the next deployment statuses (then 201 again).
    pub fn script_deployment_statuses(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.lock().deployment_script.extend(answers);
    }

    /// Makes the fake a GitHub App's API: App `id`, whose JWTs must verify with `public_pem`
    /// (an RSA public key, PEM), with `installations`; installation tokens live an hour.
    pub fn enable_app(&self, id: u64, public_pem: &[u8], installations: Vec<FakeInstallation>) {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem).expect("an RSA public key");
        self.lock().app = Some(App {
            id,
            key,
            installations,
            token_lifetime: Duration::from_secs(3600),
            tokens: Vec::new(),
        });
    }

    /// How long the installation tokens issued from now on live.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        if let Some(app) = self.lock().app.as_mut() {
            app.token_lifetime = lifetime;
        }
    }

    /// Revokes every installation token issued so far: GitHub answers 401 to them.
    pub fn revoke_tokens(&self) {
        if let Some(app) = self.lock().app.as_mut() {
            for token in &mut app.tokens {
                token.2 = true;
            }
        }
    }

    /// Whether `token` is a live installation token of the fake App (issued, not revoked): what
    /// a git server in front of a private repository asks of a password.
    pub fn token_check(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let inner = self.inner.clone();
        move |token| {
            let inner = inner.lock().unwrap_or_else(|e| e.into_inner());
            inner
                .app
                .as_ref()
                .is_some_and(|app| live_installation(app, token).is_some())
        }
    }

    /// The installation tokens issued so far, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock()
            .app
            .as_ref()
            .map(|app| app.tokens.iter().map(|t| t.0.clone()).collect())
            .unwrap_or_default()
    }

    /// Drops the answers still scripted (201 again from the next request).
    pub fn clear_script(&self) {
        let mut inner = self.lock();
        inner.script.clear();
        inner.deployment_script.clear();
    }

    /// Waits up to `secs` seconds until `done` holds for the calls so far; returns them, or
    /// panics with them.
    pub fn wait_for(&self, secs: u64, what: &str, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let calls = self.calls();
            if done(&calls) {
                return calls;
            }
            if Instant::now() > deadline {
                let lines: Vec<_> = calls.iter().map(Call::line).collect();
                panic!("the fake GitHub did not get {what} within {secs}s; it got {lines:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = std::time::SystemTime::now();
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    let kind = endpoint(&method, &path);
    let scripted = match kind {
        Endpoint::CommitStatus => inner.script.pop_front(),
        Endpoint::DeploymentStatus => inner.deployment_script.pop_front(),
        _ => None,
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .unwrap_or("")
        .to_owned();
    let app_answer = inner
        .app
        .as_mut()
        .and_then(|app| app_answer(app, &kind, &bearer, uri.query().unwrap_or("")));
    let (status, extra, answer) = match (kind, scripted) {
        _ if app_answer.is_some() => {
            let (status, answer) = app_answer.unwrap_or((500, Value::Null));
            (status, Vec::new(), answer)
        }
        (Endpoint::Unknown, _) => (404, Vec::new(), json!({ "message": "Not Found" })),
        (_, Some(s)) => (
            s.status,
            s.headers,
            json!({ "message": format!("scripted {}", s.status) }),
        ),
        (Endpoint::CommitStatus, None) => (
            201,
            Vec::new(),
            json!({
                "id": inner.calls.len() + 1,
                "state": body["state"],
                "description": body["description"],
                "target_url": body["target_url"],
                "context": body["context"],
            }),
        ),
        (Endpoint::Deployment, None) => {
            inner.deployments += 1;
            (
                201,
                Vec::new(),
                json!({
                    "id": 1000 + inner.deployments,
                    "sha": body["ref"],
                    "ref": body["ref"],
                    "environment": body["environment"],
                    "transient_environment": body["transient_environment"],
                }),
            )
        }
        (Endpoint::DeploymentStatus, None) => (
            201,
            Vec::new(),
            json!({
                "id": inner.calls.len() + 1,
                "state": body["state"],
                "environment_url": body["environment_url"],
            }),
        ),
        // Without an App these are not served.
        (Endpoint::Installations | Endpoint::AccessToken(_) | Endpoint::Repositories, _) => {
            (404, Vec::new(), json!({ "message": "Not Found" }))
        }
        (Endpoint::Comment, None) => {
            inner.comments += 1;
            (
                201,
                Vec::new(),
                json!({ "id": 5000 + inner.comments, "body": body["body"] }),
            )
        }
        (Endpoint::CommentEdit, None) => {
            let id = path.rsplit('/').next().unwrap_or_default().to_owned();
            (
                200,
                Vec::new(),
                json!({ "id": id.parse::<u64>().unwrap_or_default(), "body": body["body"] }),
            )
        }
    };
    inner.calls.push(Call {
        method: method.to_string(),
        path,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        answered: status,
        answer: answer.clone(),
        received,
    });
    drop(inner);
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(answer),
    )
        .into_response();
    for (k, v) in extra {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// What the App's API answers `kind` with, given the request's bearer: `None` leaves the
/// request to the rest of the fake (a `/repos/...` call with a live installation token).
fn app_answer(app: &mut App, kind: &Endpoint, bearer: &str, query: &str) -> Option<(u16, Value)> {
    let unauthorized = |why: &str| Some((401, json!({ "message": why })));
    match kind {
        Endpoint::Installations | Endpoint::AccessToken(_) => {
            if let Err(why) = check_jwt(app, bearer) {
                return unauthorized(&why);
            }
            match kind {
                Endpoint::AccessToken(id) => {
                    if !app.installations.iter().any(|i| i.id == *id) {
                        return Some((404, json!({ "message": "Not Found" })));
                    }
                    let token = format!("ghs_fake{id}x{}", app.tokens.len() + 1);
                    app.tokens.push((token.clone(), *id, false));
                    let expires_at = humantime::format_rfc3339_seconds(
                        std::time::SystemTime::now() + app.token_lifetime,
                    )
                    .to_string();
                    Some((
                        201,
                        json!({
                            "token": token,
                            "expires_at": expires_at,
                            "permissions": { "statuses": "write", "deployments": "write", "contents": "read" },
                            "repository_selection": "selected",
                        }),
                    ))
                }
                _ => Some((
                    200,
                    Value::Array(
                        app.installations
                            .iter()
                            .map(|i| json!({ "id": i.id, "app_id": app.id, "target_type": "Organization" }))
                            .collect(),
                    ),
                )),
            }
        }
        Endpoint::Repositories => {
            let Some(installation) = live_installation(app, bearer) else {
                return unauthorized("Bad credentials");
            };
            let repos = app
                .installations
                .iter()
                .find(|i| i.id == installation)
                .map(|i| i.repositories.clone())
                .unwrap_or_default();
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<usize>().ok())
            };
            let per_page = param("per_page").unwrap_or(30).clamp(1, 100);
            let page = param("page").unwrap_or(1).max(1);
            let shown: Vec<Value> = repos
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            Some((
                200,
                json!({
                    "total_count": repos.len(),
                    "repository_selection": "selected",
                    "repositories": shown,
                }),
            ))
        }
        Endpoint::CommitStatus
        | Endpoint::Deployment
        | Endpoint::DeploymentStatus
        | Endpoint::Comment
        | Endpoint::CommentEdit => {
            match live_installation(app, bearer) {
                Some(_) => None,
                None => unauthorized("Bad credentials"),
            }
        }
        Endpoint::Unknown => None,
    }
}

/// The installation of a live (issued, unrevoked, unexpired) token.
fn live_installation(app: &App, token: &str) -> Option<u64> {
    app.tokens
        .iter()
        .find(|(t, _, revoked)| t == token && !revoked)
        .map(|(_, installation, _)| *installation)
}

/// Checks an App JWT as GitHub does: RS256 with the App's key, `iss` = the App's id, issued
/// in the past, expiring in the future but within 10 minutes.
fn check_jwt(app: &App, jwt: &str) -> Result<(), String> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(jwt, &app.key, &validation)
        .map_err(|e| format!("A JSON web token could not be decoded: {e}"))?
        .claims;
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err("'iat' and 'exp' must be numbers".into());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let iss = match &claims["iss"] {
        Value::String(s) => s.parse::<u64>().ok(),
        other => other.as_u64(),
    };
    if iss != Some(app.id) {
        return Err(format!(
            "'Issuer' claim ('iss') must be the App's id {}",
            app.id
        ));
    }
    if iat > now {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past".into(),
        );
    }
    if exp > now + 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    Ok(())
}
