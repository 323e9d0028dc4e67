//! The span count of a request, for `max_spans_per_request`, read without
//! walking the spans: only the tags and lengths of the request, its
//! `ResourceSpans` and their `ScopeSpans` are read, and each span is
//! skipped by its length. That costs a few nanoseconds per span, against
//! the full walk the node does anyway; a malformed request is not judged
//! here (the node refuses it with the reason).

use crate::wire::{Reader, Value};

/// Spans in `request`, counting no further than `stop` (a request over the
/// limit is not counted to its end). A malformed request counts what was
/// read before the fault.
pub fn count_spans(request: &[u8], stop: usize) -> usize {
    let mut count = 0;
    let mut top = Reader::new(request);
    // ExportTraceServiceRequest.resource_spans = 1
    while let Ok(Some(field)) = top.next_field() {
        let (1, Value::Len(resource_spans)) = (field.number, field.value) else {
            continue;
        };
        let mut resource = Reader::new(resource_spans);
        // ResourceSpans.scope_spans = 2
        while let Ok(Some(field)) = resource.next_field() {
            let (2, Value::Len(scope_spans)) = (field.number, field.value) else {
                continue;
            };
            let mut scope = Reader::new(scope_spans);
            // ScopeSpans.spans = 2
            while let Ok(Some(field)) = scope.next_field() {
                if let (2, Value::Len(_)) = (field.number, field.value) {
                    count += 1;
                    if count >= stop {
                        return count;
                    }
                }
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
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

    #[test]
    fn counts_spans_across_resources_and_scopes() {
        let body = request(&[&[3, 0, 2], &[], &[5]]);
        assert_eq!(count_spans(&body, usize::MAX), 10);
        assert_eq!(count_spans(&[], usize::MAX), 0);
    }

    #[test]
    fn stops_counting_at_the_stop() {
        let body = request(&[&[3, 4]]);
        assert_eq!(count_spans(&body, 5), 5);
    }

    #[test]
    fn garbage_counts_what_it_can_and_never_panics() {
        assert_eq!(count_spans(&[0xff; 64], usize::MAX), 0);
        let body = request(&[&[4]]);
        assert!(count_spans(&body[..body.len() - 3], usize::MAX) <= 4);
    }
}
