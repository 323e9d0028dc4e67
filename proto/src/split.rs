//! Splits an encoded request into one request per key (the LB's owners, the
//! sampler's traces), each made of copied byte ranges: every span is carried
//! with the header of its resource and scope; nothing is decoded.

use std::borrow::Cow;
use std::hash::Hash;

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;

use crate::view::{Group, RequestView, TraceId};
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
pub fn split<K, F>(request: &[u8], key_of: F) -> Result<Vec<Part<K>>, WireError>
where
    K: Eq + Hash + Clone,
    F: FnMut(&TraceId) -> K,
{
    Ok(group(request, key_of)?.parts())
}

/// [`split`], but when every span goes to one key the part is `request`
/// itself, not a copy: an LB with one member, or a request of one
/// service's spans of one trace, forwards the bytes it received (checked
/// the same way) instead of writing them again.
pub fn split_whole<K, F>(request: &Bytes, key_of: F) -> Result<Vec<Part<K>>, WireError>
where
    K: Eq + Hash + Clone,
    F: FnMut(&TraceId) -> K,
{
    Ok(group(request, key_of)?.parts_or_whole(request))
}

fn group<K, F>(request: &[u8], mut key_of: F) -> Result<Grouper<'_, K>, WireError>
where
    K: Eq + Hash + Clone,
    F: FnMut(&TraceId) -> K,
{
    let mut groups = Grouper::default();
    RequestView::new(request).for_each_span(|resource, scope, span| {
        groups.push(resource, scope, Some(span.trace_id), span.bytes(), |id| {
            key_of(id.expect("a span has a trace ID"))
        });
    })?;
    Ok(groups)
}

/// Groups the items of one request (spans, or log records, whose field
/// numbers the writer shares) by key, each with its resource and scope
/// header, and writes one request per key: the body of [`split`] and of
/// [`crate::logs::split`].
pub(crate) struct Grouper<'a, K> {
    /// Headers live here so that the item lists below can refer to them.
    headers: Vec<Cow<'a, [u8]>>,
    /// Per key: (resource header index, scope header index, item bytes).
    keys: Vec<K>,
    lists: Vec<Vec<(u32, u32, &'a [u8])>>,
    index: HashMap<K, usize>,
    /// The last item's trace ID and list: items of one trace tend to sit
    /// together, so the key function is skipped then.
    last: Option<(Option<TraceId>, usize)>,
    /// (index in the request, slot in `headers`) of the current resource
    /// and scope.
    resource: (usize, u32),
    scope: (usize, u32),
}

impl<K> Default for Grouper<'_, K> {
    fn default() -> Self {
        Grouper {
            headers: Vec::new(),
            keys: Vec::new(),
            lists: Vec::new(),
            index: HashMap::new(),
            last: None,
            resource: (usize::MAX, u32::MAX),
            scope: (usize::MAX, u32::MAX),
        }
    }
}

impl<'a, K: Eq + Hash + Clone> Grouper<'a, K> {
    /// Adds one item under `key_of(trace_id)`. An item without a trace ID
    /// is keyed each time (the caller may spread them).
    pub(crate) fn push(
        &mut self,
        resource: &Group<'a>,
        scope: &Group<'a>,
        trace_id: Option<TraceId>,
        bytes: &'a [u8],
        key_of: impl FnOnce(Option<&TraceId>) -> K,
    ) {
        if resource.index != self.resource.0 {
            self.resource = (resource.index, self.headers.len() as u32);
            self.headers.push(resource.header.clone());
        }
        if scope.index != self.scope.0 {
            self.scope = (scope.index, self.headers.len() as u32);
            self.headers.push(scope.header.clone());
        }
        let slot = match self.last {
            Some((Some(id), slot)) if Some(id) == trace_id => slot,
            _ => {
                let key = key_of(trace_id.as_ref());
                let (keys, lists) = (&mut self.keys, &mut self.lists);
                let slot = *self.index.entry(key.clone()).or_insert_with(|| {
                    keys.push(key);
                    lists.push(Vec::new());
                    keys.len() - 1
                });
                self.last = Some((trace_id, slot));
                slot
            }
        };
        self.lists[slot].push((self.resource.1, self.scope.1, bytes));
    }

    /// [`Self::parts`], or `whole` (the request these items were read
    /// from, whole and checked) as the one part when they all have one key.
    pub(crate) fn parts_or_whole(mut self, whole: &Bytes) -> Vec<Part<K>> {
        if self.keys.len() == 1
            && let (Some(key), Some(list)) = (self.keys.pop(), self.lists.pop())
        {
            return vec![Part {
                key,
                request: whole.clone(),
                spans: list.len(),
            }];
        }
        self.parts()
    }

    /// One complete request per key, in the order the keys first appeared.
    pub(crate) fn parts(self) -> Vec<Part<K>> {
        let mut refs: Vec<SpanRef<'_>> = Vec::new();
        let mut out = BytesMut::new();
        let mut parts = Vec::with_capacity(self.keys.len());
        for (key, list) in self.keys.into_iter().zip(&self.lists) {
            refs.clear();
            refs.extend(list.iter().map(|&(r, s, span)| SpanRef {
                resource: &self.headers[r as usize],
                scope: &self.headers[s as usize],
                span,
            }));
            write::write_request(&refs, &mut out);
            parts.push(Part {
                key,
                request: out.split().freeze(),
                spans: list.len(),
            });
        }
        parts
    }
}
