//! The LB routing path: split 1,000-span requests among 16 owners, against
//! the baseline a decoding router pays (prost decode, regroup, re-encode).
//!
//! cargo bench -p proto --bench split

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const SPANS: usize = 1000;
const OWNERS: u64 = 16;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// A request shaped like an agent's batch: 4 services, 2 scopes each, spans
/// of ~50 traces with 8 attributes (HTTP semantic conventions), some errors.
fn request() -> ExportTraceServiceRequest {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let traces: Vec<[u8; 16]> = (0..50)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next().to_le_bytes());
            id[8..].copy_from_slice(&next().to_le_bytes());
            id
        })
        .collect();
    let per_scope = SPANS / 8;
    let resource_spans = (0..4)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        any_value::Value::StringValue(format!("service-{r}")),
                    ),
                    kv(
                        "service.version",
                        any_value::Value::StringValue("1.4.2".into()),
                    ),
                    kv(
                        "k8s.pod.name",
                        any_value::Value::StringValue(format!("service-{r}-7d9f8-x2v{r}q")),
                    ),
                    kv(
                        "host.name",
                        any_value::Value::StringValue("node-12.eu-west-1".into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: (0..2)
                .map(|s| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("io.opentelemetry.http-{s}"),
                        version: "2.1.0".into(),
                        ..Default::default()
                    }),
                    spans: (0..per_scope)
                        .map(|i| {
                            let t = traces[(next() % 50) as usize];
                            let start = 1_700_000_000_000_000_000 + next() % 1_000_000_000;
                            Span {
                                trace_id: t.to_vec(),
                                span_id: next().to_le_bytes().to_vec(),
                                parent_span_id: next().to_le_bytes().to_vec(),
                                name: format!("GET /api/v1/items/{}", i % 20),
                                kind: 2,
                                start_time_unix_nano: start,
                                end_time_unix_nano: start + next() % 50_000_000,
                                attributes: vec![
                                    kv(
                                        "http.request.method",
                                        any_value::Value::StringValue("GET".into()),
                                    ),
                                    kv(
                                        "url.path",
                                        any_value::Value::StringValue(format!("/api/v1/items/{i}")),
                                    ),
                                    kv(
                                        "http.response.status_code",
                                        any_value::Value::IntValue(200),
                                    ),
                                    kv(
                                        "server.address",
                                        any_value::Value::StringValue("items.internal".into()),
                                    ),
                                    kv("server.port", any_value::Value::IntValue(8080)),
                                    kv(
                                        "network.protocol.version",
                                        any_value::Value::StringValue("1.1".into()),
                                    ),
                                    kv(
                                        "user_agent.original",
                                        any_value::Value::StringValue("okhttp/4.12.0".into()),
                                    ),
                                    kv(
                                        "http.route",
                                        any_value::Value::StringValue("/api/v1/items/{id}".into()),
                                    ),
                                ],
                                status: (i % 37 == 0).then(|| Status {
                                    code: 2,
                                    message: "upstream timeout".into(),
                                }),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                })
                .collect(),
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn owner(id: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id[..8]);
    u64::from_le_bytes(first) % OWNERS
}

/// What a decoding router does: decode, regroup spans per owner under clones
/// of their resource and scope, encode one request per owner.
fn prost_split(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let req = ExportTraceServiceRequest::decode(bytes).expect("valid request");
    let mut per_owner: HashMap<u64, ExportTraceServiceRequest> = HashMap::new();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for span in ss.spans {
                let out = per_owner.entry(owner(&span.trace_id)).or_default();
                let needs_resource = out
                    .resource_spans
                    .last()
                    .is_none_or(|r| r.resource != rs.resource);
                if needs_resource {
                    out.resource_spans.push(ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: vec![],
                        schema_url: rs.schema_url.clone(),
                    });
                }
                let r = out.resource_spans.last_mut().expect("pushed");
                if needs_resource || r.scope_spans.last().is_none_or(|s| s.scope != ss.scope) {
                    r.scope_spans.push(ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: vec![],
                        schema_url: ss.schema_url.clone(),
                    });
                }
                r.scope_spans.last_mut().expect("pushed").spans.push(span);
            }
        }
    }
    per_owner
        .into_iter()
        .map(|(k, r)| (k, r.encode_to_vec()))
        .collect()
}

fn bench(c: &mut Criterion) {
    let encoded = request().encode_to_vec();
    let mut group = c.benchmark_group("lb_split_1000_spans_16_owners");
    group.throughput(Throughput::Elements(SPANS as u64));
    group.bench_function("zero_copy_split", |b| {
        b.iter(|| {
            let parts = proto::split::split(black_box(&encoded), |id| owner(&id.0)).expect("valid");
            black_box(parts)
        })
    });
    group.bench_function("prost_decode_reencode", |b| {
        b.iter(|| black_box(prost_split(black_box(&encoded))))
    });
    group.bench_function("validate_only", |b| {
        b.iter(|| black_box(proto::view::RequestView::new(black_box(&encoded)).validate()))
    });
    // What every receiver runs before the node: span count and attribute
    // value lengths, at the defaults.
    let limits = proto::receiver::RequestLimits {
        max_spans: proto::receiver::DEFAULT_MAX_SPANS_PER_REQUEST,
        max_attribute_value_bytes: proto::receiver::DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES,
    };
    group.bench_function("receiver_limits", |b| {
        b.iter(|| black_box(proto::receiver::check_limits(black_box(&encoded), limits)))
    });
    group.finish();
    eprintln!(
        "request: {} bytes, {} spans, {:.0} bytes/span",
        encoded.len(),
        SPANS,
        encoded.len() as f64 / SPANS as f64
    );
}

/// The same agent batch as log records: one record per span, with the
/// span's attributes and trace ID, and a body; every fifth record outside
/// any span (no trace ID).
fn logs_request() -> ExportLogsServiceRequest {
    let traces = request();
    let mut n = 0usize;
    ExportLogsServiceRequest {
        resource_logs: traces
            .resource_spans
            .into_iter()
            .map(|rs| ResourceLogs {
                resource: rs.resource,
                schema_url: rs.schema_url,
                scope_logs: rs
                    .scope_spans
                    .into_iter()
                    .map(|ss| ScopeLogs {
                        scope: ss.scope,
                        schema_url: ss.schema_url,
                        log_records: ss
                            .spans
                            .into_iter()
                            .map(|span| {
                                n += 1;
                                let traced = !n.is_multiple_of(5);
                                LogRecord {
                                    time_unix_nano: span.start_time_unix_nano,
                                    observed_time_unix_nano: span.end_time_unix_nano,
                                    severity_number: 9,
                                    severity_text: "INFO".into(),
                                    body: Some(AnyValue {
                                        value: Some(any_value::Value::StringValue(format!(
                                            "{} handled in {} ns",
                                            span.name,
                                            span.end_time_unix_nano - span.start_time_unix_nano
                                        ))),
                                    }),
                                    attributes: span.attributes,
                                    trace_id: if traced { span.trace_id } else { Vec::new() },
                                    span_id: if traced { span.span_id } else { Vec::new() },
                                    ..Default::default()
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Log records split by trace ID as the LB does, beside spans in the same
/// run: records without a trace ID go to one member per request.
fn bench_logs(c: &mut Criterion) {
    let spans = request().encode_to_vec();
    let logs = logs_request().encode_to_vec();
    let mut group = c.benchmark_group("lb_split_1000_items_16_owners");
    group.throughput(Throughput::Elements(SPANS as u64));
    group.bench_function("spans_zero_copy_split", |b| {
        b.iter(|| {
            let parts = proto::split::split(black_box(&spans), |id| owner(&id.0)).expect("valid");
            black_box(parts)
        })
    });
    group.bench_function("logs_zero_copy_split", |b| {
        b.iter(|| {
            let parts = proto::logs::split(black_box(&logs), |id| id.map_or(0, |t| owner(&t.0)))
                .expect("valid");
            black_box(parts)
        })
    });
    group.finish();
    eprintln!(
        "logs request: {} bytes, {} records, {:.0} bytes/record",
        logs.len(),
        SPANS,
        logs.len() as f64 / SPANS as f64
    );
}

criterion_group!(benches, bench, bench_logs);
criterion_main!(benches);
