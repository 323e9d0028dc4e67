//! Evaluation time per trace: the default three-policy file (errors,
//! latency 500 ms, 10% probabilistic) and a twenty-policy file where most
//! policies read attributes, on a 10-span trace with typical attributes that
//! no policy keeps, so that every policy runs. Also the cost of re-parsing
//! the stored spans (`SpanView::parse` validates again) on its own, and of
//! annotating one span, and each of tailgate's adaptive policies alone.
//!
//! Run: `cargo bench -p policy --bench evaluate -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use policy::{PolicyFile, Threshold, TraceSummary, TraceView, annotate_span};
use prost::Message;
use proto::view::{SpanView, TraceId};
use proto::write::SpanRef;

const THREE: &str = "
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - {name: sample-10pct, type: probabilistic, probabilistic: {sampling_percentage: 10}}
";

const TWENTY: &str = "
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

/// tailgate's adaptive policies, one at a time, keyed on two fields (one
/// on the resources, one on the spans) of the 10-span trace.
const EMA_DYNAMIC: &str = "
policies:
  - {name: dyn, type: ema_dynamic, ema_dynamic: {goal_sample_rate: 20, field_list: [service.name, http.route]}}
";
const EMA_THROUGHPUT: &str = "
policies:
  - {name: tp, type: ema_throughput, ema_throughput: {goal_throughput_per_sec: 100, field_list: [service.name, http.route]}}
";
const WINDOWED_THROUGHPUT: &str = "
policies:
  - {name: win, type: windowed_throughput, windowed_throughput: {goal_throughput_per_sec: 100, field_list: [service.name, http.route]}}
";

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
type Fixture = (TraceId, Vec<Vec<u8>>, Vec<(usize, Vec<u8>)>, TraceSummary);

/// A fast, successful, 10-span production trace across two services.
fn fixture() -> Fixture {
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

fn evaluate(c: &mut Criterion) {
    let (id, resources, spans, summary) = fixture();
    let refs: Vec<SpanRef<'_>> = spans
        .iter()
        .map(|(r, span)| SpanRef {
            resource: &resources[*r],
            scope: &[],
            span,
        })
        .collect();
    let view = TraceView {
        trace_id: id,
        summary: &summary,
        spans: &refs,
    };
    for (name, yaml) in [("3_policies", THREE), ("20_policies", TWENTY)] {
        let file = PolicyFile::parse(yaml, name).expect("bench policy file is valid");
        let state = file.policies.new_state();
        // Keep the decision the same on every iteration: a fresh bucket
        // each second, and the rate limiter never has room for 10 spans.
        let decision = file.policies.evaluate(&state, &view, Duration::ZERO);
        assert!(
            !decision.sampled,
            "{name}: the bench trace must run every policy"
        );
        let mut now = Duration::ZERO;
        c.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| {
                now += Duration::from_nanos(1);
                black_box(file.policies.evaluate(&state, black_box(&view), now))
            })
        });
    }
    // The adaptive policies: key built from the spans, counted, rate read,
    // trace-ID hash compared. The trace's vote varies with its rate, so no
    // decision is asserted; time moves by 1 ns an iteration, within one
    // adjustment interval.
    for (name, yaml) in [
        ("ema_dynamic", EMA_DYNAMIC),
        ("ema_throughput", EMA_THROUGHPUT),
        ("windowed_throughput", WINDOWED_THROUGHPUT),
    ] {
        let file = PolicyFile::parse(yaml, name).expect("bench policy file is valid");
        let state = file.policies.new_state();
        let mut now = Duration::ZERO;
        c.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| {
                now += Duration::from_nanos(1);
                black_box(file.policies.evaluate(&state, black_box(&view), now))
            })
        });
    }
    c.bench_function("parse_10_stored_spans", |b| {
        b.iter(|| {
            for s in &refs {
                black_box(SpanView::parse(black_box(s.span), 0).ok());
            }
        })
    });
    let threshold = Threshold::from_percentage(10.0);
    c.bench_function("annotate_span", |b| {
        b.iter(|| {
            black_box(annotate_span(
                black_box(&spans[0].1),
                Some("sample-10pct"),
                threshold,
            ))
        })
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
