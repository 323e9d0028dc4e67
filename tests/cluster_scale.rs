//! Scaling the sampler tier under steady load through two LBs: 3 → 5 (two
//! samplers join; the others push them the traces they now own), then
//! 5 → 3 (they leave; each hands everything over). Every error and slow
//! trace arrives whole, no normal trace arrives partial, no span arrives
//! twice, and every sampler's books balance.

mod cluster_support;

use std::time::Duration;

use cluster_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_three_samplers_to_five_and_back_keeps_every_kept_trace_whole() {
    let mut cluster = Cluster::start("scale", 3, 5).await;
    let load = cluster.generate(Duration::from_secs(28), 2500.0);
    tokio::time::sleep(Duration::from_secs(4)).await;

    cluster.add_sampler(3).await;
    cluster.add_sampler(4).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    // The newcomers took traces over from the others.
    let mut moved_in = 0.0;
    for i in [3, 4] {
        moved_in += cluster.metrics(i).await.sum(
            "tailgate_spans_received_from_peers_total",
            &[("mark", "handed_over")],
        );
    }
    assert!(moved_in > 0.0, "the new samplers received their traces");

    cluster.stop_samplers(&[3, 4]).await;
    let report = load.await.expect("gen finishes");
    cluster.quiesce(Duration::from_secs(40)).await;
    cluster.assert_identities().await;
    let verified = cluster.verify(|_| false).await;
    assert_verified(&verified, &report);
    cluster.shutdown().await;
}
