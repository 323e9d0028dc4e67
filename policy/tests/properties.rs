//! Invariants over random traces: a decision does not depend on the order
//! of the spans nor on how they were split into batches (but for `latency`
//! with `upper_threshold_ms`, which follows span order as the Collector
//! does, and only order), and the probabilistic policy keeps its percentage
//! of random trace IDs.

mod common;

use std::time::Duration;

use common::{b, i, kv, s};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use policy::{Decision, PolicyFile, PolicySet, TraceSummary, TraceView};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;
use proto::view::{SpanView, TraceId};
use proto::write::SpanRef;

/// Policies that each look at a different part of a trace, so that random
/// traces get every kind of decision, from every kind of policy.
const MIXED: &str = "
policies:
  - {name: all-ok-fast, type: and, and: {and_sub_policy: [{name: ok, type: status_code, status_code: {status_codes: [OK]}}, {name: fast, type: not, not: {not_sub_policy: {name: slowish, type: latency, latency: {threshold_ms: 40}}}}]}}
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 60}}
  - {name: b-keys, type: string_attribute, string_attribute: {key: k, values: ['^b'], enabled_regex_matching: true}}
  - {name: flagged, type: boolean_attribute, boolean_attribute: {key: f, value: true}}
  - {name: big, type: span_count, span_count: {min_spans: 5}}
  - {name: gold, type: trace_state, trace_state: {key: vendor, values: [gold]}}
  - {name: region, type: string_attribute, string_attribute: {key: region, values: [eu]}}
  - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 20}}
  - {name: budget, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 1}}
  - {name: inverted, type: numeric_attribute, numeric_attribute: {key: n, min_value: 8, max_value: 9, invert_match: true}}
  - name: drop-c
    type: drop
    drop: {drop_sub_policy: [{name: c, type: string_attribute, string_attribute: {key: k, values: [c]}}, {name: unset, type: status_code, status_code: {status_codes: [UNSET]}}]}
";

#[derive(Debug, Clone)]
struct SpanSpec {
    resource: usize,
    start_ms: u64,
    len_ms: u64,
    status: i32,
    k: Option<&'static str>,
    n: Option<i64>,
    f: Option<bool>,
    gold: bool,
}

fn span_spec() -> impl Strategy<Value = SpanSpec> {
    (
        0usize..2,
        0u64..60,
        0u64..60,
        0i32..3,
        prop::option::of(prop::sample::select(vec!["a", "b", "bb", "c"])),
        prop::option::of(0i64..12),
        prop::option::of(any::<bool>()),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(resource, start_ms, len_ms, status, k, n, f, gold)| SpanSpec {
                resource,
                start_ms,
                len_ms,
                status,
                k,
                n,
                f,
                gold,
            },
        )
}

/// A trace: its ID, two resource headers, and the encoded spans with the
/// resource each belongs to.
struct Trace {
    id: [u8; 16],
    resources: [Vec<u8>; 2],
    spans: Vec<(usize, Vec<u8>)>,
}

fn build(id: [u8; 16], eu: bool, specs: &[SpanSpec]) -> Trace {
    let region = if eu { "eu" } else { "us" };
    let resources = [
        common::resource_header(vec![
            kv("service.name", s("front")),
            kv("region", s(region)),
        ]),
        common::resource_header(vec![kv("service.name", s("back"))]),
    ];
    let spans = specs
        .iter()
        .enumerate()
        .map(|(n, spec)| {
            let mut attrs: Vec<KeyValue> = Vec::new();
            if let Some(k) = spec.k {
                attrs.push(kv("k", s(k)));
            }
            if let Some(n) = spec.n {
                attrs.push(kv("n", i(n)));
            }
            if let Some(f) = spec.f {
                attrs.push(kv("f", b(f)));
            }
            let mut span: Span =
                common::span(id, n as u64 + 1, spec.start_ms, spec.start_ms + spec.len_ms);
            span = common::with_status(span, spec.status);
            span.attributes = attrs;
            if spec.gold {
                span.trace_state = "vendor=gold".to_string();
            }
            (spec.resource, span.encode_to_vec())
        })
        .collect();
    Trace {
        id,
        resources,
        spans,
    }
}

/// Decides the spans in the order of `order`, with the summary built from
/// `batches` (ranges of that order), merged in reverse, each with a fresh
/// state at the same instant.
fn decide(set: &PolicySet, trace: &Trace, order: &[usize], cuts: &[usize]) -> Decision {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (order.len() + 1)).collect();
    bounds.push(0);
    bounds.push(order.len());
    bounds.sort_unstable();
    let mut batches: Vec<TraceSummary> = bounds
        .windows(2)
        .map(|w| {
            let mut batch = TraceSummary::new();
            for &at in &order[w[0]..w[1]] {
                let bytes = &trace.spans[at].1;
                batch.add(&SpanView::parse(bytes, 0).unwrap(), bytes.len());
            }
            batch
        })
        .collect();
    batches.reverse();
    let mut summary = TraceSummary::new();
    for batch in &batches {
        summary.merge(batch);
    }
    let refs: Vec<SpanRef<'_>> = order
        .iter()
        .map(|&at| SpanRef {
            resource: &trace.resources[trace.spans[at].0],
            scope: &[],
            span: &trace.spans[at].1,
        })
        .collect();
    let view = TraceView {
        trace_id: TraceId(trace.id),
        summary: &summary,
        spans: &refs,
    };
    set.evaluate(&set.new_state(), &view, Duration::from_secs(3))
}

fn mixed() -> PolicySet {
    PolicyFile::parse(MIXED, "mixed.yaml").unwrap().policies
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_decision_does_not_depend_on_span_order_or_batches(
        id in any::<[u8; 16]>(),
        eu in any::<bool>(),
        specs in prop::collection::vec(span_spec(), 1..8),
        seed in any::<u64>(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let set = mixed();
        let trace = build(id, eu, &specs);
        let in_order: Vec<usize> = (0..specs.len()).collect();
        let reference = decide(&set, &trace, &in_order, &[]);
        // A permutation chosen by the seed (Fisher-Yates, bounded).
        let mut order = in_order.clone();
        let mut x = seed;
        for at in (1..order.len()).rev() {
            x = splitmix64(x);
            order.swap(at, (x % (at as u64 + 1)) as usize);
        }
        let shuffled = decide(&set, &trace, &order, &cuts);
        prop_assert_eq!(&shuffled, &reference);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// latency.go with an upper bound checks the running duration after
    /// each span: the order of the spans can change the answer (tested in
    /// the unit tests), but how they were batched cannot.
    #[test]
    fn an_upper_bounded_latency_depends_on_span_order_not_on_batches(
        id in any::<[u8; 16]>(),
        specs in prop::collection::vec(span_spec(), 1..8),
        seed in any::<u64>(),
        cuts in prop::collection::vec(any::<usize>(), 1..4),
    ) {
        let set = PolicyFile::parse(
            "policies:\n  - {name: band, type: latency, latency: {threshold_ms: 60, upper_threshold_ms: 90}}\n",
            "band.yaml",
        )
        .unwrap()
        .policies;
        let trace = build(id, false, &specs);
        let mut order: Vec<usize> = (0..specs.len()).collect();
        let mut x = seed;
        for at in (1..order.len()).rev() {
            x = splitmix64(x);
            order.swap(at, (x % (at as u64 + 1)) as usize);
        }
        prop_assert_eq!(decide(&set, &trace, &order, &cuts), decide(&set, &trace, &order, &[]));
    }
}

#[test]
fn random_traces_reach_every_kind_of_decision() {
    // The property above is only as good as the variety it sees: check
    // that the generator and MIXED produce drops, vetoes and each policy.
    let set = mixed();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (
        any::<[u8; 16]>(),
        any::<bool>(),
        prop::collection::vec(span_spec(), 1..8),
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let (id, eu, specs) = strategy.new_tree(&mut runner).unwrap().current();
        let trace = build(id, eu, &specs);
        let order: Vec<usize> = (0..specs.len()).collect();
        let d = decide(&set, &trace, &order, &[]);
        seen.insert(format!(
            "{} {}",
            d.outcome,
            d.policy.as_deref().unwrap_or("-")
        ));
    }
    for expected in [
        "dropped drop-c",
        "sampled inverted",
        "not sampled -",
        "sampled all-ok-fast",
        "sampled errors",
        "sampled slow",
        "sampled b-keys",
        "sampled flagged",
        "sampled gold",
        "sampled some",
        "sampled region",
        "sampled budget",
    ] {
        assert!(
            seen.contains(expected),
            "never saw {expected:?}; saw {seen:?}"
        );
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const IDS: u64 = 100_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn probabilistic_keeps_its_percentage_within_four_sigma(
        percentage in 0.5f64..99.5,
        seed in any::<u64>(),
    ) {
        let set = PolicyFile::parse(
            &format!("policies:\n  - {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: {percentage}}}}}\n"),
            "p.yaml",
        )
        .unwrap()
        .policies;
        let summary = TraceSummary::new();
        let state = set.new_state();
        let mut x = seed;
        let mut kept = 0u64;
        for _ in 0..IDS {
            x = splitmix64(x);
            let hi = x;
            x = splitmix64(x);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&hi.to_be_bytes());
            id[8..].copy_from_slice(&x.to_be_bytes());
            let view = TraceView { trace_id: TraceId(id), summary: &summary, spans: &[] };
            kept += u64::from(set.evaluate(&state, &view, Duration::ZERO).sampled);
        }
        let p = percentage / 100.0;
        let expected = IDS as f64 * p;
        let sigma = (IDS as f64 * p * (1.0 - p)).sqrt();
        prop_assert!(
            (kept as f64 - expected).abs() <= 4.0 * sigma,
            "{}% kept {} of {}, expected {:.0} ± {:.0}", percentage, kept, IDS, expected, 4.0 * sigma
        );
    }
}
