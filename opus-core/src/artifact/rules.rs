//! A version's `_redirects` and `_headers` files, read back from the store once its files are
//! written and parsed into the site options committed with it. Reading them from the store
//! rather than from where they came serves the three ways a version arrives alike (a build's
//! folder, a publish session, a runner's upload).

use object_store::ObjectStoreExt;

use crate::error::ArtifactError;
use crate::site_rules::{self, HEADERS_FILE, REDIRECTS_FILE, SiteRules};
use crate::store::SiteOptions;

use super::{Backend, VersionManifest};

/// `options` with the rules of the version's files first (as on Netlify, `_redirects` comes
/// before configuration), then those it already had (opus.yml `site:`).
///
/// Errors: `SiteRules` naming the file and line of a malformed rule; `ObjectStore` when a rules
/// file listed in the manifest cannot be read.
pub(super) async fn with_file_rules(
    backend: &Backend,
    manifest: &VersionManifest,
    options: &SiteOptions,
) -> Result<SiteOptions, ArtifactError> {
    let mut from_files = SiteRules::default();
    if manifest.file(REDIRECTS_FILE).is_some() {
        let text = read_text(backend, manifest, REDIRECTS_FILE).await?;
        from_files.redirects = site_rules::parse_redirects(&text, REDIRECTS_FILE)?;
    }
    if manifest.file(HEADERS_FILE).is_some() {
        let text = read_text(backend, manifest, HEADERS_FILE).await?;
        from_files.headers = site_rules::parse_headers(&text, HEADERS_FILE)?;
    }
    Ok(SiteOptions {
        rules: from_files.then(options.rules.clone()),
        ..options.clone()
    })
}

/// The text of the version's file `rel` (invalid UTF-8 is replaced: the parser then names the
/// line it cannot read).
async fn read_text(
    backend: &Backend,
    manifest: &VersionManifest,
    rel: &str,
) -> Result<String, ArtifactError> {
    let key = backend.file_key(manifest.project.as_str(), manifest.version.as_str(), rel)?;
    let bytes = backend
        .store
        .get(&key)
        .await
        .map_err(backend.err(format!("reading {key}")))?
        .bytes()
        .await
        .map_err(backend.err(format!("reading {key}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
