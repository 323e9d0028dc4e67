//! The request limits the receiver checks before the node sees a request:
//! `max_spans_per_request` and `max_attribute_value_bytes`, in one light
//! scan that reads only tags and lengths.
//!
//! Spans are counted without walking them: only the request, its
//! `ResourceSpans` and their `ScopeSpans` are read, and each span is skipped
//! by its length. Attribute values are bounded the same way, by length
//! first: a resource or span no longer than the limit cannot hold a value
//! over it, so only a message longer than the limit is opened, and in it
//! only its attributes. With the default limit (1 MiB) no ordinary request
//! opens anything. The values bounded are those policies read: resource and
//! span attributes (events, links and scopes are not read by policies and
//! may carry long values, such as a stack trace, freely).
//!
//! A malformed request is not judged here: the scan stops where it stops
//! making sense and the node refuses the request with the reason.

use super::Signal;
use crate::wire::{Reader, Value};

/// The bounds [`check`] applies; 0 means no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_spans: usize,
    pub max_attribute_value_bytes: usize,
}

/// Why [`check`] refused a request. The message names the limit and, for an
/// attribute, where it is and its key (keys are not secret; values are
/// never quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("request holds more than {max} spans, the limit (max_spans_per_request)")]
    TooManySpans { max: usize },
    #[error(
        "{place} attribute {key:?} has a value of {len} bytes, over the limit of {max} \
         (max_attribute_value_bytes)"
    )]
    AttributeTooLong {
        place: &'static str,
        key: String,
        len: usize,
        max: usize,
    },
}

/// Checks `request` against `limits`, in one pass.
pub fn check(request: &[u8], limits: RequestLimits) -> Result<(), Violation> {
    check_signal(request, limits, Signal::Traces)
}

/// [`check`] for either signal. A logs request has the traces' shape and
/// field numbers down to the leaf (see [`crate::logs`]): its log records
/// count against `max_spans` and their attributes (field 6) are bounded
/// like span attributes.
pub fn check_signal(
    request: &[u8],
    limits: RequestLimits,
    signal: Signal,
) -> Result<(), Violation> {
    let (leaf_attributes, place) = match signal {
        Signal::Traces => (9, "span"),
        Signal::Logs => (6, "log record"),
    };
    let max_value = match limits.max_attribute_value_bytes {
        0 => usize::MAX,
        n => n,
    };
    let stop = match limits.max_spans {
        0 => usize::MAX,
        n => n + 1,
    };
    let mut count = 0;
    let mut top = Reader::new(request);
    // ExportTraceServiceRequest.resource_spans = 1
    while let Ok(Some(field)) = top.next_field() {
        let (1, Value::Len(resource_spans)) = (field.number, field.value) else {
            continue;
        };
        let mut resource = Reader::new(resource_spans);
        while let Ok(Some(field)) = resource.next_field() {
            match (field.number, field.value) {
                // ResourceSpans.resource = 1 { attributes = 1 }
                (1, Value::Len(r)) if r.len() > max_value => {
                    attributes(r, 1, max_value).map_err(|v| v.at("resource"))?
                }
                // ResourceSpans.scope_spans = 2
                (2, Value::Len(scope_spans)) => {
                    let mut scope = Reader::new(scope_spans);
                    // ScopeSpans.spans = 2
                    while let Ok(Some(field)) = scope.next_field() {
                        let (2, Value::Len(span)) = (field.number, field.value) else {
                            continue;
                        };
                        count += 1;
                        if count >= stop {
                            return Err(Violation::TooManySpans { max: stop - 1 });
                        }
                        // Span.attributes = 9, LogRecord.attributes = 6
                        if span.len() > max_value {
                            attributes(span, leaf_attributes, max_value)
                                .map_err(|v| v.at(place))?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// An attribute value over the limit, before we know whose it is.
struct Long {
    key: String,
    len: usize,
    max: usize,
}

impl Long {
    fn at(self, place: &'static str) -> Violation {
        Violation::AttributeTooLong {
            place,
            key: self.key,
            len: self.len,
            max: self.max,
        }
    }
}

/// Looks at the `KeyValue`s in field `number` of `message` that are longer
/// than `max`, and refuses the first whose value is.
fn attributes(message: &[u8], number: u32, max: usize) -> Result<(), Long> {
    /// Keys are quoted in the message up to this many bytes.
    const KEY_SHOWN: usize = 128;
    let mut reader = Reader::new(message);
    while let Ok(Some(field)) = reader.next_field() {
        let Value::Len(kv) = field.value else {
            continue;
        };
        if field.number != number || kv.len() <= max {
            continue;
        }
        let (mut key, mut len) = (&[][..], 0);
        let mut r = Reader::new(kv);
        while let Ok(Some(f)) = r.next_field() {
            match (f.number, f.value) {
                (1, Value::Len(k)) => key = k,
                (2, Value::Len(v)) => len = v.len(),
                _ => {}
            }
        }
        if len > max {
            let mut shown = String::from_utf8_lossy(&key[..key.len().min(KEY_SHOWN)]).into_owned();
            if key.len() > KEY_SHOWN {
                shown.push('…');
            }
            return Err(Long {
                key: shown,
                len,
                max,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
    use prost::Message;

    use super::*;
    use crate::ExportTraceServiceRequest;

    fn request(shape: &[&[usize]]) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: shape
                .iter()
                .map(|scopes| ResourceSpans {
                    scope_spans: scopes
                        .iter()
                        .map(|&n| ScopeSpans {
                            spans: vec![Span::default(); n],
                            ..ScopeSpans::default()
                        })
                        .collect(),
                    ..ResourceSpans::default()
                })
                .collect(),
        }
        .encode_to_vec()
    }

    fn spans(max: usize) -> RequestLimits {
        RequestLimits {
            max_spans: max,
            max_attribute_value_bytes: 0,
        }
    }

    fn values(max: usize) -> RequestLimits {
        RequestLimits {
            max_spans: 0,
            max_attribute_value_bytes: max,
        }
    }

    fn kv(key: &str, len: usize) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(len))),
            }),
            ..KeyValue::default()
        }
    }

    /// One span with the given resource, span and event attributes.
    fn with_attributes(
        resource: Vec<KeyValue>,
        span: Vec<KeyValue>,
        event: Vec<KeyValue>,
    ) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        attributes: span,
                        events: vec![Event {
                            attributes: event,
                            ..Event::default()
                        }],
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_spans_across_resources_and_scopes() {
        let body = request(&[&[3, 0, 2], &[], &[5]]);
        assert_eq!(check(&body, spans(10)), Ok(()));
        assert_eq!(
            check(&body, spans(9)),
            Err(Violation::TooManySpans { max: 9 })
        );
        assert_eq!(check(&body, spans(0)), Ok(()));
        assert_eq!(check(&[], spans(1)), Ok(()));
    }

    #[test]
    fn a_span_or_resource_attribute_value_over_the_limit_is_refused_with_its_key() {
        let body = with_attributes(vec![kv("host", 10)], vec![kv("db.statement", 3000)], vec![]);
        assert_eq!(check(&body, values(3003)), Ok(()));
        assert_eq!(
            check(&body, values(3002)),
            Err(Violation::AttributeTooLong {
                place: "span",
                key: "db.statement".into(),
                // The encoded AnyValue: tag, 2-byte length, 3000 bytes.
                len: 3003,
                max: 3002,
            })
        );
        let body = with_attributes(vec![kv("k8s.pod.uid", 5000)], vec![], vec![]);
        let refused = check(&body, values(4096)).unwrap_err();
        assert!(
            matches!(&refused, Violation::AttributeTooLong { place: "resource", key, .. } if key == "k8s.pod.uid")
        );
        assert_eq!(
            refused.to_string(),
            "resource attribute \"k8s.pod.uid\" has a value of 5003 bytes, over the limit of 4096 \
             (max_attribute_value_bytes)"
        );
        assert_eq!(check(&body, values(0)), Ok(()), "0 is no limit");
    }

    #[test]
    fn long_values_that_policies_do_not_read_pass() {
        // An event's stack trace, and a long key with a short value.
        let body = with_attributes(vec![], vec![], vec![kv("exception.stacktrace", 100_000)]);
        assert_eq!(check(&body, values(1024)), Ok(()));
        let long_key = KeyValue {
            key: "k".repeat(5000),
            ..KeyValue::default()
        };
        let body = with_attributes(vec![], vec![long_key], vec![]);
        assert_eq!(check(&body, values(1024)), Ok(()));
    }

    #[test]
    fn a_long_key_is_shortened_in_the_message() {
        let body = with_attributes(vec![], vec![kv(&"é".repeat(100), 300)], vec![]);
        let Err(Violation::AttributeTooLong { key, .. }) = check(&body, values(200)) else {
            panic!("not refused");
        };
        assert!(key.ends_with('…') && key.len() < 140, "{key}");
    }

    #[test]
    fn garbage_is_left_to_the_node_and_never_panics() {
        assert_eq!(check(&[0xff; 64], spans(1)), Ok(()));
        let body = request(&[&[4]]);
        assert_eq!(check(&body[..body.len() - 3], spans(4)), Ok(()));
        let body = with_attributes(vec![], vec![kv("a", 500)], vec![]);
        for cut in 0..body.len() {
            let _ = check(&body[..cut], values(100));
        }
    }
}
