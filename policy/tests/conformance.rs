//! Conformance with the OpenTelemetry Collector's `tail_sampling` processor
//! (opentelemetry-collector-contrib, processor/tailsamplingprocessor, pinned
//! to v0.165): test vectors ported from its Go tests, one YAML file per Go
//! test file under `tests/conformance/`, each vector named after its Go test
//! and case.
//!
//! The Go tests check single evaluators; here every vector goes through the
//! public API (`PolicyFile::parse`, `PolicySet::evaluate`), so a vector's
//! expectation is the final decision of a policy set. A lone top-level
//! policy that votes Sampled gives a final Sampled, NotSampled a final
//! NotSampled; since the Collector removed the inverted-decision gate
//! (v0.156) an inverted match only flips that policy's own vote.
//!
//! The runner runs every vector and reports every failure at once
//! (`file: GoTest/case: expected X, got Y`), and fails if any failed or if
//! fewer vectors were loaded than were ported.
//!
//! # Data format
//!
//! ```yaml
//! go_file: latency_test.go          # the Go test file ported
//! cases:
//!   - go_test: TestEvaluate_Latency
//!     case: trace duration is equal to threshold
//!     policy: {type: latency, latency: {threshold_ms: 5000}}   # one policy (named `test-policy` unless named)
//!     # or `policies: [...]` and optional `settings: {sample_on_first_match: true}`,
//!     # or `config: |` a whole policy file's text
//!     trace: {spans: [{start_ms: 0, end_ms: 5000}]}
//!     expect: NotSampled              # Sampled | NotSampled | Dropped
//!   - go_test: TestRateLimiter
//!     case: ...
//!     policy: ...
//!     steps:                          # one PolicyState across the steps
//!       - {at_ms: 0, trace: {...}, expect: Sampled, repeat: 3}
//!   - go_test: TestLoadConfig
//!     case: ...
//!     config: |
//!       ...
//!     expect: valid                   # valid | invalid (error_contains: ...)
//!     skip: why this vector is not run
//! ```
//!
//! A trace is `{id: <32 hex digits>, resource: {k: v}, spans: [...]}` or
//! `{groups: [{resource: {...}, spans: [...]}, ...]}` (a group is one
//! `ResourceSpans`, as a Go test's batch). A span: `name`, `span_id`,
//! `parent` (a span ID; none: a root), `start_ms`/`end_ms` (from a fixed
//! base) or `start_ns`/`end_ns` (absolute), `duration_ms`, `status`
//! (`UNSET`/`OK`/`ERROR`), `attrs` (`{k: v}`: YAML strings, ints, floats and
//! bools as OTLP string, int, double and bool), `trace_state`, `flags`, and
//! `count` (the span repeated that many times).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, TracesData, span::Event,
};
use policy::{PolicyFile, PolicySet, PolicyState, TraceSummary, TraceView};
use prost::Message;
use proto::view::{SpanView, TraceId};
use proto::write::SpanRef;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

/// How many vectors were ported: loading fewer fails the suite, so that a
/// lost file or an emptied directory cannot pass.
const PORTED_AT_LEAST: usize = 242;

const DEFAULT_TRACE_ID: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    go_file: String,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    go_test: String,
    case: String,
    #[serde(default)]
    policy: Option<Value>,
    #[serde(default)]
    policies: Option<Vec<Value>>,
    #[serde(default)]
    settings: Option<Mapping>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    trace: Option<TraceSpec>,
    #[serde(default)]
    steps: Option<Vec<Step>>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    error_contains: Option<String>,
    /// The top-level policy the decision names (`tailsampling.policy`).
    #[serde(default)]
    expect_policy: Option<String>,
    /// The Go test's own expectation, when it differs in form from `expect`
    /// (a single evaluator's `InvertSampled`, say): kept for the record.
    #[serde(default)]
    #[allow(dead_code)]
    go_expect: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    #[serde(default)]
    skip: Option<String>,
    /// For a probabilistic policy: evaluate `traces` random trace IDs and
    /// expect `percent` of them sampled, within `delta` points.
    #[serde(default)]
    proportion: Option<Proportion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Proportion {
    traces: usize,
    percent: f64,
    delta: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    at_ms: u64,
    #[serde(default)]
    trace: Option<TraceSpec>,
    expect: String,
    #[serde(default = "one")]
    repeat: usize,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct TraceSpec {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    resource: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    scope: Option<ScopeSpec>,
    #[serde(default)]
    spans: Option<Vec<SpanSpec>>,
    #[serde(default)]
    groups: Option<Vec<GroupSpec>>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    #[serde(default)]
    resource: BTreeMap<String, Value>,
    #[serde(default)]
    scope: Option<ScopeSpec>,
    #[serde(default)]
    spans: Vec<SpanSpec>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct ScopeSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    time_ms: u64,
    #[serde(default)]
    attrs: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct SpanSpec {
    /// OTLP span kind (2: server).
    #[serde(default)]
    kind: Option<i32>,
    #[serde(default)]
    events: Vec<EventSpec>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    span_id: Option<u64>,
    #[serde(default)]
    parent: Option<u64>,
    #[serde(default)]
    start_ms: Option<u64>,
    #[serde(default)]
    end_ms: Option<u64>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    start_ns: Option<u64>,
    #[serde(default)]
    end_ns: Option<u64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    attrs: BTreeMap<String, Value>,
    #[serde(default)]
    trace_state: Option<String>,
    #[serde(default)]
    flags: Option<u32>,
    #[serde(default = "one")]
    count: usize,
}

/// A trace as stored: resource headers and encoded spans.
struct Built {
    id: [u8; 16],
    /// The whole trace as one `TracesData`, for its protobuf size.
    data: TracesData,
    headers: Vec<Vec<u8>>,
    scopes: Vec<Vec<u8>>,
    /// (index of the header, encoded span)
    spans: Vec<(usize, Vec<u8>)>,
}

fn any(value: &Value) -> Result<any_value::Value, String> {
    Ok(match value {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                any_value::Value::IntValue(i)
            } else if let Some(f) = n.as_f64() {
                any_value::Value::DoubleValue(f)
            } else {
                return Err(format!("number {n} is neither i64 nor f64"));
            }
        }
        Value::Tagged(t) if t.tag == "double" => match &t.value {
            Value::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
            other => return Err(format!("!double needs a number, got {other:?}")),
        },
        other => return Err(format!("unsupported attribute value {other:?}")),
    })
}

fn attrs(map: &BTreeMap<String, Value>) -> Result<Vec<KeyValue>, String> {
    map.iter()
        .map(|(k, v)| {
            Ok(KeyValue {
                key: k.clone(),
                value: Some(AnyValue {
                    value: Some(any(v)?),
                }),
                ..KeyValue::default()
            })
        })
        .collect()
}

fn status_code(name: &str) -> Result<i32, String> {
    match name {
        "UNSET" | "Unset" => Ok(0),
        "OK" | "Ok" => Ok(1),
        "ERROR" | "Error" => Ok(2),
        other => Err(format!("unknown status {other}")),
    }
}

fn parse_id(hex: &str) -> Result<[u8; 16], String> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    if hex.len() != 32 {
        return Err(format!("trace id {hex:?} is not 32 hex digits"));
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("trace id {hex:?}: {e}"))?;
    }
    Ok(id)
}

fn build(spec: &TraceSpec) -> Result<Built, String> {
    let id = match &spec.id {
        Some(hex) => parse_id(hex)?,
        None => DEFAULT_TRACE_ID,
    };
    let mut groups: Vec<GroupSpec> = Vec::new();
    if spec.resource.is_some() || spec.spans.is_some() {
        groups.push(GroupSpec {
            resource: spec.resource.clone().unwrap_or_default(),
            scope: spec.scope.clone(),
            spans: spec.spans.clone().unwrap_or_default(),
        });
    }
    if let Some(more) = &spec.groups {
        groups.extend(more.iter().cloned());
    }
    let mut built = Built {
        id,
        data: TracesData::default(),
        headers: Vec::new(),
        scopes: Vec::new(),
        spans: Vec::new(),
    };
    let mut next_id = 1u64;
    for group in &groups {
        let resource = ResourceSpans {
            resource: Some(Resource {
                attributes: attrs(&group.resource)?,
                ..Resource::default()
            }),
            ..ResourceSpans::default()
        };
        built.headers.push(resource.encode_to_vec());
        let scope = ScopeSpans {
            scope: group.scope.as_ref().map(|s| InstrumentationScope {
                name: s.name.clone(),
                version: s.version.clone(),
                ..InstrumentationScope::default()
            }),
            ..ScopeSpans::default()
        };
        built.scopes.push(scope.encode_to_vec());
        let at = built.headers.len() - 1;
        let mut spans: Vec<Span> = Vec::new();
        for s in &group.spans {
            for _ in 0..s.count {
                let span_id = s.span_id.unwrap_or(next_id);
                next_id += 1;
                let start = match (s.start_ns, s.start_ms) {
                    (Some(ns), _) => ns,
                    (None, Some(ms)) => common::BASE_NANOS + ms * 1_000_000,
                    (None, None) => 0,
                };
                let end = match (s.end_ns, s.end_ms, s.duration_ms) {
                    (Some(ns), _, _) => ns,
                    (None, Some(ms), _) => common::BASE_NANOS + ms * 1_000_000,
                    (None, None, Some(d)) => start + d * 1_000_000,
                    (None, None, None) => start,
                };
                let span = Span {
                    trace_id: id.to_vec(),
                    span_id: span_id.to_be_bytes().to_vec(),
                    parent_span_id: s
                        .parent
                        .map(|p| p.to_be_bytes().to_vec())
                        .unwrap_or_default(),
                    name: s.name.clone().unwrap_or_default(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: attrs(&s.attrs)?,
                    trace_state: s.trace_state.clone().unwrap_or_default(),
                    flags: s.flags.unwrap_or(0),
                    kind: s.kind.unwrap_or(0),
                    events: s
                        .events
                        .iter()
                        .map(|e| {
                            Ok(Event {
                                name: e.name.clone(),
                                time_unix_nano: common::BASE_NANOS + e.time_ms * 1_000_000,
                                attributes: attrs(&e.attrs)?,
                                ..Event::default()
                            })
                        })
                        .collect::<Result<_, String>>()?,
                    status: match &s.status {
                        Some(name) => Some(Status {
                            code: status_code(name)?,
                            message: String::new(),
                        }),
                        None => None,
                    },
                    ..Span::default()
                };
                built.spans.push((at, span.encode_to_vec()));
                spans.push(span);
            }
        }
        built.data.resource_spans.push(ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..scope }],
            ..resource
        });
    }
    Ok(built)
}

/// The policy file text of a case.
fn policy_source(case: &Case) -> Result<String, String> {
    if let Some(config) = &case.config {
        return Ok(config.clone());
    }
    let mut policies: Vec<Value> = Vec::new();
    if let Some(p) = &case.policy {
        policies.push(p.clone());
    }
    if let Some(ps) = &case.policies {
        policies.extend(ps.iter().cloned());
    }
    if policies.is_empty() {
        return Err("no policy, policies or config".into());
    }
    for (i, p) in policies.iter_mut().enumerate() {
        let Value::Mapping(m) = p else {
            return Err(format!("policy {i} is not a mapping"));
        };
        let name = Value::String("name".into());
        if !m.contains_key(&name) {
            let generated = if i == 0 {
                "test-policy".to_string()
            } else {
                format!("test-policy-{i}")
            };
            m.insert(name, Value::String(generated));
        }
    }
    let size = trace_size_of(case)?;
    for p in &mut policies {
        substitute_trace_size(p, size)?;
    }
    let mut block = case.settings.clone().unwrap_or_default();
    block.insert(Value::String("policies".into()), Value::Sequence(policies));
    serde_yaml_ng::to_string(&Value::Mapping(block)).map_err(|e| e.to_string())
}

/// The protobuf size of the case's trace (or its first step's), as
/// `ptrace.ProtoMarshaler.TracesSize` gives it: what `bytes_limiting`
/// charges.
fn trace_size_of(case: &Case) -> Result<Option<u64>, String> {
    let spec = case.trace.as_ref().or_else(|| {
        case.steps
            .as_ref()
            .and_then(|steps| steps.iter().find_map(|s| s.trace.as_ref()))
    });
    match spec {
        Some(spec) => Ok(Some(build(spec)?.data.encoded_len() as u64)),
        None => Ok(None),
    }
}

/// Replaces every string `trace_size`, `trace_size * 2`, `trace_size / 2`,
/// `trace_size + 1`, `trace_size - 1` in a policy with the number (Go
/// integer arithmetic), as the Go tests size limits from the trace.
fn substitute_trace_size(value: &mut Value, size: Option<u64>) -> Result<(), String> {
    match value {
        Value::String(s) if s.starts_with("trace_size") => {
            let size = size.ok_or("trace_size used without a trace")? as i64;
            let rest: String = s["trace_size".len()..]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let n = if rest.is_empty() {
                size
            } else {
                let (op, arg) = rest.split_at(1);
                let arg: i64 = arg.parse().map_err(|e| format!("{s:?}: {e}"))?;
                match op {
                    "*" => size * arg,
                    "/" => size / arg,
                    "+" => size + arg,
                    "-" => size - arg,
                    _ => return Err(format!("{s:?}: unknown operator {op}")),
                }
            };
            *value = Value::Number(n.into());
        }
        Value::Sequence(items) => {
            for item in items {
                substitute_trace_size(item, size)?;
            }
        }
        Value::Mapping(m) => {
            for (_, v) in m.iter_mut() {
                substitute_trace_size(v, size)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// splitmix64: the random trace IDs of the proportion vectors.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The decision as the vectors name it.
fn decide(set: &PolicySet, state: &PolicyState, built: &Built, now: Duration) -> String {
    decide_with_policy(set, state, built, now).0
}

/// The decision as the vectors name it, and the policy it names.
fn decide_with_policy(
    set: &PolicySet,
    state: &PolicyState,
    built: &Built,
    now: Duration,
) -> (String, Option<String>) {
    let mut summary = TraceSummary::new();
    for (_, bytes) in &built.spans {
        let view = SpanView::parse(bytes, 0).expect("a span built here parses");
        summary.add(&view, bytes.len());
    }
    let refs: Vec<SpanRef<'_>> = built
        .spans
        .iter()
        .map(|(at, bytes)| SpanRef {
            resource: &built.headers[*at],
            scope: &built.scopes[*at],
            span: bytes,
        })
        .collect();
    let view = TraceView {
        trace_id: TraceId(built.id),
        summary: &summary,
        spans: &refs,
    };
    let decision = set.evaluate(state, &view, now);
    // Named through Display, so that the runner does not depend on the
    // variants `Outcome` has.
    let name = match decision.outcome.to_string().as_str() {
        "sampled" => "Sampled".to_string(),
        "not sampled" => "NotSampled".to_string(),
        "dropped" => "Dropped".to_string(),
        other => format!("{other:?} (sampled: {})", decision.sampled),
    };
    (name, decision.policy.as_deref().map(str::to_string))
}

/// Runs one case; `Err` is the failure message.
fn run_case(file: &str, case: &Case) -> Result<(), String> {
    let source = policy_source(case)?;
    let parsed = PolicyFile::parse(&source, file);
    let expect = case.expect.as_deref();
    if let Some(want) = expect
        && (want == "valid" || want == "invalid")
    {
        return match (want, parsed) {
            ("valid", Ok(_)) => Ok(()),
            ("valid", Err(e)) => Err(format!("expected the config to load, got error: {e}")),
            (_, Ok(_)) => Err(format!(
                "expected the config to be refused{}, but it loaded",
                case.error_contains
                    .as_deref()
                    .map(|s| format!(" (error containing {s:?})"))
                    .unwrap_or_default()
            )),
            (_, Err(e)) => {
                let message = e.to_string();
                match &case.error_contains {
                    Some(needle) if !message.contains(needle.as_str()) => Err(format!(
                        "expected an error containing {needle:?}, got: {message}"
                    )),
                    _ => Ok(()),
                }
            }
        };
    }
    let file = parsed.map_err(|e| format!("the policy does not load: {e}"))?;
    let set = &file.policies;
    let state = set.new_state();
    if let Some(p) = &case.proportion {
        let mut built = build(&case.trace.clone().unwrap_or_default())?;
        let mut seed = 1u64;
        let mut sampled = 0usize;
        for _ in 0..p.traces {
            built.id[..8].copy_from_slice(&splitmix64(&mut seed).to_be_bytes());
            built.id[8..].copy_from_slice(&splitmix64(&mut seed).to_be_bytes());
            if decide(set, &state, &built, Duration::ZERO) == "Sampled" {
                sampled += 1;
            }
        }
        let percent = sampled as f64 * 100.0 / p.traces as f64;
        return if (percent - p.percent).abs() <= p.delta {
            Ok(())
        } else {
            Err(format!(
                "expected {}% (±{}) of {} traces sampled, got {percent:.3}%",
                p.percent, p.delta, p.traces
            ))
        };
    }
    match (&case.steps, expect) {
        (Some(steps), None) => {
            for (n, step) in steps.iter().enumerate() {
                let spec = step
                    .trace
                    .as_ref()
                    .or(case.trace.as_ref())
                    .ok_or_else(|| format!("step {n} has no trace"))?;
                let built = build(spec)?;
                for r in 0..step.repeat {
                    let got = decide(set, &state, &built, Duration::from_millis(step.at_ms));
                    if got != step.expect {
                        return Err(format!(
                            "step {n} (at_ms {}, evaluation {} of {}): expected {}, got {got}",
                            step.at_ms,
                            r + 1,
                            step.repeat,
                            step.expect
                        ));
                    }
                }
            }
            Ok(())
        }
        (None, Some(want)) => {
            let spec = case.trace.clone().unwrap_or_default();
            let built = build(&spec)?;
            let (got, policy) = decide_with_policy(set, &state, &built, Duration::ZERO);
            if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
                eprintln!(
                    "{} / {}: expected {want}, got {got} (policy {policy:?})",
                    case.go_test, case.case
                );
            }
            if got != want {
                return Err(format!("expected {want}, got {got}"));
            }
            match &case.expect_policy {
                Some(name) if policy.as_deref() != Some(name.as_str()) => Err(format!(
                    "expected the decision to name policy {name:?}, got {policy:?}"
                )),
                _ => Ok(()),
            }
        }
        _ => Err("a case needs either `expect` or `steps`".into()),
    }
}

fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn collector_conformance_vectors() {
    let mut loaded = 0usize;
    let mut skipped: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut per_file: Vec<(String, usize, usize)> = Vec::new();
    for path in vector_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let vectors: VectorFile = match serde_yaml_ng::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: does not parse: {e}"));
                continue;
            }
        };
        let mut failed_here = 0;
        for case in &vectors.cases {
            loaded += 1;
            let label = format!("{} {}/{}", vectors.go_file, case.go_test, case.case);
            if let Some(reason) = &case.skip {
                skipped.push(format!("{label}: {reason}"));
                continue;
            }
            if let Err(message) = run_case(&name, case) {
                failed_here += 1;
                failures.push(format!("{label}: {message}"));
            }
        }
        per_file.push((name, vectors.cases.len(), failed_here));
    }
    let mut report = String::new();
    for (name, n, failed) in &per_file {
        let _ = writeln!(report, "  {name}: {n} vectors, {failed} failed");
    }
    let _ = writeln!(
        report,
        "{loaded} vectors loaded, {} skipped, {} failed",
        skipped.len(),
        failures.len()
    );
    for s in &skipped {
        let _ = writeln!(report, "  skipped: {s}");
    }
    eprintln!("{report}");
    assert!(
        loaded >= PORTED_AT_LEAST,
        "only {loaded} conformance vectors loaded, expected at least {PORTED_AT_LEAST}"
    );
    assert!(
        failures.is_empty(),
        "{} of {loaded} conformance vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
