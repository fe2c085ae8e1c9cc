//! A URL per version: every stored version is reachable at its own immutable host,
//! `<label>--v--<project>.<domain>`, whether or not an environment serves it, so a reviewer (or a
//! pipeline's check before promotion) opens exactly what was built.
//!
//! The label ([`version_label`]) is the version name when that is already a plain host label
//! (lowercase letters, digits, single `-`, at most [`PLAIN_MAX`] characters: `42`,
//! `42-3f9a1c2`); any other name (`1.2.0`, `Release_7`, long ones) becomes a readable part and
//! `-x` with 10 hex digits of its sha256, so names differing only in case or punctuation keep
//! different hosts.
//!
//! Why these hosts never collide with an environment's (`<env>--<project>` or `<project>`):
//! project and environment names may not hold `--` (refused since it separates them in hosts),
//! so an environment host's first label holds at most one `--`; a version host's holds two
//! (`--v--`), and its label part holds none. Only names from a store made before that rule
//! (`a--v` as an environment, `v--web` as a project) can reach a version host; the site table
//! is looked up first, so such an environment keeps its host and the version host is shadowed.
//!
//! The site server does not read the metadata store: versions are loaded on request through a
//! [`VersionSource`] the deployer provides, which keeps a bounded number loaded.

use std::sync::Arc;

use futures::future::BoxFuture;
use opus_core::model::{ProjectName, VersionName};
use sha2::Digest;

use super::version::SiteVersion;

/// What separates a version's label from its project in its host.
pub const VERSION_HOST_SEPARATOR: &str = "--v--";

/// Longest version name used as its own label.
pub const PLAIN_MAX: usize = 40;

/// Loads a stored version for its host: implemented by the deployer, which reads the store.
pub trait VersionSource: Send + Sync {
    /// The version of `project` whose [`version_label`] is `label`, ready to serve; `None` when
    /// the project has no such version (or it cannot be loaded, which the source logs).
    fn load<'a>(
        &'a self,
        project: &'a ProjectName,
        label: &'a str,
    ) -> BoxFuture<'a, Option<Arc<SiteVersion>>>;
}

/// The host label of `version` (see the module documentation).
pub fn version_label(version: &VersionName) -> String {
    let name = version.as_str();
    let plain = name.len() <= PLAIN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.contains("--")
        && !name.ends_with('-');
    if plain {
        return name.to_owned();
    }
    let mut readable = String::with_capacity(32);
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            readable.push(c);
        } else if !readable.ends_with('-') {
            readable.push('-');
        }
        if readable.len() >= 28 {
            break;
        }
    }
    let readable = readable.trim_matches('-');
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    if readable.is_empty() {
        format!("x{}", &digest[..10])
    } else {
        format!("{readable}-x{}", &digest[..10])
    }
}

/// The first label of the host that serves `version` of `project`.
pub fn version_host_label(project: &ProjectName, version: &VersionName) -> String {
    format!(
        "{}{VERSION_HOST_SEPARATOR}{project}",
        version_label(version)
    )
}

/// Reads a version host's first label (`42--v--web`) into the project and the version label;
/// `None` for anything else.
pub fn parse_version_host_label(label: &str) -> Option<(ProjectName, &str)> {
    let (version, project) = label.split_once(VERSION_HOST_SEPARATOR)?;
    if version.is_empty() || version.contains("--") {
        return None;
    }
    Some((ProjectName::new(project).ok()?, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str) -> VersionName {
        VersionName::new(name).expect("version")
    }

    #[test]
    fn plain_names_are_their_own_label_and_others_get_a_digest() {
        assert_eq!(version_label(&v("42")), "42");
        assert_eq!(version_label(&v("42-3f9a1c2")), "42-3f9a1c2");
        let dotted = version_label(&v("1.2.0"));
        assert!(
            dotted.starts_with("1-2-0-x") && dotted.len() == 17,
            "{dotted}"
        );
        // Case and punctuation keep distinct labels.
        let labels: std::collections::HashSet<String> =
            ["Rel", "rel", "r.el", "r-el", "r_el", "r+el"]
                .iter()
                .map(|n| version_label(&v(n)))
                .collect();
        assert_eq!(labels.len(), 6, "{labels:?}");
        let long = "a".repeat(128);
        assert!(version_label(&v(&long)).len() <= 40);
        for name in ["a--b", "A", "1-", "x.y_z+w", &long] {
            let label = version_label(&v(name));
            assert!(
                !label.contains("--")
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}: {label}"
            );
        }
    }

    #[test]
    fn version_hosts_never_collide_with_environment_hosts_of_current_names() {
        use opus_core::model::EnvName;
        let projects = ["web", "v", "a-v", "v-web", "x1"];
        let envs = ["production", "staging", "v", "a", "42", "feature-x", "v-1"];
        let versions = ["42", "a", "v", "1.0", "Feature_X", "v-web", "42-abc"];
        let mut env_hosts = std::collections::HashSet::new();
        for p in projects {
            let p = ProjectName::for_new(p).expect("project");
            env_hosts.insert(p.to_string());
            for e in envs {
                let e = EnvName::for_new(e).expect("env");
                env_hosts.insert(format!("{e}--{p}"));
            }
        }
        for p in projects {
            let p = ProjectName::for_new(p).expect("project");
            for ver in versions {
                let label = version_host_label(&p, &v(ver));
                assert!(
                    !env_hosts.contains(&label),
                    "{label} is an environment's host"
                );
                let (project, vl) = parse_version_host_label(&label).expect("parses back");
                assert_eq!((project, vl), (p.clone(), version_label(&v(ver)).as_str()));
            }
        }
        // Environment hosts are not read as version hosts.
        for host in &env_hosts {
            assert!(parse_version_host_label(host).is_none(), "{host}");
        }
    }

    #[test]
    fn only_legacy_names_reach_a_version_host() {
        // An environment `a--v` (legal before `--` was refused) of project `web`:
        assert_eq!(
            format!("{}--{}", "a--v", "web"),
            version_host_label(&ProjectName::new("web").expect("p"), &v("a"))
        );
        // The label part never holds `--`, so a legacy project `v--web` is read as `web`'s.
        assert_eq!(
            parse_version_host_label("a--v--v--web").map(|(p, l)| (p.to_string(), l.to_owned())),
            Some(("v--web".into(), "a".into()))
        );
        assert!(parse_version_host_label("a--b--v--web").is_none());
        assert!(parse_version_host_label("--v--web").is_none());
        assert!(parse_version_host_label("42--v--").is_none());
    }
}
