//! Bearer tokens: the one parser of `authorization: Bearer <token>` (API calls, runner calls and
//! the trigger webhook all use it), the constant-time comparison, and the interceptor that admits
//! `opus.v1` calls.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The token of an `authorization` value in the `Bearer` scheme. The scheme is matched
/// case-insensitively, as HTTP auth schemes are (RFC 9110, section 11.1): `bearer x` and
/// `BEARER x` carry the token `x`.
pub(crate) fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches(' '))
}

/// The bearer token of a gRPC call's `authorization` metadata.
pub(crate) fn bearer_of(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

/// Whether `given` is `expected`, in time that does not depend on where they differ.
pub(crate) fn same_token(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The token every `opus.v1` call must carry, when the daemon has one.
#[derive(Clone)]
pub(crate) struct Auth {
    token: Option<Arc<str>>,
}

impl Auth {
    pub(crate) fn new(token: Option<String>) -> Auth {
        Auth {
            token: token.map(Arc::from),
        }
    }

    /// A tonic interceptor that admits a call only with `authorization: Bearer <token>`.
    pub(crate) fn interceptor(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let token = self.token.clone();
        move |req: Request<()>| {
            let Some(expected) = token.as_deref() else {
                return Ok(req);
            };
            match bearer_of(req.metadata()) {
                Some(given) if same_token(given, expected) => Ok(req),
                Some(_) => Err(Status::unauthenticated(
                    "the API token is wrong; pass the token opusd was started with (--token or OPUS_TOKEN)",
                )),
                None => Err(Status::unauthenticated(
                    "this opusd requires an API token; pass --token or set OPUS_TOKEN",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_case_insensitively() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer  abc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearerabc", "abc", ""] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }

    #[test]
    fn the_interceptor_admits_the_token_in_any_case_of_the_scheme() {
        let mut check = Auth::new(Some("s3cret".into())).interceptor();
        let call = |value: Option<&str>| {
            let mut req = Request::new(());
            if let Some(v) = value {
                req.metadata_mut()
                    .insert("authorization", v.parse().expect("ascii"));
            }
            req
        };
        assert!(check(call(Some("bearer s3cret"))).is_ok());
        assert!(check(call(Some("Bearer s3cret"))).is_ok());
        let wrong = check(call(Some("Bearer other"))).expect_err("wrong token");
        assert!(wrong.message().contains("wrong"), "{}", wrong.message());
        let none = check(call(None)).expect_err("no token");
        assert!(none.message().contains("requires"), "{}", none.message());
    }
}
