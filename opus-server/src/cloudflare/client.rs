//! Typed calls to Cloudflare's API v4 with reqwest: the zone, a name's DNS records, creating and
//! deleting one. Plain reqwest rather than the `cloudflare` crate: that crate's record types
//! have no `comment` field (which is how Opus marks its records) and it pulls a second reqwest.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A failed call, judged: [`CloudflareError::is_retryable`] says whether another attempt may
/// succeed.
#[derive(Debug, thiserror::Error)]
pub enum CloudflareError {
    /// No answer (connection refused, timeout), or the client could not be built.
    #[error("Cloudflare API unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    /// Cloudflare answered an error.
    #[error("Cloudflare API answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Cloudflare's `errors[].message`, or the body.
        message: String,
    },
    /// The zone given is not one the token can see.
    #[error("Cloudflare zone {0:?} not found (is the token allowed to edit it?)")]
    NoZone(String),
}

impl CloudflareError {
    /// Whether another attempt may succeed: no answer, 5xx, 429 and 408 are retried; other
    /// answers (a bad token, a refused record) are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            CloudflareError::Transport(_) => true,
            CloudflareError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            CloudflareError::NoZone(_) => false,
        }
    }
}

/// A zone: its id (for the calls) and its name (to know which hosts it holds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Zone {
    /// The zone's id.
    pub id: String,
    /// The zone's name, `acme.com`.
    pub name: String,
}

impl Zone {
    /// Whether `host` is in the zone (the apex or under it).
    pub fn holds(&self, host: &str) -> bool {
        host == self.name
            || host
                .strip_suffix(self.name.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    }
}

/// A DNS record as Cloudflare lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DnsRecord {
    /// The record's id.
    pub id: String,
    /// `A`, `CNAME`, `TXT`...
    #[serde(rename = "type")]
    pub kind: String,
    /// The full name.
    pub name: String,
    /// The value.
    pub content: String,
    /// The free-text comment, where Opus names itself.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A record to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewRecord<'a> {
    /// `A`, `AAAA`, `CNAME` or `TXT`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The full name.
    pub name: &'a str,
    /// The value.
    pub content: &'a str,
    /// Seconds; 1 is Cloudflare's "automatic".
    pub ttl: u32,
    /// Never proxied: TLS ends at opusd, which needs the ACME challenges to reach it.
    pub proxied: bool,
    /// Opus's mark.
    pub comment: &'a str,
}

/// The envelope of every answer.
#[derive(Debug, Deserialize)]
struct Envelope<R> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<R>,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// A Cloudflare API client with a token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl Client {
    /// A client of the API at `api` (no trailing `/`) with `token`; a call gives up after
    /// `timeout`.
    pub fn new(api: &str, token: &str, timeout: Duration) -> Result<Client, CloudflareError> {
        // reqwest is built without a default crypto provider; ring is the one opusd uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("opus/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            api: api.to_owned(),
            token: token.to_owned(),
        })
    }

    /// The zone `zone` names: by id (`GET /zones/{id}`) when it looks like one, else by name
    /// (`GET /zones?name=`).
    pub async fn zone(&self, zone: &str) -> Result<Zone, CloudflareError> {
        let is_id = zone.len() == 32 && zone.chars().all(|c| c.is_ascii_hexdigit());
        if is_id {
            let req = self.http.get(format!("{}/zones/{zone}", self.api));
            return self
                .call::<Zone>(req)
                .await?
                .ok_or_else(|| CloudflareError::NoZone(zone.to_owned()));
        }
        let req = self
            .http
            .get(format!("{}/zones", self.api))
            .query(&[("name", zone)]);
        let zones: Vec<Zone> = self.call(req).await?.unwrap_or_default();
        zones
            .into_iter()
            .next()
            .ok_or_else(|| CloudflareError::NoZone(zone.to_owned()))
    }

    /// The records named `name` (every type): `GET /zones/{zone}/dns_records?name=`.
    pub async fn records(
        &self,
        zone: &Zone,
        name: &str,
    ) -> Result<Vec<DnsRecord>, CloudflareError> {
        let req = self
            .http
            .get(format!("{}/zones/{}/dns_records", self.api, zone.id))
            .query(&[("name", name), ("per_page", "100")]);
        Ok(self.call(req).await?.unwrap_or_default())
    }

    /// Creates a record: `POST /zones/{zone}/dns_records`.
    pub async fn create(
        &self,
        zone: &Zone,
        record: &NewRecord<'_>,
    ) -> Result<DnsRecord, CloudflareError> {
        let req = self
            .http
            .post(format!("{}/zones/{}/dns_records", self.api, zone.id))
            .json(record);
        self.call(req)
            .await?
            .ok_or_else(|| CloudflareError::Status {
                status: 200,
                message: "the answer holds no record".into(),
            })
    }

    /// Deletes a record: `DELETE /zones/{zone}/dns_records/{id}`; one already gone is fine.
    pub async fn delete(&self, zone: &Zone, id: &str) -> Result<(), CloudflareError> {
        let req = self
            .http
            .delete(format!("{}/zones/{}/dns_records/{id}", self.api, zone.id));
        match self.call::<serde_json::Value>(req).await {
            Ok(_) | Err(CloudflareError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends `req` with the token and unwraps the envelope.
    async fn call<R: for<'de> Deserialize<'de>>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<R>, CloudflareError> {
        let resp = req.bearer_auth(&self.token).send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        let envelope: Result<Envelope<R>, _> = serde_json::from_slice(&body);
        match envelope {
            Ok(e) if (200..300).contains(&status) && e.success => Ok(e.result),
            Ok(e) => Err(CloudflareError::Status {
                status,
                message: if e.errors.is_empty() {
                    "no error given".into()
                } else {
                    e.errors
                        .iter()
                        .map(|m| format!("{} (code {})", m.message, m.code))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            }),
            Err(parse) => Err(CloudflareError::Status {
                status,
                message: if (200..300).contains(&status) {
                    format!("an answer that does not parse: {parse}")
                } else {
                    String::from_utf8_lossy(&body).chars().take(200).collect()
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_holds_its_apex_and_the_names_under_it_only() {
        let z = Zone {
            id: "z".into(),
            name: "acme.com".into(),
        };
        assert!(z.holds("acme.com"));
        assert!(z.holds("www.acme.com"));
        assert!(z.holds("pr-1--web.preview.acme.com"));
        assert!(!z.holds("notacme.com"));
        assert!(!z.holds("acme.com.evil.org"));
    }

    #[test]
    fn outages_are_retried_and_refusals_are_not() {
        let status = |status| CloudflareError::Status {
            status,
            message: String::new(),
        };
        assert!(status(500).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(403).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!CloudflareError::NoZone("acme.com".into()).is_retryable());
    }
}
