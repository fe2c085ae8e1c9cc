//! The built-in `http` check: one GET of `path` on the URL checked, without following
//! redirects; it passes when the status is the one expected and, when `contains` is given, the
//! body contains it.
//!
//! Site hosts under `localhost` (`1-0-3--v--web.localhost`) are sent to the loopback address
//! without asking a resolver (curl does the same; the system resolver may not know them). One
//! client serves every check (making one costs tens of milliseconds: its TLS set-up), so
//! connections to the site server are reused.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use opus_core::recipe::checks::HttpCheckSpec;

use crate::build::steps::LogSink;

/// How much of a body is shown when it lacks what it should contain.
const BODY_SHOWN: usize = 512;

/// GETs `spec.path` relative to `base`; `Err` says why the check failed. The caller bounds its
/// time (the check's timeout).
pub(super) async fn get<L: LogSink>(
    spec: &HttpCheckSpec,
    base: &str,
    log: &L,
) -> Result<(), String> {
    let url = reqwest::Url::parse(base)
        .and_then(|b| b.join(spec.path.trim_start_matches('/')))
        .map_err(|e| format!("cannot make a URL of {base:?} and {:?}: {e}", spec.path))?;
    let client = client().map_err(|e| format!("cannot make an HTTP client: {e}"))?;
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
    log.line(
        "step 1",
        "stdout",
        &format!("HTTP {status}, {} bytes", body.len()),
    );
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

/// The client of every check: no redirects followed, `localhost` names resolved to loopback.
fn client() -> Result<reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // reqwest is built without a default crypto provider (see `hooks::HttpTransport::new`).
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(LocalhostFirst))
                .user_agent(concat!("opus-checks/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| error_chain(&e))
        })
        .clone()
}

/// Resolves `localhost` and names under it to the loopback address, others with the system's
/// resolver.
struct LocalhostFirst;

impl Resolve for LocalhostFirst {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if is_localhost(&host) {
                // Port 0: the URL's own port is used.
                let addrs: Addrs =
                    Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
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
