//! Bearer-token authentication of API calls, compared in constant time.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

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
            let given = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => Ok(req),
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
