//! The one mapping from core errors to gRPC status codes.

use opus_core::CoreError;
use opus_core::error::{ArchiveError, ArtifactError, ModelError, StoreError};
use tonic::Status;

/// Turns any core error into the status a client sees, with a message a person can act on.
pub fn status(e: impl Into<CoreError>) -> Status {
    let e = e.into();
    if crate::health::is_disk_full_error(&e) {
        let msg = e.to_string();
        tracing::error!(error = %msg, "disk full");
        let msg = match &e {
            CoreError::Store(StoreError::DiskFull { .. })
            | CoreError::Artifact(ArtifactError::Meta(StoreError::DiskFull { .. })) => msg,
            _ => format!("the disk is full: free space and retry ({msg})"),
        };
        return Status::resource_exhausted(msg);
    }
    match e {
        CoreError::Model(e) => model_status(e),
        CoreError::Store(e) => store_status(e),
        CoreError::Artifact(e) => artifact_status(e),
    }
}

/// A model error is input that breaks a rule, except a request the project cannot take (a ref
/// of a plain folder).
fn model_status(e: ModelError) -> Status {
    match e {
        ModelError::NotARepository { .. } => Status::failed_precondition(e.to_string()),
        e => Status::invalid_argument(e.to_string()),
    }
}

fn store_status(e: StoreError) -> Status {
    let msg = e.to_string();
    match e {
        StoreError::ProjectExists(_) | StoreError::DomainTaken { .. } => {
            Status::already_exists(msg)
        }
        StoreError::ProjectNotFound(_)
        | StoreError::SecretNotFound { .. }
        | StoreError::BuildNotFound(_)
        | StoreError::BuildNumberNotFound { .. }
        | StoreError::VersionNotFound { .. }
        | StoreError::EnvironmentNotFound { .. }
        | StoreError::HookNotFound(_)
        | StoreError::DomainNotFound(_) => Status::not_found(msg),
        StoreError::NoEarlierRelease { .. }
        | StoreError::EnvironmentPinned { .. }
        | StoreError::EnvironmentLocked { .. }
        | StoreError::NotAwaitingApproval { .. } => Status::failed_precondition(msg),
        StoreError::Corrupt { .. } => Status::data_loss(msg),
        StoreError::DiskFull { .. } => Status::resource_exhausted(msg),
        StoreError::Reopening(_) => Status::unavailable(msg),
        StoreError::Sled(_) => {
            tracing::error!(error = %msg, "metadata store failure");
            Status::internal(msg)
        }
    }
}

fn artifact_status(e: ArtifactError) -> Status {
    use ArtifactError as A;
    let msg = e.to_string();
    match e {
        // Errors the artifact store passes through map like their own kind.
        A::Meta(e) => store_status(e),
        A::Model(e) => model_status(e),
        A::OutputMissing(_)
        | A::OutputNotFolder(_)
        | A::VersionProtected { .. }
        | A::ContentMissing { .. } => Status::failed_precondition(msg),
        A::Archive(ArchiveError::DestinationNotEmpty(_)) => Status::failed_precondition(msg),
        A::Archive(ArchiveError::Io { .. }) | A::Io { .. } | A::Task(_) => {
            tracing::error!(error = %msg, "artifact store failure");
            Status::internal(msg)
        }
        A::Archive(_)
        | A::BadFileName { .. }
        | A::InvalidStoreUrl { .. }
        | A::UnknownStore { .. }
        | A::InvalidManifest(_)
        | A::ContentMismatch(_)
        | A::UploadInvalid(_)
        | A::SiteRules(_) => Status::invalid_argument(msg),
        A::VersionExists { .. } | A::VersionBusy { .. } => Status::already_exists(msg),
        A::VersionNotFound { .. } | A::UploadNotFound(_) => Status::not_found(msg),
        A::ManifestCorrupt { .. } | A::PointerCorrupt { .. } => Status::data_loss(msg),
        A::ObjectStore { .. } if e.is_object_not_found() => Status::not_found(msg),
        A::ObjectStore { .. } => {
            tracing::error!(error = %msg, "object store failure");
            Status::internal(msg)
        }
    }
}
