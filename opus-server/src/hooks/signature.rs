//! HMAC-SHA256 body signatures: `sha256=<hex>`, as GitHub's `X-Hub-Signature-256` and Opus's own
//! `X-Opus-Signature-256` carry them, and bare hex, as Gitea's and Forgejo's do.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The MAC of `body` under `secret`.
fn mac(secret: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; an empty key is still a key.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable_key(),
    };
    m.update(body);
    m.finalize().into_bytes().into()
}

#[cold]
fn unreachable_key() -> HmacSha256 {
    // `InvalidLength` is only returned by MACs with a fixed key size, which HMAC is not.
    HmacSha256::new_from_slice(&[0u8; 32]).expect("HMAC takes a 32-byte key")
}

/// `sha256=<hex HMAC-SHA256 of body>` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, body)))
}

/// Whether `header` (`sha256=<hex>`) is the signature of `body` under `secret`, compared in
/// constant time. A missing prefix, bad hex or wrong length is simply not valid.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    verify_hex(secret, body, hex_sig)
}

/// Whether `hex_sig` (bare hex, no prefix: Gitea's `X-Gitea-Signature`, Forgejo's
/// `X-Forgejo-Signature`) is the HMAC-SHA256 of `body` under `secret`, compared in constant time.
pub fn verify_hex(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(given) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let expected = mac(secret, body);
    given.len() == expected.len() && bool::from(given.as_slice().ct_eq(&expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_published_vector() {
        assert_eq!(sign(SECRET, BODY), SIG);
        assert!(verify(SECRET, BODY, SIG));
    }

    #[test]
    fn rejects_everything_else() {
        assert!(!verify(b"another secret", BODY, SIG));
        assert!(!verify(SECRET, b"Hello, World?", SIG));
        assert!(!verify(SECRET, BODY, ""));
        assert!(!verify(SECRET, BODY, &SIG["sha256=".len()..]));
        assert!(!verify(SECRET, BODY, "sha1=757107ea"));
        assert!(!verify(SECRET, BODY, "sha256=zz"));
        assert!(!verify(SECRET, BODY, &SIG[..SIG.len() - 2]));
        let upper = format!("sha256={}", SIG["sha256=".len()..].to_uppercase());
        assert!(verify(SECRET, BODY, &upper), "hex case does not matter");
    }

    #[test]
    fn bare_hex_as_gitea_sends_it() {
        let bare = &SIG["sha256=".len()..];
        assert!(verify_hex(SECRET, BODY, bare));
        assert!(!verify_hex(SECRET, BODY, SIG), "a prefix is not hex");
        assert!(!verify_hex(SECRET, BODY, &bare[..bare.len() - 2]));
        assert!(!verify_hex(b"another secret", BODY, bare));
        assert!(!verify_hex(SECRET, BODY, ""));
    }
}
