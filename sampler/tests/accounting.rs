//! Component tests of the node's promises under load: every span counted
//! exactly once, backpressure before dropping, memory under the limit.

mod support;

use std::time::Duration;

use support::*;
use tonic::Code;

const KEEP_ALL_LATER: &str = "\
decision_wait: 60s
policies:
  - name: everything
    type: always_sample
";

fn write_policy(name: &str, policy: &str) -> std::path::PathBuf {
    let path = temp_dir(name).join("policy.yaml");
    std::fs::write(&path, policy).unwrap();
    path
}

/// Traces `first..first + n`, one span each, padded to about `bytes`.
fn traces(first: usize, n: usize, bytes: usize) -> Vec<SpanSpec> {
    (first..first + n)
        .map(|t| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(t as u64).to_le_bytes());
            id[8] = 0x5a;
            SpanSpec::new(0, 0)
                .with_trace_id(proto::view::TraceId(id))
                .padded(bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accounting_identity_holds_after_a_mixed_workload() {
    let backend = Backend::start().await;
    let policy = "\
decision_wait: 60s
decision_wait_after_root_received: 100ms
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: slow
    type: latency
    latency: {threshold_ms: 500}
  - name: some
    type: probabilistic
    probabilistic: {sampling_percentage: 30}
";
    let mut c = config("mixed", &write_policy("mixed", policy), &backend);
    c.limits.max_spans_per_trace = 6;
    let node = Node::start(c);
    let n = [("node", "mixed")];
    let mut sent = 0usize;

    // 1. Traces with a root: decided 100 ms after it. Errors, slow ones,
    //    plain ones; a few big enough to hit the span cap first. Half over
    //    gRPC, half over HTTP.
    for batch in 0..10u8 {
        let mut specs = Vec::new();
        for i in 0..20u8 {
            let t = batch * 20 + i;
            let root = SpanSpec::new(t, 0).root();
            specs.push(match t % 4 {
                0 => root.error(),
                1 => root.times(1_000, 2_000),
                _ => root,
            });
            let children = if t % 25 == 0 { 8 } else { 2 };
            specs.extend((1..=children).map(|s| SpanSpec::new(t, s)));
        }
        sent += specs.len();
        if batch % 2 == 0 {
            node.send(&specs).await.unwrap();
        } else {
            assert_eq!(http_post_traces(node.http, &request(&specs)).await.0, 200);
        }
    }
    // 2. Rootless traces: they wait the full minute, buffered.
    let rootless: Vec<SpanSpec> = (200..230u8).map(|t| SpanSpec::new(t, 1)).collect();
    sent += rootless.len();
    node.send(&rootless).await.unwrap();
    // 3. Not received: a malformed request.
    assert_eq!(http_post_traces(node.http, b"\x0a\xff\xff").await.0, 400);

    let quiet = |m: &Metrics, sent: usize, decided: f64| {
        let (received, accounted) = m.identity(&[("node", "mixed")]);
        received == sent as f64
            && received == accounted
            && m.sum("tailgate_traces_decided_total", &n) >= decided
    };
    let m = node.metrics_until(400, |m| quiet(m, sent, 200.0)).await;
    assert_eq!(m.identity(&[("node", "mixed")]), (sent as f64, sent as f64));
    assert_eq!(m.sum("tailgate_buffer_spans", &n), 30.0);
    assert_eq!(m.sum("tailgate_buffer_traces", &n), 30.0);
    assert_eq!(
        m.sum(
            "tailgate_traces_decided_early_total",
            &[("node", "mixed"), ("reason", "span_cap")]
        ),
        8.0
    );

    // 4. Late spans of decided traces follow their decisions.
    sent += 40;
    node.send(&(0..40u8).map(|t| SpanSpec::new(t, 20)).collect::<Vec<_>>())
        .await
        .unwrap();
    let m = node
        .metrics_until(400, |m| {
            quiet(m, sent, 200.0) && m.sum("tailgate_late_spans_total", &n) == 40.0
        })
        .await;
    assert_eq!(m.identity(&[("node", "mixed")]), (sent as f64, sent as f64));
    assert_eq!(m.sum("tailgate_late_spans_total", &n), 40.0);
    assert_eq!(m.sum("tailgate_buffer_spans", &n), 30.0);
    for protocol in ["grpc", "http"] {
        let received = [("node", "mixed"), ("protocol", protocol)];
        assert!(m.sum("tailgate_spans_received_total", &received) > 0.0);
    }

    // 5. Shutdown decides the rest; the identity still holds, with
    //    nothing buffered.
    node.shutdown().await.unwrap();
    let m = Metrics::parse(&proto::admin::install_metrics().render());
    assert_eq!(m.identity(&[("node", "mixed")]), (sent as f64, sent as f64));
    assert_eq!(m.sum("tailgate_buffer_spans", &n), 0.0);
    assert_eq!(m.sum("tailgate_buffer_traces", &n), 0.0);
    let forwarded = m.sum("tailgate_spans_forwarded_total", &n);
    let not_sampled = m.sum("tailgate_spans_not_sampled_total", &n);
    assert!(forwarded > 0.0 && not_sampled > 0.0);
    assert_eq!(m.sum("tailgate_spans_dropped_total", &n), 0.0);
    assert_eq!(
        m.sum("tailgate_traces_decided_total", &n),
        230.0,
        "each trace once"
    );
    assert!(m.sum("tailgate_decision_latency_seconds_count", &n) >= 230.0);
    // What was forwarded is what the exporter sent and the backend got.
    assert_eq!(m.sum("tailgate_exporter_spans_sent_total", &n), forwarded);
    assert_eq!(backend.spans().len() as f64, forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_backpressure_statuses_while_memory_stays_under_the_limit() {
    let backend = Backend::start().await;
    let mut c = config("busy", &write_policy("overload", KEEP_ALL_LATER), &backend);
    c.limits.max_buffer_bytes = 1024 * 1024;
    c.limits.high_watermark = 0.5;
    let limit = c.limits.max_buffer_bytes as f64;
    let node = Node::start(c);
    let n = [("node", "busy")];

    // ~50 KiB per request, sent until the node pushes back.
    let mut refused = None;
    for i in 0..100 {
        let m = node.metrics().await;
        assert!(m.sum("tailgate_buffer_bytes", &n) <= limit);
        match node.send(&traces(i * 50, 50, 1000)).await {
            Ok(()) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        // Let the shards take it in, so the watermark sees it.
        node.metrics_until(100, |m| {
            m.identity(&[("node", "busy")]).0 == m.identity(&[("node", "busy")]).1
        })
        .await;
    }
    let refused = refused.expect("the node pushed back");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.is_retryable());
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
    let (status, response) = http_post_traces(node.http, &request(&traces(9000, 10, 100))).await;
    assert_eq!(status, 429, "{response}");

    let m = node.metrics().await;
    assert!(m.sum("tailgate_buffer_bytes", &n) <= limit);
    assert!(m.sum("tailgate_buffer_bytes", &n) >= limit * 0.5);
    assert!(
        m.sum(
            "tailgate_spans_refused_total",
            &[("node", "busy"), ("reason", "buffer_full")]
        ) >= 60.0
    );
    // Pushed back before the hard limit: nothing decided early, nothing dropped.
    assert_eq!(m.sum("tailgate_traces_decided_early_total", &n), 0.0);
    assert_eq!(m.sum("tailgate_spans_dropped_total", &n), 0.0);
    let (received, accounted) = m.identity(&[("node", "busy")]);
    assert_eq!(received, accounted);
    assert_eq!(m.sum("tailgate_buffer_spans", &n), received);
    node.shutdown().await.unwrap();
    assert_eq!(backend.spans().len() as f64, received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_hard_limit_the_oldest_traces_are_decided_early_not_discarded() {
    let backend = Backend::start().await;
    let mut c = config("full", &write_policy("hard", KEEP_ALL_LATER), &backend);
    c.limits.max_traces = Some(10);
    c.limits.high_watermark = 1.0;
    let node = Node::start(c);
    // One request past the limit: the watermark lets it in (nothing is
    // buffered yet), so the shards must make room.
    node.send(&traces(0, 30, 10)).await.unwrap();
    let m = node
        .metrics_until(400, |m| {
            m.sum("tailgate_traces_decided_early_total", &[("node", "full")]) >= 20.0
        })
        .await;
    let early = m.sum(
        "tailgate_traces_decided_early_total",
        &[("node", "full"), ("reason", "max_traces")],
    );
    assert!(early >= 20.0, "{early}");
    assert!(m.sum("tailgate_buffer_traces", &[("node", "full")]) <= 10.0);
    assert!(wait_for(500, || backend.spans().len() as f64 == early).await);
    node.shutdown().await.unwrap();
    assert_eq!(backend.spans().len(), 30, "decided early, never discarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_queue_pushes_back_on_ingest_instead_of_dropping() {
    let backend = Backend::start().await;
    backend.set_down(true);
    let policy = "\
decision_wait: 50ms
policies:
  - name: everything
    type: always_sample
";
    let mut c = config("backlog", &write_policy("backlog", policy), &backend);
    c.exporter.max_batch_bytes = 64 * 1024;
    c.exporter.queue_bytes = 64 * 1024;
    let node = Node::start(c);
    let n = [("node", "backlog")];

    let mut refused = None;
    for i in 0..200 {
        if let Err(e) = node.send(&traces(i * 20, 20, 500)).await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("the node pushed back");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    let m = node.metrics().await;
    assert!(
        m.sum(
            "tailgate_spans_refused_total",
            &[("node", "backlog"), ("reason", "export_backlog")]
        ) > 0.0
    );
    assert_eq!(m.sum("tailgate_spans_dropped_total", &n), 0.0);
    assert_eq!(m.sum("tailgate_exporter_spans_dropped_total", &n), 0.0);

    // The backend comes back: everything taken is delivered.
    backend.set_down(false);
    let m = node
        .metrics_until(600, |m| {
            let (received, _) = m.identity(&[("node", "backlog")]);
            m.sum("tailgate_exporter_spans_sent_total", &n) == received
        })
        .await;
    let (received, accounted) = m.identity(&[("node", "backlog")]);
    assert_eq!(received, accounted);
    assert_eq!(m.sum("tailgate_exporter_spans_sent_total", &n), received);
    assert_eq!(m.sum("tailgate_spans_forwarded_total", &n), received);
    node.shutdown().await.unwrap();
    assert_eq!(backend.spans().len() as f64, received);
}

/// Error traces `first..first + n`, one padded span each.
fn error_traces(first: usize, n: usize, bytes: usize) -> Vec<SpanSpec> {
    traces(first, n, bytes)
        .into_iter()
        .map(SpanSpec::error)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_span_refused_past_the_decision_wait_is_waited_for() {
    // The backend is down long enough to fill the export queue; the node
    // pushes back; the error span of a trace already buffered is refused,
    // and its retries come back after the trace's decision_wait.
    let backend = Backend::start().await;
    backend.set_down(true);
    let policy = "\
decision_wait: 2s
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";
    let mut c = config("refused", &write_policy("refused", policy), &backend);
    c.shards = 1;
    c.exporter.max_batch_bytes = 64 * 1024;
    c.exporter.queue_bytes = 64 * 1024;
    c.limits.retry_after = Duration::from_millis(200);
    let node = Node::start(c);
    let n = [("node", "refused")];

    // Kept traces enough to fill the queue once decided (at 2 s).
    for i in 0..20 {
        node.send(&error_traces(i * 20, 20, 500)).await.unwrap();
    }
    // The trace under test starts 1 s later: due at 3 s, by when the
    // shard waits for the exporter and the node refuses.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut id = [0u8; 16];
    id[0] = 0x7e;
    id[15] = 1;
    let id = proto::view::TraceId(id);
    node.send(&[SpanSpec::new(0, 0).with_trace_id(id).root()])
        .await
        .unwrap();
    // Past 2 s the error traces are decided and the shard waits for the
    // exporter; at 3 s the trace under test is due.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The client's error span: refused, retried every retry_after, as an
    // SDK does, until taken. The backend comes back 3 s into the retries.
    let error_span = [SpanSpec::new(0, 1).with_trace_id(id).error()];
    let mut refusals = 0;
    let started = std::time::Instant::now();
    let mut back = false;
    for _ in 0..200 {
        if !back && started.elapsed() > Duration::from_secs(3) {
            backend.set_down(false);
            back = true;
        }
        match node.send(&error_span).await {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(refusals > 0, "the error span was refused at least once");
    if !back {
        backend.set_down(false);
    }
    assert!(
        wait_for(500, || backend.spans_of(id).len() >= 2).await,
        "the trace arrives with its error span"
    );
    assert_eq!(backend.spans_of(id), [0, 1], "whole, once");
    let m = node
        .metrics_until(300, |m| {
            let (received, accounted) = m.identity(&[("node", "refused")]);
            received == accounted && m.sum("tailgate_buffer_spans", &n) == 0.0
        })
        .await;
    assert!(m.sum("tailgate_traces_held_for_refused_total", &n) >= 1.0);
    assert_eq!(
        m.sum("tailgate_late_spans_would_have_kept_total", &n),
        0.0,
        "no kept trace lost to lateness"
    );
    let (received, accounted) = m.identity(&[("node", "refused")]);
    assert_eq!(received, accounted);
    node.shutdown().await.unwrap();
    // Every error trace taken arrived.
    assert_eq!(backend.spans().len(), 20 * 20 + 2);
}
