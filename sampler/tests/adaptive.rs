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
