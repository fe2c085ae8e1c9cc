//! The one mapping from core errors to gRPC status codes.

use opus_core::CoreError;
use opus_core::error::{ModelError, StoreError};
use tonic::Status;

/// Turns any core error into the status a client sees, with a message a person can act on.
pub fn status(e: impl Into<CoreError>) -> Status {
    let e = e.into();
    let msg = e.to_string();
    match e {
        CoreError::Model(ModelError::InvalidName { .. })
        | CoreError::Model(ModelError::InvalidVersion { .. })
        | CoreError::Model(ModelError::InvalidSource { .. })
        | CoreError::Model(ModelError::Invalid(_)) => Status::invalid_argument(msg),
        CoreError::Store(StoreError::ProjectExists(_)) => Status::already_exists(msg),
        CoreError::Store(StoreError::ProjectNotFound(_))
        | CoreError::Store(StoreError::SecretNotFound { .. })
        | CoreError::Store(StoreError::BuildNotFound(_))
        | CoreError::Store(StoreError::HookNotFound(_)) => Status::not_found(msg),
        CoreError::Store(StoreError::Corrupt { .. }) => Status::data_loss(msg),
        CoreError::Store(StoreError::Sled(_)) => {
            tracing::error!(error = %msg, "metadata store failure");
            Status::internal(msg)
        }
    }
}
