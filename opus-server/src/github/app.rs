//! opusd as a GitHub App: the app's identity ([`AppKey`]: its id and private key, checked when
//! opusd starts), the RS256 JWT it signs, and [`InstallationTokens`], which trades that JWT for an
//! installation's access token (`POST /app/installations/{id}/access_tokens`, through octocrab)
//! and keeps each token until shortly before it expires.
//!
//! An installation token is what opusd calls GitHub with for the repositories of that
//! installation (statuses, deployments, `opus github import`) and the password git clones them
//! with (`crate::github::askpass`). A token GitHub refuses (401: expired early, revoked) is
//! dropped with [`InstallationTokens::forget`], so the next call gets a fresh one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use octocrab::Octocrab;
use serde::{Deserialize, Serialize};

/// How far back a JWT's `iat` is set, for clocks that run ahead of GitHub's (GitHub's advice).
const IAT_BACKDATE: Duration = Duration::from_secs(60);
/// How long a JWT is valid from now: GitHub accepts at most 10 minutes.
const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
/// An installation token is replaced once it has less than this left (GitHub gives one hour):
/// a clone or a retried status started with it must not see it expire.
pub const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Why the App could not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The key file holds no RSA private key in PEM form.
    #[error(
        "{path} is not an RSA private key in PEM form (the .pem file a GitHub App's settings page \
         generates): {source}"
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// jsonwebtoken's reason.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The JWT could not be signed.
    #[error("cannot sign the GitHub App's JWT: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// No octocrab client could be made for the API's URL.
    #[error("cannot make a GitHub client for {api}: {source}")]
    Client {
        /// The API's base URL.
        api: String,
        /// octocrab's error.
        #[source]
        source: octocrab::Error,
    },
    /// GitHub answered a call with an error (or did not answer).
    #[error("GitHub refused {call}: {detail}")]
    Call {
        /// The call, as `POST /app/installations/7/access_tokens`.
        call: String,
        /// The HTTP status, 0 when there was no answer.
        status: u16,
        /// What went wrong.
        detail: String,
    },
}

impl AppError {
    /// The HTTP status GitHub answered (0 when it did not, or when no call was made).
    pub fn status(&self) -> u16 {
        match self {
            AppError::Call { status, .. } => *status,
            _ => 0,
        }
    }
}

/// A GitHub App's id and private key, checked once: opusd refuses to start with a key it cannot
/// sign with.
#[derive(Clone)]
pub struct AppKey {
    /// The App's id (its settings page shows it): the JWT's `iss`.
    pub app_id: u64,
    key: EncodingKey,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKey")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// The claims of the App's JWT, as GitHub documents them.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppClaims {
    /// Issued at, backdated by a minute.
    pub iat: u64,
    /// Expires at, under ten minutes from now.
    pub exp: u64,
    /// The App's id, as a string (GitHub accepts either; the client id form is a string).
    pub iss: String,
}

impl AppKey {
    /// The App `app_id` with the PEM `pem` read from `path` (named in the error): the key must
    /// parse and sign, or this says what the file is not.
    pub fn new(app_id: u64, pem: &[u8], path: &Path) -> Result<AppKey, AppError> {
        let bad = |source| AppError::BadKey {
            path: path.to_path_buf(),
            source,
        };
        let key = EncodingKey::from_rsa_pem(pem).map_err(bad)?;
        let app = AppKey { app_id, key };
        // Parsing PEM does not read the key itself: a signature does.
        app.jwt(SystemTime::now()).map_err(|e| match e {
            AppError::Sign(source) => bad(source),
            other => other,
        })?;
        Ok(app)
    }

    /// The claims of a JWT made at `now`.
    pub fn claims(&self, now: SystemTime) -> AppClaims {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        AppClaims {
            iat: (now - IAT_BACKDATE.min(now)).as_secs(),
            exp: (now + JWT_LIFETIME).as_secs(),
            iss: self.app_id.to_string(),
        }
    }

    /// An RS256 JWT authenticating as the App, made at `now`.
    pub fn jwt(&self, now: SystemTime) -> Result<String, AppError> {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &self.claims(now), &self.key)
            .map_err(AppError::Sign)
    }
}

/// An installation token and when it stops working.
#[derive(Clone)]
struct Cached {
    token: String,
    expires_at: SystemTime,
}

/// `POST /app/installations/{id}/access_tokens`'s answer, the part opusd reads.
#[derive(Deserialize)]
struct AccessToken {
    token: String,
    /// RFC 3339.
    expires_at: Option<String>,
}

/// A repository an installation can see (`GET /installation/repositories`), the part opusd reads.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct InstalledRepository {
    /// `owner/name`.
    pub full_name: String,
    /// The name alone.
    pub name: String,
    /// The HTTPS clone URL.
    pub clone_url: String,
    /// Its default branch.
    #[serde(default)]
    pub default_branch: Option<String>,
    /// Whether it is private.
    #[serde(default)]
    pub private: bool,
    /// The installation that sees it (not in GitHub's answer: set by opusd).
    #[serde(skip)]
    pub installation: u64,
}

#[derive(Deserialize)]
struct RepositoryPage {
    total_count: u64,
    repositories: Vec<InstalledRepository>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

/// Installation tokens, made on demand and kept until [`TOKEN_MARGIN`] before they expire.
pub struct InstallationTokens {
    app: AppKey,
    /// GitHub's REST API, without a trailing `/`.
    api: String,
    /// How long one call may take.
    timeout: Duration,
    cache: Mutex<HashMap<u64, Cached>>,
}

impl InstallationTokens {
    /// Tokens of `app`'s installations from the API at `api`.
    pub fn new(app: AppKey, api: String, timeout: Duration) -> InstallationTokens {
        InstallationTokens {
            app,
            api,
            timeout,
            cache: Mutex::default(),
        }
    }

    /// A client of the API authenticated with `bearer`.
    fn client(&self, bearer: String) -> Result<Octocrab, AppError> {
        let fail = |source| AppError::Client {
            api: self.api.clone(),
            source,
        };
        Octocrab::builder()
            .base_uri(self.api.as_str())
            .map_err(fail)?
            .personal_token(bearer)
            .set_connect_timeout(Some(self.timeout))
            .set_read_timeout(Some(self.timeout))
            .set_write_timeout(Some(self.timeout))
            .build()
            .map_err(fail)
    }

    /// A client authenticated as the App itself (a fresh JWT).
    fn as_app(&self) -> Result<Octocrab, AppError> {
        self.client(self.app.jwt(SystemTime::now())?)
    }

    /// A token of `installation` with more than [`TOKEN_MARGIN`] left: the kept one, else a new
    /// one from GitHub.
    pub async fn token(&self, installation: u64) -> Result<String, AppError> {
        let now = SystemTime::now();
        if let Some(cached) = self.lock().get(&installation)
            && cached.expires_at > now + TOKEN_MARGIN
        {
            return Ok(cached.token.clone());
        }
        let call = format!("POST /app/installations/{installation}/access_tokens");
        let answer: AccessToken = self
            .as_app()?
            .post(
                format!("/app/installations/{installation}/access_tokens"),
                None::<&()>,
            )
            .await
            .map_err(|e| call_error(&call, &e))?;
        // GitHub always says; without it, an hour as GitHub documents.
        let expires_at = answer
            .expires_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or(now + Duration::from_secs(3600));
        tracing::info!(installation, "GitHub App installation token obtained");
        self.lock().insert(
            installation,
            Cached {
                token: answer.token.clone(),
                expires_at,
            },
        );
        Ok(answer.token)
    }

    /// Drops the kept token of `installation` when it is still `token` (GitHub refused it).
    pub fn forget(&self, installation: u64, token: &str) {
        let mut cache = self.lock();
        if cache.get(&installation).is_some_and(|c| c.token == token) {
            cache.remove(&installation);
        }
    }

    /// The App's installations (`GET /app/installations`, as the App).
    pub async fn installations(&self) -> Result<Vec<u64>, AppError> {
        let crab = self.as_app()?;
        let mut out = Vec::new();
        for page in 1u32.. {
            let call = format!("GET /app/installations?per_page=100&page={page}");
            let batch: Vec<Installation> = crab
                .get(
                    "/app/installations",
                    Some(&[("per_page", "100"), ("page", &page.to_string())]),
                )
                .await
                .map_err(|e| call_error(&call, &e))?;
            let last = batch.len() < 100;
            out.extend(batch.into_iter().map(|i| i.id));
            if last {
                break;
            }
        }
        Ok(out)
    }

    /// The repositories `installation` can see (`GET /installation/repositories`, with its
    /// token), every page; a refused token is replaced once.
    pub async fn repositories(
        &self,
        installation: u64,
    ) -> Result<Vec<InstalledRepository>, AppError> {
        match self.repositories_once(installation).await {
            Err((e, Some(token))) if e.status() == 401 => {
                self.forget(installation, &token);
                self.repositories_once(installation)
                    .await
                    .map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One try of [`Self::repositories`]; a failure carries the token it was made with.
    async fn repositories_once(
        &self,
        installation: u64,
    ) -> Result<Vec<InstalledRepository>, (AppError, Option<String>)> {
        let token = self.token(installation).await.map_err(|e| (e, None))?;
        let crab = self.client(token.clone()).map_err(|e| (e, None))?;
        let mut out = Vec::new();
        for page in 1u32.. {
            let call = format!("GET /installation/repositories?per_page=100&page={page}");
            let batch: RepositoryPage = crab
                .get(
                    "/installation/repositories",
                    Some(&[("per_page", "100"), ("page", &page.to_string())]),
                )
                .await
                .map_err(|e| (call_error(&call, &e), Some(token.clone())))?;
            let got = batch.repositories.len();
            out.extend(batch.repositories.into_iter().map(|mut r| {
                r.installation = installation;
                r
            }));
            if got < 100 || out.len() as u64 >= batch.total_count {
                break;
            }
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An octocrab error as an [`AppError::Call`] with GitHub's status.
fn call_error(call: &str, e: &octocrab::Error) -> AppError {
    let (status, detail) = match e {
        octocrab::Error::GitHub { source, .. } => (
            source.status_code.as_u16(),
            format!("HTTP {}: {}", source.status_code.as_u16(), source.message),
        ),
        other => (0, super::client::error_chain(other)),
    };
    AppError::Call {
        call: call.to_owned(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests;
