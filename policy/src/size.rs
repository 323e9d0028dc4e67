//! The size the Collector's `bytes_limiting` policy charges a trace
//! (bytes_limiting.go, `calculateTraceSize`). It is not the encoded size
//! but an estimate from the data: per resource 4 bytes and its attributes;
//! per scope its name, version, 4 bytes and attributes; per span 68 bytes
//! for the fixed fields, its name, tracestate and status message, its
//! attributes, and per event 12 bytes, its name and attributes, per link 28
//! bytes, its tracestate and attributes. An attribute costs its key's bytes
//! and its value: a string or bytes their length, an int or double 8, a
//! bool 1, an array or map the sum of what it holds.
//!
//! The Collector counts a resource and a scope once per batch that brought
//! spans of the trace; the stored spans do not keep batch boundaries, so
//! here they count once per run of spans under the same headers (the same
//! figure whenever a trace arrived in one request).

use proto::view::{AnyValue, Attributes, resource_attributes};
use proto::wire::{Reader, Value};
use proto::write::SpanRef;

/// bytes_limiting.go's estimate for a trace's stored spans, in order.
pub(crate) fn trace_size(spans: &[SpanRef<'_>]) -> u64 {
    let mut total = 0;
    let (mut resource, mut scope): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    for span in spans {
        if resource.is_none_or(|r| !same(r, span.resource)) {
            resource = Some(span.resource);
            scope = None;
            total += 4 + attributes_size(resource_attributes(span.resource));
        }
        if scope.is_none_or(|s| !same(s, span.scope)) {
            scope = Some(span.scope);
            total += scope_size(span.scope);
        }
        total += span_size(span.span);
    }
    total
}

fn same(a: &[u8], b: &[u8]) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// `ScopeSpans` header: `scope` (field 1) is `{name 1, version 2,
/// attributes 3}`.
fn scope_size(header: &[u8]) -> u64 {
    let mut size = 4;
    for_len_fields(header, |number, scope| {
        if number == 1 {
            for_len_fields(scope, |number, bytes| match number {
                1 | 2 => size += bytes.len() as u64,
                _ => {}
            });
            size += attributes_size(Attributes::new(scope, 3));
        }
    });
    size
}

/// `Span`: trace_state 3, name 5, attributes 9, events 11, links 13,
/// status 15 (`{message 2}`). Events are `{name 2, attributes 3}`, links
/// `{trace_state 3, attributes 4}`.
fn span_size(span: &[u8]) -> u64 {
    let mut size = 68;
    for_len_fields(span, |number, bytes| match number {
        3 | 5 => size += bytes.len() as u64,
        15 => for_len_fields(bytes, |n, message| {
            if n == 2 {
                size += message.len() as u64;
            }
        }),
        11 => {
            size += 12 + attributes_size(Attributes::new(bytes, 3));
            for_len_fields(bytes, |n, name| {
                if n == 2 {
                    size += name.len() as u64;
                }
            });
        }
        13 => {
            size += 28 + attributes_size(Attributes::new(bytes, 4));
            for_len_fields(bytes, |n, trace_state| {
                if n == 3 {
                    size += trace_state.len() as u64;
                }
            });
        }
        _ => {}
    });
    size += attributes_size(Attributes::new(span, 9));
    size
}

fn attributes_size(attributes: Attributes<'_>) -> u64 {
    attributes
        .map(|(key, value)| key.len() as u64 + value_size(value))
        .sum()
}

fn value_size(value: AnyValue<'_>) -> u64 {
    match value {
        AnyValue::String(s) => s.len() as u64,
        AnyValue::Bytes(b) => b.len() as u64,
        AnyValue::Int(_) | AnyValue::Double(_) => 8,
        AnyValue::Bool(_) => 1,
        AnyValue::Array(array) => {
            let mut size = 0;
            for_len_fields(array, |number, item| {
                if number == 1 {
                    size += value_size(AnyValue::read(item));
                }
            });
            size
        }
        AnyValue::KvList(list) => attributes_size(Attributes::new(list, 1)),
        AnyValue::Empty => 0,
    }
}

/// Calls `f` with each length-delimited field of a validated message.
fn for_len_fields<'a>(message: &'a [u8], mut f: impl FnMut(u32, &'a [u8])) {
    let mut reader = Reader::new(message);
    while let Ok(Some(field)) = reader.next_field() {
        if let Value::Len(bytes) = field.value {
            f(field.number, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue as Any, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(Any { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn string(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    #[test]
    fn matches_the_collector_estimate_field_by_field() {
        let resource = ResourceSpans {
            resource: Some(Resource {
                // 12 + 8
                attributes: vec![kv("service.name", string("checkout"))],
                ..Resource::default()
            }),
            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            ..ResourceSpans::default()
        }
        .encode_to_vec();
        let scope = ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "lib".into(),
                version: "1.0".into(),
                // 1 + 1
                attributes: vec![kv("x", any_value::Value::BoolValue(true))],
                ..InstrumentationScope::default()
            }),
            ..ScopeSpans::default()
        }
        .encode_to_vec();
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET".into(),
            trace_state: "a=b".into(),
            attributes: vec![
                kv("http.status_code", any_value::Value::IntValue(200)),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
                kv(
                    "list",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            Any {
                                value: Some(string("ab")),
                            },
                            Any {
                                value: Some(any_value::Value::IntValue(1)),
                            },
                        ],
                    }),
                ),
                kv(
                    "map",
                    any_value::Value::KvlistValue(KeyValueList {
                        values: vec![kv("k", string("vv"))],
                    }),
                ),
                kv("raw", any_value::Value::BytesValue(vec![0; 5])),
            ],
            events: vec![Event {
                name: "boom".into(),
                attributes: vec![kv("k", string("v"))],
                ..Event::default()
            }],
            links: vec![Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                trace_state: "c=d".into(),
                attributes: vec![kv("l", string("w"))],
                ..Link::default()
            }],
            status: Some(Status {
                message: "bad".into(),
                code: 2,
            }),
            ..Span::default()
        }
        .encode_to_vec();
        // The headers as the splitter keeps them: every field but the list.
        let span_ref = SpanRef {
            resource: &resource,
            scope: &scope,
            span: &span,
        };
        let resource_size = 4 + 12 + 8;
        let scope_size = 3 + 3 + 4 + (1 + 1);
        let attributes = (16 + 8) + (5 + 8) + (4 + 2 + 8) + (3 + 1 + 2) + (3 + 5);
        let span_size = 68 + 3 + 3 + 3 + attributes + (12 + 4 + 1 + 1) + (28 + 3 + 1 + 1);
        assert_eq!(
            trace_size(&[span_ref]),
            resource_size + scope_size + span_size
        );
        // A second span under the same headers adds only itself.
        assert_eq!(
            trace_size(&[span_ref, span_ref]),
            resource_size + scope_size + 2 * span_size
        );
        assert_eq!(trace_size(&[]), 0);
    }
}
