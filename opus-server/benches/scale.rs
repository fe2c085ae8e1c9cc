//! Scale benchmark (DESIGN.md "Performance targets"), against the real release `opusd`:
//!
//! 1. idle memory: the RSS of an opusd with an empty data directory, after it settled;
//! 2. `opus list` with 10,000 projects and 1,000,000 builds: the metadata store is seeded through
//!    `MetaStore` (the same code opusd uses), then the real `opus list` binary is timed end to end
//!    (process start, gRPC, 10,000 rows printed), and the `ListProjects` RPC alone;
//! 3. the RSS of that loaded opusd once idle, and its start-up time on that data;
//! 4. the dashboard's projects page on that store (`GET /`, its first page of 50 rows, and a
//!    filtered page), over HTTP from request to the last byte: the median of repeated requests.
//!
//! Run: `bash bench/scale.sh` (builds the release `opus` the bench times, then runs
//! `cargo bench -p opus-server --bench scale`). `OPUS_BENCH_PROJECTS` and `OPUS_BENCH_BUILDS`
//! change the sizes; `OPUS_BENCH_DATA=<dir>` keeps the seeded store there for the next run
//! (run it again with the same sizes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use opus_core::model::{Build, BuildState, Project, ProjectName, Source, VersionName};
use opus_core::proto::{self, project_service_client::ProjectServiceClient};
use opus_core::store::MetaStore;

mod daemon;

/// Resident memory of a process, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills a data directory with `projects` projects and `builds` finished builds spread over them.
fn seed(data: &Path, projects: u64, builds: u64) {
    let store = MetaStore::open(&data.join("meta")).expect("open the store");
    let began = Instant::now();
    let names: Vec<ProjectName> = (0..projects)
        .map(|i| ProjectName::new(format!("site-{i:05}")).expect("a valid name"))
        .collect();
    for name in &names {
        store
            .create_project(&Project {
                name: name.clone(),
                source: Source::Git(format!("https://git.example.com/{name}.git")),
                branch: "main".into(),
                created_at: SystemTime::now(),
                keep_versions: 0,
            })
            .expect("create project");
    }
    for i in 0..builds {
        let project = names[(i % projects) as usize].clone();
        let now = SystemTime::now();
        store
            .create_build(&Build {
                id: 0,
                number: 0,
                project,
                state: BuildState::Succeeded,
                git_ref: "main".into(),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                version: Some(VersionName::new(format!("main-{i}-0123456")).expect("a version")),
                version_pinned: false,
                reason: String::new(),
                trigger: opus_core::model::Trigger::Github,
                store: opus_core::model::StoreName::default_store(),
                branch: Some("main".into()),
                is_tag: false,
                queued_at: now,
                started_at: Some(now),
                finished_at: Some(now),
                pull_request: None,
                github: None,
            })
            .expect("create build");
        if i > 0 && i % 200_000 == 0 {
            eprintln!(
                "  seeded {i} builds ({:.0} s)",
                began.elapsed().as_secs_f64()
            );
        }
    }
    flush_store(&store);
    eprintln!(
        "seeded {projects} projects and {builds} builds in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

fn flush_store(store: &MetaStore) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(store.flush())
        .expect("flush");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The release `opus` next to the release `opusd`, when it was built.
fn opus_binary() -> Option<PathBuf> {
    let opusd = PathBuf::from(env!("CARGO_BIN_EXE_opusd"));
    let opus = opusd.with_file_name("opus");
    opus.is_file().then_some(opus)
}

fn main() {
    let projects = env_count("OPUS_BENCH_PROJECTS", 10_000);
    let builds = env_count("OPUS_BENCH_BUILDS", 1_000_000);
    let tmp = tempfile::tempdir().expect("tempdir");

    // 1. Idle memory of an empty opusd.
    let empty = tmp.path().join("empty");
    let (daemon, _, took) = daemon::start(&empty, &[], Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(2));
    let idle_empty = rss_mib(daemon.0.id());
    drop(daemon);
    println!(
        "empty opusd: started in {}, idle RSS {idle_empty:.1} MiB (target < 30 MiB)",
        ms(took)
    );

    // 2. A loaded store.
    // OPUS_BENCH_DATA keeps the seeded store in that folder and uses it again on the next run
    // (seeding a million builds takes minutes); its sizes are then what it was seeded with.
    let data = match std::env::var_os("OPUS_BENCH_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => tmp.path().join("loaded"),
    };
    if data.join("meta").exists() {
        eprintln!("using the store seeded earlier in {}", data.display());
    } else {
        seed(&data, projects, builds);
    }
    let (daemon, server, took) = daemon::start(&data, &[], Duration::from_secs(300));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rpc = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.clone())
            .expect("url")
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(16 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .connect()
            .await
            .expect("connect");
        let mut client = ProjectServiceClient::new(channel).max_decoding_message_size(256 << 20);
        let mut times = Vec::new();
        for _ in 0..21 {
            let began = Instant::now();
            let listed = client
                .list_projects(proto::ListProjectsRequest::default())
                .await
                .expect("list")
                .into_inner();
            times.push(began.elapsed());
            assert_eq!(listed.projects.len() as u64, projects);
            assert!(listed.projects.iter().all(|p| p.last_build.is_some()));
        }
        let warm = median(times);
        // After a change (here a project's `keep`), the list is read from the store again.
        let mut times = Vec::new();
        for i in 0..11 {
            client
                .update_project(proto::UpdateProjectRequest {
                    name: "site-00000".into(),
                    keep_versions: Some(i),
                    ..Default::default()
                })
                .await
                .expect("update");
            let began = Instant::now();
            let listed = client
                .list_projects(proto::ListProjectsRequest::default())
                .await
                .expect("list")
                .into_inner();
            times.push(began.elapsed());
            assert_eq!(listed.projects[0].keep_versions, i);
        }
        (warm, median(times))
    });
    println!(
        "loaded opusd ({projects} projects, {builds} builds): started in {}",
        ms(took)
    );
    println!(
        "ListProjects RPC: median {} unchanged store, {} right after a change",
        ms(rpc.0),
        ms(rpc.1)
    );
    match opus_binary() {
        Some(opus) => {
            for format in ["table", "json"] {
                let mut times = Vec::new();
                for _ in 0..11 {
                    let began = Instant::now();
                    let out = Command::new(&opus)
                        .args(["--server", &server, "list", "-o", format])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .output()
                        .expect("opus runs");
                    times.push(began.elapsed());
                    assert!(out.status.success(), "opus list failed");
                    assert!(out.stdout.len() as u64 > projects * 20);
                }
                println!(
                    "`opus list -o {format}` (process start to exit): median {} (target < 50 ms)",
                    ms(median(times))
                );
            }
        }
        None => println!(
            "`opus list`: not timed, no release opus next to opusd (run bench/scale.sh, which builds it)"
        ),
    }
    for (what, path) in [
        ("first page", "/"),
        ("filtered (site-09*)", "/?q=site-09*"),
        ("last page", "/?page=200"),
    ] {
        let times: Vec<Duration> = (0..21).map(|_| dashboard_get(&server, path)).collect();
        println!(
            "dashboard projects page, {what}: median {} (target < 50 ms server side)",
            ms(median(times))
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    println!("loaded opusd idle RSS: {:.1} MiB", rss_mib(daemon.0.id()));
}

/// Times one `GET path` of the dashboard, from sending the request to its last byte.
fn dashboard_get(server: &str, path: &str) -> Duration {
    use std::io::{Read, Write};
    let addr = server.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the API listener");
    conn.set_nodelay(true).expect("nodelay");
    let began = Instant::now();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut page = Vec::new();
    conn.read_to_end(&mut page).expect("read the page");
    let took = began.elapsed();
    assert!(
        page.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&page[..page.len().min(200)])
    );
    took
}
