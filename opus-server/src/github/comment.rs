//! The one comment opusd keeps on a GitHub pull request whose base opus.yml asks for it
//! (`pull_requests: { comment: true }`): the preview's URL, and what the preview's version
//! changes against production's, from the two versions' manifests (files added, changed and
//! removed, and their bytes). Made on the first preview (`POST`), edited in place on the next
//! ones (`PATCH`, the id kept in the store), as a step of the deploy's outbox record: in order
//! and retried like every other call.

use std::fmt::Write as _;

use opus_core::artifact::{ArtifactStore, ChangedFile, ManifestDiff, VersionManifest};
use opus_core::error::StoreError;
use opus_core::forge::{PrComment, StatusDelivery};
use opus_core::model::{EnvName, ProjectName, VersionName};
use opus_core::store::MetaStore;

use super::client::{Client, Verdict};

/// At most this many files are named, per list; the totals always count them all.
const LISTED: usize = 50;

/// Makes or edits `comment` on the record's pull request; the id of a comment made comes back
/// with the verdict.
pub(super) async fn send(
    client: &Client,
    store: &MetaStore,
    artifacts: &ArtifactStore,
    record: &StatusDelivery,
    comment: &PrComment,
    preview_url: Option<&str>,
) -> (Verdict, Option<u64>) {
    let body = match body(store, artifacts, &record.project, comment, preview_url).await {
        Ok(body) => body,
        Err(e) => return (Verdict::Refused(0, e), None),
    };
    let repository = &record.commit.repository;
    match comment.id {
        Some(id) => (client.update_pr_comment(repository, id, &body).await, None),
        None => {
            client
                .create_pr_comment(repository, comment.number, &body)
                .await
        }
    }
}

/// The comment's text: the preview's URL and version, then the files it changes against
/// production.
async fn body(
    store: &MetaStore,
    artifacts: &ArtifactStore,
    project: &str,
    comment: &PrComment,
    preview_url: Option<&str>,
) -> Result<String, String> {
    let name = ProjectName::new(project).map_err(|e| e.to_string())?;
    let version = VersionName::new(comment.version.as_str()).map_err(|e| e.to_string())?;
    let new = artifacts
        .manifest(&name, &version)
        .await
        .map_err(|e| format!("cannot read the manifest of {version}: {e}"))?;
    let production = match store.environment(&name, &EnvName::production()) {
        Ok(env) => Some(env.current.version),
        Err(StoreError::EnvironmentNotFound { .. }) => None,
        Err(e) => return Err(e.to_string()),
    };
    let old = match &production {
        Some(v) => {
            let v = VersionName::new(v.as_str()).map_err(|e| e.to_string())?;
            Some(
                artifacts
                    .manifest(&name, &v)
                    .await
                    .map_err(|e| format!("cannot read the manifest of production's {v}: {e}"))?,
            )
        }
        None => None,
    };
    Ok(render(
        comment.number,
        preview_url,
        &new,
        production.as_deref(),
        &ManifestDiff::between(old.as_ref(), &new),
    ))
}

/// The Markdown of the comment.
fn render(
    number: u64,
    preview_url: Option<&str>,
    new: &VersionManifest,
    production: Option<&str>,
    diff: &ManifestDiff,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "**Opus preview** of #{number}");
    let _ = writeln!(out);
    if let Some(url) = preview_url {
        let _ = writeln!(out, "Preview: {url}");
    }
    let _ = writeln!(
        out,
        "Version: `{}` ({} files, {})",
        new.version,
        new.files.len(),
        bytes(new.files.iter().map(|f| f.size).sum())
    );
    let _ = writeln!(out);
    let Some(production) = production else {
        let _ = writeln!(
            out,
            "No version is in production yet: every file is new ({} files).",
            diff.added.len()
        );
        return out;
    };
    if diff.is_empty() {
        let _ = writeln!(out, "Against production (`{production}`): no file changed.");
        return out;
    }
    let (added, changed, removed) = diff.bytes();
    let _ = writeln!(out, "Against production (`{production}`):");
    let _ = writeln!(out);
    let _ = writeln!(out, "| | files | bytes |");
    let _ = writeln!(out, "| --- | ---: | ---: |");
    let _ = writeln!(out, "| added | {} | +{} |", diff.added.len(), bytes(added));
    let sign = if changed < 0 { "-" } else { "+" };
    let _ = writeln!(
        out,
        "| changed | {} | {sign}{} |",
        diff.changed.len(),
        bytes(changed.unsigned_abs())
    );
    let _ = writeln!(
        out,
        "| removed | {} | -{} |",
        diff.removed.len(),
        bytes(removed)
    );
    let _ = writeln!(out);
    list(&mut out, "added", &diff.added, |f| bytes(f.new_size));
    list(&mut out, "changed", &diff.changed, |f| {
        format!("{} → {}", bytes(f.old_size), bytes(f.new_size))
    });
    list(&mut out, "removed", &diff.removed, |f| bytes(f.old_size));
    out
}

/// One list of files, cut at [`LISTED`].
fn list(
    out: &mut String,
    what: &str,
    files: &[ChangedFile],
    size: impl Fn(&ChangedFile) -> String,
) {
    for f in files.iter().take(LISTED) {
        let _ = writeln!(out, "- {what} `{}` ({})", f.path, size(f));
    }
    if files.len() > LISTED {
        let _ = writeln!(out, "- … and {} more {what}", files.len() - LISTED);
    }
}

/// Bytes as people read them: `512 B`, `1.5 KiB`, `2.0 MiB`.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / KIB),
        _ => format!("{:.1} MiB", n as f64 / (KIB * KIB)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use opus_core::artifact::{ArchiveInfo, ManifestFile};

    fn manifest(version: &str, files: &[(&str, u64, &str)]) -> VersionManifest {
        VersionManifest {
            project: ProjectName::new("web").expect("name"),
            version: VersionName::new(version).expect("version"),
            build_id: 1,
            commit: String::new(),
            created_at: SystemTime::UNIX_EPOCH,
            archive: ArchiveInfo {
                size: 0,
                sha256: String::new(),
            },
            files: files
                .iter()
                .map(|(path, size, sha)| ManifestFile {
                    path: (*path).to_owned(),
                    size: *size,
                    sha256: (*sha).to_owned(),
                    mode: 0o644,
                })
                .collect(),
        }
    }

    #[test]
    fn the_comment_names_the_preview_and_each_change_against_production() {
        let old = manifest("1.0.0", &[("index.html", 100, "a"), ("old.js", 2048, "b")]);
        let new = manifest(
            "pr-7-2-abc1234",
            &[("index.html", 130, "c"), ("new.css", 10, "d")],
        );
        let text = render(
            7,
            Some("http://pr-7--web.localhost/"),
            &new,
            Some("1.0.0"),
            &ManifestDiff::between(Some(&old), &new),
        );
        assert!(
            text.contains("Preview: http://pr-7--web.localhost/"),
            "{text}"
        );
        assert!(text.contains("Against production (`1.0.0`)"), "{text}");
        assert!(text.contains("| added | 1 | +10 B |"), "{text}");
        assert!(text.contains("| changed | 1 | +30 B |"), "{text}");
        assert!(text.contains("| removed | 1 | -2.0 KiB |"), "{text}");
        assert!(
            text.contains("- changed `index.html` (100 B → 130 B)"),
            "{text}"
        );
        assert!(text.contains("- removed `old.js` (2.0 KiB)"), "{text}");
        let first = render(7, None, &new, None, &ManifestDiff::between(None, &new));
        assert!(first.contains("No version is in production yet"), "{first}");
        let same = render(
            7,
            None,
            &old,
            Some("1.0.0"),
            &ManifestDiff::between(Some(&old), &old),
        );
        assert!(same.contains("no file changed"), "{same}");
    }

    #[test]
    fn long_lists_are_cut_and_sizes_read_as_people_read_them() {
        let files: Vec<ChangedFile> = (0..60)
            .map(|i| ChangedFile {
                path: format!("f{i}"),
                old_size: 0,
                new_size: 1,
            })
            .collect();
        let mut out = String::new();
        list(&mut out, "added", &files, |f| bytes(f.new_size));
        assert_eq!(out.lines().count(), LISTED + 1);
        assert!(out.ends_with("- … and 10 more added\n"), "{out}");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
