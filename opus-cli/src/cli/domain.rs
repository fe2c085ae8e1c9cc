//! `opus domain ...`: custom domains (their own block, so the main definition stays as it was).

use clap::Subcommand;
use opus_core::model::PRODUCTION;

/// `opus domain ...`.
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Serve an environment (production by default) at a host name of your own; point the
    /// name's DNS at opusd's site listener. With HTTPS on, opusd orders its certificate.
    Add {
        /// The project.
        project: String,
        /// The host name (www.example.com): not an IP address, not localhost, and not under
        /// opusd's own sites domain.
        domain: String,
        /// The environment it serves.
        #[arg(long, default_value = PRODUCTION)]
        env: String,
    },
    /// List custom domains (all, or one project's), with their certificates.
    List {
        /// Only this project's domains.
        project: Option<String>,
    },
    /// Stop serving a custom domain.
    Remove {
        /// The host name.
        domain: String,
    },
}
