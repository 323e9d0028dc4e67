//! A trace's sampling key, built from `field_list` as Refinery builds it
//! (sample/trace_key.go): fields in name order; for each field, the
//! distinct values it has on the trace's spans, sorted, each followed by
//! `•`, then `,`; then each `root.`-prefixed field's value on the root span
//! followed by `,`; then, with `use_trace_length`, the span count.
//!
//! A field is read on a span as Refinery reads an OTLP span's flattened
//! fields: the span attribute of that name, else the resource attribute,
//! else one of the span's own fields: `name`, `status_code` (the OTLP code,
//! 0 unset, 1 ok, 2 error), `span.kind` (`server`, `client`, ...), `error`
//! (`true` on a span with status ERROR, absent otherwise).

use std::collections::BTreeSet;
use std::fmt::Write;

use proto::view::{AnyValue, SpanView, resource_attributes};

/// The prefix of a field read on the root span only.
pub(crate) const ROOT_PREFIX: &str = "root.";

/// Refinery's `maxKeyLength`: distinct values taken into one key.
const MAX_DISTINCT_VALUES: usize = 100;

/// A key longer than this is cut (at a character boundary): keys are held
/// per key by the estimators, so their size bounds the state's.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct KeySpec {
    /// Fields read on every span, in name order.
    fields: Vec<String>,
    /// Fields read on the root span (without their `root.` prefix), in
    /// name order.
    root_fields: Vec<String>,
    use_trace_length: bool,
    /// The fields as written, for `policy check`.
    written: Vec<String>,
}

impl KeySpec {
    pub(crate) fn new(fields: &[String], use_trace_length: bool) -> KeySpec {
        let mut sorted = fields.to_vec();
        sorted.sort();
        let (mut plain, mut root) = (Vec::new(), Vec::new());
        for f in sorted {
            match f.strip_prefix(ROOT_PREFIX) {
                Some(rest) => root.push(rest.to_string()),
                None => plain.push(f),
            }
        }
        KeySpec {
            fields: plain,
            root_fields: root,
            use_trace_length,
            written: fields.to_vec(),
        }
    }

    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.written.iter().map(String::as_str)
    }

    pub(crate) fn use_trace_length(&self) -> bool {
        self.use_trace_length
    }

    /// The key of a trace given as its spans with their resource headers;
    /// `span_count` is the trace's (which may count spans not parsed).
    pub(crate) fn build(&self, spans: &[(SpanView<'_>, &[u8])], span_count: u64) -> String {
        let mut key = String::new();
        let mut distinct = 0;
        let mut values: BTreeSet<String> = BTreeSet::new();
        // One buffer for every value read: a value is copied out only the
        // first time it is seen (most spans of a trace repeat their values).
        let mut v = String::new();
        'fields: for field in &self.fields {
            values.clear();
            for (span, resource) in spans {
                if distinct >= MAX_DISTINCT_VALUES {
                    break;
                }
                v.clear();
                if read(field, span, resource, &mut v) && !values.contains(v.as_str()) {
                    values.insert(v.clone());
                    distinct += 1;
                }
            }
            if !values.is_empty() {
                for v in &values {
                    key.push_str(v);
                    key.push('•');
                }
                key.push(',');
            }
            if distinct >= MAX_DISTINCT_VALUES {
                break 'fields;
            }
        }
        if let Some((root, resource)) = spans.iter().find(|(s, _)| s.is_root()) {
            for field in &self.root_fields {
                let mut v = String::new();
                if read(field, root, resource, &mut v) {
                    key.push_str(&v);
                    key.push(',');
                }
            }
        }
        if self.use_trace_length {
            let _ = write!(key, "{span_count}");
        }
        if key.len() > MAX_KEY_BYTES {
            let mut cut = MAX_KEY_BYTES;
            while !key.is_char_boundary(cut) {
                cut -= 1;
            }
            key.truncate(cut);
        }
        key
    }
}

/// Appends `field`'s value on `span` to `out`; false when the span has no
/// such field.
fn read(field: &str, span: &SpanView<'_>, resource: &[u8], out: &mut String) -> bool {
    if let Some(v) = span
        .attribute(field)
        .or_else(|| resource_attributes(resource).get(field))
    {
        format_value(v, out);
        return true;
    }
    match field {
        "name" => out.push_str(span.name()),
        "status_code" => {
            let _ = write!(out, "{}", span.status_code);
        }
        "span.kind" => out.push_str(match span.kind {
            1 => "internal",
            2 => "server",
            3 => "client",
            4 => "producer",
            5 => "consumer",
            _ => "unspecified",
        }),
        "error" if span.status_code == proto::view::STATUS_ERROR => out.push_str("true"),
        _ => return false,
    }
    true
}

/// A value as Go's `%v` prints the value Refinery holds: strings as they
/// are, integers in decimal, doubles shortest without an exponent, bools
/// as `true`/`false`; bytes in hex, and arrays and maps as `[...]`/`{...}`
/// markers (tailgate's choice: Refinery holds them as JSON text).
fn format_value(v: AnyValue<'_>, out: &mut String) {
    match v {
        AnyValue::String(s) => out.push_str(s),
        AnyValue::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        AnyValue::Int(n) => {
            let _ = write!(out, "{n}");
        }
        AnyValue::Double(d) => {
            let _ = write!(out, "{d}");
        }
        AnyValue::Bytes(b) => {
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        AnyValue::Array(_) => out.push_str("[...]"),
        AnyValue::KvList(_) => out.push_str("{...}"),
        AnyValue::Empty => out.push_str("<nil>"),
    }
}
