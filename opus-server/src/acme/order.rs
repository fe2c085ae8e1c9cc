//! One certificate order with instant-acme: a new order for one host, its HTTP-01 challenge
//! answered by the site listener (through [`HttpsState`]), then finalize (instant-acme makes the
//! key and CSR with rcgen) and download the chain.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};

use super::AcmeError;
use crate::sites::https::HttpsState;

/// How long the CA may take to validate and to issue.
const POLL: RetryPolicy = RetryPolicy::new().timeout(Duration::from_secs(90));

/// Orders a certificate for `host`; returns `(private key PEM, chain PEM)`.
pub async fn issue(
    account: &Account,
    host: &str,
    https: &HttpsState,
) -> Result<(String, String), AcmeError> {
    let ids = [Identifier::Dns(host.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut tokens = Vec::new();
    let result = validate_and_finalize(&mut order, https, &mut tokens).await;
    for t in &tokens {
        https.withdraw(t);
    }
    result
}

async fn validate_and_finalize(
    order: &mut Order,
    https: &HttpsState,
    tokens: &mut Vec<String>,
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
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or(AcmeError::NoHttp01)?;
            let answer = challenge.key_authorization();
            https.publish(&challenge.token, answer.as_str());
            tokens.push(challenge.token.clone());
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
