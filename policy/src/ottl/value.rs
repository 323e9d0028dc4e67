//! Values an OTTL expression computes, borrowed from the span bytes where
//! they can be, and the language's rules for them: comparison
//! (pkg/ottl/compare.go), math (pkg/ottl/math.go) and the conversions the
//! `*Like` getters make (pkg/ottl/expression.go).

use std::borrow::Cow;
use std::fmt::Write as _;

use proto::view::{AnyValue, Attributes};
use proto::wire::{Reader, Value as Wire};

use super::lexer::CmpOp;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Map(Map<'a>),
    List(List<'a>),
    TraceId([u8; 16]),
    SpanId([u8; 8]),
    /// Nanoseconds since the Unix epoch (Go's `time.Time`, UTC).
    Time(i128),
    /// Nanoseconds (Go's `time.Duration`).
    Duration(i64),
    /// A span's events or links: the encoded span and the field number.
    Records(&'a [u8], u32),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Map<'a> {
    /// The `KeyValue`s in field `.1` of an encoded message.
    Wire(&'a [u8], u32),
    Owned(Vec<(String, Value<'a>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum List<'a> {
    /// An encoded `ArrayValue`.
    Wire(&'a [u8]),
    Owned(Vec<Value<'a>>),
}

impl<'a> Value<'a> {
    /// An attribute value as pdata's `GetValue` gives it to OTTL.
    pub fn from_any(v: AnyValue<'a>) -> Value<'a> {
        match v {
            AnyValue::String(s) => Value::Str(Cow::Borrowed(s)),
            AnyValue::Bool(b) => Value::Bool(b),
            AnyValue::Int(i) => Value::Int(i),
            AnyValue::Double(d) => Value::Double(d),
            AnyValue::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
            AnyValue::Array(b) => Value::List(List::Wire(b)),
            AnyValue::KvList(b) => Value::Map(Map::Wire(b, 1)),
            AnyValue::Empty => Value::Nil,
        }
    }

    /// The Go type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int64",
            Value::Double(_) => "float64",
            Value::Str(_) => "string",
            Value::Bytes(_) => "[]byte",
            Value::Map(_) => "pcommon.Map",
            Value::List(_) => "pcommon.Slice",
            Value::TraceId(_) => "pcommon.TraceID",
            Value::SpanId(_) => "pcommon.SpanID",
            Value::Time(_) => "time.Time",
            Value::Duration(_) => "time.Duration",
            Value::Records(_, 11) => "ptrace.SpanEventSlice",
            Value::Records(..) => "ptrace.SpanLinkSlice",
        }
    }
}

impl<'a> Map<'a> {
    /// The entries, the first of each key only (pdata's `Get` finds the first).
    pub fn entries(&self) -> Vec<(Cow<'a, str>, Value<'a>)> {
        let mut out: Vec<(Cow<'a, str>, Value<'a>)> = Vec::new();
        let mut push = |k: Cow<'a, str>, v: Value<'a>| {
            if !out.iter().any(|(seen, _)| *seen == k) {
                out.push((k, v));
            }
        };
        match self {
            Map::Wire(msg, field) => {
                for (k, v) in Attributes::new(msg, *field) {
                    push(Cow::Borrowed(k), Value::from_any(v));
                }
            }
            Map::Owned(items) => {
                for (k, v) in items {
                    push(Cow::Owned(k.clone()), v.clone());
                }
            }
        }
        out
    }

    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        match self {
            Map::Wire(msg, field) => Attributes::new(msg, *field).get(key).map(Value::from_any),
            Map::Owned(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
        }
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }
}

impl<'a> List<'a> {
    pub fn items(&self) -> Vec<Value<'a>> {
        match self {
            List::Wire(bytes) => {
                let mut out = Vec::new();
                let mut r = Reader::new(bytes);
                while let Ok(Some(f)) = r.next_field() {
                    if let (1, Wire::Len(b)) = (f.number, f.value) {
                        out.push(Value::from_any(AnyValue::read(b)));
                    }
                }
                out
            }
            List::Owned(items) => items.clone(),
        }
    }
}

/// Counts the occurrences of field `field` in a message.
pub(crate) fn count_field(msg: &[u8], field: u32) -> usize {
    let mut n = 0;
    let mut r = Reader::new(msg);
    while let Ok(Some(f)) = r.next_field() {
        if f.number == field {
            n += 1;
        }
    }
    n
}

fn ordered<T: PartialOrd>(a: T, b: T, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// compare.go's `invalidComparison`: only `!=` holds between values that
/// cannot be compared.
fn invalid(op: CmpOp) -> bool {
    op == CmpOp::Ne
}

fn bools(a: bool, b: bool, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => !a && b,
        CmpOp::Le => !a || b,
        CmpOp::Ge => a || !b,
        CmpOp::Gt => a && !b,
    }
}

/// `a op b` under OTTL's comparison rules (compare.go).
pub(crate) fn compare(a: &Value<'_>, b: &Value<'_>, op: CmpOp) -> bool {
    use Value as V;
    match (a, b) {
        (V::Nil, V::Nil) => matches!(op, CmpOp::Eq | CmpOp::Le | CmpOp::Ge),
        // nil against anything else: only `!=` holds.
        (V::Nil, _) | (_, V::Nil) => invalid(op),
        (V::Bool(x), V::Bool(y)) => bools(*x, *y, op),
        (V::Int(x), V::Int(y)) => ordered(x, y, op),
        (V::Int(x), V::Double(y)) => ordered(*x as f64, *y, op),
        (V::Double(x), V::Int(y)) => ordered(*x, *y as f64, op),
        (V::Double(x), V::Double(y)) => ordered(x, y, op),
        (V::Str(x), V::Str(y)) => ordered(x.as_ref(), y.as_ref(), op),
        (V::Bytes(x), V::Bytes(y)) => ordered(x.as_ref(), y.as_ref(), op),
        (V::Duration(x), V::Duration(y)) => ordered(x, y, op),
        (V::Time(x), V::Time(y)) => ordered(x, y, op),
        // Go's `==` on comparable values of one type; no ordering.
        (V::TraceId(x), V::TraceId(y)) => equality(x == y, op),
        (V::SpanId(x), V::SpanId(y)) => equality(x == y, op),
        (V::Map(_), V::Map(_)) | (V::List(_), V::List(_)) => equality(deep_equal(a, b), op),
        _ => invalid(op),
    }
}

fn equality(equal: bool, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => equal,
        CmpOp::Ne => !equal,
        _ => false,
    }
}

/// Structural equality, type for type (pdata's `Equal`, reflect.DeepEqual).
pub(crate) fn deep_equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Map(x), Value::Map(y)) => {
            let (x, y) = (x.entries(), y.entries());
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.iter()
                        .find(|(k2, _)| k2 == k)
                        .is_some_and(|(_, v2)| deep_equal(v, v2))
                })
        }
        (Value::List(x), Value::List(y)) => {
            let (x, y) = (x.items(), y.items());
            x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| deep_equal(p, q))
        }
        (Value::Double(x), Value::Double(y)) => x == y,
        (Value::Records(x, f), Value::Records(y, g)) => x == y && f == g,
        _ => a == b,
    }
}

/// `a op b` for `+ - * /` (math.go).
pub(crate) fn math<'a>(a: Value<'a>, op: char, b: Value<'a>) -> Result<Value<'a>, String> {
    use Value as V;
    let div0 = || "attempted to divide by 0".to_string();
    match (&a, &b) {
        (V::Int(x), V::Int(y)) => {
            let (x, y) = (*x, *y);
            Ok(V::Int(match op {
                '+' => x.wrapping_add(y),
                '-' => x.wrapping_sub(y),
                '*' => x.wrapping_mul(y),
                _ => {
                    if y == 0 {
                        return Err(div0());
                    }
                    x.wrapping_div(y)
                }
            }))
        }
        (V::Int(_) | V::Double(_), V::Int(_) | V::Double(_)) => {
            let f = |v: &Value<'_>| match v {
                V::Int(i) => *i as f64,
                V::Double(d) => *d,
                _ => 0.0,
            };
            let (x, y) = (f(&a), f(&b));
            Ok(V::Double(match op {
                '+' => x + y,
                '-' => x - y,
                '*' => x * y,
                _ => {
                    if y == 0.0 {
                        return Err(div0());
                    }
                    x / y
                }
            }))
        }
        (V::Int(_) | V::Double(_), _) => Err(format!("{} must be int64 or float64", go_print(&b))),
        (V::Time(t), _) => match (op, &b) {
            ('+', V::Duration(d)) => Ok(V::Time(t + i128::from(*d))),
            ('-', V::Time(u)) => Ok(V::Duration(saturate(t - u))),
            ('-', V::Duration(d)) => Ok(V::Time(t - i128::from(*d))),
            ('+', _) => Err(format!(
                "time.Time must be added to time.Duration; found {} instead",
                go_print(&b)
            )),
            ('-', _) => Err(format!(
                "time.Time or time.Duration must be subtracted from time.Time; found {} instead",
                go_print(&b)
            )),
            _ => Err(
                "only addition and subtraction supported for time.Time and time.Duration".into(),
            ),
        },
        (V::Duration(d), _) => match (op, &b) {
            ('+', V::Duration(e)) => Ok(V::Duration(d.wrapping_add(*e))),
            ('+', V::Time(t)) => Ok(V::Time(t + i128::from(*d))),
            ('-', V::Duration(e)) => Ok(V::Duration(d.wrapping_sub(*e))),
            ('+', _) => Err(format!(
                "time.Duration must be added to time.Duration or time.Time; found {} instead",
                go_print(&b)
            )),
            ('-', _) => Err(format!(
                "time.Duration must be subtracted from time.Duration; found {} instead",
                go_print(&b)
            )),
            _ => Err(
                "only addition and subtraction supported for time.Time and time.Duration".into(),
            ),
        },
        _ => Err(format!(
            "{} must be int64, float64, time.Time or time.Duration",
            go_print(&a)
        )),
    }
}

/// Go's `Time.Sub`: saturates at the Duration range.
fn saturate(n: i128) -> i64 {
    n.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// A value as `%v` prints it, for error messages.
pub(crate) fn go_print(v: &Value<'_>) -> String {
    match v {
        Value::Nil => "<nil>".into(),
        Value::Str(s) => s.to_string(),
        other => match string_like(other) {
            Ok(Some(s)) => s.into_owned(),
            _ => other.type_name().to_string(),
        },
    }
}

/// StandardStringLikeGetter: a value as a string; `None` for nil.
pub(crate) fn string_like<'a>(v: &Value<'a>) -> Result<Option<Cow<'a, str>>, String> {
    Ok(Some(match v {
        Value::Nil => return Ok(None),
        Value::Str(s) => s.clone(),
        Value::Bytes(b) => Cow::Owned(hex(b)),
        Value::Map(_) | Value::List(_) => {
            let mut out = String::new();
            json(v, &mut out);
            Cow::Owned(out)
        }
        // The default case: encoding/json of the Go value.
        Value::Bool(b) => Cow::Owned(b.to_string()),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Double(d) => {
            if !d.is_finite() {
                return Err(format!("unsupported type: json: unsupported value: {d}"));
            }
            Cow::Owned(go_json_float(*d))
        }
        Value::TraceId(id) => Cow::Owned(json_byte_array(id)),
        Value::SpanId(id) => Cow::Owned(json_byte_array(id)),
        Value::Duration(d) => Cow::Owned(d.to_string()),
        Value::Time(t) => Cow::Owned(format!("\"{}\"", rfc3339_nano(*t))),
        Value::Records(..) => return Err(format!("unsupported type: {}", v.type_name())),
    }))
}

fn json_byte_array(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("[{}]", items.join(","))
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// encoding/json's float format: shortest digits, `e` notation outside
/// [1e-6, 1e21), exponent without leading zeros.
pub(crate) fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        // Rust: 1e21, 1.5e-7; Go: 1e+21, 1.5e-07 then cleaned to 1.5e-7.
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            Some((m, e)) => format!("{m}e{e}"),
            None => s,
        }
    } else {
        let s = format!("{f}");
        if s == "-0" { "-0".into() } else { s }
    }
}

/// AsRaw then encoding/json: maps with sorted keys, no spaces.
fn json(v: &Value<'_>, out: &mut String) {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Double(d) => {
            if d.is_finite() {
                out.push_str(&go_json_float(*d));
            } else {
                out.push_str("null");
            }
        }
        Value::Str(s) => json_string(s, out),
        // []byte marshals as base64.
        Value::Bytes(b) => {
            out.push('"');
            out.push_str(&base64(b));
            out.push('"');
        }
        Value::Map(m) => {
            let mut entries = m.entries();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                json(v, out);
            }
            out.push('}');
        }
        Value::List(l) => {
            out.push('[');
            for (i, v) in l.items().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(v, out);
            }
            out.push(']');
        }
        other => {
            if let Ok(Some(s)) = string_like(other) {
                out.push_str(&s);
            }
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // encoding/json escapes HTML-sensitive characters too.
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = u32::from(chunk[0]) << 16
            | u32::from(*chunk.get(1).unwrap_or(&0)) << 8
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(T[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
pub(crate) fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC.
pub(crate) fn rfc3339_nano(t: i128) -> String {
    let secs = t.div_euclid(1_000_000_000);
    let nanos = t.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400) as i64;
    let rem = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(x))
    }

    /// pkg/ottl/compare_test.go, Test_compare: each pair of values with the
    /// expected results for `==, !=, <, <=, >, >=`.
    #[test]
    fn compare_test_cases() {
        let ops = [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ];
        let bytes = |b: &'static [u8]| Value::Bytes(Cow::Borrowed(b));
        let cases: Vec<(&str, Value<'_>, Value<'_>, [bool; 6])> = vec![
            (
                "identity string",
                s("hi"),
                s("hi"),
                [true, false, false, true, false, true],
            ),
            (
                "identity int64",
                Value::Int(1),
                Value::Int(1),
                [true, false, false, true, false, true],
            ),
            (
                "identity double",
                Value::Double(1.5),
                Value::Double(1.5),
                [true, false, false, true, false, true],
            ),
            (
                "diff int64",
                Value::Int(1),
                Value::Int(2),
                [false, true, true, true, false, false],
            ),
            (
                "diff double",
                Value::Double(1.5),
                Value::Double(2.5),
                [false, true, true, true, false, false],
            ),
            (
                "int64 double",
                Value::Int(1),
                Value::Double(1.0),
                [true, false, false, true, false, true],
            ),
            (
                "double int64",
                Value::Double(2.5),
                Value::Int(1),
                [false, true, false, false, true, true],
            ),
            (
                "diff string",
                s("hi"),
                s("bye"),
                [false, true, false, false, true, true],
            ),
            (
                "true true",
                Value::Bool(true),
                Value::Bool(true),
                [true, false, false, true, false, true],
            ),
            (
                "false true",
                Value::Bool(false),
                Value::Bool(true),
                [false, true, true, true, false, false],
            ),
            (
                "true false",
                Value::Bool(true),
                Value::Bool(false),
                [false, true, false, false, true, true],
            ),
            (
                "nil nil",
                Value::Nil,
                Value::Nil,
                [true, false, false, true, false, true],
            ),
            (
                "string nil",
                s("hi"),
                Value::Nil,
                [false, true, false, false, false, false],
            ),
            (
                "nil int",
                Value::Nil,
                Value::Int(1),
                [false, true, false, false, false, false],
            ),
            (
                "string int",
                s("1"),
                Value::Int(1),
                [false, true, false, false, false, false],
            ),
            (
                "int string",
                Value::Int(1),
                s("1"),
                [false, true, false, false, false, false],
            ),
            (
                "bool int",
                Value::Bool(true),
                Value::Int(1),
                [false, true, false, false, false, false],
            ),
            (
                "identity bytes",
                bytes(&[1, 2]),
                bytes(&[1, 2]),
                [true, false, false, true, false, true],
            ),
            (
                "diff bytes",
                bytes(&[1, 2]),
                bytes(&[1, 3]),
                [false, true, true, true, false, false],
            ),
            (
                "bytes nil",
                bytes(&[1]),
                Value::Nil,
                [false, true, false, false, false, false],
            ),
            (
                "bytes string",
                bytes(&[1]),
                s("\u{1}"),
                [false, true, false, false, false, false],
            ),
            (
                "durations",
                Value::Duration(1),
                Value::Duration(2),
                [false, true, true, true, false, false],
            ),
            (
                "times",
                Value::Time(5),
                Value::Time(5),
                [true, false, false, true, false, true],
            ),
            (
                "time int",
                Value::Time(5),
                Value::Int(5),
                [false, true, false, false, false, false],
            ),
            (
                "trace ids",
                Value::TraceId([1; 16]),
                Value::TraceId([1; 16]),
                [true, false, false, false, false, false],
            ),
            (
                "trace id bytes",
                Value::TraceId([1; 16]),
                bytes(&[1; 16]),
                [false, true, false, false, false, false],
            ),
            (
                "maps",
                Value::Map(Map::Owned(vec![("a".into(), Value::Int(1))])),
                Value::Map(Map::Owned(vec![("a".into(), Value::Int(1))])),
                [true, false, false, false, false, false],
            ),
            (
                "maps differ by type",
                Value::Map(Map::Owned(vec![("a".into(), Value::Int(1))])),
                Value::Map(Map::Owned(vec![("a".into(), Value::Double(1.0))])),
                [false, true, false, false, false, false],
            ),
            (
                "lists",
                Value::List(List::Owned(vec![s("a"), Value::Int(1)])),
                Value::List(List::Owned(vec![s("a"), Value::Int(1)])),
                [true, false, false, false, false, false],
            ),
        ];
        for (name, a, b, want) in cases {
            for (op, w) in ops.iter().zip(want) {
                assert_eq!(
                    compare(&a, &b, *op),
                    w,
                    "{name}: {a:?} {} {b:?}",
                    op.as_str()
                );
            }
        }
    }

    /// pkg/ottl/math_test.go, Test_evaluateMathExpression (the arithmetic).
    #[test]
    fn math_test_cases() {
        let cases: Vec<(Value<'_>, char, Value<'_>, Result<Value<'_>, ()>)> = vec![
            (Value::Int(1), '+', Value::Int(1), Ok(Value::Int(2))),
            (Value::Int(1), '-', Value::Int(2), Ok(Value::Int(-1))),
            (Value::Int(3), '*', Value::Int(4), Ok(Value::Int(12))),
            (Value::Int(7), '/', Value::Int(2), Ok(Value::Int(3))),
            (
                Value::Double(1.5),
                '+',
                Value::Int(1),
                Ok(Value::Double(2.5)),
            ),
            (
                Value::Int(1),
                '/',
                Value::Double(2.0),
                Ok(Value::Double(0.5)),
            ),
            (Value::Int(1), '/', Value::Int(0), Err(())),
            (Value::Double(1.0), '/', Value::Double(0.0), Err(())),
            (s("a"), '+', Value::Int(1), Err(())),
            (Value::Int(1), '+', s("a"), Err(())),
            (
                Value::Time(10),
                '+',
                Value::Duration(5),
                Ok(Value::Time(15)),
            ),
            (Value::Time(10), '-', Value::Time(4), Ok(Value::Duration(6))),
            (Value::Time(10), '-', Value::Duration(4), Ok(Value::Time(6))),
            (Value::Time(10), '*', Value::Duration(4), Err(())),
            (
                Value::Duration(10),
                '+',
                Value::Duration(4),
                Ok(Value::Duration(14)),
            ),
            (
                Value::Duration(10),
                '-',
                Value::Duration(4),
                Ok(Value::Duration(6)),
            ),
            (
                Value::Duration(10),
                '+',
                Value::Time(4),
                Ok(Value::Time(14)),
            ),
            (Value::Duration(10), '-', Value::Time(4), Err(())),
        ];
        for (a, op, b, want) in cases {
            let got = math(a.clone(), op, b.clone()).map_err(|_| ());
            assert_eq!(got, want, "{a:?} {op} {b:?}");
        }
    }

    #[test]
    fn string_like_follows_go() {
        let cases: Vec<(Value<'_>, &str)> = vec![
            (s("x"), "x"),
            (Value::Int(-3), "-3"),
            (Value::Double(1.5), "1.5"),
            (Value::Double(1e21), "1e+21"),
            (Value::Double(1e-7), "1e-7"),
            (Value::Double(100.0), "100"),
            (Value::Bool(true), "true"),
            (Value::Bytes(Cow::Borrowed(&[0xab, 0x01])), "ab01"),
            (
                Value::Map(Map::Owned(vec![
                    (
                        "b".into(),
                        Value::List(List::Owned(vec![Value::Int(1), s("<")])),
                    ),
                    ("a".into(), Value::Nil),
                ])),
                r#"{"a":null,"b":[1,"\u003c"]}"#,
            ),
            (Value::Time(1_500_000_000), "\"1970-01-01T00:00:01.5Z\""),
        ];
        for (v, want) in cases {
            assert_eq!(string_like(&v).unwrap().as_deref(), Some(want), "{v:?}");
        }
        assert_eq!(string_like(&Value::Nil).unwrap(), None);
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }
}
