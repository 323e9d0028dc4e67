//! `bench --endpoints` against a stand-in cluster: the bench's own sink is
//! the endpoint (gen → sink directly), this test process is the measured
//! node, and a canned admin server serves decision and drop counters.

mod common;

use std::time::Duration;

use common::*;
use loadtest::bench::{self, BenchConfig, BenchError};
use loadtest::sink::SinkConfig;
use loadtest::transport::Endpoint;
use loadtest::verify::Expectations;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port free a moment ago (the bench binds its sink itself).
fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("addr")
}

/// Serves `/metrics` whose decision counter grows by 15 per scrape.
async fn fake_admin() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut sampled = 10;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let body = format!(
                "# TYPE tailgate_decisions_total counter\n\
                 tailgate_decisions_total{{node=\"s0\",decision=\"sampled\"}} {sampled}\n\
                 tailgate_spans_received_total{{node=\"s0\"}} 99\n"
            );
            sampled += 15;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    format!("http://{addr}/metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_given_endpoints_reports_rates_cpu_rss_latency_metrics_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink_addr = free_port();
    let mut traffic = small_run(
        vec![Endpoint::grpc(sink_addr)],
        1,
        &dir.path().join("unused"),
    );
    traffic.count = None;
    traffic.rate = 5_000.0;
    traffic.duration = Some(Duration::from_millis(500));
    let config = BenchConfig {
        traffic,
        sink: SinkConfig {
            grpc: Some(sink_addr),
            http: None,
            ..SinkConfig::default()
        },
        pids: vec![(std::process::id(), "this test".into())],
        metrics: vec![fake_admin().await],
        baseline: Duration::from_millis(200),
        settle: Duration::from_millis(100),
        expect: Expectations::keep_all(),
        dir: dir.path().join("bench"),
        local: bench::LocalSpec::default(),
    };
    let report = bench::run(config).await.expect("bench runs");

    assert!(report.verify.passed(), "{report}");
    assert!(report.traffic.spans_sent > 0);
    assert_eq!(report.sink.spans, report.traffic.spans_sent);
    assert_eq!(report.verify.spans_received, report.traffic.spans_sent);
    let node = &report.processes[0];
    assert!(node.rss_peak_bytes > 0 && node.rss_end_bytes > 0);
    assert!(report.cluster_cpu_secs() > 0.0, "this process did the work");
    assert!(report.spans_per_core().is_some());
    assert!(report.baseline.is_some_and(|b| b.count > 0));
    assert!(report.added_latency().is_some());
    assert_eq!(
        report
            .metrics
            .get("tailgate_decisions_total{decision=\"sampled\"}"),
        Some(&15.0),
        "the change over the run, node label dropped"
    );
    assert!(!report.metrics.keys().any(|k| k.contains("received")));
    let text = report.to_string();
    assert!(
        text.contains("spans/s per core") && text.contains("PASS"),
        "{text}"
    );
    assert!(dir.path().join("bench/manifest.jsonl").exists());
}

/// A bench that starts `local` itself (no endpoints, no pids, no
/// baseline, no settle), expecting the default policy.
fn started_by_the_bench(
    traffic: loadtest::GenConfig,
    local: bench::LocalSpec,
    dir: std::path::PathBuf,
) -> BenchConfig {
    BenchConfig {
        traffic,
        sink: SinkConfig::loopback(),
        pids: vec![],
        metrics: vec![],
        baseline: Duration::ZERO,
        settle: Duration::ZERO,
        expect: Expectations::default_policy(),
        dir,
        local,
    }
}

/// `LocalRole::Forwarder` (the floor of `bench --figure lb-cpu`): the bench
/// starts this package's `tailgate-loadtest forward` with the sink as its
/// upstream, measures that process, and everything sent arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_through_the_forwarder_measures_it_and_everything_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut traffic = small_run(vec![], 1, &dir.path().join("m"));
    traffic.count = None;
    traffic.rate = 20_000.0;
    traffic.duration = Some(Duration::from_secs(1));
    let mut config = started_by_the_bench(
        traffic,
        bench::LocalSpec {
            role: bench::LocalRole::Forwarder,
            loadtest: Some(env!("CARGO_BIN_EXE_tailgate-loadtest").into()),
            ..bench::LocalSpec::default()
        },
        dir.path().join("bench"),
    );
    config.settle = Duration::from_millis(100);
    config.expect = Expectations::keep_all();
    let report = bench::run(config).await.expect("bench runs");
    assert!(report.verify.passed(), "{report}");
    assert!(report.traffic.spans_sent > 0, "{report}");
    assert_eq!(report.sink.spans, report.traffic.spans_sent, "{report}");
    assert_eq!(report.processes.len(), 1, "{report}");
    assert_eq!(report.processes[0].name, "tailgate-loadtest forward");
    assert!(report.processes[0].cpu_secs > 0.0, "{report}");
    // No admin port, so no counters to read.
    assert!(report.metrics.is_empty(), "{report}");
}

#[tokio::test]
async fn bench_without_endpoints_fails_clearly_when_tailgate_cannot_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut traffic = small_run(vec![], 1, &dir.path().join("m"));
    traffic.duration = Some(Duration::from_secs(1));
    let config = started_by_the_bench(
        traffic,
        bench::LocalSpec {
            tailgate: Some("/nonexistent/tailgate".into()),
            samplers: 1,
            ..bench::LocalSpec::default()
        },
        dir.path().to_owned(),
    );
    let err = bench::run(config).await.expect_err("no cluster to start");
    assert!(
        matches!(err, BenchError::Config(ref m) if m.contains("starting /nonexistent/tailgate")),
        "{err}"
    );
}
