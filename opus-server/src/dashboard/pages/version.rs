//! `GET /projects/{project}/versions/{version}?against=<other>`: a stored version's files (path,
//! size, sha256) from its manifest, and, against another version of the project, which files
//! were added, changed or removed and how many bytes that is: both read from the two manifests.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use opus_core::artifact::ManifestFile;
use opus_core::model::{ProjectName, VersionName};
use serde::Deserialize;
use tracing::instrument;

use crate::dashboard::layout::{self, ago, size};
use crate::dashboard::session::Visitor;
use crate::dashboard::{Dashboard, DashboardError};

/// Files listed at most (a large site has tens of thousands).
const FILES_SHOWN: usize = 1000;

/// `?against=`: the version to compare with.
#[derive(Debug, Deserialize)]
pub(in crate::dashboard) struct VersionQuery {
    against: Option<String>,
}

/// How one version's files differ from another's.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ManifestDiff<'a> {
    /// Files only in this version.
    pub(crate) added: Vec<&'a ManifestFile>,
    /// Files in both whose content differs (this version's entry).
    pub(crate) changed: Vec<&'a ManifestFile>,
    /// Files only in the other version.
    pub(crate) removed: Vec<&'a ManifestFile>,
    /// Bytes of this version's files that the other version does not have: added plus changed.
    pub(crate) new_bytes: u64,
}

/// Compares two manifests' file lists by path and sha256.
pub(crate) fn diff<'a>(this: &'a [ManifestFile], other: &'a [ManifestFile]) -> ManifestDiff<'a> {
    let theirs: BTreeMap<&str, &ManifestFile> =
        other.iter().map(|f| (f.path.as_str(), f)).collect();
    let ours: BTreeMap<&str, &ManifestFile> = this.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = ManifestDiff::default();
    for (path, f) in &ours {
        match theirs.get(path) {
            None => out.added.push(f),
            Some(o) if o.sha256 != f.sha256 => out.changed.push(f),
            Some(_) => continue,
        }
        out.new_bytes += f.size;
    }
    out.removed = theirs
        .iter()
        .filter(|(path, _)| !ours.contains_key(*path))
        .map(|(_, f)| *f)
        .collect();
    out
}

/// The error of a version the project does not have.
pub(in crate::dashboard) fn not_found(
    project: &ProjectName,
    version: &VersionName,
) -> DashboardError {
    opus_core::error::StoreError::VersionNotFound {
        project: project.as_str().to_owned(),
        version: version.as_str().to_owned(),
    }
    .into()
}

/// The page.
#[instrument(skip_all, fields(project = %project, version = %version))]
pub(in crate::dashboard) async fn version(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, version)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, DashboardError> {
    let project = ProjectName::new(project)?;
    let version = VersionName::new(version)?;
    let record = d
        .store
        .get_version(&project, &version)?
        .ok_or_else(|| not_found(&project, &version))?;
    let artifacts = d.deployer.artifacts();
    let manifest = artifacts
        .manifest(&project, &version)
        .await
        .map_err(opus_core::CoreError::from)?;
    let against = match q.against.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(other) => {
            let other = VersionName::new(other)?;
            let m = artifacts
                .manifest(&project, &other)
                .await
                .map_err(opus_core::CoreError::from)?;
            Some((other, m))
        }
    };
    let others: Vec<String> = d
        .store
        .list_versions(&project)?
        .into_iter()
        .map(|v| v.version.as_str().to_owned())
        .filter(|v| v != version.as_str())
        .collect();
    let name = project.as_str();
    let v = version.as_str();
    let body = html! {
        p.muted { a href="/" { "Projects" } " / " a href={ "/projects/" (name) } { (name) } " / " }
        h1 { (name) " " (v) }
        section.card {
            dl.facts {
                dt { "Stored" } dd { (ago(record.created_at)) }
                dt { "Files" } dd { (record.file_count) ", " (size(record.size)) }
                dt { "Archive" } dd { (size(record.archive_size)) " " span.muted { "sha256 " (record.archive_sha256) } }
                @if record.build_id > 0 {
                    dt { "Build" } dd { a href={ "/projects/" (name) "/builds/" (record.build_id) } { "#" (record.build_id) } }
                }
                @if !record.commit.is_empty() { dt { "Commit" } dd { code { (record.commit) } } }
            }
            @if !others.is_empty() {
                form.row method="get" action={ "/projects/" (name) "/versions/" (v) } {
                    label for="against" { "Compare with"
                        select id="against" name="against" {
                            @for o in &others {
                                option value=(o) selected[against.as_ref().is_some_and(|(a, _)| a.as_str() == o)] { (o) }
                            }
                        }
                    }
                    button.secondary type="submit" { "Compare" }
                }
            }
        }
        @if let Some((other, m)) = &against {
            (render_diff(v, other.as_str(), &diff(&manifest.files, &m.files)))
        }
        h2 { "Files" }
        (files(&manifest.files))
    };
    Ok(layout::respond(
        StatusCode::OK,
        layout::page(&format!("{name} {v}"), Some(&visitor), body),
    ))
}

fn render_diff(this: &str, other: &str, d: &ManifestDiff<'_>) -> Markup {
    html! {
        h2 { "Against " (other) }
        p.notice {
            (d.added.len()) " added, " (d.changed.len()) " changed, " (d.removed.len()) " removed; "
            (size(d.new_bytes)) " in " (this) " that " (other) " does not have."
        }
        @for (title, list) in [("Added", &d.added), ("Changed", &d.changed), ("Removed", &d.removed)] {
            @if !list.is_empty() {
                h2 { (title) }
                (files_of(list.iter().copied()))
            }
        }
    }
}

fn files(list: &[ManifestFile]) -> Markup {
    html! {
        (files_of(list.iter().take(FILES_SHOWN)))
        @if list.len() > FILES_SHOWN {
            p.muted { "The first " (FILES_SHOWN) " of " (list.len()) " files." }
        }
    }
}

fn files_of<'a>(list: impl Iterator<Item = &'a ManifestFile>) -> Markup {
    html! {
        div.table { table.stack {
            thead { tr { th { "Path" } th { "Size" } th { "sha256" } } }
            tbody {
                @for f in list {
                    tr {
                        td data-label="Path" { code { (f.path) } }
                        td data-label="Size" { (size(f.size)) }
                        td data-label="sha256" { code.muted { (f.sha256) } }
                    }
                }
            }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, sha: &str) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            size,
            sha256: sha.into(),
            mode: 0o644,
        }
    }

    #[test]
    fn the_diff_names_added_changed_and_removed_files_and_their_bytes() {
        let old = [file("a", 1, "x"), file("b", 2, "y"), file("gone", 3, "z")];
        let new = [file("a", 1, "x"), file("b", 5, "y2"), file("new", 7, "w")];
        let d = diff(&new, &old);
        let paths = |l: &[&ManifestFile]| l.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&d.added), ["new"]);
        assert_eq!(paths(&d.changed), ["b"]);
        assert_eq!(paths(&d.removed), ["gone"]);
        assert_eq!(d.new_bytes, 12);
        assert_eq!(diff(&new, &new), ManifestDiff::default());
    }
}
