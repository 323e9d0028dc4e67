//! The OpenTelemetry Transformation Language's conditions, for the
//! `ottl_condition` policy (the Collector's
//! processor/tailsamplingprocessor/internal/sampling/ottl.go over
//! pkg/ottl with the span and span event contexts).
//!
//! A condition is lexed ([`lexer`]), parsed into a tree ([`parser`]) and
//! compiled ([`compile`]) once, when the policy file is loaded: an unknown
//! path or function, a bad regex or a syntax error is a load error with its
//! place in the condition. Evaluation reads the stored span bytes through
//! the same lazy views the typed policies use ([`span`]): nothing is
//! decoded into structs, a string compared with a literal is borrowed from
//! the span. Pure: no I/O, no clock.

mod compile;
mod funcs;
mod lexer;
mod parser;
mod span;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ptr;

use proto::view::SpanView;
use proto::write::SpanRef;

use crate::evaluate::{PolicySet, TraceView};
use crate::policy::{Node, Rule};
use compile::{Compiler, Cond, Context};
use span::SpanCtx;

/// What is wrong with a condition, and where: a byte offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub at: usize,
    pub message: String,
}

impl SyntaxError {
    fn new(at: usize, message: String) -> SyntaxError {
        SyntaxError { at, message }
    }
}

/// How an error while evaluating a condition is handled (pkg/ottl
/// `ErrorMode`). The default, as in the Collector at the pinned release,
/// is `Propagate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ErrorMode {
    /// The policy's evaluation fails: it casts no vote (an `and`, `drop` or
    /// `composite` holding it fails too).
    #[default]
    Propagate,
    /// The condition counts as false and evaluation goes on. The Collector
    /// logs the error; tailgate has no per-evaluation log, so this is
    /// `Silent`.
    Ignore,
    Silent,
}

impl ErrorMode {
    /// pkg/ottl's `ErrorMode.UnmarshalText`: case-insensitive.
    pub fn parse(s: &str) -> Result<ErrorMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "propagate" => Ok(ErrorMode::Propagate),
            "ignore" => Ok(ErrorMode::Ignore),
            "silent" => Ok(ErrorMode::Silent),
            _ => Err(format!(
                "unknown error mode {s:?} (expected propagate, ignore or silent)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorMode::Propagate => "propagate",
            ErrorMode::Ignore => "ignore",
            ErrorMode::Silent => "silent",
        }
    }
}

/// One compiled condition and its source.
#[derive(Debug)]
pub(crate) struct Condition {
    pub text: String,
    cond: Cond,
}

/// A condition list that failed to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConditionError {
    /// `span` or `spanevent`.
    pub list: &'static str,
    pub index: usize,
    /// 1-based line and column in the condition text.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] at {}:{}: {}",
            self.list, self.index, self.line, self.column, self.message
        )
    }
}

/// The 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Compiles one condition in `context`.
pub(crate) fn compile_condition(text: &str, context: Context) -> Result<Cond, SyntaxError> {
    let node = parser::parse(text)?;
    Compiler { context }.condition(&node)
}

/// Where a trace matched: which list and which condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Match {
    pub list: &'static str,
    pub index: usize,
}

/// The outcome of an `ottl_condition` policy on one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Matched(Match),
    NotMatched,
    /// A condition failed under `error_mode: propagate`.
    Error(String),
}

/// A compiled `ottl_condition` block.
#[derive(Debug)]
pub(crate) struct OttlCondition {
    pub error_mode: ErrorMode,
    pub span: Vec<Condition>,
    pub spanevent: Vec<Condition>,
}

impl OttlCondition {
    pub fn compile(
        error_mode: ErrorMode,
        span: &[String],
        spanevent: &[String],
    ) -> Result<OttlCondition, ConditionError> {
        if span.is_empty() && spanevent.is_empty() {
            return Err(ConditionError {
                list: "span",
                index: 0,
                line: 1,
                column: 1,
                message: "expected at least one OTTL condition to filter on (span or spanevent)"
                    .into(),
            });
        }
        let list = |texts: &[String], name: &'static str, context: Context| {
            texts
                .iter()
                .enumerate()
                .map(|(index, text)| {
                    compile_condition(text, context)
                        .map(|cond| Condition {
                            text: text.clone(),
                            cond,
                        })
                        .map_err(|e| {
                            let (line, column) = line_column(text, e.at);
                            ConditionError {
                                list: name,
                                index,
                                line,
                                column,
                                message: e.message,
                            }
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(OttlCondition {
            error_mode,
            span: list(span, "span", Context::Span)?,
            spanevent: list(spanevent, "spanevent", Context::SpanEvent)?,
        })
    }

    /// pkg/ottl `ConditionSequence.Eval` with OR: the first condition that
    /// holds decides; an error propagates or counts as false.
    fn any(&self, list: &[Condition], cx: &SpanCtx<'_>) -> Result<Option<usize>, String> {
        for (i, c) in list.iter().enumerate() {
            match c.cond.eval(cx) {
                Ok(true) => return Ok(Some(i)),
                Ok(false) => {}
                Err(e) => {
                    if self.error_mode == ErrorMode::Propagate {
                        return Err(format!("failed to eval condition: {}, {e}", c.text));
                    }
                }
            }
        }
        Ok(None)
    }

    /// ottl.go's `Evaluate`: span by span in stored order, the span
    /// conditions, then the span event conditions on each of its events;
    /// the first match samples, the first propagated error ends it.
    /// `views` are the parsed spans of `spans` (a span that did not parse
    /// is left out of `views` and skipped here).
    pub fn evaluate(&self, spans: &[SpanRef<'_>], views: &[SpanView<'_>]) -> Outcome {
        let mut next_view = 0;
        for s in spans {
            let Some(view) = views.get(next_view) else {
                break;
            };
            if !ptr::eq(view.bytes().as_ptr(), s.span.as_ptr()) {
                continue;
            }
            next_view += 1;
            let cx = SpanCtx {
                span: view,
                resource: s.resource,
                scope: s.scope,
                event: None,
            };
            if !self.span.is_empty() {
                match self.any(&self.span, &cx) {
                    Ok(Some(index)) => {
                        return Outcome::Matched(Match {
                            list: "span",
                            index,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => return Outcome::Error(e),
                }
            }
            if !self.spanevent.is_empty() {
                let mut result = Ok(None);
                span::find_event(view.bytes(), |event| {
                    let cx = SpanCtx {
                        event: Some(event),
                        ..cx
                    };
                    result = self.any(&self.spanevent, &cx);
                    !matches!(result, Ok(None))
                });
                match result {
                    Ok(Some(index)) => {
                        return Outcome::Matched(Match {
                            list: "spanevent",
                            index,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => return Outcome::Error(e),
                }
            }
        }
        Outcome::NotMatched
    }

    /// The text of a matched condition.
    pub fn text(&self, m: Match) -> &str {
        let list = if m.list == "span" {
            &self.span
        } else {
            &self.spanevent
        };
        list.get(m.index).map_or("", |c| c.text.as_str())
    }
}

/// For `policy test`: the conditions that matched in the `ottl_condition`
/// policies under top-level policy `policy` (itself, or its sub-policies
/// then named), as `span[0]: condition`, in policy order.
pub(crate) fn explain(set: &PolicySet, policy: &str, trace: &TraceView<'_>) -> Vec<String> {
    fn walk<'n>(node: &'n Node, top: bool, out: &mut Vec<(String, &'n OttlCondition)>) {
        match &node.rule {
            Rule::OttlCondition(c) => {
                let prefix = if top {
                    String::new()
                } else {
                    format!("{}: ", node.name)
                };
                out.push((prefix, c));
            }
            Rule::And(subs) | Rule::Drop(subs) => subs.iter().for_each(|s| walk(s, false, out)),
            Rule::Not(sub) => walk(sub, false, out),
            Rule::Composite { subs, .. } => subs.iter().for_each(|(s, _)| walk(s, false, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for node in set.nodes().iter().filter(|n| &*n.name == policy) {
        walk(node, true, &mut found);
    }
    if found.is_empty() {
        return Vec::new();
    }
    let views: Vec<SpanView<'_>> = trace
        .spans
        .iter()
        .filter_map(|s| SpanView::parse(s.span, 0).ok())
        .collect();
    found
        .into_iter()
        .filter_map(|(prefix, c)| match c.evaluate(trace.spans, &views) {
            Outcome::Matched(m) => Some(format!("{prefix}{}[{}]: {}", m.list, m.index, c.text(m))),
            _ => None,
        })
        .collect()
}

/// Parses and compiles a span condition; for the fuzz target, which checks
/// that no input panics or recurses without bound.
pub fn check_condition(text: &str) -> Result<(), String> {
    compile_condition(text, Context::Span)
        .map(|_| ())
        .map_err(|e| e.message)
}

/// Span conditions that read every path of the span context and call
/// every converter, for [`evaluate_request`].
const COVERAGE_SPAN: &[&str] = &[
    r#"name == "x" or kind == SPAN_KIND_SERVER or kind.string == "Server" or kind.deprecated_string == "x""#,
    r#"trace_id.string == "x" or span_id.string == "x" or parent_span_id.string == "x" or IsRootSpan()"#,
    r#"trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10) or span_id == SpanID(0x0102030405060708) or parent_span_id == SpanID(0x0000000000000000)"#,
    r#"trace_state == "x" or trace_state["k"] == "v""#,
    r#"end_time - start_time > Duration("1s") or end_time_unix_nano - start_time_unix_nano > 1000"#,
    r#"UnixMilli(start_time) > 0 and Seconds(end_time - start_time) < 1.5 or UnixNano(Unix(1, 2)) == 3"#,
    r#"attributes["a"]["b"][0] == nil or attributes["a"][1] != 1.5"#,
    r#"IsMatch(attributes["http.route"], "^/api") or IsMatch(attributes["m"], "x")"#,
    r#"IsString(attributes["s"]) or IsInt(attributes["i"]) or IsDouble(attributes["d"]) or IsBool(attributes["b"]) or IsMap(attributes["m"]) or IsList(attributes["l"])"#,
    r#"Len(attributes) > 2 or Len(events) > 1 or Len(links) > 0 or Len(attributes["l"]) > 0 or Len(name) > 3"#,
    r#"Concat([name, attributes["a"], 1, 2.5, true], "-") == "x""#,
    r#"ConvertCase(name, "snake") == "x" or ToCamelCase(name) == "x" or ToUpperCase(name) == "X" or ToLowerCase(name) == "x" or ToSnakeCase(name) == "x""#,
    r#"Substring(name, 1, 2) == "x" or Split(name, "/")[1] == "api""#,
    r#"HasPrefix(name, "GET") or HasSuffix(name, "x") or ContainsValue(attributes["l"], "x")"#,
    r#"Int(attributes["i"]) > 3 or Double(attributes["d"]) < 1.0 or String(attributes["m"]) == "{}" or Hex(attributes["b"]) == "01""#,
    r#"Milliseconds(end_time - start_time) > 1 or Microseconds(Duration("1ms")) > 1 or Nanoseconds(Duration("1ns")) > 1 or Minutes(Duration("1m")) > 1.0 or Hours(Duration("1h")) > 1.0 or UnixMicro(end_time) > 0 or UnixSeconds(end_time) > 0"#,
    r#"dropped_attributes_count > 0 or dropped_events_count > 0 or dropped_links_count > 0"#,
    r#"status.code == STATUS_CODE_ERROR or status.message == "x""#,
    r#"resource.attributes["service.name"] == "x" or resource.dropped_attributes_count > 0 or resource.schema_url == "x""#,
    r#"instrumentation_scope.name == "x" or scope.version == "1" or scope.attributes["k"] == "v" or scope.dropped_attributes_count > 0 or scope.schema_url == "x""#,
    r#"span.name == "x" and (span.attributes["k"] == "v" or -span.attributes["n"] < 0) and 1 + 2 * 3 / 4 - 5 < 0"#,
];

/// The same for the span event context.
const COVERAGE_SPANEVENT: &[&str] = &[
    r#"name == "exception" or time_unix_nano > 0 or time > Unix(0)"#,
    r#"attributes["exception.type"] != nil or dropped_attributes_count > 0 or spanevent.name == "x""#,
    r#"span.name == "x" or resource.attributes["k"] == "v" or instrumentation_scope.name == "x""#,
];

/// For the fuzz target: conditions that read every path and call every
/// converter (plus `extra`, a span condition, when it compiles),
/// evaluated on all the spans of `request`, an encoded
/// `ExportTraceServiceRequest`, as one trace, once with each error mode.
/// `None` when the request does not parse.
pub fn evaluate_request(extra: Option<&str>, request: &[u8]) -> Option<bool> {
    let mut span: Vec<String> = COVERAGE_SPAN.iter().map(|c| c.to_string()).collect();
    if let Some(extra) = extra.filter(|e| check_condition(e).is_ok()) {
        span.insert(0, extra.to_string());
    }
    let spanevent: Vec<String> = COVERAGE_SPANEVENT.iter().map(|c| c.to_string()).collect();
    let mut parts: Vec<(Vec<u8>, Vec<u8>, &[u8])> = Vec::new();
    proto::view::RequestView::new(request)
        .for_each_span(|resource, scope, span| {
            parts.push((
                resource.header.to_vec(),
                scope.header.to_vec(),
                span.bytes(),
            ));
        })
        .ok()?;
    let refs: Vec<SpanRef<'_>> = parts
        .iter()
        .map(|(resource, scope, span)| SpanRef {
            resource,
            scope,
            span,
        })
        .collect();
    let views: Vec<SpanView<'_>> = refs
        .iter()
        .filter_map(|s| SpanView::parse(s.span, 0).ok())
        .collect();
    let mut matched = false;
    for mode in [ErrorMode::Ignore, ErrorMode::Propagate] {
        // The coverage conditions compile: a test checks it.
        let policy = OttlCondition::compile(mode, &span, &spanevent).ok()?;
        matched |= matches!(policy.evaluate(&refs, &views), Outcome::Matched(_));
    }
    Some(matched)
}
