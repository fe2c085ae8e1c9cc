//! The command-line definition: global connection flags and one subcommand per noun or verb.

// The doc comments here are clap's `--help` text, printed as written: `<placeholder>` and
// `[default: ...]` are that text's conventions, not HTML or intra-doc links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use opus_core::model::PRODUCTION;

mod domain;
mod examples;

pub use domain::DomainCommand;

/// Opus: build, store, deploy and roll back frontend sites on your own servers.
#[derive(Debug, Parser)]
#[command(name = "opus", version = crate::version::LONG, about, long_about = None)]
pub struct Cli {
    /// Connection and output flags, valid on every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// opusd's API address.
    #[arg(
        long,
        global = true,
        env = "OPUS_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// API token (required when opusd was started with one).
    #[arg(long, global = true, env = "OPUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format: tables for people, JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// JSON on stdout.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a project: a name and a source (a git URL or a local directory).
    #[command(after_help = examples::ADD)]
    Add(AddArgs),
    /// Remove a project and everything it made: versions, releases, sites, cache, mirror.
    ///
    /// Deletes the project's versions (files, archives and manifests, in every artifact store it
    /// used), its releases, environments and site options, secrets, webhook keys and hooks, its
    /// build cache (<data-dir>/cache/<project>) and git mirror (<data-dir>/git/<project>.git),
    /// and stops serving its sites. Build records and their logs stay readable (`opus logs
    /// <id>`, the events) until the build history is pruned, as a record of what ran. Adding the
    /// name again starts from nothing: no versions, releases numbered from 1.
    ///
    /// On a terminal it asks you to type the project name first; --yes skips that (scripts
    /// must pass it, as there is no terminal to ask).
    #[command(visible_alias = "delete")]
    Remove(RemoveArgs),
    /// List projects, optionally filtered (substring or glob).
    List(ListArgs),
    /// Show the server: version, data directory, store, uptime.
    Status,
    /// Manage a project's secrets (exposed to builds as environment variables, masked in logs).
    #[command(subcommand, after_help = examples::SECRET)]
    Secret(SecretCommand),
    /// Queue a build of a branch, tag or commit (default: the project's branch).
    #[command(after_help = examples::TRIGGER)]
    Trigger(TriggerArgs),
    /// List builds, newest first; with a build (`web#12`), its details and steps.
    Builds(BuildsArgs),
    /// Print a build's log; -f follows it until the build ends.
    #[command(after_help = examples::LOGS)]
    Logs(LogsArgs),
    /// Cancel a queued or running build.
    Cancel(CancelArgs),
    /// Install opusd into the current kube-context (or print its manifests with --dry-run).
    Install(InstallArgs),
    /// Remove opusd from the current kube-context; its data volume stays unless --purge.
    Uninstall(UninstallArgs),
    /// List a project's stored versions, or the files of one version.
    Artifacts(ArtifactsArgs),
    /// Download a version as a .tar.gz archive, or extract it into a folder.
    #[command(after_help = examples::DOWNLOAD)]
    Download(DownloadArgs),
    /// Store a folder built elsewhere as a version (uploads only content the server lacks).
    #[command(after_help = examples::PUBLISH)]
    Publish(PublishArgs),
    /// Re-hash stored versions against their manifests and report damage (exit 1 when any).
    Verify(VerifyArgs),
    /// Keep only a project's newest N versions (0: all); without N, show the setting.
    Keep(KeepArgs),
    /// Outgoing hooks (events posted to a URL, JSON or Slack) and the inbound webhook keys.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Print events (builds, deploys, projects...) from the event log; -f follows new ones.
    Events(EventsArgs),
    /// Deploy a version to an environment (production by default) and print its URL.
    #[command(after_help = examples::DEPLOY)]
    Deploy(DeployArgs),
    /// Point an environment back at its previous release (or --to a version), and pin it.
    #[command(after_help = examples::ROLLBACK)]
    Rollback(RollbackArgs),
    /// Show an environment's release history, newest first.
    Releases(ReleasesArgs),
    /// List, remove or unpin a project's environments.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = examples::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Print opus's version and the git commit it was built from (`status` shows opusd's).
    Version,
    /// Custom domains: serve an environment at your own host name, with automatic HTTPS.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// GitHub: the token commit statuses are sent with, and the statuses sent.
    #[command(subcommand)]
    Github(GithubCommand),
    /// Deploy a build that awaits approval (`approval: true` in opus.yml) where it waits.
    Approve(ApproveArgs),
    /// Reject a build that awaits approval: it fails, and its environments stay as they are.
    Reject(RejectArgs),
}

/// `opus approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The build: its project and number, such as `web#12`.
    pub build: String,
    /// Who approves, as recorded in the releases [default: the login name ($USER)].
    #[arg(long = "as", value_name = "NAME")]
    pub approver: Option<String>,
}

/// `opus reject`.
#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The build: its project and number, such as `web#12`.
    pub build: String,
    /// Why, in the build's reason and the event.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who rejects [default: the login name ($USER)].
    #[arg(long = "as", value_name = "NAME")]
    pub approver: Option<String>,
}

/// `opus github ...`.
#[derive(Debug, Subcommand)]
pub enum GithubCommand {
    /// Store the token opusd calls GitHub's API with (commit statuses); it is never shown again.
    Connect {
        /// A file holding the token (a personal access token with `repo:status`), so that it is
        /// in no shell history or process list.
        #[arg(long, value_name = "FILE")]
        token_file: std::path::PathBuf,
    },
    /// List the commit statuses sent to GitHub (or being retried), newest first.
    Deliveries {
        /// Show at most this many (0: 50).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// With no argument, list the repositories opusd's GitHub App installations can see; with
    /// OWNER/REPO names, add those as projects (built from their default branch, cloned with the
    /// installation's token). Repositories already added are skipped.
    Import {
        /// Repositories to add, as OWNER/REPO.
        #[arg(value_name = "OWNER/REPO")]
        repositories: Vec<String>,
    },
}

/// `opus completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `opus deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The project.
    pub project: String,
    /// The version to deploy (see `opus artifacts <project>`).
    #[arg(value_name = "VERSION")]
    pub version_name: String,
    /// The environment.
    #[arg(long, short = 'e', default_value = PRODUCTION)]
    pub env: String,
}

/// `opus rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The project.
    pub project: String,
    /// The environment.
    #[arg(long, short = 'e', default_value = PRODUCTION)]
    pub env: String,
    /// Go back to this version instead of the previous release.
    #[arg(long)]
    pub to: Option<String>,
}

/// `opus releases`.
#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// The project.
    pub project: String,
    /// Only this environment (all environments without it).
    #[arg(long, short = 'e')]
    pub env: Option<String>,
    /// Show at most this many (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
}

/// `opus env ...`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List a project's environments with their current version and URL.
    List {
        /// The project.
        project: String,
    },
    /// Remove an environment (a preview) and stop serving it; its history stays.
    Remove {
        /// The project.
        project: String,
        /// The environment.
        env: String,
    },
    /// Let automatic deploys move an environment pinned by a rollback again.
    Unpin {
        /// The project.
        project: String,
        /// The environment.
        #[arg(default_value = PRODUCTION)]
        env: String,
    },
    /// Lock an environment: every deploy to it (automatic or by hand) fails with the reason
    /// until `opus env unlock`; a rollback is still allowed.
    Lock {
        /// The project.
        project: String,
        /// The environment.
        #[arg(default_value = PRODUCTION)]
        env: String,
        /// Why (every refused deploy says it).
        #[arg(long)]
        reason: String,
    },
    /// Unlock an environment locked by `opus env lock`.
    Unlock {
        /// The project.
        project: String,
        /// The environment.
        #[arg(default_value = PRODUCTION)]
        env: String,
    },
    /// Keep a preview: opus.yml's `previews: { expire: ... }` never removes it (`--off` lets it
    /// expire again).
    Keep {
        /// The project.
        project: String,
        /// The preview environment.
        env: String,
        /// Let it expire again (the same as `opus env unkeep`).
        #[arg(long)]
        off: bool,
    },
    /// Let a preview kept by `opus env keep` expire again.
    Unkeep {
        /// The project.
        project: String,
        /// The preview environment.
        env: String,
    },
    /// Ask for a password (basic auth) before serving an environment, or every preview.
    Protect {
        /// The project.
        project: String,
        /// The environment (production when neither this nor --previews is given).
        #[arg(conflicts_with = "previews")]
        env: Option<String>,
        /// Every preview of the project, present and future (and its version URLs).
        #[arg(long)]
        previews: bool,
        /// A file holding the password (one line; opusd stores only its argon2 hash).
        #[arg(long, value_name = "FILE")]
        password_file: std::path::PathBuf,
    },
    /// Serve an environment (or the previews) without a password again.
    Unprotect {
        /// The project.
        project: String,
        /// The environment (production when neither this nor --previews is given).
        #[arg(conflicts_with = "previews")]
        env: Option<String>,
        /// The previews' password.
        #[arg(long)]
        previews: bool,
    },
}

/// `opus artifacts`.
#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// The project.
    pub project: String,
    /// A version: list its files instead of the project's versions.
    #[arg(id = "version_name", value_name = "VERSION")]
    pub version: Option<String>,
}

/// `opus download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The project.
    pub project: String,
    /// The version.
    #[arg(id = "version_name", value_name = "VERSION")]
    pub version: String,
    /// Where to write the archive (same as --out) [default: <project>-<version>.tar.gz].
    #[arg(value_name = "FILE", conflicts_with_all = ["out", "extract"])]
    pub file: Option<PathBuf>,
    /// Where to write the archive [default: <project>-<version>.tar.gz]. (`-o` is --output.)
    #[arg(long, value_name = "FILE", conflicts_with = "extract")]
    pub out: Option<PathBuf>,
    /// Extract into this folder (new or empty) instead; unsafe entries are refused.
    #[arg(long, value_name = "DIR")]
    pub extract: Option<PathBuf>,
}

/// `opus publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The project.
    pub project: String,
    /// The version to create (letters, digits, '.', '_', '+', '-'; immutable once stored).
    #[arg(id = "version_name", value_name = "VERSION")]
    pub version: String,
    /// The folder to publish (a build's output, e.g. dist/).
    pub dir: PathBuf,
    /// The store to publish into: a name opusd was started with (--extra-store NAME=URL).
    #[arg(long)]
    pub store: Option<String>,
}

/// `opus verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The project.
    pub project: String,
    /// Only this version [default: every version of the project].
    #[arg(id = "version_name", value_name = "VERSION")]
    pub version: Option<String>,
}

/// `opus trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The project.
    pub project: String,
    /// A branch, a tag, a commit, or `latest` (the project's default branch).
    #[arg(default_value = "latest")]
    pub git_ref: String,
    /// The artifact store for the version (the original `FILE-STORE` argument): `default` or a
    /// name opusd was started with by --extra-store.
    #[arg(value_name = "FILE-STORE")]
    pub store_positional: Option<String>,
    /// The version to produce, instead of the tag or `<branch>-<build>-<sha>`.
    #[arg(long)]
    pub version: Option<String>,
    /// The artifact store (same as FILE-STORE).
    #[arg(long, conflicts_with = "store_positional")]
    pub store: Option<String>,
    /// Follow the log; exit 0 when the build succeeds, 1 when it fails or is cancelled.
    #[arg(long, short = 'w')]
    pub wait: bool,
    /// With --wait: print only this pipeline job's lines.
    #[arg(long, requires = "wait")]
    pub job: Option<String>,
}

/// `opus builds`.
#[derive(Debug, Args)]
pub struct BuildsArgs {
    /// Only this project's builds; or one build (`web#12`): its details and its steps with
    /// their durations.
    #[arg(value_name = "PROJECT|BUILD")]
    pub project: Option<String>,
    /// Only builds in this state: queued, running, succeeded, failed, cancelled.
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// `opus logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The build: its project and number, such as `web#12`.
    pub build: String,
    /// Keep printing until the build ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only this pipeline job's lines (`--job unit`).
    #[arg(long)]
    pub job: Option<String>,
}

/// `opus cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The build: its project and number, such as `web#12`.
    pub build: String,
}

/// `opus install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Namespace for opusd and its build Jobs (created if missing).
    #[arg(long, short = 'n', default_value = opus_core::kubernetes::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The opusd image [default: ghcr.io/opus-ci/opusd:<this version>].
    #[arg(long)]
    pub image: Option<String>,
    /// Size of opusd's data volume (a Kubernetes quantity).
    #[arg(long, default_value = opus_core::kubernetes::DEFAULT_STORAGE)]
    pub storage: String,
    /// Artifact store URL (s3://, gs://, az://) [default: the data volume].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Print the manifests as YAML instead of applying them; needs no cluster.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for opusd to be ready; 0s applies without waiting.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Also run this many site replicas (`opusd sites`, a Deployment and the Service
    /// opusd-sites) serving the sites from --store (which must be s3://, gs:// or az://).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub site_replicas: u32,
}

/// `opus uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Namespace opusd was installed into.
    #[arg(long, short = 'n', default_value = opus_core::kubernetes::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Also delete the data volume (projects, builds, versions) and the namespace.
    #[arg(long)]
    pub purge: bool,
}

/// `opus events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this project's events.
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Keep printing new events as they happen.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start at this sequence number [default: 1, the whole log].
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Start with the newest N events (of the project, with --project) instead.
    #[arg(long, value_name = "N", conflicts_with = "from")]
    pub tail: Option<u32>,
}

/// The body format of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HookFormatArg {
    /// The event as JSON.
    Json,
    /// A Slack incoming-webhook message.
    Slack,
}

/// `opus hook ...`.
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Add a hook: every event of a project (or of all projects) is posted to URL.
    Add {
        /// The project and the URL deliveries are posted to (only the URL with --all).
        #[arg(required = true, num_args = 1..=2, value_names = ["PROJECT", "URL"])]
        target: Vec<String>,
        /// Every project's events.
        #[arg(long)]
        all: bool,
        /// Only these event types (comma-separated; `build.*` matches a prefix).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Sign each body: X-Opus-Signature-256 = sha256=<hex HMAC-SHA256 of the body>.
        #[arg(long)]
        secret: Option<String>,
        /// Body format.
        #[arg(long, value_enum, default_value_t = HookFormatArg::Json)]
        format: HookFormatArg,
    },
    /// List hooks (those that get a project's events, with a project).
    List {
        /// Only hooks that get this project's events.
        project: Option<String>,
    },
    /// Remove a hook.
    Remove {
        /// The hook id (see `opus hook list`).
        id: String,
    },
    /// Send a `ping` to a hook now and show the answer.
    Test {
        /// The hook id.
        id: String,
    },
    /// A hook's recent deliveries, newest first.
    Deliveries {
        /// The hook id.
        id: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The payload URL and secret to paste into GitHub's webhook settings (content type JSON).
    Github {
        /// The project.
        project: String,
        /// Replace the secret with a new one.
        #[arg(long)]
        rotate: bool,
    },
    /// The URL and bearer token of the generic trigger webhook, for other CI systems and scripts.
    Trigger {
        /// The project.
        project: String,
        /// Replace the token with a new one.
        #[arg(long)]
        rotate: bool,
    },
    /// The URL and secret token to paste into GitLab's webhook settings (push and merge request
    /// events); the same secret as `opus hook github`.
    Gitlab {
        /// The project.
        project: String,
        /// Replace the secret with a new one (every forge's webhook then needs the new one).
        #[arg(long)]
        rotate: bool,
    },
    /// The URL and secret to paste into Gitea's or Forgejo's webhook settings (push and pull
    /// request events); the same secret as `opus hook github`.
    Gitea {
        /// The project.
        project: String,
        /// Replace the secret with a new one (every forge's webhook then needs the new one).
        #[arg(long)]
        rotate: bool,
    },
}

/// `opus add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Project name: lowercase letters, digits and '-' (a DNS label).
    pub name: String,
    /// A git URL (https, ssh, git, file, user@host:path) or a local directory.
    pub source: String,
    /// The default branch (what `latest` builds) [default: the branch a local git repository has
    /// checked out, else main]
    #[arg(long, short = 'b')]
    pub branch: Option<String>,
}

/// `opus remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The project to remove.
    pub name: String,
    /// Remove without asking (required when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `opus keep`.
#[derive(Debug, Args)]
pub struct KeepArgs {
    /// The project.
    pub project: String,
    /// How many versions to keep, newest first; 0 keeps all. Deployed versions and the versions a
    /// rollback would go back to are never deleted.
    #[arg(value_name = "N")]
    pub count: Option<u32>,
}

/// `opus list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show only projects whose name contains this text, or matches this glob (`web-*`).
    pub filter: Option<String>,
}

/// `opus secret ...`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; the value comes from --value, a prompt on a terminal, or standard input.
    Set {
        /// The project.
        project: String,
        /// The secret's name (an environment variable name).
        name: String,
        /// The value; without it, a terminal is asked twice without echo, and otherwise
        /// standard input is read (one trailing newline is dropped).
        #[arg(long)]
        value: Option<String>,
    },
    /// Remove a secret.
    Unset {
        /// The project.
        project: String,
        /// The secret's name.
        name: String,
    },
    /// List the names of a project's secrets (values never come back).
    List {
        /// The project.
        project: String,
    },
}

/// The original single-dash forms and the commands they mean.
const LEGACY: &[(&str, &str)] = &[
    ("-add", "add"),
    ("-delete", "remove"),
    ("-remove", "remove"),
    ("-list", "list"),
    ("-trigger", "trigger"),
    ("-deploy", "deploy"),
    ("-rollback", "rollback"),
    ("-install", "install"),
    ("-status", "status"),
];

/// Global flags that take a value, so the value is not mistaken for the command.
const VALUE_FLAGS: &[&str] = &["--server", "--token", "--output", "-o"];

/// Rewrites `opus -add web .` to `opus add web .` (and the other original forms): the first word
/// that is not a global flag or its value is the command.
pub fn translate_legacy_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else { break };
        if VALUE_FLAGS.contains(&arg) {
            i += 2;
            continue;
        }
        if arg.starts_with("--") && arg.contains('=') {
            i += 1;
            continue;
        }
        if let Some((_, cmd)) = LEGACY.iter().find(|(old, _)| *old == arg) {
            args[i] = OsString::from(cmd);
        }
        break;
    }
    args
}

/// Where `opus add` should point a local source: a relative path is made absolute here, because
/// opusd resolves paths from its own working directory, not the caller's.
pub fn absolute_source(source: &str) -> String {
    let looks_like_url = source.contains("://") || (source.contains('@') && source.contains(':'));
    if looks_like_url || source.is_empty() {
        return source.to_owned();
    }
    let path = PathBuf::from(source);
    if let Ok(abs) = std::fs::canonicalize(&path) {
        return abs.display().to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path).display().to_string(),
        _ => source.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    fn t(args: &[&str]) -> Vec<String> {
        translate_legacy_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn legacy_forms_translate() {
        assert_eq!(
            t(&["opus", "-add", "web", "."]),
            ["opus", "add", "web", "."]
        );
        assert_eq!(
            t(&["opus", "--server", "http://x", "-list"]),
            ["opus", "--server", "http://x", "list"]
        );
        assert_eq!(
            t(&["opus", "-o", "json", "-delete", "web"]),
            ["opus", "-o", "json", "remove", "web"]
        );
        assert_eq!(
            t(&["opus", "add", "-list", "."]),
            ["opus", "add", "-list", "."]
        );
    }
}
