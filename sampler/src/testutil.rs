//! Building encoded requests for the tests (also included by the
//! component tests' support module).
#![allow(dead_code)]

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use proto::view::TraceId;

/// One span to encode: trace `trace`, span `span`, root unless it has a parent.
#[derive(Debug, Clone)]
pub struct SpanSpec {
    pub trace: u8,
    pub trace_id: TraceId,
    pub span: u8,
    pub parent: Option<u8>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub error: bool,
    pub service: String,
    /// Extra bytes in an attribute, to make the span bigger.
    pub padding: usize,
}

impl SpanSpec {
    /// A child span (parent 0) of trace `trace`, 1 ms long.
    pub fn new(trace: u8, span: u8) -> Self {
        SpanSpec {
            trace,
            trace_id: trace_id(trace),
            span,
            parent: Some(0),
            start_ms: 1,
            end_ms: 2,
            error: false,
            service: "svc".into(),
            padding: 0,
        }
    }

    /// A span of the trace with this full ID.
    pub fn with_trace_id(mut self, id: TraceId) -> Self {
        self.trace_id = id;
        self.trace = id.0[15];
        self
    }

    /// Start and end, in ms since the epoch.
    pub fn times(mut self, start_ms: u64, end_ms: u64) -> Self {
        self.start_ms = start_ms;
        self.end_ms = end_ms;
        self
    }

    pub fn root(mut self) -> Self {
        self.parent = None;
        self
    }

    pub fn error(mut self) -> Self {
        self.error = true;
        self
    }

    pub fn service(mut self, name: &str) -> Self {
        self.service = name.into();
        self
    }

    pub fn padded(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }
}

pub fn trace_id(n: u8) -> TraceId {
    let mut id = [0u8; 16];
    id[0] = 0xab;
    id[15] = n;
    TraceId(id)
}

fn span(spec: &SpanSpec) -> Span {
    let mut attributes = Vec::new();
    if spec.padding > 0 {
        attributes.push(KeyValue {
            key: "pad".into(),
            key_strindex: 0,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(spec.padding))),
            }),
        });
    }
    Span {
        trace_id: spec.trace_id.0.to_vec(),
        span_id: vec![spec.span + 1; 8],
        parent_span_id: spec.parent.map(|p| vec![p + 1; 8]).unwrap_or_default(),
        name: format!("s{}", spec.span),
        start_time_unix_nano: spec.start_ms * 1_000_000,
        end_time_unix_nano: spec.end_ms * 1_000_000,
        attributes,
        status: spec.error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// One request; consecutive spans of the same service share a resource.
pub fn request(specs: &[SpanSpec]) -> Bytes {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    for spec in specs {
        let same = resource_spans.last().is_some_and(|rs| {
            rs.resource.as_ref().is_some_and(|r| {
                r.attributes.first().and_then(|kv| kv.value.as_ref())
                    == Some(&AnyValue {
                        value: Some(any_value::Value::StringValue(spec.service.clone())),
                    })
            })
        });
        if !same {
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        key_strindex: 0,
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(spec.service.clone())),
                        }),
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "test".into(),
                        ..Default::default()
                    }),
                    spans: Vec::new(),
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                }],
                schema_url: String::new(),
            });
        }
        if let Some(rs) = resource_spans.last_mut() {
            rs.scope_spans[0].spans.push(span(spec));
        }
    }
    Bytes::from(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
}

/// Decodes a request and lists `(trace byte, span id byte)` of its spans.
pub fn span_ids(request: &[u8]) -> Vec<(u8, u8)> {
    let req = ExportTraceServiceRequest::decode(request).expect("decodes");
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id[15], s.span_id[0] - 1))
        .collect()
}
