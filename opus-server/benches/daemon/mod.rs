//! The release `opusd` a benchmark drives: started on port 0 in a data directory, stopped with
//! SIGTERM when dropped. Shared by the benches so each measures opusd the same way.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running opusd; dropping it sends SIGTERM and waits, as a service manager would.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// Starts opusd on `data` with `args` besides the listen addresses; returns it, its API URL and
/// how long it took to listen (up to `timeout`).
///
/// `OPUS_BENCH_OPUSD` runs another opusd binary with the same client (A/B comparisons);
/// `OPUS_BENCH_LOG=info` passes opusd's timestamped log through (for profiling; quiet by default).
pub fn start(data: &Path, args: &[&str], timeout: Duration) -> (Daemon, String, Duration) {
    let opusd: OsString =
        std::env::var_os("OPUS_BENCH_OPUSD").unwrap_or_else(|| env!("CARGO_BIN_EXE_opusd").into());
    let addr_file = data.join("opusd.json");
    let _ = std::fs::remove_file(&addr_file);
    let began = Instant::now();
    let child = Command::new(opusd)
        .args(["--listen", "127.0.0.1:0", "--sites-listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env(
            "OPUS_LOG",
            std::env::var("OPUS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("opusd starts");
    let daemon = Daemon(child);
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(api) = v["api"].as_str()
        {
            return (daemon, format!("http://{api}"), began.elapsed());
        }
        assert!(began.elapsed() < timeout, "opusd did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}
