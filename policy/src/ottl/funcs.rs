//! The converters (pkg/ottl/ottlfuncs) that make sense in a sampling
//! condition, with the argument conversions of their getters:
//! `StringGetter` wants a string, `StringLikeGetter` converts, `IntLikeGetter`
//! parses strings and truncates floats, and so on (pkg/ottl/expression.go).

use std::borrow::Cow;

use regex::Regex;

use super::compile::Expr;
use super::span::SpanCtx;
use super::value::{self, List, Value};

/// A converter with what was fixed when it was compiled.
#[derive(Debug)]
pub(crate) enum Func {
    IsMatch(Box<Regex>),
    IsString,
    IsInt,
    IsDouble,
    IsBool,
    IsMap,
    IsList,
    IsRootSpan,
    Len,
    /// Arguments: the delimiter, then the values.
    Concat,
    ToLowerCase,
    ToUpperCase,
    ToSnakeCase,
    ToCamelCase,
    Substring,
    Split(String),
    HasPrefix(String),
    HasSuffix(String),
    ContainsValue,
    Int,
    Double,
    String,
    Hex,
    Duration,
    /// A strptime format, compiled.
    Time(Vec<super::strptime::Piece>),
    Unix,
    UnixNano,
    UnixMicro,
    UnixMilli,
    UnixSeconds,
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
    TraceId,
    SpanId,
}

/// A converter's parameters, as the Collector names them (for named
/// arguments), how many are required, and where it is available.
pub(crate) struct Signature {
    pub params: &'static [&'static str],
    pub required: usize,
    /// Only in the span context (IsRootSpan, which the tail sampling
    /// processor adds to the span functions only).
    pub span_only: bool,
}

pub(crate) fn signature(name: &str) -> Option<Signature> {
    let sig = |params: &'static [&'static str], required: usize| Signature {
        params,
        required,
        span_only: false,
    };
    Some(match name {
        "IsMatch" => sig(&["target", "pattern"], 2),
        "IsString" | "IsInt" | "IsDouble" | "IsBool" | "IsMap" | "IsList" => sig(&["value"], 1),
        "IsRootSpan" => Signature {
            params: &[],
            required: 0,
            span_only: true,
        },
        "Len" | "ToLowerCase" | "ToUpperCase" | "ToSnakeCase" | "ToCamelCase" | "Int"
        | "Double" | "String" | "Hex" => sig(&["target"], 1),
        "Concat" => sig(&["vals", "delimiter"], 2),
        "ConvertCase" => sig(&["target", "toCase"], 2),
        "Substring" => sig(&["target", "start", "length"], 3),
        "Split" => sig(&["target", "delimiter"], 2),
        "HasPrefix" => sig(&["target", "prefix"], 2),
        "HasSuffix" => sig(&["target", "suffix"], 2),
        "ContainsValue" => sig(&["target", "item"], 2),
        "Duration" => sig(&["duration"], 1),
        "Unix" => sig(&["seconds", "nanoseconds"], 1),
        "Time" => sig(&["time", "format", "location", "locale"], 2),
        "UnixNano" | "UnixMicro" | "UnixMilli" | "UnixSeconds" => sig(&["time"], 1),
        "Nanoseconds" | "Microseconds" | "Milliseconds" | "Seconds" | "Minutes" | "Hours" => {
            sig(&["duration"], 1)
        }
        "TraceID" | "SpanID" => sig(&["bytes"], 1),
        _ => return None,
    })
}

/// StringGetter: a string, or an error.
fn string_of<'a>(v: Value<'a>) -> Result<Cow<'a, str>, String> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!("expected string but got {}", other.type_name())),
    }
}

fn int_of(v: Value<'_>) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(i),
        other => Err(format!("expected int64 but got {}", other.type_name())),
    }
}

fn time_of(v: Value<'_>) -> Result<i128, String> {
    match v {
        Value::Time(t) => Ok(t),
        other => Err(format!("expected time.Time but got {}", other.type_name())),
    }
}

fn duration_of(v: Value<'_>) -> Result<i64, String> {
    match v {
        Value::Duration(d) => Ok(d),
        other => Err(format!(
            "expected time.Duration but got {}",
            other.type_name()
        )),
    }
}

/// IntLikeGetter: `None` for nil and for a string that is not an integer.
fn int_like(v: &Value<'_>) -> Result<Option<i64>, String> {
    Ok(match v {
        Value::Nil => None,
        Value::Int(i) => Some(*i),
        // Go's int64(float64): truncation; out of range saturates here.
        Value::Double(d) => Some(*d as i64),
        Value::Str(s) => s.parse::<i64>().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        other => return Err(format!("unsupported type: {}", other.type_name())),
    })
}

/// FloatLikeGetter.
fn float_like(v: &Value<'_>) -> Result<Option<f64>, String> {
    Ok(match v {
        Value::Nil => None,
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::Str(s) => go_parse_float(s),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        other => return Err(format!("unsupported type: {}", other.type_name())),
    })
}

/// strconv.ParseFloat's accepted forms that Rust's parser also reads, less
/// the spellings Go refuses ("infinity" is Go's too; "+Inf", "NaN" both).
fn go_parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

/// ByteSliceLikeGetter.
fn bytes_like<'a>(v: Value<'a>) -> Result<Option<Cow<'a, [u8]>>, String> {
    Ok(Some(match v {
        Value::Nil => return Ok(None),
        Value::Bytes(b) => b,
        Value::Str(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
        Value::Str(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
        Value::Int(i) => Cow::Owned(i.to_be_bytes().to_vec()),
        Value::Double(d) => Cow::Owned(d.to_bits().to_be_bytes().to_vec()),
        Value::Bool(b) => Cow::Owned(vec![u8::from(b)]),
        other => return Err(format!("unsupported type: {}", other.type_name())),
    }))
}

fn arg<'a>(args: &'a [Expr], i: usize, cx: &SpanCtx<'a>) -> Result<Value<'a>, String> {
    match args.get(i) {
        Some(e) => e.eval(cx),
        None => Ok(Value::Nil),
    }
}

pub(crate) fn call<'a>(
    f: &'a Func,
    args: &'a [Expr],
    cx: &SpanCtx<'a>,
) -> Result<Value<'a>, String> {
    let a0 = || arg(args, 0, cx);
    let is = |pred: fn(&Value<'_>) -> bool| -> Result<Value<'a>, String> {
        Ok(Value::Bool(pred(&a0()?)))
    };
    let nanos_as = |d: i64, unit: i64| Value::Int(d / unit);
    let float_of = |d: i64, unit: f64| {
        // time.Duration's Seconds(), Minutes(), Hours(): whole units plus
        // the remainder as a fraction.
        let unit_ns = unit as i64;
        let whole = d / unit_ns;
        let rest = d % unit_ns;
        Value::Double(whole as f64 + rest as f64 / unit)
    };
    match f {
        Func::IsMatch(re) => {
            let v = a0()?;
            Ok(Value::Bool(match value::string_like(&v)? {
                Some(s) => re.is_match(&s),
                None => false,
            }))
        }
        Func::IsString => is(|v| matches!(v, Value::Str(_))),
        Func::IsInt => is(|v| matches!(v, Value::Int(_))),
        Func::IsDouble => is(|v| matches!(v, Value::Double(_))),
        Func::IsBool => is(|v| matches!(v, Value::Bool(_))),
        Func::IsMap => is(|v| matches!(v, Value::Map(_))),
        Func::IsList => is(|v| matches!(v, Value::List(_))),
        Func::IsRootSpan => Ok(Value::Bool(
            cx.span.parent_span_id.is_none_or(|p| p.0 == [0; 8]),
        )),
        Func::Len => match a0()? {
            Value::Str(s) => Ok(Value::Int(s.len() as i64)),
            Value::Map(m) => Ok(Value::Int(m.len() as i64)),
            Value::List(l) => Ok(Value::Int(l.items().len() as i64)),
            Value::Records(msg, field) => Ok(Value::Int(value::count_field(msg, field) as i64)),
            other => Err(format!("unsupported type: {}", other.type_name())),
        },
        Func::Concat => {
            let delimiter = string_of(arg(args, 0, cx)?)?;
            let mut out = String::new();
            for (i, e) in args.get(1..).unwrap_or(&[]).iter().enumerate() {
                if i > 0 {
                    out.push_str(&delimiter);
                }
                match value::string_like(&e.eval(cx)?)? {
                    Some(s) => out.push_str(&s),
                    None => out.push_str("<nil>"),
                }
            }
            Ok(Value::Str(Cow::Owned(out)))
        }
        Func::ToLowerCase => Ok(Value::Str(Cow::Owned(string_of(a0()?)?.to_lowercase()))),
        Func::ToUpperCase => Ok(Value::Str(Cow::Owned(string_of(a0()?)?.to_uppercase()))),
        Func::ToSnakeCase => Ok(Value::Str(Cow::Owned(to_snake(&string_of(a0()?)?)))),
        Func::ToCamelCase => Ok(Value::Str(Cow::Owned(to_camel(&string_of(a0()?)?)))),
        Func::Substring => {
            let start = int_of(arg(args, 1, cx)?)?;
            if start < 0 {
                return Err(format!(
                    "invalid start for substring function, {start} cannot be negative"
                ));
            }
            let length = int_of(arg(args, 2, cx)?)?;
            if length <= 0 {
                return Err(format!(
                    "invalid length for substring function, {length} cannot be negative or zero"
                ));
            }
            let target = string_of(a0()?)?;
            let len = target.len() as i64;
            if start > len || length > len - start {
                return Err(format!(
                    "invalid range for substring function, start({start})+length({length}) cannot be greater than the length of target string({len})"
                ));
            }
            let (s, e) = (start as usize, (start + length) as usize);
            // Go slices bytes; a cut inside a character is replaced, as
            // Rust strings must be UTF-8.
            Ok(Value::Str(match target {
                Cow::Borrowed(t) => match t.get(s..e) {
                    Some(x) => Cow::Borrowed(x),
                    None => Cow::Owned(String::from_utf8_lossy(&t.as_bytes()[s..e]).into_owned()),
                },
                Cow::Owned(t) => {
                    Cow::Owned(String::from_utf8_lossy(&t.as_bytes()[s..e]).into_owned())
                }
            }))
        }
        Func::Split(delimiter) => {
            let target = string_of(a0()?)?;
            let parts: Vec<Value<'a>> = if delimiter.is_empty() {
                // Go's strings.Split with "" splits into characters.
                target
                    .chars()
                    .map(|c| Value::Str(Cow::Owned(c.to_string())))
                    .collect()
            } else {
                target
                    .split(delimiter.as_str())
                    .map(|p| Value::Str(Cow::Owned(p.to_string())))
                    .collect()
            };
            Ok(Value::List(List::Owned(parts)))
        }
        Func::HasPrefix(p) => Ok(Value::Bool(string_of(a0()?)?.starts_with(p.as_str()))),
        Func::HasSuffix(p) => Ok(Value::Bool(string_of(a0()?)?.ends_with(p.as_str()))),
        Func::ContainsValue => {
            let target = a0()?;
            let Value::List(list) = target else {
                return Err(format!(
                    "expected pcommon.Slice but got {}",
                    target.type_name()
                ));
            };
            let item = arg(args, 1, cx)?;
            Ok(Value::Bool(list.items().iter().any(|v| {
                value::compare(v, &item, super::lexer::CmpOp::Eq)
            })))
        }
        Func::Int => Ok(int_like(&a0()?)?.map_or(Value::Nil, Value::Int)),
        Func::Double => Ok(float_like(&a0()?)?.map_or(Value::Nil, Value::Double)),
        Func::String => Ok(match value::string_like(&a0()?)? {
            Some(s) => Value::Str(s),
            None => Value::Nil,
        }),
        Func::Hex => {
            let b = bytes_like(a0()?)?;
            Ok(Value::Str(Cow::Owned(value::hex(
                b.as_deref().unwrap_or(&[]),
            ))))
        }
        Func::Duration => {
            let s = string_of(a0()?)?;
            parse_go_duration(&s).map(Value::Duration)
        }
        Func::Time(format) => {
            let target = string_of(a0()?)?;
            if target.is_empty() {
                return Err("time cannot be nil".into());
            }
            super::strptime::parse(format, &target).map(Value::Time)
        }
        Func::Unix => {
            let secs = int_of(a0()?)?;
            let nanos = match args.get(1) {
                Some(e) => int_of(e.eval(cx)?)?,
                None => 0,
            };
            Ok(Value::Time(
                i128::from(secs) * 1_000_000_000 + i128::from(nanos),
            ))
        }
        Func::UnixNano => Ok(Value::Int(time_of(a0()?)? as i64)),
        Func::UnixMicro => Ok(Value::Int(time_of(a0()?)?.div_euclid(1_000) as i64)),
        Func::UnixMilli => Ok(Value::Int(time_of(a0()?)?.div_euclid(1_000_000) as i64)),
        Func::UnixSeconds => Ok(Value::Int(time_of(a0()?)?.div_euclid(1_000_000_000) as i64)),
        Func::Nanoseconds => Ok(Value::Int(duration_of(a0()?)?)),
        Func::Microseconds => Ok(nanos_as(duration_of(a0()?)?, 1_000)),
        Func::Milliseconds => Ok(nanos_as(duration_of(a0()?)?, 1_000_000)),
        Func::Seconds => Ok(float_of(duration_of(a0()?)?, 1e9)),
        Func::Minutes => Ok(float_of(duration_of(a0()?)?, 60e9)),
        Func::Hours => Ok(float_of(duration_of(a0()?)?, 3600e9)),
        Func::TraceId => {
            let b = bytes_like(a0()?)?.unwrap_or(Cow::Borrowed(&[]));
            let id: [u8; 16] = b
                .as_ref()
                .try_into()
                .map_err(|_| "traceids must be 16 bytes".to_string())?;
            Ok(Value::TraceId(id))
        }
        Func::SpanId => {
            let b = bytes_like(a0()?)?.unwrap_or(Cow::Borrowed(&[]));
            let id: [u8; 8] = b
                .as_ref()
                .try_into()
                .map_err(|_| "span ids must be 8 bytes".to_string())?;
            Ok(Value::SpanId(id))
        }
    }
}

/// Go's time.ParseDuration, negative durations included.
fn parse_go_duration(s: &str) -> Result<i64, String> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if body.starts_with(['-', '+']) || body != body.trim() {
        return Err(format!("time: invalid duration {s:?}"));
    }
    let d = crate::duration::parse(body).map_err(|_| format!("time: invalid duration {s:?}"))?;
    let n = i64::try_from(d.as_nanos()).map_err(|_| format!("time: invalid duration {s:?}"))?;
    Ok(if negative { -n } else { n })
}

/// iancoleman/strcase `ToSnake` (what ConvertCase "snake" and ToSnakeCase
/// use): words split at case changes and digits, acronyms kept together.
pub(crate) fn to_snake(input: &str) -> String {
    let s = input.trim().as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len() + 2);
    for (i, &c) in s.iter().enumerate() {
        let is_cap = c.is_ascii_uppercase();
        let is_low = c.is_ascii_lowercase();
        let v = if is_cap { c.to_ascii_lowercase() } else { c };
        if let Some(&next) = s.get(i + 1) {
            let is_num = v.is_ascii_digit();
            let next_cap = next.is_ascii_uppercase();
            let next_low = next.is_ascii_lowercase();
            let next_num = next.is_ascii_digit();
            if (is_cap && (next_low || next_num))
                || (is_low && (next_cap || next_num))
                || (is_num && (next_cap || next_low))
            {
                if is_cap && next_low && i > 0 && s[i - 1].is_ascii_uppercase() {
                    out.push(b'_');
                }
                out.push(v);
                if is_low || is_num || next_num {
                    out.push(b'_');
                }
                continue;
            }
        }
        if matches!(v, b' ' | b'_' | b'-' | b'.') {
            out.push(b'_');
        } else {
            out.push(v);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// iancoleman/strcase `ToCamel`: UpperCamelCase, separators dropped.
pub(crate) fn to_camel(input: &str) -> String {
    let s = input.trim().as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut cap_next = true;
    let mut prev_cap = false;
    for &c in s {
        let is_cap = c.is_ascii_uppercase();
        let is_low = c.is_ascii_lowercase();
        let mut v = c;
        if cap_next {
            if is_low {
                v = c.to_ascii_uppercase();
            }
        } else if prev_cap && is_cap {
            v = c.to_ascii_lowercase();
        }
        prev_cap = is_cap;
        if is_cap || is_low {
            out.push(v);
            cap_next = false;
        } else if c.is_ascii_digit() {
            out.push(v);
            cap_next = true;
        } else {
            cap_next = matches!(c, b'_' | b' ' | b'-' | b'.');
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ottlfuncs func_convert_case_test.go and strcase's own vectors.
    #[test]
    fn convert_case_test_vectors() {
        for (input, want) in [
            ("simpleTest", "simple_test"),
            ("SimpleTest", "simple_test"),
            ("easy", "easy"),
            ("HTTPRequest", "http_request"),
            ("already_snake", "already_snake"),
            ("dots.and-dashes here", "dots_and_dashes_here"),
            ("version2Beta", "version_2_beta"),
            ("", ""),
        ] {
            assert_eq!(to_snake(input), want, "snake {input:?}");
        }
        for (input, want) in [
            ("simple_test", "SimpleTest"),
            ("simpleTest", "SimpleTest"),
            ("test_case_2", "TestCase2"),
            ("some-mixed_string with spaces", "SomeMixedStringWithSpaces"),
            ("", ""),
        ] {
            assert_eq!(to_camel(input), want, "camel {input:?}");
        }
    }

    #[test]
    fn go_durations_parse_with_sign() {
        assert_eq!(parse_go_duration("1h2m3s"), Ok(3_723_000_000_000));
        assert_eq!(parse_go_duration("-1.5s"), Ok(-1_500_000_000));
        assert_eq!(parse_go_duration("333ms"), Ok(333_000_000));
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("--1s").is_err());
    }
}
