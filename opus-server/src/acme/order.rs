//! One certificate order with instant-acme: a new order for one host, its challenge answered
//! (HTTP-01 by the site listener through [`HttpsState`], TLS-ALPN-01 by the TLS listener
//! through the [`CertResolver`], or, for a wildcard `*.<domain>`, DNS-01 by a TXT record
//! `_acme-challenge.<domain>` made through Cloudflare and deleted after validation), then
//! finalize (instant-acme makes the key and CSR with rcgen) and download the chain.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::{AcmeError, CertResolver};
use crate::cloudflare::Cloudflare;
use crate::config::AcmeChallenge;
use crate::sites::https::HttpsState;

/// Where a challenge's answer is published, and which kind it is.
pub struct Responder<'a> {
    /// The kind of challenge answered.
    pub kind: AcmeChallenge,
    /// HTTP-01 answers.
    pub https: &'a HttpsState,
    /// TLS-ALPN-01 answers.
    pub resolver: &'a CertResolver,
    /// DNS-01 answers (wildcards), when Cloudflare is configured.
    pub dns: Option<&'a Cloudflare>,
    /// How long a TXT record is given to reach the zone's DNS servers before the CA looks.
    pub dns_propagation: Duration,
}

/// A published answer, withdrawn when the order ends.
enum Published {
    Token(String),
    AlpnHost(String),
    Txt(String),
}

/// How long the CA may take to validate and to issue.
const POLL: RetryPolicy = RetryPolicy::new().timeout(Duration::from_secs(90));

/// Orders a certificate for `host`; returns `(private key PEM, chain PEM)`.
pub async fn issue(
    account: &Account,
    host: &str,
    responder: &Responder<'_>,
) -> Result<(String, String), AcmeError> {
    let ids = [Identifier::Dns(host.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut published = Vec::new();
    let result = validate_and_finalize(&mut order, host, responder, &mut published).await;
    for p in &published {
        match p {
            Published::Token(t) => responder.https.withdraw(t),
            Published::AlpnHost(h) => responder.resolver.withdraw(h),
            Published::Txt(name) => {
                if let Some(dns) = responder.dns
                    && let Err(e) = dns.clear_txt(name).await
                {
                    tracing::warn!(name = %name, error = %e, "cannot delete a DNS-01 TXT record; the next order deletes it");
                }
            }
        }
    }
    result
}

async fn validate_and_finalize(
    order: &mut Order,
    host: &str,
    responder: &Responder<'_>,
    published: &mut Vec<Published>,
) -> Result<(String, String), AcmeError> {
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Refused(format!(
                        "the CA says the authorization is {other:?}"
                    )));
                }
            }
            if let Some(base) = host.strip_prefix("*.") {
                let dns = responder.dns.ok_or(AcmeError::NoDnsProvider)?;
                let mut challenge = authz
                    .challenge(ChallengeType::Dns01)
                    .ok_or(AcmeError::NoChallenge("dns-01"))?;
                let name = format!("_acme-challenge.{base}");
                let value = challenge.key_authorization().dns_value();
                published.push(Published::Txt(name.clone()));
                dns.set_txt(&name, &value).await.map_err(AcmeError::Dns)?;
                tokio::time::sleep(responder.dns_propagation).await;
                challenge.set_ready().await?;
                continue;
            }
            let (kind, name) = match responder.kind {
                AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
                AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            };
            let mut challenge = authz.challenge(kind).ok_or(AcmeError::NoChallenge(name))?;
            let answer = challenge.key_authorization();
            match responder.kind {
                AcmeChallenge::Http01 => {
                    responder.https.publish(&challenge.token, answer.as_str());
                    published.push(Published::Token(challenge.token.clone()));
                }
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_certificate(host, answer.digest().as_ref())?;
                    responder.resolver.publish_challenge(host, cert);
                    published.push(Published::AlpnHost(host.to_owned()));
                }
            }
            challenge.set_ready().await?;
        }
    }
    let status = order.poll_ready(&POLL).await?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Refused(why_invalid(order, status).await));
    }
    let key = order.finalize().await?;
    let chain = order.poll_certificate(&POLL).await?;
    Ok((key, chain))
}

/// What the CA said about a failed order: its challenges' errors.
async fn why_invalid(order: &mut Order, status: OrderStatus) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(e) = &c.error {
                reasons.push(
                    e.detail
                        .clone()
                        .unwrap_or_else(|| e.r#type.clone().unwrap_or_default()),
                );
            }
        }
    }
    if reasons.is_empty() {
        format!("the order is {status:?}")
    } else {
        reasons.join("; ")
    }
}

/// The self-signed TLS-ALPN-01 certificate of `host` carrying the key authorization's digest in
/// its critical acmeIdentifier extension (RFC 8737 section 3).
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let bad = |e: rcgen::Error| AcmeError::BadCertificate(format!("tls-alpn-01 certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(bad)?;
    let der = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| AcmeError::BadCertificate(format!("tls-alpn-01 key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}
