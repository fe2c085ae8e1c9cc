//! `opus.v1.ArtifactService`: the publish protocol end to end, and the status codes of its errors.

use opus_core::artifact::sha256_hex;
use opus_core::proto::artifact_service_client::ArtifactServiceClient;
use opus_core::proto::project_service_client::ProjectServiceClient;
use opus_core::proto::{self};
use opus_server::config::{Config, ConfigArgs};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

/// A running opusd; stopped cleanly when dropped.
struct Daemon {
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    channel: Channel,
}

impl Daemon {
    async fn start() -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::resolve(ConfigArgs {
            data_dir: Some(dir.path().to_path_buf()),
            sites_listen: Some("127.0.0.1:0".parse().expect("address")),
            ..Default::default()
        })
        .expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = opus_server::serve(listener, config, shutdown).await {
                panic!("opusd failed: {e}");
            }
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Daemon {
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
            channel,
        }
    }

    fn artifacts(&self) -> ArtifactServiceClient<Channel> {
        ArtifactServiceClient::new(self.channel.clone())
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("opusd task");
        }
    }
}

fn entry(path: &str, data: &[u8]) -> proto::ManifestEntry {
    proto::ManifestEntry {
        path: path.into(),
        size: data.len() as u64,
        sha256: sha256_hex(data),
        mode: 0o644,
    }
}

async fn upload(
    client: &mut ArtifactServiceClient<Channel>,
    upload_id: &str,
    data: &[u8],
) -> Result<(), tonic::Status> {
    let (head, tail) = data.split_at(data.len() / 2);
    let messages = vec![
        proto::UploadBlobRequest {
            upload_id: upload_id.into(),
            sha256: sha256_hex(data),
            data: head.to_vec(),
        },
        proto::UploadBlobRequest {
            upload_id: String::new(),
            sha256: String::new(),
            data: tail.to_vec(),
        },
    ];
    client
        .upload_blob(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn publish_download_verify_and_error_codes() {
    let daemon = Daemon::start().await;
    let mut projects = ProjectServiceClient::new(daemon.channel.clone());
    projects
        .create_project(proto::CreateProjectRequest {
            name: "web".into(),
            source: "https://example.com/web.git".into(),
            branch: String::new(),
        })
        .await
        .expect("project");
    let mut client = daemon.artifacts();
    let index = b"<html>hello</html>".to_vec();
    let app = "console.log(1);\n".repeat(1000).into_bytes();
    let files = vec![entry("index.html", &index), entry("static/app.js", &app)];
    let begin = |version: &str, files: Vec<proto::ManifestEntry>| proto::BeginPublishRequest {
        project: "web".into(),
        version: version.into(),
        files,
        store: String::new(),
    };

    let started = client
        .begin_publish(begin("1.0.0", files.clone()))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(started.missing.len(), 2);
    // Wrong bytes for a digest are refused.
    let wrong = proto::UploadBlobRequest {
        upload_id: started.upload_id.clone(),
        sha256: sha256_hex(&index),
        data: vec![b'x'; index.len()],
    };
    let err = client
        .upload_blob(futures::stream::iter(vec![wrong]))
        .await
        .expect_err("mismatch");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    upload(&mut client, &started.upload_id, &index)
        .await
        .expect("upload index");
    upload(&mut client, &started.upload_id, &app)
        .await
        .expect("upload app");
    let version = client
        .commit_publish(proto::CommitPublishRequest {
            upload_id: started.upload_id.clone(),
        })
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(
        (
            version.version.as_str(),
            version.file_count,
            version.build_id
        ),
        ("1.0.0", 2, 0)
    );

    // Listed, with its manifest; its archive downloads and holds the files.
    let listed = client
        .list_versions(proto::ListVersionsRequest {
            project: "web".into(),
        })
        .await
        .expect("list");
    assert_eq!(listed.into_inner().versions.len(), 1);
    let manifest = client
        .get_manifest(proto::GetManifestRequest {
            project: "web".into(),
            version: "1.0.0".into(),
        })
        .await
        .expect("manifest")
        .into_inner();
    assert_eq!(
        manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["index.html", "static/app.js"]
    );
    let mut stream = client
        .download_archive(proto::DownloadArchiveRequest {
            project: "web".into(),
            version: "1.0.0".into(),
        })
        .await
        .expect("download")
        .into_inner();
    let mut gz = Vec::new();
    let mut total = None;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        total.get_or_insert(chunk.total_size);
        gz.extend_from_slice(&chunk.data);
    }
    assert_eq!(Some(gz.len() as u64), total);
    assert_eq!(opus_core::archive::list(&gz[..]).expect("archive").len(), 2);

    // Publishing the same content again uploads nothing.
    let again = client
        .begin_publish(begin("1.0.1", files.clone()))
        .await
        .expect("begin")
        .into_inner();
    assert!(again.missing.is_empty());
    client
        .commit_publish(proto::CommitPublishRequest {
            upload_id: again.upload_id,
        })
        .await
        .expect("commit");

    let report = client
        .verify_version(proto::VerifyVersionRequest {
            project: "web".into(),
            version: String::new(),
        })
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(
        (
            report.versions_checked,
            report.files_checked,
            report.problems.len()
        ),
        (2, 4, 0)
    );

    // The error codes.
    let code = |r: Result<tonic::Response<proto::BeginPublishResponse>, tonic::Status>| {
        r.expect_err("refused").code()
    };
    assert_eq!(
        code(client.begin_publish(begin("1.0.0", files.clone())).await),
        Code::AlreadyExists
    );
    for reserved in ["archive", "manifest", "../1", "a/b", ""] {
        assert_eq!(
            code(client.begin_publish(begin(reserved, files.clone())).await),
            Code::InvalidArgument,
            "{reserved}"
        );
    }
    for path in ["../escape.html", "/etc/passwd", "a/../../b"] {
        let evil = vec![entry(path, b"x")];
        assert_eq!(
            code(client.begin_publish(begin("2.0", evil)).await),
            Code::InvalidArgument,
            "{path}"
        );
    }
    let mut unknown_project = begin("2.0", files.clone());
    unknown_project.project = "nope".into();
    assert_eq!(
        code(client.begin_publish(unknown_project).await),
        Code::NotFound
    );
    let mut unknown_store = begin("2.0", files.clone());
    unknown_store.store = "elsewhere".into();
    assert_eq!(
        code(client.begin_publish(unknown_store).await),
        Code::InvalidArgument
    );
    let incomplete = client
        .begin_publish(begin("2.0", vec![entry("new.html", b"new")]))
        .await
        .expect("begin")
        .into_inner();
    let err = client
        .commit_publish(proto::CommitPublishRequest {
            upload_id: incomplete.upload_id,
        })
        .await
        .expect_err("content missing");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = client
        .commit_publish(proto::CommitPublishRequest {
            upload_id: "nope".into(),
        })
        .await
        .expect_err("no upload");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .get_manifest(proto::GetManifestRequest {
            project: "web".into(),
            version: "9.9".into(),
        })
        .await
        .expect_err("no version");
    assert_eq!(err.code(), Code::NotFound);
    client
        .delete_version(proto::DeleteVersionRequest {
            project: "web".into(),
            version: "1.0.0".into(),
        })
        .await
        .expect("delete");
    let err = client
        .delete_version(proto::DeleteVersionRequest {
            project: "web".into(),
            version: "1.0.0".into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    let report = client
        .verify_version(proto::VerifyVersionRequest {
            project: "web".into(),
            version: "1.0.1".into(),
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    daemon.stop().await;
}
