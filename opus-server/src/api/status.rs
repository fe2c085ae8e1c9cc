//! The one mapping from core errors to gRPC status codes.

use opus_core::CoreError;
use opus_core::error::{ArchiveError, ArtifactError, ModelError, StoreError};
use tonic::Status;

/// Turns any core error into the status a client sees, with a message a person can act on.
pub fn status(e: impl Into<CoreError>) -> Status {
    let e = match e.into() {
        // Errors that the artifact store passes through map like their own kind.
        CoreError::Artifact(ArtifactError::Meta(e)) => CoreError::Store(e),
        CoreError::Artifact(ArtifactError::Model(e)) => CoreError::Model(e),
        e => e,
    };
    let msg = e.to_string();
    match e {
        CoreError::Artifact(a) => artifact_status(a, msg),
        CoreError::Model(ModelError::InvalidName { .. })
        | CoreError::Model(ModelError::InvalidVersion { .. })
        | CoreError::Model(ModelError::InvalidSource { .. })
        | CoreError::Model(ModelError::Invalid(_)) => Status::invalid_argument(msg),
        CoreError::Store(StoreError::ProjectExists(_)) => Status::already_exists(msg),
        CoreError::Store(StoreError::ProjectNotFound(_))
        | CoreError::Store(StoreError::SecretNotFound { .. })
        | CoreError::Store(StoreError::BuildNotFound(_))
        | CoreError::Store(StoreError::BuildNumberNotFound { .. })
        | CoreError::Store(StoreError::VersionNotFound { .. })
        | CoreError::Store(StoreError::EnvironmentNotFound { .. }) => Status::not_found(msg),
        CoreError::Store(StoreError::NoEarlierRelease { .. })
        | CoreError::Store(StoreError::EnvironmentPinned { .. }) => {
            Status::failed_precondition(msg)
        }
        CoreError::Store(StoreError::HookNotFound(_)) => Status::not_found(msg),
        CoreError::Store(StoreError::Corrupt { .. }) => Status::data_loss(msg),
        CoreError::Store(StoreError::Sled(_)) => {
            tracing::error!(error = %msg, "metadata store failure");
            Status::internal(msg)
        }
    }
}

fn artifact_status(e: ArtifactError, msg: String) -> Status {
    use ArtifactError as A;
    match e {
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
        | A::Model(_)
        | A::InvalidStoreUrl { .. }
        | A::UnknownStore { .. }
        | A::InvalidManifest(_)
        | A::ContentMismatch(_)
        | A::UploadInvalid(_) => Status::invalid_argument(msg),
        A::VersionExists { .. } | A::VersionBusy { .. } => Status::already_exists(msg),
        A::VersionNotFound { .. } | A::UploadNotFound(_) => Status::not_found(msg),
        A::ManifestCorrupt { .. } => Status::data_loss(msg),
        A::ObjectStore { .. } if e.is_object_not_found() => Status::not_found(msg),
        A::ObjectStore { .. } => {
            tracing::error!(error = %msg, "object store failure");
            Status::internal(msg)
        }
        A::Meta(_) => Status::internal(msg),
    }
}
