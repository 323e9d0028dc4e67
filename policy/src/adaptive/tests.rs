//! The estimators against dynsampler-go's own vectors and invariants, the
//! key against Refinery's format, and the policies end to end: rare keys
//! kept more, throughput goals held, adjusted counts that add up.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::estimator::log_rates;
use super::*;
use crate::testutil::{SpanSpec, TestTrace, i, kv, policies, policies_with_tracestate, s, span};

fn ema(interval_secs: u64, weight: f64, age_out: f64, burst_multiple: f64) -> EmaSettings {
    EmaSettings {
        interval: Duration::from_secs(interval_secs),
        weight,
        age_out,
        burst_multiple,
        burst_delay: 3,
    }
}

fn dynamic(goal: u64, ema: EmaSettings, max_keys: usize) -> Params {
    Params {
        method: Method::EmaDynamic {
            goal_sample_rate: goal,
            ema,
        },
        max_keys,
    }
}

/// Feeds `counts` once per interval, `rounds` times, and ends the last
/// interval.
fn feed(e: &mut Estimator, p: &Params, counts: &[(&str, f64)], rounds: u64, interval: Duration) {
    for round in 0..rounds {
        let now = interval * round as u32;
        for (k, c) in counts {
            e.observe(p, k, *c, now);
        }
    }
    e.advance(p, interval * rounds as u32);
}

#[test]
fn ema_dynamic_rates_match_dynsampler_go_vectors() {
    // emasamplerate_test.go TestEMASampleUpdateMaps: goal 20, weight 0.2,
    // age out 0.2, the same counts for 101 intervals.
    type Case<'a> = (&'a [(&'a str, f64)], &'a [(&'a str, u64)]);
    let cases: [Case<'_>; 5] = [
        (
            &[
                ("one", 1.0),
                ("two", 1.0),
                ("three", 2.0),
                ("four", 5.0),
                ("five", 8.0),
                ("six", 15.0),
                ("seven", 45.0),
                ("eight", 612.0),
                ("nine", 2000.0),
                ("ten", 10000.0),
            ],
            &[
                ("one", 1),
                ("two", 1),
                ("three", 1),
                ("four", 1),
                ("five", 1),
                ("six", 1),
                ("seven", 1),
                ("eight", 6),
                ("nine", 14),
                ("ten", 47),
            ],
        ),
        (
            &[
                ("one", 1.0),
                ("two", 1.0),
                ("three", 2.0),
                ("four", 5.0),
                ("five", 8.0),
                ("six", 15.0),
                ("seven", 45.0),
                ("eight", 50.0),
                ("nine", 60.0),
            ],
            &[
                ("one", 1),
                ("two", 1),
                ("three", 2),
                ("four", 5),
                ("five", 8),
                ("six", 11),
                ("seven", 24),
                ("eight", 26),
                ("nine", 30),
            ],
        ),
        (
            &[
                ("one", 1000.0),
                ("two", 1000.0),
                ("three", 2000.0),
                ("four", 5000.0),
                ("five", 7000.0),
            ],
            &[
                ("one", 7),
                ("two", 7),
                ("three", 13),
                ("four", 29),
                ("five", 39),
            ],
        ),
        (
            &[
                ("one", 6000.0),
                ("two", 6000.0),
                ("three", 6000.0),
                ("four", 6000.0),
                ("five", 6000.0),
            ],
            &[
                ("one", 20),
                ("two", 20),
                ("three", 20),
                ("four", 20),
                ("five", 20),
            ],
        ),
        (&[("one", 12000.0)], &[("one", 20)]),
    ];
    for (n, (counts, expected)) in cases.iter().enumerate() {
        // No bursts: dynsampler-go's test drives updateMaps by hand.
        let p = dynamic(20, ema(1, 0.2, 0.2, 1e12), 500);
        let mut e = Estimator::default();
        feed(&mut e, &p, counts, 101, Duration::from_secs(1));
        for (k, rate) in *expected {
            assert_eq!(e.rate(k), Some(*rate), "case {n}, key {k}");
        }
    }
}

#[test]
fn ema_dynamic_answers_the_goal_rate_until_its_first_update() {
    let p = dynamic(7, ema(15, 0.5, 0.5, 2.0), 500);
    let mut e = Estimator::default();
    assert_eq!(e.observe(&p, "a", 1.0, Duration::ZERO), 7);
    assert_eq!(e.observe(&p, "b", 1.0, Duration::from_secs(14)), 7);
    // After the first interval: rates in force, and an unseen key gets 1.
    e.observe(&p, "a", 1.0, Duration::from_secs(15));
    assert_eq!(e.observe(&p, "new", 1.0, Duration::from_secs(16)), 1);
}

#[test]
fn a_burst_updates_the_rates_before_the_interval_ends() {
    let p = dynamic(10, ema(10, 0.5, 0.5, 2.0), 500);
    let mut e = Estimator::default();
    // Four quiet intervals of 100 spans: average 100-ish, threshold 2x.
    for round in 0..4u32 {
        for _ in 0..100 {
            e.observe(&p, "k", 1.0, Duration::from_secs(10) * round);
        }
    }
    e.advance(&p, Duration::from_secs(40));
    let before = e.stats(1).updates;
    // 1,000 spans in one second of the next interval: a burst.
    for _ in 0..1000 {
        e.observe(&p, "k", 1.0, Duration::from_secs(41));
    }
    let stats = e.stats(1);
    assert!(stats.bursts >= 1, "{stats:?}");
    assert!(stats.updates > before, "{stats:?}");
}

#[test]
fn ema_throughput_rates_keep_its_goal_per_interval() {
    // 2,000 spans per second over 5 keys, goal 100/s: about 1 in 20 kept.
    let p = Params {
        method: Method::EmaThroughput {
            goal_per_sec: 100.0,
            initial_sample_rate: 10,
            ema: ema(1, 0.5, 0.5, 1e12),
        },
        max_keys: 500,
    };
    let counts = [
        ("a", 1000.0),
        ("b", 500.0),
        ("c", 300.0),
        ("d", 150.0),
        ("e", 50.0),
    ];
    let mut e = Estimator::default();
    feed(&mut e, &p, &counts, 30, Duration::from_secs(1));
    let kept: f64 = counts
        .iter()
        .map(|(k, c)| c / e.rate(k).expect("key has a rate") as f64)
        .sum();
    // Rates are whole numbers rounded up, so a little under the goal.
    assert!((85.0..=100.0).contains(&kept), "kept {kept} spans/s");
    // Rare keys are kept more.
    assert!(e.rate("e") < e.rate("a"));
}

#[test]
fn windowed_throughput_shares_its_goal_equally_among_keys() {
    let p = Params {
        method: Method::Windowed {
            goal_per_sec: 100.0,
            update: Duration::from_secs(1),
            lookback_blocks: 5,
        },
        max_keys: 500,
    };
    let mut e = Estimator::default();
    // Before any block ends, everything is kept.
    assert_eq!(e.observe(&p, "big", 1.0, Duration::ZERO), 1);
    feed(
        &mut e,
        &p,
        &[("big", 1000.0), ("small", 100.0)],
        10,
        Duration::from_secs(1),
    );
    // 50 spans/s per key: 1000/50 and 100/50.
    assert_eq!(e.rate("big"), Some(20));
    assert_eq!(e.rate("small"), Some(2));
}

#[test]
fn windowed_throughput_forgets_keys_past_its_lookback() {
    let p = Params {
        method: Method::Windowed {
            goal_per_sec: 10.0,
            update: Duration::from_secs(1),
            lookback_blocks: 3,
        },
        max_keys: 500,
    };
    let mut e = Estimator::default();
    e.observe(&p, "old", 100.0, Duration::ZERO);
    e.advance(&p, Duration::from_secs(1));
    assert!(e.rate("old").is_some());
    e.advance(&p, Duration::from_secs(10));
    assert_eq!(e.rate("old"), None);
}

fn arb_counts() -> impl Strategy<Value = Vec<(u8, u16)>> {
    prop::collection::vec((0u8..40, 1u16..5000), 1..200)
}

proptest! {
    #[test]
    fn log_rates_are_whole_rates_that_keep_no_more_than_the_goals(
        buckets in prop::collection::hash_map(0u16..1000, 0.0f64..1e7, 1..100),
        goal_ratio in 0.0f64..1e4,
    ) {
        let buckets: HashMap<Box<str>, f64> =
            buckets.into_iter().map(|(k, v)| (k.to_string().into(), v)).collect();
        let rates = log_rates(goal_ratio, &buckets);
        prop_assert_eq!(rates.len(), buckets.len());
        let mut kept = 0.0;
        let mut goals = 0.0;
        for (k, c) in &buckets {
            let (rate, counted) = rates[k];
            prop_assert!((1..=MAX_RATE).contains(&rate));
            prop_assert_eq!(counted, *c);
            let c = c.max(1.0);
            kept += c / rate as f64;
            goals += (c.log10() * goal_ratio).max(1.0);
            // A key within its goal is kept whole.
            if c <= 1.0 {
                prop_assert_eq!(rate, 1);
            }
        }
        // What is passed on is never more than what was unused.
        prop_assert!(kept <= goals * (1.0 + 1e-9) + 1e-6, "kept {} goals {}", kept, goals);
    }

    #[test]
    fn every_estimator_map_stays_within_max_keys(
        stream in arb_counts(),
        max_keys in 1usize..20,
        kind in 0u8..3,
    ) {
        let p = Params {
            method: match kind {
                0 => Method::EmaDynamic { goal_sample_rate: 5, ema: ema(1, 0.5, 0.01, 2.0) },
                1 => Method::EmaThroughput {
                    goal_per_sec: 50.0,
                    initial_sample_rate: 3,
                    ema: ema(1, 0.5, 0.01, 2.0),
                },
                _ => Method::Windowed {
                    goal_per_sec: 50.0,
                    update: Duration::from_secs(1),
                    lookback_blocks: 4,
                },
            },
            max_keys,
        };
        let mut e = Estimator::default();
        for (i, (key, count)) in stream.iter().enumerate() {
            // Ten traces per second of simulated time.
            let now = Duration::from_millis(100 * i as u64);
            let rate = e.observe(&p, &format!("k{key}"), f64::from(*count), now);
            prop_assert!((1..=MAX_RATE).contains(&rate));
            prop_assert!(e.held_keys() <= max_keys, "{} keys held", e.held_keys());
        }
    }

    #[test]
    fn ema_dynamic_averages_its_goal_over_a_steady_stream(
        counts in prop::collection::vec(100u32..20_000, 2..12),
        goal in 2u64..50,
    ) {
        let p = dynamic(goal, ema(1, 0.5, 0.5, 1e12), 500);
        let named: Vec<(String, f64)> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("k{i}"), f64::from(*c)))
            .collect();
        let refs: Vec<(&str, f64)> = named.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        let mut e = Estimator::default();
        feed(&mut e, &p, &refs, 40, Duration::from_secs(1));
        let total: f64 = refs.iter().map(|(_, c)| c).sum();
        let kept: f64 = refs
            .iter()
            .map(|(k, c)| c / e.rate(k).unwrap_or(1) as f64)
            .sum();
        // Never more than the goal keeps, but for the floor of one span per
        // key; rounding each rate up at most halves a key's share.
        let goal_kept = total / goal as f64;
        prop_assert!(
            kept <= goal_kept * (1.0 + 1e-9) + refs.len() as f64,
            "kept {} of {} at goal {}", kept, total, goal
        );
        prop_assert!(kept >= goal_kept / 2.0, "kept {} of {} at goal {}", kept, total, goal);
    }

    #[test]
    fn randomness_is_56_bits_and_a_threshold_keeps_about_one_in_rate(
        seed in any::<u64>(),
        rate in 1u64..64,
    ) {
        let th = threshold(rate).expect("rates up to 2^56 have thresholds").value();
        let mut kept = 0u32;
        let n = 4000u32;
        for i in 0..n {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&seed.to_le_bytes());
            id[8..].copy_from_slice(&u64::from(i).to_le_bytes());
            let rv = randomness(&id);
            prop_assert!(rv < 1 << 56);
            if rv >= th {
                kept += 1;
            }
        }
        let p = 1.0 / rate as f64;
        let expected = f64::from(n) * p;
        let sigma = (f64::from(n) * p * (1.0 - p)).sqrt();
        prop_assert!((f64::from(kept) - expected).abs() <= 5.0 * sigma + 1.0,
            "kept {} expected {}", kept, expected);
    }
}

// --- keys -------------------------------------------------------------

fn key_of(spec: &KeySpec, trace: &TestTrace) -> String {
    let refs = trace.refs();
    let spans: Vec<_> = refs
        .iter()
        .map(|r| {
            (
                proto::view::SpanView::parse(r.span, 0).expect("fixture parses"),
                r.resource,
            )
        })
        .collect();
    spec.build(&spans, trace.summary.span_count())
}

fn fields(list: &[&str]) -> Vec<String> {
    list.iter().map(|f| f.to_string()).collect()
}

#[test]
fn keys_are_built_as_refinery_builds_them() {
    let mut root = span(1, 0, 10);
    root.attrs = vec![kv("http.route", s("/a")), kv("http.status_code", i(200))];
    let mut child = span(2, 1, 5);
    child.attrs = vec![kv("http.status_code", i(500))];
    child.status = 2;
    let mut other = span(3, 1, 5);
    other.attrs = vec![kv("http.status_code", i(200))];
    let trace = TestTrace::new(
        [7; 16],
        vec![vec![kv("service.name", s("checkout"))]],
        &[root, child, other],
    );
    // Fields in name order, each field's distinct values sorted.
    let spec = KeySpec::new(&fields(&["service.name", "http.status_code"]), false);
    assert_eq!(key_of(&spec, &trace), "200•500•,checkout•,");
    // root. fields come after, from the root span only; then the length.
    let spec = KeySpec::new(&fields(&["root.http.route", "error"]), true);
    assert_eq!(key_of(&spec, &trace), "true•,/a,3");
    // The span's own fields when no attribute has the name.
    let spec = KeySpec::new(&fields(&["name", "status_code", "span.kind"]), false);
    assert_eq!(
        key_of(&spec, &trace),
        "span-1•span-2•span-3•,unspecified•,0•2•,"
    );
    // A field no span has leaves no trace in the key.
    let spec = KeySpec::new(&fields(&["absent", "service.name"]), false);
    assert_eq!(key_of(&spec, &trace), "checkout•,");
}

#[test]
fn a_span_attribute_shadows_the_resource_attribute_of_the_same_name() {
    let mut one = span(1, 0, 10);
    one.attrs = vec![kv("tier", s("gold"))];
    let trace = TestTrace::new(
        [1; 16],
        vec![vec![kv("tier", s("bronze"))]],
        &[one, span(2, 1, 2)],
    );
    let spec = KeySpec::new(&fields(&["tier"]), false);
    assert_eq!(key_of(&spec, &trace), "bronze•gold•,");
}

#[test]
fn a_key_is_cut_to_its_byte_bound() {
    let mut one = span(1, 0, 10);
    one.attrs = vec![kv("blob", s(&"é".repeat(2000)))];
    let trace = TestTrace::new([1; 16], Vec::new(), &[one]);
    let key = key_of(&KeySpec::new(&fields(&["blob"]), false), &trace);
    assert!(key.len() <= key::MAX_KEY_BYTES && key.len() > key::MAX_KEY_BYTES - 4);
}

// --- the policies ---------------------------------------------------------

fn id(n: u64) -> [u8; 16] {
    // Distinct, well spread trace IDs.
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&x.to_be_bytes());
    out[8..].copy_from_slice(&n.to_be_bytes());
    out
}

fn keyed_trace(n: u64, route: &str, spans: u64) -> TestTrace {
    let specs: Vec<SpanSpec> = (1..=spans)
        .map(|sid| {
            let mut sp = span(sid, 0, 10);
            sp.attrs = vec![kv("http.route", s(route))];
            sp
        })
        .collect();
    TestTrace::new(id(n), Vec::new(), &specs)
}

#[test]
fn skewed_keys_rare_kept_more_and_adjusted_counts_add_up() {
    // 95% of traces on /common, 5% on /rare, 1,000 traces a second for a
    // minute, ema_dynamic aiming at 1 in 20.
    let set = policies_with_tracestate(
        "  - name: dyn
    type: ema_dynamic
    ema_dynamic: {goal_sample_rate: 20, field_list: [http.route], adjustment_interval: 1s}",
    );
    let state = set.new_state();
    let mut sent: HashMap<&str, f64> = HashMap::new();
    let mut kept: HashMap<&str, f64> = HashMap::new();
    let mut estimate: HashMap<&str, f64> = HashMap::new();
    for n in 0..60_000u64 {
        let route = if n % 20 == 7 { "/rare" } else { "/common" };
        let now = Duration::from_millis(n);
        let d = keyed_trace(n, route, 1).decide(&set, &state, now);
        *sent.entry(route).or_default() += 1.0;
        if d.sampled {
            let th = d.threshold.expect("a kept trace carries its threshold");
            *kept.entry(route).or_default() += 1.0;
            *estimate.entry(route).or_default() += 1.0 / th.probability();
        }
    }
    let share = |r: &str| kept[r] / sent[r];
    eprintln!(
        "skewed: sent {sent:?}, kept {kept:?}, estimated {estimate:?}, kept share rare {:.3} common {:.3}",
        kept["/rare"] / sent["/rare"],
        kept["/common"] / sent["/common"]
    );
    assert!(
        share("/rare") > 5.0 * share("/common"),
        "rare kept {} common kept {}",
        share("/rare"),
        share("/common")
    );
    for route in ["/rare", "/common"] {
        let err = (estimate[route] - sent[route]).abs() / sent[route];
        assert!(
            err < 0.10,
            "{route}: estimated {} of {} sent",
            estimate[route],
            sent[route]
        );
    }
    let total_est: f64 = estimate.values().sum();
    assert!(
        (total_est - 60_000.0).abs() / 60_000.0 < 0.05,
        "{total_est}"
    );
    // The rates are visible for the metrics.
    let stats = set.adaptive_stats(&state, 5);
    assert_eq!(stats.len(), 1);
    assert_eq!(&*stats[0].0, "dyn");
    assert_eq!(stats[0].1.keys, 2);
    assert!(stats[0].1.mean_rate > 5.0, "{:?}", stats[0].1);
}

#[test]
fn a_throughput_goal_holds_whatever_the_traffic() {
    for kind in ["ema_throughput", "windowed_throughput"] {
        let block = if kind == "ema_throughput" {
            "ema_throughput: {goal_throughput_per_sec: 50, field_list: [http.route], adjustment_interval: 1s}"
        } else {
            "windowed_throughput: {goal_throughput_per_sec: 50, field_list: [http.route], update_frequency: 1s, lookback_frequency: 5s}"
        };
        let set = policies(&format!("  - name: tp\n    type: {kind}\n    {block}"));
        let state = set.new_state();
        // 2 spans per trace; 500 then 2,000 traces a second, 20 s each.
        let mut n = 0u64;
        for (per_sec, secs, start) in [(500u64, 20u64, 0u64), (2000, 20, 20)] {
            let mut kept_late = 0u64;
            for sec in 0..secs {
                for j in 0..per_sec {
                    n += 1;
                    let route = ["/a", "/b", "/c"][(n % 3) as usize];
                    let now = Duration::from_secs(start + sec)
                        + Duration::from_micros(j * 1_000_000 / per_sec);
                    let d = keyed_trace(n, route, 2).decide(&set, &state, now);
                    if d.sampled && sec >= secs - 10 {
                        kept_late += 2;
                    }
                }
            }
            let per_second = kept_late as f64 / 10.0;
            eprintln!("{kind}: {per_sec} traces/s offered, {per_second} spans/s kept");
            // Whole rates rounded up keep a little under the goal.
            assert!(
                (40.0..=55.0).contains(&per_second),
                "{kind} at {per_sec} traces/s: {per_second} spans/s kept"
            );
        }
    }
}

#[test]
fn a_trace_keeps_or_drops_the_same_way_on_every_node() {
    let yaml = "  - name: dyn
    type: ema_dynamic
    ema_dynamic: {goal_sample_rate: 4, field_list: [http.route], adjustment_interval: 1s}";
    // Two nodes that saw the same traffic reach the same rates, and so the
    // same votes, though their states are separate.
    let (a, b) = (policies(yaml), policies(yaml));
    let (sa, sb) = (a.new_state(), b.new_state());
    for n in 0..5000u64 {
        let t = keyed_trace(n, if n % 3 == 0 { "/x" } else { "/y" }, 1);
        let now = Duration::from_millis(n);
        assert_eq!(
            t.decide(&a, &sa, now).sampled,
            t.decide(&b, &sb, now).sampled
        );
    }
    // And a re-decision at the same rate is the same decision.
    let t = keyed_trace(42, "/y", 1);
    let first = t.decide(&a, &sa, Duration::from_millis(5000)).sampled;
    assert_eq!(
        t.decide(&a, &sa, Duration::from_millis(5001)).sampled,
        first
    );
}

#[test]
fn a_fleet_share_scales_the_throughput_goal() {
    let set = policies(
        "  - name: tp
    type: ema_throughput
    ema_throughput: {goal_throughput_per_sec: 90, field_list: [http.route], adjustment_interval: 1s}",
    );
    let state = set.new_state();
    let budgets = set.fleet_budgets();
    assert_eq!(budgets.len(), 1);
    assert_eq!((&*budgets[0].policy, budgets[0].per_second), ("tp", 90.0));
    state.set_share(budgets[0].slot, 1.0 / 3.0);
    let mut kept = 0u64;
    for n in 0..30_000u64 {
        let now = Duration::from_millis(n);
        let d = keyed_trace(n, "/a", 1).decide(&set, &state, now);
        if d.sampled && n >= 20_000 {
            kept += 1;
        }
    }
    // 30 spans/s over the last 10 s.
    assert!((250..=310).contains(&kept), "kept {kept}");
    assert!((set.adaptive_stats(&state, 1)[0].1.goal_share - 1.0 / 3.0).abs() < 1e-9);
}

#[test]
fn adaptive_policies_work_inside_and_not_and_composite() {
    let set = policies(
        "  - name: both
    type: and
    and:
      and_sub_policy:
        - {name: route, type: string_attribute, string_attribute: {key: http.route, values: [/a]}}
        - {name: dyn, type: ema_dynamic, ema_dynamic: {goal_sample_rate: 2, field_list: [http.route]}}
  - name: inverse
    type: not
    not: {not_sub_policy: {name: w, type: windowed_throughput, windowed_throughput: {field_list: [http.route]}}}
  - name: comp
    type: composite
    composite:
      max_total_spans_per_second: 1000
      composite_sub_policy:
        - {name: tp, type: ema_throughput, ema_throughput: {field_list: [http.route]}}",
    );
    let state = set.new_state();
    let names: Vec<String> = set
        .adaptive_stats(&state, 0)
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, ["both/dyn", "inverse/w", "comp/tp"]);
    // Before any update: ema_dynamic answers its goal rate (2), the windowed
    // sampler keeps all (so `not` drops), ema_throughput answers its initial
    // rate (10). Over many traces, some are kept by each route.
    let mut by_policy: HashMap<String, u32> = HashMap::new();
    for n in 0..2000u64 {
        let d = keyed_trace(n, "/a", 1).decide(&set, &state, Duration::ZERO);
        if let Some(p) = d.policy {
            *by_policy.entry(p.to_string()).or_default() += 1;
        }
        assert_eq!(d.votes.get(1), Some(false), "not(windowed keep-all)");
    }
    assert!(
        by_policy
            .get("both")
            .is_some_and(|n| (800..1200).contains(n)),
        "{by_policy:?}"
    );
}

#[test]
fn a_kept_span_carries_the_threshold_of_its_rate() {
    let set = policies_with_tracestate(
        "  - name: dyn
    type: ema_dynamic
    ema_dynamic: {goal_sample_rate: 4, field_list: [http.route]}",
    );
    let state = set.new_state();
    // Before the first update every key is at the goal rate, 4: th = 0.75.
    let kept = (0..200u64)
        .map(|n| keyed_trace(n, "/a", 1))
        .find_map(|t| {
            let d = t.decide(&set, &state, Duration::ZERO);
            d.sampled.then_some((t, d))
        })
        .expect("one in four is kept");
    let (t, d) = kept;
    assert_eq!(d.threshold.map(|th| th.to_string()).as_deref(), Some("c"));
    let out = d.annotate(&t.spans[0].1, false);
    let view = proto::view::SpanView::parse(&out, 0).expect("annotated span parses");
    assert_eq!(view.trace_state(), "ot=th:c");
}

/// A reload that leaves an adaptive policy as it was keeps what its
/// estimator learned; a changed one starts again from its goal rate.
#[test]
fn an_unchanged_adaptive_policy_keeps_its_rates_across_a_reload() {
    let dynamic = "  - name: dyn
    type: ema_dynamic
    ema_dynamic: {goal_sample_rate: 20, field_list: [http.route], adjustment_interval: 1s}";
    let old = policies(dynamic);
    let old_state = old.new_state();
    for n in 0..10_000u64 {
        let route = if n % 20 == 7 { "/rare" } else { "/common" };
        keyed_trace(n, route, 1).decide(&old, &old_state, Duration::from_millis(n));
    }
    let learned = old.adaptive_stats(&old_state, 10);
    assert!(
        learned[0].1.updates > 0 && learned[0].1.keys == 2,
        "{learned:?}"
    );

    // Another policy added before it: the same definition is found by name.
    let reloaded = policies(&format!(
        "  - name: errors
    type: status_code
    status_code: {{status_codes: [ERROR]}}
{dynamic}"
    ));
    let state = reloaded.new_state();
    assert_eq!(reloaded.carry_estimators(&state, &old, &old_state), 1);
    assert_eq!(reloaded.adaptive_stats(&state, 10), learned);

    // A changed goal is another policy: nothing carried over.
    let changed = policies(&dynamic.replace("goal_sample_rate: 20", "goal_sample_rate: 40"));
    let state = changed.new_state();
    assert_eq!(changed.carry_estimators(&state, &old, &old_state), 0);
    assert_ne!(changed.adaptive_stats(&state, 10), learned);
}
