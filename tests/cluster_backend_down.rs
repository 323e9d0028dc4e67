//! The backend refuses everything for 20 s under steady load, then comes
//! back: the samplers' export queues hold the kept traces and deliver them
//! once it is back, nothing is dropped, every error and slow trace arrives
//! whole, no span twice, and every sampler's books balance.

mod cluster_support;

use std::time::Duration;

use cluster_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_for_twenty_seconds_loses_nothing() {
    let mut cluster = Cluster::start("backend-down", 3, 3).await;
    let load = cluster.generate(Duration::from_secs(28), 2500.0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.sink().sink().refuse_for(Duration::from_secs(20));
    let report = load.await.expect("gen finishes");
    cluster.quiesce(Duration::from_secs(60)).await;
    cluster.assert_identities().await;
    for i in 0..3 {
        let m = cluster.metrics(i).await;
        assert_eq!(
            m.sum("tailgate_spans_dropped_total", &[]),
            0.0,
            "sampler-{i}"
        );
        assert_eq!(
            m.sum("tailgate_exporter_spans_dropped_total", &[]),
            0.0,
            "sampler-{i}"
        );
        assert!(
            m.sum("tailgate_exporter_spans_retried_total", &[]) > 0.0,
            "sampler-{i} saw the outage"
        );
    }
    assert!(cluster.sink().stats().refused > 0, "the backend refused");
    let verified = cluster.verify(|_| false).await;
    assert_verified(&verified, &report);
    cluster.shutdown().await;
}
