//! The HTTP handler of the site server.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::SiteServer;
use super::policy::HostPolicy;
use super::protect;
use super::rules;
use super::version::{CachedFile, FileMeta, Found, OpenError, SiteVersion};

const HTML_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const REVALIDATE: HeaderValue = HeaderValue::from_static("public, max-age=0, must-revalidate");
const VARY: HeaderValue = HeaderValue::from_static("accept-encoding");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const GZIP: HeaderValue = HeaderValue::from_static("gzip");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Answers one request.
pub(crate) async fn serve(State(server): State<Arc<SiteServer>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let resp = answer(&server, &parts).await;
    server.metrics().site_request(resp.status());
    resp
}

async fn answer(server: &SiteServer, req: &axum::http::request::Parts) -> Response {
    let host = match requested_host(req) {
        Ok(host) => host,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    if let Some(r) = super::https::answer(server.https().map(|h| h.as_ref()), req, host) {
        return r;
    }
    // One snapshot, read once: the whole request is served from the version it names.
    let (site, policy) = {
        let table = server.table.load();
        (
            server.route(&table, host),
            server.policy(&table, host).cloned(),
        )
    };
    let (site, policy) = match site {
        Some(site) => (site, policy),
        // Not an environment's host: perhaps a version's own (`42--v--web`).
        None => match server.version_site(host).await {
            Some(site) => {
                let auth = server.version_host_credential(site.project.as_str());
                (site, Some(HostPolicy::version_host(auth)))
            }
            None => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "no site is deployed at this address\n",
                );
            }
        },
    };
    if let Some(auth) = policy.as_ref().and_then(|p| p.auth.as_ref()) {
        if !auth.allows(&req.headers).await {
            let mut r = protect::challenge();
            if let Some(policy) = &policy {
                policy.apply(&mut r);
            }
            return r;
        }
    }
    let mut resp = answer_site(&site, req).await;
    if let Some(policy) = policy {
        policy.apply(&mut resp);
    }
    resp
}

/// Answers a request for `site`.
async fn answer_site(site: &Arc<SiteVersion>, req: &axum::http::request::Parts) -> Response {
    if req.method != Method::GET && req.method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (rel, dir) = match clean_path(req.uri.path()) {
        Ok(p) => p,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    let head = req.method == Method::HEAD;
    let mut resp = answer_path(site, req, &rel, dir, head).await;
    rules::add_headers(site, req.uri.path(), &mut resp);
    resp
}

/// Answers a checked path of `site`: its redirect rules first, then the file, the SPA fallback,
/// the version's 404.html.
async fn answer_path(
    site: &SiteVersion,
    req: &axum::http::request::Parts,
    rel: &str,
    dir: bool,
    head: bool,
) -> Response {
    let headers = &req.headers;
    if rules::is_rules_file(rel) {
        return not_found(site, headers, head).await;
    }
    if let Some(r) = rules::apply_redirects(site, req, rel, dir, head).await {
        return r;
    }
    if let Some(r) = serve_page(site, rel, dir, StatusCode::OK, headers, head).await {
        return r;
    }
    if site.spa && looks_like_page(rel) {
        if let Some(r) = serve_path(site, "index.html", StatusCode::OK, headers, head).await {
            return r;
        }
    }
    not_found(site, headers, head).await
}

/// The version's 404.html with status 404, else a plain 404.
async fn not_found(site: &SiteVersion, headers: &HeaderMap, head: bool) -> Response {
    if let Some(r) = serve_path(site, "404.html", StatusCode::NOT_FOUND, headers, head).await {
        return r;
    }
    plain(StatusCode::NOT_FOUND, "not found\n")
}

/// Serves the page at `rel` with `status`: the file itself, then a folder's index.html, then
/// `<path>.html`. `None` when the version has none of them.
pub(super) async fn serve_page(
    site: &SiteVersion,
    rel: &str,
    dir: bool,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
) -> Option<Response> {
    if rel.is_empty() {
        return serve_path(site, "index.html", status, headers, head).await;
    }
    if dir {
        return serve_path(site, &format!("{rel}/index.html"), status, headers, head).await;
    }
    if let Some(r) = serve_path(site, rel, status, headers, head).await {
        return Some(r);
    }
    for c in [format!("{rel}/index.html"), format!("{rel}.html")] {
        if let Some(r) = serve_path(site, &c, status, headers, head).await {
            return Some(r);
        }
    }
    None
}

/// Whether `rel` names a page of the version (as [`serve_page`] looks them up), without serving
/// it: what a rule that is not forced yields to.
pub(super) async fn has_page(site: &SiteVersion, rel: &str, dir: bool) -> bool {
    if rel.is_empty() {
        return site.find("index.html").await.is_some();
    }
    if dir {
        return site.find(&format!("{rel}/index.html")).await.is_some();
    }
    site.find(rel).await.is_some()
        || site.find(&format!("{rel}/index.html")).await.is_some()
        || site.find(&format!("{rel}.html")).await.is_some()
}

/// The host a request asks for: the authority of an absolute-form target
/// (`GET http://web.localhost/ HTTP/1.1`), which RFC 9112 section 3.2.2 says wins over Host,
/// else the Host header. Two Host headers are refused: proxies and caches in front may pick
/// the other one.
fn requested_host(req: &axum::http::request::Parts) -> Result<&str, &'static str> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header\n");
    }
    if let Some(authority) = req.uri.authority() {
        return Ok(authority.host());
    }
    Ok(host.and_then(|h| h.to_str().ok()).unwrap_or(""))
}

/// Serves `rel` from the version with `status` if the version has it: from memory when cached.
async fn serve_path(
    site: &SiteVersion,
    rel: &str,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
) -> Option<Response> {
    if let Some(file) = site.cached(rel) {
        return Some(send_cached(site, &file, status, headers, head));
    }
    let found = site.find(rel).await?;
    Some(send(site, found, status, headers, head).await)
}

/// A short plain-text answer.
pub(super) fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, TEXT);
    r.headers_mut().insert(header::CACHE_CONTROL, HTML_CACHE);
    r
}

/// Checks and normalises a request path: returns the path inside the version (no leading `/`)
/// and whether it named a folder (trailing `/`). Anything that could name something outside the
/// version is refused: `..` and `.` segments (encoded or not), encoded slashes and backslashes,
/// backslashes, NUL and other control characters, invalid UTF-8.
pub(crate) fn clean_path(raw: &str) -> Result<(Cow<'_, str>, bool), &'static str> {
    // Fast path: nothing encoded, no empty, `.` or `..` segments: the path as it is.
    let simple = raw.starts_with('/')
        && raw.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'~' | b'+')
        })
        && !raw.contains("//")
        && !raw.contains("/./")
        && !raw.contains("/../")
        && !raw.ends_with("/.")
        && !raw.ends_with("/..");
    if simple {
        let dir = raw.ends_with('/');
        let rel = raw[1..].strip_suffix('/').unwrap_or(&raw[1..]);
        return Ok((Cow::Borrowed(rel), dir));
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err("encoded slashes are not allowed in paths\n");
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "the path is not valid UTF-8\n")?;
    if decoded.chars().any(|c| c.is_control()) {
        return Err("control characters are not allowed in paths\n");
    }
    if decoded.contains('\\') {
        return Err("backslashes are not allowed in paths\n");
    }
    let dir = decoded.ends_with('/');
    let mut out = String::with_capacity(decoded.len());
    for seg in decoded.split('/') {
        match seg {
            "" => continue,
            "." | ".." => return Err("`.` and `..` are not allowed in paths\n"),
            s => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(s);
            }
        }
    }
    Ok((Cow::Owned(out), dir))
}

/// Whether an unknown path is a page (SPA route) rather than a missing asset: no extension, or
/// `.html`.
fn looks_like_page(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or("");
    match name.rsplit_once('.') {
        None => true,
        Some((_, ext)) => ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm"),
    }
}

/// The headers that depend on a file's path.
pub(crate) fn file_meta(rel: &str) -> FileMeta {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let text_like = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml" | "application/xml"
        );
    let ct = if text_like && mime.get_param("charset").is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    };
    let is_html = mime.essence_str() == "text/html";
    let compressible = text_like
        || matches!(
            mime.essence_str(),
            "application/wasm" | "font/ttf" | "font/otf" | "application/manifest+json"
        );
    let cache_control = if is_html {
        HTML_CACHE
    } else if is_fingerprinted(name) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    FileMeta {
        content_type: HeaderValue::from_str(&ct)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        cache_control,
        compressible,
    }
}

/// Whether a file name carries a content hash (`app.3f9a1c2b.js`, `index-BdX3kV9a.js`): a part
/// of the stem, after the first, of 8 to 64 letters and digits with at least one digit.
pub(crate) fn is_fingerprinted(name: &str) -> bool {
    let stem = match name.rsplit_once('.') {
        Some((stem, _)) => stem,
        None => return false,
    };
    stem.split(['.', '-', '_']).skip(1).any(|part| {
        (8..=64).contains(&part.len())
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
            && part.bytes().any(|b| b.is_ascii_digit())
    })
}

/// Whether the client accepts gzip (`q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 says for this header).
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(tag) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag
        })
}

/// A requested byte range.
enum Wanted {
    /// The whole file.
    All,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing satisfiable (416).
    Unsatisfiable,
}

/// Reads a single `Range: bytes=` request; several ranges or a malformed header mean the whole
/// file (RFC 9110 allows ignoring Range), as does an `If-Range` that does not match.
fn wanted(headers: &HeaderMap, size: u64, etag: &HeaderValue) -> Wanted {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::All;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if if_range != etag {
            return Wanted::All;
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Wanted::All;
        };
        if n == 0 || size == 0 {
            return Wanted::Unsatisfiable;
        }
        return Wanted::Part(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return Wanted::All;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Wanted::All,
        }
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(start, end.min(size - 1))
}

/// Sends a found file with `status` (200, or 404 for the version's 404.html).
async fn send(
    site: &SiteVersion,
    found: Found,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    let cached = match site.cached(&found.rel) {
        Some(c) => Some(c),
        None => match site.load_small(&found, file_meta(&found.rel)).await {
            Ok(c) => c,
            Err(e) => return cannot_open(site, &found.rel, &e),
        },
    };
    match cached {
        Some(file) => send_cached(site, &file, status, headers, head),
        None => send_streamed(site, &found, status, headers, head).await,
    }
}

/// The answer when a found file cannot be opened: logged with what failed; the client learns only
/// whether to retry. The remote store failing is 502 (with `Retry-After`), this machine 500.
fn cannot_open(site: &SiteVersion, rel: &str, e: &OpenError) -> Response {
    if e.is_store() {
        tracing::error!(project = %site.project, version = %site.version, path = %rel, error = %e, "cannot fetch a deployed file from the artifact store");
        let mut r = plain(
            StatusCode::BAD_GATEWAY,
            "this file cannot be fetched right now; try again shortly\n",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    tracing::error!(project = %site.project, version = %site.version, path = %rel, error = %e, "cannot read a deployed file");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n")
}

fn base_headers(
    site: &SiteVersion,
    r: &mut Response,
    meta: &FileMeta,
    etag: &HeaderValue,
    status: StatusCode,
) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, meta.content_type.clone());
    h.insert(
        header::CACHE_CONTROL,
        if status == StatusCode::OK {
            meta.cache_control.clone()
        } else {
            HTML_CACHE
        },
    );
    h.insert(header::ETAG, etag.clone());
    h.insert("x-opus-version", site.version_header.clone());
    if status == StatusCode::OK {
        h.insert(header::ACCEPT_RANGES, BYTES);
    }
    if meta.compressible {
        h.insert(header::VARY, VARY);
    }
}

fn not_modified(site: &SiteVersion, meta: &FileMeta, etag: &HeaderValue) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    base_headers(site, &mut r, meta, etag, StatusCode::OK);
    r.headers_mut().remove(header::CONTENT_TYPE);
    r
}

fn range_not_satisfiable(size: u64) -> Response {
    let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

fn content_range(r: &mut Response, start: u64, end: u64, size: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
}

fn send_cached(
    site: &SiteVersion,
    file: &CachedFile,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    let size = file.body.len() as u64;
    if status == StatusCode::OK {
        let gz = file.gzip.is_some() && accepts_gzip(headers);
        let etag = if gz { &file.etag_gzip } else { &file.etag };
        if none_match(headers, etag) {
            return not_modified(site, &file.meta, etag);
        }
        match wanted(headers, size, &file.etag) {
            Wanted::All => {}
            Wanted::Unsatisfiable => return range_not_satisfiable(size),
            Wanted::Part(start, end) => {
                let body = file.body.slice(start as usize..=end as usize);
                let len = body.len();
                let mut r = Response::new(if head {
                    Body::empty()
                } else {
                    Body::from(body)
                });
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                base_headers(site, &mut r, &file.meta, &file.etag, StatusCode::OK);
                content_range(&mut r, start, end, size);
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                return r;
            }
        }
        let (body, etag) = match (&file.gzip, gz) {
            (Some(g), true) => (g.clone(), &file.etag_gzip),
            _ => (file.body.clone(), &file.etag),
        };
        let len = body.len();
        let mut r = Response::new(if head {
            Body::empty()
        } else {
            Body::from(body)
        });
        base_headers(site, &mut r, &file.meta, etag, status);
        if gz {
            r.headers_mut().insert(header::CONTENT_ENCODING, GZIP);
        }
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return r;
    }
    // A 404 page: no ranges, no conditionals.
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        Body::from(file.body.clone())
    });
    *r.status_mut() = status;
    base_headers(site, &mut r, &file.meta, &file.etag, status);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    r
}

async fn send_streamed(
    site: &SiteVersion,
    found: &Found,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    let meta = file_meta(&found.rel);
    let size = found.size;
    let (start, end, partial) = if status == StatusCode::OK {
        if none_match(headers, &found.etag) {
            return not_modified(site, &meta, &found.etag);
        }
        match wanted(headers, size, &found.etag) {
            Wanted::All => (0, size.saturating_sub(1), false),
            Wanted::Part(s, e) => (s, e, true),
            Wanted::Unsatisfiable => return range_not_satisfiable(size),
        }
    } else {
        (0, size.saturating_sub(1), false)
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let body = if head || len == 0 {
        Body::empty()
    } else {
        let mut f = match site.open(&found.rel).await {
            Ok(f) => f,
            Err(e) => return cannot_open(site, &found.rel, &e),
        };
        if start > 0 {
            if let Err(e) = f.seek(std::io::SeekFrom::Start(start)).await {
                tracing::warn!(project = %site.project, version = %site.version, path = %found.rel, error = %e, "cannot seek a deployed file");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
            }
        }
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            f.take(len),
            64 * 1024,
        ))
    };
    let mut r = Response::new(body);
    *r.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        status
    };
    base_headers(site, &mut r, &meta, &found.etag, status);
    if partial {
        content_range(&mut r, start, end, size);
    }
    // Large files are sent as stored (no on-the-fly gzip): their ETag names those bytes.
    r.headers_mut().remove(header::VARY);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}
