//! The built-in `http` check: one GET of `path` on the URL checked, without following
//! redirects; it passes when the status is the one expected and, when `contains` is given, the
//! body contains it.
//!
//! Site hosts under `localhost` (`1-0-3--v--web.localhost`) are sent to the loopback address
//! without asking a resolver (curl does the same; the system resolver may not know them).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use opus_core::recipe::checks::HttpCheckSpec;

use crate::build::steps::LogSink;

/// How much of a body is shown when it lacks what it should contain.
const BODY_SHOWN: usize = 512;

/// GETs `spec.path` relative to `base`; `Err` says why the check failed.
pub(super) async fn get<L: LogSink>(
    spec: &HttpCheckSpec,
    base: &str,
    timeout: Duration,
    log: &L,
) -> Result<(), String> {
    let url = reqwest::Url::parse(base)
        .and_then(|b| b.join(spec.path.trim_start_matches('/')))
        .map_err(|e| format!("cannot make a URL of {base:?} and {:?}: {e}", spec.path))?;
    // reqwest is built without a default crypto provider (see `hooks::HttpTransport::new`).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("opus-checks/", env!("CARGO_PKG_VERSION")));
    if let Some(host) = url.host_str().filter(|h| is_localhost(h)) {
        // Port 0: the URL's own port is used.
        client = client.resolve(host, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    }
    let client = client
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    log.opus("step 1", &format!("GET {url}"));
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {}", error_chain(&e)))?;
    log.line("step 1", "stdout", &format!("HTTP {status}, {} bytes", body.len()));
    if status.as_u16() != spec.status {
        return Err(format!(
            "GET {} answered {}, expected {}",
            spec.path,
            status.as_u16(),
            spec.status
        ));
    }
    if let Some(wanted) = &spec.contains
        && !body.contains(wanted.as_str())
    {
        let mut cut = body.len().min(BODY_SHOWN);
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        for line in body[..cut].lines() {
            log.line("step 1", "stdout", line);
        }
        return Err(format!(
            "GET {} answered {} without {wanted:?} in its body",
            spec.path,
            status.as_u16()
        ));
    }
    Ok(())
}

/// Whether `host` is `localhost` or a name under it.
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// An error with its sources, on one line (reqwest's own `Display` leaves out the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
