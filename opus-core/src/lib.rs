//! The core of Opus: everything both the daemon and the CLI need to agree on.
//!
//! - [`proto`]: the generated `opus.v1` gRPC API (client and server stubs).
//! - [`model`]: domain types with their validation rules ([`model::ProjectName`], [`model::Source`],
//!   [`model::Project`], [`model::Build`]...). Prost types never leave [`wire`].
//! - [`wire`]: the one place that converts between domain types and prost messages.
//! - [`hook`]: outgoing hooks and their delivery records.
//! - [`forge`]: the pull request a build was triggered for ([`forge::PullRequest`]).
//! - [`store`]: the sled metadata store ([`store::MetaStore`]), where every multi-key change and the
//!   event describing it are one transaction.
//! - [`kubernetes`]: what `opus install` applies to a cluster ([`kubernetes::InstallObjects`],
//!   [`kubernetes::install`]), the cluster connection and what a pod's status says, shared with
//!   opusd's kubernetes executor.
//! - [`artifact`]: versions in an object store ([`artifact::ArtifactStore`]): files, tar.gz
//!   archive and manifest per version, dedup by sha256, publish, verify, retention.
//! - [`archive`]: tar.gz writing and reading, and the path rules that keep files inside a folder.
//! - [`domain`]: custom domains ([`domain::DomainName`], [`domain::DomainRecord`]).
//! - [`dns`]: the DNS changes opusd makes at its DNS provider ([`dns::DnsChange`]).
//! - [`error`]: one error enum per area, gathered in [`error::CoreError`].
//!
//! Cargo features, so that each binary compiles what it uses: `store` (the metadata store, the
//! artifact store and its object_store backends: opusd) and `kubernetes` (the `kubernetes` module:
//! `opus install` and opusd's kubernetes executor). Both are on by default; the CLI takes only
//! `kubernetes`. Without `store`, [`artifact`] holds only a version's manifest types and digests.

pub mod age;
pub mod archive;
pub mod artifact;
pub mod dns;
pub mod domain;
pub mod error;
pub mod forge;
pub mod hook;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod model;
pub mod proto;
pub mod recipe;
pub mod site_rules;
#[cfg(feature = "store")]
pub mod store;
pub mod wire;

#[cfg(feature = "store")]
pub use error::CoreError;
