//! A rolling restart of every sampler under steady load through two LBs:
//! each sampler in turn leaves DNS and gets SIGTERM (it hands its traces
//! and decisions over), then a new process takes its place and its traces
//! back. Every error and slow trace arrives whole, no normal trace arrives
//! partial, no span arrives twice, and every sampler's books balance.

mod cluster_support;

use std::time::Duration;

use cluster_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_sampler_keeps_every_kept_trace_whole() {
    let mut cluster = Cluster::start("rolling", 3, 3).await;
    let load = cluster.generate(Duration::from_secs(30), 2500.0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut handed_over = 0.0;
    for i in 0..3 {
        cluster.stop_sampler(i).await;
        // The replacement: ready, then listed (Kubernetes' minReadySeconds
        // lets every ring take it in before the next one leaves).
        cluster.add_sampler(i).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for j in cluster.samplers.keys() {
            handed_over += cluster.metrics(*j).await.sum(
                "tailgate_traces_handed_over_total",
                &[("reason", "rebalance")],
            );
        }
    }
    let report = load.await.expect("gen finishes");
    cluster.quiesce(Duration::from_secs(40)).await;
    cluster.assert_identities().await;
    assert!(handed_over > 0.0, "the new samplers got their traces back");
    let verified = cluster.verify(|_| false).await;
    assert_verified(&verified, &report);
    cluster.shutdown().await;
}
