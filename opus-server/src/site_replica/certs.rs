//! The certificates a replica serves over HTTPS: the ones opusd shares in the store
//! (`_opus/certs/<host>/`), listed on every poll of the pointers; a pair whose stamps changed
//! (new, renewed) is read and served from the next handshake on, one that cannot be served is
//! skipped with a warning (the one served before stays), one gone from the store stops being
//! served. Replicas never order certificates.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use opus_core::artifact::CertStamp;
use opus_core::artifact::pointers::SiteStore;
use opus_core::error::ArtifactError;

use crate::acme::{CertResolver, LoadedCert};
use crate::sites::https::HttpsState;

/// Keeps the TLS resolver and the certified hosts (for redirects) in step with the store.
pub struct CertFollower {
    resolver: Arc<CertResolver>,
    https: Arc<HttpsState>,
    /// Each listed host's stamps when its pair was last read (served or refused).
    known: HashMap<String, CertStamp>,
}

impl CertFollower {
    /// A follower feeding `resolver` (the TLS listener's) and `https` (the site server's).
    pub fn new(resolver: Arc<CertResolver>, https: Arc<HttpsState>) -> CertFollower {
        CertFollower {
            resolver,
            https,
            known: HashMap::new(),
        }
    }

    /// Lists the store's certificates and serves what changed; whether the served set changed.
    pub async fn poll(&mut self, store: &SiteStore) -> Result<bool, ArtifactError> {
        let listed = store.list_certificates().await?;
        let mut changed = false;
        let hosts: HashSet<String> = listed.iter().map(|c| c.host.clone()).collect();
        for stamp in listed {
            if self.known.get(&stamp.host) == Some(&stamp) {
                continue;
            }
            // Gone since the listing: the next poll sees it.
            let Some((key, chain)) = store.read_certificate(&stamp).await? else {
                continue;
            };
            match LoadedCert::parse(&key, &chain) {
                Ok(cert) => {
                    tracing::info!(domain = %stamp.host, issuer = %cert.issuer, "serving the certificate from the store");
                    self.resolver.insert(&stamp.host, cert.key);
                    changed = true;
                }
                Err(e) => {
                    let kept = self.resolver.hosts().contains(&stamp.host);
                    tracing::warn!(domain = %stamp.host, error = %e, kept_previous = kept, "a certificate in the store cannot be served; skipped");
                }
            }
            self.known.insert(stamp.host.clone(), stamp);
        }
        self.known.retain(|h, _| hosts.contains(h));
        for host in self.resolver.hosts() {
            if !hosts.contains(&host) {
                tracing::info!(domain = %host, "the certificate left the store; no longer served");
                self.resolver.remove(&host);
                changed = true;
            }
        }
        if changed {
            self.https
                .set_certified(self.resolver.hosts().into_iter().collect());
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A self-signed certificate for `host`: (key PEM, chain PEM).
    fn self_signed(host: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("rcgen");
        (c.signing_key.serialize_pem(), c.cert.pem())
    }

    /// Writes `host`'s pair as opusd stores it in a `file://` store rooted at `root`.
    fn put(root: &Path, host: &str, key: &str, chain: &str) {
        let dir = root.join("_opus/certs").join(host);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("key.pem"), key).expect("write");
        std::fs::write(dir.join("cert.pem"), chain).expect("write");
    }

    fn served(resolver: &CertResolver) -> Vec<String> {
        let mut hosts = resolver.hosts();
        hosts.sort();
        hosts
    }

    #[tokio::test]
    async fn store_certificates_are_served_renewed_kept_when_damaged_and_dropped_when_gone() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("artifacts");
        std::fs::create_dir_all(&root).expect("mkdir");
        let store = SiteStore::open(&format!("file://{}", root.display())).expect("store");
        let resolver = Arc::new(CertResolver::default());
        let https = Arc::new(HttpsState::new(true, 0));
        let mut certs = CertFollower::new(resolver.clone(), https.clone());
        assert!(!certs.poll(&store).await.expect("an empty store"));

        let (key, chain) = self_signed("www.acme.com");
        put(&root, "www.acme.com", &key, &chain);
        let (wkey, wchain) = self_signed("*.preview.acme.com");
        put(&root, "*.preview.acme.com", &wkey, &wchain);
        assert!(certs.poll(&store).await.expect("poll"));
        assert_eq!(served(&resolver), ["*.preview.acme.com", "www.acme.com"]);
        assert!(https.is_certified("www.acme.com"));
        assert!(https.is_certified("pr-1--web.preview.acme.com"));
        assert!(
            !certs.poll(&store).await.expect("poll"),
            "nothing changed, nothing read"
        );

        // A damaged pair (a chain that is not the key's, a chain that does not parse) is
        // skipped: the one served before stays, an unknown host gets none.
        let (other_key, _) = self_signed("www.acme.com");
        put(&root, "www.acme.com", &other_key, &chain);
        put(&root, "bad.acme.com", "not a key", "not a chain");
        assert!(
            !certs
                .poll(&store)
                .await
                .expect("a damaged pair is no error")
        );
        assert_eq!(served(&resolver), ["*.preview.acme.com", "www.acme.com"]);
        assert!(!https.is_certified("bad.acme.com"));

        // Renewed: served from the next poll.
        let (new_key, new_chain) = self_signed("www.acme.com");
        put(&root, "www.acme.com", &new_key, &new_chain);
        assert!(certs.poll(&store).await.expect("poll"));
        assert_eq!(served(&resolver), ["*.preview.acme.com", "www.acme.com"]);

        // Gone from the store (its domain removed): no longer served nor redirected.
        std::fs::remove_dir_all(root.join("_opus/certs/*.preview.acme.com")).expect("rm");
        assert!(certs.poll(&store).await.expect("poll"));
        assert_eq!(served(&resolver), ["www.acme.com"]);
        assert!(!https.is_certified("pr-1--web.preview.acme.com"));
    }
}
