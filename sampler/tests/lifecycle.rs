//! Component tests of the node's life: live policy reload, the staged
//! shutdown, and refusing to start on a bad config.

mod support;

use std::time::Duration;

use sampler::SamplerError;
use support::*;

const ERRORS_ONLY: &str = "\
decision_wait: 60s
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";

const KEEP_ALL: &str = "\
decision_wait: 60s
policies:
  - name: everything
    type: always_sample
";

/// Waits (at most 20 s) for a policy reload with `result`, checks it was
/// exactly one, and returns the scrape.
async fn one_reload(node: &Node, result: &str) -> Metrics {
    let reloads = |m: &Metrics| m.sum("tailgate_policy_reloads_total", &[("result", result)]);
    let m = node.metrics_until(400, |m| reloads(m) >= 1.0).await;
    assert_eq!(reloads(&m), 1.0);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mid_stream_takes_effect_without_losing_buffered_traces() {
    let backend = Backend::start().await;
    let mut cm = ConfigMapDir::new("reload", ERRORS_ONLY);
    let c = config("s1", &cm.path(), &backend);
    let max_bytes = c.limits.max_buffer_bytes as f64;
    let node = Node::start(c);
    let first = node.metrics().await;
    let hash_before = first.sum("tailgate_policy_hash", &[("node", "s1")]);
    // The limits the buffer gauges are held to: the policy file's default
    // num_traces, and the config's bytes.
    assert_eq!(
        first.sum("tailgate_buffer_limit_traces", &[("node", "s1")]),
        50_000.0
    );
    assert_eq!(
        first.sum("tailgate_buffer_limit_bytes", &[("node", "s1")]),
        max_bytes
    );

    // Buffered under "errors only": would not be kept.
    node.send(&[SpanSpec::new(1, 0).root(), SpanSpec::new(1, 1)])
        .await
        .unwrap();

    // The kubelet swaps `..data`; the node notices and swaps the policies.
    cm.swap(&format!("num_traces: 1234\n{KEEP_ALL}"));
    let m = one_reload(&node, "success").await;
    assert_ne!(
        m.sum("tailgate_policy_hash", &[("node", "s1")]),
        hash_before
    );
    assert_eq!(m.sum("tailgate_buffer_spans", &[("node", "s1")]), 2.0);
    assert_eq!(
        m.sum("tailgate_buffer_limit_traces", &[("node", "s1")]),
        1234.0,
        "max_traces follows the reloaded file"
    );

    // A broken file keeps the policies in force, and is counted.
    cm.swap("decision_wait: 60s\npolicies:\n  - name: x\n    type: no_such_type\n");
    one_reload(&node, "failure").await;
    node.send(&[SpanSpec::new(2, 0).root()]).await.unwrap();

    // Decided at shutdown by the policies in force then: everything kept.
    node.shutdown().await.unwrap();
    assert_eq!(backend.spans_of(trace_id(1)), [0, 1]);
    assert_eq!(backend.spans_of(trace_id(2)), [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_rereads_the_file_like_sighup() {
    let backend = Backend::start().await;
    let dir = temp_dir("request");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, ERRORS_ONLY).unwrap();
    let mut c = config("s1", &path, &backend);
    // Polling out of the way: only the request can notice.
    c.policy_poll_interval = Duration::from_secs(3600);
    let node = Node::start(c);
    std::fs::write(&path, KEEP_ALL).unwrap();
    node.reload.reload();
    one_reload(&node, "success").await;
    node.send(&[SpanSpec::new(3, 0).root()]).await.unwrap();
    node.shutdown().await.unwrap();
    assert_eq!(backend.spans_of(trace_id(3)), [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readyz_first_then_flushes_everything_pending() {
    let backend = Backend::start().await;
    let dir = temp_dir("shutdown");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, KEEP_ALL).unwrap();
    let mut c = config("s1", &path, &backend);
    c.shutdown.grace = Duration::from_secs(2);
    let mut node = Node::start(c);
    // Ready once `serve` has started the receivers (bounded wait: the task
    // may not have run yet).
    let mut ready = false;
    for _ in 0..250 {
        if http_get(node.admin, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "/readyz never answered 200");

    let traces: Vec<SpanSpec> = (0..50)
        .flat_map(|t| (0..4).map(move |s| SpanSpec::new(t, s)))
        .collect();
    for chunk in traces.chunks(20) {
        node.send(chunk).await.unwrap();
    }
    // Accepted means queued for a shard; buffered a moment later.
    let before = node
        .metrics_until(200, |m| {
            m.sum("tailgate_buffer_spans", &[("node", "s1")]) == 200.0
        })
        .await;
    assert_eq!(
        before.sum("tailgate_buffer_spans", &[("node", "s1")]),
        200.0
    );

    // What the binary does on SIGTERM.
    node.trigger_shutdown();
    let mut not_ready = false;
    for _ in 0..100 {
        if http_get(node.admin, "/readyz").await.0 == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(not_ready, "/readyz fails first");
    // Still serving during the grace period: this one is taken, and kept.
    node.send(&[SpanSpec::new(99, 0)]).await.unwrap();

    within(30, node.shutdown()).await.unwrap();
    let spans = backend.spans();
    assert_eq!(spans.len(), 201, "every pending span was flushed");
    for t in 0..50 {
        assert_eq!(backend.spans_of(trace_id(t)), [0, 1, 2, 3]);
    }
    let handle = proto::admin::install_metrics();
    let m = Metrics::parse(&handle.render());
    assert_eq!(
        m.sum(
            "tailgate_traces_decided_early_total",
            &[("node", "s1"), ("reason", "shutdown")]
        ),
        51.0
    );
    assert_eq!(m.identity(&[("node", "s1")]), (201.0, 201.0));
    assert_eq!(
        m.sum("tailgate_spans_forwarded_total", &[("node", "s1")]),
        201.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_a_client_gets_a_retryable_error_not_an_ok() {
    let backend = Backend::start().await;
    let dir = temp_dir("drain");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, KEEP_ALL).unwrap();
    let node = Node::start(config("s1", &path, &backend));
    let grpc = node.grpc;
    node.send(&[SpanSpec::new(1, 0)]).await.unwrap();
    within(30, node.shutdown()).await.unwrap();
    // The listeners are gone: a client gets a retryable error, never an OK
    // for spans that would be lost.
    let client = proto::exporter::OtlpClient::new(&proto::exporter::OtlpClientConfig::new(
        format!("http://{grpc}"),
    ))
    .unwrap();
    let err = client
        .export(request(&[SpanSpec::new(2, 0)]))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(backend.spans_of(trace_id(1)), [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_file_fails_before_any_port_is_bound() {
    let backend = Backend::start().await;
    let dir = temp_dir("bad");
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        "decision_wait: 1s\npolicies:\n  - name: a\n    type: latency\n    latency: {threshold_ms: -5}\n",
    )
    .unwrap();
    // A port in use: binding it would fail with a bind error instead.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config("s1", &path, &backend);
    c.receiver.grpc = Some(taken.local_addr().unwrap());
    let err = sampler::run(c, std::future::pending()).await.unwrap_err();
    assert!(matches!(err, SamplerError::Policy(_)), "{err}");
    assert!(err.is_config());
    let text = err.to_string();
    assert!(text.contains("policy.yaml:"), "names the place: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_future_completes() {
    let backend = Backend::start().await;
    let dir = temp_dir("run");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, KEEP_ALL).unwrap();
    let c = config("s1", &path, &backend);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sampler::run(c, async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished());
    tx.send(()).unwrap();
    within(30, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_file() {
    let backend = Backend::start().await;
    let dir = temp_dir("sighup");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, ERRORS_ONLY).unwrap();
    let mut c = config("s1", &path, &backend);
    c.policy_poll_interval = Duration::from_secs(3600);
    let node = Node::start(c);
    // Ready means the SIGHUP handler is in place (nextest runs each test in
    // a process of its own, so the signal reaches only this node).
    let mut ready = false;
    for _ in 0..200 {
        if http_get(node.admin, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready);
    std::fs::write(&path, KEEP_ALL).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    one_reload(&node, "success").await;
    node.send(&[SpanSpec::new(4, 0).root()]).await.unwrap();
    node.shutdown().await.unwrap();
    assert_eq!(backend.spans_of(trace_id(4)), [0]);
}
