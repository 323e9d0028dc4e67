//! `tailgate policy check` and `tailgate policy test` on the examples: the
//! exact output, which docs/policies.md shows verbatim.

use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

const CHECK_POLICY: &str = "\
semantics: OpenTelemetry Collector contrib v0.165 tail_sampling
3 policies, in evaluation order:
  errors: status_code status_codes=[ERROR]
  slow: latency threshold_ms=500
  sample-10pct: probabilistic sampling_percentage=10
decision_wait: 10s
decision_wait_after_root_received: 2s
num_traces: 50000
decision_cache: sampled_cache_size=0 non_sampled_cache_size=0
sample_on_first_match: false
sampling_strategy: trace-complete
maximum_trace_size_bytes: off
";

const CHECK_COLLECTOR: &str = "\
semantics: OpenTelemetry Collector contrib v0.165 tail_sampling
using processors.tail_sampling of a Collector configuration
5 policies, in evaluation order:
  drop-health-checks: drop
    health-route: string_attribute key=http.route values=[/health, /ready]
  errors: status_code status_codes=[ERROR]
  slow: latency threshold_ms=500
  checkout-sample: and
    checkout-service: string_attribute key=service.name values=[checkout]
    half: probabilistic sampling_percentage=50
  sample-10pct: probabilistic sampling_percentage=10
decision_wait: 30s
decision_wait_after_root_received: off
num_traces: 100000
decision_cache: sampled_cache_size=1000000 non_sampled_cache_size=1000000
sample_on_first_match: false
sampling_strategy: trace-complete
maximum_trace_size_bytes: off
note: expected_new_traces_per_sec is accepted and has no effect (an allocation hint; the buffer grows as needed)
";

const TEST_POLICY: &str = "\
TRACE ID                          SPANS  DECISION     POLICY
1d9e1f58b9f7f662cc915e3d22b31e87      3  sampled      errors
aa569380fe256b65e9a0cfad86b8112a      2  sampled      slow
f2a4d44fea0e1de875a23d28e118734e      2  not sampled  -
5d6a9a54a3ed1f458314fc98cc3ee297      1  not sampled  -
e01df545fb665e2fee983ad7c338c692      2  sampled      sample-10pct
968cd4e62682ea2d86fd624deb387c57      1  not sampled  -
6 traces: 3 sampled, 3 not sampled
";

const TEST_COLLECTOR: &str = "\
TRACE ID                          SPANS  DECISION     POLICY
1d9e1f58b9f7f662cc915e3d22b31e87      3  sampled      errors
aa569380fe256b65e9a0cfad86b8112a      2  sampled      slow
f2a4d44fea0e1de875a23d28e118734e      2  sampled      checkout-sample
5d6a9a54a3ed1f458314fc98cc3ee297      1  dropped      drop-health-checks
e01df545fb665e2fee983ad7c338c692      2  sampled      checkout-sample
968cd4e62682ea2d86fd624deb387c57      1  not sampled  -
6 traces: 4 sampled, 1 not sampled, 1 dropped
";

/// docs/policies.md, which shows these outputs verbatim.
fn readme_policies() -> String {
    std::fs::read_to_string(repo("docs/policies.md")).expect("docs/policies.md")
}

/// A scratch file of this test process, removed by the caller.
fn scratch(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tailgate-policy-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

#[test]
fn check_lists_the_example_policy_as_the_readme_shows() {
    let (out, code) = policy::cli::check(&repo("examples/policy.yaml"));
    assert_eq!((out.as_str(), code), (CHECK_POLICY, 0));
    assert!(
        readme_policies().contains(CHECK_POLICY),
        "docs/policies.md shows another check output"
    );
}

#[test]
fn check_reads_the_tail_sampling_block_of_a_collector_config() {
    let (out, code) = policy::cli::check(&repo("examples/collector-config.yaml"));
    assert_eq!((out.as_str(), code), (CHECK_COLLECTOR, 0));
    assert!(
        readme_policies().contains(CHECK_COLLECTOR),
        "docs/policies.md shows another check output"
    );
}

#[test]
fn test_decides_the_example_traces_as_the_readme_shows() {
    let (out, code) =
        policy::cli::test(&repo("examples/policy.yaml"), &repo("examples/traces.json"));
    assert_eq!((out.as_str(), code), (TEST_POLICY, 0));
    assert!(
        readme_policies().contains(TEST_POLICY),
        "docs/policies.md shows another test output"
    );
}

#[test]
fn test_with_the_collector_config_drops_health_checks_as_the_readme_shows() {
    let (out, code) = policy::cli::test(
        &repo("examples/collector-config.yaml"),
        &repo("examples/traces.json"),
    );
    assert_eq!((out.as_str(), code), (TEST_COLLECTOR, 0));
    assert!(
        readme_policies().contains(TEST_COLLECTOR),
        "docs/policies.md shows another test output"
    );
}

#[test]
fn check_of_a_bad_file_exits_1_with_the_place_and_the_policy() {
    let path = scratch(
        "bad.yaml",
        "policies:\n  - name: slow\n    type: latency\n    latency: {threshold_ms: 500}\n  - name: slow\n    type: always_sample\n",
    );
    let (out, code) = policy::cli::check(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "error: {}:5:5: policy \"slow\": duplicate policy name (first used at line 2 column 5)\n",
            path.display()
        )
    );
}

#[test]
fn test_of_a_bad_traces_file_exits_1_naming_it() {
    let path = scratch("bad.json", "{\"resourceSpans\": [ {\"scopeSpans\": 7} ]}");
    let (out, code) = policy::cli::test(&repo("examples/policy.yaml"), &path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("error: {}: ", path.display())),
        "{out}"
    );
    let (out, code) = policy::cli::test(
        &repo("examples/policy.yaml"),
        Path::new("/nonexistent/traces.json"),
    );
    assert_eq!(code, 1);
    assert!(
        out.starts_with("error: /nonexistent/traces.json: cannot read"),
        "{out}"
    );
}

#[test]
fn test_shows_which_ottl_condition_matched() {
    let path = scratch(
        "ottl.yaml",
        "policies:\n  - name: checkout-db\n    type: ottl_condition\n    ottl_condition:\n      span:\n        - 'attributes[\"db.system\"] != nil'\n        - 'resource.attributes[\"service.name\"] == \"checkout\" and IsMatch(name, \"^charge\")'\n",
    );
    let (out, code) = policy::cli::test(&path, &repo("examples/traces.json"));
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "\
TRACE ID                          SPANS  DECISION     POLICY
1d9e1f58b9f7f662cc915e3d22b31e87      3  sampled      checkout-db (span[1]: resource.attributes[\"service.name\"] == \"checkout\" and IsMatch(name, \"^charge\"))
aa569380fe256b65e9a0cfad86b8112a      2  sampled      checkout-db (span[0]: attributes[\"db.system\"] != nil)
f2a4d44fea0e1de875a23d28e118734e      2  not sampled  -
5d6a9a54a3ed1f458314fc98cc3ee297      1  not sampled  -
e01df545fb665e2fee983ad7c338c692      2  not sampled  -
968cd4e62682ea2d86fd624deb387c57      1  not sampled  -
6 traces: 2 sampled, 4 not sampled
"
    );
}

#[test]
fn the_documented_ottl_example_loads_and_its_error_is_the_one_shown() {
    let policies = readme_policies();
    let start = policies
        .find("## OTTL conditions")
        .expect("docs/policies.md has an OTTL section");
    let block = &policies[start..];
    let yaml_start = block.find("```yaml\n").expect("an example") + 8;
    let yaml = &block[yaml_start..yaml_start + block[yaml_start..].find("```").expect("closed")];
    let indented: String = yaml.lines().map(|l| format!("  {l}\n")).collect();
    let path = scratch("readme-ottl.yaml", &format!("policies:\n{indented}"));
    let (out, code) = policy::cli::check(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("slow-checkout-or-exceptions: ottl_condition error_mode=ignore"),
        "{out}"
    );

    let path = scratch(
        "p.yaml",
        "policies:\n  - name: ottl\n    type: ottl_condition\n    ottl_condition:\n      span:\n        - 'name == \"a\"'\n        - 'name == \"a\" or Nope(name)'\n",
    );
    let (out, code) = policy::cli::check(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 1);
    let shown = out.replacen(&path.display().to_string(), "p.yaml", 1);
    assert!(
        policies.contains(shown.trim_end()),
        "README shows another error: {shown}"
    );
}

const CHECK_ADAPTIVE: &str = "\
semantics: OpenTelemetry Collector contrib v0.165 tail_sampling
3 policies, in evaluation order:
  errors: status_code status_codes=[ERROR]
  by-route: ema_dynamic (tailgate extension) goal_sample_rate=20 adjustment_interval=15s weight=0.5 age_out_value=0.5 burst_multiple=2 burst_detection_delay=3 field_list=[service.name, http.route, root.http.response.status_code] max_keys=500
  checkout-budget: and
    checkout: string_attribute key=service.name values=[checkout]
    per-operation: windowed_throughput (tailgate extension) goal_throughput_per_sec=500 update_frequency=1s lookback_frequency=30s field_list=[name] max_keys=500
decision_wait: 10s
decision_wait_after_root_received: off
num_traces: 50000
decision_cache: sampled_cache_size=0 non_sampled_cache_size=0
sample_on_first_match: false
sampling_strategy: trace-complete
maximum_trace_size_bytes: off
";

#[test]
fn check_lists_the_adaptive_policies_as_the_readme_shows() {
    let (out, code) = policy::cli::check(&repo("examples/adaptive.yaml"));
    assert_eq!((out.as_str(), code), (CHECK_ADAPTIVE, 0));
    assert!(
        readme_policies().contains(CHECK_ADAPTIVE),
        "docs/policies.md shows another check output"
    );
}
