//! TLS certificates in the default artifact store, so that every opusd and site replica reading
//! that store serves the same certificate: `_opus/certs/<host>/key.pem` and
//! `_opus/certs/<host>/cert.pem` (the chain, leaf first), under the store URL's prefix. The `_`
//! keeps them apart from versions: no project name can start with one. Other `_opus/` keys
//! (environment pointers) belong to the site replicas.
//!
//! The key is written before the chain: a reader between the two writes sees a key that is not
//! the chain's, which it must refuse (the certificate manager checks the pair), never a chain
//! with a key that was never issued for it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::PutPayload;

use super::ArtifactStore;
use super::pointers::{PointerStamp, SiteStore};
use crate::error::ArtifactError;
use crate::model::StoreName;

/// The folder of the certificates, under the store's prefix.
pub const CERTS_PREFIX: &str = "_opus/certs";

impl ArtifactStore {
    /// Whether the default store is a `file://` folder (certificates are then kept only in the
    /// data directory: no replica shares such a store, and the folder has no owner-only mode).
    pub fn default_store_is_local(&self) -> bool {
        self.backend(&StoreName::default_store())
            .is_ok_and(|b| b.local_root.is_some())
    }

    /// Stores `host`'s key and chain (key first).
    pub async fn put_certificate(
        &self,
        host: &str,
        key_pem: &str,
        chain_pem: &str,
    ) -> Result<(), ArtifactError> {
        let b = self.backend(&StoreName::default_store())?;
        for (name, text) in [("key.pem", key_pem), ("cert.pem", chain_pem)] {
            let key = b.path(&format!("{CERTS_PREFIX}/{host}/{name}"))?;
            b.store
                .put(&key, PutPayload::from(Bytes::from(text.to_owned())))
                .await
                .map_err(b.err(format!("store {key}")))?;
        }
        Ok(())
    }

    /// `host`'s stored `(key PEM, chain PEM)`, if both are there.
    pub async fn certificate(&self, host: &str) -> Result<Option<(String, String)>, ArtifactError> {
        let b = self.backend(&StoreName::default_store())?;
        let mut texts = Vec::with_capacity(2);
        for name in ["key.pem", "cert.pem"] {
            let key = b.path(&format!("{CERTS_PREFIX}/{host}/{name}"))?;
            match b.store.get(&key).await {
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(b.err(format!("read {key}")))?;
                    texts.push(String::from_utf8_lossy(&bytes).into_owned());
                }
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(b.err(format!("read {key}"))(e)),
            }
        }
        let chain = texts.pop().unwrap_or_default();
        let key = texts.pop().unwrap_or_default();
        Ok(Some((key, chain)))
    }

    /// Deletes `host`'s certificate (its domain was removed); one already gone is fine.
    pub async fn delete_certificate(&self, host: &str) -> Result<(), ArtifactError> {
        let b = self.backend(&StoreName::default_store())?;
        for name in ["cert.pem", "key.pem"] {
            let key = b.path(&format!("{CERTS_PREFIX}/{host}/{name}"))?;
            match b.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(b.err(format!("delete {key}"))(e)),
            }
        }
        Ok(())
    }
}

/// A listed certificate of the store: its host and the stamps of its two objects, which change
/// whenever either is rewritten (a renewal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStamp {
    /// The host (`www.acme.com`, `*.preview.acme.com`).
    pub host: String,
    /// The stamp of `key.pem`.
    pub key: PointerStamp,
    /// The stamp of `cert.pem`.
    pub chain: PointerStamp,
}

impl SiteStore {
    /// Every certificate in the store with both its objects: one listing of `_opus/certs/`.
    /// A host with only one of them (mid-write, mid-delete) is left out.
    pub async fn list_certificates(&self) -> Result<Vec<CertStamp>, ArtifactError> {
        let prefix = self.path(CERTS_PREFIX)?;
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.err(format!("listing {prefix}/")))?;
        let mut halves: BTreeMap<String, (Option<PointerStamp>, Option<PointerStamp>)> =
            BTreeMap::new();
        let under = format!("{prefix}/");
        for m in listed {
            let Some((host, name)) = m
                .location
                .as_ref()
                .strip_prefix(&under)
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            let (host, name) = (host.to_owned(), name.to_owned());
            let stamp = PointerStamp {
                key: m.location,
                e_tag: m.e_tag,
                last_modified: SystemTime::from(m.last_modified),
                size: m.size,
            };
            let entry = halves.entry(host).or_default();
            match name.as_str() {
                "key.pem" => entry.0 = Some(stamp),
                "cert.pem" => entry.1 = Some(stamp),
                _ => {}
            }
        }
        Ok(halves
            .into_iter()
            .filter_map(|(host, (key, chain))| {
                Some(CertStamp {
                    host,
                    key: key?,
                    chain: chain?,
                })
            })
            .collect())
    }

    /// The `(key PEM, chain PEM)` of a listed certificate; `None` when either object is gone
    /// since the listing.
    pub async fn read_certificate(
        &self,
        listed: &CertStamp,
    ) -> Result<Option<(String, String)>, ArtifactError> {
        let mut texts = Vec::with_capacity(2);
        for key in [&listed.key.key, &listed.chain.key] {
            match self.get(key).await {
                Ok(bytes) => texts.push(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) if e.is_object_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let chain = texts.pop().unwrap_or_default();
        let key = texts.pop().unwrap_or_default();
        Ok(Some((key, chain)))
    }
}

#[cfg(test)]
mod tests {
    use crate::artifact::ArtifactStore;
    use crate::store::MetaStore;

    #[tokio::test]
    async fn a_certificate_is_stored_read_and_deleted_under_opus_certs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let url = format!("file://{}", dir.path().join("artifacts").display());
        let store = ArtifactStore::open(meta, &url, &[]).expect("open");
        assert!(store.default_store_is_local());
        assert_eq!(
            store.certificate("*.preview.acme.com").await.expect("read"),
            None
        );
        store
            .put_certificate("*.preview.acme.com", "KEY", "CHAIN")
            .await
            .expect("put");
        let on_disk = dir
            .path()
            .join("artifacts/_opus/certs/*.preview.acme.com/cert.pem");
        assert_eq!(std::fs::read_to_string(on_disk).expect("written"), "CHAIN");
        assert_eq!(
            store.certificate("*.preview.acme.com").await.expect("read"),
            Some(("KEY".to_owned(), "CHAIN".to_owned()))
        );
        // A replica lists and reads it through its site store; a half-written pair is not listed.
        let sites = store.site_store().expect("site store");
        std::fs::create_dir_all(dir.path().join("artifacts/_opus/certs/half.acme.com"))
            .expect("mkdir");
        std::fs::write(
            dir.path()
                .join("artifacts/_opus/certs/half.acme.com/key.pem"),
            "KEY",
        )
        .expect("write");
        let listed = sites.list_certificates().await.expect("list");
        assert_eq!(
            listed.iter().map(|c| c.host.as_str()).collect::<Vec<_>>(),
            ["*.preview.acme.com"]
        );
        assert_eq!(
            sites.read_certificate(&listed[0]).await.expect("read"),
            Some(("KEY".to_owned(), "CHAIN".to_owned()))
        );
        store
            .delete_certificate("*.preview.acme.com")
            .await
            .expect("delete");
        store
            .delete_certificate("*.preview.acme.com")
            .await
            .expect("a second delete is fine");
        assert_eq!(
            store.certificate("*.preview.acme.com").await.expect("read"),
            None
        );
    }
}
