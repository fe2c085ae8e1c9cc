//! Benchmark (not a test): the time from the Rollback RPC returning to the first site response
//! with the old version, and how long the Deploy and Rollback RPCs take.
//!
//! Usage: `cargo run --release -p opus-tests --example rollback_latency -- API SITES HOST PROJECT OLD NEW [RUNS]`
//! (`API`/`SITES` as `http://127.0.0.1:<port>`); `OLD` must be deployed before `NEW` in the
//! environment's history, so that a rollback from `NEW` lands on `OLD`. `bench/sites.sh` runs it.

use std::time::{Duration, Instant};

use opus_core::proto::{self, deploy_service_client::DeployServiceClient};
use opus_tests::http;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: rollback_latency API SITES HOST PROJECT OLD NEW [RUNS]");
        std::process::exit(2);
    }
    let (api, sites, host, project, old, new) =
        (&args[1], &args[2], &args[3], &args[4], &args[5], &args[6]);
    let runs: usize = args.get(7).and_then(|r| r.parse().ok()).unwrap_or(50);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(api.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect to opusd");
        DeployServiceClient::new(channel)
    });
    let (mut switch, mut deploy_rpc, mut rollback_rpc) = (Vec::new(), Vec::new(), Vec::new());
    let mut polls_total = 0;
    for _ in 0..runs {
        let t = Instant::now();
        rt.block_on(client.deploy(proto::DeployRequest {
            project: project.clone(),
            version: new.clone(),
            env: String::new(),
        }))
        .expect("deploy");
        deploy_rpc.push(t.elapsed());
        assert_eq!(
            http(sites, "GET", host, "/index.html", &[]).header("x-opus-version"),
            new
        );
        let t = Instant::now();
        rt.block_on(client.rollback(proto::RollbackRequest {
            project: project.clone(),
            env: String::new(),
            to: old.clone(),
        }))
        .expect("rollback");
        let returned = Instant::now();
        rollback_rpc.push(returned - t);
        loop {
            polls_total += 1;
            let r = http(sites, "GET", host, "/index.html", &[]);
            if r.header("x-opus-version") == old {
                break;
            }
        }
        switch.push(returned.elapsed());
    }
    println!(
        "  rollback: RPC returns -> old version served: median {:.3} ms, max {:.3} ms ({} runs, {} requests: {} needed more than one)",
        median(&mut switch.clone()).as_secs_f64() * 1e3,
        switch
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
        runs,
        polls_total,
        polls_total - runs
    );
    println!(
        "  Deploy RPC median {:.2} ms, Rollback RPC median {:.2} ms (each includes the store's fsync)",
        median(&mut deploy_rpc).as_secs_f64() * 1e3,
        median(&mut rollback_rpc).as_secs_f64() * 1e3
    );
}
