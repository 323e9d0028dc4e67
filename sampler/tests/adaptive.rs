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
