use std::time::SystemTime;

use super::*;
use crate::model::{Build, BuildState, Project, ProjectName, Source};

fn project(name: &str) -> Project {
    Project {
        name: ProjectName::new(name).expect("valid name"),
        source: Source::Git("https://example.com/x.git".into()),
        branch: "main".into(),
        created_at: SystemTime::now(),
        keep_versions: 0,
    }
}

fn build(project: &str) -> Build {
    Build {
        id: 0,
        project: ProjectName::new(project).expect("valid name"),
        state: BuildState::Queued,
        git_ref: "main".into(),
        commit: String::new(),
        version: String::new(),
        version_pinned: false,
        reason: String::new(),
        trigger: "cli".into(),
        store: "default".into(),
        branch: Some("main".into()),
        is_tag: false,
        queued_at: SystemTime::now(),
        started_at: None,
        finished_at: None,
    }
}

#[test]
fn projects_round_trip_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = MetaStore::open(dir.path()).expect("open");
        store.create_project(&project("web")).expect("create");
        assert!(matches!(
            store.create_project(&project("web")),
            Err(StoreError::ProjectExists(_))
        ));
        store.create_project(&project("api")).expect("create");
        store.set_secret("web", "TOKEN", "s3cret").expect("secret");
    }
    let store = MetaStore::open(dir.path()).expect("reopen");
    let names: Vec<_> = store
        .list_projects("")
        .expect("list")
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(store.secret_names("web").expect("names"), ["TOKEN"]);
    assert_eq!(store.list_projects("we").expect("list").len(), 1);
    assert_eq!(store.list_projects("*p*").expect("list").len(), 1);
    let events = store.events_from(0, 100).expect("events");
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["project.added", "project.added", "secret.set"]);
    assert_eq!(store.last_event_seq(), 3);
}

#[test]
fn a_failed_change_writes_no_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    assert!(store.set_secret("nope", "A", "b").is_err());
    assert!(store.unset_secret("nope", "A").is_err());
    assert_eq!(store.events_from(0, 10).expect("events").len(), 0);
}

#[test]
fn delete_removes_secrets_and_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    store.set_secret("web", "A", "1").expect("secret");
    let b = store.create_build(&build("web")).expect("build");
    store
        .delete_project(&ProjectName::new("web").expect("name"))
        .expect("delete");
    assert!(matches!(
        store.get_project("web"),
        Err(StoreError::ProjectNotFound(_))
    ));
    store.create_project(&project("web")).expect("re-create");
    assert!(store.secret_names("web").expect("names").is_empty());
    assert!(store.last_build("web").expect("last").is_none());
    assert_eq!(store.get_build(b.id).expect("still readable").id, b.id);
}

#[test]
fn builds_get_increasing_ids_and_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    let a = store.create_build(&build("web")).expect("a");
    let b = store.create_build(&build("web")).expect("b");
    assert_eq!((a.id, b.id), (1, 2));
    store
        .update_build(a.id, |b| b.state = BuildState::Running)
        .expect("update");
    let listed = store
        .list_builds(&BuildFilter {
            project: Some("web".into()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(listed.iter().map(|b| b.id).collect::<Vec<_>>(), [2, 1]);
    let running = store
        .list_builds(&BuildFilter {
            state: Some(BuildState::Running),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(running.len(), 1);
    assert_eq!(
        store.last_build("web").expect("last").map(|b| b.id),
        Some(2)
    );
    let kinds: Vec<_> = store
        .events_from(2, 10)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["build.queued", "build.queued", "build.running"]);
    assert!(store.create_build(&build("nope")).is_err());
}
