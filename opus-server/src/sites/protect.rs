//! Basic auth in front of an environment or a project's previews.
//!
//! A [`Credential`] holds the password's argon2id PHC string only. A request's password is
//! checked with argon2 (on the blocking pool: a check costs tens of milliseconds by design), so a
//! wrong password of any length costs the same; the username is not looked at (any name is
//! accepted), so nothing depends on its length either. A browser resends the same
//! `Authorization` on every request, so the sha256 of a header that passed once is remembered
//! (a few per credential) and not checked with argon2 again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use sha2::Digest;

/// Headers remembered as accepted, per credential, before the memory is cleared.
const REMEMBERED: usize = 64;

/// The realm browsers show in their password prompt.
const CHALLENGE: HeaderValue = HeaderValue::from_static("Basic realm=\"opus\", charset=\"UTF-8\"");

/// Why a password cannot be hashed or a stored hash used.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    /// The password is empty.
    #[error("the password is empty")]
    EmptyPassword,
    /// argon2 failed (or the stored string is not a PHC string).
    #[error("argon2: {0}")]
    Hash(String),
    /// The OS gave no random bytes for the salt.
    #[error("cannot get random bytes for the salt: {0}")]
    Random(String),
}

/// Hashes `password` with argon2id and a fresh random salt into a PHC string, the only form of it
/// that is stored.
pub fn hash_password(password: &str) -> Result<String, ProtectError> {
    if password.is_empty() {
        return Err(ProtectError::EmptyPassword);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ProtectError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ProtectError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ProtectError::Hash(e.to_string()))
}

/// A stored password, checked against requests.
pub struct Credential {
    /// The argon2 PHC string.
    phc: String,
    /// sha256 of `Authorization` values that passed.
    accepted: Mutex<HashSet<[u8; 32]>>,
    /// argon2 checks made, to show that every password not seen before is checked in full.
    verifications: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Credential {
    /// A credential from its stored PHC string (checked to parse).
    pub fn new(phc: &str) -> Result<Credential, ProtectError> {
        PasswordHash::new(phc).map_err(|e| ProtectError::Hash(e.to_string()))?;
        Ok(Credential {
            phc: phc.to_owned(),
            accepted: Mutex::new(HashSet::new()),
            verifications: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A credential no password passes: stands in for a stored hash that cannot be read, so the
    /// site stays closed rather than open.
    pub fn unusable() -> Credential {
        Credential {
            phc: String::new(),
            accepted: Mutex::new(HashSet::new()),
            verifications: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many passwords were checked with argon2.
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The stored form (the PHC string).
    pub fn phc(&self) -> &str {
        &self.phc
    }

    /// Whether the request's `Authorization: Basic` carries the password.
    pub async fn allows(self: &Arc<Self>, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let digest: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        if self
            .accepted
            .lock()
            .is_ok_and(|seen| seen.contains(&digest))
        {
            return true;
        }
        let Some(password) = basic_password(value) else {
            return false;
        };
        let me = self.clone();
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&me.phc).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if ok {
            if let Ok(mut seen) = self.accepted.lock() {
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                seen.insert(digest);
            }
        }
        ok
    }
}

/// The password of a `Basic` credential (`user:password`, base64); the user is ignored.
fn basic_password(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// The 401 answer asking for the password.
pub(crate) fn challenge() -> Response {
    let mut r = Response::new(Body::from(
        "this site is protected: sign in with its password\n",
    ));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(header::WWW_AUTHENTICATE, CHALLENGE);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).expect("header"),
        );
        h
    }

    #[tokio::test]
    async fn only_the_password_passes_and_every_wrong_one_is_checked_in_full() {
        let phc = hash_password("s3cret pass").expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        let c = Arc::new(Credential::new(&phc).expect("credential"));
        // Wrong passwords of any length, and any user name: each one runs argon2.
        let long = "x".repeat(10_000);
        for (user, pw) in [
            ("a", ""),
            ("a", "s"),
            ("a", "s3cret pas"),
            ("", long.as_str()),
            (long.as_str(), "nope"),
        ] {
            assert!(!c.allows(&basic(user, pw)).await, "{user}:{pw}");
        }
        assert_eq!(c.verifications(), 5);
        // Any user name with the password passes; the same header again is remembered.
        assert!(c.allows(&basic("anyone", "s3cret pass")).await);
        assert!(c.allows(&basic("anyone", "s3cret pass")).await);
        assert_eq!(c.verifications(), 6);
        assert!(c.allows(&basic("", "s3cret pass")).await);
        // Not basic auth at all.
        let mut h = HeaderMap::new();
        assert!(!c.allows(&h).await);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!c.allows(&h).await);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(!c.allows(&h).await);
        // A stored hash that cannot be read lets nobody in.
        let closed = Arc::new(Credential::unusable());
        assert!(!closed.allows(&basic("a", "")).await);
        assert!(Credential::new("plain text").is_err());
        assert!(matches!(
            hash_password(""),
            Err(ProtectError::EmptyPassword)
        ));
    }

    #[test]
    fn the_challenge_is_401_with_www_authenticate() {
        let r = challenge();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.starts_with("Basic realm="))
        );
    }
}
