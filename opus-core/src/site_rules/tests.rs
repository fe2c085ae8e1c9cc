//! Table-driven tests against the examples of Netlify's documentation of `_redirects`
//! (docs.netlify.com/routing/redirects, redirect-options, rewrites-proxies) and `_headers`
//! (docs.netlify.com/routing/headers).

use super::*;

/// One rule file, and what requests get.
fn ruleset(text: &str) -> RuleSet {
    let redirects = parse_redirects(text, REDIRECTS_FILE).expect("parses");
    SiteRules {
        redirects,
        headers: Vec::new(),
    }
    .compile()
}

fn hit(status: u16, to: &str, force: bool) -> Option<Matched> {
    Some(Matched {
        status,
        to: to.into(),
        force,
    })
}

#[test]
fn netlify_redirect_examples_match_as_documented() {
    // (rules, request path, query, expected)
    let cases: &[(&str, &str, Option<&str>, Option<Matched>)] = &[
        // Basic redirects: the default status is 301.
        ("/home /", "/home", None, hit(301, "/", false)),
        (
            "/blog/my-post.php /blog/my-post",
            "/blog/my-post.php",
            None,
            hit(301, "/blog/my-post", false),
        ),
        ("/news /blog", "/news/", None, hit(301, "/blog", false)),
        (
            "/cuties https://www.petsofnetlify.com",
            "/cuties",
            None,
            hit(301, "https://www.petsofnetlify.com", false),
        ),
        (
            "/authors/c%C3%A9line /authors/about-c%C3%A9line",
            "/authors/c%C3%A9line",
            None,
            hit(301, "/authors/about-c%C3%A9line", false),
        ),
        // Paths are case-sensitive.
        ("/home /", "/Home", None, None),
        // HTTP status codes.
        (
            "/my-redirect / 302",
            "/my-redirect",
            None,
            hit(302, "/", false),
        ),
        (
            "/pass-through /index.html 200",
            "/pass-through",
            None,
            hit(200, "/index.html", false),
        ),
        (
            "/ecommerce /store-closed 404",
            "/ecommerce",
            None,
            hit(404, "/store-closed", false),
        ),
        ("/old /new 307", "/old", None, hit(307, "/new", false)),
        ("/old /new 308", "/old", None, hit(308, "/new", false)),
        // Splats.
        (
            "/news/* /blog/:splat",
            "/news/2004/01/10/my-story",
            None,
            hit(301, "/blog/2004/01/10/my-story", false),
        ),
        (
            "/news/* /blog/:splat",
            "/news",
            None,
            hit(301, "/blog/", false),
        ),
        ("/news/* /blog/:splat", "/newsletter", None, None),
        // Placeholders.
        (
            "/news/:month/:date/:year/:slug /blog/:year/:month/:date/:slug",
            "/news/02/12/2004/some-story",
            None,
            hit(301, "/blog/2004/02/12/some-story", false),
        ),
        (
            "/news/:month/:date/:year/:slug /blog/:year/:month/:date/:slug",
            "/news/02/12/2004",
            None,
            None,
        ),
        (
            "/news/:year/:month/:date /bar/blog/:year-:month-:date.html 200",
            "/news/2021/04/13",
            None,
            hit(200, "/bar/blog/2021-04-13.html", false),
        ),
        // Query parameters: a rule with them matches only requests carrying them.
        (
            "/store id=:id /blog/:id 301",
            "/store",
            Some("id=my-blog-post"),
            hit(301, "/blog/my-blog-post", false),
        ),
        ("/store id=:id /blog/:id 301", "/store", None, None),
        (
            "/articles id=:id tag=:tag /posts/:tag/:id 301",
            "/articles",
            Some("id=123&tag=rust"),
            hit(301, "/posts/rust/123", false),
        ),
        (
            "/articles id=:id tag=:tag /posts/:tag/:id 301",
            "/articles",
            Some("id=1"),
            None,
        ),
        // Without conditions, the query string plays no part in matching and is passed on.
        (
            "/old /new 301",
            "/old",
            Some("a=1"),
            hit(301, "/new?a=1", false),
        ),
        (
            "/old /new?b=2 301",
            "/old",
            Some("a=1"),
            hit(301, "/new?b=2", false),
        ),
        // The single-page-app rewrite.
        (
            "/* /index.html 200",
            "/some/route",
            None,
            hit(200, "/index.html", false),
        ),
        // Custom 404 pages.
        (
            "/en/* /en/404.html 404",
            "/en/missing",
            None,
            hit(404, "/en/404.html", false),
        ),
        // Force (shadowing).
        (
            "/app/* /app/index.html 200!",
            "/app/index.html",
            None,
            hit(200, "/app/index.html", true),
        ),
        ("/old /new 301!", "/old", None, hit(301, "/new", true)),
        // First match wins; comments and blank lines are skipped.
        (
            "# comment\n\n/a /first 302\n/a /second 301",
            "/a",
            None,
            hit(302, "/first", false),
        ),
        // A port in an absolute URL is not a placeholder.
        (
            "/x https://example.com:8443/y 302",
            "/x",
            None,
            hit(302, "https://example.com:8443/y", false),
        ),
    ];
    for (rules, path, query, want) in cases {
        let got = ruleset(rules).redirect(path, *query);
        assert_eq!(&got, want, "rules {rules:?}, request {path} ? {query:?}");
    }
}

#[test]
fn malformed_redirect_lines_fail_naming_the_file_and_line() {
    // (file, line number, words the error holds)
    let cases: &[(&str, usize, &str)] = &[
        ("/a /b 299", 1, "status 299 is not supported"),
        ("/ok /fine\n/a /b 30x", 2, "\"30x\" is not a status"),
        ("/a /a 301", 1, "redirects to itself"),
        ("/a/ /a 302", 1, "redirects to itself"),
        ("/blog/* /blog/:splat 301", 1, "redirects to itself"),
        ("/p/:id /p/:id 308!", 1, "redirects to itself"),
        ("/a", 1, "has no target"),
        ("# c\n/  /anz  302  Country=au,nz", 2, "Country=au,nz"),
        ("/admin/* /admin 200! Role=admin", 1, "not supported"),
        (
            "http://blog.yoursite.com/* https://www.yoursite.com/blog/:splat 301!",
            1,
            "rules for other hosts are not supported",
        ),
        (
            "/api/* https://api.example.com/:splat 200",
            1,
            "does not proxy",
        ),
        ("/a/*/b /c", 1, "may only end"),
        ("/a* /c", 1, "whole segment"),
        ("/a junk /c", 1, "neither a query condition"),
        ("/a /b 301 extra", 1, "unexpected"),
    ];
    for (text, line, words) in cases {
        let e = parse_redirects(text, "_redirects").expect_err(text);
        assert_eq!((e.file.as_str(), e.line), ("_redirects", *line), "{text}");
        assert!(e.to_string().contains(words), "{text}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("_redirects line {line}: ")),
            "{e}"
        );
    }
    // Not loops: a rewrite to itself, a redirect elsewhere, a query condition.
    for ok in [
        "/a /a 200",
        "/a/* /b/:splat 301",
        "/store id=:id /store 301",
    ] {
        parse_redirects(ok, "_redirects").expect(ok);
    }
}

#[test]
fn netlify_header_examples_apply_as_documented() {
    let text = "\
# a path:
/templates/index.html
  # headers for that path:
  X-Frame-Options: DENY
  X-XSS-Protection: 1; mode=block
/templates/index2.html
  X-Frame-Options: SAMEORIGIN
/*
  Link: </style.css>; rel=preload; as=style
  cache-control: max-age=0
  cache-control: no-cache
/assets/*
  Cache-Control: public, max-age=31536000
  Access-Control-Allow-Origin: *
/:lang/about
  Content-Security-Policy: default-src 'self'
  Strict-Transport-Security: max-age=63072000; includeSubDomains; preload
";
    let rules = SiteRules {
        redirects: Vec::new(),
        headers: parse_headers(text, HEADERS_FILE).expect("parses"),
    }
    .compile();
    let h = |p: &str| rules.headers(p);
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    };
    assert_eq!(
        h("/templates/index.html"),
        pairs(&[
            ("x-frame-options", "DENY"),
            ("x-xss-protection", "1; mode=block"),
            ("link", "</style.css>; rel=preload; as=style"),
            ("cache-control", "max-age=0, no-cache"),
        ])
    );
    assert_eq!(
        h("/templates/index2.html")[0],
        ("x-frame-options".into(), "SAMEORIGIN".into())
    );
    assert_eq!(
        h("/assets/app.js"),
        pairs(&[
            ("link", "</style.css>; rel=preload; as=style"),
            (
                "cache-control",
                "max-age=0, no-cache, public, max-age=31536000"
            ),
            ("access-control-allow-origin", "*"),
        ])
    );
    assert_eq!(h("/en/about").len(), 4, "{:?}", h("/en/about"));
    assert_eq!(h("/en/about/team").len(), 2);
}

#[test]
fn malformed_header_lines_fail_naming_the_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("  X-Frame-Options: DENY", 1, "comes before any path"),
        ("/*\n  X Frame: DENY", 2, "not a valid header name"),
        ("/*\n  just words", 2, "is not a header"),
        (
            "/*\n  X-A: 1\n/empty\n/next\n  X-B: 2",
            3,
            "has no header under it",
        ),
        ("/*\n  X-A: 1\n/last", 3, "has no header under it"),
        ("/a*\n  X-A: 1", 1, "whole segment"),
    ];
    for (text, line, words) in cases {
        let e = parse_headers(text, "_headers").expect_err(text);
        assert_eq!(
            (e.file.as_str(), e.line),
            ("_headers", *line),
            "{text}: {e}"
        );
        assert!(e.to_string().contains(words), "{text}: {e}");
    }
}

#[test]
fn opus_yml_rules_name_their_position() {
    let mut headers = std::collections::BTreeMap::new();
    let mut values = std::collections::BTreeMap::new();
    values.insert("X-Frame-Options".to_owned(), "DENY".to_owned());
    headers.insert("/*".to_owned(), values);
    let rules = SiteRules::from_spec(&["/a /b 302".into()], &headers).expect("rules");
    assert_eq!(rules.redirects[0].status, 302);
    assert_eq!(rules.headers[0].headers[0].0, "x-frame-options");

    let e = SiteRules::from_spec(&["/ok /fine".into(), "/x /x 301".into()], &headers)
        .expect_err("loops");
    assert_eq!((e.file.as_str(), e.line), ("opus.yml site.redirects", 2));
    let mut bad = std::collections::BTreeMap::new();
    bad.insert("nope".to_owned(), std::collections::BTreeMap::new());
    let e = SiteRules::from_spec(&[], &bad).expect_err("not a path");
    assert_eq!(e.file, "opus.yml site.headers");
}

#[test]
fn rules_survive_the_store_s_json_and_files_come_before_opus_yml() {
    let files = SiteRules {
        redirects: parse_redirects("/a /b 302!", REDIRECTS_FILE).expect("parses"),
        headers: Vec::new(),
    };
    let yml = SiteRules {
        redirects: parse_redirects("/a /c 301", REDIRECTS_FILE).expect("parses"),
        headers: parse_headers("/*\n  X-A: 1", HEADERS_FILE).expect("parses"),
    };
    let all = files.then(yml);
    let json = serde_json::to_string(&all).expect("json");
    let back: SiteRules = serde_json::from_str(&json).expect("back");
    assert_eq!(back, all);
    assert_eq!(back.compile().redirect("/a", None), hit(302, "/b", true));
    assert!(SiteRules::default().is_empty());
    assert_eq!(
        serde_json::to_string(&SiteRules::default()).expect("json"),
        "{}"
    );
}
