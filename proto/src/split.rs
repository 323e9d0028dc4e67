//! Splits an encoded request into one request per key (the LB's owners, the
//! sampler's traces), each made of copied byte ranges: every span is carried
//! with the header of its resource and scope; nothing is decoded.

use std::borrow::Cow;
use std::hash::Hash;

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;

use crate::view::{RequestView, TraceId};
use crate::wire::WireError;
use crate::write::{self, SpanRef};

/// The part of a request that went to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<K> {
    pub key: K,
    /// A complete encoded `ExportTraceServiceRequest`.
    pub request: Bytes,
    pub spans: usize,
}

/// Splits `request` by `key_of(trace_id)`. Parts come in the order their key
/// first appears; spans keep their order within a part. The whole request is
/// checked first: a malformed request yields an error and no part.
pub fn split<K, F>(request: &[u8], mut key_of: F) -> Result<Vec<Part<K>>, WireError>
where
    K: Eq + Hash + Clone,
    F: FnMut(&TraceId) -> K,
{
    // Headers live here so that the span lists below can borrow them.
    let mut headers: Vec<Cow<'_, [u8]>> = Vec::new();
    // Per key: (resource header index, scope header index, span bytes).
    let mut keys: Vec<K> = Vec::new();
    let mut lists: Vec<Vec<(u32, u32, &[u8])>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut last: Option<(TraceId, usize)> = None;
    let (mut resource_slot, mut scope_slot) = (u32::MAX, u32::MAX);
    let (mut resource_seen, mut scope_seen) = (usize::MAX, usize::MAX);

    RequestView::new(request).for_each_span(|resource, scope, span| {
        if resource.index != resource_seen {
            resource_seen = resource.index;
            resource_slot = headers.len() as u32;
            headers.push(resource.header.clone());
        }
        if scope.index != scope_seen {
            scope_seen = scope.index;
            scope_slot = headers.len() as u32;
            headers.push(scope.header.clone());
        }
        // Spans of one trace tend to sit together: skip the key function then.
        let slot = match last {
            Some((id, slot)) if id == span.trace_id => slot,
            _ => {
                let key = key_of(&span.trace_id);
                let slot = *index.entry(key.clone()).or_insert_with(|| {
                    keys.push(key);
                    lists.push(Vec::new());
                    keys.len() - 1
                });
                last = Some((span.trace_id, slot));
                slot
            }
        };
        lists[slot].push((resource_slot, scope_slot, span.bytes()));
    })?;

    let mut refs: Vec<SpanRef<'_>> = Vec::new();
    let mut out = BytesMut::new();
    let mut parts = Vec::with_capacity(keys.len());
    for (key, list) in keys.into_iter().zip(&lists) {
        refs.clear();
        refs.extend(list.iter().map(|&(r, s, span)| SpanRef {
            resource: &headers[r as usize],
            scope: &headers[s as usize],
            span,
        }));
        write::write_request(&refs, &mut out);
        parts.push(Part {
            key,
            request: out.split().freeze(),
            spans: list.len(),
        });
    }
    Ok(parts)
}
