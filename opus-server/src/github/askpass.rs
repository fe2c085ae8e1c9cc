//! The GitHub App's installation token as git's credential for cloning private repositories over
//! HTTPS, without the token in any URL, log line or command line.
//!
//! git asks `GIT_ASKPASS` for a username and a password when a server answers 401. opusd points
//! it at `<data-dir>/git-askpass`, a script (mode 0700) holding no secret: it prints
//! `OPUS_GIT_USERNAME` or `OPUS_GIT_PASSWORD` from its environment, which opusd sets on that one
//! git process. So the token is only in the environment of git and its helpers (readable by
//! opusd's own user alone), never in an argument. Configured credential helpers are switched off
//! for these commands (`credential.helper` emptied through `GIT_CONFIG_*`), so none stores it.
//!
//! [`AskpassScript`] is that script alone, shared by opusd's mirrors ([`GitCredentials`]) and by
//! `opusd runner` (which gets the token in its assignment and writes the script into its own
//! temporary folder).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opus_core::model::ProjectName;
use opus_core::store::MetaStore;
use tokio::process::Command;

use super::app::{AppError, InstallationTokens};

/// The username GitHub takes with an installation token as the password.
pub const GIT_USERNAME: &str = "x-access-token";

/// The script git runs for credentials: prompts starting with `Username` get the user, any other
/// the password.
const SCRIPT: &str = "#!/bin/sh\n\
# opusd's GIT_ASKPASS: answers git from its environment; it holds no secret itself.\n\
case \"$1\" in\n\
  Username*) printf '%s\\n' \"$OPUS_GIT_USERNAME\" ;;\n\
  *) printf '%s\\n' \"$OPUS_GIT_PASSWORD\" ;;\n\
esac\n";

/// A username and password for one git command.
pub struct GitCredential {
    username: String,
    password: String,
}

impl GitCredential {
    /// A credential from its parts (a runner's, from its assignment).
    pub fn new(username: String, password: String) -> GitCredential {
        GitCredential { username, password }
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password, so that a refused one can be forgotten.
    pub fn password(&self) -> &str {
        &self.password
    }
}

/// The askpass script on disk: git runs it for a credential, and it answers from the environment
/// [`AskpassScript::apply`] gives git.
pub struct AskpassScript {
    path: PathBuf,
}

impl AskpassScript {
    /// Writes the script as `<dir>/git-askpass` (0700; replaced when present).
    pub fn write(dir: &Path) -> std::io::Result<AskpassScript> {
        let path = dir.join("git-askpass");
        let tmp = dir.join("git-askpass.partial");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)?;
        file.write_all(SCRIPT.as_bytes())?;
        file.sync_all()?;
        drop(file);
        // create_new's mode is masked by the umask: set it exactly.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
        std::fs::rename(&tmp, &path)?;
        Ok(AskpassScript { path })
    }

    /// Makes `cmd` (a git command) answer a server's 401 with `credential`, through the script
    /// and the environment only.
    pub fn apply(&self, cmd: &mut Command, credential: &GitCredential) {
        cmd.env("GIT_ASKPASS", &self.path)
            .env("OPUS_GIT_USERNAME", &credential.username)
            .env("OPUS_GIT_PASSWORD", &credential.password)
            // No configured helper may store the token (or answer instead of it).
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "credential.helper")
            .env("GIT_CONFIG_VALUE_0", "");
    }
}

/// Installation tokens as git credentials for the projects of an installation.
pub struct GitCredentials {
    tokens: Arc<InstallationTokens>,
    store: MetaStore,
    /// `<data-dir>/git-askpass`.
    script: AskpassScript,
}

impl GitCredentials {
    /// Writes the askpass script into `data_dir` (0700; replaced when present) and answers
    /// credentials from `tokens` for the projects `store` maps to an installation.
    pub fn install(
        data_dir: &Path,
        tokens: Arc<InstallationTokens>,
        store: MetaStore,
    ) -> std::io::Result<GitCredentials> {
        Ok(GitCredentials {
            tokens,
            store,
            script: AskpassScript::write(data_dir)?,
        })
    }

    /// The credential of `project` for `url`: its installation's token when `url` is HTTP(S)
    /// and the project belongs to an installation (`opus github import`, or a webhook delivery
    /// naming one); none otherwise (git then runs as it would without an App).
    pub async fn for_project(
        &self,
        project: &ProjectName,
        url: &str,
    ) -> Result<Option<GitCredential>, AppError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Ok(None);
        }
        let Ok(Some(installation)) = self.store.github_installation(project) else {
            return Ok(None);
        };
        let token = self.tokens.token(installation).await?;
        Ok(Some(GitCredential {
            username: GIT_USERNAME.to_owned(),
            password: token,
        }))
    }

    /// Drops `credential`'s token when git was refused with it, so that a retry gets a new one.
    pub fn refused(&self, project: &ProjectName, credential: &GitCredential) {
        if let Ok(Some(installation)) = self.store.github_installation(project) {
            self.tokens.forget(installation, credential.password());
        }
    }

    /// Makes `cmd` (a git command) answer a server's 401 with `credential`, through the askpass
    /// script and the environment only.
    pub fn apply(&self, cmd: &mut Command, credential: &GitCredential) {
        self.script.apply(cmd, credential);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_script_answers_from_the_environment_and_only_its_owner_may_run_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(&dir.path().join("meta")).expect("store");
        // The script alone: GitCredentials::install needs no working App to write it.
        let tokens = test_tokens(dir.path());
        let creds = GitCredentials::install(dir.path(), tokens, store).expect("install");
        let mode = std::fs::metadata(&creds.script.path)
            .expect("script")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let credential = GitCredential {
            username: GIT_USERNAME.into(),
            password: "ghs_secret".into(),
        };
        for (prompt, want) in [
            ("Username for 'https://github.com': ", GIT_USERNAME),
            (
                "Password for 'https://x-access-token@github.com': ",
                "ghs_secret",
            ),
        ] {
            let mut cmd = Command::new(&creds.script.path);
            cmd.arg(prompt);
            creds.apply(&mut cmd, &credential);
            let out = cmd.output().await.expect("run the script");
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{want}\n"));
        }
    }

    #[tokio::test]
    async fn only_http_urls_of_projects_of_an_installation_get_a_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(&dir.path().join("meta")).expect("store");
        let creds =
            GitCredentials::install(dir.path(), test_tokens(dir.path()), store).expect("install");
        let web = ProjectName::new("web").expect("name");
        // No installation: none, and no call to GitHub is tried.
        assert!(
            creds
                .for_project(&web, "https://github.com/acme/web.git")
                .await
                .expect("no call")
                .is_none()
        );
        assert!(
            creds
                .for_project(&web, "git@github.com:acme/web.git")
                .await
                .expect("no call")
                .is_none()
        );
    }

    fn test_tokens(dir: &Path) -> Arc<InstallationTokens> {
        let key = dir.join("app.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .expect("openssl")
            .status
            .success();
        assert!(ok);
        let pem = std::fs::read(&key).expect("key");
        let app = super::super::app::AppKey::new(1, &pem, &key).expect("key");
        Arc::new(InstallationTokens::new(
            app,
            "http://127.0.0.1:9".into(),
            std::time::Duration::from_secs(1),
        ))
    }
}
