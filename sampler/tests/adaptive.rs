//! The adaptive policies and fleet budgets as an operator sees them on a
//! standalone sampler: the current rates per policy and per top key, and
//! every budget's share (the whole budget, standalone) and demand.

mod support;

use std::time::Duration;

use support::*;

const POLICY: &str = "\
decision_wait: 100ms
policies:
  - name: dyn
    type: ema_dynamic
    ema_dynamic: {goal_sample_rate: 10, field_list: [], use_trace_length: true, adjustment_interval: 1s}
  - name: budget
    type: rate_limiting
    rate_limiting: {spans_per_second: 5}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_rates_and_fleet_shares_are_published() {
    let backend = Backend::start().await;
    let path = temp_dir("adaptive").join("policy.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let node = Node::start(config("adaptive", &path, &backend));
    let n = [("node", "adaptive")];
    // One-span traces in rounds across several adjustment intervals: one
    // key ("1", the trace length), so its rate is the goal, 10.
    for round in 0..5u64 {
        let specs: Vec<SpanSpec> = (0..50u64)
            .map(|t| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(round * 1000 + t).to_be_bytes());
                id[8] = 0xad;
                SpanSpec::new(0, 0)
                    .with_trace_id(proto::view::TraceId(id))
                    .root()
            })
            .collect();
        node.send(&specs).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let m = node
        .metrics_until(100, |m| {
            m.sum("tailgate_adaptive_sample_rate", &[("policy", "dyn")]) == 10.0
        })
        .await;
    assert_eq!(
        m.sum("tailgate_adaptive_sample_rate", &[("policy", "dyn")]),
        10.0
    );
    assert_eq!(m.sum("tailgate_adaptive_keys", &[("policy", "dyn")]), 1.0);
    assert_eq!(
        m.sum(
            "tailgate_adaptive_key_sample_rate",
            &[("policy", "dyn"), ("key", "1")]
        ),
        10.0
    );
    // Standalone, a budget is the node's.
    assert_eq!(
        m.sum(
            "tailgate_fleet_share",
            &[("node", "adaptive"), ("policy", "budget")]
        ),
        1.0
    );
    assert_eq!(m.sum("tailgate_fleet_pushes_total", &n), 0.0);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_kept_by_an_adaptive_policy_carry_the_threshold_of_its_rate() {
    let backend = Backend::start().await;
    let path = temp_dir("adaptive-th").join("policy.yaml");
    // Until its first adjustment (15 s) ema_dynamic answers its goal rate:
    // every kept trace is kept at 1 in 4, th = 0.75 = `c`.
    std::fs::write(
        &path,
        "\
decision_wait: 100ms
policies:
  - name: dyn
    type: ema_dynamic
    ema_dynamic: {goal_sample_rate: 4, field_list: [service.name]}
",
    )
    .unwrap();
    let mut c = config("adaptive-th", &path, &backend);
    c.use_tracestate = true;
    let node = Node::start(c);
    let specs: Vec<SpanSpec> = (0..200u64)
        .map(|t| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&t.to_be_bytes());
            id[8] = 0x7e;
            SpanSpec::new(0, 0)
                .with_trace_id(proto::view::TraceId(id))
                .root()
        })
        .collect();
    node.send(&specs).await.unwrap();
    let n = [("node", "adaptive-th")];
    node.metrics_until(200, |m| {
        m.sum("tailgate_spans_forwarded_total", &n) + m.sum("tailgate_spans_not_sampled_total", &n)
            == 200.0
    })
    .await;
    node.shutdown().await.unwrap();
    let mut states = Vec::new();
    for request in backend.requests() {
        proto::view::RequestView::new(&request)
            .for_each_span(|_, _, s| states.push(s.trace_state().to_owned()))
            .unwrap();
    }
    // About a quarter kept (200 draws at p = 1/4: 50 ± 6σ), each with th:c.
    assert!((20..=80).contains(&states.len()), "{} kept", states.len());
    assert!(states.iter().all(|s| s == "ot=th:c"), "{states:?}");
}

/// A reload that leaves an adaptive policy unchanged keeps its learned
/// keys and rates (a fresh estimator would have none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_adaptive_policy_keeps_its_rates_across_a_reload() {
    let backend = Backend::start().await;
    let path = temp_dir("adaptive-reload").join("policy.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let node = Node::start(config("adaptive-reload", &path, &backend));
    // Two keys (trace lengths 1 and 3) over several adjustment intervals.
    for round in 0..4u64 {
        let mut specs = Vec::new();
        for t in 0..40u64 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(round * 1000 + t).to_be_bytes());
            id[8] = 0xbe;
            let id = proto::view::TraceId(id);
            let spans = if t % 8 == 0 { 3 } else { 1 };
            specs.push(SpanSpec::new(0, 0).with_trace_id(id).root());
            for s in 1..spans {
                specs.push(SpanSpec::new(0, s).with_trace_id(id));
            }
        }
        node.send(&specs).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let keys = |m: &Metrics, policy: &str| m.sum("tailgate_adaptive_keys", &[("policy", policy)]);
    node.metrics_until(100, |m| keys(m, "dyn") == 2.0).await;

    // The same `dyn`, and a new adaptive policy whose gauge shows that the
    // reloaded set is the one published.
    std::fs::write(
        &path,
        format!(
            "{POLICY}  - name: fresh
    type: ema_dynamic
    ema_dynamic: {{goal_sample_rate: 5, field_list: [http.route]}}
"
        ),
    )
    .unwrap();
    node.reload.reload();
    let m = node
        .metrics_until(100, |m| {
            m.sum("tailgate_adaptive_sample_rate", &[("policy", "fresh")]) == 5.0
        })
        .await;
    // The request and the file poll may both notice the change.
    assert!(m.sum("tailgate_policy_reloads_total", &[("result", "success")]) >= 1.0);
    assert_eq!(keys(&m, "dyn"), 2.0, "dyn kept its keys across the reload");
    assert_eq!(keys(&m, "fresh"), 0.0);
    node.shutdown().await.unwrap();
}
