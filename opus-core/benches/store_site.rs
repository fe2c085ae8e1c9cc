//! Benchmark (not a test): storing a site as a version (files + archive + manifest) against
//! `tar czf` of the same folder, in the same process, and storing a second version of it.
//!
//! Usage: `cargo bench -p opus-core --bench store_site -- SITE_V1 SITE_V2 [RUNS]`
//! (`bench/artifacts.sh` generates the sites with shared/bench/fixtures/make-site.sh and runs it).
//!
//! Prints, for RUNS runs each (after one warm-up): the median time of storing version 1 into an
//! empty `file://` store, the median time of `tar czf`, their ratio (DESIGN.md's target: at least
//! 2x), the archive sizes, and for version 2 the new file bytes as a share of the site's size
//! (target: under 15%).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use opus_core::artifact::{ArtifactStore, ManifestFile, Origin, StoredVersion, sha256_hex};
use opus_core::model::{Project, ProjectName, Source, VersionName};
use opus_core::store::{MetaStore, SiteOptions};

type Error = Box<dyn std::error::Error>;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn site_bytes(dir: &Path) -> Result<u64, Error> {
    Ok(opus_core::archive::collect_files(dir)?
        .iter()
        .map(|f| f.size)
        .sum())
}

struct Env {
    _tmp: tempfile::TempDir,
    store: ArtifactStore,
}

fn fresh_store() -> Result<Env, Error> {
    let tmp = tempfile::tempdir()?;
    let meta = MetaStore::open(&tmp.path().join("meta"))?;
    meta.create_project(&Project {
        name: ProjectName::new("site")?,
        source: Source::Git("https://example.invalid/site.git".into()),
        branch: "main".into(),
        created_at: SystemTime::now(),
        keep_versions: 0,
    })?;
    let url = format!("file://{}", tmp.path().join("artifacts").display());
    let store = ArtifactStore::open(meta, &url, &[])?;
    Ok(Env { _tmp: tmp, store })
}

async fn store(env: &Env, version: &str, dir: &Path) -> Result<(Duration, StoredVersion), Error> {
    let origin = Origin {
        build_id: 1,
        commit: "bench".into(),
        store: opus_core::model::StoreName::default_store(),
    };
    let started = Instant::now();
    let stored = env
        .store
        .store_dir(
            &ProjectName::new("site")?,
            &VersionName::new(version)?,
            dir,
            &origin,
            &SiteOptions::default(),
        )
        .await?;
    Ok((started.elapsed(), stored))
}

fn tar_czf(dir: &Path, out: &Path) -> Result<Duration, Error> {
    let started = Instant::now();
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-czf")
        .arg(out)
        .arg(".")
        .status()?;
    if !status.success() {
        return Err(format!("tar czf failed: {status}").into());
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; keep only our positional arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.len() < 2 {
        eprintln!("usage: store_site SITE_V1 SITE_V2 [RUNS]");
        std::process::exit(2);
    }
    let (v1, v2) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let runs: usize = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(7);
    let bytes = site_bytes(&v1)?;
    let files = opus_core::archive::collect_files(&v1)?.len();
    let scratch = tempfile::tempdir()?;
    let tar_out = scratch.path().join("site.tar.gz");
    println!(
        "site: {} ({files} files, {bytes} bytes); runs: {runs} (+1 warm-up)",
        v1.display()
    );

    let mut ours = Vec::new();
    let mut tars = Vec::new();
    let mut last = None;
    for run in 0..=runs {
        // Alternate the order so neither side always runs on a cooler machine.
        let (t_store, stored, t_tar) = if run % 2 == 0 {
            let env = fresh_store()?;
            let (t, s) = store(&env, "1", &v1).await?;
            (t, s, tar_czf(&v1, &tar_out)?)
        } else {
            let t_tar = tar_czf(&v1, &tar_out)?;
            let env = fresh_store()?;
            let (t, s) = store(&env, "1", &v1).await?;
            (t, s, t_tar)
        };
        if run > 0 {
            ours.push(t_store);
            tars.push(t_tar);
        }
        last = Some(stored);
    }
    let ours_m = median(ours);
    let tar_m = median(tars);
    let tar_size = std::fs::metadata(&tar_out)?.len();
    let stored = last.ok_or("no run")?;
    println!(
        "store v1 (files + archive + manifest): median {:.3} s ({:.1} MB/s)",
        ours_m.as_secs_f64(),
        bytes as f64 / ours_m.as_secs_f64() / 1e6
    );
    println!(
        "tar czf of the same folder:            median {:.3} s ({:.1} MB/s)",
        tar_m.as_secs_f64(),
        bytes as f64 / tar_m.as_secs_f64() / 1e6
    );
    println!(
        "ratio tar czf / store: {:.2}x (target: >= 2x)",
        tar_m.as_secs_f64() / ours_m.as_secs_f64()
    );
    println!(
        "archive: ours {} bytes, tar czf {} bytes ({:+.2}%)",
        stored.record.archive_size,
        tar_size,
        (stored.record.archive_size as f64 / tar_size as f64 - 1.0) * 100.0
    );

    // Version 2 on top of version 1, in one store.
    let mut shares = Vec::new();
    let mut times = Vec::new();
    let mut v2_last = None;
    for _ in 0..runs.clamp(1, 3) {
        let env = fresh_store()?;
        store(&env, "1", &v1).await?;
        let (t, s) = store(&env, "2", &v2).await?;
        times.push(t);
        shares.push(s.bytes_written as f64 / s.record.size as f64);
        v2_last = Some(s);
    }
    let s2 = v2_last.ok_or("no run")?;
    tar_czf(&v2, &tar_out)?;
    let tar2 = std::fs::metadata(&tar_out)?.len();
    println!(
        "store v2: median {:.3} s; {} files written ({} bytes), {} copied ({} bytes)",
        median(times).as_secs_f64(),
        s2.files_written,
        s2.bytes_written,
        s2.files_copied,
        s2.bytes_copied
    );
    println!(
        "new file bytes of v2: {:.1}% of the site's {} bytes (target: < 15%); its archive adds {} bytes (tar czf: {tar2})",
        shares[0] * 100.0,
        s2.record.size,
        s2.record.archive_size
    );

    // A 10,000-file site whose content is already stored, published again as a new version.
    let many = scratch.path().join("many");
    for i in 0..10_000u32 {
        let path = many.join(format!("d{}/f{i}.html", i % 100));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, format!("<p>page {i}</p>\n").repeat(20))?;
    }
    let env = fresh_store()?;
    let started = Instant::now();
    store(&env, "1", &many).await?;
    let first = started.elapsed();
    let entries: Vec<ManifestFile> = opus_core::archive::collect_files(&many)?
        .into_iter()
        .map(|f| {
            let data = std::fs::read(&f.abs)?;
            Ok(ManifestFile {
                path: f.path,
                size: data.len() as u64,
                sha256: sha256_hex(&data),
                mode: f.mode,
            })
        })
        .collect::<Result<_, std::io::Error>>()?;
    let started = Instant::now();
    let plan = env.store.plan_publish(
        "site",
        "2",
        entries,
        &opus_core::model::StoreName::default_store(),
    )?;
    let missing = plan.missing.len();
    // Nothing is missing, so nothing was staged.
    let published = env
        .store
        .store_published(&plan, &scratch.path().join("staged"))
        .await?;
    println!(
        "10,000 files: stored in {:.2} s; published again (content already stored) in {:.2} s: {missing} to upload, {} copied",
        first.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        published.files_copied
    );
    Ok(())
}
