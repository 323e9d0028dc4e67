//! Reading policy files: what is accepted, and every refusal placed at
//! file:line:column with the policy named.

use std::time::Duration;

use policy::{PolicyError, PolicyFile};

fn parse(src: &str) -> Result<PolicyFile, PolicyError> {
    PolicyFile::parse(src, "p.yaml")
}

fn refusal(src: &str) -> PolicyError {
    match parse(src) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e,
    }
}

#[test]
fn defaults_are_the_collectors() {
    let file = parse("policies:\n  - {name: all, type: always_sample}\n").unwrap();
    assert_eq!(file.decision_wait, Duration::from_secs(30));
    assert_eq!(file.decision_wait_after_root_received, None);
    assert_eq!(file.num_traces, 50_000);
    assert_eq!(
        (file.decision_cache.sampled, file.decision_cache.non_sampled),
        (0, 0)
    );
    assert!(!file.sample_on_first_match);
    assert_eq!(file.origin, None);
}

#[test]
fn settings_are_read_with_go_durations_and_grouped_integers() {
    let file = parse(
        "decision_wait: 1m30s\ndecision_wait_after_root_received: 500ms\nnum_traces: 100_000\nsample_on_first_match: true\ndecision_cache:\n  sampled_cache_size: 1_000\n  non_sampled_cache_size: 2000\npolicies:\n  - {name: all, type: always_sample}\n",
    )
    .unwrap();
    assert_eq!(file.decision_wait, Duration::from_secs(90));
    assert_eq!(
        file.decision_wait_after_root_received,
        Some(Duration::from_millis(500))
    );
    assert_eq!(file.num_traces, 100_000);
    assert!(file.sample_on_first_match);
    assert_eq!(
        (file.decision_cache.sampled, file.decision_cache.non_sampled),
        (1000, 2000)
    );
}

#[test]
fn the_collectors_readme_example_is_accepted() {
    // The Collector README's example (flow style, every policy type).
    let src = r#"
decision_wait: 10s
num_traces: 100
expected_new_traces_per_sec: 10
decision_cache:
  sampled_cache_size: 100_000
  non_sampled_cache_size: 100_000
policies:
  [
      { name: test-policy-1, type: always_sample },
      { name: test-policy-2, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000} },
      { name: test-policy-3, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100} },
      { name: test-policy-4, type: probabilistic, probabilistic: {sampling_percentage: 10} },
      { name: test-policy-5, type: status_code, status_code: {status_codes: [ERROR, UNSET]} },
      { name: test-policy-6, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]} },
      { name: test-policy-7, type: string_attribute, string_attribute: {key: key2, values: [value1, val*], enabled_regex_matching: true, cache_max_size: 10} },
      { name: test-policy-8, type: rate_limiting, rate_limiting: {spans_per_second: 35} },
      { name: test-policy-9, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1024000, burst_capacity: 2048000} },
      { name: test-policy-10, type: span_count, span_count: {min_spans: 2, max_spans: 20} },
      { name: test-policy-11, type: trace_state, trace_state: { key: key3, values: [value1, value2] } },
      { name: test-policy-12, type: boolean_attribute, boolean_attribute: {key: key4, value: true} },
      {
        name: test-policy-13,
        type: ottl_condition,
        ottl_condition: {
             error_mode: ignore,
             span: [
                  "attributes[\"test_attr_key_1\"] == \"test_attr_val_1\"",
                  "attributes[\"test_attr_key_2\"] != \"test_attr_val_1\"",
             ],
             spanevent: [
                  "name != \"test_span_event_name\"",
                  "attributes[\"test_event_attr_key_2\"] != \"test_event_attr_val_1\"",
             ]
        }
      },
      { name: and-policy-1, type: and, and: { and_sub_policy: [
          { name: test-and-policy-1, type: numeric_attribute, numeric_attribute: { key: key1, min_value: 50, max_value: 100 } },
          { name: test-and-policy-2, type: string_attribute, string_attribute: { key: key2, values: [ value1, value2 ] } } ] } },
      { name: drop-policy-1, type: drop, drop: { drop_sub_policy: [
          { name: test-drop-policy-1, type: string_attribute, string_attribute: {key: url.path, values: [\/health, \/metrics], enabled_regex_matching: true} } ] } },
      { name: composite-policy-1, type: composite, composite: {
          max_total_spans_per_second: 1000,
          policy_order: [test-composite-policy-1, test-composite-policy-2, test-composite-policy-3],
          composite_sub_policy: [
            { name: test-composite-policy-1, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50} },
            { name: test-composite-policy-2, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]} },
            { name: test-composite-policy-3, type: always_sample } ],
          rate_allocation: [ { policy: test-composite-policy-1, percent: 50 }, { policy: test-composite-policy-2, percent: 25 } ] } },
  ]
"#;
    let file = parse(src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.policies.len(), 16);
    // Drop policies are evaluated first.
    assert_eq!(file.policies.names().next(), Some("drop-policy-1"));
    assert!(
        file.notes
            .iter()
            .any(|n| n.contains("expected_new_traces_per_sec"))
    );
    // test-composite-policy-3 has no rate_allocation: since contrib #49857
    // it gets the default share (1000 / 3 spans per second), not 0.
    let listing = policy::cli::check_source(src, "readme.yaml").0;
    assert!(
        listing.contains("test-composite-policy-3: always_sample (allocated 333 spans/s)"),
        "{listing}"
    );
}

#[test]
fn an_unknown_key_in_a_policy_is_placed_and_names_the_policy() {
    let e = refusal(
        "policies:\n  - name: slow\n    type: latency\n    latency:\n      threshold_ms: 500\n      treshold: 5\n",
    );
    assert_eq!(e.location(), Some((6, 7)));
    assert_eq!(e.policy(), Some("slow"));
    assert_eq!(
        e.to_string(),
        "p.yaml:6:7: policy \"slow\": latency: unknown field `treshold`, expected `threshold_ms` or `upper_threshold_ms`"
    );
}

#[test]
fn a_wrong_type_is_placed_at_the_value() {
    let e = refusal(
        "policies:\n  - name: slow\n    type: latency\n    latency:\n      threshold_ms: fast\n",
    );
    assert_eq!(e.location(), Some((5, 21)));
    assert_eq!(e.policy(), Some("slow"));
    assert!(
        e.to_string()
            .contains("latency.threshold_ms: invalid type: string \"fast\", expected an integer"),
        "{e}"
    );
}

#[test]
fn an_unknown_setting_is_placed() {
    let e = refusal("decision_wiat: 5s\npolicies:\n  - {name: all, type: always_sample}\n");
    assert_eq!(e.location(), Some((1, 1)));
    assert_eq!(e.policy(), None);
    assert!(
        e.to_string()
            .starts_with("p.yaml:1:1: unknown field `decision_wiat`"),
        "{e}"
    );
}

#[test]
fn a_bad_duration_is_placed_at_the_value() {
    let e = refusal("decision_wait: 10\npolicies:\n  - {name: all, type: always_sample}\n");
    assert_eq!(e.location(), Some((1, 16)));
    assert!(
        e.to_string()
            .contains("decision_wait: invalid duration 10: missing unit"),
        "{e}"
    );
    let e = refusal("policies:\n  - {name: all, type: always_sample}\ndecision_wait: 5 minutes\n");
    assert_eq!(e.location(), Some((3, 16)));
    assert!(
        e.to_string().contains("invalid duration \"5 minutes\""),
        "{e}"
    );
}

#[test]
fn a_percentage_out_of_range_samples_as_the_collector_and_check_says_so() {
    // probabilistic.go accepts any percentage: 150 samples every trace,
    // -50 none (probabilistic_test.go, TestProbabilisticSampling).
    let file = parse(
        "policies:\n  - name: errors\n    type: status_code\n    status_code: {status_codes: [ERROR]}\n  - name: most\n    type: probabilistic\n    probabilistic: {sampling_percentage: 150}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        file.notes
            .iter()
            .any(|n| n.contains("\"most\"") && n.contains("samples every trace")),
        "{:?}",
        file.notes
    );
}

#[test]
fn a_duplicate_name_is_placed_at_the_second_use() {
    let e = refusal(
        "policies:\n  - name: a\n    type: always_sample\n  - name: b\n    type: always_sample\n  - name: a\n    type: trace_flags\n",
    );
    assert_eq!(e.location(), Some((6, 5)));
    assert_eq!(
        e.to_string(),
        "p.yaml:6:5: policy \"a\": duplicate policy name (first used at line 2 column 5)"
    );
}

#[test]
fn a_bad_regex_is_placed_at_the_value_in_flow_style_too() {
    let e = refusal(
        "policies:\n  - {name: routes, type: string_attribute, string_attribute: {key: r, values: [ok, '(unclosed'], enabled_regex_matching: true}}\n",
    );
    assert_eq!(e.policy(), Some("routes"));
    assert_eq!(e.location(), Some((2, 84)));
    assert!(
        e.to_string()
            .contains("values[1] \"(unclosed\" is not a valid regex"),
        "{e}"
    );
}

#[test]
fn an_error_in_a_sub_policy_names_its_path() {
    let e = refusal(
        "policies:\n  - name: outer\n    type: and\n    and:\n      and_sub_policy:\n        - name: fine\n          type: always_sample\n        - name: broken\n          type: span_count\n          span_count: {min_spans: 5, max_spans: 2}\n",
    );
    assert_eq!(e.location(), Some((8, 11)));
    assert_eq!(e.policy(), Some("broken"));
    assert_eq!(
        e.to_string(),
        "p.yaml:8:11: policy \"outer\" > \"broken\": max_spans (2) must not be less than min_spans (5)"
    );
    let e = refusal(
        "policies:\n  - name: outer\n    type: not\n    not:\n      not_sub_policy:\n        name: inner\n        type: latency\n        latency: {threshold_ms: x}\n",
    );
    assert_eq!(e.policy(), Some("inner"));
    assert!(
        e.to_string()
            .starts_with("p.yaml:8:33: policy \"outer\" > \"inner\": latency.threshold_ms"),
        "{e}"
    );
}

#[test]
fn the_collectors_testdata_ottl_configs_load() {
    // processor/tailsamplingprocessor/testdata/tail_sampling_config_errormode.yaml:
    // no error_mode, so the pinned release's default, propagate.
    let file = parse(
        "tail_sampling:\n  policies:\n    - name: test-policy-ottl\n      type: ottl_condition\n      ottl_condition:\n        span:\n          - attributes[\"test_attr\"] == \"val\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.policies.len(), 1);
    // testdata/tail_sampling_config.yaml's test-policy-11.
    let file = parse(
        r#"tail_sampling:
  decision_wait: 10s
  num_traces: 100
  policies:
    [
      {
        name: test-policy-11,
        type: ottl_condition,
        ottl_condition: {
          error_mode: ignore,
          span: [
            "attributes[\"test_attr_key_1\"] == \"test_attr_val_1\"",
            "attributes[\"test_attr_key_2\"] != \"test_attr_val_1\"",
          ],
          spanevent: [
            "name != \"test_span_event_name\"",
            "attributes[\"test_event_attr_key_2\"] != \"test_event_attr_val_1\"",
          ]
        }
      },
    ]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        file.policies.names().collect::<Vec<_>>(),
        ["test-policy-11"]
    );
}

#[test]
fn a_bad_ottl_condition_is_placed_at_its_entry_with_its_column_and_name() {
    let e = refusal(
        "policies:\n  - name: ottl\n    type: ottl_condition\n    ottl_condition:\n      span:\n        - 'name == \"a\"'\n        - 'name == \"a\" or Nope(name)'\n",
    );
    assert_eq!(e.location(), Some((7, 11)));
    assert_eq!(e.policy(), Some("ottl"));
    let text = e.to_string();
    assert!(
        text.starts_with("p.yaml:7:11: policy \"ottl\": ottl_condition.span[1] at 1:16: undefined function \"Nope\""),
        "{text}"
    );
    let e = refusal(
        "policies:\n  - name: ottl\n    type: ottl_condition\n    ottl_condition:\n      spanevent: ['nme == 1']\n",
    );
    assert!(
        e.to_string()
            .contains("ottl_condition.spanevent[0] at 1:1: segment \"nme\""),
        "{e}"
    );
    let e = refusal(
        "policies:\n  - name: ottl\n    type: ottl_condition\n    ottl_condition:\n      error_mode: loud\n      span: ['true']\n",
    );
    assert_eq!(e.location(), Some((5, 19)));
    assert!(e.to_string().contains("unknown error mode \"loud\""), "{e}");
    let e = refusal(
        "policies:\n  - name: ottl\n    type: ottl_condition\n    ottl_condition:\n      error_mode: ignore\n",
    );
    assert!(
        e.to_string()
            .contains("expected at least one OTTL condition"),
        "{e}"
    );
    let e = refusal(
        "policies:\n  - name: ottl\n    type: ottl_condition\n    ottl_condition:\n      span: ['true']\n      spans: ['true']\n",
    );
    assert!(e.to_string().contains("unknown field `spans`"), "{e}");
}

#[test]
fn unknown_types_missing_fields_and_mismatched_blocks_are_refused() {
    let cases = [
        (
            "  - {name: x, type: sometimes}",
            "unknown policy type \"sometimes\"",
        ),
        ("  - {name: x}", "type is required"),
        ("  - {type: always_sample}", "name is required"),
        (
            "  - {name: x, type: latency}",
            "type latency needs a `latency:` block",
        ),
        // The Collector README's own slip: a boolean policy with a
        // string_attribute block, which the Collector silently ignores.
        (
            "  - {name: x, type: boolean_attribute, string_attribute: {key: k, values: [v]}}",
            "has a `string_attribute` block but its type is boolean_attribute",
        ),
        (
            "  - {name: x, type: status_code, status_code: {status_codes: [FAIL]}}",
            "unknown status code \"FAIL\"",
        ),
        (
            "  - {name: x, type: status_code, status_code: {status_codes: []}}",
            "at least one of OK, ERROR, UNSET",
        ),
        (
            "  - {name: x, type: numeric_attribute, numeric_attribute: {key: k}}",
            "needs min_value or max_value",
        ),
        (
            "  - {name: x, type: numeric_attribute, numeric_attribute: {key: k, min_value: 9, max_value: 3}}",
            "min_value (9)",
        ),
        (
            "  - {name: x, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}",
            "would be empty",
        ),
        (
            "  - {name: x, type: rate_limiting, rate_limiting: {spans_per_second: 0}}",
            "spans_per_second must be 1 or more",
        ),
        (
            "  - {name: x, type: bytes_limiting, bytes_limiting: {bytes_per_second: 10, burst_capacity: -1}}",
            "burst_capacity must not be negative",
        ),
        (
            "  - {name: x, type: string_attribute, string_attribute: {values: [v]}}",
            "key is required",
        ),
        (
            "  - {name: x, type: probabilistic, probabilistic: {}}",
            "needs sampling_percentage",
        ),
        (
            "  - {name: x, type: and, and: {and_sub_policy: []}}",
            "and_sub_policy is empty",
        ),
        (
            "  - {name: x, type: not, not: {not_sub_policy: {name: y, type: drop}}}",
            "type drop is not allowed inside not",
        ),
        (
            "  - {name: x, type: composite, composite: {max_total_spans_per_second: 10, composite_sub_policy: [{name: a, type: always_sample}], rate_allocation: [{policy: b, percent: 5}]}}",
            "rate_allocation[0] names \"b\", which is not a composite_sub_policy",
        ),
        (
            "  - {name: x, type: composite, composite: {max_total_spans_per_second: 10, composite_sub_policy: [{name: a, type: always_sample}], rate_allocation: [{policy: a, percent: 101}]}}",
            "percent must be between 0 and 100",
        ),
    ];
    for (policy, expected) in cases {
        let e = refusal(&format!("policies:\n{policy}\n"));
        assert!(e.to_string().contains(expected), "{policy}\n  gave: {e}");
        assert!(e.location().is_some(), "{e}");
    }
}

#[test]
fn settings_out_of_range_are_placed() {
    let e = refusal("num_traces: 0\npolicies:\n  - {name: all, type: always_sample}\n");
    assert_eq!(e.to_string(), "p.yaml:1:13: num_traces must be at least 1");
    let e = refusal("policies: []\n");
    assert_eq!(
        e.to_string(),
        "p.yaml:1:11: policies is empty: at least one policy is needed"
    );
    let e = refusal(
        "sampling_strategy: span-ingest\npolicies:\n  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 5}}\n",
    );
    assert!(
        e.to_string().starts_with(
            "p.yaml:1:20: sampling_strategy span-ingest does not support stateful policies"
        ),
        "{e}"
    );
    let e =
        refusal("sampling_strategy: at-once\npolicies:\n  - {name: all, type: always_sample}\n");
    assert!(
        e.to_string()
            .starts_with("p.yaml:1:20: unknown sampling_strategy \"at-once\""),
        "{e}"
    );
    let e = refusal("num_shards: 300\npolicies:\n  - {name: all, type: always_sample}\n");
    assert!(
        e.to_string()
            .starts_with("p.yaml:1:13: num_shards must be between 1 and 256"),
        "{e}"
    );
    let e = refusal(
        "num_shards: 4\ntail_storage: file_storage\npolicies:\n  - {name: all, type: always_sample}\n",
    );
    assert!(
        e.to_string()
            .contains("tail_storage cannot be combined with num_shards"),
        "{e}"
    );
}

#[test]
fn every_v0_165_setting_is_accepted_with_its_meaning() {
    let file = parse(
        "sampling_strategy: span-ingest\nnum_shards: 4\nmaximum_trace_size_bytes: 1048576\nblock_on_overflow: true\ndrop_pending_traces_on_shutdown: true\ndecision_cache: {sampled_cache_size: 10, non_sampled_cache_size: 20}\npolicies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.sampling_strategy, policy::SamplingStrategy::SpanIngest);
    assert_eq!(file.num_shards, Some(4));
    assert_eq!(file.maximum_trace_size_bytes, Some(1 << 20));
    assert!(file.block_on_overflow && file.drop_pending_traces_on_shutdown);
    assert_eq!(
        (file.decision_cache.sampled, file.decision_cache.non_sampled),
        (10, 20)
    );
    assert!(file.notes.is_empty(), "{:?}", file.notes);
    let with_storage = parse(
        "tail_storage: file_storage/traces\npolicies:\n  - {name: all, type: always_sample}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        with_storage
            .notes
            .iter()
            .any(|n| n.contains("tail_storage")),
        "{:?}",
        with_storage.notes
    );
}

#[test]
fn an_extension_policy_type_is_refused_by_name() {
    let e = refusal(
        "policies:\n  - {name: ok, type: always_sample}\n  - name: mine\n    type: my_sampler\n    my_sampler: {rate: 3}\n",
    );
    let text = e.to_string();
    assert!(
        text.starts_with("p.yaml:4:11: policy \"mine\": type \"my_sampler\" is a policy provided by a Collector extension"),
        "{text}"
    );
    let e = refusal("policies:\n  - {name: typo, type: alwayz_sample}\n");
    assert!(
        e.to_string()
            .contains("unknown policy type \"alwayz_sample\""),
        "{e}"
    );
}

#[test]
fn yaml_that_is_not_a_policy_file_is_refused() {
    let e = refusal("policies:\n  - name: a\n   type: x\n");
    assert!(e.location().is_some(), "{e}");
    assert!(e.to_string().starts_with("p.yaml:"), "{e}");
    let e = refusal("- just\n- a list\n");
    assert!(e.to_string().contains("expected a mapping"), "{e}");
    let e = refusal("decision_wait: 5s\n");
    assert!(e.to_string().contains("no policies"), "{e}");
}

const COLLECTOR: &str = "receivers:\n  otlp: {}\nprocessors:\n  batch: {}\n  tail_sampling/main:\n    decision_wait: 5s\n    policies:\n      - name: errors\n        type: status_code\n        status_code: {status_codes: [ERROR]}\nservice:\n  pipelines: {}\n";

#[test]
fn a_whole_collector_config_uses_its_tail_sampling_processor() {
    let file = parse(COLLECTOR).unwrap();
    assert_eq!(file.decision_wait, Duration::from_secs(5));
    assert_eq!(file.policies.names().collect::<Vec<_>>(), ["errors"]);
    assert_eq!(
        file.origin.as_deref(),
        Some("processors.tail_sampling/main of a Collector configuration")
    );
}

#[test]
fn errors_in_a_collector_config_are_placed_in_the_whole_file() {
    let src = COLLECTOR.replace("[ERROR]", "[EROR]");
    let e = refusal(&src);
    assert_eq!(e.location(), Some((8, 9)));
    assert_eq!(
        e.to_string(),
        "p.yaml:8:9: policy \"errors\": unknown status code \"EROR\" (supported: OK, ERROR, UNSET)"
    );
    let e = refusal(&COLLECTOR.replace("decision_wait: 5s", "decision_wait: soon"));
    assert_eq!(e.location(), Some((6, 20)));
    assert!(
        e.to_string()
            .starts_with("p.yaml:6:20: decision_wait: invalid duration \"soon\""),
        "{e}"
    );
}

#[test]
fn a_collector_config_needs_exactly_one_tail_sampling_processor_to_choose() {
    let two = COLLECTOR.replace(
        "  batch: {}\n",
        "  tail_sampling/other:\n    policies: []\n",
    );
    let e = refusal(&two);
    assert!(
        e.to_string()
            .contains("several tail_sampling processors (tail_sampling/other, tail_sampling/main)"),
        "{e}"
    );
    // A plain `tail_sampling` is chosen over named ones.
    let plain = COLLECTOR.replace(
        "  batch: {}\n",
        "  tail_sampling:\n    policies: [{name: all, type: always_sample}]\n",
    );
    assert_eq!(
        parse(&plain).unwrap().policies.names().collect::<Vec<_>>(),
        ["all"]
    );
    let none = "processors:\n  batch: {}\n";
    assert!(
        refusal(none)
            .to_string()
            .contains("no tail_sampling processor (processors: batch)")
    );
}

#[test]
fn a_block_under_its_own_key_is_accepted() {
    let file =
        parse("tail_sampling:\n  policies:\n    - {name: all, type: always_sample}\n").unwrap();
    assert_eq!(file.origin.as_deref(), Some("tail_sampling"));
}

#[test]
fn loading_a_missing_file_names_it() {
    let e = PolicyFile::load(std::path::Path::new("/nonexistent/policy.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/policy.yaml: cannot read:"),
        "{e}"
    );
}

mod never_panics {
    use proptest::prelude::*;

    const EXAMPLES: [&str; 2] = [
        include_str!("../../examples/policy.yaml"),
        include_str!("../../examples/collector-config.yaml"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The parser is fed files by hand: whatever it gets, it answers
        /// with a policy file or an error, never a panic.
        #[test]
        fn parsing_arbitrary_yaml_never_panics(src in "[a-z_:{}\\[\\], \\-\\n'\"0-9.#*&!|>@`%]{0,200}") {
            let _ = policy::PolicyFile::parse(&src, "fuzz.yaml");
        }

        #[test]
        fn parsing_a_damaged_example_never_panics(
            which in 0usize..2,
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(vec![" ", "\n", ":", "-", "x", "{", "]", "0", "'", "\t"])), 1..6),
        ) {
            let mut src = EXAMPLES[which].to_string();
            for (at, kind, text) in edits {
                let mut i = at.index(src.len() + 1);
                while !src.is_char_boundary(i) {
                    i -= 1;
                }
                match kind {
                    0 => src.insert_str(i, text),
                    1 if i < src.len() => {
                        let end = (i + 1..=src.len()).find(|e| src.is_char_boundary(*e)).unwrap_or(src.len());
                        src.replace_range(i..end, "");
                    }
                    _ => src.truncate(i),
                }
            }
            match policy::PolicyFile::parse(&src, "fuzz.yaml") {
                Ok(file) => prop_assert!(!file.policies.is_empty()),
                Err(e) => prop_assert!(e.to_string().starts_with("fuzz.yaml"), "{}", e),
            }
        }
    }
}

#[test]
fn adaptive_policies_are_refused_with_the_reason_and_place() {
    let cases = [
        (
            "policies:\n  - name: d\n    type: ema_dynamic\n    ema_dynamic: {goal_sample_rate: 10}\n",
            "policy \"d\": ema_dynamic: field_list must name at least one field",
        ),
        (
            "policies:\n  - name: d\n    type: ema_dynamic\n    ema_dynamic: {field_list: [a], weight: 1.5}\n",
            "policy \"d\": ema_dynamic: weight must be in (0, 1] (got 1.5)",
        ),
        (
            "policies:\n  - name: d\n    type: ema_dynamic\n    ema_dynamic: {field_list: [a], goal_rate: 5}\n",
            "policy \"d\": ema_dynamic: unknown field `goal_rate`",
        ),
        (
            "policies:\n  - name: t\n    type: ema_throughput\n    ema_throughput: {field_list: [a], goal_throughput_per_sec: 0}\n",
            "policy \"t\": ema_throughput: goal_throughput_per_sec must be more than 0 (got 0)",
        ),
        (
            "policies:\n  - name: w\n    type: windowed_throughput\n    windowed_throughput: {field_list: [a], update_frequency: 10s, lookback_frequency: 5s}\n",
            "policy \"w\": windowed_throughput: lookback_frequency (5s) must be at least update_frequency (10s)",
        ),
        (
            "policies:\n  - name: w\n    type: windowed_throughput\n",
            "policy \"w\": type windowed_throughput needs a `windowed_throughput:` block",
        ),
        (
            "policies:\n  - name: d\n    type: ema_dynamic\n    ema_dynamic: {field_list: [a], max_keys: -1}\n",
            "policy \"d\": ema_dynamic: max_keys must be 1 or more (got -1)",
        ),
        (
            "sampling_strategy: span-ingest\npolicies:\n  - name: d\n    type: ema_dynamic\n    ema_dynamic: {field_list: [a]}\n",
            "span-ingest does not support stateful policies",
        ),
    ];
    for (src, expected) in cases {
        let message = refusal(src).to_string();
        assert!(message.starts_with("p.yaml:"), "{message}");
        assert!(message.contains(expected), "{message}\nwanted: {expected}");
    }
}

#[test]
fn adaptive_policies_take_refinerys_defaults() {
    let file = parse(
        "policies:\n  - name: t\n    type: ema_throughput\n    ema_throughput: {field_list: [http.route]}\n",
    )
    .unwrap();
    let listing = policy::cli::check_source(
        "policies:\n  - name: t\n    type: ema_throughput\n    ema_throughput: {field_list: [http.route]}\n",
        "p.yaml",
    )
    .0;
    assert!(file.notes.is_empty());
    assert!(
        listing.contains("t: ema_throughput (tailgate extension) goal_throughput_per_sec=100 initial_sample_rate=10 adjustment_interval=15s weight=0.5 age_out_value=0.5 burst_multiple=2 burst_detection_delay=3 field_list=[http.route] max_keys=500"),
        "{listing}"
    );
}
