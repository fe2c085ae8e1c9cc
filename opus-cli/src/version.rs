//! Which build this `opus` is (the crate version and the git commit, set by build.rs through
//! opus-build-info), and whether the opusd it talks to is the same build: `opus status` warns
//! when it is not, since a CLI and a daemon of different builds may disagree on the API.

/// The crate version, `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit, 12 hex digits, or `unknown` for a build made without git.
pub const COMMIT: &str = env!("OPUS_COMMIT");

/// What `opus --version` and `opus version` print after the name: `0.1.0 (commit 5049aab1c2d3)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OPUS_COMMIT"),
    ")"
);

/// The commit of a build made without git (opus-build-info's fallback).
const UNKNOWN_COMMIT: &str = "unknown";

/// One build of opus or opusd, as it reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build<'a> {
    /// The crate version.
    pub version: &'a str,
    /// The git commit; empty (an opusd older than the field) or `unknown` when not known.
    pub commit: &'a str,
}

impl Build<'_> {
    /// This `opus`.
    pub const THIS: Build<'static> = Build {
        version: VERSION,
        commit: COMMIT,
    };

    /// The commit, unless the build does not know it.
    fn known_commit(&self) -> Option<&str> {
        Some(self.commit).filter(|c| !c.is_empty() && *c != UNKNOWN_COMMIT)
    }

    /// `0.1.0 (commit 5049aab1c2d3)`, or just the version when the commit is not known.
    fn describe(&self) -> String {
        match self.known_commit() {
            Some(commit) => format!("{} (commit {commit})", self.version),
            None => self.version.to_owned(),
        }
    }
}

/// The one-line warning `opus status` prints when `server` is another build than `cli`: the
/// versions differ, or both know their commits and those differ. A commit one side does not know
/// is no difference (it cannot be told).
pub fn mismatch_warning(cli: Build<'_>, server: Build<'_>) -> Option<String> {
    let commits_differ = match (cli.known_commit(), server.known_commit()) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    (cli.version != server.version || commits_differ).then(|| {
        format!(
            "warning: this opus is {} but opusd is {}; use the opus built with this opusd",
            cli.describe(),
            server.describe()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build<'a>(version: &'a str, commit: &'a str) -> Build<'a> {
        Build { version, commit }
    }

    #[test]
    fn the_same_build_gives_no_warning() {
        let b = build("0.1.0", "5049aab1c2d3");
        assert_eq!(mismatch_warning(b, b), None);
        assert_eq!(mismatch_warning(Build::THIS, Build::THIS), None);
    }

    #[test]
    fn another_commit_of_the_same_version_is_warned_of() {
        let warning = mismatch_warning(
            build("0.1.0", "5049aab1c2d3"),
            build("0.1.0", "9d11484e0f00"),
        );
        assert_eq!(
            warning.as_deref(),
            Some(
                "warning: this opus is 0.1.0 (commit 5049aab1c2d3) but opusd is 0.1.0 \
                 (commit 9d11484e0f00); use the opus built with this opusd"
            )
        );
    }

    #[test]
    fn another_version_is_warned_of_even_without_commits() {
        let warning = mismatch_warning(build("0.1.0", "unknown"), build("0.2.0", ""));
        assert_eq!(
            warning.as_deref(),
            Some(
                "warning: this opus is 0.1.0 but opusd is 0.2.0; use the opus built with this opusd"
            )
        );
    }

    #[test]
    fn a_commit_one_side_does_not_know_is_no_difference() {
        let cli = build("0.1.0", "5049aab1c2d3");
        assert_eq!(mismatch_warning(cli, build("0.1.0", "")), None);
        assert_eq!(mismatch_warning(cli, build("0.1.0", "unknown")), None);
        assert_eq!(mismatch_warning(build("0.1.0", "unknown"), cli), None);
    }

    #[test]
    fn the_long_version_names_the_commit() {
        assert_eq!(LONG, format!("{VERSION} (commit {COMMIT})"));
        assert!(!COMMIT.is_empty());
    }
}
