//! One Refinery rule condition (`Field`/`Fields`, `Operator`, `Value`,
//! `Datatype`) as an OTTL span condition, or as the trace-level policy it
//! stands for (`has-root-span`, `?.NUM_DESCENDANTS`).
//!
//! Refinery reads a field from an event in which the span's attributes
//! cover its resource's (honeycombio/husky flattens OTLP that way), with
//! the span's own fields under Honeycomb's names (`name`, `duration_ms`,
//! `status_code`, `error`, `span.kind`, `trace.parent_id`, …). Each field
//! becomes the OTTL paths it can come from, tried in Refinery's order; the
//! operator is then written as sample/rules.go and config/sampler_config.go
//! apply it, with the same type coercions (`Datatype`) and the same answer
//! for a missing field.

use serde_yaml_ng::Value;

/// What a condition becomes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Converted {
    /// An OTTL condition on one span.
    Span { ottl: String, root_only: bool },
    /// `has-root-span`: whether the trace has a root span.
    HasRoot(bool),
    /// `?.NUM_DESCENDANTS` as a span count range (`max` 0: no bound).
    SpanCount { min: i64, max: i64 },
}

/// Where a field's value comes from, as an OTTL value expression.
struct Source {
    expr: String,
    /// OTTL that holds when the span has such a value, and when it has not;
    /// `None`: it always has one.
    present_absent: Option<(String, String)>,
}

/// A condition of a rule, as read from the rules file.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    pub fields: Vec<String>,
    pub operator: String,
    pub value: Value,
    pub datatype: String,
}

impl Condition {
    /// A short text for policy names and messages: `http.route in [/a, /b]`.
    pub fn label(&self) -> String {
        let field = self.fields.join("|");
        let value = match &self.value {
            Value::Null => String::new(),
            v => format!(" {}", plain(v)),
        };
        match self.operator.as_str() {
            "exists" | "not-exists" => format!("{field} {}", self.operator),
            "has-root-span" => format!("has-root-span{value}"),
            op => format!("{field} {op}{value}"),
        }
    }
}

/// Go's `%v` of a YAML scalar or list, as Refinery stringifies values.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "<nil>".into(),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(plain).collect::<Vec<_>>().join(" ")
        ),
        Value::Mapping(_) | Value::Tagged(_) => "map".into(),
    }
}

/// An OTTL string literal (Go's escapes), which is also a YAML
/// double-quoted scalar.
pub(super) fn ottl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Refinery's `tryConvertToInt`.
fn to_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Refinery's `tryConvertToFloat`.
fn to_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float_literal(f: f64) -> String {
    let s = format!("{f}");
    if s.contains(['.', 'e', 'E']) || !f.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// The value as an OTTL literal of its own type (no `Datatype`).
fn literal(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(ottl_string(s)),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(match n.as_i64() {
            Some(i) => i.to_string(),
            None => float_literal(n.as_f64().unwrap_or(0.0)),
        }),
        Value::Null => Err("has no Value".into()),
        _ => Err(format!("Value {} is not a single value", plain(v))),
    }
}

/// The sources of a field, in the order Refinery looks.
fn sources(field: &str) -> Vec<Source> {
    let name = field.strip_prefix("root.").unwrap_or(field);
    let always = |expr: &str| Source {
        expr: expr.into(),
        present_absent: None,
    };
    match name {
        "name" => vec![always("name")],
        "status_code" => vec![always("status.code")],
        "status_message" => vec![always("status.message")],
        "span.kind" | "type" => vec![always("ToLowerCase(kind.string)")],
        "trace.trace_id" => vec![always("trace_id.string")],
        "trace.span_id" => vec![always("span_id.string")],
        "trace.parent_id" => vec![Source {
            expr: "parent_span_id.string".into(),
            present_absent: Some(("not IsRootSpan()".into(), "IsRootSpan()".into())),
        }],
        "library.name" => vec![always("instrumentation_scope.name")],
        "library.version" => vec![always("instrumentation_scope.version")],
        _ => {
            let key = ottl_string(name);
            vec![
                Source {
                    expr: format!("attributes[{key}]"),
                    present_absent: Some((
                        format!("attributes[{key}] != nil"),
                        format!("attributes[{key}] == nil"),
                    )),
                },
                Source {
                    expr: format!("resource.attributes[{key}]"),
                    present_absent: Some((
                        format!("resource.attributes[{key}] != nil"),
                        format!("resource.attributes[{key}] == nil"),
                    )),
                },
            ]
        }
    }
}

/// The operator on a present value `v`: an OTTL condition, and whether the
/// condition holds when the field is missing.
fn test(c: &Condition, v: &str) -> Result<(String, bool), String> {
    let op = c.operator.as_str();
    let dt = c.datatype.as_str();
    let compare = ["=", "!=", ">", ">=", "<", "<="];
    if compare.contains(&op) {
        let ottl_op = if op == "=" { "==" } else { op };
        return match dt {
            "" => {
                let lit = literal(&c.value)?;
                // Refinery's compare refuses values of different types, so
                // `!=` needs the field to have the value's type.
                let guard = match &c.value {
                    Value::String(_) => "IsString",
                    Value::Bool(_) => "IsBool",
                    _ => "",
                };
                Ok(match (op, guard) {
                    ("!=", "") => (
                        format!("(IsInt({v}) or IsDouble({v})) and {v} != {lit}"),
                        false,
                    ),
                    ("!=", g) => (format!("{g}({v}) and {v} != {lit}"), false),
                    _ => (format!("{v} {ottl_op} {lit}"), false),
                })
            }
            "int" => {
                let n = to_int(&c.value)
                    .ok_or_else(|| format!("Value {} is not an int", plain(&c.value)))?;
                Ok((format!("Int({v}) != nil and Int({v}) {ottl_op} {n}"), false))
            }
            "float" => {
                let f = to_float(&c.value)
                    .ok_or_else(|| format!("Value {} is not a float", plain(&c.value)))?;
                Ok((
                    format!(
                        "Double({v}) != nil and Double({v}) {ottl_op} {}",
                        float_literal(f)
                    ),
                    false,
                ))
            }
            // Refinery compares `%v` strings, a missing field as "<nil>".
            "string" => Ok((
                format!("String({v}) {ottl_op} {}", ottl_string(&plain(&c.value))),
                op == "!=" || (op != "=" && compare_nil(op, &plain(&c.value))),
            )),
            "bool" => {
                let want = plain(&c.value).parse::<bool>().unwrap_or(false);
                let is_true = format!("IsMatch(String({v}), \"^(1|t|T|TRUE|true|True)$\")");
                match (op, want) {
                    ("=", true) | ("!=", false) => Ok((is_true, false)),
                    ("=", false) | ("!=", true) => Ok((format!("not {is_true}"), false)),
                    _ => Err(format!("operator {op} does not apply to Datatype bool")),
                }
            }
            other => Err(format!(
                "Datatype {other:?} is not one of string, int, float, bool"
            )),
        };
    }
    let text = plain(&c.value);
    match op {
        "exists" => Ok(("true".into(), false)),
        "not-exists" => Ok(("false".into(), true)),
        "starts-with" => Ok((
            format!("HasPrefix(String({v}), {})", ottl_string(&text)),
            "<nil>".starts_with(&text),
        )),
        "contains" => Ok((
            format!(
                "IsMatch(String({v}), {})",
                ottl_string(&regex_escape(&text))
            ),
            "<nil>".contains(&text),
        )),
        "does-not-contain" => Ok((
            format!(
                "not IsMatch(String({v}), {})",
                ottl_string(&regex_escape(&text))
            ),
            !"<nil>".contains(&text),
        )),
        "matches" => {
            let re = regex::Regex::new(&text)
                .map_err(|e| format!("matches pattern {text:?} is not a valid regexp: {e}"))?;
            Ok((
                format!("IsMatch(String({v}), {})", ottl_string(&text)),
                re.is_match("<nil>"),
            ))
        }
        "in" | "not-in" => {
            let items: Vec<Value> = match &c.value {
                Value::Sequence(items) => items.clone(),
                Value::String(_) | Value::Number(_) => vec![c.value.clone()],
                other => return Err(format!("Value {} must be a list of scalars", plain(other))),
            };
            let mut alternatives = Vec::with_capacity(items.len());
            for item in &items {
                alternatives.push(match dt {
                    "" | "string" => format!("String({v}) == {}", ottl_string(&plain(item))),
                    "int" => {
                        let Some(n) = to_int(item) else { continue };
                        format!("Int({v}) == {n}")
                    }
                    "float" => {
                        let Some(f) = to_float(item) else { continue };
                        format!("Double({v}) == {}", float_literal(f))
                    }
                    "bool" => return Err(format!("operator {op} does not apply to Datatype bool")),
                    other => {
                        return Err(format!(
                            "Datatype {other:?} is not one of string, int, float, bool"
                        ));
                    }
                });
            }
            if alternatives.is_empty() {
                return Err("Value has no usable entries".into());
            }
            let any = if alternatives.len() == 1 {
                alternatives.remove(0)
            } else {
                format!("({})", alternatives.join(" or "))
            };
            let nil_in = matches!(dt, "" | "string") && items.iter().any(|i| plain(i) == "<nil>");
            if op == "in" {
                Ok((any, nil_in))
            } else {
                Ok((format!("not {any}"), !nil_in))
            }
        }
        other => Err(format!("unknown Operator {other:?}")),
    }
}

fn compare_nil(op: &str, value: &str) -> bool {
    let nil = "<nil>";
    match op {
        ">" => nil > value,
        ">=" => nil >= value,
        "<" => nil < value,
        "<=" => nil <= value,
        _ => false,
    }
}

/// `duration_ms`: the span's duration in milliseconds, compared in
/// nanoseconds so that no division is needed.
fn duration(c: &Condition) -> Result<String, String> {
    let op = c.operator.as_str();
    let ottl_op = match op {
        "=" => "==",
        "!=" | ">" | ">=" | "<" | "<=" => op,
        "exists" => return Ok("true".into()),
        other => return Err(format!("operator {other} does not apply to duration_ms")),
    };
    let ms = to_float(&c.value)
        .ok_or_else(|| format!("duration_ms Value {} is not a number", plain(&c.value)))?;
    let ns = (ms * 1_000_000.0).round() as i64;
    Ok(format!(
        "end_time_unix_nano - start_time_unix_nano {ottl_op} {ns}"
    ))
}

/// `?.NUM_DESCENDANTS`: every span but the root descends from it.
fn descendants(c: &Condition) -> Result<Converted, String> {
    let n = to_int(&c.value)
        .ok_or_else(|| format!("?.NUM_DESCENDANTS Value {} is not an int", plain(&c.value)))?;
    let (min, max) = match c.operator.as_str() {
        ">" => (n + 2, 0),
        ">=" => (n + 1, 0),
        "<" => (0, n),
        "<=" => (0, n + 1),
        "=" => (n + 1, n + 1),
        other => {
            return Err(format!(
                "operator {other} on ?.NUM_DESCENDANTS has no span_count equivalent (use >, >=, <, <= or =)"
            ));
        }
    };
    if (max == 0 && min <= 1 && c.operator.starts_with('<')) || max < 0 {
        return Err("?.NUM_DESCENDANTS bound matches no trace".into());
    }
    Ok(Converted::SpanCount {
        min: min.max(0),
        max,
    })
}

/// Converts one condition.
pub(super) fn convert(c: &Condition) -> Result<Converted, String> {
    if c.operator == "has-root-span" {
        return Ok(Converted::HasRoot(
            plain(&c.value).parse::<bool>().unwrap_or(false),
        ));
    }
    if c.fields.is_empty() {
        return Err(format!("operator {} needs a Field", c.operator));
    }
    if c.fields.iter().any(|f| f == "?.NUM_DESCENDANTS") {
        if c.fields.len() > 1 {
            return Err("?.NUM_DESCENDANTS cannot be one of several Fields".into());
        }
        return descendants(c);
    }
    if let Some(f) = c.fields.iter().find(|f| f.starts_with('?')) {
        return Err(format!("computed field {f} is not known"));
    }
    let roots = c.fields.iter().filter(|f| f.starts_with("root.")).count();
    if roots != 0 && roots != c.fields.len() {
        return Err(
            "Fields mixes root. fields with others: a span condition cannot read the root span's fields from another span".into(),
        );
    }
    let root_only = roots != 0;
    let mut terms: Vec<String> = Vec::new();
    // Conditions that must hold for the next source to be the one read.
    let mut before: Vec<String> = Vec::new();
    let mut nil_result = false;
    let mut always_found = false;
    for field in &c.fields {
        let bare = field.strip_prefix("root.").unwrap_or(field);
        if bare == "duration_ms" || bare == "error" {
            let t = if bare == "duration_ms" {
                duration(c)?
            } else {
                error_field(c)?
            };
            terms.push(join_and(&before, &t));
            always_found = true;
            break;
        }
        let list = sources(field);
        for source in list {
            let (t, on_nil) = test(c, &source.expr)?;
            nil_result = on_nil;
            let mut parts = before.clone();
            if let Some((present, _)) = &source.present_absent {
                parts.push(present.clone());
            }
            if t != "false" {
                if t != "true" {
                    parts.push(t);
                }
                terms.push(join_and(&parts, ""));
            }
            match source.present_absent {
                Some((_, absent)) => before.push(absent),
                None => {
                    always_found = true;
                    break;
                }
            }
        }
        if always_found {
            break;
        }
    }
    if nil_result && !always_found {
        terms.push(join_and(&before, ""));
    }
    let mut ottl = match terms.len() {
        0 => return Err(format!("{} never matches", c.label())),
        1 => terms.remove(0),
        _ => terms
            .iter()
            .map(|t| format!("({t})"))
            .collect::<Vec<_>>()
            .join(" or "),
    };
    if root_only {
        ottl = format!("IsRootSpan() and ({ottl})");
    }
    Ok(Converted::Span { ottl, root_only })
}

/// `error`: husky sets it, `true`, on spans with an error status only.
fn error_field(c: &Condition) -> Result<String, String> {
    let is_error = "status.code == STATUS_CODE_ERROR".to_string();
    let want = plain(&c.value).parse::<bool>().ok();
    match (c.operator.as_str(), want) {
        ("exists", _) | ("=", Some(true)) | ("!=", Some(false)) => Ok(is_error),
        ("not-exists", _) => Ok("status.code != STATUS_CODE_ERROR".into()),
        (op, _) => Err(format!(
            "error {op} {} never matches in Refinery (error is set, to true, only on spans with an error status)",
            plain(&c.value)
        )),
    }
}

fn join_and(parts: &[String], last: &str) -> String {
    let mut all: Vec<&str> = parts.iter().map(String::as_str).collect();
    if !last.is_empty() {
        all.push(last);
    }
    if all.is_empty() {
        return "true".into();
    }
    all.iter()
        .map(|p| {
            if p.contains(" or ") && !p.starts_with('(') {
                format!("({p})")
            } else {
                (*p).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" and ")
}
