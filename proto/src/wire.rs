//! The protobuf wire format, read without decoding: varints, tags and
//! length-delimited fields over a borrowed buffer.
//!
//! Everything here works on untrusted bytes: every read is bounds-checked and
//! a malformed buffer is a [`WireError`] carrying the absolute byte offset,
//! never a panic.

use std::ops::Range;

/// Nested messages deeper than this are refused. OTLP nests `AnyValue`s
/// (arrays, key-value lists) without a bound; prost's limit is 100, ours is
/// lower because nothing real comes close and the walk recurses.
pub const MAX_DEPTH: usize = 64;

/// A malformed OTLP buffer. Offsets are from the start of the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated varint at byte {offset}")]
    TruncatedVarint { offset: usize },
    #[error("varint longer than 10 bytes or over 64 bits at byte {offset}")]
    VarintTooLong { offset: usize },
    #[error("truncated {bits}-bit fixed field at byte {offset}")]
    TruncatedFixed { offset: usize, bits: u8 },
    #[error(
        "field {field} at byte {offset}: length {len} runs past the end of its message ({remaining} bytes left)"
    )]
    LengthPastEnd {
        offset: usize,
        field: u32,
        len: u64,
        remaining: usize,
    },
    #[error("unsupported wire type {wire_type} at byte {offset}")]
    BadWireType { offset: usize, wire_type: u8 },
    #[error("field number 0 at byte {offset}")]
    FieldZero { offset: usize },
    #[error("{message}.{field} at byte {offset}: wire type {found}, expected {expected}")]
    WrongWireType {
        offset: usize,
        message: &'static str,
        field: u32,
        found: u8,
        expected: u8,
    },
    #[error("{message}.{field} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        offset: usize,
        message: &'static str,
        field: u32,
    },
    #[error("span at byte {offset}: trace_id is {len} bytes, expected 16")]
    BadTraceId { offset: usize, len: usize },
    #[error("span at byte {offset}: span_id is {len} bytes, expected 8")]
    BadSpanId { offset: usize, len: usize },
    #[error("span at byte {offset}: parent_span_id is {len} bytes, expected 0 or 8")]
    BadParentSpanId { offset: usize, len: usize },
    #[error("message at byte {offset} nested deeper than {MAX_DEPTH}")]
    TooDeep { offset: usize },
    #[error("log record at byte {offset}: trace_id is {len} bytes, expected 0 or 16")]
    BadLogTraceId { offset: usize, len: usize },
    #[error("log record at byte {offset}: span_id is {len} bytes, expected 0 or 8")]
    BadLogSpanId { offset: usize, len: usize },
}

impl WireError {
    /// Byte offset of the problem from the start of the request.
    pub fn offset(&self) -> usize {
        match *self {
            WireError::TruncatedVarint { offset }
            | WireError::VarintTooLong { offset }
            | WireError::TruncatedFixed { offset, .. }
            | WireError::LengthPastEnd { offset, .. }
            | WireError::BadWireType { offset, .. }
            | WireError::FieldZero { offset }
            | WireError::WrongWireType { offset, .. }
            | WireError::InvalidUtf8 { offset, .. }
            | WireError::BadTraceId { offset, .. }
            | WireError::BadSpanId { offset, .. }
            | WireError::BadParentSpanId { offset, .. }
            | WireError::TooDeep { offset }
            | WireError::BadLogTraceId { offset, .. }
            | WireError::BadLogSpanId { offset, .. } => offset,
        }
    }
}

pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

/// One field's value, borrowed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl Value<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => VARINT,
            Value::Fixed64(_) => FIXED64,
            Value::Len(_) => LEN,
            Value::Fixed32(_) => FIXED32,
        }
    }
}

/// A field as it stands in the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    /// Byte range of the whole field, tag included, within the reader's buffer.
    pub start: usize,
    pub end: usize,
    /// Absolute offset of the value (for a `Len` field, of its first content byte).
    pub value_offset: usize,
}

impl Field<'_> {
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// Walks the fields of one message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the request, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader::at(buf, 0)
    }

    /// A reader over `buf`, which starts at absolute offset `base` of the request.
    pub fn at(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[cfg(test)]
    fn varint(&mut self) -> Result<u64, WireError> {
        let (value, next) = varint_at(self.buf, self.pos, self.base)?;
        self.pos = next;
        Ok(value)
    }

    /// The next field, or `None` at the end of the message.
    #[inline(always)]
    pub fn next_field(&mut self) -> Result<Option<Field<'a>>, WireError> {
        let buf = self.buf;
        let start = self.pos;
        if start >= buf.len() {
            return Ok(None);
        }
        let (tag, value_pos) = varint_at(buf, start, self.base)?;
        let wire_type = (tag & 7) as u8;
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(bad_tag(self.base + start, number, wire_type));
        }
        let number = number as u32;
        let (value, end) = match wire_type {
            LEN => {
                let (len, content_pos) = varint_at(buf, value_pos, self.base)?;
                let remaining = buf.len() - content_pos;
                if len > remaining as u64 {
                    return Err(length_past_end(self.base + start, number, len, remaining));
                }
                let end = content_pos + len as usize;
                self.pos = end;
                return Ok(Some(Field {
                    number,
                    value: Value::Len(&buf[content_pos..end]),
                    start,
                    end,
                    value_offset: self.base + content_pos,
                }));
            }
            VARINT => {
                let (v, end) = varint_at(buf, value_pos, self.base)?;
                (Value::Varint(v), end)
            }
            FIXED64 => match buf.get(value_pos..value_pos + 8) {
                Some(b) => {
                    let mut le = [0u8; 8];
                    le.copy_from_slice(b);
                    (Value::Fixed64(u64::from_le_bytes(le)), value_pos + 8)
                }
                None => return Err(truncated_fixed(self.base + value_pos, 64)),
            },
            FIXED32 => match buf.get(value_pos..value_pos + 4) {
                Some(b) => {
                    let mut le = [0u8; 4];
                    le.copy_from_slice(b);
                    (Value::Fixed32(u32::from_le_bytes(le)), value_pos + 4)
                }
                None => return Err(truncated_fixed(self.base + value_pos, 32)),
            },
            other => return Err(bad_tag(self.base + start, 1, other)),
        };
        self.pos = end;
        Ok(Some(Field {
            number,
            value,
            start,
            end,
            value_offset: self.base + value_pos,
        }))
    }
}

/// Reads a varint at `pos`: its value and the position after it.
#[inline(always)]
fn varint_at(buf: &[u8], pos: usize, base: usize) -> Result<(u64, usize), WireError> {
    // Fast path: one byte (tags, small lengths, enums) or two.
    match buf.get(pos) {
        Some(&b) if b < 0x80 => return Ok((u64::from(b), pos + 1)),
        Some(&b0) => {
            if let Some(&b1) = buf.get(pos + 1)
                && b1 < 0x80
            {
                return Ok((u64::from(b0 & 0x7f) | (u64::from(b1) << 7), pos + 2));
            }
        }
        None => return Err(truncated_varint(base + pos)),
    }
    varint_slow(buf, pos, base)
}

#[inline(never)]
fn varint_slow(buf: &[u8], pos: usize, base: usize) -> Result<(u64, usize), WireError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(pos + i) else {
            return Err(truncated_varint(base + pos));
        };
        // The tenth byte holds bit 63 only: more would overflow 64 bits,
        // which prost refuses as an invalid varint, so we do too.
        if i == 9 && b > 1 {
            return Err(WireError::VarintTooLong { offset: base + pos });
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((value, pos + i + 1));
        }
    }
    Err(WireError::VarintTooLong { offset: base + pos })
}

// Error construction stays out of line so the hot loop stays small.
#[cold]
fn truncated_varint(offset: usize) -> WireError {
    WireError::TruncatedVarint { offset }
}

#[cold]
fn truncated_fixed(offset: usize, bits: u8) -> WireError {
    WireError::TruncatedFixed { offset, bits }
}

#[cold]
fn length_past_end(offset: usize, field: u32, len: u64, remaining: usize) -> WireError {
    WireError::LengthPastEnd {
        offset,
        field,
        len,
        remaining,
    }
}

#[cold]
fn bad_tag(offset: usize, number: u64, wire_type: u8) -> WireError {
    if number == 0 {
        WireError::FieldZero { offset }
    } else {
        WireError::BadWireType { offset, wire_type }
    }
}

/// Number of bytes `value` takes as a varint.
#[inline]
pub fn varint_len(value: u64) -> usize {
    // 1 + floor(bits / 7), with 0 taking one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encoded length of a length-delimited field with a one-byte tag (field < 16)
/// holding `content_len` bytes.
#[inline]
pub fn len_field_len(content_len: usize) -> usize {
    1 + varint_len(content_len as u64) + content_len
}

/// Appends the tag and length of a length-delimited field (field < 16).
#[inline]
pub fn put_len_header(out: &mut Vec<u8>, field: u32, content_len: usize) {
    debug_assert!(field < 16);
    out.push(((field << 3) | u32::from(LEN)) as u8);
    put_varint(out, content_len as u64);
}

/// Checks that a known field has the wire type its message declares.
#[inline]
pub fn expect(field: &Field<'_>, message: &'static str, expected: u8) -> Result<(), WireError> {
    let found = field.value.wire_type();
    if found == expected {
        Ok(())
    } else {
        Err(WireError::WrongWireType {
            offset: field.value_offset,
            message,
            field: field.number,
            found,
            expected,
        })
    }
}

/// The content of a `string` field, checked as UTF-8 (as prost does).
#[inline]
pub fn string<'a>(field: &Field<'a>, message: &'static str) -> Result<&'a str, WireError> {
    let bytes = bytes(field, message)?;
    // simdutf8: 2-3x std's check on the short strings OTLP is made of.
    simdutf8::basic::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 {
        offset: field.value_offset,
        message,
        field: field.number,
    })
}

/// Checks a `string` field is UTF-8 without producing the `&str`: the
/// validation walk only needs the verdict, and an ASCII scan is several
/// times cheaper than `from_utf8` on the short strings OTLP is made of.
#[inline]
pub fn check_string(field: &Field<'_>, message: &'static str) -> Result<(), WireError> {
    let bytes = bytes(field, message)?;
    if bytes.is_ascii() || simdutf8::basic::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(WireError::InvalidUtf8 {
            offset: field.value_offset,
            message,
            field: field.number,
        })
    }
}

/// The content of a `bytes` or message field.
#[inline]
pub fn bytes<'a>(field: &Field<'a>, message: &'static str) -> Result<&'a [u8], WireError> {
    match field.value {
        Value::Len(b) => Ok(b),
        _ => Err(WireError::WrongWireType {
            offset: field.value_offset,
            message,
            field: field.number,
            found: field.value.wire_type(),
            expected: LEN,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "value {v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.varint().unwrap(), v);
        }
    }

    #[test]
    fn truncated_varint_is_an_error_with_its_offset() {
        let mut r = Reader::at(&[0x80, 0x80], 10);
        assert_eq!(r.varint(), Err(WireError::TruncatedVarint { offset: 10 }));
    }

    #[test]
    fn eleven_byte_varint_is_refused() {
        let buf = [0xff; 11];
        assert_eq!(
            Reader::new(&buf).varint(),
            Err(WireError::VarintTooLong { offset: 0 })
        );
    }

    #[test]
    fn a_ten_byte_varint_over_64_bits_is_refused_as_prost_does() {
        // Found by the wire_split fuzz target: the tenth byte may only be 0 or 1.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        let mut over = vec![0xff; 9];
        over.push(0x04);
        assert_eq!(
            Reader::new(&over).varint(),
            Err(WireError::VarintTooLong { offset: 0 })
        );
        assert!(prost::encoding::decode_varint(&mut over.as_slice()).is_err());
    }

    #[test]
    fn length_past_end_is_an_error() {
        // field 1, LEN, length 5, but only 2 bytes follow
        let buf = [0x0a, 0x05, 1, 2];
        let err = Reader::new(&buf).next_field().unwrap_err();
        assert!(
            matches!(
                err,
                WireError::LengthPastEnd {
                    len: 5,
                    remaining: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn group_wire_types_are_refused() {
        let buf = [0x0b, 0x0c];
        assert!(matches!(
            Reader::new(&buf).next_field(),
            Err(WireError::BadWireType { wire_type: 3, .. })
        ));
    }

    #[test]
    fn field_number_zero_is_refused() {
        assert!(matches!(
            Reader::new(&[0x02, 0x00]).next_field(),
            Err(WireError::FieldZero { offset: 0 })
        ));
    }

    #[test]
    fn fields_report_their_ranges() {
        // field 2 varint 150, field 3 LEN "ab", field 4 fixed32
        let buf = [0x10, 0x96, 0x01, 0x1a, 0x02, b'a', b'b', 0x25, 1, 0, 0, 0];
        let mut r = Reader::new(&buf);
        let f = r.next_field().unwrap().unwrap();
        assert_eq!(
            (f.number, f.value, f.range()),
            (2, Value::Varint(150), 0..3)
        );
        let f = r.next_field().unwrap().unwrap();
        assert_eq!((f.number, f.value, f.range()), (3, Value::Len(b"ab"), 3..7));
        let f = r.next_field().unwrap().unwrap();
        assert_eq!(
            (f.number, f.value, f.range()),
            (4, Value::Fixed32(1), 7..12)
        );
        assert_eq!(r.next_field().unwrap(), None);
    }
}
