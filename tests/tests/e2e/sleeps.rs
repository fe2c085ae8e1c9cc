//! The `sleep <arg>` processes a test's build starts, found in `/proc`: whether a build's
//! processes started and whether they are gone (shared by `processes` and `pipelines`).

use std::time::{Duration, Instant};

/// The live (not zombie) processes whose command line is exactly `sleep <arg>`.
pub fn sleeps(arg: &str) -> Vec<u32> {
    let want = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        })
        .collect()
}

/// Waits until `sleep <arg>` runs.
pub fn wait_for_sleep(arg: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleeps(arg).is_empty() {
        assert!(Instant::now() < deadline, "sleep {arg} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that no `sleep <arg>` runs (within a short grace: init reaps the killed ones).
pub fn assert_gone(arg: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = sleeps(arg);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sleep {arg} outlived its build: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
