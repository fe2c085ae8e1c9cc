//! tar.gz archives of versions, and the path rules that keep every file inside its folder.
//!
//! - [`check_relative_path`]: the one rule for a path inside a version (no absolute paths, no `..`,
//!   no empty or `.` components, no control characters, no backslashes). InstallObjects, published
//!   folders, stored objects and extracted archives all go through it.
//! - [`collect_files`]: walks a folder (a build's output, or a folder to publish) into
//!   [`LocalFile`]s; a symlink pointing outside the folder is refused, one pointing inside is
//!   stored as what it points to.
//! - [`append_tar`], [`gzip_member`], [`TAR_END`]: the pieces of the archive writer. An Opus
//!   archive is a concatenation of gzip members (valid gzip: `tar xzf`, `gunzip` and every
//!   decoder read it), so that members are compressed in parallel and content that does not
//!   compress (images, fonts, already-compressed files) is stored instead of being run through
//!   deflate for nothing.
//! - [`extract`]: reads a tar.gz into a new folder, refusing absolute paths, `..`, links that
//!   point outside, and entries that are not files, folders or symlinks.
//!
//! Architecture Invariant: nothing here knows about object stores or versions; it works on bytes,
//! readers and local folders only.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::error::ArchiveError;

/// The two zero blocks that end a tar stream.
pub const TAR_END: [u8; 1024] = [0; 1024];

/// Longest path accepted inside a version, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Checks that `path` is a plain relative path that stays inside its folder: not empty, not
/// absolute, no `..`, `.` or empty components, no backslash, no control characters.
pub fn check_relative_path(path: &str) -> Result<(), ArchiveError> {
    let fail = |why| {
        Err(ArchiveError::UnsafePath {
            path: path.to_owned(),
            why,
        })
    };
    if path.is_empty() {
        return fail("it is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return fail("it is longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return fail("it is absolute");
    }
    if path.contains('\\') {
        return fail("it contains a backslash");
    }
    if path.chars().any(|c| c.is_control()) {
        return fail("it contains a control character");
    }
    for part in path.split('/') {
        match part {
            ".." => return fail("it contains `..`"),
            "." => return fail("it contains a `.` component"),
            "" => return fail("it contains an empty component"),
            _ => {}
        }
    }
    Ok(())
}

/// A regular file found in a folder by [`collect_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Its path inside the folder, `/`-separated, checked by [`check_relative_path`].
    pub path: String,
    /// Where to read it (through any symlink that led to it).
    pub abs: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits (`0o644`, `0o755`).
    pub mode: u32,
}

/// How deep [`collect_files`] follows folders, as a guard against link loops.
const MAX_DEPTH: usize = 64;

/// Every regular file under `root`, sorted by path.
///
/// Symlinks are followed when they point inside `root` (the file or folder they point to is
/// collected under the link's path) and refused when they point outside it or nowhere.
pub fn collect_files(root: &Path) -> Result<Vec<LocalFile>, ArchiveError> {
    let canon_root = std::fs::canonicalize(root).map_err(|source| ArchiveError::Io {
        context: format!("cannot open folder {}", root.display()),
        source,
    })?;
    let mut out = Vec::new();
    walk(&canon_root, root, "", &mut out, 0)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    canon_root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<LocalFile>,
    depth: usize,
) -> Result<(), ArchiveError> {
    let io = |context: String| move |source| ArchiveError::Io { context, source };
    if depth > MAX_DEPTH {
        return Err(ArchiveError::UnsafePath {
            path: prefix.trim_end_matches('/').to_owned(),
            why: "folders nest more than 64 deep (a symlink loop?)",
        });
    }
    let entries =
        std::fs::read_dir(dir).map_err(io(format!("cannot read folder {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("cannot read folder {}", dir.display())))?;
        let abs = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(ArchiveError::UnsafePath {
                path: abs.display().to_string(),
                why: "its name is not UTF-8",
            });
        };
        let rel = format!("{prefix}{name}");
        check_relative_path(&rel)?;
        let file_type = entry
            .file_type()
            .map_err(io(format!("cannot stat {}", abs.display())))?;
        let meta = if file_type.is_symlink() {
            let target = std::fs::read_link(&abs)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".to_owned());
            let resolved = std::fs::canonicalize(&abs).map_err(|_| ArchiveError::LinkEscapes {
                path: rel.clone(),
                target: format!("{target} (which does not exist)"),
            })?;
            if !resolved.starts_with(canon_root) {
                return Err(ArchiveError::LinkEscapes { path: rel, target });
            }
            let meta = std::fs::metadata(&resolved)
                .map_err(io(format!("cannot stat {}", abs.display())))?;
            if meta.is_dir() {
                let canon_dir = std::fs::canonicalize(dir)
                    .map_err(io(format!("cannot open {}", dir.display())))?;
                if canon_dir.starts_with(&resolved) {
                    return Err(ArchiveError::UnsafePath {
                        path: rel,
                        why: "it is a symlink to a folder that contains it (a loop)",
                    });
                }
            }
            meta
        } else {
            entry
                .metadata()
                .map_err(io(format!("cannot stat {}", abs.display())))?
        };
        if meta.is_dir() {
            walk(canon_root, &abs, &format!("{rel}/"), out, depth + 1)?;
        } else if meta.is_file() {
            out.push(LocalFile {
                path: rel,
                abs,
                size: meta.len(),
                mode: file_mode(&meta),
            });
        } else {
            return Err(ArchiveError::UnsupportedEntry {
                path: rel,
                kind: "special file".to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn file_mode(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

/// The mode a file gets in an archive: its permission bits, or `0o644` when none were recorded.
pub fn normalize_mode(mode: u32) -> u32 {
    let bits = mode & 0o777;
    if bits == 0 { 0o644 } else { bits }
}

/// One file to write into an archive.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveFile<'a> {
    /// Path inside the archive (checked with [`check_relative_path`]).
    pub path: &'a str,
    /// Permission bits.
    pub mode: u32,
    /// Content.
    pub data: &'a [u8],
}

/// Appends the tar records of `files` (header, long-name record when needed, data, padding) to
/// `out`, without the end-of-archive marker, so that records of several calls concatenate.
pub fn append_tar(
    out: &mut Vec<u8>,
    files: &[ArchiveFile<'_>],
    mtime: u64,
) -> Result<(), ArchiveError> {
    let mut builder = tar::Builder::new(std::mem::take(out));
    for f in files {
        check_relative_path(f.path)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(f.data.len() as u64);
        header.set_mode(normalize_mode(f.mode));
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        builder
            .append_data(&mut header, f.path, f.data)
            .map_err(|source| ArchiveError::Io {
                context: format!("cannot add {} to the archive", f.path),
                source,
            })?;
    }
    let len = builder.get_ref().len();
    let mut buf = builder.into_inner().map_err(|source| ArchiveError::Io {
        context: "cannot finish tar records".to_owned(),
        source,
    })?;
    buf.truncate(len);
    *out = buf;
    Ok(())
}

/// Whether `data` is worth compressing: a sample whose bytes carry more than 7.5 bits of entropy
/// each (PNG, JPEG, WOFF2, video, archives: already compressed) is stored instead. A histogram
/// costs far less than a trial compression, and unlike deflate's fastest levels (static Huffman
/// codes) it sees that base64 text such as source maps still compresses.
pub fn compressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 64 * 1024;
    if data.len() < 512 {
        return true;
    }
    let sample = &data[..data.len().min(SAMPLE)];
    let mut counts = [0u32; 256];
    for b in sample {
        counts[*b as usize] += 1;
    }
    let n = sample.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    entropy < 7.5
}

/// Compresses `data` as one gzip member at `level` (0 stores it).
pub fn gzip_member(data: &[u8], level: u32) -> Result<Vec<u8>, ArchiveError> {
    let cap = if level == 0 {
        data.len() + data.len() / 16_000 * 5 + 64
    } else {
        data.len() / 2 + 64
    };
    let mut enc = GzEncoder::new(Vec::with_capacity(cap), Compression::new(level.min(9)));
    enc.write_all(data)
        .and_then(|_| enc.finish())
        .map_err(|source| ArchiveError::Io {
            context: "cannot compress archive data".to_owned(),
            source,
        })
}

/// A whole tar.gz of `files` in one gzip member (for small archives and tests; versions are
/// written by the artifact store in parallel members).
pub fn write_tar_gz(
    files: &[ArchiveFile<'_>],
    mtime: u64,
    level: u32,
) -> Result<Vec<u8>, ArchiveError> {
    let mut tar = Vec::new();
    append_tar(&mut tar, files, mtime)?;
    tar.extend_from_slice(&TAR_END);
    gzip_member(&tar, level)
}

/// What [`extract`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    /// Regular files written.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// The normalized relative path of an archive entry: `.` components and trailing slashes dropped;
/// absolute paths and `..` refused. `None` for the archive's root folder itself (`./`).
fn entry_path(raw: &Path) -> Result<Option<String>, ArchiveError> {
    let shown = raw.to_string_lossy().into_owned();
    let fail = |why| {
        Err(ArchiveError::UnsafePath {
            path: shown.clone(),
            why,
        })
    };
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => match p.to_str() {
                Some(s) => parts.push(s),
                None => return fail("its name is not UTF-8"),
            },
            Component::CurDir => {}
            Component::ParentDir => return fail("it contains `..`"),
            Component::RootDir | Component::Prefix(_) => return fail("it is absolute"),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let path = parts.join("/");
    check_relative_path(&path)?;
    Ok(Some(path))
}

/// Checks a symlink target found in an archive: relative and pointing down from the link's folder
/// (no `..`, not absolute). Links that only point down cannot lead outside, however they chain.
fn check_link_target(path: &str, target: &Path) -> Result<(), ArchiveError> {
    let escapes = target.as_os_str().is_empty()
        || target
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(ArchiveError::LinkEscapes {
            path: path.to_owned(),
            target: target.to_string_lossy().into_owned(),
        });
    }
    Ok(())
}

/// Extracts the tar.gz read from `reader` into `dest`, which must not exist or be empty.
///
/// Refuses, before writing anything for that entry: absolute paths, `..`, symlinks that are
/// absolute or contain `..`, hard links, devices and fifos. An archive refused halfway leaves the
/// entries before the bad one in `dest`.
pub fn extract(reader: impl Read, dest: &Path) -> Result<ExtractSummary, ArchiveError> {
    let io = |context: String| move |source| ArchiveError::Io { context, source };
    match std::fs::read_dir(dest) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(ArchiveError::DestinationNotEmpty(dest.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest)
                .map_err(io(format!("cannot create {}", dest.display())))?;
        }
        Err(e) => return Err(io(format!("cannot open {}", dest.display()))(e)),
    }
    let mut archive = tar::Archive::new(MultiGzDecoder::new(reader));
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    let mut summary = ExtractSummary::default();
    let read_err = io("cannot read the archive".to_owned());
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(io("cannot read the archive".to_owned()))?;
        let raw = entry
            .path()
            .map_err(io("cannot read an entry's path".to_owned()))?
            .into_owned();
        let Some(rel) = entry_path(&raw)? else {
            continue;
        };
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target)
                    .map_err(io(format!("cannot create {}", target.display())))?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                summary.files += 1;
                summary.bytes += entry.size();
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io(format!("cannot read the target of {rel}")))?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                check_link_target(&rel, &link)?;
            }
            other => {
                let kind = match other {
                    tar::EntryType::Link => "hard link".to_owned(),
                    tar::EntryType::Char | tar::EntryType::Block => "device".to_owned(),
                    tar::EntryType::Fifo => "fifo".to_owned(),
                    o => format!("{o:?} entry"),
                };
                return Err(ArchiveError::UnsupportedEntry { path: rel, kind });
            }
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        entry
            .unpack(&target)
            .map_err(io(format!("cannot write {}", target.display())))?;
    }
    Ok(summary)
}

/// One entry listed by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// Normalized relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// The regular files of a tar.gz, in archive order, checking every path like [`extract`] does.
pub fn list(reader: impl Read) -> Result<Vec<ListedEntry>, ArchiveError> {
    let mut archive = tar::Archive::new(MultiGzDecoder::new(reader));
    let mut out = Vec::new();
    let io = |source| ArchiveError::Io {
        context: "cannot read the archive".to_owned(),
        source,
    };
    for entry in archive.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        let raw = entry.path().map_err(io)?.into_owned();
        let Some(path) = entry_path(&raw)? else {
            continue;
        };
        if entry.header().entry_type().is_file() {
            let mode = entry.header().mode().map_err(io)?;
            out.push(ListedEntry {
                path,
                size: entry.size(),
                mode,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        for ok in [
            "index.html",
            "static/js/a.b.js",
            "a b/c",
            ".well-known/x",
            "..a",
            "a..",
        ] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\nb",
            ".",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn members_concatenate_into_one_archive() {
        let text = "hello world ".repeat(1000);
        let noise: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(compressible(text.as_bytes()));
        assert!(!compressible(&noise));
        let base64: Vec<u8> = noise
            .iter()
            .map(|b| {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(*b % 64) as usize]
            })
            .collect();
        assert!(
            compressible(&base64),
            "base64 text (source maps) compresses"
        );
        let long = format!("{}/file.txt", "d".repeat(150));
        let mut first = Vec::new();
        append_tar(
            &mut first,
            &[ArchiveFile {
                path: "a.txt",
                mode: 0o644,
                data: text.as_bytes(),
            }],
            1,
        )
        .expect("tar");
        let mut second = Vec::new();
        append_tar(
            &mut second,
            &[
                ArchiveFile {
                    path: "img/noise.png",
                    mode: 0o600,
                    data: &noise,
                },
                ArchiveFile {
                    path: &long,
                    mode: 0o755,
                    data: b"x",
                },
            ],
            1,
        )
        .expect("tar");
        second.extend_from_slice(&TAR_END);
        let mut gz = gzip_member(&first, 6).expect("gz");
        gz.extend(gzip_member(&second, 0).expect("gz"));
        let listed = list(&gz[..]).expect("list");
        let paths: Vec<_> = listed
            .iter()
            .map(|e| (e.path.as_str(), e.size, e.mode))
            .collect();
        assert_eq!(
            paths,
            [
                ("a.txt", text.len() as u64, 0o644),
                ("img/noise.png", 100_000, 0o600),
                (long.as_str(), 1, 0o755)
            ]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let summary = extract(&gz[..], &out).expect("extract");
        assert_eq!(summary.files, 3);
        assert_eq!(
            std::fs::read(out.join("img/noise.png")).expect("read"),
            noise
        );
        assert!(matches!(
            extract(&gz[..], &out),
            Err(ArchiveError::DestinationNotEmpty(_))
        ));
    }

    #[test]
    fn writing_refuses_unsafe_paths() {
        for bad in ["../x", "/abs", "a/../../b"] {
            let err = write_tar_gz(
                &[ArchiveFile {
                    path: bad,
                    mode: 0o644,
                    data: b"x",
                }],
                0,
                1,
            )
            .expect_err("refused");
            assert!(
                matches!(err, ArchiveError::UnsafePath { .. }),
                "{bad}: {err}"
            );
        }
    }

    /// A raw tar with one entry whose header says whatever we want (the tar crate refuses to
    /// write `..` itself, which is the point of a hostile archive).
    fn hostile(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        {
            let bytes = header.as_old_mut();
            bytes.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                bytes.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_size(if kind == tar::EntryType::Regular {
            1
        } else {
            0
        });
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        if kind == tar::EntryType::Regular {
            let mut block = [0u8; 512];
            block[0] = b'x';
            tar.extend_from_slice(&block);
        }
        tar.extend_from_slice(&TAR_END);
        gzip_member(&tar, 1).expect("gz")
    }

    #[test]
    fn extract_refuses_hostile_entries() {
        let cases = [
            hostile("../evil.txt", tar::EntryType::Regular, None),
            hostile("/tmp/evil.txt", tar::EntryType::Regular, None),
            hostile("a/../../evil.txt", tar::EntryType::Regular, None),
            hostile("link", tar::EntryType::Symlink, Some("/etc")),
            hostile("link", tar::EntryType::Symlink, Some("../outside")),
            hostile("hard", tar::EntryType::Link, Some("/etc/passwd")),
            hostile("dev", tar::EntryType::Char, None),
        ];
        for (i, gz) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().expect("tempdir");
            let out = dir.path().join("out");
            let err = extract(&gz[..], &out).expect_err("refused");
            assert!(
                matches!(
                    err,
                    ArchiveError::UnsafePath { .. }
                        | ArchiveError::LinkEscapes { .. }
                        | ArchiveError::UnsupportedEntry { .. }
                ),
                "case {i}: {err}"
            );
            assert!(!dir.path().join("evil.txt").exists());
            assert!(list(&gz[..]).is_err() || i >= 3, "case {i} listed");
        }
        // A link that points down stays inside and is allowed.
        let ok = hostile("link", tar::EntryType::Symlink, Some("static/x.js"));
        let dir = tempfile::tempdir().expect("tempdir");
        extract(&ok[..], &dir.path().join("out")).expect("a link inside is fine");
    }

    #[cfg(unix)]
    #[test]
    fn collecting_follows_inner_links_and_refuses_outer_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dist");
        std::fs::create_dir_all(root.join("static")).expect("mkdir");
        std::fs::write(root.join("index.html"), "<html>").expect("write");
        std::fs::write(root.join("static/app.js"), "js").expect("write");
        std::os::unix::fs::symlink("static/app.js", root.join("alias.js")).expect("symlink");
        std::os::unix::fs::symlink("static", root.join("assets")).expect("symlink");
        let files = collect_files(&root).expect("collect");
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["alias.js", "assets/app.js", "index.html", "static/app.js"]
        );

        std::fs::write(dir.path().join("secret"), "s").expect("write");
        std::os::unix::fs::symlink("../secret", root.join("leak")).expect("symlink");
        let err = collect_files(&root).expect_err("outside link refused");
        assert!(
            matches!(err, ArchiveError::LinkEscapes { ref path, .. } if path == "leak"),
            "{err}"
        );
        std::fs::remove_file(root.join("leak")).expect("rm");

        std::os::unix::fs::symlink("..", root.join("static/up")).expect("symlink");
        assert!(
            collect_files(&root).is_err(),
            "a link to an ancestor is a loop"
        );
    }
}
