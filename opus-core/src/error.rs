//! Errors of the core areas. Each area has its own enum; [`CoreError`] gathers them so that the
//! server maps them to gRPC status codes in exactly one place.

use thiserror::Error;

/// Input that breaks a naming or validation rule of DESIGN.md.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// A project, environment or store name that is not a DNS label.
    #[error(
        "invalid {kind} name {name:?}: {why} (use lowercase letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit)"
    )]
    InvalidName {
        /// `project`, `environment` or `store`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A version name outside `^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`, or a reserved one.
    #[error("invalid version {name:?}: {why}")]
    InvalidVersion {
        /// The version as given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A source that is neither a git URL nor an existing local directory.
    #[error("invalid source {source_text:?}: {why}")]
    InvalidSource {
        /// The source as given.
        source_text: String,
        /// What is wrong with it.
        why: String,
    },
    /// A ref other than the project's branch asked of a plain-folder source, which has no refs.
    /// (`Box<str>` keeps `ModelError`, which build failures carry, small.)
    #[error(
        "ref {git_ref:?} cannot be built: the source of {project} ({dir}) is a plain folder, not a git repository, so it has no branches or tags; trigger `latest` to build the folder as it is, or make it a git repository (`git init`, then commit) and add the project again (`opus remove {project}`, then `opus add {project} {dir}`)"
    )]
    NotARepository {
        /// The project.
        project: Box<str>,
        /// The ref asked for.
        git_ref: Box<str>,
        /// The folder.
        dir: Box<str>,
    },
    /// Any other invalid argument (a secret name, a filter).
    #[error("{0}")]
    Invalid(String),
}

/// Failures of the metadata store.
#[cfg(feature = "store")]
#[derive(Debug, Error, Clone)]
pub enum StoreError {
    /// A project with that name exists already.
    #[error(
        "project {0:?} already exists (remove it first with `opus remove {0}`, or pick another name)"
    )]
    ProjectExists(String),
    /// No project with that name.
    #[error("no project named {0:?} (see `opus list`)")]
    ProjectNotFound(String),
    /// No secret with that name in the project.
    #[error("project {project:?} has no secret named {name:?} (see `opus secret list {project}`)")]
    SecretNotFound {
        /// The project.
        project: String,
        /// The secret name.
        name: String,
    },
    /// No build with that internal id (an older client naming a build by id).
    #[error("no build #{0} (see `opus builds`)")]
    BuildNotFound(u64),
    /// The project has no build of that number.
    #[error("no build {project}#{number} (see `opus builds {project}`)")]
    BuildNumberNotFound {
        /// The project named.
        project: String,
        /// The number asked for.
        number: u64,
    },
    /// Deploying a version the project does not have.
    #[error(
        "project {project:?} has no version {version:?} (see `opus artifacts {project}`, or publish it first)"
    )]
    VersionNotFound {
        /// The project.
        project: String,
        /// The version asked for.
        version: String,
    },
    /// No environment with that name in the project.
    #[error(
        "project {project:?} has no environment {env:?} (see `opus env list {project}`; deploy to it with `opus deploy {project} <version> --env {env}`)"
    )]
    EnvironmentNotFound {
        /// The project.
        project: String,
        /// The environment.
        env: String,
    },
    /// A rollback with nothing earlier to go back to.
    #[error(
        "environment {env:?} of project {project:?} has no earlier release to roll back to (deploy another version with `opus deploy`, or name one with `--to`)"
    )]
    NoEarlierRelease {
        /// The project.
        project: String,
        /// The environment.
        env: String,
    },
    /// An automatic deploy to an environment pinned by a rollback.
    #[error(
        "environment {env:?} of project {project:?} is pinned by a rollback (unpin it with `opus env unpin {project} {env}`)"
    )]
    EnvironmentPinned {
        /// The project.
        project: String,
        /// The environment.
        env: String,
    },
    /// A deploy to an environment locked by `opus env lock`.
    #[error(
        "environment {env:?} of project {project:?} is locked: {reason} (a rollback is still allowed; `opus env unlock {project} {env}` lets deploys through again)"
    )]
    EnvironmentLocked {
        /// The project.
        project: String,
        /// The environment.
        env: String,
        /// The lock's reason.
        reason: String,
    },
    /// No outgoing hook with that id.
    #[error("no hook {0} (see `opus hook list`)")]
    HookNotFound(u64),
    /// `opus approve` or `opus reject` of a build that is not awaiting approval.
    #[error(
        "build {build} is {state}, not awaiting approval: only a build whose version waits for an environment with `approval: true` can be approved or rejected"
    )]
    NotAwaitingApproval {
        /// The build (`web#12`).
        build: String,
        /// Its state.
        state: String,
    },
    /// A custom domain another project (or another environment) already has.
    #[error(
        "domain {host:?} already belongs to project {project:?} (environment {env:?}); remove it there first with `opus domain remove {host}`"
    )]
    DomainTaken {
        /// The domain.
        host: String,
        /// The project that owns it.
        project: String,
        /// The environment it serves.
        env: String,
    },
    /// No custom domain with that host name.
    #[error("no custom domain {0:?} (see `opus domain list`)")]
    DomainNotFound(String),
    /// A stored record that does not decode: the data directory is damaged or from a newer opusd.
    #[error("metadata record {key} does not decode: {detail}")]
    Corrupt {
        /// Which record.
        key: String,
        /// The decoder's complaint.
        detail: String,
    },
    /// A write found the disk holding the store full.
    #[error("the disk holding {} is full: free space and retry", path.display())]
    DiskFull {
        /// The store's folder.
        path: std::path::PathBuf,
    },
    /// The store is being opened again after a failed write.
    #[error("the metadata store at {} is being reopened after a failed write; retry", .0.display())]
    Reopening(std::path::PathBuf),
    /// sled itself failed (I/O, a damaged file).
    #[error("metadata store failed: {0}")]
    Sled(#[from] sled::Error),
}

/// Failures reading or writing a tar.gz archive, and paths that would escape a folder.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// A path that is absolute, contains `..`, or is otherwise unusable inside a version.
    #[error("unsafe path {path:?}: {why}")]
    UnsafePath {
        /// The path as found.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A symbolic link whose target lies outside the folder it belongs to.
    #[error(
        "symlink {path:?} points to {target:?}, outside the folder; only links inside it are allowed"
    )]
    LinkEscapes {
        /// The link, relative to the folder.
        path: String,
        /// Where it points.
        target: String,
    },
    /// An archive entry of a kind Opus does not extract (hard links, devices, fifos).
    #[error(
        "archive entry {path:?} is a {kind}, which Opus does not extract (only files, folders and symlinks inside the folder)"
    )]
    UnsupportedEntry {
        /// The entry's path.
        path: String,
        /// Its kind.
        kind: String,
    },
    /// The folder to extract into already has content.
    #[error("{0} is not empty; extract into a new or empty folder")]
    DestinationNotEmpty(std::path::PathBuf),
    /// Reading, writing or decoding failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Failures of the artifact store: versions in an object store, their manifests and archives.
#[cfg(feature = "store")]
#[derive(Debug, Error)]
pub enum ArtifactError {
    /// The folder to store as a version does not exist.
    #[error(
        "the output folder {0} does not exist (did the build write its output there? check `build.output` in opus.yml)"
    )]
    OutputMissing(std::path::PathBuf),
    /// The folder to store is a file.
    #[error("the output {0} is not a folder")]
    OutputNotFolder(std::path::PathBuf),
    /// A file name that cannot be stored (not UTF-8, or unsafe).
    #[error("cannot store {path}: {why}")]
    BadFileName {
        /// The path on disk.
        path: std::path::PathBuf,
        /// Why not.
        why: String,
    },
    /// Unsafe paths or links in a folder, manifest or archive.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// An invalid project or version name.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A store URL that cannot be used.
    #[error("invalid store URL {url:?}: {why}")]
    InvalidStoreUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A store name opusd was not started with.
    #[error(
        "no artifact store named {name:?} (this opusd has: {known}; add one with `opusd --extra-store {name}=URL`)"
    )]
    UnknownStore {
        /// The name asked for, as given (it may be no valid store name).
        name: String,
        /// The names configured.
        known: String,
    },
    /// The version exists already (versions are immutable).
    #[error(
        "version {version:?} of {project} already exists; versions are immutable, publish under a new version name"
    )]
    VersionExists {
        /// The project.
        project: String,
        /// The version.
        version: String,
    },
    /// The version is being stored right now by another build or publish.
    #[error(
        "version {version:?} of {project} is being stored right now by another build or publish"
    )]
    VersionBusy {
        /// The project.
        project: String,
        /// The version.
        version: String,
    },
    /// No such version.
    #[error("project {project} has no version {version:?} (see `opus artifacts {project}`)")]
    VersionNotFound {
        /// The project.
        project: String,
        /// The version.
        version: String,
    },
    /// The version may not be deleted (an environment points at it).
    #[error("version {version:?} of {project} cannot be deleted: {why}")]
    VersionProtected {
        /// The project.
        project: String,
        /// The version.
        version: String,
        /// Why not.
        why: String,
    },
    /// A stored manifest that does not decode.
    #[error("manifest {key} is damaged: {detail} (run `opus verify`)")]
    ManifestCorrupt {
        /// Its object key.
        key: String,
        /// The decoder's complaint.
        detail: String,
    },
    /// A manifest sent for publishing that is not usable.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// No publish with that id (it was committed, or it expired).
    #[error("no publish in progress with id {0:?} (it was committed or expired; publish again)")]
    UploadNotFound(String),
    /// A version a runner uploaded does not check out against its assignment or the store; it is
    /// not committed.
    #[error("the uploaded version is refused: {0}")]
    UploadInvalid(String),
    /// Uploaded content whose digest or size does not match what was announced.
    #[error("uploaded content does not match: {0}")]
    ContentMismatch(String),
    /// Content the commit needs that was neither uploaded nor found in the store.
    #[error(
        "content of {count} file(s) is missing (first: {first}); upload every digest BeginPublish asked for, or publish again"
    )]
    ContentMissing {
        /// How many digests are missing.
        count: usize,
        /// The first missing path.
        first: String,
    },
    /// The object store failed.
    #[error("object store {store}: {action}: {source}")]
    ObjectStore {
        /// The store's name.
        store: crate::model::StoreName,
        /// What was being done, naming the object.
        action: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// A `_redirects` or `_headers` rule of the version is malformed (file and line named).
    #[error("a site rule cannot be used: {0}")]
    SiteRules(#[from] crate::site_rules::RuleError),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata store failed or a project does not exist.
    #[error(transparent)]
    Meta(#[from] StoreError),
    /// A background task died (a panic in hashing or compression).
    #[error("internal task failed: {0}")]
    Task(String),
    /// A site pointer under `_opus/sites/` cannot be read (written by a newer opusd, or damaged).
    #[error("site pointer {key} cannot be read: {detail}")]
    PointerCorrupt {
        /// The object's key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

#[cfg(feature = "store")]
impl ArtifactError {
    /// Whether the object store said an object does not exist (a damaged or tampered store when a
    /// version's record names it).
    pub fn is_object_not_found(&self) -> bool {
        matches!(
            self,
            ArtifactError::ObjectStore {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}

/// A build recipe that cannot be used: a malformed `opus.yml` or no recipe at all.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecipeError {
    /// The file does not parse or breaks a rule; the message names the field (and line, when known).
    #[error("{}{message}", file.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Invalid {
        /// Line (1-based), when known.
        line: Option<usize>,
        /// Column (1-based), when known.
        column: Option<usize>,
        /// What is wrong, naming the field.
        message: String,
        /// The file it came from, once known.
        #[doc(hidden)]
        file: Option<String>,
    },
    /// The file exists but cannot be read.
    #[error("cannot read {file}: {detail}")]
    Unreadable {
        /// The file.
        file: String,
        /// The I/O error.
        detail: String,
    },
    /// Neither opus.yml nor a usable package.json.
    #[error("{0}")]
    NoRecipe(String),
}

impl RecipeError {
    /// Names the file an `Invalid` error came from.
    pub fn in_file(self, name: &str) -> RecipeError {
        match self {
            RecipeError::Invalid {
                line,
                column,
                message,
                ..
            } => RecipeError::Invalid {
                line,
                column,
                message,
                file: Some(name.to_owned()),
            },
            other => other,
        }
    }
}

/// Every error of the core, for the one mapping to gRPC status codes at the API edge.
#[cfg(feature = "store")]
#[derive(Debug, Error)]
pub enum CoreError {
    /// Bad input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Metadata store failures.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Artifact store failures.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// The innermost cause of an error: for a failed connection, what the OS said ("Connection
/// refused"), which is what a person needs rather than the transport's wrapping.
pub fn innermost_cause(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}
