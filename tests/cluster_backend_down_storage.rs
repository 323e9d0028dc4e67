//! Issue 15: the backend is down for five minutes (the sink stopped: its
//! port refuses connections) under a modest steady load, and each sampler
//! has a write-ahead log (`storage:`) and a small memory export queue
//! (256 KiB). What the memory queue has no room for, and what runs out of
//! retries (`max_elapsed_time: 120s`, less than the outage), spills to the
//! disk queue; once the sink is started again on the same address it all
//! arrives: every error and slow trace whole, no span twice, no drop
//! counted anywhere, and every sampler's books balance.
//!
//! Five real minutes, as the issue says: this test is in the nextest group
//! `slow` (.config/nextest.toml), so it runs beside the other tests rather
//! than adding its length to the cluster group's.

mod cluster_support;

use std::time::Duration;

use cluster_support::*;

const OUTAGE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_for_five_minutes_with_a_small_memory_queue_loses_nothing() {
    let mut cluster =
        Cluster::start_with_storage_and_queue("backend-down-storage", 3, 3, 256 * 1024).await;
    // 400 spans/s for the outage and 30 s around it: about 130k spans,
    // a fifth of them kept.
    let load = cluster.generate(OUTAGE + Duration::from_secs(30), 400.0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.restart_sink(OUTAGE).await;
    let report = load.await.expect("gen finishes");
    cluster.quiesce(Duration::from_secs(180)).await;
    cluster.assert_identities().await;
    for i in 0..3 {
        let m = cluster.metrics(i).await;
        let spilled = m.sum("tailgate_exporter_spans_spilled_total", &[]);
        eprintln!(
            "sampler-{i}: {spilled} spans spilled, {} retried, {} sent",
            m.sum("tailgate_exporter_spans_retried_total", &[]),
            m.sum("tailgate_exporter_spans_sent_total", &[]),
        );
        assert!(spilled > 0.0, "sampler-{i} spilled to its disk queue");
        for dropped in [
            "tailgate_spans_dropped_total",
            "tailgate_exporter_spans_dropped_total",
            "tailgate_exporter_spill_full_total",
            "tailgate_exporter_spill_errors_total",
        ] {
            assert_eq!(m.sum(dropped, &[]), 0.0, "sampler-{i} {dropped}");
        }
        assert_eq!(
            m.sum("tailgate_exporter_spill_batches", &[]),
            0.0,
            "sampler-{i} sent its disk queue"
        );
    }
    assert!(
        cluster.sink().stats().spans > 0,
        "the restarted backend got what waited"
    );
    let verified = cluster.verify(|_| false).await;
    assert_verified(&verified, &report);
    cluster.shutdown().await;
}
