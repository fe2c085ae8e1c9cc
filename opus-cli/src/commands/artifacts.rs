//! `opus artifacts`, `opus download`, `opus publish`, `opus verify`: stored versions.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use opus_core::archive::collect_files;
use opus_core::artifact::sha256_hex;
use opus_core::proto;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{ArtifactsArgs, DownloadArgs, GlobalArgs, OutputFormat, PublishArgs, VerifyArgs};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output;

/// Content of one file uploaded per `UploadBlob` message.
const UPLOAD_CHUNK: usize = 1 << 20;
/// Files hashed at once.
const HASH_AT_ONCE: usize = 8;
/// Uploads at once.
const UPLOADS_AT_ONCE: usize = 4;

/// A version as `--output json` prints it.
#[derive(Serialize)]
struct VersionJson {
    project: String,
    version: String,
    files: u32,
    size: u64,
    archive_size: u64,
    created_at: String,
    build_id: u64,
    commit: String,
    store: String,
    deployed_to: Vec<String>,
    /// The version's own URL, served whether or not an environment serves it.
    url: String,
}

fn version_json(v: &proto::Version) -> VersionJson {
    VersionJson {
        project: v.project.clone(),
        version: v.version.clone(),
        files: v.file_count,
        size: v.size,
        archive_size: v.archive_size,
        created_at: output::time(v.created_at.as_ref()),
        build_id: v.build_id,
        commit: v.commit.clone(),
        store: v.store.clone(),
        deployed_to: v.deployed_to.clone(),
        url: v.url.clone(),
    }
}

/// A file of a manifest, in JSON.
#[derive(Serialize)]
struct FileJson<'a> {
    path: &'a str,
    size: u64,
    sha256: &'a str,
    mode: String,
}

/// A byte count for people: `1.5 MB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn build_label(project: &str, build_id: u64) -> String {
    if build_id == 0 {
        "published".to_owned()
    } else {
        format!("{project}#{build_id}")
    }
}

/// `opus artifacts <project> [<version>]`.
pub async fn list(
    conn: &Connection,
    global: &GlobalArgs,
    args: ArtifactsArgs,
) -> Result<(), CliError> {
    let mut client = conn.artifacts();
    if let Some(version) = args.version {
        let manifest = client
            .get_manifest(proto::GetManifestRequest {
                project: args.project,
                version,
            })
            .await?
            .into_inner();
        return match global.output {
            OutputFormat::Json => {
                let files: Vec<_> = manifest
                    .files
                    .iter()
                    .map(|f| FileJson {
                        path: &f.path,
                        size: f.size,
                        sha256: &f.sha256,
                        mode: format!("{:o}", f.mode),
                    })
                    .collect();
                output::print_json(&serde_json::json!({
                    "project": manifest.project,
                    "version": manifest.version,
                    "build_id": manifest.build_id,
                    "commit": manifest.commit,
                    "created_at": output::time(manifest.created_at.as_ref()),
                    "files": files,
                }))
            }
            OutputFormat::Table => {
                let mut t = output::table(&["path", "size", "sha256", "mode"]);
                for f in &manifest.files {
                    t.add_row(vec![
                        f.path.clone(),
                        size(f.size),
                        f.sha256.chars().take(12).collect(),
                        format!("{:o}", f.mode),
                    ]);
                }
                output::print_table(&t)
            }
        };
    }
    let versions = client
        .list_versions(proto::ListVersionsRequest {
            project: args.project.clone(),
        })
        .await?
        .into_inner()
        .versions;
    match global.output {
        OutputFormat::Json => {
            output::print_json(&versions.iter().map(version_json).collect::<Vec<_>>())
        }
        OutputFormat::Table => {
            if versions.is_empty() {
                eprintln!(
                    "{} has no versions yet (a successful build or `opus publish` stores one)",
                    args.project
                );
                return Ok(());
            }
            let mut t = output::table(&[
                "version", "files", "size", "created", "build", "url", "deployed",
            ]);
            for v in &versions {
                t.add_row(vec![
                    v.version.clone(),
                    v.file_count.to_string(),
                    size(v.size),
                    output::ago(v.created_at.as_ref()),
                    build_label(&v.project, v.build_id),
                    v.url.clone(),
                    v.deployed_to.join(","),
                ]);
            }
            output::print_table(&t)
        }
    }
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// `opus download <project> <version> [--out FILE | --extract DIR]`.
pub async fn download(
    conn: &Connection,
    global: &GlobalArgs,
    args: DownloadArgs,
) -> Result<(), CliError> {
    let target = match (args.out.as_ref().or(args.file.as_ref()), &args.extract) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => {
            // Downloaded beside the folder, extracted, then removed.
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)?;
            parent.join(format!(".{}-{}.tar.gz", args.project, args.version))
        }
        (None, None) => PathBuf::from(format!("{}-{}.tar.gz", args.project, args.version)),
    };
    let mut stream = conn
        .artifacts()
        .download_archive(proto::DownloadArchiveRequest {
            project: args.project.clone(),
            version: args.version.clone(),
        })
        .await?
        .into_inner();
    // Written next to the target and renamed at the end, so a failed download leaves no file.
    let mut partial = target.clone().into_os_string();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let result = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", partial.display())))?;
        let mut bar: Option<ProgressBar> = None;
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let bar = bar.get_or_insert_with(|| progress(chunk.total_size, "downloading"));
            file.write_all(&chunk.data).await?;
            written += chunk.data.len() as u64;
            bar.set_position(written);
        }
        file.flush().await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok::<u64, CliError>(written)
    }
    .await;
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if let Some(dir) = &args.extract {
        let file = std::fs::File::open(&partial)?;
        let dest = dir.clone();
        let extracted = tokio::task::spawn_blocking(move || {
            opus_core::archive::extract(std::io::BufReader::new(file), &dest)
        })
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
        let _ = std::fs::remove_file(&partial);
        let summary = extracted
            .map_err(|e| CliError::Other(format!("cannot extract into {}: {e}", dir.display())))?;
        return match global.output {
            OutputFormat::Json => output::print_json(&serde_json::json!({
                "project": args.project, "version": args.version, "extracted_to": dir, "files": summary.files, "bytes": summary.bytes,
            })),
            OutputFormat::Table => output::print_line(&format!(
                "extracted {} {} into {} ({} files, {})",
                args.project,
                args.version,
                dir.display(),
                summary.files,
                size(summary.bytes)
            )),
        };
    }
    std::fs::rename(&partial, &target)?;
    match global.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "project": args.project, "version": args.version, "file": target, "bytes": written,
        })),
        OutputFormat::Table => {
            output::print_line(&format!("{} ({})", target.display(), size(written)))
        }
    }
}

/// One local file with its digest.
struct Hashed {
    entry: proto::ManifestEntry,
    abs: PathBuf,
}

/// `opus publish <project> <version> <DIR>`.
pub async fn publish(
    conn: &Connection,
    global: &GlobalArgs,
    args: PublishArgs,
) -> Result<(), CliError> {
    let dir = args.dir.clone();
    let files = tokio::task::spawn_blocking(move || collect_files(&dir))
        .await
        .map_err(|e| CliError::Other(e.to_string()))?
        .map_err(|e| CliError::Usage(format!("cannot publish {}: {e}", args.dir.display())))?;
    if files.is_empty() {
        return Err(CliError::Usage(format!(
            "{} has no files to publish",
            args.dir.display()
        )));
    }
    let hashed: Vec<Hashed> = futures::stream::iter(files.into_iter().map(|f| {
        tokio::task::spawn_blocking(move || {
            let data = std::fs::read(&f.abs)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.abs.display())))?;
            Ok::<_, CliError>(Hashed {
                entry: proto::ManifestEntry {
                    path: f.path,
                    size: data.len() as u64,
                    sha256: sha256_hex(&data),
                    mode: f.mode,
                },
                abs: f.abs,
            })
        })
    }))
    .buffered(HASH_AT_ONCE)
    .map(|r| {
        r.map_err(|e| CliError::Other(e.to_string()))
            .and_then(|r| r)
    })
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;

    let mut client = conn.artifacts();
    let started = client
        .begin_publish(proto::BeginPublishRequest {
            project: args.project.clone(),
            version: args.version.clone(),
            files: hashed.iter().map(|h| h.entry.clone()).collect(),
            store: args.store.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    let uploads: Vec<(String, PathBuf, u64)> = started
        .missing
        .iter()
        .filter_map(|sha| {
            hashed
                .iter()
                .find(|h| &h.entry.sha256 == sha)
                .map(|h| (sha.clone(), h.abs.clone(), h.entry.size))
        })
        .collect();
    let total: u64 = uploads.iter().map(|(_, _, s)| s).sum();
    let bar = progress(total, "uploading");
    let upload_id = started.upload_id.clone();
    let results = futures::stream::iter(
        uploads
            .into_iter()
            .map(|(sha, abs, _)| upload_one(conn, upload_id.clone(), sha, abs, bar.clone())),
    )
    .buffer_unordered(UPLOADS_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    bar.finish_and_clear();
    for r in results {
        r?;
    }
    let version = client
        .commit_publish(proto::CommitPublishRequest { upload_id })
        .await?
        .into_inner();
    match global.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "version": version_json(&version),
            "uploaded_files": started.missing.len(),
            "uploaded_bytes": total,
        })),
        OutputFormat::Table => output::print_line(&format!(
            "published {} {}: {} files, {} ({} new, {} uploaded)",
            version.project,
            version.version,
            version.file_count,
            size(version.size),
            started.missing.len(),
            size(total)
        )),
    }
}

/// Uploads one file's content as one `UploadBlob` stream, read in chunks as it is sent.
async fn upload_one(
    conn: &Connection,
    upload_id: String,
    sha256: String,
    abs: PathBuf,
    bar: ProgressBar,
) -> Result<(), CliError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::UploadBlobRequest>(4);
    let path = abs.clone();
    let reader = tokio::spawn(async move {
        let mut file = tokio::fs::File::open(&path).await?;
        let mut first = true;
        loop {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 && !first {
                return Ok::<(), std::io::Error>(());
            }
            buf.truncate(n);
            bar.inc(n as u64);
            let msg = proto::UploadBlobRequest {
                upload_id: if first {
                    upload_id.clone()
                } else {
                    String::new()
                },
                sha256: if first { sha256.clone() } else { String::new() },
                data: buf,
            };
            first = false;
            if tx.send(msg).await.is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    let sent = conn
        .artifacts()
        .upload_blob(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(CliError::Other(format!(
                "cannot read {}: {e}",
                abs.display()
            )));
        }
        Err(e) => return Err(CliError::Other(e.to_string())),
    }
    sent?;
    Ok(())
}

/// `opus verify <project> [<version>]`: exits non-zero when damage is found.
pub async fn verify(
    conn: &Connection,
    global: &GlobalArgs,
    args: VerifyArgs,
) -> Result<(), CliError> {
    let report = conn
        .artifacts()
        .verify_version(proto::VerifyVersionRequest {
            project: args.project.clone(),
            version: args.version.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    match global.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "versions_checked": report.versions_checked,
            "files_checked": report.files_checked,
            "problems": report.problems.iter().map(|p| serde_json::json!({
                "version": p.version, "path": p.path, "kind": p.kind, "detail": p.detail,
            })).collect::<Vec<_>>(),
        }))?,
        OutputFormat::Table => {
            if !report.problems.is_empty() {
                let mut t = output::table(&["version", "path", "problem", "detail"]);
                for p in &report.problems {
                    t.add_row(vec![
                        p.version.clone(),
                        p.path.clone(),
                        p.kind.clone(),
                        p.detail.clone(),
                    ]);
                }
                output::print_table(&t)?;
            }
            eprintln!(
                "checked {} version(s), {} file(s): {}",
                report.versions_checked,
                report.files_checked,
                if report.problems.is_empty() {
                    "no damage".to_owned()
                } else {
                    format!("{} problem(s)", report.problems.len())
                }
            );
        }
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "{} problem(s) found in {}; redeploy or rebuild the damaged versions",
            report.problems.len(),
            args.project
        )))
    }
}
