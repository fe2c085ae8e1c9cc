//! Projects through the CLI: add, list, remove, secrets, validation, persistence.

use opus_tests::{Daemon, GitRepo};

#[test]
fn add_list_remove_with_original_forms_and_json() {
    let mut d = Daemon::start();
    let site = d.root.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    let site_s = site.to_str().expect("utf-8");

    let out = d.opus(&["-add", "web", site_s]);
    assert!(out.ok().contains("added web"), "{}", out.stdout);
    d.opus(&[
        "add",
        "api",
        "https://example.com/api.git",
        "--branch",
        "develop",
    ])
    .ok();

    let table = d.opus(&["-list"]);
    let text = table.ok();
    assert!(
        text.lines().next().is_some_and(|h| h.starts_with("NAME")),
        "{text}"
    );
    assert!(text.contains("web") && text.contains(site_s), "{text}");

    let json = d.opus(&["list", "--output", "json"]).json();
    let items = json.as_array().expect("an array");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["name"], "api");
    assert_eq!(items[0]["source"], "https://example.com/api.git");
    assert_eq!(items[0]["branch"], "develop");
    assert_eq!(items[1]["name"], "web");
    assert_eq!(items[1]["branch"], "main");

    // Filters: substring and glob.
    let only_web = d.opus(&["list", "we", "-o", "json"]).json();
    assert_eq!(only_web.as_array().map(Vec::len), Some(1));
    let glob = d.opus(&["-list", "a*", "-o", "json"]).json();
    assert_eq!(glob[0]["name"], "api");

    // Data survives a restart.
    assert_eq!(d.stop(), 0, "clean exit on SIGTERM");
    d.restart();
    let json = d.opus(&["list", "-o", "json"]).json();
    assert_eq!(json.as_array().map(Vec::len), Some(2));

    d.opus(&["-delete", "api", "--yes"]).ok();
    d.opus(&["remove", "web", "--yes"]).ok();
    assert_eq!(
        d.opus(&["list", "-o", "json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn relative_directories_are_resolved_by_the_client() {
    let d = Daemon::start();
    std::fs::create_dir(d.root.path().join("app")).expect("mkdir");
    let mut cmd = opus_tests::opus_command(&d.server, None);
    cmd.current_dir(d.root.path())
        .args(["add", "app", "app", "-o", "json"]);
    let out = opus_tests::run_with_stdin(cmd, "");
    let json = out.json();
    let expected = std::fs::canonicalize(d.root.path().join("app")).expect("canonical");
    assert_eq!(json["source"], expected.display().to_string());
}

#[test]
fn invalid_names_are_refused_with_the_rule() {
    let d = Daemon::start();
    let dir = d.root.path().to_str().expect("utf-8").to_owned();
    let long = "a".repeat(64);
    for bad in ["Web", "-web", "a/b", "../x", long.as_str(), ""] {
        // `--` so that `-web` reaches the server as a name rather than clap as a flag.
        let out = d.opus(&["add", "--", bad, &dir]);
        let err = out.fails(1);
        assert!(err.contains("invalid project name"), "{bad}: {err}");
        assert!(err.contains("lowercase letters"), "says what to do: {err}");
    }
    assert_eq!(
        d.opus(&["list", "-o", "json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn duplicates_unknown_projects_and_bad_sources() {
    let d = Daemon::start();
    let dir = d.root.path().to_str().expect("utf-8").to_owned();
    d.opus(&["add", "web", &dir]).ok();

    let err = d.opus(&["add", "web", &dir]).fails(1).to_owned();
    assert!(err.contains("already exists"), "{err}");

    let err = d.opus(&["remove", "nope"]).fails(1).to_owned();
    assert!(err.contains("no project named \"nope\""), "{err}");

    let err = d.opus(&["secret", "list", "nope"]).fails(1).to_owned();
    assert!(err.contains("no project named"), "{err}");

    for bad in ["/no/such/directory", "ftp://example.com/x", "not a url"] {
        let err = d.opus(&["add", "other", bad]).fails(1).to_owned();
        assert!(err.contains("invalid source"), "{bad}: {err}");
    }
    let file = d.root.path().join("file.txt");
    std::fs::write(&file, "x").expect("write");
    let err = d
        .opus(&["add", "other", file.to_str().expect("utf-8")])
        .fails(1)
        .to_owned();
    assert!(err.contains("not a directory"), "{err}");

    for url in [
        "git@github.com:org/repo.git",
        "ssh://git@host/r.git",
        "git://host/r",
        "file:///srv/r.git",
    ] {
        let name = format!("p{}", url.len());
        d.opus(&["add", &name, url]).ok();
    }
}

#[test]
fn secrets_are_write_only() {
    let d = Daemon::start();
    let dir = d.root.path().to_str().expect("utf-8").to_owned();
    d.opus(&["add", "web", &dir]).ok();
    d.opus(&["secret", "set", "web", "NPM_TOKEN", "--value", "hunter2"])
        .ok();
    d.opus_with_stdin(&["secret", "set", "web", "API_KEY"], "from-stdin\n")
        .ok();
    let names = d.opus(&["secret", "list", "web", "-o", "json"]).json();
    assert_eq!(names, serde_json::json!(["API_KEY", "NPM_TOKEN"]));
    let shown = d.opus(&["list", "-o", "json"]);
    assert!(!shown.stdout.contains("hunter2") && !shown.stdout.contains("from-stdin"));

    let err = d
        .opus(&["secret", "set", "web", "BAD-NAME", "--value", "x"])
        .fails(1)
        .to_owned();
    assert!(err.contains("invalid secret name"), "{err}");
    let err = d
        .opus(&["secret", "unset", "web", "MISSING"])
        .fails(1)
        .to_owned();
    assert!(err.contains("no secret named"), "{err}");
    d.opus(&["secret", "unset", "web", "API_KEY"]).ok();
    assert_eq!(
        d.opus(&["secret", "list", "web", "-o", "json"]).json(),
        serde_json::json!(["NPM_TOKEN"])
    );
}

#[test]
fn status_shows_the_server() {
    let d = Daemon::start();
    let out = d.opus(&["status"]);
    let text = out.ok();
    assert!(
        text.contains("version") && text.contains(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let json = d.opus(&["status", "-o", "json"]).json();
    assert_eq!(json["data_dir"], d.data_dir().display().to_string());
    assert!(
        json["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("file://")),
        "{json}"
    );
}

/// `opus list` is answered from a copy while the store is unchanged; every kind of change shows
/// in the next list (each list here follows one, with the copy warm before it).
#[test]
fn the_project_list_follows_every_change() {
    let d = Daemon::start();
    let site = opus_tests::site_with_opus_yml(
        d.root.path(),
        "site",
        "build:\n  steps: [\"mkdir -p dist && echo hi > dist/index.html\"]\n",
    );
    let list = || d.opus(&["list", "-o", "json"]).json();
    assert_eq!(list(), serde_json::json!([]));
    d.opus(&["add", "web", site.to_str().expect("utf-8")]).ok();
    let listed = list();
    assert_eq!(listed[0]["name"], "web");
    assert!(listed[0]["last_build"].is_null(), "{listed}");

    d.opus(&["trigger", "web", "--wait"]).ok();
    let listed = list();
    assert_eq!(listed[0]["last_build"]["number"], 1, "{listed}");
    assert_eq!(listed[0]["last_build"]["state"], "succeeded");
    assert_eq!(listed[0]["last_build"]["version"], "main-1");

    d.opus(&["trigger", "web", "--version", "2.0", "--wait"])
        .ok();
    let listed = list();
    assert_eq!(listed[0]["last_build"]["number"], 2, "{listed}");
    assert_eq!(listed[0]["last_build"]["version"], "2.0");

    // Over gRPC: the whole last build, or with `brief` only what `opus list` shows.
    let (full, brief) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(d.server.clone())
                .expect("endpoint")
                .connect()
                .await
                .expect("connects");
            let mut projects =
                opus_core::proto::project_service_client::ProjectServiceClient::new(channel);
            let mut both = Vec::new();
            for brief in [false, true] {
                let req = opus_core::proto::ListProjectsRequest {
                    brief,
                    ..Default::default()
                };
                both.push(
                    projects
                        .list_projects(req)
                        .await
                        .expect("list")
                        .into_inner()
                        .projects,
                );
            }
            let brief = both.pop().expect("brief");
            let full = both.pop().expect("full");
            (full, brief)
        });
    let (full, brief) = (
        full[0].last_build.clone().expect("a last build"),
        brief[0].last_build.clone().expect("a last build"),
    );
    assert_eq!((full.number, brief.number), (2, 2));
    assert_eq!(full.id, brief.id);
    assert_eq!(
        (full.version.as_str(), brief.version.as_str()),
        ("2.0", "2.0")
    );
    assert_eq!(full.state, brief.state);
    assert!(full.queued_at.is_some() && brief.queued_at == full.queued_at);
    assert_eq!(
        (full.r#ref.as_str(), full.trigger.as_str()),
        ("main", "cli")
    );
    assert!(full.finished_at.is_some());
    assert!(brief.r#ref.is_empty() && brief.trigger.is_empty() && brief.finished_at.is_none());

    d.opus(&["keep", "web", "3"]).ok();
    assert_eq!(list()[0]["keep_versions"], 3);

    d.opus(&["add", "api", "https://example.com/api.git"]).ok();
    let listed = list();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(
        d.opus(&["list", "ap*", "-o", "json"]).json()[0]["name"],
        "api",
        "a filter applies to the copy too"
    );
    d.opus(&["remove", "api", "--yes"]).ok();
    assert_eq!(list().as_array().map(Vec::len), Some(1));
}

#[test]
fn an_invalid_list_filter_is_refused_with_the_reason() {
    let d = Daemon::start();
    d.opus(&["add", "web", "https://example.com/web.git"]).ok();
    let err = d.opus(&["list", "web-[", "-o", "json"]).fails(1).to_owned();
    assert!(err.contains("invalid filter \"web-[\""), "{err}");
}

#[test]
fn double_dash_names_are_refused_and_a_store_from_before_keeps_the_older_owner() {
    let mut d = Daemon::start();
    let dir = d.root.path().to_str().expect("utf-8").to_owned();
    // New names: refused, saying why.
    let err = d.opus(&["add", "staging--rb", &dir]).fails(1).to_owned();
    assert!(
        err.contains("invalid project name \"staging--rb\"")
            && err.contains("separates the environment from the project"),
        "{err}"
    );
    d.opus(&["add", "web", &dir]).ok();
    let site = d.root.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    std::fs::write(site.join("index.html"), "web").expect("write");
    d.publish("web", "1.0", &site);
    let err = d
        .opus(&["deploy", "web", "1.0", "--env", "a--b"])
        .fails(1)
        .to_owned();
    assert!(
        err.contains("invalid environment name \"a--b\"") && err.contains("site's host name"),
        "{err}"
    );

    // A store made before the rule holds project `staging--rb`, whose production site has the
    // host of environment `staging` of project `rb`, added later.
    d.stop();
    {
        let store = opus_core::store::MetaStore::open(&d.data_dir().join("meta")).expect("store");
        store
            .create_project(&opus_core::model::Project {
                name: opus_core::model::ProjectName::new("staging--rb").expect("a DNS label"),
                source: opus_core::model::Source::Local(d.root.path().to_path_buf()),
                branch: "main".into(),
                created_at: std::time::SystemTime::now(),
                keep_versions: 0,
            })
            .expect("an old store's project");
    }
    d.restart();
    d.opus(&["add", "rb", &dir]).ok();
    for (project, env, text) in [
        ("rb", "staging", "newer rb staging"),
        ("staging--rb", "production", "older staging--rb"),
    ] {
        let folder = d.root.path().join(project);
        std::fs::create_dir(&folder).expect("mkdir");
        std::fs::write(folder.join("index.html"), text).expect("write");
        d.publish(project, "1.0", &folder);
        d.opus(&["deploy", project, "1.0", "--env", env]).ok();
    }
    for round in 0..3 {
        let r = d.get("staging--rb.localhost", "/");
        assert_eq!(r.status, 200, "round {round}");
        assert_eq!(
            r.text(),
            "older staging--rb",
            "round {round}: the older project keeps the host"
        );
        d.restart();
    }
    let log = d.log();
    assert!(
        log.contains("staging--rb") && log.contains("the older project keeps a shared host"),
        "a warning names the old name:\n{log}"
    );
}

#[test]
fn a_local_git_work_tree_is_a_git_source_with_its_branches_and_tags() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("my-site"));
    repo.write(
        "opus.yml",
        "build:\n  steps: [\"mkdir -p dist && cp msg.txt dist/index.html\"]\npreviews: true\n",
    );
    repo.write("msg.txt", "committed on trunk");
    repo.commit("first");
    // The branch checked out is the one `latest` builds.
    repo.git(&["checkout", "-q", "-b", "trunk"]);
    let dir = repo.dir.to_str().expect("utf-8");

    let out = d.opus(&["add", "web", dir]);
    assert!(out.ok().contains("branch trunk"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "{dir} is a git repository: builds fetch its commits (branches, tags); uncommitted changes are not built"
        )),
        "{}",
        out.stderr
    );
    let project = d.opus(&["list", "-o", "json"]).json();
    assert_eq!(project[0]["branch"], "trunk");

    // Uncommitted changes are not built: the commit is.
    repo.write("msg.txt", "not committed");
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "succeeded", 60);
    let built = d.build("web", id);
    assert_eq!(built["commit"], repo.git(&["rev-parse", "HEAD"]));

    // A branch builds its own commit (and gets its preview).
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("msg.txt", "on feature");
    let feature_commit = repo.commit("feature");
    let id = d.trigger(&["web", "feature"]);
    d.wait_for_state("web", id, "succeeded", 60);
    let built = d.build("web", id);
    assert_eq!(built["commit"], feature_commit);
    assert_eq!(built["branch"], "feature");
    let r = d.get("feature--web.localhost", "/");
    assert_eq!((r.status, r.text().trim()), (200, "on feature"));

    // A tag builds the version of its name.
    repo.git(&["tag", "2.0.0"]);
    let id = d.trigger(&["web", "2.0.0"]);
    d.wait_for_state("web", id, "succeeded", 60);
    let built = d.build("web", id);
    assert_eq!(built["version"], "2.0.0");
    assert_eq!(built["commit"], feature_commit);
}

#[test]
fn a_plain_folder_is_a_copy_and_a_branch_of_it_is_refused_at_once() {
    let d = Daemon::start();
    let dir = d.root.path().join("plain");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(
        dir.join("opus.yml"),
        "build:\n  steps: [\"mkdir -p dist && echo hi > dist/index.html\"]\n",
    )
    .expect("write");
    let dir_s = dir.to_str().expect("utf-8");
    let out = d.opus(&["add", "web", dir_s]);
    out.ok();
    assert!(
        out.stderr.contains(&format!(
            "{dir_s} is a plain folder (not a git repository): each build copies it as it is"
        )),
        "{}",
        out.stderr
    );

    let err = d
        .opus(&["trigger", "web", "feature", "--wait"])
        .fails(1)
        .to_owned();
    assert!(
        err.contains(&format!(
            "ref \"feature\" cannot be built: the source of web ({dir_s}) is a plain folder, not a git repository"
        )) && err.contains("trigger `latest`")
            && err.contains("git init"),
        "{err}"
    );
    assert!(
        d.builds("web").is_empty(),
        "refused before any build was queued"
    );
    // `latest` builds the folder as it is.
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "succeeded", 60);
}

/// A git project built and deployed: its version, cache, mirror and site exist.
fn deployed_git_project(d: &Daemon, repo: &GitRepo) -> String {
    d.opus(&["add", "web", &repo.url()]).ok();
    let id = d.trigger(&["web"]);
    let build = d.wait_for_state("web", id, "succeeded", 60);
    let version = build["version"].as_str().expect("a version").to_owned();
    d.opus(&["deploy", "web", &version]).ok();
    assert_eq!(d.get("web.localhost", "/").text().trim(), "hello");
    version
}

#[test]
fn remove_deletes_versions_releases_cache_and_mirror_and_a_new_project_starts_from_nothing() {
    let d = Daemon::start();
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write(
        "opus.yml",
        "build:\n  cache: [node_modules]\n  steps: [\"mkdir -p node_modules dist && echo hello > dist/index.html\"]\n",
    );
    repo.commit("first");
    let version = deployed_git_project(&d, &repo);
    let data = d.data_dir();
    let stored = data.join("artifacts/web");
    let cache = data.join("cache/web");
    let mirror = data.join("git/web.git");
    for path in [&stored.join(&version), &cache, &mirror] {
        assert!(
            path.exists(),
            "{} missing before the removal",
            path.display()
        );
    }

    // Not a terminal and no --yes: refused, and nothing changes.
    let refused = d.opus(&["remove", "web"]);
    let err = refused.fails(1).to_owned();
    assert!(err.contains("--yes"), "{err}");
    for path in [&stored.join(&version), &cache, &mirror] {
        assert!(
            path.exists(),
            "{} removed by a refused removal",
            path.display()
        );
    }
    assert_eq!(d.get("web.localhost", "/").text().trim(), "hello");
    let listed = d.opus(&["list", "-o", "json"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    d.opus(&["remove", "web", "--yes"]).ok();
    assert!(
        !stored.exists(),
        "the store still holds {}",
        stored.display()
    );
    assert!(!cache.exists(), "the build cache stays");
    assert!(!mirror.exists(), "the git mirror stays");
    assert_eq!(d.get("web.localhost", "/").status, 404);

    // The same name again: no versions, no releases, and the next release is number 1.
    d.opus(&["add", "web", &repo.url()]).ok();
    let versions = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(versions.as_array().map(Vec::len), Some(0), "{versions}");
    let releases = d.opus(&["releases", "web", "-o", "json"]).json();
    assert_eq!(releases.as_array().map(Vec::len), Some(0), "{releases}");
    let id = d.trigger(&["web"]);
    let build = d.wait_for_state("web", id, "succeeded", 60);
    let again = build["version"].as_str().expect("a version").to_owned();
    d.opus(&["deploy", "web", &again]).ok();
    let versions = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
    let releases = d.opus(&["releases", "web", "-o", "json"]).json();
    let list = releases.as_array().expect("an array");
    assert_eq!(list.len(), 1, "{releases}");
    assert_eq!(list[0]["seq"], 1, "{releases}");
    assert_eq!(d.get("web.localhost", "/").text().trim(), "hello");
}
