//! gen → sink directly, no cluster: everything sent arrives once, and
//! verify says so.

mod common;

use common::*;
use loadtest::generate;
use loadtest::manifest::{self, Line};
use loadtest::verify::{Expectations, verify_files};

async fn everything_arrives(endpoints: impl Fn(&loadtest::RunningSink) -> Vec<loadtest::Endpoint>) {
    let files = files();
    let sink = recording_sink(&files.record).await;
    let config = small_run(endpoints(&sink), 3_000, &files.manifest);
    let report = generate::run(config).await.expect("gen runs");
    let stats = sink.stop().await.expect("sink stops");

    assert_eq!(report.spans_offered, 3_000, "the count is exact");
    assert_eq!(report.spans_sent, 3_000);
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.spans_unsent, 0);
    assert!(
        report.error_traces > 0 && report.slow_traces > 0,
        "{report}"
    );
    assert!(report.requests > 10, "spans travel in many requests");
    assert_eq!(stats.spans, 3_000);
    assert_eq!(stats.recorded, 3_000);
    assert_eq!(stats.refused + stats.invalid, 0);

    let mut traces = 0;
    manifest::read(&files.manifest, |line| {
        if let Line::Trace(_) = line {
            traces += 1;
        }
    })
    .expect("the manifest is complete");
    assert_eq!(traces, report.traces);

    let verified = verify_files(
        std::slice::from_ref(&files.manifest),
        std::slice::from_ref(&files.record),
        Expectations::keep_all(),
    )
    .expect("everything sent arrived, once");
    assert_eq!(verified.spans_received, 3_000);
    assert_eq!(verified.errors.whole, report.error_traces);
    assert_eq!(
        verified.sampled.whole,
        report.slow_traces + report.normal_traces
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_over_grpc_delivers_every_span_once() {
    everything_arrives(|sink| vec![grpc(sink)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_over_http_delivers_every_span_once() {
    everything_arrives(|sink| vec![http(sink)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_over_both_protocols_at_once_delivers_every_span_once() {
    everything_arrives(|sink| vec![grpc(sink), http(sink)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_makes_the_same_manifest() {
    let files = files();
    let other = files.dir.path().join("other.jsonl");
    let sink = recording_sink(&files.record).await;
    for path in [&files.manifest, &other] {
        generate::run(small_run(vec![grpc(&sink)], 500, path))
            .await
            .expect("gen runs");
    }
    sink.stop().await.expect("sink stops");
    let read = |path| {
        let mut lines = Vec::new();
        manifest::read(path, |line| lines.push(line)).expect("complete");
        lines
    };
    let (a, b) = (read(&files.manifest), read(&other));
    assert!(!a.is_empty());
    // Durations and IDs are drawn from the seed; only wall-clock start times differ.
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_bound_ends_the_run_by_itself() {
    let files = files();
    let sink = recording_sink(&files.record).await;
    let mut config = small_run(vec![grpc(&sink)], 1, &files.manifest);
    config.count = None;
    config.rate = 2_000.0;
    config.duration = Some(std::time::Duration::from_millis(300));
    let report = generate::run(config).await.expect("gen runs");
    let stats = sink.stop().await.expect("sink stops");
    assert!(report.spans_sent > 0);
    assert_eq!(stats.spans, report.spans_sent);
    verify_files(&[files.manifest], &[files.record], Expectations::keep_all())
        .expect("whole traces only, even when the run ends mid-stream");
}
