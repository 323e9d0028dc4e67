//! Zero-copy views over an encoded `ExportTraceServiceRequest`.
//!
//! [`RequestView`] iterates resource spans → scope spans → spans, each a
//! borrowed slice of the request. Parsing a span checks its whole structure
//! (wire types, nested attributes, events, links, UTF-8 of strings, ID
//! lengths), so what passes here is what prost would accept, and keeps the
//! scalar fields a sampler needs at ingest; attributes are read lazily, by
//! key, when a policy asks.
//!
//! The "header" of a resource (or scope) group is every field of its
//! `ResourceSpans` (`ScopeSpans`) except the repeated children: the resource
//! and the schema URL. Copied in front of a subset of the children, it makes
//! a valid group again, which is what [`crate::split`] and [`crate::write`] do.

use std::borrow::Cow;
use std::fmt;

use crate::wire::{self, FIXED32, FIXED64, Field, LEN, Reader, VARINT, Value, WireError};

/// A 16-byte trace ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// OTLP `Status.StatusCode`.
pub const STATUS_UNSET: i32 = 0;
pub const STATUS_OK: i32 = 1;
pub const STATUS_ERROR: i32 = 2;

/// An encoded `ExportTraceServiceRequest`.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    buf: &'a [u8],
}

impl<'a> RequestView<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        RequestView { buf }
    }

    pub fn resource_spans(&self) -> ResourceSpansIter<'a> {
        ResourceSpansIter {
            reader: Reader::new(self.buf),
        }
    }

    /// Calls `f` for every span with its resource and scope group, in order.
    /// Stops at the first malformed byte.
    pub fn for_each_span<F>(&self, mut f: F) -> Result<(), WireError>
    where
        F: FnMut(&Group<'a>, &Group<'a>, SpanView<'a>),
    {
        let mut scope_index = 0;
        for (resource_index, rs) in self.resource_spans().enumerate() {
            let rs = rs?;
            let scopes = rs.scope_spans();
            let resource = Group {
                index: resource_index,
                header: rs.header,
            };
            for ss in scopes {
                let ss = ss?;
                let spans = ss.spans();
                let scope = Group {
                    index: scope_index,
                    header: ss.header,
                };
                scope_index += 1;
                for span in spans {
                    f(&resource, &scope, span?);
                }
            }
        }
        Ok(())
    }

    /// Checks the whole request and counts its spans.
    pub fn validate(&self) -> Result<usize, WireError> {
        let mut n = 0;
        self.for_each_span(|_, _, _| n += 1)?;
        Ok(n)
    }
}

/// The header of a resource or scope group, with its index in the request.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub index: usize,
    pub header: Cow<'a, [u8]>,
}

pub struct ResourceSpansIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for ResourceSpansIter<'a> {
    type Item = Result<ResourceSpansView<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let field = match self.reader.next_field() {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if field.number == 1 {
                return Some(
                    wire::bytes(&field, "ExportTraceServiceRequest")
                        .and_then(|b| ResourceSpansView::parse(b, field.value_offset)),
                );
            }
            // Unknown request-level fields are skipped, as prost would.
        }
    }
}

/// Builds a group header from the fields of a message other than its
/// repeated children. Borrowed when they are contiguous, copied otherwise
/// (prost writes `schema_url` after the children).
pub(crate) fn header<'a>(buf: &'a [u8], fields: &[std::ops::Range<usize>]) -> Cow<'a, [u8]> {
    match fields {
        [] => Cow::Borrowed(&[]),
        [only] => Cow::Borrowed(&buf[only.clone()]),
        [first, .., last] if fields.windows(2).all(|w| w[0].end == w[1].start) => {
            Cow::Borrowed(&buf[first.start..last.end])
        }
        many => {
            let mut out = Vec::with_capacity(many.iter().map(|r| r.len()).sum());
            for r in many {
                out.extend_from_slice(&buf[r.clone()]);
            }
            Cow::Owned(out)
        }
    }
}

/// One `ResourceSpans`.
pub struct ResourceSpansView<'a> {
    buf: &'a [u8],
    base: usize,
    /// Every field but `scope_spans`: the resource and the schema URL.
    pub header: Cow<'a, [u8]>,
}

impl<'a> ResourceSpansView<'a> {
    fn parse(buf: &'a [u8], base: usize) -> Result<Self, WireError> {
        let mut reader = Reader::at(buf, base);
        let mut header_fields = Vec::new();
        while let Some(field) = reader.next_field()? {
            match field.number {
                1 => validate_resource(wire::bytes(&field, "ResourceSpans")?, field.value_offset)?,
                2 => {
                    wire::expect(&field, "ResourceSpans", LEN)?;
                    continue;
                }
                3 => {
                    wire::check_string(&field, "ResourceSpans")?;
                }
                _ => {}
            }
            push_range(&mut header_fields, field.range());
        }
        Ok(ResourceSpansView {
            buf,
            base,
            header: header(buf, &header_fields),
        })
    }

    pub fn scope_spans(&self) -> ScopeSpansIter<'a> {
        ScopeSpansIter {
            reader: Reader::at(self.buf, self.base),
        }
    }

    /// The resource's attributes.
    pub fn resource_attributes(&self) -> Attributes<'_> {
        resource_attributes(&self.header)
    }
}

/// Appends a field's range, merging it with the previous one when adjacent.
pub(crate) fn push_range(ranges: &mut Vec<std::ops::Range<usize>>, range: std::ops::Range<usize>) {
    if let Some(last) = ranges.last_mut()
        && last.end == range.start
    {
        last.end = range.end;
        return;
    }
    ranges.push(range);
}

pub struct ScopeSpansIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for ScopeSpansIter<'a> {
    type Item = Result<ScopeSpansView<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let field = match self.reader.next_field() {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if field.number == 2 {
                // The wire type was checked when the ResourceSpans was parsed.
                return Some(
                    wire::bytes(&field, "ResourceSpans")
                        .and_then(|b| ScopeSpansView::parse(b, field.value_offset)),
                );
            }
        }
    }
}

/// One `ScopeSpans`.
pub struct ScopeSpansView<'a> {
    buf: &'a [u8],
    base: usize,
    /// Every field but `spans`: the scope and the schema URL.
    pub header: Cow<'a, [u8]>,
}

impl<'a> ScopeSpansView<'a> {
    fn parse(buf: &'a [u8], base: usize) -> Result<Self, WireError> {
        let mut reader = Reader::at(buf, base);
        let mut header_fields = Vec::new();
        while let Some(field) = reader.next_field()? {
            match field.number {
                1 => validate_scope(wire::bytes(&field, "ScopeSpans")?, field.value_offset)?,
                2 => {
                    wire::expect(&field, "ScopeSpans", LEN)?;
                    continue;
                }
                3 => {
                    wire::check_string(&field, "ScopeSpans")?;
                }
                _ => {}
            }
            push_range(&mut header_fields, field.range());
        }
        Ok(ScopeSpansView {
            buf,
            base,
            header: header(buf, &header_fields),
        })
    }

    pub fn spans(&self) -> SpanIter<'a> {
        SpanIter {
            reader: Reader::at(self.buf, self.base),
        }
    }
}

pub struct SpanIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for SpanIter<'a> {
    type Item = Result<SpanView<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let field = match self.reader.next_field() {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if field.number == 2 {
                return Some(
                    wire::bytes(&field, "ScopeSpans")
                        .and_then(|b| SpanView::parse(b, field.value_offset)),
                );
            }
        }
    }
}

/// One span: its encoded bytes and the scalar fields, read in one checked pass.
#[derive(Debug, Clone, Copy)]
pub struct SpanView<'a> {
    bytes: &'a [u8],
    offset: usize,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub kind: i32,
    pub status_code: i32,
    pub flags: u32,
    // Checked as UTF-8 at parse; turned into `&str` only when asked for.
    name: &'a [u8],
    trace_state: &'a [u8],
}

impl<'a> SpanView<'a> {
    /// Parses and checks the encoded `Span` message in `bytes`, which starts at
    /// absolute offset `offset` of the request (for error messages).
    pub fn parse(bytes: &'a [u8], offset: usize) -> Result<Self, WireError> {
        const M: &str = "Span";
        let mut reader = Reader::at(bytes, offset);
        let mut trace_id = None;
        let mut span_id = None;
        let mut view = SpanView {
            bytes,
            offset,
            trace_id: TraceId::default(),
            span_id: SpanId::default(),
            parent_span_id: None,
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            kind: 0,
            status_code: STATUS_UNSET,
            flags: 0,
            name: &[],
            trace_state: &[],
        };
        while let Some(field) = reader.next_field()? {
            match field.number {
                1 => {
                    let b = wire::bytes(&field, M)?;
                    trace_id = Some(TraceId(b.try_into().map_err(|_| {
                        WireError::BadTraceId {
                            offset,
                            len: b.len(),
                        }
                    })?));
                }
                2 => {
                    let b = wire::bytes(&field, M)?;
                    span_id = Some(SpanId(b.try_into().map_err(|_| WireError::BadSpanId {
                        offset,
                        len: b.len(),
                    })?));
                }
                3 => {
                    wire::check_string(&field, M)?;
                    view.trace_state = wire::bytes(&field, M)?;
                }
                4 => {
                    let b = wire::bytes(&field, M)?;
                    view.parent_span_id = match b.len() {
                        0 => None,
                        8 => Some(SpanId(b.try_into().unwrap_or_default())),
                        len => return Err(WireError::BadParentSpanId { offset, len }),
                    };
                }
                5 => {
                    wire::check_string(&field, M)?;
                    view.name = wire::bytes(&field, M)?;
                }
                6 => view.kind = varint(&field, M)? as i32,
                7 => view.start_time_unix_nano = fixed64(&field, M)?,
                8 => view.end_time_unix_nano = fixed64(&field, M)?,
                9 => validate_key_value(wire::bytes(&field, M)?, field.value_offset, 1)?,
                10 | 12 | 14 => {
                    varint(&field, M)?;
                }
                11 => validate_event(wire::bytes(&field, M)?, field.value_offset)?,
                13 => validate_link(wire::bytes(&field, M)?, field.value_offset)?,
                15 => {
                    // A repeated singular message merges: a code only overrides when present.
                    if let Some(code) =
                        validate_status(wire::bytes(&field, M)?, field.value_offset)?
                    {
                        view.status_code = code;
                    }
                }
                16 => {
                    wire::expect(&field, M, FIXED32)?;
                    if let Value::Fixed32(v) = field.value {
                        view.flags = v;
                    }
                }
                _ => {}
            }
        }
        view.trace_id = trace_id.ok_or(WireError::BadTraceId { offset, len: 0 })?;
        view.span_id = span_id.ok_or(WireError::BadSpanId { offset, len: 0 })?;
        Ok(view)
    }

    /// The encoded `Span` message, without its tag and length.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Absolute offset of the span's first byte in the request.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn name(&self) -> &'a str {
        std::str::from_utf8(self.name).unwrap_or_default()
    }

    /// The W3C tracestate header value.
    pub fn trace_state(&self) -> &'a str {
        std::str::from_utf8(self.trace_state).unwrap_or_default()
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }

    pub fn is_error(&self) -> bool {
        self.status_code == STATUS_ERROR
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }

    /// The span's attributes, read lazily.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.bytes, 9)
    }

    /// The first attribute named `key`, if any.
    pub fn attribute(&self, key: &str) -> Option<AnyValue<'a>> {
        self.attributes().get(key)
    }
}

/// The attributes of a resource group header (the `resource` field's message).
pub fn resource_attributes(header: &[u8]) -> Attributes<'_> {
    let mut reader = Reader::new(header);
    while let Ok(Some(field)) = reader.next_field() {
        if field.number == 1
            && let Value::Len(resource) = field.value
        {
            return Attributes::new(resource, 1);
        }
    }
    Attributes::new(&[], 1)
}

/// An attribute value, borrowed from the encoded span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValue<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// An encoded `ArrayValue`.
    Array(&'a [u8]),
    /// An encoded `KeyValueList`.
    KvList(&'a [u8]),
    Empty,
}

impl<'a> AnyValue<'a> {
    /// Reads an `AnyValue` message that has already been validated. The last
    /// oneof field on the wire wins, as in prost.
    pub fn read(bytes: &'a [u8]) -> Self {
        let mut value = AnyValue::Empty;
        let mut reader = Reader::new(bytes);
        while let Ok(Some(field)) = reader.next_field() {
            value = match (field.number, field.value) {
                (1, Value::Len(b)) => AnyValue::String(std::str::from_utf8(b).unwrap_or("")),
                (2, Value::Varint(v)) => AnyValue::Bool(v != 0),
                (3, Value::Varint(v)) => AnyValue::Int(v as i64),
                (4, Value::Fixed64(v)) => AnyValue::Double(f64::from_bits(v)),
                (5, Value::Len(b)) => AnyValue::Array(b),
                (6, Value::Len(b)) => AnyValue::KvList(b),
                (7, Value::Len(b)) => AnyValue::Bytes(b),
                _ => continue,
            };
        }
        value
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AnyValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Lazy iterator over the `KeyValue`s in one repeated field of a message.
#[derive(Clone)]
pub struct Attributes<'a> {
    reader: Reader<'a>,
    field: u32,
}

impl<'a> Attributes<'a> {
    /// The `KeyValue`s in field `field` of the validated message `message`
    /// (a span's attributes are field 9, an event's 3, a scope's 3, a
    /// `KeyValueList`'s 1).
    pub fn new(message: &'a [u8], field: u32) -> Self {
        Attributes {
            reader: Reader::new(message),
            field,
        }
    }

    /// The first attribute named `key`. Keys are compared as bytes, and only
    /// the matching value is read: policies look up a few keys among many.
    pub fn get(mut self, key: &str) -> Option<AnyValue<'a>> {
        let want = key.as_bytes();
        while let Ok(Some(field)) = self.reader.next_field() {
            if field.number != self.field {
                continue;
            }
            let Value::Len(kv) = field.value else {
                continue;
            };
            let (mut found, mut value) = (false, None);
            let mut r = Reader::new(kv);
            while let Ok(Some(f)) = r.next_field() {
                match (f.number, f.value) {
                    (1, Value::Len(b)) => found = b == want,
                    (2, Value::Len(b)) => value = Some(b),
                    _ => {}
                }
            }
            if found {
                return Some(value.map_or(AnyValue::Empty, AnyValue::read));
            }
        }
        None
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a str, AnyValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        // The bytes were validated at ingest; a malformed field here ends the walk.
        while let Ok(Some(field)) = self.reader.next_field() {
            if field.number != self.field {
                continue;
            }
            let Value::Len(kv) = field.value else {
                continue;
            };
            let mut key = "";
            let mut value = AnyValue::Empty;
            let mut r = Reader::new(kv);
            while let Ok(Some(f)) = r.next_field() {
                match (f.number, f.value) {
                    (1, Value::Len(b)) => key = std::str::from_utf8(b).unwrap_or(""),
                    (2, Value::Len(b)) => value = AnyValue::read(b),
                    _ => {}
                }
            }
            return Some((key, value));
        }
        None
    }
}

pub(crate) fn varint(field: &Field<'_>, message: &'static str) -> Result<u64, WireError> {
    wire::expect(field, message, VARINT)?;
    Ok(match field.value {
        Value::Varint(v) => v,
        _ => 0,
    })
}

pub(crate) fn fixed64(field: &Field<'_>, message: &'static str) -> Result<u64, WireError> {
    wire::expect(field, message, FIXED64)?;
    Ok(match field.value {
        Value::Fixed64(v) => v,
        _ => 0,
    })
}

pub(crate) fn validate_resource(buf: &[u8], base: usize) -> Result<(), WireError> {
    const M: &str = "Resource";
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => validate_key_value(wire::bytes(&field, M)?, field.value_offset, 1)?,
            2 => {
                varint(&field, M)?;
            }
            3 => validate_entity_ref(wire::bytes(&field, M)?, field.value_offset)?,
            _ => {}
        }
    }
    Ok(())
}

fn validate_entity_ref(buf: &[u8], base: usize) -> Result<(), WireError> {
    const M: &str = "EntityRef";
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        if (1..=4).contains(&field.number) {
            wire::check_string(&field, M)?;
        }
    }
    Ok(())
}

pub(crate) fn validate_scope(buf: &[u8], base: usize) -> Result<(), WireError> {
    const M: &str = "InstrumentationScope";
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 | 2 => {
                wire::check_string(&field, M)?;
            }
            3 => validate_key_value(wire::bytes(&field, M)?, field.value_offset, 1)?,
            4 => {
                varint(&field, M)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_event(buf: &[u8], base: usize) -> Result<(), WireError> {
    const M: &str = "Span.Event";
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => {
                fixed64(&field, M)?;
            }
            2 => {
                wire::check_string(&field, M)?;
            }
            3 => validate_key_value(wire::bytes(&field, M)?, field.value_offset, 1)?,
            4 => {
                varint(&field, M)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_link(buf: &[u8], base: usize) -> Result<(), WireError> {
    const M: &str = "Span.Link";
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 | 2 => {
                wire::bytes(&field, M)?;
            }
            3 => {
                wire::check_string(&field, M)?;
            }
            4 => validate_key_value(wire::bytes(&field, M)?, field.value_offset, 1)?,
            5 => {
                varint(&field, M)?;
            }
            6 => wire::expect(&field, M, FIXED32)?,
            _ => {}
        }
    }
    Ok(())
}

/// Returns the status code, if the message has one.
fn validate_status(buf: &[u8], base: usize) -> Result<Option<i32>, WireError> {
    const M: &str = "Status";
    let mut code = None;
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            2 => {
                wire::check_string(&field, M)?;
            }
            3 => code = Some(varint(&field, M)? as i32),
            _ => {}
        }
    }
    Ok(code)
}

/// The usual shape of an attribute: a short ASCII key and a short scalar
/// value, `0a klen key 12 vlen (0a slen str | 10 b | 18 int | 21 f64)`.
/// Recognised directly from the bytes: attributes dominate span size, and
/// this is a third of the validation time otherwise. `false` means "not
/// this shape", and the general walk decides.
#[inline]
fn is_plain_attribute(buf: &[u8]) -> bool {
    let [0x0a, klen, rest @ ..] = buf else {
        return false;
    };
    let klen = usize::from(*klen);
    if klen >= 0x80 || rest.len() < klen + 2 || !rest[..klen].is_ascii() {
        return false;
    }
    let [0x12, vlen, value @ ..] = &rest[klen..] else {
        return false;
    };
    if usize::from(*vlen) != value.len() {
        return false;
    }
    match value {
        [0x0a, slen, s @ ..] => usize::from(*slen) == s.len() && s.is_ascii(),
        // bool or int: a varint that ends exactly at the end.
        [0x10 | 0x18, v @ ..] => {
            !v.is_empty()
                && v.len() <= 10
                && v[..v.len() - 1].iter().all(|b| b & 0x80 != 0)
                && v[v.len() - 1] < 0x80
        }
        [0x21, d @ ..] => d.len() == 8,
        _ => false,
    }
}

pub(crate) fn validate_key_value(buf: &[u8], base: usize, depth: usize) -> Result<(), WireError> {
    if is_plain_attribute(buf) {
        return Ok(());
    }
    validate_key_value_walk(buf, base, depth)
}

fn validate_key_value_walk(buf: &[u8], base: usize, depth: usize) -> Result<(), WireError> {
    const M: &str = "KeyValue";
    if depth > wire::MAX_DEPTH {
        return Err(WireError::TooDeep { offset: base });
    }
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => {
                wire::check_string(&field, M)?;
            }
            2 => {
                let value = wire::bytes(&field, M)?;
                // Most values are one scalar field: check it here without a call.
                let mut r = Reader::at(value, field.value_offset);
                match r.next_field()? {
                    Some(f) if r.is_empty() => validate_any_value_field(&f, depth + 1)?,
                    _ => validate_any_value(value, field.value_offset, depth + 1)?,
                }
            }
            3 => {
                varint(&field, M)?;
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn validate_any_value(buf: &[u8], base: usize, depth: usize) -> Result<(), WireError> {
    if depth > wire::MAX_DEPTH {
        return Err(WireError::TooDeep { offset: base });
    }
    let mut reader = Reader::at(buf, base);
    while let Some(field) = reader.next_field()? {
        validate_any_value_field(&field, depth)?;
    }
    Ok(())
}

#[inline]
fn validate_any_value_field(field: &Field<'_>, depth: usize) -> Result<(), WireError> {
    const M: &str = "AnyValue";
    match field.number {
        1 => wire::check_string(field, M)?,
        2 | 3 => {
            varint(field, M)?;
        }
        4 => {
            fixed64(field, M)?;
        }
        5 => {
            if depth > wire::MAX_DEPTH {
                return Err(WireError::TooDeep {
                    offset: field.value_offset,
                });
            }
            // ArrayValue { repeated AnyValue values = 1; }
            let mut r = Reader::at(wire::bytes(field, M)?, field.value_offset);
            while let Some(f) = r.next_field()? {
                if f.number == 1 {
                    validate_any_value(wire::bytes(&f, "ArrayValue")?, f.value_offset, depth + 1)?;
                }
            }
        }
        6 => {
            if depth > wire::MAX_DEPTH {
                return Err(WireError::TooDeep {
                    offset: field.value_offset,
                });
            }
            // KeyValueList { repeated KeyValue values = 1; }
            let mut r = Reader::at(wire::bytes(field, M)?, field.value_offset);
            while let Some(f) = r.next_field()? {
                if f.number == 1 {
                    validate_key_value(
                        wire::bytes(&f, "KeyValueList")?,
                        f.value_offset,
                        depth + 1,
                    )?;
                }
            }
        }
        7 => {
            wire::bytes(field, M)?;
        }
        // string_value_strindex (int32), used by the profiles signal only.
        8 => {
            varint(field, M)?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut any = Vec::new();
        any.extend_from_slice(value);
        let mut out = vec![0x0a, key.len() as u8];
        out.extend_from_slice(key);
        out.extend([0x12, any.len() as u8]);
        out.extend(any);
        out
    }

    #[test]
    fn plain_attributes_are_recognised() {
        assert!(is_plain_attribute(&kv(
            b"http.method",
            &[0x0a, 3, b'G', b'E', b'T']
        )));
        assert!(is_plain_attribute(&kv(b"n", &[0x18, 0x96, 0x01])));
        assert!(is_plain_attribute(&kv(b"b", &[0x10, 1])));
        assert!(is_plain_attribute(&kv(
            b"d",
            &[0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]
        )));
    }

    #[test]
    fn non_ascii_or_odd_shapes_take_the_full_walk() {
        // Valid UTF-8 but not ASCII: the walk accepts it.
        let accented = kv(b"k", &[0x0a, 2, 0xc3, 0xa9]);
        assert!(!is_plain_attribute(&accented));
        assert!(validate_key_value(&accented, 0, 1).is_ok());
        // Invalid UTF-8 in the value is refused by the walk.
        let bad = kv(b"k", &[0x0a, 1, 0xff]);
        assert!(matches!(
            validate_key_value(&bad, 0, 1),
            Err(WireError::InvalidUtf8 { .. })
        ));
        // A varint cut short is not plain, and refused.
        let cut = kv(b"k", &[0x18, 0x96]);
        assert!(!is_plain_attribute(&cut));
        assert!(validate_key_value(&cut, 0, 1).is_err());
    }

    #[test]
    fn get_finds_the_first_attribute_by_key_as_the_iterator_does() {
        let mut span = vec![0x0a, 16];
        span.extend([1; 16]);
        span.extend([0x12, 8]);
        span.extend([2; 8]);
        for (k, v) in [
            (&b"a"[..], &[0x18u8, 1][..]),
            (b"b", &[0x0a, 1, b'x']),
            (b"a", &[0x18, 2]),
            (b"e", &[]),
        ] {
            let attr = kv(k, v);
            span.push(0x4a);
            span.push(attr.len() as u8);
            span.extend(attr);
        }
        let view = SpanView::parse(&span, 0).unwrap();
        for key in ["a", "b", "e", "missing", ""] {
            let by_iter = view.attributes().find(|(k, _)| *k == key).map(|(_, v)| v);
            assert_eq!(view.attribute(key), by_iter, "{key}");
        }
        assert_eq!(view.attribute("a"), Some(AnyValue::Int(1)));
        assert_eq!(view.attribute("e"), Some(AnyValue::Empty));
    }

    #[test]
    fn any_value_strindex_with_the_wrong_wire_type_is_refused() {
        // Found by the wire_split fuzz target: AnyValue field 8 is an int32
        // (string_value_strindex); as a length-delimited field prost refuses it.
        let bad = kv(b"service.name", &[0x42, 0x01, b'x']);
        assert!(matches!(
            validate_key_value(&bad, 0, 1),
            Err(WireError::WrongWireType {
                message: "AnyValue",
                field: 8,
                ..
            })
        ));
        assert!(validate_key_value(&kv(b"k", &[0x40, 0x05]), 0, 1).is_ok());
    }

    proptest! {
        /// The shortcut never accepts what the general walk would refuse.
        #[test]
        fn plain_attribute_shortcut_agrees_with_the_walk(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            if is_plain_attribute(&bytes) {
                prop_assert!(validate_key_value_walk(&bytes, 0, 1).is_ok(), "{:?}", bytes);
            }
        }

        #[test]
        fn plain_attribute_shortcut_agrees_on_near_valid_shapes(
            key in prop::collection::vec(any::<u8>(), 0..6),
            tag in prop::sample::select(vec![0x0au8, 0x10, 0x18, 0x21, 0x2a]),
            value in prop::collection::vec(any::<u8>(), 0..10),
        ) {
            let mut any = vec![tag];
            if tag == 0x0a { any.push(value.len() as u8); }
            any.extend(&value);
            let bytes = kv(&key, &any);
            if is_plain_attribute(&bytes) {
                prop_assert!(validate_key_value_walk(&bytes, 0, 1).is_ok(), "{:?}", bytes);
            }
        }
    }
}
