//! Fleet-wide budgets: three samplers behind two LBs share one
//! `rate_limiting` budget of 300 spans/s (without the exchange each would
//! spend it whole: about 900 spans/s), and still do after the tier scales
//! to five.

mod cluster_support;

use std::time::Duration;

use cluster_support::*;

const BUDGET: f64 = 300.0;

/// Only the budget keeps traces, so what reaches the backend is what the
/// fleet's rate limiters let through.
const FLEET_POLICY: &str = "\
decision_wait: 3s
policies:
  - name: budget
    type: rate_limiting
    rate_limiting: {spans_per_second: 300}
";

/// Spans per second the backend took over `window`.
async fn delivered(cluster: &Cluster, window: Duration) -> f64 {
    let before = cluster.sink().stats().spans;
    tokio::time::sleep(window).await;
    let after = cluster.sink().stats().spans;
    (after - before) as f64 / window.as_secs_f64()
}

/// Every live sampler's share of the budget, and how many peers each
/// heard from recently.
async fn shares(cluster: &Cluster) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for i in cluster.samplers.keys() {
        let m = cluster.metrics(*i).await;
        out.push((
            m.sum("tailgate_fleet_share", &[("policy", "budget")]),
            m.sum("tailgate_fleet_peers_reporting", &[]),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_budget_holds_for_the_whole_tier_before_and_after_scaling_out() {
    let mut cluster = Cluster::start_with_policy("fleet", 3, 5, FLEET_POLICY).await;
    // Well over the budget: 2,500 spans/s offered for 50 s.
    let load = cluster.generate(Duration::from_secs(50), 2500.0);
    // Past the first decisions and the limiters' initial bursts.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let three = delivered(&cluster, Duration::from_secs(10)).await;
    let three_shares = shares(&cluster).await;

    cluster.add_sampler(3).await;
    cluster.add_sampler(4).await;
    // The newcomers' first bursts and the hand-over pass.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let five = delivered(&cluster, Duration::from_secs(10)).await;
    let five_shares = shares(&cluster).await;

    eprintln!(
        "fleet budget {BUDGET} spans/s: 3 samplers delivered {three:.1} spans/s (shares {three_shares:?}), 5 samplers {five:.1} spans/s (shares {five_shares:?})"
    );
    for (members, rate, shares) in [(3, three, &three_shares), (5, five, &five_shares)] {
        assert!(
            (BUDGET * 0.9..=BUDGET * 1.1).contains(&rate),
            "{members} samplers delivered {rate:.0} spans/s against a fleet budget of {BUDGET}; shares {shares:?}"
        );
        let total: f64 = shares.iter().map(|(s, _)| s).sum();
        assert!(
            (total - 1.0).abs() < 0.1,
            "{members} samplers' shares add up to {total}: {shares:?}"
        );
        assert!(
            shares
                .iter()
                .all(|(_, peers)| *peers == (members - 1) as f64),
            "every sampler hears from the {} others: {shares:?}",
            members - 1
        );
    }

    let report = load.await.expect("gen finishes");
    assert!(report.spans_sent > 0);
    cluster.quiesce(Duration::from_secs(40)).await;
    cluster.assert_identities().await;
    cluster.shutdown().await;
}
