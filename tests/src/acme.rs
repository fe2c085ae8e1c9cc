//! A real ACME CA for the HTTPS tests: Debian's `pebble`, with `pebble-challtestsrv` as its DNS
//! server (every name resolves to 127.0.0.1 unless a test says otherwise), and a TLS client that
//! trusts the roots a test gives it.
//!
//! `.ci/setup-acme.sh` installs pebble; where it is missing [`PebbleSetup::prepare`] says so and
//! gives `None` (the test passes), unless `OPUS_REQUIRE_ACME` is set, which makes that a failure.
//!
//! Pebble's own HTTPS (the directory and its management API) is served with a certificate made
//! here by rcgen, signed by a CA whose root is [`PebbleSetup::ca_file`]: what opusd's
//! `--acme-ca-file` trusts, as it would a private CA's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::HttpResponse;

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// How long pebble may take to start, and an order to complete.
pub const WAIT: Duration = Duration::from_secs(60);

/// Pebble's ports and certificate, chosen before opusd starts (opusd needs the directory URL;
/// pebble needs opusd's site port for HTTP-01).
pub struct PebbleSetup {
    dir: tempfile::TempDir,
    listen: u16,
    management: u16,
    dns: u16,
    challtest_management: u16,
    tls_port: u16,
    /// Lifetime of the certificates pebble issues, when not its default (5 years).
    validity_secs: Option<u64>,
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PebbleSetup {
    /// Picks ports and makes pebble's HTTPS certificate; `None` when pebble is not installed
    /// (and `OPUS_REQUIRE_ACME` is unset).
    pub fn prepare() -> Option<PebbleSetup> {
        if !Path::new(PEBBLE).exists() || !Path::new(CHALLTESTSRV).exists() {
            assert!(
                std::env::var_os("OPUS_REQUIRE_ACME").is_none(),
                "pebble is not installed (bash .ci/setup-acme.sh)"
            );
            eprintln!("skipped: pebble and pebble-challtestsrv are not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "opus test CA for pebble's HTTPS");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params");
        let cert = params.signed_by(&key, &issuer).expect("cert");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
        Some(PebbleSetup {
            dir,
            listen: free_port(),
            management: free_port(),
            dns: free_port(),
            challtest_management: free_port(),
            tls_port: free_port(),
            validity_secs: None,
        })
    }

    /// Makes pebble issue certificates valid for `secs` seconds (so renewals happen in a test).
    pub fn cert_validity(mut self, secs: u64) -> PebbleSetup {
        self.validity_secs = Some(secs);
        self
    }

    /// The ACME directory URL (for `--acme-directory`).
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen)
    }

    /// The port pebble validates TLS-ALPN-01 on (for opusd's `--sites-tls-listen`).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The root pebble's HTTPS is signed by (for `--acme-ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts challtestsrv and pebble, validating HTTP-01 on `http_port` (opusd's site port).
    pub fn start(self, http_port: u16) -> Pebble {
        let d = self.dir.path();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.listen),
                "managementListenAddress": format!("127.0.0.1:{}", self.management),
                "certificate": d.join("cert.pem"),
                "privateKey": d.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let mut config = config;
        if let Some(secs) = self.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        std::fs::write(d.join("pebble.json"), config.to_string()).expect("write");
        let log = |name: &str| Stdio::from(std::fs::File::create(d.join(name)).expect("log file"));
        let challtestsrv = Command::new(CHALLTESTSRV)
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args([
                "-management",
                &format!("127.0.0.1:{}", self.challtest_management),
            ])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new(PEBBLE)
            .arg("-config")
            .arg(d.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble starts");
        let p = Pebble {
            pebble,
            challtestsrv,
            setup: self,
        };
        wait_for_port(p.setup.listen);
        wait_for_port(p.setup.challtest_management);
        p
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Running pebble and challtestsrv; both are killed on drop.
pub struct Pebble {
    pebble: Child,
    challtestsrv: Child,
    setup: PebbleSetup,
}

impl Pebble {
    /// The root pebble issues certificates under (its management API's `/roots/0`).
    pub fn issuing_root(&self) -> Vec<CertificateDer<'static>> {
        let ca = std::fs::read(self.setup.ca_file()).expect("CA file");
        let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca)
            .collect::<Result<_, _>>()
            .expect("CA parses");
        let addr = format!("127.0.0.1:{}", self.setup.management);
        let r = https_get(&addr, "localhost", "/roots/0", &roots).expect("GET /roots/0");
        assert_eq!(r.status, 200, "{}", r.text());
        CertificateDer::pem_slice_iter(&r.body)
            .collect::<Result<_, _>>()
            .expect("the root parses")
    }

    /// Makes `host` resolve to `ip` for pebble's validation (challtestsrv's `/add-a`).
    pub fn resolve(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": host, "addresses": [ip] }).to_string();
        let r = crate::http_with_body(
            &format!("127.0.0.1:{}", self.setup.challtest_management),
            "POST",
            "127.0.0.1",
            "/add-a",
            &[],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "add-a: {}", r.text());
    }

    /// `127.0.0.1:<port>` of challtestsrv's management API (`/set-txt`, `/clear-txt`).
    pub fn challtestsrv_management(&self) -> String {
        format!("127.0.0.1:{}", self.setup.challtest_management)
    }

    /// Pebble's log so far, for failure messages.
    pub fn log(&self) -> String {
        let d = self.setup.dir.path();
        let read = |n: &str| std::fs::read_to_string(d.join(n)).unwrap_or_default();
        format!("{}{}", read("pebble.log"), read("pebble.err"))
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client config trusting only `roots`.
fn client_config(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, std::io::Error> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One kept-alive TLS connection, for requests one after another (a certificate swapped in the
/// meantime must not end it).
pub struct TlsSession {
    stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    sni: String,
}

impl TlsSession {
    /// Connects to `addr` naming `sni`, trusting only `roots`.
    pub fn connect(
        addr: &str,
        sni: &str,
        roots: &[CertificateDer<'static>],
    ) -> Result<TlsSession, std::io::Error> {
        let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(client_config(roots)?, name)
            .map_err(std::io::Error::other)?;
        let tcp = std::net::TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(TlsSession {
            stream: rustls::StreamOwned::new(conn, tcp),
            sni: sni.to_owned(),
        })
    }

    /// `GET path` on this connection, keeping it open; the answer must have a Content-Length.
    pub fn get(&mut self, path: &str) -> Result<HttpResponse, std::io::Error> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.sni);
        self.stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(std::io::Error::other("the connection ended"));
            }
            raw.push(byte[0]);
        }
        let head = crate::parse_response(&raw)
            .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
        let length: usize = head.header("content-length").parse().unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
        crate::parse_response(&raw).ok_or_else(|| std::io::Error::other("not an HTTP answer"))
    }
}

/// `GET path` over TLS to `addr`, naming `sni` and trusting only `roots`; the TLS error when the
/// handshake fails.
pub fn https_get(
    addr: &str,
    sni: &str,
    path: &str,
    roots: &[CertificateDer<'static>],
) -> Result<HttpResponse, std::io::Error> {
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(client_config(roots)?, name)
        .map_err(std::io::Error::other)?;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify: what was read is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    crate::parse_response(&raw)
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {raw:?}")))
}
