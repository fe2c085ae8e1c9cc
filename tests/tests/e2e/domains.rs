//! Custom domains through the real binaries: `opus domain add|list|remove`, routing by the
//! custom host, the refusals, events, and a restart.

use opus_tests::Daemon;

/// A daemon with projects `web` and `docs`, each with version `1.0` deployed to production (and
/// `web`'s also to `staging`).
fn daemon_with_sites() -> Daemon {
    let d = Daemon::start();
    for project in ["web", "docs"] {
        let src = d.root.path().join(format!("src-{project}"));
        std::fs::create_dir_all(&src).expect("mkdir");
        d.opus(&["add", project, src.to_str().expect("utf-8")]).ok();
        let dir = d.root.path().join(format!("site-{project}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("index.html"), format!("{project} 1.0")).expect("write");
        d.publish(project, "1.0", &dir);
        d.opus(&["deploy", project, "1.0"]).ok();
    }
    d.opus(&["deploy", "web", "1.0", "--env", "staging"]).ok();
    d
}

#[test]
fn a_custom_domain_routes_to_its_environment_and_survives_a_restart() {
    let mut d = daemon_with_sites();
    assert_eq!(d.get("www.acme.com", "/").status, 404);

    let out = d.opus(&["domain", "add", "web", "WWW.acme.com"]);
    assert!(
        out.ok().contains("www.acme.com serves web production"),
        "{}",
        out.stdout
    );
    d.opus(&[
        "domain",
        "add",
        "web",
        "staging.acme.com",
        "--env",
        "staging",
    ])
    .ok();
    d.opus(&["domain", "add", "docs", "docs.acme.com"]).ok();
    assert_eq!(d.get("www.acme.com", "/").text(), "web 1.0");
    assert_eq!(d.get("staging.acme.com", "/").status, 200);
    assert_eq!(d.get("docs.acme.com", "/").text(), "docs 1.0");
    // The wildcard hosts keep working.
    assert_eq!(d.get("web.localhost", "/").text(), "web 1.0");

    let listed = d.opus(&["domain", "list", "web", "-o", "json"]).json();
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|x| x["domain"].as_str())
        .collect();
    assert_eq!(names, ["staging.acme.com", "www.acme.com"]);
    assert_eq!(listed[1]["env"], "production");
    assert!(
        listed[1]["url"]
            .as_str()
            .expect("url")
            .starts_with("http://www.acme.com:"),
        "{listed}"
    );
    let table = d.opus(&["domain", "list"]);
    assert!(table.ok().contains("docs.acme.com"), "{}", table.stdout);

    let events = d.opus(&["events", "-o", "json"]).ok().to_owned();
    assert!(events.contains("domain.added"), "{events}");

    d.restart();
    assert_eq!(d.get("www.acme.com", "/").text(), "web 1.0");

    let out = d.opus(&["domain", "remove", "www.acme.com"]);
    assert!(out.ok().contains("removed www.acme.com"), "{}", out.stdout);
    assert_eq!(d.get("www.acme.com", "/").status, 404);
    let again = d.opus(&["domain", "remove", "www.acme.com"]);
    assert!(
        again.fails(1).contains("no custom domain"),
        "{}",
        again.stderr
    );
    let events = d.opus(&["events", "-o", "json"]).ok().to_owned();
    assert!(events.contains("domain.removed"), "{events}");

    // Removing a project frees its domains.
    d.opus(&["remove", "docs", "--yes"]).ok();
    assert_eq!(d.get("docs.acme.com", "/").status, 404);
    d.opus(&["domain", "add", "web", "docs.acme.com"]).ok();
    assert_eq!(d.get("docs.acme.com", "/").text(), "web 1.0");
}

#[test]
fn a_domain_of_another_project_and_bad_host_names_are_refused() {
    let d = daemon_with_sites();
    d.opus(&["domain", "add", "web", "www.acme.com"]).ok();
    let taken = d.opus(&["domain", "add", "docs", "www.acme.com"]);
    let why = taken.fails(1);
    assert!(why.contains("already belongs to project \"web\""), "{why}");
    // Re-adding it to its own environment changes nothing.
    d.opus(&["domain", "add", "web", "www.acme.com"]).ok();
    assert_eq!(d.get("www.acme.com", "/").text(), "web 1.0");

    for (host, why) in [
        ("localhost", "localhost"),
        ("127.0.0.1", "IP address"),
        ("not a host", "only letters"),
        ("acme", "two labels"),
        ("*.acme.com", "wildcard"),
        // Under opusd's own --domain (localhost here) and so already an environment's host.
        ("web.localhost", "localhost"),
    ] {
        let out = d.opus(&["domain", "add", "web", host]);
        assert!(out.fails(1).contains(why), "{host}: {}", out.stderr);
    }
    let missing = d.opus(&["domain", "add", "nobody", "x.acme.com"]);
    assert!(
        missing.fails(1).contains("no project"),
        "{}",
        missing.stderr
    );
    let listed = d.opus(&["domain", "list", "-o", "json"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[test]
fn a_host_under_the_sites_domain_is_refused() {
    let d = Daemon::start_with(&["--domain", "sites.example.com"]);
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    for host in ["sites.example.com", "www.sites.example.com"] {
        let out = d.opus(&["domain", "add", "web", host]);
        assert!(
            out.fails(1).contains("under opusd's own sites domain"),
            "{host}: {}",
            out.stderr
        );
    }
    d.opus(&["domain", "add", "web", "example.com"]).ok();
}
