//! Each job of a pipeline works in its own copy of the build's checkout, so that what one job
//! writes is never seen by its siblings.
//!
//! How the copy is made, and why not with hard links everywhere: a hard link shares the inode,
//! so a job appending to a file (`>>`), truncating it (`>`), or any tool writing a file in place
//! would change every sibling's copy at once; permission bits cannot stop that, since opusd and
//! its steps often run as root. Copy-on-write (reflinks) is what makes a copy both cheap and
//! safe, and ext4 has none. So:
//!
//! - regular files are copied with `std::fs::copy`, which is `copy_file_range`: on btrfs, XFS
//!   and bcachefs the kernel shares the extents (a reflink, nearly free); on ext4 it copies in
//!   the kernel, without the bytes passing through opusd;
//! - files under `.git/objects` are hard-linked: git writes an object once, under its hash, and
//!   never modifies it in place (new objects are written to a temporary file and renamed), so
//!   sharing them is safe and saves the largest part of a repository;
//! - the cache folders (`node_modules`) are never copied: each job has its own cache, moved in
//!   by a rename (see `local`).
//!
//! Measured on ext4 (see bench/README.md): the copy of a source tree of a few thousand files
//! takes milliseconds, a small part of what a job costs anyway.

use std::io;
use std::path::{Path, PathBuf};

/// What the copy did, for the job's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Files copied (reflinked where the filesystem can).
    pub copied: u64,
    /// Git objects hard-linked.
    pub linked: u64,
}

/// Why a copy failed: the path and the I/O error.
#[derive(Debug, thiserror::Error)]
#[error("cannot copy {} for the job: {source}", path.display())]
pub struct CopyError {
    /// The file or folder.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Copies the checkout `from` into the new folder `to` (see the module documentation).
pub(crate) async fn copy_checkout(from: PathBuf, to: PathBuf) -> Result<Copied, CopyError> {
    tokio::task::spawn_blocking(move || {
        let mut copied = Copied::default();
        std::fs::create_dir_all(&to).map_err(at(&to))?;
        copy_dir(&from, &to, false, &mut copied)?;
        Ok(copied)
    })
    .await
    .map_err(|e| CopyError {
        path: PathBuf::new(),
        source: io::Error::other(e),
    })?
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the folder `from` into the existing folder `to`; `objects` is whether it is (under)
/// `.git/objects`.
fn copy_dir(from: &Path, to: &Path, objects: bool, copied: &mut Copied) -> Result<(), CopyError> {
    for entry in std::fs::read_dir(from).map_err(at(from))? {
        let entry = entry.map_err(at(from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(at(&src))?;
        if kind.is_dir() {
            std::fs::create_dir(&dst).map_err(at(&dst))?;
            let objects = objects || (entry.file_name() == "objects" && from.ends_with(".git"));
            copy_dir(&src, &dst, objects, copied)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(at(&src))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(at(&dst))?;
        } else if objects {
            std::fs::hard_link(&src, &dst).map_err(at(&dst))?;
            copied.linked += 1;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(at(&src))?;
            copied.copied += 1;
        }
        // Sockets and FIFOs are not part of a checkout (sources refuse them): nothing to copy.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[tokio::test]
    async fn a_job_writing_its_copy_does_not_change_the_checkout_or_a_sibling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checkout = dir.path().join("checkout");
        std::fs::create_dir_all(checkout.join("src")).expect("mkdir");
        std::fs::create_dir_all(checkout.join(".git/objects/ab")).expect("mkdir");
        std::fs::write(checkout.join("src/app.js"), "original\n").expect("write");
        std::fs::write(checkout.join(".git/objects/ab/cdef"), "blob").expect("write");
        std::os::unix::fs::symlink("src/app.js", checkout.join("link")).expect("symlink");

        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let copied = copy_checkout(checkout.clone(), a.clone()).await.expect("a");
        assert_eq!(
            copied,
            Copied {
                copied: 1,
                linked: 1
            }
        );
        copy_checkout(checkout.clone(), b.clone()).await.expect("b");

        // In-place writes, which a hard link would share.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(a.join("src/app.js"))
            .expect("open");
        f.write_all(b"job a was here\n").expect("append");
        std::fs::write(b.join("link"), "b wrote through the link\n").expect("write");

        let read = |p: PathBuf| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(checkout.join("src/app.js")), "original\n");
        assert_eq!(read(a.join("src/app.js")), "original\njob a was here\n");
        assert_eq!(read(b.join("src/app.js")), "b wrote through the link\n");
        assert_eq!(
            std::fs::read_link(a.join("link")).expect("link"),
            Path::new("src/app.js")
        );
        // Git objects are shared: the same inode.
        let ino = |p: PathBuf| std::fs::metadata(p).expect("stat").ino();
        assert_eq!(
            ino(checkout.join(".git/objects/ab/cdef")),
            ino(a.join(".git/objects/ab/cdef"))
        );
        assert_ne!(ino(checkout.join("src/app.js")), ino(a.join("src/app.js")));
    }

    #[tokio::test]
    async fn a_missing_checkout_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = copy_checkout(dir.path().join("none"), dir.path().join("a"))
            .await
            .expect_err("missing");
        assert_eq!(err.path, dir.path().join("none"));
    }
}
