//! The converter on rules files modelled on Refinery's documented ones
//! (policy/tests/refinery/), each result loaded as `policy check` loads it
//! and deciding sample traces as Refinery's rules would.

use std::time::Duration;

use super::convert;
use crate::testutil::{SpanSpec, TestTrace, b, i, kv, s, span};
use crate::{Outcome, PolicyFile, PolicySet, PolicyState};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/refinery/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn converted(name: &str, environment: Option<&str>) -> PolicySet {
    let c = convert(&fixture(name), name, environment).unwrap_or_else(|e| panic!("{e}"));
    PolicyFile::parse(&c.yaml, "converted.yaml")
        .unwrap_or_else(|e| panic!("{e}\n{}", c.yaml))
        .policies
}

fn refused(rules: &str) -> String {
    convert(rules, "rules.yaml", None).expect_err("refused")
}

fn id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

fn with(
    mut spec: SpanSpec,
    attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> SpanSpec {
    spec.attrs = attrs;
    spec
}

/// A root span and a child; the child carries `child_attrs`.
fn trace(
    n: u64,
    service: &str,
    root_attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    child: SpanSpec,
) -> TestTrace {
    TestTrace::new(
        id(n),
        vec![vec![kv("service.name", s(service))]],
        &[with(span(1, 0, 100), root_attrs), child],
    )
}

fn decide(set: &PolicySet, state: &PolicyState, t: &TestTrace) -> (Outcome, String) {
    let d = t.decide(set, state, Duration::ZERO);
    (d.outcome, d.policy.as_deref().unwrap_or("-").to_string())
}

#[test]
fn rules_based_rules_decide_as_refinery_decides_them() {
    let set = converted("rules.yaml", None);
    let state = set.new_state();
    let child = |attrs| with(span(2, 10, 50), attrs);
    // Rule 1 (Drop) wins even when a later rule would keep: first match.
    let health = trace(1, "api", vec![kv("http.route", s("/ready"))], {
        let mut c = child(vec![]);
        c.status = 2;
        c
    });
    assert_eq!(decide(&set, &state, &health).0, Outcome::Dropped);
    // Rule 2: both conditions, on different spans (trace scope), with
    // Datatype int coercing the string "500".
    let mut slow = child(vec![kv("http.response.status_code", s("500"))]);
    slow.end_ms = 1_200;
    let t = trace(2, "api", vec![], slow);
    assert_eq!(
        decide(&set, &state, &t),
        (
            Outcome::Sampled,
            "keep slow 500 errors across semantic conventions".into()
        )
    );
    // Only one of rule 2's conditions: not rule 2; an error keeps it (rule 3).
    let mut fast = child(vec![kv("http.status_code", i(500))]);
    fast.status = 2;
    let t = trace(3, "api", vec![], fast);
    assert_eq!(
        decide(&set, &state, &t),
        (Outcome::Sampled, "keep errors".into())
    );
    // Rule 4 drops a buggy-service trace without a root span…
    let orphan = |n, status| {
        let mut a = span(5, 0, 10);
        a.parent = Some(99);
        a.status = status;
        TestTrace::new(
            id(n),
            vec![vec![kv("service.name", s("buggy-service"))]],
            &[a],
        )
    };
    assert_eq!(decide(&set, &state, &orphan(4, 0)).0, Outcome::Dropped);
    // …unless rule 3 matched first: Refinery keeps it, so does tailgate.
    assert_eq!(
        decide(&set, &state, &orphan(5, 2)),
        (Outcome::Sampled, "keep errors".into())
    );
    // With its root span, rule 4 does not match.
    let t = trace(6, "buggy-service", vec![], child(vec![]));
    assert_ne!(decide(&set, &state, &t).0, Outcome::Dropped);
}

/// Over many trace IDs, the share each rule keeps is Refinery's 1 in
/// SampleRate, and no later rule keeps what an earlier one matched.
#[test]
fn sample_rates_keep_one_in_n_of_what_their_rule_matches_first() {
    let set = converted("rules.yaml", None);
    let state = set.new_state();
    let n = 4_000u64;
    let share = |make: &dyn Fn(u64) -> TestTrace, policy: &str| {
        let mut kept = 0;
        for k in 0..n {
            let (outcome, by) = decide(&set, &state, &make(k));
            if outcome.is_sampled() {
                assert_eq!(by, policy, "trace {k}");
                kept += 1;
            }
        }
        kept as f64 / n as f64
    };
    let child = |attrs| with(span(2, 10, 50), attrs);
    // Scope: span: service.name = users on the root span itself: 1 in 5.
    let users_root = |k| trace(10_000 + k, "users", vec![], child(vec![]));
    let got = share(
        &users_root,
        "sample traces originating from the users service",
    );
    assert!((got - 0.2).abs() < 0.025, "users root: {got}");
    // users only below another service's root: not that rule; the rest, 1 in 10.
    let users_below = |k| {
        let mut c = span(2, 10, 50);
        c.resource = 1;
        TestTrace::new(
            id(20_000 + k),
            vec![
                vec![kv("service.name", s("web"))],
                vec![kv("service.name", s("users"))],
            ],
            &[span(1, 0, 100), c],
        )
    };
    let got = share(&users_below, "the rest, 1 in 10");
    assert!((got - 0.1).abs() < 0.02, "users below: {got}");
    // root.http.route starts-with /api/checkout: 1 in 2; on a child only: the rest.
    let checkout = |k| {
        trace(
            30_000 + k,
            "web",
            vec![kv("http.route", s("/api/checkout/pay"))],
            child(vec![]),
        )
    };
    let got = share(&checkout, "checkout api, 1 in 2");
    assert!((got - 0.5).abs() < 0.03, "checkout: {got}");
    let checkout_child = |k| {
        trace(
            40_000 + k,
            "web",
            vec![],
            child(vec![kv("http.route", s("/api/checkout/pay"))]),
        )
    };
    let got = share(&checkout_child, "the rest, 1 in 10");
    assert!((got - 0.1).abs() < 0.02, "checkout child: {got}");
    // 200 responses: the EMA dynamic sampler at its goal rate (15) until its
    // first adjustment.
    let ok = |k| {
        trace(
            50_000 + k,
            "web",
            vec![kv("http.response.status_code", i(200)), kv("flag", b(true))],
            child(vec![]),
        )
    };
    let got = share(&ok, "dynamically sample 200 responses");
    assert!((got - 1.0 / 15.0).abs() < 0.02, "200s: {got}");
}

#[test]
fn environments_convert_to_their_samplers_and_apply_to_their_own_traces() {
    let set = converted("environments.yaml", None);
    let names: Vec<&str> = set.names().collect();
    assert_eq!(
        names,
        [
            "production/EMADynamicSampler",
            "staging/EMAThroughputSampler",
            "dev/WindowedThroughputSampler",
            "__default__/DeterministicSampler"
        ]
    );
    let state = set.new_state();
    let n = 4_000u64;
    let mut kept = [0u32; 2];
    for k in 0..n {
        // deployment.environment.name = qa: no section, so __default__ (1 in 4).
        let t = TestTrace::new(
            id(k),
            vec![vec![kv("deployment.environment.name", s("qa"))]],
            &[span(1, 0, 10)],
        );
        let (outcome, by) = decide(&set, &state, &t);
        if outcome.is_sampled() {
            assert_eq!(by, "__default__/DeterministicSampler");
            kept[0] += 1;
        }
        let t = TestTrace::new(
            id(n + k),
            vec![vec![kv("deployment.environment", s("production"))]],
            &[span(1, 0, 10)],
        );
        let (outcome, by) = decide(&set, &state, &t);
        if outcome.is_sampled() {
            assert_eq!(by, "production/EMADynamicSampler");
            kept[1] += 1;
        }
    }
    let qa = f64::from(kept[0]) / n as f64;
    let production = f64::from(kept[1]) / n as f64;
    assert!((qa - 0.25).abs() < 0.025, "qa: {qa}");
    // GoalSampleRate 20 before the first adjustment.
    assert!(
        (production - 0.05).abs() < 0.015,
        "production: {production}"
    );

    // One section alone, without an environment guard.
    let only = converted("environments.yaml", Some("staging"));
    assert_eq!(only.names().collect::<Vec<_>>(), ["EMAThroughputSampler"]);
}

#[test]
fn a_deterministic_sampler_keeps_one_in_its_sample_rate() {
    let c = convert(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    DeterministicSampler:\n      SampleRate: 8\n",
        "r.yaml",
        None,
    )
    .unwrap();
    assert!(
        c.yaml
            .contains("probabilistic: {sampling_percentage: 12.5}"),
        "{}",
        c.yaml
    );
    let c = convert(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    DeterministicSampler:\n      SampleRate: 1\n",
        "r.yaml",
        None,
    )
    .unwrap();
    assert!(c.yaml.contains("type: always_sample"), "{}", c.yaml);
}

#[test]
fn what_has_no_equivalent_is_refused_naming_the_rule() {
    let v1 = refused("Sampler = \"DeterministicSampler\"\nSampleRate = 1\n");
    assert!(v1.contains("v1") && v1.contains("convert"), "{v1}");
    let v1_yaml = refused("Sampler: DeterministicSampler\nSampleRate: 1\n");
    assert!(v1_yaml.contains("no RulesVersion"), "{v1_yaml}");
    let dynamic = refused(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    DynamicSampler: {SampleRate: 2, FieldList: [a]}\n",
    );
    assert!(
        dynamic.contains("DynamicSampler") && dynamic.contains("EMADynamicSampler"),
        "{dynamic}"
    );
    let total = refused(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    RulesBasedSampler:\n      Rules:\n        - Name: budget\n          Sampler:\n            TotalThroughputSampler: {GoalThroughputPerSec: 5, FieldList: [a]}\n",
    );
    assert!(
        total.contains("rule \"budget\"") && total.contains("TotalThroughputSampler"),
        "{total}"
    );
    let operator = refused(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    RulesBasedSampler:\n      Rules:\n        - Name: odd\n          Conditions: [{Field: a, Operator: near, Value: 1}]\n",
    );
    assert!(
        operator.contains("rule \"odd\" condition 1")
            && operator.contains("unknown Operator \"near\""),
        "{operator}"
    );
    let span_root = refused(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    RulesBasedSampler:\n      Rules:\n        - Name: r\n          Scope: span\n          Conditions: [{Operator: has-root-span, Value: true}]\n",
    );
    assert!(
        span_root.contains("rule \"r\"") && span_root.contains("has-root-span"),
        "{span_root}"
    );
    let no_default =
        refused("RulesVersion: 2\nSamplers:\n  prod:\n    DeterministicSampler: {SampleRate: 2}\n");
    assert!(no_default.contains("__default__"), "{no_default}");
    let one_env = refused(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    DeterministicSampler: {SampleRate: 2}\n  old:\n    DynamicSampler: {SampleRate: 2, FieldList: [a]}\n",
    );
    assert!(
        one_env.contains("sampler \"old\"") && one_env.contains("--environment"),
        "{one_env}"
    );
}

#[test]
fn every_operator_converts_to_a_condition_tailgate_loads() {
    let ops = [
        ("'='", "x"),
        ("'!='", "x"),
        ("'>'", "5"),
        ("'>='", "5.5"),
        ("'<'", "5"),
        ("'<='", "5"),
        ("starts-with", "a"),
        ("contains", "a.b"),
        ("does-not-contain", "a"),
        ("in", "[a, 2]"),
        ("not-in", "[a, b]"),
        ("matches", "'^a+$'"),
        ("exists", "null"),
        ("not-exists", "null"),
    ];
    let mut rules = String::from(
        "RulesVersion: 2\nSamplers:\n  __default__:\n    RulesBasedSampler:\n      Rules:\n",
    );
    for (k, (op, value)) in ops.iter().enumerate() {
        for datatype in ["", "string", "int", "float"] {
            if matches!(
                *op,
                "exists"
                    | "not-exists"
                    | "starts-with"
                    | "contains"
                    | "does-not-contain"
                    | "matches"
            ) && !datatype.is_empty()
            {
                continue;
            }
            let value = if datatype == "int" || datatype == "float" {
                "5"
            } else {
                value
            };
            let value =
                if matches!(*op, "in" | "not-in") && !datatype.is_empty() && datatype != "string" {
                    "[1, 2]"
                } else {
                    value
                };
            let dt = if datatype.is_empty() {
                String::new()
            } else {
                format!(", Datatype: {datatype}")
            };
            for field in [
                "http.route",
                "root.http.route",
                "name",
                "duration_ms",
                "status_code",
                "span.kind",
            ] {
                if field == "duration_ms" && !op.starts_with('\'') {
                    continue;
                }
                // A field every span has never "not-exists": refused, tested above.
                if *op == "not-exists" && !field.ends_with("http.route") {
                    continue;
                }
                let value = if field == "duration_ms" { "5" } else { value };
                rules.push_str(&format!(
                    "        - Name: r{k} {field} {datatype}\n          SampleRate: 1\n          Conditions: [{{Field: {field}, Operator: {op}, Value: {value}{dt}}}]\n"
                ));
            }
        }
    }
    rules.push_str("        - Name: bool\n          SampleRate: 1\n          Conditions: [{Field: flag, Operator: '=', Value: true, Datatype: bool}]\n");
    rules.push_str("        - Name: many\n          Conditions: [{Field: '?.NUM_DESCENDANTS', Operator: '>=', Value: 10}]\n          SampleRate: 2\n");
    let c = convert(&rules, "all.yaml", None).unwrap_or_else(|e| panic!("{e}"));
    PolicyFile::parse(&c.yaml, "all-converted.yaml").unwrap_or_else(|e| panic!("{e}"));
}

/// Missing fields, mismatched types and a span attribute over its
/// resource's, as sample/rules.go treats them.
#[test]
fn conditions_read_fields_as_refinery_does() {
    let rules = |condition: &str| {
        let yaml = format!(
            "RulesVersion: 2\nSamplers:\n  __default__:\n    RulesBasedSampler:\n      Rules:\n        - Name: drop\n          Drop: true\n          Conditions: [{condition}]\n"
        );
        let c = convert(&yaml, "r.yaml", None).unwrap_or_else(|e| panic!("{e}"));
        PolicyFile::parse(&c.yaml, "c.yaml")
            .unwrap_or_else(|e| panic!("{e}"))
            .policies
    };
    let dropped = |set: &PolicySet, resource: Vec<_>, attrs: Vec<_>| {
        let t = TestTrace::new(id(1), vec![resource], &[with(span(1, 0, 10), attrs)]);
        decide(set, &set.new_state(), &t).0 == Outcome::Dropped
    };
    // `!=` needs the field, of the value's type.
    let ne = rules("{Field: team, Operator: '!=', Value: core}");
    assert!(dropped(&ne, vec![], vec![kv("team", s("ads"))]));
    assert!(!dropped(&ne, vec![], vec![kv("team", s("core"))]));
    assert!(!dropped(&ne, vec![], vec![]));
    assert!(!dropped(&ne, vec![], vec![kv("team", i(5))]));
    // does-not-contain and not-in hold for a missing field ("<nil>").
    let dnc = rules("{Field: http.route, Operator: does-not-contain, Value: /api}");
    assert!(dropped(&dnc, vec![], vec![]));
    assert!(!dropped(&dnc, vec![], vec![kv("http.route", s("/api/x"))]));
    let not_in = rules("{Field: team, Operator: not-in, Value: [core, ads]}");
    assert!(dropped(&not_in, vec![], vec![]));
    assert!(!dropped(&not_in, vec![], vec![kv("team", s("ads"))]));
    // The span's attribute covers the resource's of the same name.
    let eq = rules("{Field: tier, Operator: '=', Value: free}");
    assert!(dropped(&eq, vec![kv("tier", s("free"))], vec![]));
    assert!(!dropped(
        &eq,
        vec![kv("tier", s("free"))],
        vec![kv("tier", s("paid"))]
    ));
    // Without a Datatype, 500 is not "500"; with Datatype int it is.
    let plain = rules("{Field: code, Operator: '=', Value: 500}");
    assert!(!dropped(&plain, vec![], vec![kv("code", s("500"))]));
    assert!(dropped(&plain, vec![], vec![kv("code", i(500))]));
    let int = rules("{Field: code, Operator: '>=', Value: 500, Datatype: int}");
    assert!(dropped(&int, vec![], vec![kv("code", s("503"))]));
    assert!(!dropped(&int, vec![], vec![kv("code", s("oops"))]));
    // Fields: the first one the span has.
    let fields =
        rules("{Fields: [http.status_code, http.response.status_code], Operator: '=', Value: 404}");
    assert!(dropped(
        &fields,
        vec![],
        vec![kv("http.response.status_code", i(404))]
    ));
    assert!(!dropped(
        &fields,
        vec![],
        vec![
            kv("http.status_code", i(200)),
            kv("http.response.status_code", i(404))
        ]
    ));
    // span.kind in Honeycomb's lower case; duration_ms of a span.
    let kind = rules("{Field: span.kind, Operator: '=', Value: internal}");
    assert!(!dropped(&kind, vec![], vec![]));
    let long = rules("{Field: duration_ms, Operator: '>', Value: 9.5}");
    assert!(dropped(&long, vec![], vec![]));
    let short = rules("{Field: duration_ms, Operator: '<', Value: 9.5}");
    assert!(!dropped(&short, vec![], vec![]));
}
