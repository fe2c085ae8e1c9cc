//! What changed between two versions, from their manifests alone (no file is read): the files
//! added, changed (another sha256) and removed, and their bytes. What a pull request's comment
//! says its preview changes against production.

use super::VersionManifest;

/// One file of a [`ManifestDiff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Its path inside the version.
    pub path: String,
    /// Its size before (0 when added).
    pub old_size: u64,
    /// Its size after (0 when removed).
    pub new_size: u64,
}

/// The files that differ between an old version and a new one, each list sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestDiff {
    /// In the new version only.
    pub added: Vec<ChangedFile>,
    /// In both, with other content.
    pub changed: Vec<ChangedFile>,
    /// In the old version only.
    pub removed: Vec<ChangedFile>,
}

impl ManifestDiff {
    /// The difference from `old` (none: everything is added) to `new`.
    pub fn between(old: Option<&VersionManifest>, new: &VersionManifest) -> ManifestDiff {
        let mut diff = ManifestDiff::default();
        for file in &new.files {
            match old.and_then(|o| o.file(&file.path)) {
                None => diff.added.push(ChangedFile {
                    path: file.path.clone(),
                    old_size: 0,
                    new_size: file.size,
                }),
                Some(before) if before.sha256 != file.sha256 => diff.changed.push(ChangedFile {
                    path: file.path.clone(),
                    old_size: before.size,
                    new_size: file.size,
                }),
                Some(_) => {}
            }
        }
        if let Some(old) = old {
            diff.removed = old
                .files
                .iter()
                .filter(|f| new.file(&f.path).is_none())
                .map(|f| ChangedFile {
                    path: f.path.clone(),
                    old_size: f.size,
                    new_size: 0,
                })
                .collect();
        }
        diff
    }

    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Bytes added by new files, and the growth of changed ones (negative: they shrank), and
    /// bytes of removed files: `(added, changed, removed)`.
    pub fn bytes(&self) -> (u64, i64, u64) {
        let added = self.added.iter().map(|f| f.new_size).sum();
        let changed = self
            .changed
            .iter()
            .map(|f| f.new_size as i64 - f.old_size as i64)
            .sum();
        let removed = self.removed.iter().map(|f| f.old_size).sum();
        (added, changed, removed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::artifact::{ArchiveInfo, ManifestFile};
    use crate::model::{ProjectName, VersionName};

    fn manifest(files: &[(&str, u64, &str)]) -> VersionManifest {
        VersionManifest {
            project: ProjectName::new("web").expect("name"),
            version: VersionName::new("v1").expect("version"),
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
    fn added_changed_and_removed_by_content() {
        let old = manifest(&[
            ("a.html", 10, "aa"),
            ("b.css", 20, "bb"),
            ("gone.js", 5, "cc"),
        ]);
        let new = manifest(&[
            ("a.html", 10, "aa"),
            ("b.css", 26, "b2"),
            ("new.js", 7, "dd"),
        ]);
        let diff = ManifestDiff::between(Some(&old), &new);
        let paths = |fs: &[ChangedFile]| fs.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&diff.added), ["new.js"]);
        assert_eq!(paths(&diff.changed), ["b.css"]);
        assert_eq!(paths(&diff.removed), ["gone.js"]);
        assert_eq!(diff.bytes(), (7, 6, 5));
        assert!(ManifestDiff::between(Some(&new), &new).is_empty());
        let first = ManifestDiff::between(None, &new);
        assert_eq!(first.added.len(), 3);
        assert_eq!(first.bytes(), (43, 0, 0));
    }
}
