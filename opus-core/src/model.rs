//! Domain types and the naming rules of DESIGN.md.
//!
//! Names are validated once, when they enter the system, and carried as newtypes after that, so a
//! `ProjectName` in hand is always a DNS label that is safe in a URL, an object key or a Kubernetes
//! name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Checks the DNS-label rule `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$` and says what breaks it.
fn check_dns_label(kind: &'static str, name: &str) -> Result<(), ModelError> {
    let fail = |why: &str| {
        Err(ModelError::InvalidName {
            kind,
            name: name.to_owned(),
            why: why.to_owned(),
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > 63 {
        return fail(&format!(
            "it is {} characters long, the limit is 63",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return fail(&format!("{c:?} is not allowed"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return fail("it starts or ends with '-'");
    }
    Ok(())
}

/// What separates the environment from the project in a site's host name
/// (`staging--web.localhost`); new project and environment names may not contain it.
pub const SITE_HOST_SEPARATOR: &str = "--";

macro_rules! dns_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `name` against the DNS-label rule.
            pub fn new(name: impl Into<String>) -> Result<Self, ModelError> {
                let name = name.into();
                check_dns_label($kind, &name)?;
                Ok(Self(name))
            }

            /// Validates the name of a project or environment being created: the DNS-label
            /// rule, and no `--` ([`SITE_HOST_SEPARATOR`]). Names read back from a store use
            /// [`Self::new`], so a store made before the rule still opens.
            pub fn for_new(name: impl Into<String>) -> Result<Self, ModelError> {
                let name = Self::new(name)?;
                if name.0.contains(SITE_HOST_SEPARATOR) {
                    return Err(ModelError::InvalidName {
                        kind: $kind,
                        name: name.0,
                        why: format!(
                            "it contains {SITE_HOST_SEPARATOR:?}, which separates the environment from the project in a site's host name (staging{SITE_HOST_SEPARATOR}web.localhost), so it could take over another project's site"
                        ),
                    });
                }
                Ok(name)
            }

            /// Whether the name holds `--`: only names from a store made before the rule do.
            pub fn has_site_host_separator(&self) -> bool {
                self.0.contains(SITE_HOST_SEPARATOR)
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ModelError;
            fn try_from(s: String) -> Result<Self, ModelError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

dns_name!(
    /// A project's name: a DNS label, because it appears in URLs, object keys and Kubernetes names.
    ProjectName,
    "project"
);
dns_name!(
    /// An environment's name (`production`, `staging`, a preview's branch slug): a DNS label.
    EnvName,
    "environment"
);

// Pipelines (opus.yml `pipeline:`).
dns_name!(
    /// A job's name in an opus.yml pipeline: a DNS label, because it names the job's workspace,
    /// its log lines (`opus logs web#12 --job unit`) and, on Kubernetes, its Job.
    JobName,
    "job"
);

/// The environment a build deploys to when nothing else is named, and the one served at the bare
/// project host (`<project>.<domain>`).
pub const PRODUCTION: &str = "production";

impl EnvName {
    /// [`PRODUCTION`] as an environment name.
    pub fn production() -> EnvName {
        EnvName(PRODUCTION.to_owned())
    }
}

/// The name of the artifact store given by `--store`; versions go there unless a build names an
/// `--extra-store`, so no extra store may take this name.
pub const DEFAULT_STORE: &str = "default";

/// The name of an artifact store: [`DEFAULT_STORE`] or an `--extra-store` name, a DNS label
/// (checked with the same rule as project names). Stored records and wire messages carry it as a
/// plain string in which empty means [`DEFAULT_STORE`] (the form of records and requests from
/// before stores had a type); [`StoreName::or_default`] reads that form, and serde reads it too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct StoreName(String);

impl StoreName {
    /// Validates a store name against the DNS-label rule; empty is refused (see
    /// [`StoreName::or_default`] for the stored and wire form, where it means the default).
    pub fn new(name: impl Into<String>) -> Result<Self, ModelError> {
        let name = name.into();
        check_dns_label("store", &name)?;
        Ok(Self(name))
    }

    /// Reads a store name as stored records and wire messages hold it: empty means
    /// [`DEFAULT_STORE`], anything else must be a valid name.
    pub fn or_default(name: impl Into<String>) -> Result<Self, ModelError> {
        let name = name.into();
        if name.is_empty() {
            Ok(Self::default_store())
        } else {
            Self::new(name)
        }
    }

    /// [`DEFAULT_STORE`] as a store name.
    pub fn default_store() -> StoreName {
        StoreName(DEFAULT_STORE.to_owned())
    }

    /// Whether this is [`DEFAULT_STORE`].
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_STORE
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for StoreName {
    fn default() -> Self {
        Self::default_store()
    }
}

impl std::str::FromStr for StoreName {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::new(s)
    }
}

impl From<StoreName> for String {
    fn from(n: StoreName) -> String {
        n.0
    }
}

impl<'de> Deserialize<'de> for StoreName {
    /// Reads the stored form: empty (records written before stores were named) means
    /// [`DEFAULT_STORE`].
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StoreName::or_default(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for StoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StoreName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StoreName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl std::borrow::Borrow<str> for StoreName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A version of a project: `^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`, not `archive` or `manifest`
/// (those are folders of the storage layout).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionName(String);

impl VersionName {
    /// Validates a version name.
    pub fn new(name: impl Into<String>) -> Result<Self, ModelError> {
        let name = name.into();
        let fail = |why: String| {
            Err(ModelError::InvalidVersion {
                name: name.clone(),
                why,
            })
        };
        if name.is_empty() {
            return fail("it is empty".into());
        }
        if name.len() > 128 {
            return fail(format!(
                "it is {} characters long, the limit is 128",
                name.len()
            ));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return fail("it must start with a letter or digit".into());
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
        {
            return fail(format!(
                "{c:?} is not allowed (letters, digits, '.', '_', '+', '-')"
            ));
        }
        if name == "archive" || name == "manifest" {
            return fail("it is reserved for the storage layout".into());
        }
        Ok(Self(name))
    }

    /// The version as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VersionName {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, ModelError> {
        Self::new(s)
    }
}

impl From<VersionName> for String {
    fn from(v: VersionName) -> String {
        v.0
    }
}

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stores a build's [`Option<VersionName>`] as one string, empty for "not decided yet": the form
/// build records had when the field was a plain string, so those records read the same.
mod undecided_version {
    use super::VersionName;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<VersionName>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_ref().map_or("", VersionName::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VersionName>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => VersionName::new(s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Turns a branch name into a DNS-label slug for versions and preview environments:
/// `feature/Login_page` becomes `feature-login-page`.
pub fn branch_slug(branch: &str) -> String {
    let mut slug = String::with_capacity(branch.len());
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let mut slug: String = slug.chars().take(50).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        "branch".to_owned()
    } else {
        slug
    }
}

/// Where a project's source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A git URL, mirrored once and fetched before each build; or the absolute path of a local git
    /// repository (a work tree or a bare repository), which git fetches like any URL.
    Git(String),
    /// An absolute path to a local directory that is not a git repository, copied for each build.
    Local(PathBuf),
}

impl Source {
    /// Parses a source: a git URL (`https://`, `http://`, `ssh://`, `git://`, `file://`, or scp-like
    /// `user@host:path`), or else an existing directory, by its absolute path: a git source when
    /// it is a git repository ([`is_git_repository`]: builds fetch its commits, so its branches
    /// and tags build), else a plain folder, copied as it is.
    pub fn parse(text: &str) -> Result<Source, ModelError> {
        let fail = |why: &str| {
            Err(ModelError::InvalidSource {
                source_text: text.to_owned(),
                why: why.to_owned(),
            })
        };
        let text_trim = text.trim();
        if text_trim.is_empty() {
            return fail("it is empty; give a git URL or a local directory");
        }
        if let Some((scheme, rest)) = text_trim.split_once("://") {
            return match scheme {
                "https" | "http" | "ssh" | "git" | "file" if !rest.is_empty() => {
                    Ok(Source::Git(text_trim.to_owned()))
                }
                "https" | "http" | "ssh" | "git" | "file" => fail("the URL has no host or path"),
                _ => fail("unsupported URL scheme; use https, ssh, git or file"),
            };
        }
        if is_scp_like(text_trim) {
            return Ok(Source::Git(text_trim.to_owned()));
        }
        let path = Path::new(text_trim);
        const NEITHER: &str = "it is neither a git URL (https, ssh, git, file, user@host:path) nor an existing directory";
        if !path.is_absolute() {
            return fail(&format!(
                "{NEITHER} (local directories are given as absolute paths)"
            ));
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return fail("it is a file, not a directory"),
            Err(_) => return fail(NEITHER),
        }
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if is_git_repository(&abs) {
            return Ok(Source::Git(abs.display().to_string()));
        }
        Ok(Source::Local(abs))
    }

    /// The folder of a git source that is a repository on this machine (added by its path).
    pub fn local_repository(&self) -> Option<&Path> {
        match self {
            Source::Git(url) if Path::new(url).is_absolute() => Some(Path::new(url)),
            _ => None,
        }
    }

    /// The source as the user would write it.
    pub fn display(&self) -> String {
        match self {
            Source::Git(url) => url.clone(),
            Source::Local(p) => p.display().to_string(),
        }
    }
}

/// Whether the folder `dir` is the root of a git repository: a work tree (a `.git` folder, or the
/// `.git` file of a linked work tree or submodule) or a bare repository (`HEAD`, `objects` and
/// `refs`). A folder inside a repository is not one: a source builds its repository's root.
pub fn is_git_repository(dir: &Path) -> bool {
    let dot_git = dir.join(".git");
    if dot_git.is_dir() || dot_git.is_file() {
        return true;
    }
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

/// `user@host:path`, the scp-like syntax git accepts for ssh.
fn is_scp_like(s: &str) -> bool {
    let Some((user_host, path)) = s.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    ok(user) && ok(host) && !path.is_empty()
}

/// A registered project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Its unique name.
    pub name: ProjectName,
    /// Where builds get the code from.
    pub source: Source,
    /// The branch that `latest` means.
    pub branch: String,
    /// When it was added.
    pub created_at: SystemTime,
    /// Versions to keep; 0 keeps all.
    #[serde(default)]
    pub keep_versions: u32,
}

/// Checks a branch name the way `git check-ref-format --branch` would for the common cases.
pub fn validate_branch(branch: &str) -> Result<(), ModelError> {
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    if bad {
        return Err(ModelError::Invalid(format!(
            "invalid branch name {branch:?}"
        )));
    }
    Ok(())
}

/// Checks a secret name: like an environment variable, `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn validate_secret_name(name: &str) -> Result<(), ModelError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 256 {
        return Err(ModelError::Invalid(format!(
            "invalid secret name {name:?}: secrets are environment variables, use letters, digits and '_', not starting with a digit"
        )));
    }
    Ok(())
}

/// The shortest secret value Opus stores. Logs mask secrets by replacing their text with `***`;
/// masking a value of two or three characters would hide ordinary words and, worse, show where
/// those characters occur in other text.
pub const MIN_SECRET_LEN: usize = 4;

/// Checks a secret's value: at least [`MIN_SECRET_LEN`] characters.
pub fn validate_secret_value(value: &str) -> Result<(), ModelError> {
    if value.chars().count() < MIN_SECRET_LEN {
        return Err(ModelError::Invalid(format!(
            "a secret must be at least {MIN_SECRET_LEN} characters long: build logs mask secrets, and masking a shorter value would hide ordinary text and reveal where those characters occur"
        )));
    }
    Ok(())
}

/// The states of a build: queued -> running -> succeeded | failed | cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    /// Waiting for a slot.
    Queued,
    /// Running its steps.
    Running,
    /// Finished, its version stored.
    Succeeded,
    /// Finished with an error (a failed step, a timeout, a restart).
    Failed,
    /// Stopped by a user or by a newer push to the same branch.
    Cancelled,
    /// Its version is stored and deployed where no approval is needed; an environment with
    /// `approval: true` waits for `opus approve` (then succeeded) or `opus reject` (then failed).
    AwaitingApproval,
}

impl BuildState {
    /// Whether the build's run has ended: it holds no slot, no process and no live log. A build
    /// awaiting approval has ended its run too; only an approval or a rejection changes it.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            BuildState::Succeeded
                | BuildState::Failed
                | BuildState::Cancelled
                | BuildState::AwaitingApproval
        )
    }

    /// The lowercase name used in output and event types.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
            BuildState::AwaitingApproval => "awaiting_approval",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Result<BuildState, ModelError> {
        Ok(match s {
            "queued" => BuildState::Queued,
            "running" => BuildState::Running,
            "succeeded" => BuildState::Succeeded,
            "failed" => BuildState::Failed,
            "cancelled" | "canceled" => BuildState::Cancelled,
            "awaiting_approval" | "awaiting-approval" | "awaiting approval" => {
                BuildState::AwaitingApproval
            }
            other => {
                return Err(ModelError::Invalid(format!(
                    "unknown build state {other:?}: use queued, running, succeeded, failed or cancelled"
                )));
            }
        })
    }
}

impl fmt::Display for BuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a build. Stored and sent as its lowercase name (`cli`, `github`, `webhook`,
/// `dashboard`, `schedule`, `after`, `release`, `gitlab`, `gitea`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `opus build` (the Build RPC).
    Cli,
    /// A GitHub push webhook.
    Github,
    /// The generic webhook.
    Webhook,
    /// The web dashboard's trigger button.
    Dashboard,
    // opus.yml `on:` triggers (`recipe::triggers`).
    /// opus.yml `on: { schedule: ... }`: the cron expression came due.
    Schedule,
    /// opus.yml `on: { after: ... }`: another project's event.
    After,
    /// opus.yml `on: { release: true }`: a GitHub release was published.
    Release,
    /// A GitLab push or merge request webhook.
    Gitlab,
    /// A Gitea or Forgejo push or pull request webhook.
    Gitea,
}

impl Trigger {
    /// The lowercase name used in output and stored records.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Github => "github",
            Trigger::Webhook => "webhook",
            Trigger::Dashboard => "dashboard",
            Trigger::Schedule => "schedule",
            Trigger::After => "after",
            Trigger::Release => "release",
            Trigger::Gitlab => "gitlab",
            Trigger::Gitea => "gitea",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One build of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// opusd's own key of the build, increasing across projects: its record, log file, workspace
    /// and runner token go by it. Users name builds by project and [`Build::number`] instead.
    pub id: u64,
    /// The project built.
    pub project: ProjectName,
    /// Where it stands.
    pub state: BuildState,
    /// The ref asked for (`latest` already resolved to the default branch).
    pub git_ref: String,
    /// The commit built, once resolved.
    pub commit: String,
    /// The version it produces: `None` until it is decided (a version named from the commit is
    /// decided once the commit is known). Stored as a string, empty for `None`, as records
    /// written before this type were.
    #[serde(with = "undecided_version")]
    pub version: Option<VersionName>,
    /// Whether the version was named by the trigger.
    #[serde(default)]
    pub version_pinned: bool,
    /// Why it failed or was cancelled.
    pub reason: String,
    /// What triggered it.
    pub trigger: Trigger,
    /// The artifact store the version goes to (stored as its name; empty in old records means
    /// [`DEFAULT_STORE`]).
    pub store: StoreName,
    /// The branch it belongs to, when the ref is a branch.
    pub branch: Option<String>,
    /// Whether the ref is a tag.
    pub is_tag: bool,
    /// When it was queued.
    pub queued_at: SystemTime,
    /// When it started running.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// The build's number within its project, counting from 1: `web#3` is build 3 of `web`. A
    /// record written before builds were numbered per project has none; the store reads it as its
    /// `id`, which was the number shown then, so old builds keep their names.
    #[serde(default)]
    pub number: u64,
    /// The pull request it builds, when a `pull_request` webhook queued it: its preview goes to
    /// `pr-<number>`, and a fork's build gets no secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<crate::forge::PullRequest>,
    /// The GitHub commit its statuses go on, when GitHub triggered it (a push or a pull request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<crate::forge::GithubCommit>,
}

/// A stored version of a project: what the metadata store knows about it. The files, archive and
/// manifest live in the artifact store named by `store`; this record is written last, so a version
/// exists exactly when its record does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The project.
    pub project: ProjectName,
    /// The version.
    pub version: VersionName,
    /// The artifact store holding it (`default` or an `--extra-store` name).
    pub store: StoreName,
    /// The number within the project of the build that produced it (`web#3`; 0 for a published
    /// folder). Versions stored before per-project numbers hold the build's id, which is that
    /// build's number too.
    pub build_id: u64,
    /// The commit built (empty when unknown).
    pub commit: String,
    /// When it was stored.
    pub created_at: SystemTime,
    /// Number of files.
    pub file_count: u32,
    /// Total size of the files, in bytes.
    pub size: u64,
    /// Size of its tar.gz archive, in bytes.
    pub archive_size: u64,
    /// sha256 (hex) of its tar.gz archive.
    pub archive_sha256: String,
}

/// What an [`Event`] says happened. Its wire string (`build.queued`, `environment.deployed`, ...) is
/// what the store keeps, `opus events` shows and hook filters match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EventKind {
    /// A project was registered.
    ProjectAdded,
    /// A project's branch or retention changed.
    ProjectUpdated,
    /// A project was removed.
    ProjectRemoved,
    /// A secret was set.
    SecretSet,
    /// A secret was removed.
    SecretUnset,
    /// A build was queued or changed state (`build.queued`, `build.running`, `build.succeeded`, ...).
    Build(BuildState),
    /// A version was stored.
    VersionStored,
    /// A version was deleted.
    VersionDeleted,
    /// A version was deployed to an environment (by hand or automatically).
    EnvironmentDeployed,
    /// An environment was rolled back.
    EnvironmentRolledBack,
    /// An environment was removed.
    EnvironmentRemoved,
    /// An environment's pin was lifted.
    EnvironmentUnpinned,
    /// A hook was added.
    HookAdded,
    /// A hook was removed.
    HookRemoved,
    /// A hook was disabled after failing deliveries.
    HookDisabled,
    /// A project's webhook key was set or rotated.
    WebhookKeySet,
    /// The test event `opus hook test` sends; never stored.
    Ping,
    // Pipelines: one event per change of a job of a `pipeline:` (not for a `build:`).
    /// A pipeline job started (it has its slot and its copy of the checkout).
    JobStarted,
    /// A pipeline job's steps succeeded.
    JobSucceeded,
    /// A pipeline job failed (the payload says how).
    JobFailed,
    /// A pipeline job was cancelled (a sibling failed, or the build was cancelled).
    JobCancelled,
    /// A pipeline job was skipped by `when:` (the payload says why).
    JobSkipped,
    /// A custom domain was added to a project's environment.
    DomainAdded,
    /// A custom domain was removed.
    DomainRemoved,
    /// A preview environment got no deploy for its opus.yml `previews: { expire: ... }` and was
    /// removed (its versions stay).
    PreviewExpired,
    // Checks before promotion and verification after a deploy (opus.yml `checks:`, `verify:`).
    /// A check of a stored version failed: no environment moved to it (the payload names the
    /// check and ends with its output).
    DeployBlocked,
    /// A check of `verify:` failed after a deploy: the environment was rolled back and pinned
    /// (the payload says why).
    DeployRolledBack,
    // Approvals: a build awaiting approval (`build.awaiting_approval`) is approved or rejected.
    /// A build awaiting approval was approved and deployed (the payload names who and where).
    BuildApproved,
    /// A build awaiting approval was rejected (the payload names who and why).
    BuildRejected,
}

impl EventKind {
    /// Every kind, in the order the wire strings are documented.
    pub const ALL: [EventKind; 34] = [
        EventKind::ProjectAdded,
        EventKind::ProjectUpdated,
        EventKind::ProjectRemoved,
        EventKind::SecretSet,
        EventKind::SecretUnset,
        EventKind::Build(BuildState::Queued),
        EventKind::Build(BuildState::Running),
        EventKind::Build(BuildState::Succeeded),
        EventKind::Build(BuildState::Failed),
        EventKind::Build(BuildState::Cancelled),
        EventKind::VersionStored,
        EventKind::VersionDeleted,
        EventKind::EnvironmentDeployed,
        EventKind::EnvironmentRolledBack,
        EventKind::EnvironmentRemoved,
        EventKind::EnvironmentUnpinned,
        EventKind::HookAdded,
        EventKind::HookRemoved,
        EventKind::HookDisabled,
        EventKind::WebhookKeySet,
        EventKind::Ping,
        EventKind::JobStarted,
        EventKind::JobSucceeded,
        EventKind::JobFailed,
        EventKind::JobCancelled,
        EventKind::JobSkipped,
        EventKind::DomainAdded,
        EventKind::DomainRemoved,
        EventKind::PreviewExpired,
        EventKind::DeployBlocked,
        EventKind::DeployRolledBack,
        EventKind::Build(BuildState::AwaitingApproval),
        EventKind::BuildApproved,
        EventKind::BuildRejected,
    ];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ProjectAdded => "project.added",
            EventKind::ProjectUpdated => "project.updated",
            EventKind::ProjectRemoved => "project.removed",
            EventKind::SecretSet => "secret.set",
            EventKind::SecretUnset => "secret.unset",
            EventKind::Build(BuildState::Queued) => "build.queued",
            EventKind::Build(BuildState::Running) => "build.running",
            EventKind::Build(BuildState::Succeeded) => "build.succeeded",
            EventKind::Build(BuildState::Failed) => "build.failed",
            EventKind::Build(BuildState::Cancelled) => "build.cancelled",
            EventKind::VersionStored => "version.stored",
            EventKind::VersionDeleted => "version.deleted",
            EventKind::EnvironmentDeployed => "environment.deployed",
            EventKind::EnvironmentRolledBack => "environment.rolled_back",
            EventKind::EnvironmentRemoved => "environment.removed",
            EventKind::EnvironmentUnpinned => "environment.unpinned",
            EventKind::HookAdded => "hook.added",
            EventKind::HookRemoved => "hook.removed",
            EventKind::HookDisabled => "hook.disabled",
            EventKind::WebhookKeySet => "webhook.key_set",
            EventKind::Ping => "ping",
            EventKind::JobStarted => "job.started",
            EventKind::JobSucceeded => "job.succeeded",
            EventKind::JobFailed => "job.failed",
            EventKind::JobCancelled => "job.cancelled",
            EventKind::JobSkipped => "job.skipped",
            EventKind::DomainAdded => "domain.added",
            EventKind::DomainRemoved => "domain.removed",
            EventKind::PreviewExpired => "preview.expired",
            EventKind::DeployBlocked => "deploy.blocked",
            EventKind::DeployRolledBack => "deploy.rolled_back",
            EventKind::Build(BuildState::AwaitingApproval) => "build.awaiting_approval",
            EventKind::BuildApproved => "build.approved",
            EventKind::BuildRejected => "build.rejected",
        }
    }

    /// The kind a wire string names, old names included: `deploy` and `rollback` (the names of
    /// [`EventKind::EnvironmentDeployed`] and [`EventKind::EnvironmentRolledBack`] before every
    /// kind became `noun.verb`) still read from stores and hook filters written before.
    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "deploy" => Some(EventKind::EnvironmentDeployed),
            "rollback" => Some(EventKind::EnvironmentRolledBack),
            s => EventKind::ALL.into_iter().find(|k| k.as_str() == s),
        }
    }
}

impl TryFrom<String> for EventKind {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, ModelError> {
        EventKind::parse(&s).ok_or_else(|| ModelError::Invalid(format!("unknown event kind {s:?}")))
    }
}

impl From<EventKind> for String {
    fn from(k: EventKind) -> String {
        k.as_str().to_owned()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change, as stored and streamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing sequence number.
    pub seq: u64,
    /// When it happened.
    pub time: SystemTime,
    /// What happened.
    pub kind: EventKind,
    /// The project it concerns (empty for none).
    pub project: String,
    /// Details.
    pub payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_follow_dns_labels() {
        for ok in ["web", "a", "web-2", "0x", &"a".repeat(63)] {
            assert!(ProjectName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Web",
            "-web",
            "web-",
            "a/b",
            "../x",
            "",
            "a_b",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(ProjectName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_names_may_not_hold_the_site_host_separator_but_stored_ones_still_read() {
        let err = ProjectName::for_new("staging--rb").expect_err("refused");
        assert!(
            err.to_string()
                .contains("separates the environment from the project"),
            "{err}"
        );
        assert!(EnvName::for_new("a--b").is_err());
        assert!(EnvName::for_new("pr-1").is_ok());
        let old: ProjectName =
            serde_json::from_str("\"staging--rb\"").expect("a stored name reads");
        assert!(old.has_site_host_separator());
        assert!(
            !ProjectName::for_new("web-2")
                .expect("ok")
                .has_site_host_separator()
        );
    }

    #[test]
    fn secret_values_are_at_least_four_characters() {
        assert!(validate_secret_value("abcd").is_ok());
        let err = validate_secret_value("abc").expect_err("too short");
        assert!(err.to_string().contains("at least 4 characters"), "{err}");
    }

    #[test]
    fn versions_follow_the_rule() {
        for ok in ["1.0.3", "main-12-abc1234", "v1+build.5", "A_b"] {
            assert!(VersionName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "archive",
            "manifest",
            "a b",
            &"a".repeat(129),
        ] {
            assert!(VersionName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_names_are_dns_labels_and_empty_reads_as_the_default() {
        for good in ["default", "s3", "backup-eu", "a1"] {
            let name: StoreName = good.parse().expect(good);
            assert_eq!(name.to_string(), good);
            assert_eq!(serde_json::to_value(&name).expect("json"), good);
        }
        for bad in ["", "S3", "-x", "x-", "a_b", "a/b", &"x".repeat(64)] {
            let err = StoreName::new(bad).expect_err(bad);
            assert!(
                err.to_string().contains("invalid store name"),
                "{bad}: {err}"
            );
        }
        assert!(StoreName::or_default("").expect("empty").is_default());
        assert_eq!(
            StoreName::or_default("backup").expect("named").as_str(),
            "backup"
        );
        StoreName::or_default("Backup").expect_err("still checked");
        let read: StoreName = serde_json::from_str("\"\"").expect("empty reads");
        assert_eq!(read, StoreName::default_store());
        assert_eq!(read.as_str(), DEFAULT_STORE);
        serde_json::from_str::<StoreName>("\"no way\"").expect_err("invalid is refused");
    }

    #[test]
    fn slugs_are_dns_labels() {
        assert_eq!(branch_slug("feature/Login_page"), "feature-login-page");
        assert_eq!(branch_slug("main"), "main");
        assert_eq!(branch_slug("--"), "branch");
        assert!(EnvName::new(branch_slug(&"x/".repeat(80))).is_ok());
    }

    #[test]
    fn sources_parse() {
        for url in [
            "https://github.com/a/b.git",
            "ssh://git@host/x.git",
            "git://host/x",
            "file:///tmp/repo",
            "git@github.com:a/b.git",
        ] {
            assert!(matches!(Source::parse(url), Ok(Source::Git(_))), "{url}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let dir_text = dir.path().to_str().expect("utf-8 temp path");
        assert!(matches!(Source::parse(dir_text), Ok(Source::Local(_))));
        for bad in [
            "",
            "ftp://x/y",
            "relative/dir",
            "/no/such/dir/anywhere",
            "https://",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_local_git_repository_is_a_git_source_and_a_plain_folder_a_copy() {
        let root = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, entries: &[(&str, bool)]| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for (entry, is_dir) in entries {
                if *is_dir {
                    std::fs::create_dir_all(dir.join(entry)).expect("mkdir");
                } else {
                    std::fs::write(dir.join(entry), "x").expect("write");
                }
            }
            std::fs::canonicalize(&dir).expect("canonical")
        };
        let work_tree = make("site", &[(".git", true), ("sub", true)]);
        let linked = make("linked", &[(".git", false)]);
        let bare = make(
            "bare.git",
            &[("HEAD", false), ("objects", true), ("refs", true)],
        );
        for repo in [&work_tree, &linked, &bare] {
            let text = repo.to_str().expect("utf-8 temp path");
            let source = Source::parse(text).expect("a source");
            assert_eq!(source, Source::Git(text.to_owned()), "{text}");
            assert_eq!(source.local_repository(), Some(repo.as_path()));
        }
        // A folder inside a repository, and a folder with only some of a bare repository's parts.
        let inside = work_tree.join("sub");
        let half = make("half", &[("HEAD", false), ("refs", true)]);
        for plain in [&inside, &half] {
            let source = Source::parse(plain.to_str().expect("utf-8")).expect("a source");
            assert_eq!(source, Source::Local(plain.clone()));
            assert_eq!(source.local_repository(), None);
        }
        let remote = Source::parse("https://example.com/a.git").expect("a source");
        assert_eq!(remote.local_repository(), None);
    }

    #[test]
    fn event_kinds_keep_their_wire_strings_and_read_the_old_ones() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("{:?}", kind.as_str()));
            assert_eq!(
                serde_json::from_str::<EventKind>(&json).expect("read"),
                kind
            );
        }
        assert_eq!(
            serde_json::from_str::<EventKind>("\"deploy\"").expect("old name"),
            EventKind::EnvironmentDeployed
        );
        assert_eq!(
            EventKind::parse("rollback"),
            Some(EventKind::EnvironmentRolledBack)
        );
        assert_eq!(
            EventKind::Build(BuildState::Failed).as_str(),
            "build.failed"
        );
        let err = serde_json::from_str::<EventKind>("\"build.started\"").expect_err("unknown");
        assert!(err.to_string().contains("unknown event kind"), "{err}");
    }

    #[test]
    fn triggers_keep_their_stored_names() {
        for (t, name) in [
            (Trigger::Cli, "cli"),
            (Trigger::Github, "github"),
            (Trigger::Webhook, "webhook"),
            (Trigger::Dashboard, "dashboard"),
            (Trigger::Schedule, "schedule"),
            (Trigger::After, "after"),
            (Trigger::Release, "release"),
            (Trigger::Gitlab, "gitlab"),
            (Trigger::Gitea, "gitea"),
        ] {
            assert_eq!(
                serde_json::to_string(&t).expect("serialize"),
                format!("{name:?}")
            );
            assert_eq!(
                serde_json::from_str::<Trigger>(&format!("{name:?}")).expect("read"),
                t
            );
            assert_eq!(t.to_string(), name);
        }
    }

    #[test]
    fn secret_names() {
        assert!(validate_secret_name("NPM_TOKEN").is_ok());
        assert!(validate_secret_name("_x1").is_ok());
        for bad in ["", "1A", "A-B", "A B"] {
            assert!(validate_secret_name(bad).is_err(), "{bad}");
        }
    }
}
