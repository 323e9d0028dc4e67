//! Log records sampled with their traces, through a real sampler node to a
//! recording backend: records of kept traces arrive with them, none of a
//! dropped trace, records without a trace ID at once; late records follow
//! the remembered decision; the log accounting identity holds.

mod support;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use proto::view::TraceId;
use support::*;

const ERRORS_ONLY: &str = "\
decision_wait: 60s
decision_wait_after_root_received: 200ms
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";

/// A logs request: one record per `(trace, number)`; the number is the
/// record's `time_unix_nano`.
fn logs(records: &[(Option<TraceId>, u64)]) -> Bytes {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records
                    .iter()
                    .map(|(id, n)| LogRecord {
                        time_unix_nano: *n,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("record {n}"))),
                        }),
                        trace_id: id.map(|t| t.0.to_vec()).unwrap_or_default(),
                        span_id: id.map(|_| vec![1; 8]).unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
    .into()
}

async fn send_logs(node: &Node, body: Bytes) {
    node.client()
        .for_signal(proto::receiver::Signal::Logs)
        .export(body)
        .await
        .expect("logs accepted");
}

fn log_identity(m: &Metrics, node: &str) -> (f64, f64) {
    let n = [("node", node)];
    let received = m.sum("tailgate_log_records_received_total", &n);
    let accounted = m.sum("tailgate_log_records_forwarded_total", &n)
        + m.sum("tailgate_log_records_not_sampled_total", &n)
        + m.sum("tailgate_log_records_dropped_total", &n)
        + m.sum("tailgate_log_records_buffered", &n);
    (received, accounted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_leave_with_their_trace_kept_or_dropped_and_traceless_ones_at_once() {
    let backend = Backend::start().await;
    let dir = temp_dir("logs-sampled");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, ERRORS_ONLY).unwrap();
    let node = Node::start(config("logs-node", &policy, &backend));
    let (kept, dropped) = (trace_id(1), trace_id(2));

    // Logs first, before any span of their traces; then the spans.
    send_logs(
        &node,
        logs(&[
            (Some(kept), 1),
            (Some(dropped), 2),
            (None, 3),
            (Some(kept), 4),
            (None, 5),
        ]),
    )
    .await;
    // The trace-less ones go at once, before any decision.
    assert!(
        wait_for(200, || backend.log_records().len() == 2).await,
        "{:?}",
        backend.log_records()
    );
    assert_eq!(backend.log_records(), vec![(None, 3), (None, 5)]);

    node.send(&[
        SpanSpec::new(1, 0).root().error(),
        SpanSpec::new(1, 1),
        SpanSpec::new(2, 0).root(),
        SpanSpec::new(2, 1),
    ])
    .await
    .unwrap();
    // A record arriving while its trace is buffered waits with it.
    send_logs(&node, logs(&[(Some(kept), 6), (Some(dropped), 7)])).await;
    assert!(wait_for(300, || backend.spans_of(trace_id(1)).len() == 2).await);
    assert!(wait_for(300, || backend.log_records().len() == 5).await);
    let mut records = backend.log_records();
    records.sort_by_key(|r| r.1);
    assert_eq!(
        records,
        vec![
            (Some(kept), 1),
            (None, 3),
            (Some(kept), 4),
            (None, 5),
            (Some(kept), 6)
        ]
    );
    assert!(
        backend.spans_of(trace_id(2)).is_empty(),
        "trace 2 is dropped"
    );

    // Late records follow the remembered decision.
    send_logs(&node, logs(&[(Some(kept), 8), (Some(dropped), 9)])).await;
    assert!(wait_for(300, || backend.log_records().len() == 6).await);
    assert!(backend.log_records().contains(&(Some(kept), 8)));
    assert!(
        !backend.log_records().iter().any(|r| r.0 == Some(dropped)),
        "no record of the dropped trace arrives"
    );

    let m = node
        .metrics_until(300, |m| {
            m.sum(
                "tailgate_log_records_not_sampled_total",
                &[("node", "logs-node")],
            ) == 3.0
        })
        .await;
    assert_eq!(log_identity(&m, "logs-node"), (9.0, 9.0));
    let n = [("node", "logs-node")];
    assert_eq!(m.sum("tailgate_log_records_forwarded_total", &n), 6.0);
    assert_eq!(m.sum("tailgate_log_records_not_sampled_total", &n), 3.0);
    assert_eq!(m.sum("tailgate_log_records_buffered", &n), 0.0);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_records_leave_with_a_kept_trace_when_kept_decisions_are_not_remembered() {
    let backend = Backend::start().await;
    let dir = temp_dir("logs-no-cache");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, ERRORS_ONLY).unwrap();
    let mut c = config("logs-no-cache", &policy, &backend);
    c.decision_cache.sampled = 0;
    let node = Node::start(c);
    let (kept, dropped) = (trace_id(1), trace_id(2));
    send_logs(&node, logs(&[(Some(kept), 1), (Some(dropped), 2)])).await;
    node.send(&[
        SpanSpec::new(1, 0).root().error(),
        SpanSpec::new(2, 0).root(),
    ])
    .await
    .unwrap();
    assert!(wait_for(300, || backend.spans_of(trace_id(1)).len() == 1).await);
    // The records follow the decision taken, remembered or not.
    assert!(
        wait_for(300, || backend.log_records().len() == 1).await,
        "{:?}",
        backend.log_records()
    );
    assert_eq!(backend.log_records(), vec![(Some(kept), 1)]);
    let n = [("node", "logs-no-cache")];
    let m = node
        .metrics_until(300, |m| {
            m.sum("tailgate_log_records_not_sampled_total", &n) == 1.0
        })
        .await;
    assert_eq!(m.sum("tailgate_log_records_forwarded_total", &n), 1.0);
    assert_eq!(log_identity(&m, "logs-no-cache"), (2.0, 2.0));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_records_count_in_the_buffer_and_orphans_are_forwarded_at_shutdown() {
    let backend = Backend::start().await;
    let dir = temp_dir("logs-held");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, ERRORS_ONLY).unwrap();
    let node = Node::start(config("logs-held", &policy, &backend));
    let n = [("node", "logs-held")];
    // Records of a trace whose spans never come: held (decision_wait is a
    // minute), counted as buffered, their bytes in the buffer's.
    send_logs(
        &node,
        logs(&[(Some(trace_id(9)), 1), (Some(trace_id(9)), 2)]),
    )
    .await;
    let m = node
        .metrics_until(200, |m| m.sum("tailgate_log_records_buffered", &n) == 2.0)
        .await;
    assert_eq!(m.sum("tailgate_log_records_buffered", &n), 2.0);
    assert!(m.sum("tailgate_buffer_bytes", &n) > 0.0);
    assert_eq!(log_identity(&m, "logs-held"), (2.0, 2.0));
    assert!(backend.log_records().is_empty());
    // Shutdown: no trace to follow, so they are forwarded, not lost.
    node.shutdown().await.unwrap();
    assert!(wait_for(200, || backend.log_records().len() == 2).await);
    let m = Metrics::parse(&proto::admin::install_metrics().render());
    assert_eq!(m.sum("tailgate_log_records_orphaned_total", &n), 2.0);
    assert_eq!(log_identity(&m, "logs-held"), (2.0, 2.0));
    assert_eq!(m.sum("tailgate_log_records_buffered", &n), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_forwards_every_record_and_counts_what_its_trace_would_have_kept() {
    let backend = Backend::start().await;
    let dir = temp_dir("logs-dry-run");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, ERRORS_ONLY).unwrap();
    let mut c = config("logs-dry", &policy, &backend);
    c.dry_run = true;
    let node = Node::start(c);
    let (kept, dropped) = (trace_id(1), trace_id(2));
    send_logs(
        &node,
        logs(&[
            (Some(kept), 1),
            (Some(dropped), 2),
            (Some(dropped), 3),
            (None, 4),
        ]),
    )
    .await;
    node.send(&[
        SpanSpec::new(1, 0).root().error(),
        SpanSpec::new(2, 0).root(),
    ])
    .await
    .unwrap();
    let n = [("node", "logs-dry")];
    node.metrics_until(300, |m| m.sum("tailgate_traces_decided_total", &n) == 2.0)
        .await;
    // A late record of the trace that would not have been kept: forwarded
    // too, counted by the remembered decision.
    send_logs(&node, logs(&[(Some(dropped), 5)])).await;
    assert!(wait_for(300, || backend.log_records().len() == 5).await);
    let mut records = backend.log_records();
    records.sort_by_key(|r| r.1);
    assert_eq!(
        records,
        vec![
            (Some(kept), 1),
            (Some(dropped), 2),
            (Some(dropped), 3),
            (None, 4),
            (Some(dropped), 5)
        ]
    );
    let m = node
        .metrics_until(300, |m| {
            m.sum("tailgate_log_records_forwarded_total", &n) == 5.0
        })
        .await;
    let kept_label = |k: &'static str| [("node", "logs-dry"), ("kept", k)];
    assert_eq!(
        m.sum("tailgate_log_records_dry_run_total", &kept_label("true")),
        1.0
    );
    assert_eq!(
        m.sum("tailgate_log_records_dry_run_total", &kept_label("false")),
        3.0,
        "the records the trace's decision would have dropped"
    );
    assert_eq!(m.sum("tailgate_log_records_not_sampled_total", &n), 0.0);
    assert_eq!(log_identity(&m, "logs-dry"), (5.0, 5.0));
    node.shutdown().await.unwrap();
}

/// With `storage:`, the logs exporter has a disk queue (`DIR/spill-logs`):
/// while the backend is down, kept traces' records the small memory queue
/// has no room for go to disk instead of pushing back, and every one
/// arrives, once, when the backend is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_records_spill_to_the_logs_disk_queue_while_the_backend_is_down_and_all_arrive() {
    let backend = Backend::start().await;
    let dir = temp_dir("logs-spill");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, ERRORS_ONLY).unwrap();
    let mut c = config("logs-spill", &policy, &backend);
    c.storage = Some(sampler::StorageConfig::new(dir.join("data")));
    c.logs_exporter = Some(proto::exporter::ExporterConfig {
        name: "logs".into(),
        queue_bytes: 2048,
        max_batch_bytes: 1024,
        ..c.exporter.clone()
    });
    let node = Node::start(c);
    backend.set_down(true);
    // 200 records of a kept trace, held until its decision, and 50 without
    // a trace ID (forwarded at once): far more than the memory queue holds.
    let kept = trace_id(1);
    for batch in 0..20u64 {
        let mut records: Vec<(Option<TraceId>, u64)> =
            (0..10).map(|i| (Some(kept), batch * 10 + i)).collect();
        if batch % 4 == 0 {
            records.extend((0..10).map(|i| (None, 1000 + batch * 10 + i)));
        }
        send_logs(&node, logs(&records)).await;
    }
    node.send(&[SpanSpec::new(1, 0).root().error()])
        .await
        .unwrap();
    let spilled = [("node", "logs-spill"), ("exporter", "logs")];
    let m = node
        .metrics_until(400, |m| {
            m.sum(
                "tailgate_log_records_forwarded_total",
                &[("node", "logs-spill")],
            ) == 250.0
        })
        .await;
    assert_eq!(
        m.sum(
            "tailgate_log_records_forwarded_total",
            &[("node", "logs-spill")]
        ),
        250.0,
        "handed to the logs exporter while the backend is down"
    );
    assert!(
        m.sum("tailgate_exporter_spans_spilled_total", &spilled) >= 100.0,
        "past the memory queue, on disk: {}",
        m.sum("tailgate_exporter_spans_spilled_total", &spilled)
    );
    assert!(backend.log_records().is_empty());
    assert!(
        dir.join("data").join("spill-logs").is_dir(),
        "the logs' disk queue is DIR/spill-logs"
    );

    backend.set_down(false);
    assert!(wait_for(600, || backend.log_records().len() >= 250).await);
    let mut got: Vec<u64> = backend.log_records().iter().map(|r| r.1).collect();
    got.sort_unstable();
    let mut want: Vec<u64> = (0..200).collect();
    want.extend(
        [0u64, 4, 8, 12, 16]
            .iter()
            .flat_map(|b| (0..10).map(move |i| 1000 + b * 10 + i)),
    );
    want.sort_unstable();
    assert_eq!(got, want, "every record once");
    let m = node
        .metrics_until(400, |m| {
            m.sum("tailgate_exporter_spill_batches", &spilled) == 0.0
        })
        .await;
    assert_eq!(m.sum("tailgate_exporter_spill_batches", &spilled), 0.0);
    assert_eq!(log_identity(&m, "logs-spill"), (250.0, 250.0));
    node.shutdown().await.unwrap();
}
