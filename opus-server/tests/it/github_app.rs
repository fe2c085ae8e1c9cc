//! opusd with a GitHub App key it cannot use refuses to start, naming the file.

use std::process::Command;

/// Runs opusd over a temp data dir with `--github-app-id 7 --github-app-key-file <key>`, where
/// `key` holds `pem`; returns its exit code and stderr.
fn start_with_key(pem: &[u8]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("github-app.pem");
    std::fs::write(&key, pem).expect("write the key");
    let out = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--sites-listen", "127.0.0.1:0"])
        .args(["--github-app-id", "7", "--github-app-key-file"])
        .arg(&key)
        .env_remove("OPUS_CONFIG")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        key.display().to_string(),
    )
}

#[test]
fn a_github_app_key_that_is_not_an_rsa_pem_stops_opusd_naming_the_file() {
    for pem in [
        &b"not a key at all\n"[..],
        &b"-----BEGIN RSA PRIVATE KEY-----\nMIIEow==\n-----END RSA PRIVATE KEY-----\n"[..],
    ] {
        let (code, stderr, key) = start_with_key(pem);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&key) && stderr.contains("not an RSA private key"),
            "{stderr}"
        );
    }
}

#[test]
fn a_github_app_id_without_its_key_stops_opusd_saying_both_are_needed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_opusd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--github-app-id", "7"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("github_app_key_file"), "{stderr}");
}
