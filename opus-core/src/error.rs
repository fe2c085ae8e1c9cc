//! Errors of the core areas. Each area has its own enum; [`CoreError`] gathers them so that the
//! server maps them to gRPC status codes in exactly one place.

use thiserror::Error;

/// Input that breaks a naming or validation rule of DESIGN.md.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// A project or environment name that is not a DNS label.
    #[error(
        "invalid {kind} name {name:?}: {why} (use lowercase letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit)"
    )]
    InvalidName {
        /// `project` or `environment`.
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
    /// Any other invalid argument (a secret name, a filter).
    #[error("{0}")]
    Invalid(String),
}

/// Failures of the metadata store.
#[derive(Debug, Error)]
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
    /// No build with that id.
    #[error("no build #{0} (see `opus builds`)")]
    BuildNotFound(u64),
    /// No outgoing hook with that id.
    #[error("no hook {0} (see `opus hook list`)")]
    HookNotFound(u64),
    /// A stored record that does not decode: the data directory is damaged or from a newer opusd.
    #[error("metadata record {key} does not decode: {detail}")]
    Corrupt {
        /// Which record.
        key: String,
        /// The decoder's complaint.
        detail: String,
    },
    /// sled itself failed (I/O, a full disk, a damaged file).
    #[error("metadata store failed: {0}")]
    Sled(#[from] sled::Error),
}

/// A build recipe that cannot be used: a malformed `opus.yml` or no recipe at all.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ManifestError {
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

impl ManifestError {
    /// Names the file an `Invalid` error came from.
    pub fn in_file(self, name: &str) -> ManifestError {
        match self {
            ManifestError::Invalid {
                line,
                column,
                message,
                ..
            } => ManifestError::Invalid {
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
#[derive(Debug, Error)]
pub enum CoreError {
    /// Bad input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Metadata store failures.
    #[error(transparent)]
    Store(#[from] StoreError),
}
