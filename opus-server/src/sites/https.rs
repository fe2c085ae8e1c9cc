//! What the site server needs to know of HTTPS: the ACME HTTP-01 answers it serves on the plain
//! HTTP listener (`/.well-known/acme-challenge/<token>`), which hosts have a certificate (so
//! plain HTTP redirects them to HTTPS with a 308, which keeps the method; a wildcard
//! certificate `*.<domain>` covers the hosts one label under it), the TLS listener's port for
//! those redirects, and the `Strict-Transport-Security` header of HTTPS responses.
//!
//! The certificate manager (`crate::acme`) writes it; requests only read it. Each part is an
//! `ArcSwap`, so a request takes no lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use arc_swap::ArcSwap;

/// The path prefix of HTTP-01 challenges (RFC 8555 section 8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737): a TLS connection that negotiated it
/// is closed after the handshake.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// HTTPS state shared by the certificate manager (writer) and the site handler (reader).
#[derive(Debug, Default)]
pub struct HttpsState {
    /// Pending HTTP-01 challenges: token -> key authorization.
    challenges: ArcSwap<HashMap<String, String>>,
    /// Hosts served over HTTPS with a certificate.
    certified: ArcSwap<HashSet<String>>,
    /// Whether plain HTTP requests for a certified host are redirected to HTTPS.
    redirect: bool,
    /// The `Strict-Transport-Security` header of HTTPS responses, if one is sent.
    hsts: Option<axum::http::HeaderValue>,
    /// The TLS listener's port (0 until bound).
    tls_port: AtomicU16,
}

impl HttpsState {
    /// A state that redirects certified hosts to HTTPS when `redirect` is set, and sends
    /// `Strict-Transport-Security: max-age=<hsts_max_age>` over HTTPS unless it is 0.
    pub fn new(redirect: bool, hsts_max_age: u64) -> HttpsState {
        let hsts = (hsts_max_age > 0).then(|| {
            axum::http::HeaderValue::from_str(&format!("max-age={hsts_max_age}"))
                .unwrap_or(axum::http::HeaderValue::from_static("max-age=31536000"))
        });
        HttpsState {
            redirect,
            hsts,
            ..HttpsState::default()
        }
    }

    /// Serves `key_authorization` for `token` until [`HttpsState::withdraw`].
    pub fn publish(&self, token: &str, key_authorization: &str) {
        self.challenges.rcu(|c| {
            let mut c = HashMap::clone(c);
            c.insert(token.to_owned(), key_authorization.to_owned());
            c
        });
    }

    /// Stops answering `token`.
    pub fn withdraw(&self, token: &str) {
        self.challenges.rcu(|c| {
            let mut c = HashMap::clone(c);
            c.remove(token);
            c
        });
    }

    /// The answer to the HTTP-01 challenge `token`, if it is pending.
    pub fn challenge(&self, token: &str) -> Option<String> {
        self.challenges.load().get(token).cloned()
    }

    /// Replaces the set of hosts that have a certificate.
    pub fn set_certified(&self, hosts: HashSet<String>) {
        self.certified.store(Arc::new(hosts));
    }

    /// Whether `host` has a certificate: its own, or the wildcard of its parent domain.
    pub fn is_certified(&self, host: &str) -> bool {
        let certified = self.certified.load();
        certified.contains(host)
            || host
                .split_once('.')
                .is_some_and(|(_, parent)| certified.contains(&format!("*.{parent}")))
    }

    /// Records the TLS listener's port.
    pub fn set_tls_port(&self, port: u16) {
        self.tls_port.store(port, Ordering::Relaxed);
    }

    /// The `https://` URL that a plain request for `host` and `path_and_query` is redirected to,
    /// when redirects are on and the host has a certificate.
    pub fn redirect_for(&self, host: &str, path_and_query: &str) -> Option<String> {
        if !self.redirect || !self.is_certified(host) {
            return None;
        }
        Some(self.https_url(host, path_and_query))
    }

    /// `https://<host>[:port]<path>`, the port named unless it is 443.
    pub fn https_url(&self, host: &str, path_and_query: &str) -> String {
        match self.tls_port.load(Ordering::Relaxed) {
            443 | 0 => format!("https://{host}{path_and_query}"),
            p => format!("https://{host}:{p}{path_and_query}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_redirects() {
        let s = HttpsState::new(true, 0);
        s.publish("tok", "tok.thumb");
        assert_eq!(s.challenge("tok").as_deref(), Some("tok.thumb"));
        s.withdraw("tok");
        assert_eq!(s.challenge("tok"), None);

        assert_eq!(s.redirect_for("www.acme.com", "/a?b"), None);
        s.set_certified(HashSet::from(["www.acme.com".to_owned()]));
        s.set_tls_port(8443);
        assert_eq!(
            s.redirect_for("www.acme.com", "/a?b").as_deref(),
            Some("https://www.acme.com:8443/a?b")
        );
        s.set_tls_port(443);
        assert_eq!(
            s.redirect_for("www.acme.com", "/").as_deref(),
            Some("https://www.acme.com/")
        );
        let off = HttpsState::new(false, 0);
        off.set_certified(HashSet::from(["www.acme.com".to_owned()]));
        assert_eq!(off.redirect_for("www.acme.com", "/"), None);
    }

    #[test]
    fn a_wildcard_certificate_covers_one_label_under_its_domain() {
        let s = HttpsState::new(true, 0);
        s.set_certified(HashSet::from(["*.preview.acme.com".to_owned()]));
        assert!(s.is_certified("pr-1--web.preview.acme.com"));
        assert!(!s.is_certified("a.pr-1--web.preview.acme.com"));
        assert!(!s.is_certified("preview.acme.com"));
        assert!(s.redirect_for("web.preview.acme.com", "/").is_some());
    }

    #[test]
    fn hsts_is_sent_unless_off_or_set_by_the_version() {
        use axum::http::header::STRICT_TRANSPORT_SECURITY as HSTS;
        let on = HttpsState::new(true, 31_536_000);
        let mut r = axum::response::Response::new(axum::body::Body::empty());
        add_hsts(Some(&on), &mut r);
        assert_eq!(r.headers()[HSTS], "max-age=31536000");

        let mut own = axum::response::Response::new(axum::body::Body::empty());
        own.headers_mut()
            .insert(HSTS, axum::http::HeaderValue::from_static("max-age=60"));
        add_hsts(Some(&on), &mut own);
        assert_eq!(own.headers()[HSTS], "max-age=60");

        let off = HttpsState::new(true, 0);
        let mut r = axum::response::Response::new(axum::body::Body::empty());
        add_hsts(Some(&off), &mut r);
        assert!(!r.headers().contains_key(HSTS));
    }
}

/// Marks a request that came over the TLS listener (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverTls;

/// What HTTPS answers before routing, if anything: an HTTP-01 challenge (plain HTTP, any host;
/// never redirected), or a 308 redirect of a certified host's plain request to HTTPS.
pub(crate) fn answer(
    state: Option<&HttpsState>,
    req: &axum::http::request::Parts,
    host: &str,
) -> Option<axum::response::Response> {
    use axum::http::{HeaderValue, StatusCode, header};
    let state = state?;
    if req.extensions.get::<OverTls>().is_some() {
        return None;
    }
    let path = req.uri.path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        let answer = state.challenge(token)?;
        let mut r = axum::response::Response::new(axum::body::Body::from(answer));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Some(r);
    }
    let host = super::host_without_port(host)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = state.redirect_for(&host, target)?;
    let location = HeaderValue::from_str(&location).ok()?;
    let mut r = axum::response::Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut().insert(header::LOCATION, location);
    Some(r)
}

/// Adds `Strict-Transport-Security` to a response sent over TLS, unless HSTS is off or the
/// version's `_headers` set one already.
pub(crate) fn add_hsts(state: Option<&HttpsState>, resp: &mut axum::response::Response) {
    let Some(value) = state.and_then(|s| s.hsts.clone()) else {
        return;
    };
    let headers = resp.headers_mut();
    if !headers.contains_key(axum::http::header::STRICT_TRANSPORT_SECURITY) {
        headers.insert(axum::http::header::STRICT_TRANSPORT_SECURITY, value);
    }
}
