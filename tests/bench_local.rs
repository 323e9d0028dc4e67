//! `tailgate-loadtest bench` with no endpoints starts a real `tailgate local`
//! (this package's binary), drives it, stops it, and verifies what the
//! backend got against the default policy.

use std::time::Duration;

use loadtest::bench::{self, BenchConfig, LocalSpec};
use loadtest::generate::GenConfig;
use loadtest::sink::SinkConfig;
use loadtest::verify::Expectations;

/// A short run at 3,000 spans/s with enough error and slow traces in 3 s to
/// check them, verified against the default policy, on the cluster `local`
/// describes (this package's `tailgate` binary).
fn short_run(dir: &std::path::Path, local: LocalSpec) -> BenchConfig {
    // Endpoints left empty: the bench starts the cluster and fills them in.
    let mut traffic = GenConfig::new(vec![]);
    traffic.rate = 3_000.0;
    traffic.duration = Some(Duration::from_secs(3));
    traffic.shape.error_rate = 0.05;
    traffic.shape.slow_rate = 0.05;
    BenchConfig {
        traffic,
        sink: SinkConfig {
            grpc: Some("127.0.0.1:0".parse().unwrap()),
            http: None,
            ..SinkConfig::default()
        },
        pids: vec![],
        metrics: vec![],
        baseline: Duration::ZERO,
        // The default policy decides 2 s after the root span arrives.
        settle: Duration::from_secs(3),
        // Too few "other" traces in 3 s for a tight share: keep the 4σ check.
        expect: Expectations::default_policy(),
        dir: dir.to_owned(),
        local: LocalSpec {
            tailgate: Some(env!("CARGO_BIN_EXE_tailgate").into()),
            ..local
        },
    }
}

/// Verify passed with error and slow traces among those sent, and the one
/// process started was measured.
fn held_the_default_policy(report: &bench::BenchReport) {
    assert!(report.verify.passed(), "{report}");
    assert!(
        report.traffic.error_traces > 0 && report.traffic.slow_traces > 0,
        "{report}"
    );
    assert_eq!(report.processes.len(), 1, "{report}");
    assert!(report.processes[0].cpu_secs > 0.0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_starts_a_local_cluster_and_the_default_policy_holds_end_to_end() {
    let dir = std::env::temp_dir().join(format!("tailgate-bench-local-{}", std::process::id()));
    let local = LocalSpec {
        samplers: 2,
        ..LocalSpec::default()
    };
    let report = bench::run(short_run(&dir, local))
        .await
        .expect("bench runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(report.traffic.spans_sent > 0, "{report}");
    held_the_default_policy(&report);
}

/// `LocalRole::Sampler` (`bench --figure sampler-cpu`): one real
/// `tailgate sampler` with the default policy, exporting to the sink; its
/// CPU is what is measured, and the default policy's promises hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_starts_a_sampler_alone_and_the_default_policy_holds_end_to_end() {
    let dir = std::env::temp_dir().join(format!("tailgate-bench-sampler-{}", std::process::id()));
    let local = LocalSpec {
        role: bench::LocalRole::Sampler,
        ..LocalSpec::default()
    };
    let report = bench::run(short_run(&dir, local))
        .await
        .expect("bench runs");
    let _ = std::fs::remove_dir_all(&dir);
    held_the_default_policy(&report);
    // The sampler kept a share, not everything: it decided.
    assert!(report.sink.spans < report.traffic.spans_sent, "{report}");
}
