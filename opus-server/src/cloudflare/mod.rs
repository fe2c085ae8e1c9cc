//! Cloudflare: the DNS records of opusd's names, and the TXT records of DNS-01 challenges.
//!
//! - [`Cloudflare`]: the zone (looked up once) and the record changes, each keeping to the one
//!   rule that matters: Opus touches only records whose comment names it ([`COMMENT_PREFIX`]).
//!   A record of the same name without that comment is left alone, and the change says why.
//! - `client`: typed calls to the API v4 with reqwest.
//! - `routes`: [`DnsRoutes`], the durable outbox that follows the event log and makes a
//!   record for each custom domain and environment host, and deletes it when the name goes.
//!
//! Architecture Invariant: nothing here decides which names exist; the event log says so, and
//! the certificate manager asks for its TXT records itself.

pub mod client;
mod routes;

use std::time::Duration;

pub use client::{Client, CloudflareError, DnsRecord, NewRecord, Zone};
pub use routes::DnsRoutes;

use crate::config::{CloudflareConfig, PublicAddress};

/// How every comment of a record Opus made starts; records without it are never touched.
pub const COMMENT_PREFIX: &str = "managed by opus";

/// The comment of a record Opus makes for `owner` (`web/pr-12`, `acme challenge`).
pub fn comment(owner: &str) -> String {
    format!("{COMMENT_PREFIX}: {owner}")
}

/// Whether `record` is one Opus made.
pub fn is_ours(record: &DnsRecord) -> bool {
    record
        .comment
        .as_deref()
        .is_some_and(|c| c.starts_with(COMMENT_PREFIX))
}

/// What a change came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done, or there was nothing to do.
    Done,
    /// Not done on purpose; why.
    LeftAlone(String),
}

/// The types of the records that route a name to opusd.
const ROUTE_TYPES: [&str; 3] = ["A", "AAAA", "CNAME"];

/// Cloudflare with opusd's token and zone.
pub struct Cloudflare {
    client: Client,
    /// The zone as configured (id or name).
    zone_spec: String,
    /// The zone, once looked up.
    zone: tokio::sync::Mutex<Option<Zone>>,
    /// Where route records point, if they are made.
    public_address: Option<PublicAddress>,
}

impl Cloudflare {
    /// A client of the configured API; each call gives up after `timeout`.
    pub fn new(
        config: &CloudflareConfig,
        timeout: Duration,
    ) -> Result<Cloudflare, CloudflareError> {
        Ok(Cloudflare {
            client: Client::new(&config.api_url, &config.token, timeout)?,
            zone_spec: config.zone.clone(),
            zone: tokio::sync::Mutex::new(None),
            public_address: config.public_address.clone(),
        })
    }

    /// Whether route records are made (`--public-address` is set).
    pub fn routes_names(&self) -> bool {
        self.public_address.is_some()
    }

    /// The zone, looked up at the first call.
    pub async fn zone(&self) -> Result<Zone, CloudflareError> {
        let mut slot = self.zone.lock().await;
        if let Some(z) = slot.as_ref() {
            return Ok(z.clone());
        }
        let zone = self.client.zone(&self.zone_spec).await?;
        tracing::info!(zone = %zone.name, id = %zone.id, "Cloudflare zone found");
        *slot = Some(zone.clone());
        Ok(zone)
    }

    /// Makes `name`'s record point to `--public-address`, with `owner` in its comment, unless
    /// Opus's record is there already (one pointing elsewhere is replaced). A record of the name
    /// that Opus did not make leaves the name alone.
    pub async fn route(&self, name: &str, owner: &str) -> Result<Outcome, CloudflareError> {
        let Some(address) = &self.public_address else {
            return Ok(Outcome::LeftAlone(
                "no --public-address to point the record to".into(),
            ));
        };
        let zone = self.zone().await?;
        if !zone.holds(name) {
            return Ok(Outcome::LeftAlone(format!(
                "{name} is not in the Cloudflare zone {}",
                zone.name
            )));
        }
        let (kind, content) = address.record();
        if kind == "CNAME" && content == name {
            return Ok(Outcome::LeftAlone(format!(
                "{name} is --public-address itself"
            )));
        }
        let records = self.client.records(&zone, name).await?;
        let routing = records
            .iter()
            .filter(|r| ROUTE_TYPES.contains(&r.kind.as_str()));
        let (ours, foreign): (Vec<&DnsRecord>, Vec<&DnsRecord>) = routing.partition(|r| is_ours(r));
        if let Some(f) = foreign.first() {
            return Ok(Outcome::LeftAlone(foreign_reason(f)));
        }
        if kind == "CNAME" {
            if let Some(f) = records.iter().find(|r| !is_ours(r)) {
                return Ok(Outcome::LeftAlone(foreign_reason(f)));
            }
        }
        let mut up_to_date = false;
        for r in ours {
            if r.kind == kind && r.content.eq_ignore_ascii_case(&content) {
                up_to_date = true;
            } else {
                self.client.delete(&zone, &r.id).await?;
            }
        }
        if !up_to_date {
            let comment = comment(owner);
            self.client
                .create(
                    &zone,
                    &NewRecord {
                        kind,
                        name,
                        content: &content,
                        ttl: 1,
                        proxied: false,
                        comment: &comment,
                    },
                )
                .await?;
            tracing::info!(name, kind, content = %content, "DNS record created");
        }
        Ok(Outcome::Done)
    }

    /// Deletes the records of `name` that Opus made; any other is left alone, and said so.
    pub async fn unroute(&self, name: &str) -> Result<Outcome, CloudflareError> {
        let zone = self.zone().await?;
        if !zone.holds(name) {
            return Ok(Outcome::Done);
        }
        let records = self.client.records(&zone, name).await?;
        let routing: Vec<&DnsRecord> = records
            .iter()
            .filter(|r| ROUTE_TYPES.contains(&r.kind.as_str()))
            .collect();
        let mut deleted = 0;
        for r in routing.iter().filter(|r| is_ours(r)) {
            self.client.delete(&zone, &r.id).await?;
            deleted += 1;
        }
        if deleted > 0 {
            tracing::info!(name, "DNS record deleted");
        }
        match routing.iter().find(|r| !is_ours(r)) {
            Some(f) => Ok(Outcome::LeftAlone(foreign_reason(f))),
            None => Ok(Outcome::Done),
        }
    }

    /// Publishes a DNS-01 answer: the TXT record `name` with `value`. Opus's stale TXT records
    /// of the name (from an order cut short) are deleted first.
    pub async fn set_txt(&self, name: &str, value: &str) -> Result<(), CloudflareError> {
        self.clear_txt(name).await?;
        let zone = self.zone().await?;
        let comment = comment("acme challenge");
        self.client
            .create(
                &zone,
                &NewRecord {
                    kind: "TXT",
                    name,
                    content: value,
                    ttl: 60,
                    proxied: false,
                    comment: &comment,
                },
            )
            .await?;
        Ok(())
    }

    /// Deletes Opus's TXT records of `name` (after validation).
    pub async fn clear_txt(&self, name: &str) -> Result<(), CloudflareError> {
        let zone = self.zone().await?;
        for r in self.client.records(&zone, name).await? {
            if r.kind == "TXT" && is_ours(&r) {
                self.client.delete(&zone, &r.id).await?;
            }
        }
        Ok(())
    }
}

/// Why a name with someone else's record is left alone.
fn foreign_reason(r: &DnsRecord) -> String {
    format!(
        "a {} record of {} that Opus did not make (no \"{COMMENT_PREFIX}\" comment) is there; left alone",
        r.kind, r.name
    )
}
