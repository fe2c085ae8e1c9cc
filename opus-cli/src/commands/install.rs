//! `opus install` and `opus uninstall`: opusd into (and out of) the current kube-context. These
//! run without a daemon; the manifests and the apply are `opus_core::kubernetes`.

use std::time::{Duration, Instant};

use opus_core::kubernetes::{self, Cluster, InstallOptions, Progress, UninstallOptions, Wait};
use serde::Serialize;

use crate::cli::{GlobalArgs, InstallArgs, OutputFormat, UninstallArgs};
use crate::error::CliError;
use crate::output;

fn kube_error(e: kubernetes::KubeError) -> CliError {
    CliError::Other(e.to_string())
}

/// Progress on stderr: every step, and while waiting a line when the state changes or every 10s.
struct Reporter {
    last_wait: Option<(String, Instant)>,
}

impl Reporter {
    fn new() -> Reporter {
        Reporter { last_wait: None }
    }

    fn report(&mut self, progress: Progress) {
        if let Progress::Waiting { detail, .. } = &progress {
            let quiet = self
                .last_wait
                .as_ref()
                .is_some_and(|(last, at)| last == detail && at.elapsed() < Duration::from_secs(10));
            if quiet {
                return;
            }
            self.last_wait = Some((detail.clone(), Instant::now()));
        }
        eprintln!("{progress}");
    }
}

#[derive(Serialize)]
struct InstalledJson {
    namespace: String,
    ready: bool,
    token: String,
    token_created: bool,
    port_forward: String,
    server: String,
}

/// `opus install`.
pub async fn install(global: &GlobalArgs, args: InstallArgs) -> Result<(), CliError> {
    let options = InstallOptions {
        namespace: args.namespace,
        image: args.image.unwrap_or_else(kubernetes::default_image),
        storage: args.storage,
        store: args.store,
        site_replicas: args.site_replicas,
    };
    let local_store = options
        .store
        .as_deref()
        .is_none_or(|s| s.starts_with("file://"));
    let store_note = || {
        if local_store {
            eprintln!(
                "note: builds run as Kubernetes Jobs whose pods upload each version to the artifact store \
                 themselves, so the store must be one both opusd and build pods reach; with versions on \
                 opusd's volume, builds fail at the upload. Pass --store s3://bucket/prefix (or gs://, az://)."
            );
        }
    };
    if args.dry_run {
        store_note();
        let yaml = kubernetes::render_yaml(&options).map_err(kube_error)?;
        let mut out = std::io::stdout().lock();
        std::io::Write::write_all(&mut out, yaml.as_bytes())?;
        return Ok(());
    }
    options.validate().map_err(kube_error)?;
    let cluster = Cluster::connect().await.map_err(kube_error)?;
    let wait = Wait {
        timeout: args.timeout,
        ..Wait::default()
    };
    let mut reporter = Reporter::new();
    let installed = kubernetes::install(&cluster, &options, wait, &mut |p| reporter.report(p))
        .await
        .map_err(kube_error)?;
    store_note();
    let api = format!("http://127.0.0.1:{}", kubernetes::API_PORT);
    match global.output {
        OutputFormat::Json => output::print_json(&InstalledJson {
            namespace: installed.namespace.clone(),
            ready: installed.ready,
            token: installed.token.clone(),
            token_created: installed.token_created,
            port_forward: installed.port_forward_command(),
            server: api,
        }),
        OutputFormat::Table => {
            let state = if installed.ready {
                "is ready"
            } else {
                "is installed (not waited for)"
            };
            let token = if installed.token_created {
                "a new API token"
            } else {
                "the API token of the earlier install"
            };
            output::print_line(&format!(
                "opusd {state} in namespace {:?}, with {token}.",
                installed.namespace
            ))?;
            output::print_line("Reach it from this machine with")?;
            output::print_line(&format!("  {}", installed.port_forward_command()))?;
            output::print_line("and in another shell")?;
            output::print_line(&format!(
                "  export OPUS_SERVER={api} OPUS_TOKEN={}",
                installed.token
            ))?;
            output::print_line("  opus status")
        }
    }
}

#[derive(Serialize, Default)]
struct UninstalledJson {
    namespace: String,
    deleted: Vec<String>,
    absent: Vec<String>,
    kept: Vec<String>,
}

/// `opus uninstall`.
pub async fn uninstall(global: &GlobalArgs, args: UninstallArgs) -> Result<(), CliError> {
    let options = UninstallOptions {
        namespace: args.namespace,
        purge: args.purge,
    };
    kubernetes::validate_namespace(&options.namespace).map_err(kube_error)?;
    let cluster = Cluster::connect().await.map_err(kube_error)?;
    let mut result = UninstalledJson {
        namespace: options.namespace.clone(),
        ..UninstalledJson::default()
    };
    let mut reporter = Reporter::new();
    kubernetes::uninstall(&cluster, &options, &mut |p| {
        match &p {
            Progress::Deleted { kind, name } => result.deleted.push(format!("{kind}/{name}")),
            Progress::Absent { kind, name } => result.absent.push(format!("{kind}/{name}")),
            Progress::Kept { kind, name } => result.kept.push(format!("{kind}/{name}")),
            _ => {}
        }
        reporter.report(p);
    })
    .await
    .map_err(kube_error)?;
    match global.output {
        OutputFormat::Json => output::print_json(&result),
        OutputFormat::Table => {
            let ns = &result.namespace;
            if result.deleted.is_empty() {
                output::print_line(&format!("nothing of opusd was left in namespace {ns:?}"))
            } else if options.purge {
                output::print_line(&format!(
                    "removed opusd, its data volume and namespace {ns:?}"
                ))
            } else {
                output::print_line(&format!(
                    "removed opusd from namespace {ns:?}; its data volume {} stays for the next `opus install` \
                     (`opus uninstall --purge` deletes it)",
                    kubernetes::DATA_PVC
                ))
            }
        }
    }
}
