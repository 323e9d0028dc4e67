//! Annotating a kept span without re-encoding it.
//!
//! Protobuf reads repeated fields by appending and singular fields by
//! keeping the last occurrence, so a span is annotated by appending fields
//! to its bytes: one more `attributes` (field 9) entry adds
//! `tailsampling.policy`, and one more `trace_state` (field 3) replaces the
//! tracestate. The span's own bytes are copied once, unchanged.

use std::borrow::Cow;

use proto::view::{AnyValue, SpanView};
use proto::wire::{len_field_len, put_len_header};

use crate::probabilistic::Threshold;
use crate::tracestate;
use crate::{CACHED_DECISION_ATTRIBUTE, COMPOSITE_POLICY_ATTRIBUTE, POLICY_ATTRIBUTE};

/// `Span.trace_state` and `Span.attributes` field numbers (trace.proto).
const TRACE_STATE: u32 = 3;
const ATTRIBUTES: u32 = 9;

/// What to write into a kept span, as the Collector's `recordpolicy` and
/// `usetracestate` gates do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Annotations<'a> {
    /// `tailsampling.policy`: the policy that kept the trace.
    pub policy: Option<&'a str>,
    /// `tailsampling.composite_policy`: the composite's sub-policy that kept it.
    pub composite_policy: Option<&'a str>,
    /// `tailsampling.cached_decision: true`: the span followed a decision
    /// taken before it arrived.
    pub cached_decision: bool,
    /// `ot=th:…` in the tracestate, 0 included.
    pub threshold: Option<Threshold>,
}

/// Returns `span` (an encoded `Span` message, as stored) with:
/// - `policy`, if given, as the string attribute `tailsampling.policy`
///   (skipped if the span already carries that exact attribute);
/// - `threshold`, if given and below 100%, merged into the W3C tracestate's
///   `ot` member as `th:<hex>`, unless the tracestate already holds a more
///   restrictive threshold or is not valid (then it is left as it is).
///
/// Borrows `span` when nothing changes; a span that does not parse is
/// returned unchanged.
pub fn annotate_span<'a>(
    span: &'a [u8],
    policy: Option<&str>,
    threshold: Option<Threshold>,
) -> Cow<'a, [u8]> {
    annotate_span_with(
        span,
        &Annotations {
            policy,
            threshold: threshold.filter(|t| !t.is_always()),
            ..Annotations::default()
        },
    )
}

/// Returns `span` with `annotations` appended: each attribute unless the
/// span already carries it with that value, the threshold (0 included)
/// unless the tracestate holds a more restrictive one or is not valid.
pub fn annotate_span_with<'a>(span: &'a [u8], annotations: &Annotations<'_>) -> Cow<'a, [u8]> {
    let Ok(view) = SpanView::parse(span, 0) else {
        return Cow::Borrowed(span);
    };
    let mut extra = Vec::new();
    for (key, value) in [
        (POLICY_ATTRIBUTE, annotations.policy),
        (COMPOSITE_POLICY_ATTRIBUTE, annotations.composite_policy),
    ] {
        if let Some(name) = value
            && view.attribute(key) != Some(AnyValue::String(name))
        {
            // KeyValue { key = 1; value = 2: AnyValue { string_value = 1 } }
            let any_value_len = len_field_len(name.len());
            let key_value_len = len_field_len(key.len()) + len_field_len(any_value_len);
            put_len_header(&mut extra, ATTRIBUTES, key_value_len);
            put_len_header(&mut extra, 1, key.len());
            extra.extend_from_slice(key.as_bytes());
            put_len_header(&mut extra, 2, any_value_len);
            put_len_header(&mut extra, 1, name.len());
            extra.extend_from_slice(name.as_bytes());
        }
    }
    if annotations.cached_decision
        && view.attribute(CACHED_DECISION_ATTRIBUTE) != Some(AnyValue::Bool(true))
    {
        // AnyValue { bool_value = 2 (varint) }: 2 bytes.
        let key = CACHED_DECISION_ATTRIBUTE;
        let key_value_len = len_field_len(key.len()) + len_field_len(2);
        put_len_header(&mut extra, ATTRIBUTES, key_value_len);
        put_len_header(&mut extra, 1, key.len());
        extra.extend_from_slice(key.as_bytes());
        put_len_header(&mut extra, 2, 2);
        extra.extend_from_slice(&[2 << 3, 1]);
    }
    if let Some(th) = annotations.threshold
        && let Some(new_state) = tracestate::with_threshold(view.trace_state(), th)
    {
        put_len_header(&mut extra, TRACE_STATE, new_state.len());
        extra.extend_from_slice(new_state.as_bytes());
    }
    if extra.is_empty() {
        return Cow::Borrowed(span);
    }
    let mut out = Vec::with_capacity(span.len() + extra.len());
    out.extend_from_slice(span);
    out.extend_from_slice(&extra);
    Cow::Owned(out)
}
