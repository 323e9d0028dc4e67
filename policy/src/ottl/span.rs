//! What an OTTL path reads, straight from the stored bytes: a span (through
//! its [`SpanView`]), the headers of its resource and scope groups, and for
//! the `spanevent` context one encoded event. Fields the view does not keep
//! (dropped counts, status message, events, scope name) are found by walking
//! the message when a condition asks for them.

use proto::view::SpanView;
use proto::wire::{Reader, Value as Wire};

/// One span in its groups, and the event being looked at, if any.
#[derive(Clone, Copy)]
pub(crate) struct SpanCtx<'a> {
    pub span: &'a SpanView<'a>,
    /// The `ResourceSpans` fields other than `scope_spans`.
    pub resource: &'a [u8],
    /// The `ScopeSpans` fields other than `spans`.
    pub scope: &'a [u8],
    /// An encoded `Span.Event`.
    pub event: Option<&'a [u8]>,
}

/// The last occurrence of field `number` in `msg` (a singular field: the
/// last one wins on the wire).
pub(crate) fn field<'a>(msg: &'a [u8], number: u32) -> Option<Wire<'a>> {
    let mut found = None;
    let mut r = Reader::new(msg);
    while let Ok(Some(f)) = r.next_field() {
        if f.number == number {
            found = Some(f.value);
        }
    }
    found
}

pub(crate) fn uint(msg: &[u8], number: u32) -> i64 {
    match field(msg, number) {
        Some(Wire::Varint(v)) => i64::from(v as u32),
        _ => 0,
    }
}

pub(crate) fn fixed64(msg: &[u8], number: u32) -> u64 {
    match field(msg, number) {
        Some(Wire::Fixed64(v)) => v,
        _ => 0,
    }
}

pub(crate) fn string(msg: &[u8], number: u32) -> &str {
    match field(msg, number) {
        Some(Wire::Len(b)) => std::str::from_utf8(b).unwrap_or(""),
        _ => "",
    }
}

/// An embedded message: the concatenation of its occurrences would be the
/// merged message; stored spans carry one, so the last is taken.
pub(crate) fn message(msg: &[u8], number: u32) -> &[u8] {
    match field(msg, number) {
        Some(Wire::Len(b)) => b,
        _ => &[],
    }
}

impl<'a> SpanCtx<'a> {
    pub fn span_bytes(&self) -> &'a [u8] {
        self.span.bytes()
    }

    /// The `Resource` message.
    pub fn resource_message(&self) -> &'a [u8] {
        message(self.resource, 1)
    }

    /// The `InstrumentationScope` message.
    pub fn scope_message(&self) -> &'a [u8] {
        message(self.scope, 1)
    }

    /// The `Status` message.
    pub fn status(&self) -> &'a [u8] {
        message(self.span_bytes(), 15)
    }
}

/// Calls `f` on each encoded event of a span, in order; stops when `f`
/// returns true.
pub(crate) fn find_event<'a>(span: &'a [u8], mut f: impl FnMut(&'a [u8]) -> bool) -> bool {
    let mut r = Reader::new(span);
    while let Ok(Some(fd)) = r.next_field() {
        if let (11, Wire::Len(b)) = (fd.number, fd.value)
            && f(b)
        {
            return true;
        }
    }
    false
}
