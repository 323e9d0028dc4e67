//! From one accepted request to per-shard work, in one checked walk.
//!
//! The walk ([`RequestView::for_each_span`]) checks the whole request and
//! gives each span's trace ID, byte range and the headers of its resource
//! and scope groups; the summary a policy reads without touching the span
//! ([`TraceSummary`]) is computed here too, so the shard worker never parses
//! a span again. Nothing is copied yet: the batch holds the request and byte
//! ranges into it, and each shard copies what it keeps (see
//! [`crate::buffer`] for why it copies).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use policy::TraceSummary;
use proto::view::{RequestView, TraceId};
use proto::wire::WireError;
use proto::write::SpanRef;

/// The resource and scope headers a group of spans came under (see
/// [`proto::view`] for what a header holds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupHeader {
    /// The `ResourceSpans` fields other than `scope_spans`.
    pub resource: Bytes,
    /// The `ScopeSpans` fields other than `spans`.
    pub scope: Bytes,
}

/// One span of a batch: where it is, and what the summary needs of it.
#[derive(Debug, Clone)]
pub(crate) struct IngestSpan {
    pub trace_id: TraceId,
    /// Index into the batch's groups.
    pub group: u32,
    pub range: Range<usize>,
    /// This span alone, folded into its trace's summary at insert.
    pub summary: TraceSummary,
}

/// The spans of one request that belong to one shard, with the request they
/// point into. Cheap to build: the request and its group headers are shared
/// by every shard's batch.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    request: Bytes,
    groups: Arc<[GroupHeader]>,
    pub(crate) spans: Vec<IngestSpan>,
}

impl IngestBatch {
    /// Checks `request` and splits its spans by shard: element `i` of the
    /// result holds the spans of the traces [`shard_of`] puts in shard `i`
    /// (maybe none). A malformed request yields an error and no batch.
    pub fn split(request: Bytes, shards: usize) -> Result<Vec<IngestBatch>, WireError> {
        let shards = shards.max(1);
        let mut groups: Vec<GroupHeader> = Vec::new();
        // Room for the spans at once (not grown span by span, copying
        // 72-byte entries): few spans encode in under 160 bytes, and a
        // guess too large lives only as long as the batch.
        let guess = request.len() / 160 / shards + 8;
        let mut per_shard: Vec<Vec<IngestSpan>> =
            (0..shards).map(|_| Vec::with_capacity(guess)).collect();
        let mut last_scope = usize::MAX;
        RequestView::new(&request).for_each_span(|resource, scope, span| {
            if scope.index != last_scope {
                last_scope = scope.index;
                groups.push(GroupHeader {
                    resource: share(&request, &resource.header),
                    scope: share(&request, &scope.header),
                });
            }
            let mut summary = TraceSummary::new();
            summary.add(&span, span.bytes().len());
            let start = span.offset();
            per_shard[shard_of(&span.trace_id, shards)].push(IngestSpan {
                trace_id: span.trace_id,
                group: (groups.len() - 1) as u32,
                range: start..start + span.bytes().len(),
                summary,
            });
        })?;
        let groups: Arc<[GroupHeader]> = groups.into();
        Ok(per_shard
            .into_iter()
            .map(|spans| IngestBatch {
                request: request.clone(),
                groups: groups.clone(),
                spans,
            })
            .collect())
    }

    /// All of `request`'s spans in one batch (one shard).
    pub fn parse(request: Bytes) -> Result<IngestBatch, WireError> {
        let mut batches = IngestBatch::split(request, 1)?;
        Ok(batches.pop().unwrap_or_else(|| IngestBatch {
            request: Bytes::new(),
            groups: Arc::from(Vec::new()),
            spans: Vec::new(),
        }))
    }

    /// Spans in this batch.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The trace IDs of the spans, in order (one per span).
    pub fn trace_ids(&self) -> impl Iterator<Item = TraceId> + '_ {
        self.spans.iter().map(|s| s.trace_id)
    }

    /// The encoded bytes of span `i`.
    pub(crate) fn span_bytes(&self, span: &IngestSpan) -> &[u8] {
        // Ranges come from the walk over this very request.
        self.request.get(span.range.clone()).unwrap_or_default()
    }

    pub(crate) fn group(&self, index: u32) -> &GroupHeader {
        &self.groups[index as usize]
    }

    pub(crate) fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Span `i` with its headers, as [`proto::write`] takes it.
    pub(crate) fn span_ref(&self, i: usize) -> SpanRef<'_> {
        let span = &self.spans[i];
        let group = self.group(span.group);
        SpanRef {
            resource: &group.resource,
            scope: &group.scope,
            span: self.span_bytes(span),
        }
    }

    /// Encoded bytes of the request this batch points into (what it keeps
    /// alive until every shard has copied its spans out).
    pub fn request_len(&self) -> usize {
        self.request.len()
    }
}

/// A header borrowed from the request becomes a handle on the request's
/// buffer; one the view had to assemble (non-adjacent fields) is its own.
#[allow(clippy::ptr_arg)] // Borrowed or Owned is the point.
fn share(request: &Bytes, header: &Cow<'_, [u8]>) -> Bytes {
    match header {
        Cow::Borrowed([]) => Bytes::new(),
        Cow::Borrowed(slice) => request.slice_ref(slice),
        Cow::Owned(vec) => Bytes::copy_from_slice(vec),
    }
}

/// The shard that holds a trace. Mixes both halves of the ID (so IDs that
/// differ only in one half still spread) with a multiplier unrelated to the
/// ring hash, so the subset of IDs one sampler owns still spreads evenly
/// over its shards.
pub fn shard_of(id: &TraceId, shards: usize) -> usize {
    let (hi, lo) = id.0.split_at(8);
    let hi = u64::from_le_bytes(hi.try_into().unwrap_or_default());
    let lo = u64::from_le_bytes(lo.try_into().unwrap_or_default());
    let mixed = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Lemire's range reduction on the high bits, the best mixed ones.
    (((mixed >> 32) * shards as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{SpanSpec, request};

    #[test]
    fn split_puts_each_trace_in_one_shard_and_keeps_every_span() {
        let spans: Vec<SpanSpec> = (0..64u8)
            .flat_map(|t| (0..3u8).map(move |s| SpanSpec::new(t, s)))
            .collect();
        let req = request(&spans);
        let batches = IngestBatch::split(req, 4).unwrap();
        assert_eq!(batches.len(), 4);
        assert_eq!(batches.iter().map(IngestBatch::len).sum::<usize>(), 192);
        for (i, b) in batches.iter().enumerate() {
            assert!(!b.is_empty(), "64 traces over 4 shards leave none empty");
            assert!(b.trace_ids().all(|id| shard_of(&id, 4) == i));
        }
    }

    #[test]
    fn split_refuses_a_malformed_request_whole() {
        let mut bytes = request(&[SpanSpec::new(1, 1), SpanSpec::new(2, 1)]).to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(IngestBatch::split(Bytes::from(bytes), 2).is_err());
    }

    #[test]
    fn span_refs_point_at_the_original_bytes() {
        let req = request(&[SpanSpec::new(7, 1).error()]);
        let batch = IngestBatch::parse(req.clone()).unwrap();
        let r = batch.span_ref(0);
        let rebuilt = proto::write::request(&[r]);
        // The same message; the view moves `schema_url` before the spans.
        let decode =
            |b: &[u8]| <proto::ExportTraceServiceRequest as prost::Message>::decode(b).unwrap();
        assert_eq!(decode(&rebuilt), decode(&req));
        assert!(batch.spans[0].summary.error_seen());
    }

    #[test]
    fn shard_of_spreads_sequential_ids() {
        let mut counts = [0usize; 8];
        for n in 0..8000u64 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&n.to_be_bytes());
            counts[shard_of(&TraceId(id), 8)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
