//! Storing what a build's job produced as the build's version: a folder of opusd's workspace
//! (files, archive, manifest, then the commit), or a runner's upload (checked, then committed).
//! Either way the version's site options are written in the same commit as its record.

use opus_core::artifact::Origin;
use opus_core::model::Build;
use opus_core::recipe::{OpusFile, SpecOrigin};
use opus_core::store::SiteOptions;

use super::BuildContext;
use super::executor::Produced;
use super::failure::{BuildFailure, FailureKind, Stage};
use crate::logs::BuildLog;

/// How the version is served: opus.yml's `spa`; without opus.yml, `spa` when package.json has a
/// client-side router ([`opus_core::recipe::package::ROUTERS`]) and the output has an
/// `index.html` at its root to fall back to (a runner's upload is not looked into: the router
/// decides alone). The decision is said in the log.
pub(super) fn site_options(
    spec: &OpusFile,
    origin: SpecOrigin,
    produced: &Produced,
    log: &BuildLog,
) -> SiteOptions {
    if origin == SpecOrigin::OpusYml || !spec.spa {
        return SiteOptions {
            spa: spec.spa,
            rules: spec.site.rules.clone(),
        };
    }
    let has_index = match produced {
        Produced::Folder(output) => output.dir.join("index.html").is_file(),
        Produced::Uploaded(_) => true,
    };
    if !has_index {
        log.opus(
            "output",
            "not a single-page app after all: the output has no index.html at its root for unknown paths to serve",
        );
    }
    SiteOptions {
        spa: has_index,
        rules: spec.site.rules.clone(),
    }
}

/// Stores `produced` as the build's version with `options`.
pub(super) async fn store(
    ctx: &BuildContext,
    build: &Build,
    produced: Produced,
    options: &SiteOptions,
    log: &BuildLog,
) -> Result<(), BuildFailure> {
    let version = super::prepare::decided_version(build, Stage::Store)?;
    let origin = Origin {
        build_id: build.number,
        commit: build.commit.clone(),
        store: build.store.clone(),
    };
    let failed = |source| {
        BuildFailure::new(
            Stage::Store,
            FailureKind::Store {
                version: version.to_string(),
                source,
            },
        )
    };
    match produced {
        Produced::Folder(output) => {
            let stored = ctx
                .artifacts
                .store_dir(&build.project, version, &output.dir, &origin, options)
                .await
                .map_err(failed)?;
            // The counts of the walk that stored it: the output is not walked twice.
            log.opus(
                "output",
                &format!(
                    "{}: {} file(s), {} bytes",
                    output.name, stored.record.file_count, stored.record.size
                ),
            );
            log.opus(
                "store",
                &format!(
                    "stored version {version} in {}: {} file(s) written ({} bytes), {} unchanged file(s) copied",
                    stored.record.store, stored.files_written, stored.bytes_written, stored.files_copied
                ),
            );
        }
        Produced::Uploaded(uploaded) => {
            let stored = uploaded.commit(&origin, options, log).await?;
            log.opus(
                "store",
                &format!(
                    "stored version {version} in {}: {} file(s), {} bytes, uploaded by the runner",
                    stored.record.store, stored.record.file_count, stored.record.size
                ),
            );
        }
    }
    Ok(())
}
