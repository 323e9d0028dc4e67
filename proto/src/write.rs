//! Assembles stored span bytes, with their resource and scope headers, into
//! one encoded `ExportTraceServiceRequest`, copying byte ranges only.
//!
//! Consecutive spans under the same resource header share one
//! `ResourceSpans`; consecutive spans under the same scope share one
//! `ScopeSpans`. Headers are compared by address first (spans read from one
//! request share them) and by content otherwise.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{len_field_len, varint_len};

/// A span and the headers of the resource and scope it came under.
#[derive(Debug, Clone, Copy)]
pub struct SpanRef<'a> {
    /// The `ResourceSpans` fields other than `scope_spans` (see [`crate::view`]).
    pub resource: &'a [u8],
    /// The `ScopeSpans` fields other than `spans`.
    pub scope: &'a [u8],
    /// The encoded `Span` message.
    pub span: &'a [u8],
}

fn same(a: &[u8], b: &[u8]) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// A run of spans under one group header: `(first span, end, content length)`.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    len: usize,
}

/// The grouping of a list of spans, computed once for both sizing and writing.
struct Plan {
    resources: Vec<Run>,
    scopes: Vec<Run>,
    total: usize,
}

fn plan(spans: &[SpanRef<'_>]) -> Plan {
    let mut resources: Vec<Run> = Vec::new();
    let mut scopes: Vec<Run> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let new_resource = match resources.last() {
            Some(r) => !same(spans[r.start].resource, s.resource),
            None => true,
        };
        if new_resource {
            resources.push(Run {
                start: i,
                end: i,
                len: s.resource.len(),
            });
        }
        let new_scope = new_resource
            || scopes
                .last()
                .is_none_or(|r| !same(spans[r.start].scope, s.scope));
        if new_scope {
            scopes.push(Run {
                start: i,
                end: i,
                len: s.scope.len(),
            });
        }
        let scope = scopes.last_mut().expect("pushed above");
        scope.end = i + 1;
        scope.len += len_field_len(s.span.len());
        resources.last_mut().expect("pushed above").end = i + 1;
    }
    // Resource content: header plus each of its scope runs as a field.
    let mut si = 0;
    for r in &mut resources {
        while si < scopes.len() && scopes[si].start < r.end {
            r.len += len_field_len(scopes[si].len);
            si += 1;
        }
    }
    let total = resources.iter().map(|r| len_field_len(r.len)).sum();
    Plan {
        resources,
        scopes,
        total,
    }
}

/// The encoded length of the request [`write_request`] would produce.
pub fn encoded_len(spans: &[SpanRef<'_>]) -> usize {
    plan(spans).total
}

/// Appends one `ExportTraceServiceRequest` holding `spans` to `out`.
/// Appending two requests concatenates them, which protobuf reads as one
/// request holding both, so batches are built by calling this repeatedly.
pub fn write_request(spans: &[SpanRef<'_>], out: &mut BytesMut) {
    let plan = plan(spans);
    out.reserve(plan.total);
    let mut si = 0;
    for r in &plan.resources {
        put_len_header(out, 1, r.len);
        out.put_slice(spans[r.start].resource);
        while si < plan.scopes.len() && plan.scopes[si].start < r.end {
            let s = plan.scopes[si];
            put_len_header(out, 2, s.len);
            out.put_slice(spans[s.start].scope);
            for span in &spans[s.start..s.end] {
                put_len_header(out, 2, span.span.len());
                out.put_slice(span.span);
            }
            si += 1;
        }
    }
}

/// One request holding `spans`, as a frozen buffer.
pub fn request(spans: &[SpanRef<'_>]) -> Bytes {
    let mut out = BytesMut::new();
    write_request(spans, &mut out);
    out.freeze()
}

#[inline]
fn put_len_header(out: &mut BytesMut, field: u8, len: usize) {
    out.put_u8((field << 3) | crate::wire::LEN);
    let mut v = len as u64;
    let n = varint_len(v);
    for _ in 1..n {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::RequestView;

    #[test]
    fn empty_list_writes_an_empty_request() {
        assert!(request(&[]).is_empty());
        assert_eq!(encoded_len(&[]), 0);
    }

    #[test]
    fn spans_under_equal_headers_share_groups() {
        // resource header: field 1 (Resource) with no attributes; scope header likewise.
        let resource_a: &[u8] = &[0x0a, 0x00];
        let resource_b: &[u8] = &[0x1a, 0x01, b'b'];
        let scope: &[u8] = &[0x0a, 0x00];
        let span = |n: u8| -> Vec<u8> {
            let mut s = vec![0x0a, 16];
            s.extend([n; 16]);
            s.extend([0x12, 8]);
            s.extend([n; 8]);
            s
        };
        let (s1, s2, s3) = (span(1), span(2), span(3));
        let spans = [
            SpanRef {
                resource: resource_a,
                scope,
                span: &s1,
            },
            SpanRef {
                resource: resource_a,
                scope,
                span: &s2,
            },
            SpanRef {
                resource: resource_b,
                scope,
                span: &s3,
            },
        ];
        let out = request(&spans);
        assert_eq!(out.len(), encoded_len(&spans));
        let view = RequestView::new(&out);
        let groups: Vec<usize> = view
            .resource_spans()
            .map(|rs| {
                rs.unwrap()
                    .scope_spans()
                    .map(|ss| ss.unwrap().spans().count())
                    .sum()
            })
            .collect();
        assert_eq!(groups, vec![2, 1]);
    }
}
