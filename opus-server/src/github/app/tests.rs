use std::process::Command;

use jsonwebtoken::{DecodingKey, Validation};

use super::*;

/// A fresh 2048-bit RSA key in GitHub's form (PKCS#1 PEM), and its public half (SPKI PEM).
fn rsa_key(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let key = dir.join("app.pem");
    let public = dir.join("app.pub.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("run openssl genrsa")
        .status
        .success();
    assert!(ok, "openssl genrsa");
    let ok = Command::new("openssl")
        .arg("rsa")
        .arg("-in")
        .arg(&key)
        .args(["-pubout", "-out"])
        .arg(&public)
        .output()
        .expect("run openssl rsa")
        .status
        .success();
    assert!(ok, "openssl rsa -pubout");
    (
        std::fs::read(&key).expect("key"),
        std::fs::read(&public).expect("public key"),
    )
}

#[test]
fn the_jwt_is_rs256_backdated_a_minute_and_valid_under_ten_minutes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pem, public) = rsa_key(dir.path());
    let app = AppKey::new(4242, &pem, &dir.path().join("app.pem")).expect("a valid key");
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = app.claims(now);
    assert_eq!(claims.iat, secs - 60);
    assert!(
        claims.exp > secs && claims.exp - claims.iat <= 600,
        "{claims:?}"
    );
    assert_eq!(claims.iss, "4242");

    let jwt = app.jwt(now).expect("signed");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&["4242"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let key = DecodingKey::from_rsa_pem(&public).expect("public key");
    let decoded = jsonwebtoken::decode::<AppClaims>(&jwt, &key, &validation).expect("verifies");
    assert_eq!(decoded.claims, claims);
    assert_eq!(decoded.header.alg, Algorithm::RS256);

    // Another key's signature does not verify.
    let other = tempfile::tempdir().expect("tempdir");
    let (_, other_public) = rsa_key(other.path());
    let other_key = DecodingKey::from_rsa_pem(&other_public).expect("public key");
    assert!(jsonwebtoken::decode::<AppClaims>(&jwt, &other_key, &validation).is_err());
}

#[test]
fn a_key_that_is_not_an_rsa_pem_is_refused_naming_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.pem");
    let (pem, public) = rsa_key(dir.path());
    let text = String::from_utf8(pem).expect("PEM is text");
    // The body cut in half: still framed as PEM, no longer a key.
    let lines: Vec<&str> = text.lines().collect();
    let truncated = format!(
        "{}\n{}\n{}\n",
        lines[0],
        lines[1..lines.len() / 2].join("\n"),
        lines[lines.len() - 1]
    );
    for (what, bytes) in [
        ("not PEM", b"this is not a key\n".to_vec()),
        ("a truncated key", truncated.into_bytes()),
        ("a public key", public),
        ("empty", Vec::new()),
    ] {
        let err = AppKey::new(1, &bytes, &path).expect_err(what).to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("not an RSA private key"),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_github_error_keeps_its_status() {
    let e = AppError::Call {
        call: "GET /installation/repositories".into(),
        status: 401,
        detail: "HTTP 401: Bad credentials".into(),
    };
    assert_eq!(e.status(), 401);
    assert!(e.to_string().contains("GET /installation/repositories"));
    assert_eq!(
        AppError::Sign(jsonwebtoken::errors::ErrorKind::InvalidRsaKey("x".into()).into()).status(),
        0
    );
}
