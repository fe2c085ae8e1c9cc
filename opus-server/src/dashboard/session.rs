//! Who the visitor is. Without an API token (opusd then listens on loopback only, as the API
//! does) everyone acts, and nobody logs in. With one, the login form takes the API token (acts)
//! or the viewer token (sees everything, acts on nothing) and sets a session cookie: random,
//! `HttpOnly`, `SameSite=Strict`, `Secure` over TLS, expiring after [`SESSION_LIFETIME`].
//! Sessions live in memory: a restarted opusd asks to log in again.
//!
//! Every action is a POST carrying the session's CSRF token in a hidden field; without a token,
//! one random CSRF token for the process plays that part (a page of another site can neither
//! read it nor send it), and only requests to a loopback host name are answered (a name of another
//! site rebound to 127.0.0.1 is refused).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, HOST, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, extract::Query};
use serde::Deserialize;

use super::{Dashboard, DashboardError, layout};
use crate::api::auth::same_token;

/// How long a session cookie lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// The session cookie's name.
const COOKIE_NAME: &str = "opus_session";

/// More sessions than this and the oldest are dropped (each login makes one).
const MAX_SESSIONS: usize = 10_000;

/// What a visitor may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Sees and acts (the API token, or no token at all).
    Operator,
    /// Sees everything, acts on nothing (the viewer token).
    Viewer,
}

/// One logged-in browser.
struct Session {
    role: Role,
    csrf: Arc<str>,
    expires: Instant,
}

/// The tokens, and the sessions made by logging in with them.
pub(super) struct Sessions {
    token: Option<String>,
    viewer_token: Option<String>,
    secure_cookie: bool,
    /// The CSRF token of visitors who need no login (no API token).
    anonymous_csrf: Arc<str>,
    by_id: Mutex<HashMap<String, Session>>,
}

/// A random token, hex: session ids and CSRF tokens.
fn random_token() -> Result<String, DashboardError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| DashboardError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

impl Sessions {
    pub(super) fn new(
        token: Option<String>,
        viewer_token: Option<String>,
        tls: bool,
    ) -> Result<Sessions, DashboardError> {
        Ok(Sessions {
            token,
            viewer_token,
            secure_cookie: tls,
            anonymous_csrf: Arc::from(random_token()?),
            by_id: Mutex::new(HashMap::new()),
        })
    }

    /// Whether visitors must log in.
    pub(super) fn login_required(&self) -> bool {
        self.token.is_some()
    }

    /// The role a token given at the login form grants, if any (compared in constant time).
    fn role_of(&self, given: &str) -> Option<Role> {
        if self.token.as_deref().is_some_and(|t| same_token(given, t)) {
            return Some(Role::Operator);
        }
        if self
            .viewer_token
            .as_deref()
            .is_some_and(|t| same_token(given, t))
        {
            return Some(Role::Viewer);
        }
        None
    }

    /// Starts a session; returns its id.
    fn start(&self, role: Role) -> Result<String, DashboardError> {
        let id = random_token()?;
        let csrf = Arc::from(random_token()?);
        let now = Instant::now();
        let mut sessions = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                role,
                csrf,
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok(id)
    }

    /// The live session of a cookie's id.
    fn find(&self, id: &str) -> Option<(Role, Arc<str>)> {
        let sessions = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| (s.role, s.csrf.clone()))
    }

    fn end(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// The `Set-Cookie` value of a new session.
    fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_LIFETIME.as_secs(),
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    fn expired_cookie(&self) -> String {
        format!(
            "{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }
}

/// The session id a request's `Cookie` headers carry.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

/// The visitor of a request: what they may do, their CSRF token, and whether they logged in.
#[derive(Debug, Clone)]
pub(crate) struct Visitor {
    pub(super) role: Role,
    pub(super) csrf: Arc<str>,
    /// Whether this visitor logged in (and so can log out).
    pub(super) logged_in: bool,
}

impl Visitor {
    /// Refuses a viewer: `doing` names the action ("roll back").
    pub(super) fn must_act(&self, doing: &'static str) -> Result<(), DashboardError> {
        match self.role {
            Role::Operator => Ok(()),
            Role::Viewer => Err(DashboardError::ReadOnly(doing)),
        }
    }

    /// Refuses a form whose CSRF token is not this visitor's.
    pub(super) fn check_csrf(&self, given: &str) -> Result<(), DashboardError> {
        if same_token(given, &self.csrf) {
            Ok(())
        } else {
            Err(DashboardError::Csrf)
        }
    }

    /// Whether the visitor can act (the page shows action buttons).
    pub(super) fn can_act(&self) -> bool {
        self.role == Role::Operator
    }
}

impl FromRequestParts<Arc<Dashboard>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        d: &Arc<Dashboard>,
    ) -> Result<Visitor, Response> {
        let sessions = &d.sessions;
        if !sessions.login_required() {
            // Without a token, a page of another site whose name was rebound to 127.0.0.1 must
            // not read the dashboard (nor its CSRF token): only loopback names are answered.
            let host = parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !is_loopback_host(host) {
                return Err(layout::error_page(
                    StatusCode::FORBIDDEN,
                    "this opusd has no API token, so its dashboard answers only at a loopback \
                     address (http://127.0.0.1:<port>/ or http://localhost:<port>/); start opusd \
                     with --token to reach it by another name",
                ));
            }
            return Ok(Visitor {
                role: Role::Operator,
                csrf: sessions.anonymous_csrf.clone(),
                logged_in: false,
            });
        }
        if let Some((role, csrf)) = session_cookie(&parts.headers).and_then(|id| sessions.find(id))
        {
            return Ok(Visitor {
                role,
                csrf,
                logged_in: true,
            });
        }
        if parts.method == Method::GET {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let target = format!("/login?next={}", percent_encode(&next));
            return Err(redirect(&target, None));
        }
        Err(layout::error_page(
            StatusCode::UNAUTHORIZED,
            "log in first: this opusd asks for its API token (or viewer token) at /login",
        ))
    }
}

/// Whether a `Host` header names this machine's loopback: `localhost` (or a name under it),
/// `127.0.0.1` and the rest of 127/8, or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encodes a query value.
fn percent_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A 303 to `to`, with a cookie to set.
fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(SET_COOKIE, c);
    }
    resp
}

/// Where to go after logging in: a path of this dashboard, never another site (`//evil`).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n,
        _ => "/",
    }
}

/// `?next=` of the login page.
#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the form.
pub(super) async fn login_page(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !d.sessions.login_required() {
        return redirect("/", None);
    }
    layout::login_page(safe_next(q.next.as_deref()), None)
}

/// The login form.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login`: a right token starts a session and goes on to `next`; a wrong one shows the
/// form again with the reason (401).
pub(super) async fn login(
    State(d): State<Arc<Dashboard>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    match d.sessions.role_of(form.token.trim()) {
        Some(role) => match d.sessions.start(role) {
            Ok(id) => {
                tracing::info!(role = ?role, "dashboard login");
                redirect(next, Some(d.sessions.cookie(&id)))
            }
            Err(e) => e.into_response(),
        },
        None => {
            tracing::warn!("dashboard login with a wrong token");
            let mut resp = layout::login_page(next, Some(&DashboardError::WrongToken.to_string()));
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp
        }
    }
}

/// The logout form: its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    /// Missing reads as empty, which the check refuses (403, not a form error).
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session and removes the cookie.
pub(super) async fn logout(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, DashboardError> {
    visitor.check_csrf(&form.csrf)?;
    if let Some(id) = session_cookie(&headers) {
        d.sessions.end(id);
    }
    Ok(redirect("/login", Some(d.sessions.expired_cookie())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_roles_and_sessions_expire_from_the_map() {
        let s = Sessions::new(Some("api".into()), Some("view".into()), false).expect("sessions");
        assert_eq!(s.role_of("api"), Some(Role::Operator));
        assert_eq!(s.role_of("view"), Some(Role::Viewer));
        assert_eq!(s.role_of("other"), None);
        assert_eq!(s.role_of(""), None);
        let id = s.start(Role::Viewer).expect("a session");
        let (role, csrf) = s.find(&id).expect("a live session");
        assert_eq!(role, Role::Viewer);
        assert_eq!(csrf.len(), 64);
        s.end(&id);
        assert!(s.find(&id).is_none());
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let plain = Sessions::new(Some("t".into()), None, false)
            .expect("sessions")
            .cookie("abc");
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(plain.contains("Max-Age=43200") && !plain.contains("Secure"));
        let tls = Sessions::new(Some("t".into()), None, true)
            .expect("sessions")
            .cookie("abc");
        assert!(tls.ends_with("; Secure"), "{tls}");
    }

    #[test]
    fn only_loopback_host_names_pass_without_a_token() {
        for ok in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "localhost:7070",
            "LOCALHOST",
            "web.localhost:1",
            "[::1]:7070",
            "127.1.2.3:80",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:7070",
            "192.168.1.2:7070",
            "localhost.evil.example",
            "",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn next_never_leaves_the_dashboard() {
        assert_eq!(safe_next(Some("/projects/web")), "/projects/web");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "evil"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let req = axum::http::Request::builder()
            .header(COOKIE, "a=1; opus_session=xyz; b=2")
            .body(())
            .expect("request");
        assert_eq!(session_cookie(req.headers()), Some("xyz"));
    }
}
