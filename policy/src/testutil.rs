//! Test fixtures: traces built with the generated OTLP types and encoded
//! with prost, so that the code under test reads real protobuf bytes.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use prost::Message;
use proto::view::{SpanView, TraceId};
use proto::write::SpanRef;

use crate::{Decision, PolicySet, PolicyState, TraceSummary, TraceView};

pub(crate) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

pub(crate) fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

pub(crate) fn i(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

pub(crate) fn b(v: bool) -> any_value::Value {
    any_value::Value::BoolValue(v)
}

/// One span of a test trace; times in milliseconds from an arbitrary start.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanSpec {
    pub id: u64,
    pub parent: Option<u64>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub status: i32,
    pub attrs: Vec<KeyValue>,
    pub trace_state: String,
    pub flags: u32,
    /// Index into the trace's resources.
    pub resource: usize,
}

pub(crate) fn span(id: u64, start_ms: u64, end_ms: u64) -> SpanSpec {
    SpanSpec {
        id,
        parent: (id != 1).then_some(1),
        start_ms,
        end_ms,
        ..SpanSpec::default()
    }
}

/// A trace as the sampler would hold it, owning its bytes.
pub(crate) struct TestTrace {
    pub id: TraceId,
    pub resources: Vec<Vec<u8>>,
    pub spans: Vec<(usize, Vec<u8>)>,
    pub summary: TraceSummary,
}

const BASE_NANOS: u64 = 1_700_000_000_000_000_000;

pub(crate) fn encode_span(trace: [u8; 16], spec: &SpanSpec) -> Vec<u8> {
    Span {
        trace_id: trace.to_vec(),
        span_id: spec.id.to_be_bytes().to_vec(),
        parent_span_id: spec
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        trace_state: spec.trace_state.clone(),
        name: format!("span-{}", spec.id),
        start_time_unix_nano: BASE_NANOS + spec.start_ms * 1_000_000,
        end_time_unix_nano: BASE_NANOS + spec.end_ms * 1_000_000,
        attributes: spec.attrs.clone(),
        status: (spec.status != 0).then(|| Status {
            code: spec.status,
            message: String::new(),
        }),
        flags: spec.flags,
        ..Span::default()
    }
    .encode_to_vec()
}

/// The group header of a resource with these attributes.
pub(crate) fn resource_header(attrs: Vec<KeyValue>) -> Vec<u8> {
    ResourceSpans {
        resource: Some(Resource {
            attributes: attrs,
            ..Resource::default()
        }),
        ..ResourceSpans::default()
    }
    .encode_to_vec()
}

impl TestTrace {
    pub(crate) fn new(
        id: [u8; 16],
        resources: Vec<Vec<KeyValue>>,
        spans: &[SpanSpec],
    ) -> TestTrace {
        let resources: Vec<Vec<u8>> = if resources.is_empty() {
            vec![resource_header(Vec::new())]
        } else {
            resources.into_iter().map(resource_header).collect()
        };
        let mut summary = TraceSummary::new();
        let spans = spans
            .iter()
            .map(|spec| {
                let bytes = encode_span(id, spec);
                let view = SpanView::parse(&bytes, 0).expect("fixture span parses");
                summary.add(&view, bytes.len());
                (spec.resource, bytes)
            })
            .collect();
        TestTrace {
            id: TraceId(id),
            resources,
            spans,
            summary,
        }
    }

    pub(crate) fn refs(&self) -> Vec<SpanRef<'_>> {
        self.spans
            .iter()
            .map(|(r, bytes)| SpanRef {
                resource: &self.resources[*r],
                scope: &[],
                span: bytes,
            })
            .collect()
    }

    /// Decides as the sampler does: without the spans when the set says it
    /// does not read them (so every vector here checks that claim too).
    pub(crate) fn decide(&self, set: &PolicySet, state: &PolicyState, now: Duration) -> Decision {
        let refs = if set.reads_spans() {
            self.refs()
        } else {
            Vec::new()
        };
        let view = TraceView {
            trace_id: self.id,
            summary: &self.summary,
            spans: &refs,
        };
        set.evaluate(state, &view, now)
    }
}

/// Parses a policy file given as the `policies:` list only.
pub(crate) fn policies(yaml: &str) -> PolicySet {
    crate::PolicyFile::parse(&format!("policies:\n{yaml}"), "test.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .policies
}

/// [`policies`] with the Collector's `usetracestate` gate on.
pub(crate) fn policies_with_tracestate(yaml: &str) -> PolicySet {
    let mut set = policies(yaml);
    set.set_use_tracestate(true);
    set
}

/// Decides a trace with a fresh state at time 0.
pub(crate) fn decide(set: &PolicySet, trace: &TestTrace) -> Decision {
    trace.decide(set, &set.new_state(), Duration::ZERO)
}
