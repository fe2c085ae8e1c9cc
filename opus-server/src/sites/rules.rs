//! Applying a version's redirect and header rules (`opus_core::site_rules`) to a request.
//!
//! Redirect rules come before files, as on Netlify: the first rule matching the path (and its
//! query conditions) applies, unless it is not forced (`!`) and the path names a page of the
//! version, which then wins ("shadowing"). A 3xx rule answers with `Location`; a 200 rule serves
//! its target's content at the requested URL; 404 and 410 rules serve their target with that
//! status. Header rules add (or replace) headers on every answer whose path matches.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use opus_core::site_rules::{HEADERS_FILE, REDIRECTS_FILE};

use super::handler::{clean_path, has_page, serve_page};
use super::version::SiteVersion;

/// Whether `rel` is one of the rules files, which are read when the version is stored and never
/// served (as on Netlify).
pub(super) fn is_rules_file(rel: &str) -> bool {
    rel == REDIRECTS_FILE || rel == HEADERS_FILE
}

/// The answer of the first redirect rule matching the request, or `None` to serve the path as
/// usual (no rule matched, a file shadows an unforced rule, or a rewrite's target is missing).
pub(super) async fn apply_redirects(
    site: &SiteVersion,
    req: &axum::http::request::Parts,
    rel: &str,
    dir: bool,
    head: bool,
) -> Option<Response> {
    if !site.rules.has_redirects() {
        return None;
    }
    let matched = site.rules.redirect(req.uri.path(), req.uri.query())?;
    if !matched.force && has_page(site, rel, dir).await {
        return None;
    }
    let status = StatusCode::from_u16(matched.status).ok()?;
    if matched.is_redirect() {
        let Ok(location) = HeaderValue::from_str(&matched.to) else {
            tracing::warn!(project = %site.project, version = %site.version, to = %matched.to, "a redirect target is not a valid header value");
            return None;
        };
        let mut r = Response::new(Body::empty());
        *r.status_mut() = status;
        r.headers_mut().insert(header::LOCATION, location);
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r.headers_mut()
            .insert("x-opus-version", site.version_header.clone());
        return Some(r);
    }
    let target = matched.to.split('?').next().unwrap_or("");
    let (trel, tdir) = clean_path(target).ok()?;
    serve_page(site, &trel, tdir, status, &req.headers, head).await
}

/// Adds the headers of the version's header rules matching `path` to `resp`, replacing the
/// server's own of the same name (a rule's `Cache-Control` wins).
pub(super) fn add_headers(site: &SiteVersion, path: &str, resp: &mut Response) {
    if !site.rules.has_headers() {
        return;
    }
    for (name, value) in site.rules.headers(path) {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => {
                resp.headers_mut().insert(n, v);
            }
            _ => {
                tracing::warn!(project = %site.project, version = %site.version, header = %name, "a header rule is not a valid header");
            }
        }
    }
}
