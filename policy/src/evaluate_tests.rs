//! Each policy type and the way votes combine, against the Collector's
//! semantics (the file each rule follows is cited in evaluate.rs).

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::testutil::{
    SpanSpec, TestTrace, b, decide, i, kv, policies, policies_with_tracestate, s, span,
};

const ID_A: [u8; 16] = hex16("e01df545fb665e2fee983ad7c338c692");
const ID_B: [u8; 16] = hex16("1d9e1f58b9f7f662cc915e3d22b31e87");
const ZERO_ID: [u8; 16] = [0; 16];

const fn hex16(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

fn trace(spans: &[SpanSpec]) -> TestTrace {
    TestTrace::new(ID_A, Vec::new(), spans)
}

fn with_attrs(
    mut spec: SpanSpec,
    attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> SpanSpec {
    spec.attrs = attrs;
    spec
}

fn outcome(set: &PolicySet, t: &TestTrace) -> Outcome {
    decide(set, t).outcome
}

#[test]
fn latency_without_an_upper_bound_keeps_traces_above_the_threshold() {
    // threshold_ms is an exclusive lower bound since contrib #49595.
    let set = policies("  - {name: slow, type: latency, latency: {threshold_ms: 500}}");
    assert_eq!(
        outcome(&set, &trace(&[span(1, 0, 500)])),
        Outcome::NotSampled
    );
    assert_eq!(outcome(&set, &trace(&[span(1, 0, 501)])), Outcome::Sampled);
    // Earliest start to latest end, whatever lies between.
    assert_eq!(
        outcome(&set, &trace(&[span(1, 0, 10), span(2, 490, 501)])),
        Outcome::Sampled
    );
    assert_eq!(outcome(&set, &trace(&[])), Outcome::NotSampled);
}

#[test]
fn latency_with_an_upper_bound_keeps_the_half_open_range() {
    let set = policies(
        "  - {name: band, type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 200}}",
    );
    for (ms, expected) in [
        (100, Outcome::NotSampled),
        (101, Outcome::Sampled),
        (200, Outcome::Sampled),
        (201, Outcome::NotSampled),
    ] {
        assert_eq!(
            outcome(&set, &trace(&[span(1, 0, ms)])),
            expected,
            "{ms} ms"
        );
    }
}

#[test]
fn latency_with_an_upper_bound_follows_the_collector_span_by_span() {
    // latency.go checks the running duration after each span: a first span
    // of 150 ms is in (100, 200], so the trace is kept though it spans
    // 300 ms in all; the other way round no prefix is in range.
    let set = policies(
        "  - {name: band, type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 200}}",
    );
    assert_eq!(
        outcome(&set, &trace(&[span(1, 0, 150), span(2, 0, 300)])),
        Outcome::Sampled
    );
    assert_eq!(
        outcome(&set, &trace(&[span(2, 0, 300), span(1, 0, 150)])),
        Outcome::NotSampled
    );
    assert_eq!(outcome(&set, &trace(&[])), Outcome::NotSampled);
    // Without an upper bound order cannot matter: the whole trace counts.
    let slow = policies("  - {name: slow, type: latency, latency: {threshold_ms: 200}}");
    for spans in [
        [span(1, 0, 150), span(2, 0, 300)],
        [span(2, 0, 300), span(1, 0, 150)],
    ] {
        assert_eq!(outcome(&slow, &trace(&spans)), Outcome::Sampled);
    }
}

#[test]
fn status_code_keeps_a_trace_with_any_listed_status() {
    let set =
        policies("  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}");
    let mut error = span(2, 0, 5);
    error.status = 2;
    let mut ok = span(1, 0, 10);
    ok.status = 1;
    assert_eq!(
        outcome(&set, &trace(&[ok.clone(), error])),
        Outcome::Sampled
    );
    assert_eq!(
        outcome(&set, &trace(&[ok.clone(), span(3, 0, 1)])),
        Outcome::NotSampled
    );
    let unset =
        policies("  - {name: unset, type: status_code, status_code: {status_codes: [UNSET]}}");
    assert_eq!(
        outcome(&unset, &trace(&[ok.clone(), span(3, 0, 1)])),
        Outcome::Sampled
    );
    assert_eq!(outcome(&unset, &trace(&[ok])), Outcome::NotSampled);
}

#[test]
fn probabilistic_keeps_by_fnv_hash_of_salt_and_trace_id() {
    // Hashes from the Python in probabilistic.rs: with the default salt,
    // ID_A hashes under the 10% threshold, ID_B above 50%; the zero ID
    // hashes to 0xe19536eed1bbac3d by default and 0x6e763c73c5066e46 with
    // salt "my-salt" (below the 50% threshold 0x7fffffffffffffff).
    let ten =
        policies("  - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 10}}");
    let fifty =
        policies("  - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 50}}");
    let salted = policies(
        "  - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 50, hash_salt: my-salt}}",
    );
    let one_span = [span(1, 0, 1)];
    assert_eq!(
        outcome(&ten, &TestTrace::new(ID_A, vec![], &one_span)),
        Outcome::Sampled
    );
    assert_eq!(
        outcome(&fifty, &TestTrace::new(ID_B, vec![], &one_span)),
        Outcome::NotSampled
    );
    assert_eq!(
        outcome(&fifty, &TestTrace::new(ZERO_ID, vec![], &one_span)),
        Outcome::NotSampled
    );
    assert_eq!(
        outcome(&salted, &TestTrace::new(ZERO_ID, vec![], &one_span)),
        Outcome::Sampled
    );
}

#[test]
fn string_attribute_matches_span_and_resource_attributes_exactly() {
    let set = policies(
        "  - {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [checkout, cart]}}",
    );
    let on_resource = TestTrace::new(
        ID_A,
        vec![vec![kv("service.name", s("cart"))]],
        &[span(1, 0, 1)],
    );
    let on_span = trace(&[with_attrs(
        span(1, 0, 1),
        vec![kv("service.name", s("checkout"))],
    )]);
    let other = trace(&[with_attrs(
        span(1, 0, 1),
        vec![kv("service.name", s("checkout-v2"))],
    )]);
    assert_eq!(outcome(&set, &on_resource), Outcome::Sampled);
    assert_eq!(outcome(&set, &on_span), Outcome::Sampled);
    assert_eq!(outcome(&set, &other), Outcome::NotSampled);
}

#[test]
fn string_attribute_regexes_search_unanchored_as_go_does() {
    let set = policies(
        "  - {name: r, type: string_attribute, string_attribute: {key: http.route, values: ['/v1/name/.+'], enabled_regex_matching: true}}",
    );
    let hit = trace(&[with_attrs(
        span(1, 0, 1),
        vec![kv("http.route", s("/api/v1/name/42"))],
    )]);
    let miss = trace(&[with_attrs(
        span(1, 0, 1),
        vec![kv("http.route", s("/v1/name/"))],
    )]);
    assert_eq!(outcome(&set, &hit), Outcome::Sampled);
    assert_eq!(outcome(&set, &miss), Outcome::NotSampled);
}

#[test]
fn string_attribute_reads_non_strings_as_pdata_does() {
    // A resource value that is not a string is matched as "" (pdata's
    // Str()); a span value only when it is a non-empty string.
    let set = policies(
        "  - {name: any, type: string_attribute, string_attribute: {key: k, values: ['.*'], enabled_regex_matching: true}}",
    );
    let resource_int = TestTrace::new(ID_A, vec![vec![kv("k", i(7))]], &[span(1, 0, 1)]);
    let span_int = trace(&[with_attrs(span(1, 0, 1), vec![kv("k", i(7))])]);
    let span_empty = trace(&[with_attrs(span(1, 0, 1), vec![kv("k", s(""))])]);
    assert_eq!(outcome(&set, &resource_int), Outcome::Sampled);
    assert_eq!(outcome(&set, &span_int), Outcome::NotSampled);
    assert_eq!(outcome(&set, &span_empty), Outcome::NotSampled);
}

#[test]
fn inverted_string_attribute_flips_only_its_own_vote() {
    // Since contrib #48976 (v0.156) an inverted match is a plain
    // not-sampled vote: it no longer vetoes another policy's sample.
    let set = policies(
        "  - {name: not-team-a, type: string_attribute, string_attribute: {key: team, values: [a], invert_match: true}}\n  - {name: all, type: always_sample}",
    );
    let team_a = trace(&[with_attrs(span(1, 0, 1), vec![kv("team", s("a"))])]);
    let team_b = trace(&[with_attrs(span(1, 0, 1), vec![kv("team", s("b"))])]);
    let d = decide(&set, &team_a);
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Sampled, Some("all"))
    );
    assert_eq!((d.votes.get(0), d.votes.get(1)), (Some(false), Some(true)));
    let d = decide(&set, &team_b);
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Sampled, Some("not-team-a"))
    );
    let alone = policies(
        "  - {name: not-team-a, type: string_attribute, string_attribute: {key: team, values: [a], invert_match: true}}",
    );
    assert_eq!(outcome(&alone, &team_a), Outcome::NotSampled);
    assert_eq!(outcome(&alone, &team_b), Outcome::Sampled);
}

#[test]
fn empty_values_match_nothing_and_inverted_everything() {
    let none = policies(
        "  - {name: s, type: string_attribute, string_attribute: {key: team, values: []}}\n  - {name: t, type: trace_state, trace_state: {key: vendor, values: []}}",
    );
    let all = policies(
        "  - {name: s, type: string_attribute, string_attribute: {key: team, values: [], invert_match: true}}",
    );
    let team = trace(&[with_attrs(span(1, 0, 1), vec![kv("team", s("a"))])]);
    assert_eq!(outcome(&none, &team), Outcome::NotSampled);
    assert_eq!(outcome(&all, &team), Outcome::Sampled);
}

#[test]
fn numeric_attribute_keeps_an_inclusive_range() {
    let set = policies(
        "  - {name: n, type: numeric_attribute, numeric_attribute: {key: code, min_value: 500, max_value: 599}}",
    );
    for (v, expected) in [
        (499, Outcome::NotSampled),
        (500, Outcome::Sampled),
        (599, Outcome::Sampled),
        (600, Outcome::NotSampled),
    ] {
        let t = trace(&[with_attrs(span(1, 0, 1), vec![kv("code", i(v))])]);
        assert_eq!(outcome(&set, &t), expected, "{v}");
    }
    let on_resource = TestTrace::new(ID_A, vec![vec![kv("code", i(503))]], &[span(1, 0, 1)]);
    assert_eq!(outcome(&set, &on_resource), Outcome::Sampled);
}

#[test]
fn numeric_attribute_bound_of_zero_is_no_bound_and_non_ints_read_as_zero() {
    // processor.go passes a bound of 0 as "none"; pdata's Int() is 0 for
    // any value that is not an int.
    let set = policies(
        "  - {name: n, type: numeric_attribute, numeric_attribute: {key: v, min_value: 0, max_value: 10}}",
    );
    let negative = trace(&[with_attrs(span(1, 0, 1), vec![kv("v", i(-1_000_000))])]);
    let string = trace(&[with_attrs(span(1, 0, 1), vec![kv("v", s("12"))])]);
    assert_eq!(outcome(&set, &negative), Outcome::Sampled);
    assert_eq!(outcome(&set, &string), Outcome::Sampled);
    let above = policies(
        "  - {name: n, type: numeric_attribute, numeric_attribute: {key: v, min_value: 5}}",
    );
    assert_eq!(outcome(&above, &string), Outcome::NotSampled);
}

#[test]
fn inverted_numeric_attribute_flips_its_vote() {
    let set = policies(
        "  - {name: n, type: numeric_attribute, numeric_attribute: {key: code, min_value: 200, max_value: 299, invert_match: true}}",
    );
    let ok = trace(&[with_attrs(span(1, 0, 1), vec![kv("code", i(204))])]);
    let err = trace(&[with_attrs(span(1, 0, 1), vec![kv("code", i(500))])]);
    assert_eq!(outcome(&set, &ok), Outcome::NotSampled);
    assert_eq!(outcome(&set, &err), Outcome::Sampled);
}

#[test]
fn boolean_attribute_matches_the_value_and_reads_non_bools_as_false() {
    let yes = policies(
        "  - {name: f, type: boolean_attribute, boolean_attribute: {key: force, value: true}}",
    );
    let no = policies(
        "  - {name: f, type: boolean_attribute, boolean_attribute: {key: force, value: false}}",
    );
    let forced = trace(&[with_attrs(span(1, 0, 1), vec![kv("force", b(true))])]);
    let text = trace(&[with_attrs(span(1, 0, 1), vec![kv("force", s("true"))])]);
    let absent = trace(&[span(1, 0, 1)]);
    assert_eq!(outcome(&yes, &forced), Outcome::Sampled);
    assert_eq!(outcome(&yes, &text), Outcome::NotSampled);
    assert_eq!(outcome(&no, &text), Outcome::Sampled);
    assert_eq!(outcome(&no, &absent), Outcome::NotSampled);
}

#[test]
fn span_count_keeps_an_inclusive_range_and_zero_max_is_unbounded() {
    let set = policies("  - {name: c, type: span_count, span_count: {min_spans: 2, max_spans: 3}}");
    let open = policies("  - {name: c, type: span_count, span_count: {min_spans: 2}}");
    let spans: Vec<SpanSpec> = (1..=4).map(|n| span(n, 0, 1)).collect();
    assert_eq!(outcome(&set, &trace(&spans[..1])), Outcome::NotSampled);
    assert_eq!(outcome(&set, &trace(&spans[..2])), Outcome::Sampled);
    assert_eq!(outcome(&set, &trace(&spans[..3])), Outcome::Sampled);
    assert_eq!(outcome(&set, &trace(&spans[..4])), Outcome::NotSampled);
    assert_eq!(outcome(&open, &trace(&spans[..4])), Outcome::Sampled);
}

#[test]
fn trace_state_matches_a_member_of_a_valid_tracestate() {
    let set = policies(
        "  - {name: ts, type: trace_state, trace_state: {key: vendor, values: [gold, silver]}}",
    );
    let mut gold = span(1, 0, 1);
    gold.trace_state = "ot=th:8,vendor=gold".into();
    let mut invalid = span(1, 0, 1);
    invalid.trace_state = "vendor=gold,Bad Key=x".into();
    let mut bronze = span(1, 0, 1);
    bronze.trace_state = "vendor=bronze".into();
    assert_eq!(outcome(&set, &trace(&[gold])), Outcome::Sampled);
    assert_eq!(outcome(&set, &trace(&[invalid])), Outcome::NotSampled);
    assert_eq!(outcome(&set, &trace(&[bronze])), Outcome::NotSampled);
}

#[test]
fn trace_flags_keeps_a_trace_with_a_sampled_span() {
    let set = policies("  - {name: tf, type: trace_flags}");
    let mut sampled = span(2, 0, 1);
    sampled.flags = 0x301;
    assert_eq!(
        outcome(&set, &trace(&[span(1, 0, 1), sampled])),
        Outcome::Sampled
    );
    assert_eq!(outcome(&set, &trace(&[span(1, 0, 1)])), Outcome::NotSampled);
}

#[test]
fn rate_limiting_is_a_token_bucket_driven_by_the_time_argument() {
    let set = policies(
        "  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 10, burst_capacity: 20}}",
    );
    let fifteen: Vec<SpanSpec> = (1..=15).map(|n| span(n, 0, 1)).collect();
    let big: Vec<SpanSpec> = (1..=21).map(|n| span(n, 0, 1)).collect();
    let (t15, t21) = (trace(&fifteen), trace(&big));
    let state = set.new_state();
    let at = Duration::from_secs(100);
    // Full bucket: 20 tokens.
    assert!(t15.decide(&set, &state, at).sampled);
    // 5 left.
    assert!(!t15.decide(&set, &state, at).sampled);
    // Half a second refills 5: 10 is not enough yet.
    assert!(
        !t15.decide(&set, &state, at + Duration::from_millis(500))
            .sampled
    );
    // One second refills 10: 15.
    assert!(
        t15.decide(&set, &state, at + Duration::from_secs(1))
            .sampled
    );
    // More than the burst never passes, even with a full bucket.
    assert!(!t21.decide(&set, &set.new_state(), at).sampled);
}

#[test]
fn rate_limiting_burst_defaults_to_twice_the_rate() {
    let set = policies("  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 2}}");
    let four = trace(&(1..=4).map(|n| span(n, 0, 1)).collect::<Vec<_>>());
    let five = trace(&(1..=5).map(|n| span(n, 0, 1)).collect::<Vec<_>>());
    assert!(four.decide(&set, &set.new_state(), Duration::ZERO).sampled);
    assert!(!five.decide(&set, &set.new_state(), Duration::ZERO).sampled);
}

#[test]
fn bytes_limiting_charges_the_protobuf_size_of_the_trace() {
    // bytes_limiting.go charges ptrace.ProtoMarshaler.TracesSize: the
    // encoded TracesData of the trace's spans, resource and scope included.
    let t = trace(&[span(1, 0, 1), span(2, 0, 1)]);
    let bytes = proto::write::encoded_len(&t.refs()) as u64;
    assert!(bytes > t.summary.bytes(), "more than the spans alone");
    let fits = policies(&format!(
        "  - {{name: b, type: bytes_limiting, bytes_limiting: {{bytes_per_second: 1, burst_capacity: {bytes}}}}}"
    ));
    let too_small = policies(&format!(
        "  - {{name: b, type: bytes_limiting, bytes_limiting: {{bytes_per_second: 1, burst_capacity: {}}}}}",
        bytes - 1
    ));
    let state = fits.new_state();
    assert!(t.decide(&fits, &state, Duration::ZERO).sampled);
    assert!(!t.decide(&fits, &state, Duration::ZERO).sampled);
    assert!(
        !t.decide(&too_small, &too_small.new_state(), Duration::ZERO)
            .sampled
    );
}

#[test]
fn and_samples_only_when_every_sub_policy_samples() {
    let set = policies(
        "  - name: prod-errors\n    type: and\n    and:\n      and_sub_policy:\n        - {name: prod, type: string_attribute, string_attribute: {key: env, values: [prod]}}\n        - {name: err, type: status_code, status_code: {status_codes: [ERROR]}}",
    );
    let mut error = with_attrs(span(1, 0, 1), vec![kv("env", s("prod"))]);
    error.status = 2;
    let ok = with_attrs(span(1, 0, 1), vec![kv("env", s("prod"))]);
    assert_eq!(outcome(&set, &trace(&[error])), Outcome::Sampled);
    assert_eq!(outcome(&set, &trace(&[ok])), Outcome::NotSampled);
}

#[test]
fn drop_wins_over_every_other_vote() {
    let set = policies(
        "  - {name: all, type: always_sample}\n  - name: no-health\n    type: drop\n    drop:\n      drop_sub_policy:\n        - {name: health, type: string_attribute, string_attribute: {key: route, values: [/health]}}",
    );
    let health = trace(&[with_attrs(span(1, 0, 1), vec![kv("route", s("/health"))])]);
    let d = decide(&set, &health);
    assert_eq!(
        (d.outcome, d.policy.as_deref(), d.sampled),
        (Outcome::Dropped, Some("no-health"), false)
    );
    assert_eq!(outcome(&set, &trace(&[span(1, 0, 1)])), Outcome::Sampled);
}

#[test]
fn not_swaps_sampled_and_not_sampled() {
    let set = policies(
        "  - name: not-slow\n    type: not\n    not:\n      not_sub_policy: {name: slow, type: latency, latency: {threshold_ms: 100}}",
    );
    assert_eq!(outcome(&set, &trace(&[span(1, 0, 50)])), Outcome::Sampled);
    assert_eq!(
        outcome(&set, &trace(&[span(1, 0, 150)])),
        Outcome::NotSampled
    );
}

#[test]
fn composite_gives_each_sub_policy_its_share_of_spans_per_second() {
    let set = policies(
        "  - name: budget\n    type: composite\n    composite:\n      max_total_spans_per_second: 10\n      policy_order: [errors, rest]\n      composite_sub_policy:\n        - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n        - {name: rest, type: always_sample}\n      rate_allocation:\n        - {policy: errors, percent: 50}\n        - {policy: rest, percent: 30}",
    );
    let three: Vec<SpanSpec> = (1..=3).map(|n| span(n, 0, 1)).collect();
    let mut errors = three.clone();
    errors[0].status = 2;
    let (err, ok) = (trace(&errors), trace(&three));
    let state = set.new_state();
    let t0 = Duration::from_secs(7);
    // errors: 5 spans/s; rest: 3 spans/s.
    assert!(ok.decide(&set, &state, t0).sampled);
    assert!(!ok.decide(&set, &state, t0).sampled);
    assert!(err.decide(&set, &state, t0).sampled);
    assert!(!err.decide(&set, &state, t0).sampled);
    // A new second resets every budget.
    let t1 = t0 + Duration::from_secs(1);
    assert!(ok.decide(&set, &state, t1).sampled);
    assert!(err.decide(&set, &state, t1).sampled);
}

#[test]
fn composite_sub_policy_without_allocation_gets_the_default_share() {
    // composite_helper.go since contrib #49857: total / sub-policies, as
    // for percent 0 (here 100 / 2 = 50 spans per second).
    let set = policies(
        "  - name: budget\n    type: composite\n    composite:\n      max_total_spans_per_second: 100\n      composite_sub_policy:\n        - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n        - {name: a, type: always_sample}\n      rate_allocation: [{policy: errors, percent: 25}]",
    );
    let state = set.new_state();
    let fifty = trace(&(1..=50).map(|n| span(n, 0, 1)).collect::<Vec<_>>());
    let d = fifty.decide(&set, &state, Duration::ZERO);
    assert_eq!(
        (
            d.outcome,
            d.policy.as_deref(),
            d.composite_policy.as_deref()
        ),
        (Outcome::Sampled, Some("budget"), Some("a"))
    );
    let one = trace(&[span(1, 0, 1)]);
    assert!(!one.decide(&set, &state, Duration::ZERO).sampled);
}

#[test]
fn an_inverted_match_no_longer_vetoes_a_sample() {
    let set = policies(
        "  - {name: all, type: always_sample}\n  - {name: veto, type: boolean_attribute, boolean_attribute: {key: skip, value: true, invert_match: true}}",
    );
    let skipped = trace(&[with_attrs(span(1, 0, 1), vec![kv("skip", b(true))])]);
    let d = decide(&set, &skipped);
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Sampled, Some("all"))
    );
}

#[test]
fn an_inverted_non_match_is_a_sample_and_the_first_sampler_decides() {
    let set = policies(
        "  - {name: inv, type: string_attribute, string_attribute: {key: team, values: [x], invert_match: true}}\n  - {name: first, type: always_sample}\n  - {name: second, type: always_sample}",
    );
    let d = decide(&set, &trace(&[span(1, 0, 1)]));
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Sampled, Some("inv"))
    );
}

#[test]
fn an_inverted_non_match_samples_whatever_other_policies_say() {
    let inverted = "  - {name: inv, type: string_attribute, string_attribute: {key: team, values: [x], invert_match: true}}";
    let with_no = policies(&format!(
        "{inverted}\n  - {{name: slow, type: latency, latency: {{threshold_ms: 1000}}}}"
    ));
    let d = decide(&with_no, &trace(&[span(1, 0, 1)]));
    assert_eq!(
        (d.outcome, d.policy.as_deref(), d.sampled),
        (Outcome::Sampled, Some("inv"), true)
    );
    assert_eq!(
        d.votes,
        crate::Votes {
            evaluated: 0b11,
            sampled: 0b01,
            errors: 0,
        }
    );
}

#[test]
fn sample_on_first_match_stops_at_the_first_sampler() {
    let body = "policies:\n  - {name: all, type: always_sample}\n  - {name: veto, type: boolean_attribute, boolean_attribute: {key: skip, value: true, invert_match: true}}";
    let skipped = trace(&[with_attrs(span(1, 0, 1), vec![kv("skip", b(true))])]);
    let all = crate::PolicyFile::parse(body, "t.yaml").unwrap().policies;
    let first = crate::PolicyFile::parse(&format!("sample_on_first_match: true\n{body}"), "t.yaml")
        .unwrap()
        .policies;
    assert_eq!(decide(&all, &skipped).votes.evaluated, 0b11);
    let d = decide(&first, &skipped);
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Sampled, Some("all"))
    );
    assert_eq!(
        d.votes.evaluated, 0b01,
        "the second policy is not evaluated"
    );
}

#[test]
fn drop_policies_are_evaluated_first_even_with_sample_on_first_match() {
    let file = crate::PolicyFile::parse(
        "sample_on_first_match: true\npolicies:\n  - {name: all, type: always_sample}\n  - name: no-health\n    type: drop\n    drop:\n      drop_sub_policy:\n        - {name: h, type: string_attribute, string_attribute: {key: route, values: [/health]}}",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        file.policies.names().collect::<Vec<_>>(),
        ["no-health", "all"]
    );
    let health = trace(&[with_attrs(span(1, 0, 1), vec![kv("route", s("/health"))])]);
    assert_eq!(outcome(&file.policies, &health), Outcome::Dropped);
}

#[test]
fn thresholds_are_written_only_with_the_usetracestate_gate() {
    let yaml = "  - {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 10}}";
    let d = decide(
        &policies(yaml),
        &TestTrace::new(ID_A, vec![], &[span(1, 0, 1)]),
    );
    assert_eq!((d.sampled, d.threshold), (true, None));
}

#[test]
fn a_trace_kept_only_by_probabilistic_carries_its_threshold() {
    let set = policies_with_tracestate(
        "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n  - {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 10}}",
    );
    let d = decide(&set, &TestTrace::new(ID_A, vec![], &[span(1, 0, 1)]));
    assert_eq!(d.policy.as_deref(), Some("ten"));
    assert_eq!(
        d.threshold.map(|t| t.to_string()).as_deref(),
        Some("e6666666666666")
    );
    // Kept by the error policy as well: it would have been kept anyway,
    // so its weight is 1: th:0.
    let mut error = span(1, 0, 1);
    error.status = 2;
    let d = decide(&set, &TestTrace::new(ID_A, vec![], &[error]));
    assert_eq!(
        (d.policy.as_deref(), d.threshold.map(|t| t.to_string())),
        (Some("errors"), Some("0".to_string()))
    );
}

#[test]
fn probabilistic_decides_by_the_spans_rv_with_the_gate_on() {
    // probabilistic_test.go, TestProbabilisticSampling_RespectsTraceState:
    // rv >= th keeps; without a (valid) rv the FNV hash decides.
    let yaml = "  - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}";
    let gated = policies_with_tracestate(yaml);
    let with_state = |ts: &str| {
        let mut sp = span(1, 0, 1);
        sp.trace_state = ts.to_string();
        TestTrace::new([0; 16], vec![], &[sp])
    };
    assert!(decide(&gated, &with_state("ot=rv:ffffffffffffff")).sampled);
    assert!(!decide(&gated, &with_state("ot=rv:10000000000000")).sampled);
    // The zero trace ID hashes above the 50% FNV threshold by default.
    let fnv = decide(&policies(yaml), &with_state("ot=rv:ffffffffffffff")).sampled;
    assert_eq!(
        decide(&gated, &with_state("ot=rv:zzzzzzzzzzzzzz")).sampled,
        fnv
    );
    assert_eq!(decide(&gated, &with_state("")).sampled, fnv);
}

#[test]
fn and_with_probabilistic_reports_the_probabilistic_threshold() {
    let set = policies_with_tracestate(
        "  - name: half-of-all\n    type: and\n    and:\n      and_sub_policy:\n        - {name: all, type: always_sample}\n        - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}",
    );
    let d = decide(&set, &TestTrace::new(ID_A, vec![], &[span(1, 0, 1)]));
    assert!(d.sampled);
    assert_eq!(d.threshold.map(|t| t.to_string()).as_deref(), Some("8"));
}

#[test]
fn a_state_from_another_set_is_not_misread_a_fresh_one_is_used() {
    let limited = policies(
        "  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 1}}",
    );
    let composite = policies(
        "  - name: c\n    type: composite\n    composite:\n      max_total_spans_per_second: 5\n      composite_sub_policy: [{name: a, type: always_sample}]\n      rate_allocation: [{policy: a, percent: 100}]",
    );
    let state = composite.new_state();
    assert!(
        trace(&[span(1, 0, 1)])
            .decide(&limited, &state, Duration::ZERO)
            .sampled
    );
}

// not(not(p)) decides as p, for every leaf policy type and random traces.

const LEAVES: [&str; 9] = [
    "{name: p, type: latency, latency: {threshold_ms: 50}}",
    "{name: p, type: status_code, status_code: {status_codes: [ERROR]}}",
    "{name: p, type: probabilistic, probabilistic: {sampling_percentage: 40}}",
    "{name: p, type: string_attribute, string_attribute: {key: k, values: [a, b]}}",
    "{name: p, type: string_attribute, string_attribute: {key: k, values: [a], invert_match: true}}",
    "{name: p, type: numeric_attribute, numeric_attribute: {key: n, min_value: 3, max_value: 7}}",
    "{name: p, type: boolean_attribute, boolean_attribute: {key: f, value: true}}",
    "{name: p, type: span_count, span_count: {min_spans: 2, max_spans: 4}}",
    "{name: p, type: always_sample}",
];

fn double_not(leaf: &str) -> PolicySet {
    let (nodes, slots, keys) = policies(&format!("  - {leaf}")).into_parts();
    let wrapped = nodes
        .into_iter()
        .map(|p| Node {
            name: "outer".into(),
            rule: Rule::Not(Box::new(Node {
                name: "inner".into(),
                rule: Rule::Not(Box::new(p)),
            })),
        })
        .collect();
    PolicySet::new(wrapped, false, slots, keys)
}

fn span_strategy() -> impl Strategy<Value = SpanSpec> {
    (
        1u64..6,
        0u64..100,
        0u64..100,
        0i32..3,
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::option::of(0i64..10),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(id, start, len, status, k, n, f)| {
            let mut attrs = Vec::new();
            if let Some(k) = k {
                attrs.push(kv("k", s(k)));
            }
            if let Some(n) = n {
                attrs.push(kv("n", i(n)));
            }
            if let Some(f) = f {
                attrs.push(kv("f", b(f)));
            }
            SpanSpec {
                id,
                parent: (id != 1).then_some(1),
                start_ms: start,
                end_ms: start + len,
                status,
                attrs,
                ..SpanSpec::default()
            }
        })
}

proptest! {
    #[test]
    fn not_of_not_decides_as_the_policy(
        leaf in prop::sample::select(LEAVES.to_vec()),
        id in any::<[u8; 16]>(),
        spans in prop::collection::vec(span_strategy(), 0..6),
    ) {
        let t = TestTrace::new(id, Vec::new(), &spans);
        let plain = decide(&policies(&format!("  - {leaf}")), &t);
        let wrapped = decide(&double_not(leaf), &t);
        prop_assert_eq!(plain.outcome, wrapped.outcome);
        prop_assert_eq!(plain.sampled, wrapped.sampled);
    }
}

#[test]
fn threads_sharing_a_state_spend_each_token_once() {
    // A burst of 100 spans, no refill (the clock stands still): 4 threads
    // deciding 50 one-span traces each keep exactly 100 between them, and a
    // composite budget of 30 spans keeps exactly 30.
    let limited = policies(
        "  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 100}}",
    );
    let composite = policies(
        "  - name: c\n    type: composite\n    composite:\n      max_total_spans_per_second: 30\n      composite_sub_policy: [{name: a, type: always_sample}]\n      rate_allocation: [{policy: a, percent: 100}]",
    );
    for (set, expected) in [(&limited, 100), (&composite, 30)] {
        let state = set.new_state();
        let one = trace(&[span(1, 0, 1)]);
        let kept: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..50)
                            .filter(|_| one.decide(set, &state, Duration::ZERO).sampled)
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("worker")).sum()
        });
        assert_eq!(kept, expected);
    }
}

/// A composite of two halves of 100 spans/s, over single-span traces that
/// only sub-policy `a` keeps: spans kept in second 0.
fn composite_second(lending: bool, b_traffic: bool) -> (u32, u32) {
    let set = policies(&format!(
        "  - name: comp
    type: composite
    composite:
      max_total_spans_per_second: 100
      budget_lending: {lending}
      composite_sub_policy:
        - {{name: a, type: string_attribute, string_attribute: {{key: sub, values: [a]}}}}
        - {{name: b, type: string_attribute, string_attribute: {{key: sub, values: [b]}}}}"
    ));
    let state = set.new_state();
    let (mut a, mut b) = (0, 0);
    for n in 0..300u32 {
        let which = if b_traffic && n % 2 == 1 { "b" } else { "a" };
        let t = TestTrace::new(
            {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                id
            },
            Vec::new(),
            &[with_attrs(span(1, 0, 1), vec![kv("sub", s(which))])],
        );
        let now = Duration::from_millis(u64::from(n));
        let d = t.decide(&set, &state, now);
        if d.sampled {
            match d.composite_policy.as_deref() {
                Some("a") => a += 1,
                Some("b") => b += 1,
                other => panic!("kept by {other:?}"),
            }
        }
    }
    (a, b)
}

#[test]
fn budget_lending_gives_a_sub_policy_the_others_unused_share_within_the_second() {
    // The Collector's composite: `a` gets its half, whatever `b` leaves.
    assert_eq!(composite_second(false, false), (50, 0));
    // With lending, `a` takes what `b` does not use, up to the total.
    assert_eq!(composite_second(true, false), (100, 0));
    // When both are busy, each keeps its own half: the total never passes
    // max_total_spans_per_second.
    let (a, b) = composite_second(true, true);
    assert_eq!(a + b, 100);
    assert_eq!((a, b), (50, 50));
}

#[test]
fn and_thresholds_take_the_max_of_one_randomness_and_multiply_independent_ones() {
    let half = 1u64 << 55; // keeps 1 - 1/2
    let three_quarters = 3u64 << 54; // keeps 1/4
    // One randomness: both hold when R passes the larger threshold.
    assert_eq!(
        and_threshold((half, SOURCE_RV), (three_quarters, SOURCE_RV)),
        (three_quarters, SOURCE_RV)
    );
    // Independent: 1/2 × 1/4 = 1/8 kept, threshold 7/8.
    assert_eq!(
        and_threshold((half, SOURCE_ADAPTIVE), (three_quarters, 77)),
        (7u64 << 53, SOURCE_MIXED)
    );
    // A keep of weight 1 changes nothing.
    assert_eq!(and_threshold((0, SOURCE_NONE), (half, 9)), (half, 9));
    assert_eq!(and_threshold((half, 9), (0, SOURCE_NONE)), (half, 9));
}

/// `and` of a `probabilistic` (FNV hash) and an adaptive policy (its own
/// hash) keeps about the product of their probabilities; the threshold the
/// kept traces carry must say so, or summing 1/p would count half of what
/// was sent. With one salt twice, the hashes are one and the max holds.
#[test]
fn adjusted_counts_add_up_through_an_and_of_independent_samplers() {
    let mixed = policies_with_tracestate(
        "  - name: both
    type: and
    and:
      and_sub_policy:
        - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
        - name: quarter
          type: ema_dynamic
          ema_dynamic: {goal_sample_rate: 4, field_list: [], use_trace_length: true, adjustment_interval: 1h}",
    );
    let same = policies_with_tracestate(
        "  - name: both
    type: and
    and:
      and_sub_policy:
        - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
        - {name: quarter, type: probabilistic, probabilistic: {sampling_percentage: 25}}",
    );
    for (set, kept_share) in [(&mixed, 0.125), (&same, 0.25)] {
        let state = set.new_state();
        let n = 20_000u64;
        let (mut kept, mut estimate) = (0u64, 0.0);
        for k in 0..n {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            id[8..].copy_from_slice(&k.to_be_bytes());
            let d =
                TestTrace::new(id, vec![], &[span(1, 0, 1)]).decide(set, &state, Duration::ZERO);
            if d.sampled {
                kept += 1;
                estimate += 1.0 / d.threshold.expect("a threshold").probability();
            }
        }
        let share = kept as f64 / n as f64;
        assert!(
            (share - kept_share).abs() < 0.015,
            "kept {share}, expected {kept_share}"
        );
        let err = (estimate - n as f64).abs() / n as f64;
        assert!(err < 0.05, "estimated {estimate} of {n} sent (kept {kept})");
    }
}

/// A skewed stream through `rate_limiting` and `bytes_limiting` well past
/// their budgets: each kept span carries the threshold of the share its
/// limiter let through, so summing 1/p over kept spans estimates what was
/// sent, for the common key and the rare one alike.
#[test]
fn limiter_keeps_carry_thresholds_whose_adjusted_counts_add_up() {
    for limiter in [
        "{name: lim, type: rate_limiting, rate_limiting: {spans_per_second: 300}}",
        "{name: lim, type: bytes_limiting, bytes_limiting: {bytes_per_second: 20000}}",
    ] {
        let set = policies_with_tracestate(&format!("  - {limiter}"));
        let state = set.new_state();
        let (mut sent, mut estimate) = ([0.0f64; 2], [0.0f64; 2]);
        let mut kept_spans = 0.0;
        // 30 s at 1,000 traces a second: 95% one-span traces, 5% (the rare
        // key) of five spans.
        for k in 0..30_000u64 {
            let rare = k % 20 == 7;
            let spans: Vec<SpanSpec> = (1..=if rare { 5 } else { 1 })
                .map(|id| span(id, 0, 1))
                .collect();
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            id[8..].copy_from_slice(&k.to_be_bytes());
            let d =
                TestTrace::new(id, vec![], &spans).decide(&set, &state, Duration::from_millis(k));
            let key = usize::from(rare);
            sent[key] += spans.len() as f64;
            if d.sampled {
                let p = d.threshold.map_or(1.0, |t| t.probability());
                estimate[key] += spans.len() as f64 / p;
                kept_spans += spans.len() as f64;
            }
        }
        eprintln!("{limiter}: sent {sent:?} estimated {estimate:?} kept spans {kept_spans}");
        assert!(
            kept_spans < 0.5 * (sent[0] + sent[1]),
            "the limiter limited"
        );
        for key in 0..2 {
            let err = (estimate[key] - sent[key]).abs() / sent[key];
            assert!(
                err < 0.10,
                "{limiter} key {key}: estimated {} of {} sent",
                estimate[key],
                sent[key]
            );
        }
        let total = (estimate[0] + estimate[1] - sent[0] - sent[1]).abs() / (sent[0] + sent[1]);
        assert!(total < 0.05, "{limiter}: total off by {total}");
    }
}
