//! Conversions between domain types and `opus.v1` messages: the one place prost types meet the
//! model, so the store and the scheduler never see a prost type.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "store")]
use crate::artifact::VerifyReport;
use crate::artifact::{ManifestFile, VersionManifest};
use crate::model::{Build, BuildState, Event, Project, Source, VersionRecord};
use crate::proto;

/// A `SystemTime` as a protobuf timestamp.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf timestamp as a `SystemTime` (times before 1970 become the epoch).
pub fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

impl From<BuildState> for proto::BuildState {
    fn from(s: BuildState) -> Self {
        match s {
            BuildState::Queued => proto::BuildState::Queued,
            BuildState::Running => proto::BuildState::Running,
            BuildState::Succeeded => proto::BuildState::Succeeded,
            BuildState::Failed => proto::BuildState::Failed,
            BuildState::Cancelled => proto::BuildState::Cancelled,
            BuildState::AwaitingApproval => proto::BuildState::AwaitingApproval,
        }
    }
}

/// The domain state of a wire state (`Unspecified` has none).
pub fn build_state(s: proto::BuildState) -> Option<BuildState> {
    Some(match s {
        proto::BuildState::Unspecified => return None,
        proto::BuildState::Queued => BuildState::Queued,
        proto::BuildState::Running => BuildState::Running,
        proto::BuildState::Succeeded => BuildState::Succeeded,
        proto::BuildState::Failed => BuildState::Failed,
        proto::BuildState::Cancelled => BuildState::Cancelled,
        proto::BuildState::AwaitingApproval => BuildState::AwaitingApproval,
    })
}

impl From<&Source> for proto::Source {
    fn from(s: &Source) -> Self {
        let kind = match s {
            Source::Git(url) => proto::source::Kind::GitUrl(url.clone()),
            Source::Local(p) => proto::source::Kind::LocalPath(p.display().to_string()),
        };
        proto::Source { kind: Some(kind) }
    }
}

/// The text of a wire source, as a user would write it.
pub fn source_text(s: &proto::Source) -> String {
    match &s.kind {
        Some(proto::source::Kind::GitUrl(u)) => u.clone(),
        Some(proto::source::Kind::LocalPath(p)) => p.clone(),
        None => String::new(),
    }
}

impl From<&Project> for proto::Project {
    fn from(p: &Project) -> Self {
        proto::Project {
            name: p.name.to_string(),
            source: Some((&p.source).into()),
            branch: p.branch.clone(),
            created_at: Some(timestamp(p.created_at)),
            keep_versions: p.keep_versions,
            last_build: None,
            secret_names: Vec::new(),
        }
    }
}

impl From<&Build> for proto::Build {
    fn from(b: &Build) -> Self {
        proto::Build {
            id: b.id,
            project: b.project.to_string(),
            state: proto::BuildState::from(b.state) as i32,
            r#ref: b.git_ref.clone(),
            commit: b.commit.clone(),
            version: b
                .version
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            reason: b.reason.clone(),
            trigger: b.trigger.to_string(),
            store: b.store.to_string(),
            queued_at: Some(timestamp(b.queued_at)),
            started_at: b.started_at.map(timestamp),
            finished_at: b.finished_at.map(timestamp),
            branch: b.branch.clone().unwrap_or_default(),
            is_tag: b.is_tag,
            queue_position: 0,
            number: b.number,
        }
    }
}

impl From<&Event> for proto::Event {
    fn from(e: &Event) -> Self {
        proto::Event {
            seq: e.seq,
            time: Some(timestamp(e.time)),
            r#type: e.kind.to_string(),
            project: e.project.clone(),
            payload_json: e.payload.to_string(),
        }
    }
}

impl From<&VersionRecord> for proto::Version {
    fn from(v: &VersionRecord) -> Self {
        proto::Version {
            project: v.project.to_string(),
            version: v.version.to_string(),
            file_count: v.file_count,
            size: v.size,
            created_at: Some(timestamp(v.created_at)),
            build_id: v.build_id,
            commit: v.commit.clone(),
            store: v.store.to_string(),
            deployed_to: Vec::new(),
            archive_size: v.archive_size,
            // The site server names it (its domain and port).
            url: String::new(),
        }
    }
}

impl From<crate::hook::HookFormat> for proto::HookFormat {
    fn from(f: crate::hook::HookFormat) -> Self {
        match f {
            crate::hook::HookFormat::Json => proto::HookFormat::Json,
            crate::hook::HookFormat::Slack => proto::HookFormat::Slack,
        }
    }
}

impl From<&ManifestFile> for proto::ManifestEntry {
    fn from(f: &ManifestFile) -> Self {
        proto::ManifestEntry {
            path: f.path.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            mode: f.mode,
        }
    }
}

/// The domain format of a wire format (`Unspecified` means JSON).
pub fn hook_format(f: proto::HookFormat) -> crate::hook::HookFormat {
    match f {
        proto::HookFormat::Slack => crate::hook::HookFormat::Slack,
        proto::HookFormat::Json | proto::HookFormat::Unspecified => crate::hook::HookFormat::Json,
    }
}

impl From<&crate::hook::Hook> for proto::Hook {
    fn from(h: &crate::hook::Hook) -> Self {
        proto::Hook {
            id: h.id.to_string(),
            project: h.project.clone(),
            url: h.url.clone(),
            events: h.events.clone(),
            format: proto::HookFormat::from(h.format) as i32,
            signed: h.secret.is_some(),
            enabled: h.enabled,
            created_at: Some(timestamp(h.created_at)),
        }
    }
}

impl From<proto::ManifestEntry> for ManifestFile {
    fn from(e: proto::ManifestEntry) -> Self {
        ManifestFile {
            path: e.path,
            size: e.size,
            sha256: e.sha256,
            mode: e.mode,
        }
    }
}

impl From<&VersionManifest> for proto::Manifest {
    fn from(m: &VersionManifest) -> Self {
        proto::Manifest {
            project: m.project.to_string(),
            version: m.version.to_string(),
            build_id: m.build_id,
            commit: m.commit.clone(),
            created_at: Some(timestamp(m.created_at)),
            files: m.files.iter().map(Into::into).collect(),
        }
    }
}

#[cfg(feature = "store")]
impl From<&VerifyReport> for proto::VerifyVersionResponse {
    fn from(r: &VerifyReport) -> Self {
        proto::VerifyVersionResponse {
            versions_checked: r.versions_checked,
            files_checked: r.files_checked,
            problems: r
                .problems
                .iter()
                .map(|p| proto::VerifyProblem {
                    version: p.version.clone(),
                    path: p.path.clone(),
                    kind: p.kind.clone(),
                    detail: p.detail.clone(),
                })
                .collect(),
        }
    }
}

impl From<&crate::hook::Delivery> for proto::Delivery {
    fn from(d: &crate::hook::Delivery) -> Self {
        proto::Delivery {
            id: d.id.clone(),
            hook_id: d.hook_id.to_string(),
            event_seq: d.event_seq,
            event_type: d.event_type.clone(),
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            last_status: u32::from(d.last_status),
            last_error: d.last_error.clone(),
            next_attempt_at: d.next_attempt_at.map(timestamp),
            updated_at: Some(timestamp(d.updated_at)),
        }
    }
}

/// A commit status's outbox record as `ListGithubDeliveries` sends it.
impl From<&crate::forge::StatusDelivery> for proto::GithubDelivery {
    fn from(d: &crate::forge::StatusDelivery) -> Self {
        proto::GithubDelivery {
            event_seq: d.event_seq,
            project: d.project.clone(),
            build: d.build,
            repository: d.commit.repository.clone(),
            sha: d.commit.sha.clone(),
            state: d.state.clone(),
            description: d.description.clone(),
            target_url: d.target_url.clone().unwrap_or_default(),
            delivery: d.delivery.as_str().to_owned(),
            attempts: d.attempts,
            last_status: u32::from(d.last_status),
            last_error: d.last_error.clone(),
            next_attempt_at: d.next_attempt_at.map(timestamp),
            updated_at: Some(timestamp(d.updated_at)),
        }
    }
}
