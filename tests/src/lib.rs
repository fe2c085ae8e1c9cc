//! The end-to-end test harness: starts the real `opusd` on port 0 with a temporary data directory,
//! drives it with the real `opus` binary (and gRPC where a test needs more), and stops it cleanly.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test executable; run the
//! tests through that command so they are fresh.

pub mod acme;
pub mod browser;
pub mod fake_apiserver;
pub mod fake_cloudflare;
pub mod fake_github;
pub mod git_http;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod receiver;
pub mod replica;

/// Where cargo put the binaries: the test executable lives in `<target>/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is inside <target>/<profile>/deps");
    dir.to_path_buf()
}

/// The path of one of the workspace's binaries, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} does not exist: run the tests with `cargo test --workspace`, which builds opusd and opus",
        path.display()
    );
    path
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts a failure with `code` and returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stderr
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// A running `opusd` with its own data directory.
pub struct Daemon {
    child: Option<Child>,
    /// The temporary directory holding the data dir (and anything else the test puts there).
    pub root: tempfile::TempDir,
    /// `http://127.0.0.1:<port>` of the API.
    pub server: String,
    /// `http://127.0.0.1:<port>` of the site server.
    pub sites: String,
    /// Extra arguments it was started with (kept for restarts).
    args: Vec<String>,
    /// Extra environment variables it was started with (kept for restarts).
    envs: Vec<(String, String)>,
    /// The token the CLI passes, if the daemon has one.
    pub token: Option<String>,
    /// Where opusd's stderr goes.
    log_path: PathBuf,
}

impl Daemon {
    /// Starts opusd with defaults and a fresh data directory.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts opusd with extra arguments.
    pub fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// Starts opusd with extra arguments and environment variables.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(tempfile::tempdir().expect("temp dir"), args, envs)
    }

    /// Starts opusd in `root`, prepared by the test (its data directory is `root/data`, which
    /// may already exist: a mount, say).
    pub fn start_in(root: tempfile::TempDir, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon {
            child: None,
            server: String::new(),
            sites: String::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            token: None,
            log_path: root.path().join("opusd.log"),
            root,
        };
        d.spawn();
        d
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// `127.0.0.1:<port>` of the sites' HTTPS listener (`--sites-tls-listen`), from the address
    /// file.
    pub fn sites_tls(&self) -> String {
        let text =
            std::fs::read_to_string(self.data_dir().join("opusd.json")).expect("address file");
        let v: serde_json::Value = serde_json::from_str(&text).expect("address file is JSON");
        v["sites_tls"]
            .as_str()
            .expect("opusd serves HTTPS (sites_tls in the address file)")
            .to_owned()
    }

    /// opusd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let data = self.data_dir();
        let addr_file = data.join("opusd.json");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut cmd = Command::new(bin("opusd"));
        cmd.arg("--listen").arg("127.0.0.1:0");
        // A test that needs the site port to stay the same across restarts names it.
        if !self.args.iter().any(|a| a == "--sites-listen") {
            cmd.arg("--sites-listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir")
            .arg(&data)
            .args(&self.args)
            .current_dir(self.root.path())
            .env(
                "OPUS_LOG",
                std::env::var("OPUS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("OPUS_TOKEN")
            .env_remove("OPUS_SERVER")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("opusd starts");
        // Held by `self` from here on, so a failed start still kills it on drop.
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(api) = v["api"].as_str()
            {
                self.server = format!("http://{api}");
                self.sites = format!("http://{}", v["sites"].as_str().unwrap_or(""));
                break;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("opusd exited during start-up ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "opusd did not start within 20s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `opus <args>` against this daemon.
    pub fn opus(&self, args: &[&str]) -> Run {
        self.opus_with_stdin(args, "")
    }

    /// Runs `opus <args>` with `stdin` as standard input.
    pub fn opus_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut cmd = opus_command(&self.server, self.token.as_deref());
        cmd.args(args);
        run_with_stdin(cmd, stdin)
    }

    /// Stops opusd with SIGTERM and waits for it to exit; returns its exit code.
    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return 0;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("opusd did not stop within 30s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills opusd with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts opusd again on the same data directory (after `stop` or `kill`).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// The process id of the running opusd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An `opus` command aimed at `server`, isolated from the caller's environment.
pub fn opus_command(server: &str, token: Option<&str>) -> Command {
    let mut cmd = Command::new(bin("opus"));
    cmd.env_remove("OPUS_TOKEN").env("OPUS_SERVER", server);
    if let Some(t) = token {
        cmd.env("OPUS_TOKEN", t);
    }
    cmd
}

/// Runs a command with `stdin` fed to it and collects its output.
pub fn run_with_stdin(mut cmd: Command, stdin: &str) -> Run {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("command starts");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    Run::from_output(child.wait_with_output().expect("command runs"))
}

impl Daemon {
    /// The builds of a project as `opus builds -o json` shows them, newest first.
    pub fn builds(&self, project: &str) -> Vec<serde_json::Value> {
        let json = self
            .opus(&["builds", project, "-o", "json", "--limit", "500"])
            .json();
        json.as_array().cloned().unwrap_or_default()
    }

    /// One build's JSON (via `opus builds`), by its number in `project`.
    pub fn build(&self, project: &str, number: u64) -> serde_json::Value {
        self.builds(project)
            .into_iter()
            .find(|b| b["number"] == number)
            .unwrap_or_else(|| panic!("no build {project}#{number}"))
    }

    /// Waits until build `id` (its number) of `project` is in `state` (polling `GetBuild` over
    /// gRPC), then returns its JSON as `opus builds` shows it; panics after `secs` with the log.
    pub fn wait_for_state(
        &self,
        project: &str,
        id: u64,
        state: &str,
        secs: u64,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let seen = runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(self.server.clone())
                .expect("the API's URL")
                .connect()
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.server));
            let mut builds =
                opus_core::proto::build_service_client::BuildServiceClient::new(channel);
            loop {
                let mut request = tonic::Request::new(opus_core::proto::GetBuildRequest {
                    id: 0,
                    project: project.to_owned(),
                    number: id,
                });
                if let Some(t) = &self.token {
                    request.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {t}").parse().expect("a header value"),
                    );
                }
                let build = builds
                    .get_build(request)
                    .await
                    .unwrap_or_else(|e| panic!("GetBuild {project}#{id}: {e}"))
                    .into_inner();
                let now = state_name(build.state);
                if now == state {
                    return None;
                }
                if Instant::now() >= deadline {
                    return Some(format!("{build:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if let Some(build) = seen {
            panic!(
                "{project}#{id} did not reach {state} within {secs}s: {build}\nopusd log:\n{}",
                self.log()
            );
        }
        self.build(project, id)
    }

    /// Waits until the metadata store's files on disk hold `needle` (a record's JSON, or part of
    /// it): what sled has written survives a SIGKILL of opusd. Panics after `secs`.
    pub fn wait_until_on_disk(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let meta = self.data_dir().join("meta");
        loop {
            if dir_holds(&meta, needle.as_bytes()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the metadata store's files did not hold {needle:?} within {secs}s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Triggers a build and returns its number in its project (parsed from `opus trigger -o
    /// json`).
    pub fn trigger(&self, args: &[&str]) -> u64 {
        let mut all = vec!["trigger"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let json = self.opus(&all).json();
        json["number"].as_u64().expect("a build number")
    }
}

/// The name `opus builds` gives a build state (`BUILD_STATE_SUCCEEDED` is `succeeded`).
fn state_name(state: i32) -> String {
    opus_core::proto::BuildState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("BUILD_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown state {state}"))
}

/// Whether a file under `dir` contains `needle`.
fn dir_holds(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            dir_holds(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

/// A directory with an `opus.yml`, ready to be a local project source.
pub fn site_with_opus_yml(parent: &Path, name: &str, opus_yml: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("opus.yml"), opus_yml).expect("write opus.yml");
    dir
}

/// A real git repository made with `git init`, for git sources.
pub struct GitRepo {
    /// Its working tree.
    pub dir: PathBuf,
}

impl GitRepo {
    /// `git init` with branch `main`.
    pub fn init(dir: &Path) -> GitRepo {
        std::fs::create_dir_all(dir).expect("mkdir");
        let repo = GitRepo {
            dir: dir.to_path_buf(),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    /// Runs git in the repository, panicking on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args([
                "-c",
                "user.email=test@opus.invalid",
                "-c",
                "user.name=Opus Test",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a file (creating folders).
    pub fn write(&self, path: &str, text: &str) {
        let p = self.dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// The repository as a `file://` URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

/// A site server's answer, read from a raw HTTP/1.1 exchange.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: std::collections::HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `Host: host` to `addr` (`http://127.0.0.1:<port>`) exactly as written
/// (no client-side path normalisation), with extra header lines, and reads the whole answer.
pub fn http(addr: &str, method: &str, host: &str, path: &str, extra: &[&str]) -> HttpResponse {
    http_with_body(addr, method, host, path, extra, b"")
}

/// As [`http`], with a request body (its `Content-Length` is added).
pub fn http_with_body(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    extra: &[&str],
    body: &[u8],
) -> HttpResponse {
    use std::io::{Read, Write};
    let hostport = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).expect("connect to the site server");
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in extra {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    s.write_all(text.as_bytes()).expect("send the request");
    s.write_all(body).expect("send the body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    parse_response(&raw).expect("an HTTP answer")
}

/// Parses a whole HTTP/1.1 answer (status line, headers, body as read); `None` when it has no
/// header block or status.
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

impl Daemon {
    /// `GET path` on the site server with `Host: host`.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        http(&self.sites, "GET", host, path, &[])
    }

    /// Publishes folder `dir` as `project`'s `version` with `opus publish`.
    pub fn publish(&self, project: &str, version: &str, dir: &Path) {
        let dir = dir.to_str().expect("a UTF-8 path");
        self.opus(&["publish", project, version, dir]).ok();
    }
}
