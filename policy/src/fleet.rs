//! Fleet-wide budgets (a tailgate extension): when samplers run as a
//! cluster, `rate_limiting`, `bytes_limiting`, `composite`'s
//! `max_total_spans_per_second` and the throughput goals of
//! `ema_throughput` and `windowed_throughput` are the whole tier's. Each
//! sampler counts what every budgeted policy was asked for (its demand),
//! the samplers exchange these counts (sampler/src/cluster/), and each
//! takes a share of every budget in proportion to its demand, so that a
//! trace has the same chance wherever it landed and the shares add up to
//! the budget. This module is the arithmetic; the counts and shares live in
//! the [`crate::PolicyState`], and standalone every share is 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The part of every share given equally to all members, whatever their
/// demand: a member that saw nothing in the last exchange still has room
/// for a burst until the next one.
pub const EVEN_PART: f64 = 0.1;

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetUnit {
    Spans,
    Bytes,
}

impl BudgetUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetUnit::Spans => "spans",
            BudgetUnit::Bytes => "bytes",
        }
    }
}

/// One budgeted policy of a set, at any depth.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetBudget {
    /// The policy's name (`outer/inner` for a sub-policy).
    pub policy: Arc<str>,
    /// Its slot in the [`crate::PolicyState`].
    pub slot: usize,
    pub unit: BudgetUnit,
    /// The budget per second, for the whole tier.
    pub per_second: f64,
}

/// This member's share of a budget, given its demand and the other
/// members' (each a rate or a count over the same interval): in proportion
/// to demand, with [`EVEN_PART`] of it split evenly. In `(0, 1]`; the
/// shares the members compute from the same demands add up to 1.
pub fn share(mine: f64, others: &[f64]) -> f64 {
    let clean = |d: f64| if d.is_finite() && d > 0.0 { d } else { 0.0 };
    let members = (others.len() + 1) as f64;
    let total: f64 = clean(mine) + others.iter().map(|d| clean(*d)).sum::<f64>();
    let even = 1.0 / members;
    if total <= 0.0 {
        return even;
    }
    ((1.0 - EVEN_PART) * clean(mine) / total + EVEN_PART * even).min(1.0)
}

/// A stable fingerprint of a set's budgets (their names, units and
/// amounts, in slot order): members exchange counts only with members
/// whose policy file has the same budgets.
pub fn fingerprint(budgets: &[FleetBudget]) -> u64 {
    // FNV-1a 64: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for b in budgets {
        eat(b.policy.as_bytes());
        eat(&[0, b.unit as u8]);
        eat(&(b.slot as u64).to_le_bytes());
        eat(&b.per_second.to_bits().to_le_bytes());
    }
    h
}

/// The demand counter and share of one slot.
#[derive(Debug)]
pub(crate) struct FleetCell {
    demand: AtomicU64,
    /// The share, as `f64` bits.
    share: AtomicU64,
}

impl Default for FleetCell {
    fn default() -> Self {
        FleetCell {
            demand: AtomicU64::new(0),
            share: AtomicU64::new(1.0f64.to_bits()),
        }
    }
}

impl FleetCell {
    pub(crate) fn ask(&self, amount: u64) {
        self.demand.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn take_demand(&self) -> u64 {
        self.demand.swap(0, Ordering::Relaxed)
    }

    pub(crate) fn share(&self) -> f64 {
        f64::from_bits(self.share.load(Ordering::Relaxed))
    }

    pub(crate) fn set_share(&self, share: f64) {
        if share.is_finite() && share > 0.0 {
            self.share
                .store(share.min(1.0).to_bits(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::testutil::{TestTrace, policies, span};

    fn trace(n: u64) -> TestTrace {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        TestTrace::new(id, Vec::new(), &[span(1, 0, 1)])
    }

    /// Three nodes, each with a third of the traffic, spans kept per second
    /// over the last `secs - 2` seconds (past the initial burst), with each
    /// node's share as `share` says.
    fn three_nodes(yaml: &str, share: f64, secs: u64) -> f64 {
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                let set = policies(yaml);
                let state = set.new_state();
                for b in set.fleet_budgets() {
                    state.set_share(b.slot, share);
                }
                (set, state)
            })
            .collect();
        let mut kept = 0u64;
        // 3,000 single-span traces a second, round robin.
        for n in 0..secs * 3000 {
            let (set, state) = &nodes[(n % 3) as usize];
            let now = Duration::from_micros(n * 1_000_000 / 3000);
            if trace(n).decide(set, state, now).sampled && now >= Duration::from_secs(2) {
                kept += 1;
            }
        }
        kept as f64 / (secs - 2) as f64
    }

    #[test]
    fn a_budget_shared_in_thirds_holds_for_the_three_nodes_together() {
        let limit =
            "  - {name: budget, type: rate_limiting, rate_limiting: {spans_per_second: 300}}";
        let composite = "  - name: comp
    type: composite
    composite:
      max_total_spans_per_second: 300
      composite_sub_policy: [{name: all, type: always_sample}]";
        for yaml in [limit, composite] {
            // Standalone, each node spends the whole budget.
            let alone = three_nodes(yaml, 1.0, 12);
            assert!((850.0..=950.0).contains(&alone), "{alone}");
            // With a third each, the three spend it together.
            let shared = three_nodes(yaml, 1.0 / 3.0, 12);
            assert!((270.0..=330.0).contains(&shared), "{shared}");
        }
    }

    #[test]
    fn every_budgeted_policy_is_listed_with_its_amount_and_counts_its_demand() {
        let set = policies(
            "  - {name: spans, type: rate_limiting, rate_limiting: {spans_per_second: 10}}
  - {name: bytes, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1000}}
  - name: comp
    type: composite
    composite:
      max_total_spans_per_second: 50
      composite_sub_policy:
        - {name: tp, type: windowed_throughput, windowed_throughput: {goal_throughput_per_sec: 5, field_list: [name]}}
  - {name: dyn, type: ema_dynamic, ema_dynamic: {field_list: [name]}}",
        );
        let listed: Vec<(&str, BudgetUnit, f64)> = set
            .fleet_budgets()
            .iter()
            .map(|b| (&*b.policy, b.unit, b.per_second))
            .collect();
        assert_eq!(
            listed,
            [
                ("spans", BudgetUnit::Spans, 10.0),
                ("bytes", BudgetUnit::Bytes, 1000.0),
                ("comp", BudgetUnit::Spans, 50.0),
                ("comp/tp", BudgetUnit::Spans, 5.0),
            ]
        );
        let state = set.new_state();
        let t = TestTrace::new([9; 16], Vec::new(), &[span(1, 0, 1), span(2, 0, 1)]);
        t.decide(&set, &state, Duration::ZERO);
        let budgets = set.fleet_budgets();
        assert_eq!(state.take_demand(budgets[0].slot), 2);
        assert!(state.take_demand(budgets[1].slot) > 2);
        assert_eq!(state.take_demand(budgets[2].slot), 2);
        assert_eq!(state.take_demand(budgets[3].slot), 2);
        // Taken: counted afresh.
        assert_eq!(state.take_demand(budgets[0].slot), 0);
        assert_ne!(fingerprint(budgets), fingerprint(&budgets[1..]));
    }

    #[test]
    fn shares_follow_demand_with_an_even_part() {
        assert_eq!(share(0.0, &[]), 1.0);
        assert_eq!(share(100.0, &[]), 1.0);
        assert!((share(100.0, &[100.0, 100.0]) - 1.0 / 3.0).abs() < 1e-12);
        assert!((share(0.0, &[0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        // A member that saw nothing keeps a small share for bursts.
        assert!((share(0.0, &[50.0]) - 0.05).abs() < 1e-12);
        assert!((share(50.0, &[0.0]) - 0.95).abs() < 1e-12);
        // Garbage demands count as none.
        assert!((share(f64::NAN, &[1.0]) - 0.05).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn the_members_shares_add_up_to_the_whole_budget(
            demands in prop::collection::vec(0.0f64..1e9, 1..32),
        ) {
            let mut sum = 0.0;
            for (i, mine) in demands.iter().enumerate() {
                let others: Vec<f64> = demands
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, d)| *d)
                    .collect();
                let s = share(*mine, &others);
                prop_assert!(s > 0.0 && s <= 1.0, "{}", s);
                sum += s;
            }
            prop_assert!((sum - 1.0).abs() < 1e-9, "{}", sum);
        }

        #[test]
        fn more_demand_never_means_a_smaller_share(
            mine in 0.0f64..1e6,
            more in 0.0f64..1e6,
            others in prop::collection::vec(0.0f64..1e6, 0..8),
        ) {
            prop_assert!(share(mine + more, &others) + 1e-12 >= share(mine, &others));
        }
    }
}
