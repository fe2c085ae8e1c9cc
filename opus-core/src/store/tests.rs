use std::time::SystemTime;

use super::*;
use crate::model::{
    Build, BuildState, EnvName, EventKind, Project, ProjectName, Source, VersionName,
};

pub(super) fn project(name: &str) -> Project {
    Project {
        name: ProjectName::new(name).expect("valid name"),
        source: Source::Git("https://example.com/x.git".into()),
        branch: "main".into(),
        created_at: SystemTime::now(),
        keep_versions: 0,
    }
}

pub(super) fn build(project: &str) -> Build {
    Build {
        id: 0,
        number: 0,
        project: ProjectName::new(project).expect("valid name"),
        state: BuildState::Queued,
        git_ref: "main".into(),
        commit: String::new(),
        version: None,
        version_pinned: false,
        reason: String::new(),
        trigger: crate::model::Trigger::Cli,
        store: crate::model::StoreName::default_store(),
        branch: Some("main".into()),
        is_tag: false,
        queued_at: SystemTime::now(),
        started_at: None,
        finished_at: None,
        pull_request: None,
        github: None,
    }
}

/// The names of the projects `filter` lets through, as `ListProjects` lists them.
fn listed(store: &MetaStore, filter: &str) -> Vec<String> {
    let filter = NameFilter::parse(filter).expect("a valid filter");
    store
        .map_projects_with_last_build(|p, _| p.name.to_string())
        .expect("list")
        .into_iter()
        .filter(|name| filter.matches(name))
        .collect()
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
        store
            .set_secret(&pn("web"), "TOKEN", "s3cret")
            .expect("secret");
    }
    let store =
        MetaStore::open_waiting(dir.path(), std::time::Duration::from_secs(10)).expect("reopen");
    let names = listed(&store, "");
    assert_eq!(names, ["api", "web"]);
    assert_eq!(
        store.project_names(|_| true).expect("names"),
        [pn("api"), pn("web")]
    );
    assert_eq!(
        store.project_names(|n| n.starts_with('w')).expect("names"),
        [pn("web")]
    );
    assert_eq!(store.secret_names(&pn("web")).expect("names"), ["TOKEN"]);
    assert_eq!(listed(&store, "we").len(), 1);
    assert_eq!(listed(&store, "*p*").len(), 1);
    let events = store.events_from(0, 100).expect("events");
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["project.added", "project.added", "secret.set"]);
    assert_eq!(*store.subscribe_events().borrow(), 3);
}

#[test]
fn tail_start_finds_the_newest_events_of_a_project() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    assert_eq!(store.tail_start(None, 5).expect("empty log"), 1);
    store.create_project(&project("web")).expect("create");
    store.create_project(&project("api")).expect("create");
    store
        .set_secret(&pn("web"), "TOKEN", "s3cret")
        .expect("secret");
    store
        .set_secret(&pn("api"), "TOKEN", "s3cret")
        .expect("secret");
    // Seqs: 1 web, 2 api, 3 web, 4 api.
    assert_eq!(store.tail_start(None, 1).expect("tail"), 4);
    assert_eq!(store.tail_start(None, 3).expect("tail"), 2);
    assert_eq!(store.tail_start(None, 100).expect("tail"), 1);
    assert_eq!(store.tail_start(Some(&pn("web")), 1).expect("tail"), 3);
    assert_eq!(store.tail_start(Some(&pn("web")), 2).expect("tail"), 1);
    assert_eq!(store.tail_start(Some(&pn("nope")), 2).expect("tail"), 5);
    assert_eq!(store.tail_start(None, 0).expect("tail"), 5);
}

#[test]
fn a_failed_change_writes_no_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    assert!(store.set_secret(&pn("nope"), "A", "b").is_err());
    assert!(store.unset_secret(&pn("nope"), "A").is_err());
    assert_eq!(store.events_from(0, 10).expect("events").len(), 0);
}

#[test]
fn delete_removes_secrets_and_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    store.set_secret(&pn("web"), "A", "1").expect("secret");
    let b = store.create_build(&build("web")).expect("build");
    store
        .delete_project(&ProjectName::new("web").expect("name"))
        .expect("delete");
    assert!(matches!(
        store.get_project(&pn("web")),
        Err(StoreError::ProjectNotFound(_))
    ));
    store.create_project(&project("web")).expect("re-create");
    assert!(store.secret_names(&pn("web")).expect("names").is_empty());
    assert!(store.last_build(&pn("web")).expect("last").is_none());
    assert_eq!(store.get_build(b.id).expect("still readable").id, b.id);
}

#[test]
fn a_change_that_keeps_the_state_is_stored_without_an_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    let a = store.create_build(&build("web")).expect("a");
    let seq = *store.subscribe_events().borrow();
    let changed = store
        .update_build(a.id, |b| {
            b.version = Some(VersionName::new("main-1").expect("version"))
        })
        .expect("update");
    assert_eq!(
        changed.version.as_ref().map(VersionName::as_str),
        Some("main-1")
    );
    assert_eq!(store.get_build(a.id).expect("get").version, changed.version);
    assert_eq!(*store.subscribe_events().borrow(), seq);
    // A state change in the same call still comes with its event, and keeps the earlier change.
    let running = store
        .update_build(a.id, |b| {
            b.state = BuildState::Running;
            b.commit = "abc".into();
        })
        .expect("update");
    assert_eq!(
        (
            running.version.as_ref().map(VersionName::as_str),
            running.commit.as_str()
        ),
        (Some("main-1"), "abc")
    );
    let events = store.events_from(seq + 1, 10).expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind.as_str(), "build.running");
    assert_eq!(events[0].payload["version"], "main-1");
    assert!(matches!(
        store.update_build(99, |b| b.version =
            Some(VersionName::new("x").expect("version"))),
        Err(StoreError::BuildNotFound(99))
    ));
}

#[test]
fn concurrent_changes_of_one_build_are_all_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    let a = store.create_build(&build("web")).expect("a");
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = &store;
            s.spawn(move || {
                for i in 0..50 {
                    store
                        .update_build(a.id, |b| b.reason.push_str(&format!("{t}.{i} ")))
                        .expect("update");
                }
            });
        }
    });
    let reason = store.get_build(a.id).expect("get").reason;
    assert_eq!(reason.split_whitespace().count(), 200, "{reason}");
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
            project: Some(pn("web")),
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
        store.last_build(&pn("web")).expect("last").map(|b| b.id),
        Some(2)
    );
    let kinds: Vec<_> = store
        .events_from(2, 10)
        .expect("events")
        .into_iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds, ["build.queued", "build.queued", "build.running"]);
    assert!(store.create_build(&build("nope")).is_err());
}

/// The ids of unfinished and of running builds (`builds_in_states`), and the last build of
/// web, api and docs.
fn indexes(store: &MetaStore) -> (Vec<u64>, Vec<u64>, Vec<Option<u64>>) {
    let ids = |states: &[BuildState]| -> Vec<u64> {
        store
            .builds_in_states(states)
            .expect("states")
            .iter()
            .map(|b| b.id)
            .collect()
    };
    let last = ["web", "api", "docs"]
        .iter()
        .map(|p| store.last_build(&pn(p)).expect("last").map(|b| b.id))
        .collect();
    (
        ids(&[BuildState::Queued, BuildState::Running]),
        ids(&[BuildState::Running]),
        last,
    )
}

#[test]
fn unfinished_and_last_build_indexes_follow_every_change_and_are_rebuilt_for_an_old_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = (vec![2, 4], vec![4], vec![Some(3), Some(4), None]);
    {
        let store = MetaStore::open(dir.path()).expect("open");
        store.create_project(&project("web")).expect("web");
        store.create_project(&project("api")).expect("api");
        store.create_project(&project("docs")).expect("docs");
        for p in ["web", "web", "web", "api"] {
            store.create_build(&build(p)).expect("build");
        }
        store
            .update_build(1, |b| b.state = BuildState::Succeeded)
            .expect("1 done");
        store
            .update_build(3, |b| b.state = BuildState::Failed)
            .expect("3 failed");
        store
            .update_build(4, |b| b.state = BuildState::Running)
            .expect("4 runs");
        assert_eq!(indexes(&store), expected);
        let finished: Vec<u64> = store
            .builds_in_states(&[BuildState::Succeeded, BuildState::Failed])
            .expect("finished")
            .iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(finished, [1, 3], "a finished state is found by scanning");

        // A removed project has no last build, and a new project of that name starts afresh.
        store
            .delete_project(&ProjectName::new("docs").expect("name"))
            .expect("delete docs");
        store.create_project(&project("docs")).expect("docs again");
        assert_eq!(indexes(&store), expected);

        // As a store written before the indexes existed: they are empty and unversioned.
        store
            .tree(T::UnfinishedBuilds)
            .expect("tree")
            .clear()
            .expect("clear");
        store
            .tree(T::LastBuilds)
            .expect("tree")
            .clear()
            .expect("clear");
        store
            .tree(T::Counters)
            .expect("tree")
            .remove("index_version")
            .expect("unversion");
        assert_eq!(indexes(&store).2, vec![None, None, None]);
        store.db().expect("open").db.flush().expect("flush");
    }
    let store =
        MetaStore::open_waiting(dir.path(), std::time::Duration::from_secs(10)).expect("reopen");
    assert_eq!(indexes(&store), expected);
}

#[test]
fn each_project_numbers_its_builds_from_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("web");
    store.create_project(&project("site")).expect("site");
    let web1 = store.create_build(&build("web")).expect("web#1");
    let web2 = store.create_build(&build("web")).expect("web#2");
    let site1 = store.create_build(&build("site")).expect("site#1");
    assert_eq!(
        [
            (web1.id, web1.number),
            (web2.id, web2.number),
            (site1.id, site1.number)
        ],
        [(1, 1), (2, 2), (3, 1)]
    );
    let found = |p: &str, n| store.build_by_number(&pn(p), n).expect("found");
    assert_eq!(found("web", 1).id, web1.id);
    assert_eq!(found("site", 1).id, site1.id);
    assert_eq!(found("site", 1).number, 1);
    assert!(matches!(
        store.build_by_number(&pn("site"), 2),
        Err(StoreError::BuildNumberNotFound { project, number: 2 }) if project == "site"
    ));
    assert_eq!(
        StoreError::BuildNumberNotFound {
            project: "site".into(),
            number: 2
        }
        .to_string(),
        "no build site#2 (see `opus builds site`)"
    );
    // The number rides on the build's events and survives a change of the record.
    let queued: Vec<_> = store
        .events_from(1, 10)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == EventKind::Build(BuildState::Queued))
        .map(|e| (e.project, e.payload["number"].clone()))
        .collect();
    assert_eq!(
        queued,
        [
            ("web".to_owned(), 1.into()),
            ("web".to_owned(), 2.into()),
            ("site".to_owned(), 1.into())
        ]
    );
    let running = store
        .update_build(site1.id, |b| b.state = BuildState::Running)
        .expect("runs");
    assert_eq!(running.number, 1);

    // A removed project's builds stay readable by number, and one added again under that name
    // continues after them: `web#2` never names two builds.
    store
        .delete_project(&ProjectName::new("web").expect("name"))
        .expect("delete web");
    assert_eq!(found("web", 2).id, web2.id);
    store.create_project(&project("web")).expect("web again");
    assert_eq!(store.create_build(&build("web")).expect("web#3").number, 3);
}

/// A build record as opusd wrote it before per-project numbers: no `number`.
fn old_build_record(id: u64, project: &str) -> Vec<u8> {
    let mut record = serde_json::to_value(Build {
        id,
        ..build(project)
    })
    .expect("json");
    record.as_object_mut().expect("an object").remove("number");
    serde_json::to_vec(&record).expect("bytes")
}

#[test]
fn an_old_store_keeps_its_build_numbers_and_continues_after_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = MetaStore::open(dir.path()).expect("open");
        store.create_project(&project("web")).expect("web");
        store.create_project(&project("site")).expect("site");
        // Builds 1, 2 and 5 of web and 3 and 4 of site, numbered across projects as then, with
        // the indexes and counters of then.
        for (id, p) in [(1, "web"), (2, "web"), (3, "site"), (4, "site"), (5, "web")] {
            let key = u64::to_be_bytes(id);
            store
                .tree(T::Builds)
                .expect("tree")
                .insert(key, old_build_record(id, p))
                .expect("record");
            store
                .tree(T::ProjectBuilds)
                .expect("tree")
                .insert(pair_key(p, &key), &[])
                .expect("index");
        }
        let counters = store.tree(T::Counters).expect("tree");
        counters
            .insert("build_id", &5u64.to_be_bytes())
            .expect("counter");
        counters
            .insert("index_version", &1u64.to_be_bytes())
            .expect("version");
        store.db().expect("open").db.flush().expect("flush");
    }
    let store =
        MetaStore::open_waiting(dir.path(), std::time::Duration::from_secs(10)).expect("reopen");
    for (id, p) in [(1, "web"), (2, "web"), (3, "site"), (4, "site"), (5, "web")] {
        let b = store
            .build_by_number(&pn(p), id)
            .expect("an old build by its number");
        assert_eq!((b.id, b.number, b.project.as_str()), (id, id, p));
        assert_eq!(store.get_build(id).expect("by id").number, id);
    }
    let listed: Vec<u64> = store
        .list_builds(&BuildFilter {
            project: Some(pn("web")),
            ..BuildFilter::default()
        })
        .expect("list")
        .iter()
        .map(|b| b.number)
        .collect();
    assert_eq!(listed, [5, 2, 1]);
    assert!(matches!(
        store.build_by_number(&pn("web"), 3),
        Err(StoreError::BuildNumberNotFound { .. })
    ));
    let web = store.create_build(&build("web")).expect("web#6");
    let site = store.create_build(&build("site")).expect("site#5");
    assert_eq!((web.id, web.number), (6, 6));
    assert_eq!((site.id, site.number), (7, 5));
    assert_eq!(store.build_by_number(&pn("site"), 5).expect("new").id, 7);
    let fresh = {
        store.create_project(&project("docs")).expect("docs");
        store.create_build(&build("docs")).expect("docs#1")
    };
    assert_eq!((fresh.id, fresh.number), (8, 1));
}

fn pn(name: &str) -> ProjectName {
    ProjectName::new(name).expect("project name")
}

fn en(name: &str) -> EnvName {
    EnvName::new(name).expect("environment name")
}

fn vn(name: &str) -> VersionName {
    VersionName::new(name).expect("version name")
}

pub(super) fn version(project: &str, v: &str) -> crate::model::VersionRecord {
    crate::model::VersionRecord {
        project: ProjectName::new(project).expect("valid name"),
        version: crate::model::VersionName::new(v).expect("valid version"),
        store: crate::model::StoreName::default_store(),
        build_id: 0,
        commit: String::new(),
        created_at: SystemTime::now(),
        file_count: 0,
        size: 0,
        archive_size: 0,
        archive_sha256: String::new(),
    }
}

#[test]
fn deploys_rollbacks_pins_and_history() {
    use crate::error::StoreError as E;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    for v in ["1", "2", "3"] {
        store
            .commit_version(&version("web", v), &[], &SiteOptions::default())
            .expect("version");
    }
    let deploy = |v: &str, reason| {
        store.deploy(&pn("web"), &en("production"), &vn(v), "test", reason, false)
    };
    let rollback = |store: &MetaStore| {
        let target = store.rollback_target(&pn("web"), &en("production"), None)?;
        store.rollback(&pn("web"), &en("production"), &target, "test")
    };
    assert!(matches!(
        deploy("9", ReleaseReason::Deploy),
        Err(E::VersionNotFound { .. })
    ));
    assert!(matches!(
        rollback(&store),
        Err(E::EnvironmentNotFound { .. })
    ));
    deploy("1", ReleaseReason::Deploy).expect("deploy 1");
    assert!(matches!(rollback(&store), Err(E::NoEarlierRelease { .. })));
    deploy("2", ReleaseReason::Deploy).expect("deploy 2");
    deploy("3", ReleaseReason::Auto).expect("deploy 3");
    // Rollback twice walks back (3 -> 2 -> 1), and pins.
    let r = rollback(&store).expect("rb");
    assert_eq!((r.current.version.as_str(), r.pinned), ("2", true));
    let r = rollback(&store).expect("rb");
    assert_eq!(r.current.version, "1");
    // Pinned: automatic deploys are refused and change nothing.
    assert!(matches!(
        deploy("3", ReleaseReason::Auto),
        Err(E::EnvironmentPinned { .. })
    ));
    assert_eq!(store.releases(&pn("web"), None, 0).expect("list").len(), 5);
    let protected = store.protected_versions(&pn("web")).expect("protected");
    assert!(
        protected.contains("1") && protected.contains("2"),
        "{protected:?}"
    );
    assert!(!protected.contains("3"));
    store
        .unpin_environment(&pn("web"), &en("production"))
        .expect("unpin");
    deploy("3", ReleaseReason::Auto).expect("auto after unpin");
    let list = store
        .releases(&pn("web"), Some(&en("production")), 2)
        .expect("list");
    assert_eq!(list.iter().map(|r| r.seq).collect::<Vec<_>>(), [6, 5]);
    // Events in the same transactions.
    let n = store
        .events_from(0, 100)
        .expect("events")
        .iter()
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "environment.deployed" | "environment.rolled_back"
            )
        })
        .count();
    assert_eq!(n, 6);
    // The pointer survives a reopen; removing the environment keeps the history.
    drop(store);
    let store =
        MetaStore::open_waiting(dir.path(), std::time::Duration::from_secs(10)).expect("reopen");
    assert_eq!(
        store
            .environment(&pn("web"), &en("production"))
            .expect("env")
            .current
            .version,
        "3"
    );
    store
        .remove_environment(&pn("web"), &en("production"))
        .expect("remove");
    assert!(store.environments(&pn("web")).expect("envs").is_empty());
    assert_eq!(store.releases(&pn("web"), None, 0).expect("list").len(), 6);
}

#[test]
fn every_committed_change_moves_the_change_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    let mut last = store.change_count();
    let mut moved = |what: &str| {
        let now = store.change_count();
        assert!(now > last, "{what} did not move the change count");
        last = now;
    };
    store.create_project(&project("web")).expect("create");
    moved("create_project");
    let b = store.create_build(&build("web")).expect("build");
    moved("create_build");
    // No state change: the compare-and-swap path, outside any transaction.
    store
        .update_build(b.id, |b| {
            b.version = Some(VersionName::new("main-1").expect("version"))
        })
        .expect("version");
    moved("update_build without a state change");
    store
        .update_build(b.id, |b| b.state = BuildState::Running)
        .expect("running");
    moved("update_build with a state change");
    let before = store.change_count();
    assert!(store.create_project(&project("web")).is_err());
    assert_eq!(
        store.change_count(),
        before,
        "a refused change is not counted"
    );
}

#[test]
fn a_versions_site_options_are_committed_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    let spa = SiteOptions {
        spa: true,
        ..SiteOptions::default()
    };
    assert!(
        store
            .commit_version(&version("web", "1"), &[], &spa)
            .expect("commit")
    );
    assert_eq!(
        store.site_options(&pn("web"), &vn("1")).expect("options"),
        spa
    );
    // A version that exists keeps the options it was committed with.
    assert!(
        !store
            .commit_version(&version("web", "1"), &[], &SiteOptions::default())
            .expect("commit")
    );
    assert_eq!(
        store.site_options(&pn("web"), &vn("1")).expect("options"),
        spa
    );
    // A version never committed has none.
    assert!(
        store
            .commit_version(&version("nope", "1"), &[], &spa)
            .is_err()
    );
    assert_eq!(
        store.site_options(&pn("nope"), &vn("1")).expect("options"),
        SiteOptions::default()
    );
}

#[test]
fn after_a_full_disk_writes_fail_naming_it_until_the_store_is_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    let id = store.create_build(&build("web")).expect("build").id;
    assert!(store.reopen().expect("a healthy store needs no reopen"));

    // What sled answers every write with after its log hit ENOSPC.
    let full = sled::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
    let e = store.failed(full);
    assert!(
        matches!(&e, StoreError::DiskFull { path } if path == dir.path()),
        "{e}"
    );
    assert!(
        e.to_string().contains("is full: free space and retry"),
        "{e}"
    );
    assert!(store.failure().is_some());
    // Every write fails the same way at once (sled would, until reopened), reads still work.
    let clone = store.clone();
    for err in [
        clone
            .set_secret(&pn("web"), "TOKEN", "s3cret")
            .expect_err("secret"),
        clone
            .update_build(id, |b| b.state = BuildState::Failed)
            .expect_err("outcome"),
    ] {
        assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    }
    assert_eq!(store.get_build(id).expect("read").state, BuildState::Queued);

    // Reopened (the disk has room again): the data is there and writes work, through every
    // clone of the handle.
    assert!(store.reopen().expect("reopen"));
    assert!(clone.failure().is_none());
    clone
        .set_secret(&pn("web"), "TOKEN", "s3cret")
        .expect("secret");
    clone
        .update_build(id, |b| b.state = BuildState::Failed)
        .expect("outcome");
    assert_eq!(store.get_build(id).expect("read").state, BuildState::Failed);
    assert_eq!(store.secret_names(&pn("web")).expect("names"), ["TOKEN"]);
}

#[test]
fn another_io_failure_is_kept_as_sleds_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    let e = store.failed(sled::Error::Io(std::io::Error::other("EIO")));
    assert!(matches!(e, StoreError::Sled(_)), "{e}");
    assert!(store.failure().is_some(), "writes fail until reopened");
    assert!(store.reopen().expect("reopen"));
    store.create_project(&project("web")).expect("create");
}

#[test]
fn a_version_an_environment_needs_is_not_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("create");
    for v in ["1", "2", "3"] {
        store
            .commit_version(&version("web", v), &[], &SiteOptions::default())
            .expect("version");
    }
    let remove = |v: &str| store.remove_version(&pn("web"), &vn(v), &[], None, "test");
    let deploy = |v: &str| {
        store
            .deploy(
                &pn("web"),
                &en("production"),
                &vn(v),
                "test",
                ReleaseReason::Deploy,
                false,
            )
            .expect("deploy")
    };
    deploy("1");
    assert_eq!(remove("1").expect("remove"), VersionRemoval::Protected);
    // "1" is now what a rollback goes back to: still protected.
    deploy("2");
    assert_eq!(remove("1").expect("remove"), VersionRemoval::Protected);
    deploy("3");
    assert!(matches!(
        remove("1").expect("remove"),
        VersionRemoval::Removed(r) if r.version.as_str() == "1"
    ));
    assert_eq!(remove("1").expect("remove"), VersionRemoval::NotFound);
    assert_eq!(store.get_version(&pn("web"), &vn("1")).expect("get"), None);
    // And the other way round: a deploy of a removed version is refused in its transaction.
    assert!(matches!(
        store.deploy(
            &pn("web"),
            &en("staging"),
            &vn("1"),
            "test",
            ReleaseReason::Deploy,
            false
        ),
        Err(StoreError::VersionNotFound { .. })
    ));
}

/// Build records stored the version as a string, empty while undecided: they read the same, and
/// events keep showing an undecided version as "".
#[test]
fn a_build_version_reads_from_the_string_records_stored_before() {
    let mut record = serde_json::to_value(build("web")).expect("json");
    assert_eq!(record["version"], "", "undecided is stored as before");
    assert_eq!(builds::build_payload(&build("web"))["version"], "");
    let read: Build = serde_json::from_value(record.clone()).expect("an empty version reads");
    assert_eq!(read.version, None);
    record["version"] = "main-3-abc1234".into();
    let read: Build = serde_json::from_value(record.clone()).expect("a version reads");
    assert_eq!(
        read.version.as_ref().map(VersionName::as_str),
        Some("main-3-abc1234")
    );
    record["version"] = serde_json::Value::Null;
    let read: Build = serde_json::from_value(record.clone()).expect("null reads as undecided");
    assert_eq!(read.version, None);
    record["version"] = "archive".into();
    let err = serde_json::from_value::<Build>(record).expect_err("a reserved name is refused");
    assert!(err.to_string().contains("reserved"), "{err}");
}

/// Records name their artifact store as a plain string, and an empty one (the form that meant
/// the default store) reads as [`crate::model::DEFAULT_STORE`] from the store itself.
#[test]
fn an_old_record_with_an_empty_store_reads_as_the_default_store() {
    use crate::model::{DEFAULT_STORE, StoreName};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("web");
    let mut record = serde_json::to_value(version("web", "1")).expect("json");
    assert_eq!(record["store"], DEFAULT_STORE, "stored as a plain string");
    record["store"] = "".into();
    store
        .tree(T::Versions)
        .expect("tree")
        .insert(
            pair_key("web", b"1"),
            serde_json::to_vec(&record).expect("bytes"),
        )
        .expect("record");
    let read = store
        .get_version(&pn("web"), &vn("1"))
        .expect("read")
        .expect("the version");
    assert_eq!(read.store, StoreName::default_store());
    let mut old_build = serde_json::to_value(build("web")).expect("json");
    old_build["store"] = "".into();
    let read: Build = serde_json::from_value(old_build.clone()).expect("an old build reads");
    assert!(read.store.is_default());
    old_build["store"] = "Not A Store".into();
    serde_json::from_value::<Build>(old_build).expect_err("an invalid store name is refused");
}

#[test]
fn a_domain_belongs_to_one_project_and_goes_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetaStore::open(dir.path()).expect("open");
    store.create_project(&project("web")).expect("web");
    store.create_project(&project("docs")).expect("docs");
    let web = ProjectName::new("web").expect("name");
    let docs = ProjectName::new("docs").expect("name");
    let www = crate::domain::DomainName::new("www.acme.com").expect("domain");
    let prod = EnvName::production();

    let added = store.add_domain(&www, &web, &prod).expect("added");
    assert!(matches!(added, DomainAdded::Added(_)));
    let again = store.add_domain(&www, &web, &prod).expect("same again");
    assert!(matches!(again, DomainAdded::Unchanged(_)));
    let taken = store
        .add_domain(&www, &docs, &prod)
        .expect_err("owned by web");
    assert!(
        matches!(&taken, StoreError::DomainTaken { project, .. } if project == "web"),
        "{taken}"
    );
    assert!(taken.to_string().contains("\"web\""), "{taken}");
    let staging = EnvName::new("staging").expect("env");
    assert!(store.add_domain(&www, &web, &staging).is_err());
    let nobody = ProjectName::new("nobody").expect("name");
    assert!(matches!(
        store.add_domain(&www, &nobody, &prod),
        Err(StoreError::ProjectNotFound(_))
    ));

    let kinds: Vec<EventKind> = store
        .events_from(0, 100)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| matches!(k, EventKind::DomainAdded | EventKind::DomainRemoved))
        .collect();
    assert_eq!(kinds, [EventKind::DomainAdded]);

    let docs_www = crate::domain::DomainName::new("docs.acme.com").expect("domain");
    store.add_domain(&docs_www, &docs, &prod).expect("docs");
    assert_eq!(store.list_domains(None).expect("all").len(), 2);
    assert_eq!(store.list_domains(Some(&web)).expect("web's").len(), 1);

    let removed = store.remove_domain(&docs_www).expect("removed");
    assert_eq!(removed.project, "docs");
    assert!(matches!(
        store.remove_domain(&docs_www),
        Err(StoreError::DomainNotFound(_))
    ));

    store.delete_project(&web).expect("delete web");
    assert!(store.list_domains(None).expect("none left").is_empty());
    store
        .add_domain(&www, &docs, &prod)
        .expect("free again once web is gone");
}
