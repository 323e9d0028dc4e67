//! Fixtures shared by the integration tests: spans built with the generated
//! OTLP types and encoded with prost.

#![allow(dead_code)]

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use prost::Message;

pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

pub fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

pub fn i(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

pub fn b(v: bool) -> any_value::Value {
    any_value::Value::BoolValue(v)
}

pub const BASE_NANOS: u64 = 1_700_000_000_000_000_000;

/// A span of trace `trace`, times in milliseconds from an arbitrary start.
pub fn span(trace: [u8; 16], id: u64, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if id == 1 {
            Vec::new()
        } else {
            1u64.to_be_bytes().to_vec()
        },
        name: format!("span-{id}"),
        start_time_unix_nano: BASE_NANOS + start_ms * 1_000_000,
        end_time_unix_nano: BASE_NANOS + end_ms * 1_000_000,
        ..Span::default()
    }
}

pub fn with_status(mut span: Span, code: i32) -> Span {
    span.status = Some(Status {
        code,
        message: String::new(),
    });
    span
}

/// The group header of a resource with these attributes.
pub fn resource_header(attrs: Vec<KeyValue>) -> Vec<u8> {
    ResourceSpans {
        resource: Some(Resource {
            attributes: attrs,
            ..Resource::default()
        }),
        ..ResourceSpans::default()
    }
    .encode_to_vec()
}
