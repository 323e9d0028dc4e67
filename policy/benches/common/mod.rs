//! The trace and the policy files the evaluation benchmarks share
//! (benches/evaluate.rs, criterion; examples/evaluate_min.rs, a
//! min-of-batches timer for a loaded machine).

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use policy::TraceSummary;
use prost::Message;
use proto::view::{SpanView, TraceId};
use proto::write::SpanRef;

pub const THREE: &str = "
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - {name: sample-10pct, type: probabilistic, probabilistic: {sampling_percentage: 10}}
";

pub const TWENTY: &str = "
policies:
  - name: drop-health
    type: drop
    drop: {drop_sub_policy: [{name: h, type: string_attribute, string_attribute: {key: http.route, values: [/health, /ready]}}]}
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - {name: http-5xx, type: numeric_attribute, numeric_attribute: {key: http.response.status_code, min_value: 500, max_value: 599}}
  - {name: payments, type: string_attribute, string_attribute: {key: service.name, values: ['^payment-.*'], enabled_regex_matching: true}}
  - {name: forced, type: boolean_attribute, boolean_attribute: {key: app.force_sample, value: true}}
  - {name: huge, type: span_count, span_count: {min_spans: 500}}
  - {name: gold, type: trace_state, trace_state: {key: vendor, values: [gold]}}
  - name: checkout-half
    type: and
    and: {and_sub_policy: [{name: c, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 50}}]}
  - name: slow-orders
    type: and
    and: {and_sub_policy: [{name: r, type: string_attribute, string_attribute: {key: http.route, values: ['/api/v[0-9]+/orders'], enabled_regex_matching: true}}, {name: l, type: latency, latency: {threshold_ms: 200}}]}
  - name: not-prod
    type: not
    not: {not_sub_policy: {name: prod, type: string_attribute, string_attribute: {key: deployment.environment, values: [production]}}}
  - {name: big-queries, type: numeric_attribute, numeric_attribute: {key: db.rows, min_value: 10000}}
  - {name: enterprise, type: string_attribute, string_attribute: {key: user.tier, values: [enterprise]}}
  - {name: medium, type: latency, latency: {threshold_ms: 300, upper_threshold_ms: 400}}
  - {name: deletes, type: string_attribute, string_attribute: {key: http.request.method, values: [DELETE]}}
  - {name: cache-storm, type: boolean_attribute, boolean_attribute: {key: cache.miss_storm, value: true}}
  - {name: legacy, type: string_attribute, string_attribute: {key: peer.service, values: [legacy-billing, legacy-auth]}}
  - {name: budget, type: rate_limiting, rate_limiting: {spans_per_second: 4}}
  - name: composite
    type: composite
    composite:
      max_total_spans_per_second: 1000
      composite_sub_policy:
        - {name: warn, type: numeric_attribute, numeric_attribute: {key: http.response.status_code, min_value: 400, max_value: 499}}
        - {name: rare, type: probabilistic, probabilistic: {sampling_percentage: 0.1}}
      rate_allocation: [{policy: warn, percent: 50}, {policy: rare, percent: 50}]
  - {name: sample-1pct, type: probabilistic, probabilistic: {sampling_percentage: 1}}
";

pub const STRING_ATTRIBUTE: &str = "
policies:
  - {name: checkout, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
";

pub const OTTL_EQUIVALENT: &str = r#"
policies:
  - name: checkout
    type: ottl_condition
    ottl_condition:
      span:
        - 'resource.attributes["service.name"] == "checkout" or attributes["service.name"] == "checkout"'
"#;

pub const OTTL_TEN: &str = r#"
policies:
  - name: ten
    type: ottl_condition
    ottl_condition:
      error_mode: propagate
      span:
        - 'resource.attributes["service.name"] == "checkout"'
        - 'attributes["http.response.status_code"] >= 500'
        - 'status.code == STATUS_CODE_ERROR'
        - 'end_time - start_time > Duration("500ms")'
        - 'IsMatch(attributes["http.route"], "^/api/v[0-9]+/orders")'
        - 'kind == SPAN_KIND_CLIENT and attributes["db.system"] != nil'
        - 'IsRootSpan() and end_time_unix_nano - start_time_unix_nano > 300000000'
        - 'HasPrefix(name, "DELETE ")'
        - 'attributes["app.force_sample"] == true or resource.attributes["deployment.environment"] == "staging"'
        - 'ConvertCase(attributes["http.request.method"], "lower") == "patch"'
"#;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn string(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

/// A trace as stored: its ID, resource headers, (resource, span bytes)
/// pairs and summary.
pub type Fixture = (TraceId, Vec<Vec<u8>>, Vec<(usize, Vec<u8>)>, TraceSummary);

/// A fast, successful, 10-span production trace across two services.
pub fn fixture() -> Fixture {
    // Hashes above the 10%, 1%, 0.1% and 50% thresholds.
    let id = TraceId([
        0x1d, 0x9e, 0x1f, 0x58, 0xb9, 0xf7, 0xf6, 0x62, 0xcc, 0x91, 0x5e, 0x3d, 0x22, 0xb3, 0x1e,
        0x87,
    ]);
    let resources: Vec<Vec<u8>> = ["frontend", "inventory"]
        .iter()
        .map(|service| {
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", string(service)),
                        kv("deployment.environment", string("production")),
                        kv("host.name", string("node-17.internal")),
                    ],
                    ..Resource::default()
                }),
                ..ResourceSpans::default()
            }
            .encode_to_vec()
        })
        .collect();
    let base = 1_700_000_000_000_000_000u64;
    let mut summary = TraceSummary::new();
    let spans = (0..10u64)
        .map(|n| {
            let bytes = Span {
                trace_id: id.0.to_vec(),
                span_id: (n + 1).to_be_bytes().to_vec(),
                parent_span_id: if n == 0 {
                    Vec::new()
                } else {
                    1u64.to_be_bytes().to_vec()
                },
                name: format!("GET /api/v1/items/{n}"),
                kind: 2,
                start_time_unix_nano: base + n * 1_000_000,
                end_time_unix_nano: base + n * 1_000_000 + 40_000_000,
                attributes: vec![
                    kv("http.route", string("/api/v1/items/{id}")),
                    kv("http.request.method", string("GET")),
                    kv("http.response.status_code", any_value::Value::IntValue(200)),
                    kv("url.scheme", string("https")),
                    kv("server.address", string("api.example.com")),
                    kv(
                        "user_agent.original",
                        string("Mozilla/5.0 (X11; Linux x86_64)"),
                    ),
                ],
                status: Some(Status {
                    code: 1,
                    message: String::new(),
                }),
                flags: 0x301,
                ..Span::default()
            }
            .encode_to_vec();
            let view = SpanView::parse(&bytes, 0).expect("fixture parses");
            summary.add(&view, bytes.len());
            ((n % 2) as usize, bytes)
        })
        .collect();
    (id, resources, spans, summary)
}

/// The fixture's spans as stored: each with its resource header, no scope.
pub fn span_refs<'a>(resources: &'a [Vec<u8>], spans: &'a [(usize, Vec<u8>)]) -> Vec<SpanRef<'a>> {
    spans
        .iter()
        .map(|(r, span)| SpanRef {
            resource: &resources[*r],
            scope: &[],
            span,
        })
        .collect()
}
