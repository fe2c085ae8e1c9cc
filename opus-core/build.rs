//! Generates the `opus.v1` API from `proto/` with a vendored protoc, so a fresh machine needs no
//! system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    let proto_dir = root.join("proto");
    let files = [
        "opus/v1/projects.proto",
        "opus/v1/builds.proto",
        "opus/v1/artifacts.proto",
        "opus/v1/deploys.proto",
        "opus/v1/events.proto",
        "opus/v1/system.proto",
        "opus/v1/runner.proto",
        "opus/v1/site_access.proto",
        "opus/v1/domains.proto",
        "opus/v1/github.proto",
        "opus/v1/approvals.proto",
        "opus/v1/github_app.proto",
    ];
    let protos: Vec<PathBuf> = files.iter().map(|f| proto_dir.join(f)).collect();
    let includes = [proto_dir.clone(), protoc_bin_vendored::include_path()?];

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("opus_descriptor.bin"))
        .compile_with_config(config, &protos, &includes)?;
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    Ok(())
}
