//! Tests of the layering and checks of [`Config::resolve`].

use std::path::Path;

use super::executor::POD_NAMESPACE_FILE;
use super::*;

#[test]
fn example_config_lists_every_setting() {
    let text = include_str!("../../../opusd.example.toml");
    let parsed: FileConfig = toml::from_str(text).expect("opusd.example.toml parses");
    let json = serde_json::to_value(&parsed).expect("serializes");
    let obj = json.as_object().expect("an object");
    let missing: Vec<_> = obj
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    assert!(missing.is_empty(), "opusd.example.toml lacks {missing:?}");
}

#[test]
fn a_malformed_file_names_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opusd.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\nmax_bulds = 3\n").expect("write");
    let err = Config::resolve(ConfigArgs {
        config: Some(path.clone()),
        ..Default::default()
    })
    .expect_err("unknown key");
    let msg = err.to_string();
    assert!(
        msg.contains("opusd.toml") && msg.contains("max_bulds"),
        "{msg}"
    );

    std::fs::write(&path, "max_builds = \"four\"\n").expect("write");
    let msg = Config::resolve(ConfigArgs {
        config: Some(path),
        ..Default::default()
    })
    .expect_err("wrong type")
    .to_string();
    assert!(
        msg.contains("max_builds") && msg.contains("line 1"),
        "{msg}"
    );
}

#[test]
fn flags_win_over_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opusd.toml");
    std::fs::write(&path, "max_builds = 3\ndomain = \"example.org\"\n").expect("write");
    let cfg = Config::resolve(ConfigArgs {
        config: Some(path),
        max_builds: Some(7),
        ..Default::default()
    })
    .expect("resolves");
    assert_eq!(cfg.max_builds, 7);
    assert_eq!(cfg.domain, "example.org");
}

#[test]
fn the_site_cache_size_comes_from_flags_the_file_or_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opusd.toml");
    std::fs::write(&path, "domain = \"example.org\"\n").expect("write");
    let cfg = Config::resolve(ConfigArgs {
        config: Some(path.clone()),
        ..Default::default()
    })
    .expect("resolves");
    assert_eq!(cfg.site_cache_size, 1 << 30, "1 GiB by default");
    std::fs::write(&path, "site_cache_size = 5000\n").expect("write");
    let file = ConfigArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    assert_eq!(
        Config::resolve(file.clone()).expect("file").site_cache_size,
        5000
    );
    let flag = ConfigArgs {
        site_cache_size: Some(7),
        ..file
    };
    assert_eq!(Config::resolve(flag).expect("flag").site_cache_size, 7);
    std::fs::write(&path, "site_cache_size = \"1GiB\"\n").expect("write");
    let msg = Config::resolve(ConfigArgs {
        config: Some(path),
        ..Default::default()
    })
    .expect_err("a size is a number of bytes")
    .to_string();
    assert!(msg.contains("site_cache_size"), "{msg}");
}

#[test]
fn extra_stores_come_from_flags_or_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opusd.toml");
    std::fs::write(&path, "[extra_stores]\nbackup = \"s3://bucket/opus\"\n").expect("write");
    let cfg = Config::resolve(ConfigArgs {
        config: Some(path.clone()),
        ..Default::default()
    })
    .expect("file");
    assert_eq!(
        cfg.extra_stores,
        [(
            StoreName::new("backup").expect("name"),
            "s3://bucket/opus".to_owned()
        )]
    );
    let cfg = Config::resolve(ConfigArgs {
        config: Some(path.clone()),
        extra_store: vec!["cdn=gs://b".into()],
        ..Default::default()
    })
    .expect("flags");
    assert_eq!(
        cfg.extra_stores,
        [(StoreName::new("cdn").expect("name"), "gs://b".to_owned())]
    );
    for bad in ["nourl", "default=file:///x", "Bad=s3://b", "x="] {
        let err = Config::resolve(ConfigArgs {
            config: Some(path.clone()),
            extra_store: vec![bad.into()],
            ..Default::default()
        })
        .expect_err("invalid");
        assert!(err.to_string().contains("extra_store"), "{bad}: {err}");
    }
}

#[test]
fn kubernetes_settings_have_defaults_and_are_checked() {
    let cfg = Config::resolve(ConfigArgs::default()).expect("defaults resolve");
    let k = &cfg.kubernetes;
    if !Path::new(POD_NAMESPACE_FILE).exists() {
        assert_eq!(k.namespace, "opus");
        assert_eq!(k.server_url(7070), "http://opusd.opus.svc:7070");
    }
    assert_eq!(k.runner_image, opus_core::kubernetes::default_image());
    assert_eq!(k.build_image, "node:20");

    let cfg = Config::resolve(ConfigArgs {
        executor: Some(ExecutorKind::Kubernetes),
        kubernetes_namespace: Some("ci".into()),
        runner_server_url: Some("https://opus.example.org/".into()),
        build_image: Some("node:22-bookworm".into()),
        ..Default::default()
    })
    .expect("resolves");
    assert_eq!(cfg.executor, ExecutorKind::Kubernetes);
    assert_eq!(cfg.kubernetes.namespace, "ci");
    assert_eq!(cfg.kubernetes.server_url(1), "https://opus.example.org");
    assert_eq!(cfg.kubernetes.build_image, "node:22-bookworm");

    for (args, key) in [
        (
            ConfigArgs {
                kubernetes_namespace: Some("Not_A_Label".into()),
                ..Default::default()
            },
            "kubernetes_namespace",
        ),
        (
            ConfigArgs {
                runner_server_url: Some("opusd:7070".into()),
                ..Default::default()
            },
            "runner_server_url",
        ),
        (
            ConfigArgs {
                runner_image: Some("two words".into()),
                ..Default::default()
            },
            "runner_image",
        ),
    ] {
        let err = Config::resolve(args).expect_err("invalid");
        assert!(
            err.to_string().starts_with(&format!("invalid {key}: ")),
            "{err}"
        );
    }
}

#[test]
fn non_loopback_needs_a_token() {
    let cfg = Config::resolve(ConfigArgs::default()).expect("defaults resolve");
    assert!(cfg.check_security(([127, 0, 0, 1], 1).into()).is_ok());
    assert!(cfg.check_security(([0, 0, 0, 0], 1).into()).is_err());
}

#[test]
fn non_loopback_refuses_a_short_token_and_says_how_to_make_one() {
    let with = |token: &str| {
        Config::resolve(ConfigArgs {
            token: Some(token.into()),
            ..Default::default()
        })
        .expect("resolves")
    };
    let short = with("fifteen-chars-x");
    assert!(short.check_security(([127, 0, 0, 1], 1).into()).is_ok());
    let msg = short
        .check_security(([0, 0, 0, 0], 1).into())
        .expect_err("too short beyond loopback")
        .to_string();
    assert!(
        msg.contains("15 characters") && msg.contains("openssl rand -hex 32"),
        "{msg}"
    );
    assert!(
        with("sixteen-chars-xx")
            .check_security(([0, 0, 0, 0], 1).into())
            .is_ok()
    );
}

#[test]
fn an_unreadable_tls_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("tls.key");
    std::fs::write(&key, "key").expect("write");
    let missing = dir.path().join("no-such.crt");
    let msg = Config::resolve(ConfigArgs {
        tls_cert: Some(missing.clone()),
        tls_key: Some(key.clone()),
        ..Default::default()
    })
    .expect_err("unreadable")
    .to_string();
    assert!(
        msg.contains("tls_cert") && msg.contains(&missing.display().to_string()),
        "{msg}"
    );
    std::fs::write(&missing, "cert").expect("write");
    let cfg = Config::resolve(ConfigArgs {
        tls_cert: Some(missing),
        tls_key: Some(key),
        ..Default::default()
    })
    .expect("readable");
    let tls = cfg.tls.expect("TLS is on");
    assert_eq!(
        (tls.cert.as_slice(), tls.key.as_slice()),
        (&b"cert"[..], &b"key"[..])
    );
}

#[test]
fn tuning_settings_come_from_flags_or_the_file_and_zero_is_refused() {
    let cfg = Config::resolve(ConfigArgs::default()).expect("defaults");
    assert_eq!(cfg.hook_retry, RetryPolicy::default());
    assert_eq!(cfg.kubernetes.poll, DEFAULT_KUBERNETES_POLL);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opusd.toml");
    std::fs::write(
        &path,
        "hook_retry_base_ms = 50\nhook_retry_cap_ms = 200\nhook_give_up_secs = 9\n\
         hook_timeout_ms = 2000\nkubernetes_poll_ms = 70\nexecutor = \"k8s\"\n",
    )
    .expect("write");
    let file = ConfigArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    let cfg = Config::resolve(file.clone()).expect("file");
    assert_eq!(
        cfg.hook_retry,
        RetryPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(200),
            give_up_after: Duration::from_secs(9),
            timeout: Duration::from_millis(2000),
        }
    );
    assert_eq!(cfg.kubernetes.poll, Duration::from_millis(70));
    assert_eq!(cfg.executor, ExecutorKind::Kubernetes);

    let cfg = Config::resolve(ConfigArgs {
        hook_timeout_ms: Some(5),
        kubernetes_poll_ms: Some(6),
        ..file.clone()
    })
    .expect("flags");
    assert_eq!(cfg.hook_retry.timeout, Duration::from_millis(5));
    assert_eq!(cfg.kubernetes.poll, Duration::from_millis(6));

    let msg = Config::resolve(ConfigArgs {
        hook_retry_base_ms: Some(0),
        ..file
    })
    .expect_err("zero")
    .to_string();
    assert_eq!(msg, "invalid hook_retry_base_ms: must be at least 1");

    std::fs::write(&path, "executor = \"docker\"\n").expect("write");
    let msg = Config::resolve(ConfigArgs {
        config: Some(path),
        ..Default::default()
    })
    .expect_err("unknown executor")
    .to_string();
    assert!(
        msg.contains("docker") && msg.contains("kubernetes"),
        "{msg}"
    );
}

#[test]
fn the_viewer_token_comes_from_a_flag_or_a_file_and_needs_an_api_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("viewer");
    std::fs::write(&file, "viewer-secret-1234\n").expect("write");
    let conf = dir.path().join("opusd.toml");
    std::fs::write(
        &conf,
        format!("viewer_token_file = {:?}\n", file.display().to_string()),
    )
    .expect("write");
    let cfg = Config::resolve(ConfigArgs {
        config: Some(conf.clone()),
        token: Some("api-token".into()),
        ..Default::default()
    })
    .expect("from the file");
    assert_eq!(cfg.viewer_token.as_deref(), Some("viewer-secret-1234"));
    let cfg = Config::resolve(ConfigArgs {
        token: Some("api-token".into()),
        viewer_token: Some("flag-viewer".into()),
        ..Default::default()
    })
    .expect("from the flag");
    assert_eq!(cfg.viewer_token.as_deref(), Some("flag-viewer"));

    for (token, viewer, needle) in [
        (None, "v", "needs an API token"),
        (Some("same"), "same", "is the API token"),
        (Some("api"), "", "empty"),
    ] {
        let err = Config::resolve(ConfigArgs {
            token: token.map(Into::into),
            viewer_token: Some(viewer.into()),
            ..Default::default()
        })
        .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("viewer_token") && text.contains(needle),
            "{text}"
        );
    }
    let err = Config::resolve(ConfigArgs {
        token: Some("api".into()),
        viewer_token_file: Some(dir.path().join("missing")),
        ..Default::default()
    })
    .expect_err("unreadable");
    assert!(err.to_string().contains("viewer_token_file"), "{err}");
}

#[test]
fn https_is_off_without_a_tls_listener_and_layered_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opusd.toml");
    let ca = dir.path().join("root.pem");
    std::fs::write(&ca, "a root").expect("write");
    std::fs::write(
        &path,
        format!(
            "sites_tls_listen = \"127.0.0.1:8443\"\nsites_https_redirect = false\nacme_challenge = \"tls-alpn-01\"\nacme_ca_file = {:?}\n",
            ca.display().to_string()
        ),
    )
    .expect("write");
    let off = Config::resolve(ConfigArgs::default()).expect("resolves");
    assert!(off.https.is_none());

    let cfg = Config::resolve(ConfigArgs {
        config: Some(path.clone()),
        https: super::HttpsArgs {
            acme_email: Some("ops@example.com".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("resolves");
    let https = cfg.https.expect("on");
    assert_eq!(https.tls_listen, ([127, 0, 0, 1], 8443).into());
    assert_eq!(https.acme_directory, super::LETS_ENCRYPT);
    assert_eq!(https.acme_email.as_deref(), Some("ops@example.com"));
    assert!(!https.redirect);
    assert_eq!(https.challenge, super::AcmeChallenge::TlsAlpn01);

    // A plain-HTTP directory and a CA file that cannot be read are refused, naming the key.
    for (args, key) in [
        (
            super::HttpsArgs {
                acme_directory: Some("http://ca.example.com/dir".into()),
                ..Default::default()
            },
            "acme_directory",
        ),
        (
            super::HttpsArgs {
                acme_ca_file: Some(dir.path().join("missing.pem")),
                ..Default::default()
            },
            "acme_ca_file",
        ),
    ] {
        let e = Config::resolve(ConfigArgs {
            config: Some(path.clone()),
            https: args,
            ..Default::default()
        })
        .expect_err("refused")
        .to_string();
        assert!(e.contains(key), "{e}");
    }
}
