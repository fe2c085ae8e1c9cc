//! Posting webhooks to opusd as a forge would: signed bodies (shared by `webhooks` and `github`).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// GitHub's `X-Hub-Signature-256` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// POSTs `body` with `headers`; returns the status and the JSON answer (Null when not JSON).
pub fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.post(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let v = resp.json().await.unwrap_or(Value::Null);
                (status, v)
            }
            Err(e) => panic!("POST {url} failed: {e}"),
        }
    })
}
