//! The GitHub App opusd authenticates as (`--github-app-id`, `--github-app-key-file`): both or
//! neither. The key is read and checked here, so that an unusable key stops opusd at start, with
//! the file named, instead of failing every status later.

use super::{ConfigArgs, ConfigError, FileConfig};
use crate::github::app::AppKey;

/// `--github-app-id` / `OPUS_GITHUB_APP_ID` / `github_app_id` and `--github-app-key-file` /
/// `OPUS_GITHUB_APP_KEY_FILE` / `github_app_key_file`: the App, its key checked; none when
/// neither is set.
pub(super) fn github_app(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<Option<AppKey>, ConfigError> {
    let id = args.github_app_id.or(file.github_app_id);
    let key_file = args
        .github_app_key_file
        .as_ref()
        .or(file.github_app_key_file.as_ref());
    let (id, path) = match (id, key_file) {
        (None, None) => return Ok(None),
        (Some(id), Some(path)) => (id, path),
        _ => {
            return Err(ConfigError::Invalid {
                key: "github_app_id",
                message: "github_app_id and github_app_key_file go together (the App's id and \
                          the private key its settings page generates); give both or neither"
                    .into(),
            });
        }
    };
    if id == 0 {
        return Err(ConfigError::Invalid {
            key: "github_app_id",
            message: "must be the App's id (a number above 0), as its settings page shows it"
                .into(),
        });
    }
    let pem = std::fs::read(path).map_err(|source| ConfigError::Unreadable {
        key: "github_app_key_file",
        path: path.clone(),
        source,
    })?;
    AppKey::new(id, &pem, path)
        .map(Some)
        .map_err(|e| ConfigError::Invalid {
            key: "github_app_key_file",
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn write_key(dir: &Path) -> PathBuf {
        let key = dir.join("app.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .expect("run openssl")
            .status
            .success();
        assert!(ok, "openssl genrsa");
        key
    }

    #[test]
    fn the_app_comes_from_the_file_and_flags_override_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = write_key(dir.path());
        let file = FileConfig {
            github_app_id: Some(11),
            github_app_key_file: Some(key.clone()),
            ..Default::default()
        };
        let app = github_app(&ConfigArgs::default(), &file)
            .expect("valid")
            .expect("an app");
        assert_eq!(app.app_id, 11);
        let args = ConfigArgs {
            github_app_id: Some(12),
            ..Default::default()
        };
        assert_eq!(
            github_app(&args, &file)
                .expect("valid")
                .expect("app")
                .app_id,
            12
        );
        assert!(
            github_app(&ConfigArgs::default(), &FileConfig::default())
                .expect("none")
                .is_none()
        );
    }

    #[test]
    fn an_app_needs_an_id_above_zero_and_a_readable_rsa_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = write_key(dir.path());
        let only_id = ConfigArgs {
            github_app_id: Some(3),
            ..Default::default()
        };
        let err = github_app(&only_id, &FileConfig::default())
            .expect_err("no key")
            .to_string();
        assert!(err.contains("github_app_key_file"), "{err}");
        let zero = ConfigArgs {
            github_app_id: Some(0),
            github_app_key_file: Some(key),
            ..Default::default()
        };
        let err = github_app(&zero, &FileConfig::default())
            .expect_err("id 0")
            .to_string();
        assert!(err.contains("github_app_id"), "{err}");
        let missing = dir.path().join("missing.pem");
        let args = ConfigArgs {
            github_app_id: Some(3),
            github_app_key_file: Some(missing.clone()),
            ..Default::default()
        };
        let err = github_app(&args, &FileConfig::default())
            .expect_err("unreadable")
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "-----BEGIN RSA PRIVATE KEY-----\nabc\n").expect("write");
        let args = ConfigArgs {
            github_app_id: Some(3),
            github_app_key_file: Some(bad.clone()),
            ..Default::default()
        };
        let err = github_app(&args, &FileConfig::default())
            .expect_err("not a key")
            .to_string();
        assert!(
            err.contains(&bad.display().to_string()) && err.contains("not an RSA private key"),
            "{err}"
        );
    }
}
