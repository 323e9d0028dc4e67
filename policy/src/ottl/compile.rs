//! A parsed condition into a tree that evaluates against one span (or span
//! event): paths resolved to readers of the span bytes, converters bound to
//! their arguments (regexes compiled here, once), and the grammar's rules on
//! which expression may stand where checked. Everything that can be wrong
//! with a condition before it meets data is found here, with its place.

use std::borrow::Cow;

use proto::view::SpanView;
use regex::Regex;

use super::SyntaxError;
use super::funcs::{self, Func};
use super::lexer::CmpOp;
use super::parser::{Arg, Call, Key, Kind, Node, Path, Segment};
use super::span::{self, SpanCtx};
use super::value::{self, List, Map, Value};

/// Which context a condition list runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Span,
    SpanEvent,
}

/// A condition: something true or false.
#[derive(Debug)]
pub(crate) enum Cond {
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
    Const(bool),
    Cmp(CmpOp, Expr, Expr),
    /// A converter standing alone; it must return a bool.
    Converter(Expr),
}

/// A value.
#[derive(Debug)]
pub(crate) enum Expr {
    Lit(Value<'static>),
    Path(PathRef),
    Math(char, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    List(Vec<Expr>),
    Map(Vec<(String, Expr)>),
    Call(Func, Vec<Expr>),
    Index(Box<Expr>, Vec<Key>),
}

/// A path of the span or span event context, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathRef {
    Name,
    Kind,
    KindString,
    KindDeprecatedString,
    TraceId,
    TraceIdString,
    SpanId,
    SpanIdString,
    ParentSpanId,
    ParentSpanIdString,
    TraceState,
    TraceStateKey(String),
    StartTimeUnixNano,
    EndTimeUnixNano,
    StartTime,
    EndTime,
    Attributes(Vec<Key>),
    DroppedAttributesCount,
    Events,
    DroppedEventsCount,
    Links,
    DroppedLinksCount,
    StatusCode,
    StatusMessage,
    ResourceAttributes(Vec<Key>),
    ResourceDroppedAttributesCount,
    ResourceSchemaUrl,
    ScopeName,
    ScopeVersion,
    ScopeAttributes(Vec<Key>),
    ScopeDroppedAttributesCount,
    ScopeSchemaUrl,
    EventName,
    EventTimeUnixNano,
    EventTime,
    EventAttributes(Vec<Key>),
    EventDroppedAttributesCount,
}

/// Enum symbols (ottlspan's `SymbolTable` and the common ones).
fn enum_value(name: &str) -> Option<i64> {
    Some(match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        _ => return None,
    })
}

pub(crate) struct Compiler {
    pub context: Context,
}

fn err(at: usize, message: String) -> SyntaxError {
    SyntaxError::new(at, message)
}

impl Compiler {
    /// A node where the grammar wants a boolean value.
    pub fn condition(&self, node: &Node) -> Result<Cond, SyntaxError> {
        match &node.kind {
            Kind::Or(terms) => Ok(Cond::Or(
                terms.iter().map(|t| self.condition(t)).collect::<Result<_, _>>()?,
            )),
            Kind::And(terms) => Ok(Cond::And(
                terms.iter().map(|t| self.condition(t)).collect::<Result<_, _>>()?,
            )),
            Kind::Not(inner) => Ok(Cond::Not(Box::new(self.condition(inner)?))),
            Kind::Group(inner) => self.condition(inner),
            Kind::Bool(b) => Ok(Cond::Const(*b)),
            Kind::Cmp(op, a, b) => Ok(Cond::Cmp(*op, self.value(a)?, self.value(b)?)),
            Kind::Call(call) => Ok(Cond::Converter(self.call(call, node.at)?)),
            _ => Err(err(
                node.at,
                "expected a condition: a comparison, true or false, a converter call, or one of these in parentheses".into(),
            )),
        }
    }

    /// A node where the grammar wants a value (a comparison operand, a
    /// converter argument, a list item).
    fn value(&self, node: &Node) -> Result<Expr, SyntaxError> {
        match &node.kind {
            Kind::Nil => Ok(Expr::Lit(Value::Nil)),
            Kind::Str(s) => Ok(Expr::Lit(Value::Str(Cow::Owned(s.clone())))),
            Kind::Bool(b) => Ok(Expr::Lit(Value::Bool(*b))),
            Kind::Bytes(b) => Ok(Expr::Lit(Value::Bytes(Cow::Owned(b.clone())))),
            Kind::Enum(name) => enum_value(name)
                .map(|v| Expr::Lit(Value::Int(v)))
                .ok_or_else(|| err(node.at, format!("enum symbol {name:?} not found"))),
            Kind::List(items) => Ok(Expr::List(
                items.iter().map(|i| self.value(i)).collect::<Result<_, _>>()?,
            )),
            Kind::Map(items) => Ok(Expr::Map(
                items
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.value(v)?)))
                    .collect::<Result<_, SyntaxError>>()?,
            )),
            Kind::Int(_) | Kind::Float(_) | Kind::Path(_) | Kind::Call(_) | Kind::Math(..) | Kind::Neg(_) | Kind::Group(_) => {
                self.math(node)
            }
            Kind::Or(_) | Kind::And(_) | Kind::Not(_) | Kind::Cmp(..) => Err(err(
                node.at,
                "expected a value, found a condition (conditions cannot be compared or passed to converters)".into(),
            )),
        }
    }

    /// A node of a math expression: a number, a path, a converter call,
    /// or an operation on those.
    fn math(&self, node: &Node) -> Result<Expr, SyntaxError> {
        match &node.kind {
            Kind::Int(i) => Ok(Expr::Lit(Value::Int(*i))),
            Kind::Float(f) => Ok(Expr::Lit(Value::Double(*f))),
            Kind::Path(p) => Ok(Expr::Path(self.path(p)?)),
            Kind::Call(c) => self.call(c, node.at),
            Kind::Group(inner) => self.math(inner),
            Kind::Neg(inner) => Ok(match self.math(inner)? {
                // Folded into the literal, as math.go does.
                Expr::Lit(Value::Int(i)) => Expr::Lit(Value::Int(i.wrapping_neg())),
                Expr::Lit(Value::Double(d)) => Expr::Lit(Value::Double(-d)),
                other => Expr::Neg(Box::new(other)),
            }),
            Kind::Math(op, a, b) => Ok(Expr::Math(
                *op,
                Box::new(self.math(a)?),
                Box::new(self.math(b)?),
            )),
            _ => Err(err(
                node.at,
                "expected a number, a path, a converter call or a math expression".into(),
            )),
        }
    }

    fn call(&self, call: &Call, at: usize) -> Result<Expr, SyntaxError> {
        let Some(sig) = funcs::signature(&call.name) else {
            return Err(err(
                at,
                format!(
                    "undefined function {:?} (not a converter tailgate supports; see docs/policies.md, OTTL conditions)",
                    call.name
                ),
            ));
        };
        if sig.span_only && self.context != Context::Span {
            return Err(err(
                at,
                format!(
                    "undefined function {:?} in the spanevent context",
                    call.name
                ),
            ));
        }
        let args = bind(&call.name, sig.params, sig.required, &call.args, at)?;
        let (func, exprs) = self.build(&call.name, &args, at)?;
        let expr = fold(func, exprs);
        Ok(if call.keys.is_empty() {
            expr
        } else {
            Expr::Index(Box::new(expr), call.keys.clone())
        })
    }

    /// The arguments of a call, bound to their parameters, into the
    /// function and the expressions it evaluates.
    fn build(
        &self,
        name: &str,
        args: &[Option<&Node>],
        at: usize,
    ) -> Result<(Func, Vec<Expr>), SyntaxError> {
        let value = |i: usize| -> Result<Expr, SyntaxError> {
            match args.get(i).copied().flatten() {
                Some(n) => self.value(n),
                None => Err(err(at, format!("missing argument {i} of {name}"))),
            }
        };
        let literal_string = |i: usize, what: &str| -> Result<String, SyntaxError> {
            match args.get(i).copied().flatten() {
                Some(Node {
                    kind: Kind::Str(s), ..
                }) => Ok(s.clone()),
                Some(n) => Err(err(
                    n.at,
                    format!("{name}: {what} must be a string literal"),
                )),
                None => Err(err(at, format!("{name}: missing {what}"))),
            }
        };
        let one = |f: Func| -> Result<(Func, Vec<Expr>), SyntaxError> { Ok((f, vec![value(0)?])) };
        match name {
            "IsMatch" => {
                let pattern = literal_string(1, "pattern")?;
                let re = Regex::new(&pattern).map_err(|e| {
                    err(
                        at,
                        format!(
                            "the pattern supplied to IsMatch is not a valid regexp pattern: {e}"
                        ),
                    )
                })?;
                Ok((Func::IsMatch(Box::new(re)), vec![value(0)?]))
            }
            "IsString" => one(Func::IsString),
            "IsInt" => one(Func::IsInt),
            "IsDouble" => one(Func::IsDouble),
            "IsBool" => one(Func::IsBool),
            "IsMap" => one(Func::IsMap),
            "IsList" => one(Func::IsList),
            "IsRootSpan" => Ok((Func::IsRootSpan, Vec::new())),
            "Len" => one(Func::Len),
            "Concat" => {
                let Some(Node {
                    kind: Kind::List(items),
                    ..
                }) = args.first().copied().flatten()
                else {
                    let place = args.first().copied().flatten().map_or(at, |n| n.at);
                    return Err(err(
                        place,
                        "Concat: vals must be a list, such as [a, b]".into(),
                    ));
                };
                let mut exprs = vec![value(1)?];
                for item in items {
                    exprs.push(self.value(item)?);
                }
                Ok((Func::Concat, exprs))
            }
            "ConvertCase" => {
                let case = literal_string(1, "toCase")?;
                let f = match case.as_str() {
                    "lower" => Func::ToLowerCase,
                    "upper" => Func::ToUpperCase,
                    "snake" => Func::ToSnakeCase,
                    "camel" => Func::ToCamelCase,
                    other => {
                        return Err(err(
                            at,
                            format!(
                                "invalid case: {other}, allowed cases are: lower, upper, snake, camel"
                            ),
                        ));
                    }
                };
                one(f)
            }
            "ToLowerCase" => one(Func::ToLowerCase),
            "ToUpperCase" => one(Func::ToUpperCase),
            "ToSnakeCase" => one(Func::ToSnakeCase),
            "ToCamelCase" => one(Func::ToCamelCase),
            "Substring" => Ok((Func::Substring, vec![value(0)?, value(1)?, value(2)?])),
            "Split" => Ok((
                Func::Split(literal_string(1, "delimiter")?),
                vec![value(0)?],
            )),
            "HasPrefix" => Ok((
                Func::HasPrefix(literal_string(1, "prefix")?),
                vec![value(0)?],
            )),
            "HasSuffix" => Ok((
                Func::HasSuffix(literal_string(1, "suffix")?),
                vec![value(0)?],
            )),
            "ContainsValue" => Ok((Func::ContainsValue, vec![value(0)?, value(1)?])),
            "Int" => one(Func::Int),
            "Double" => one(Func::Double),
            "String" => one(Func::String),
            "Hex" => one(Func::Hex),
            "Duration" => one(Func::Duration),
            "Unix" => {
                let mut exprs = vec![value(0)?];
                if args.get(1).copied().flatten().is_some() {
                    exprs.push(value(1)?);
                }
                Ok((Func::Unix, exprs))
            }
            "Time" => {
                for (i, what) in [(2, "location"), (3, "locale")] {
                    if let Some(n) = args.get(i).copied().flatten() {
                        return Err(err(
                            n.at,
                            format!(
                                "Time: the {what} argument is not supported (times without a zone are UTC)"
                            ),
                        ));
                    }
                }
                let format = literal_string(1, "format")?;
                let pieces =
                    super::strptime::compile(&format).map_err(|e| err(at, format!("Time: {e}")))?;
                Ok((Func::Time(pieces), vec![value(0)?]))
            }
            "UnixNano" => one(Func::UnixNano),
            "UnixMicro" => one(Func::UnixMicro),
            "UnixMilli" => one(Func::UnixMilli),
            "UnixSeconds" => one(Func::UnixSeconds),
            "Nanoseconds" => one(Func::Nanoseconds),
            "Microseconds" => one(Func::Microseconds),
            "Milliseconds" => one(Func::Milliseconds),
            "Seconds" => one(Func::Seconds),
            "Minutes" => one(Func::Minutes),
            "Hours" => one(Func::Hours),
            "TraceID" => one(Func::TraceId),
            "SpanID" => one(Func::SpanId),
            other => Err(err(at, format!("undefined function {other:?}"))),
        }
    }

    fn path(&self, path: &Path) -> Result<PathRef, SyntaxError> {
        let segs = &path.segments;
        let Some(first) = segs.first() else {
            return Err(err(0, "empty path".into()));
        };
        let (ctx, rest): (&str, &[Segment]) = match (first.name.as_str(), self.context) {
            ("span", _) | ("resource", _) | ("instrumentation_scope", _) | ("scope", _) => {
                (first.name.as_str(), &segs[1..])
            }
            ("spanevent", Context::SpanEvent) => ("spanevent", &segs[1..]),
            ("spanevent", Context::Span) => {
                return Err(err(
                    first.at,
                    "the spanevent context is not available in span conditions (use a spanevent condition)".into(),
                ));
            }
            (_, Context::Span) => ("span", &segs[..]),
            (_, Context::SpanEvent) => ("spanevent", &segs[..]),
        };
        if !first.keys.is_empty() && rest.len() < segs.len() {
            return Err(err(first.at, format!("context {ctx:?} cannot be indexed")));
        }
        let full = path_text(path);
        let unknown = |seg: &Segment| {
            err(
                seg.at,
                format!(
                    "segment {:?} from path {full:?} is not a valid path for the {ctx} context",
                    seg.name
                ),
            )
        };
        let Some(head) = rest.first() else {
            return Err(err(
                first.at,
                format!("path {full:?} names the {ctx} context but no field of it"),
            ));
        };
        let next = rest.get(1);
        let keys = &head.keys;
        let no_keys = |r: PathRef| -> Result<PathRef, SyntaxError> {
            if !keys.is_empty() {
                return Err(err(
                    head.at,
                    format!("path {full:?}: {} cannot be indexed", head.name),
                ));
            }
            Ok(r)
        };
        // A path ends at a leaf; `.string` and friends are leaves too.
        let leaf = |r: PathRef, depth: usize| -> Result<PathRef, SyntaxError> {
            match rest.get(depth) {
                Some(extra) => Err(unknown(extra)),
                None => Ok(r),
            }
        };
        let with_suffix =
            |plain: PathRef, suffixes: &[(&str, PathRef)]| -> Result<PathRef, SyntaxError> {
                match next {
                    None => no_keys(plain),
                    Some(n) => match suffixes.iter().find(|(s, _)| *s == n.name) {
                        Some((_, r)) if n.keys.is_empty() => leaf(r.clone(), 2),
                        _ => Err(unknown(n)),
                    },
                }
            };
        match ctx {
            "span" => match head.name.as_str() {
                "name" => leaf(no_keys(PathRef::Name)?, 1),
                "kind" => with_suffix(
                    PathRef::Kind,
                    &[("string", PathRef::KindString), ("deprecated_string", PathRef::KindDeprecatedString)],
                ),
                "trace_id" => with_suffix(PathRef::TraceId, &[("string", PathRef::TraceIdString)]),
                "span_id" => with_suffix(PathRef::SpanId, &[("string", PathRef::SpanIdString)]),
                "parent_span_id" => {
                    with_suffix(PathRef::ParentSpanId, &[("string", PathRef::ParentSpanIdString)])
                }
                "trace_state" => match keys.as_slice() {
                    [] => leaf(PathRef::TraceState, 1),
                    [Key::Str(k)] => leaf(PathRef::TraceStateKey(k.clone()), 1),
                    _ => Err(err(head.at, "must provide exactly 1 string key when accessing trace_state".into())),
                },
                "start_time_unix_nano" => leaf(no_keys(PathRef::StartTimeUnixNano)?, 1),
                "end_time_unix_nano" => leaf(no_keys(PathRef::EndTimeUnixNano)?, 1),
                "start_time" => leaf(no_keys(PathRef::StartTime)?, 1),
                "end_time" => leaf(no_keys(PathRef::EndTime)?, 1),
                "attributes" => leaf(PathRef::Attributes(keys.clone()), 1),
                "dropped_attributes_count" => leaf(no_keys(PathRef::DroppedAttributesCount)?, 1),
                "events" => leaf(no_keys(PathRef::Events)?, 1),
                "dropped_events_count" => leaf(no_keys(PathRef::DroppedEventsCount)?, 1),
                "links" => leaf(no_keys(PathRef::Links)?, 1),
                "dropped_links_count" => leaf(no_keys(PathRef::DroppedLinksCount)?, 1),
                "status" => match next {
                    Some(n) if n.name == "code" && n.keys.is_empty() => leaf(no_keys(PathRef::StatusCode)?, 2),
                    Some(n) if n.name == "message" && n.keys.is_empty() => {
                        leaf(no_keys(PathRef::StatusMessage)?, 2)
                    }
                    Some(n) => Err(unknown(n)),
                    None => Err(err(
                        head.at,
                        "path \"status\" as a whole is not supported: use status.code or status.message".into(),
                    )),
                },
                "resource" | "instrumentation_scope" => {
                    // Legacy spelling `resource.attributes` inside the span
                    // context resolves as the resource context.
                    let sub = Path { segments: rest.to_vec() };
                    self.path(&sub)
                }
                "cache" => Err(err(head.at, "path \"cache\" is not supported (conditions cannot write a cache)".into())),
                _ => Err(unknown(head)),
            },
            "resource" => match head.name.as_str() {
                "attributes" => leaf(PathRef::ResourceAttributes(keys.clone()), 1),
                "dropped_attributes_count" => leaf(no_keys(PathRef::ResourceDroppedAttributesCount)?, 1),
                "schema_url" => leaf(no_keys(PathRef::ResourceSchemaUrl)?, 1),
                _ => Err(unknown(head)),
            },
            "instrumentation_scope" | "scope" => match head.name.as_str() {
                "name" => leaf(no_keys(PathRef::ScopeName)?, 1),
                "version" => leaf(no_keys(PathRef::ScopeVersion)?, 1),
                "attributes" => leaf(PathRef::ScopeAttributes(keys.clone()), 1),
                "dropped_attributes_count" => leaf(no_keys(PathRef::ScopeDroppedAttributesCount)?, 1),
                "schema_url" => leaf(no_keys(PathRef::ScopeSchemaUrl)?, 1),
                _ => Err(unknown(head)),
            },
            _ => match head.name.as_str() {
                "name" => leaf(no_keys(PathRef::EventName)?, 1),
                "time_unix_nano" => leaf(no_keys(PathRef::EventTimeUnixNano)?, 1),
                "time" => leaf(no_keys(PathRef::EventTime)?, 1),
                "attributes" => leaf(PathRef::EventAttributes(keys.clone()), 1),
                "dropped_attributes_count" => leaf(no_keys(PathRef::EventDroppedAttributesCount)?, 1),
                "span" | "resource" | "instrumentation_scope" | "scope" => {
                    let sub = Path { segments: rest.to_vec() };
                    Compiler { context: Context::Span }.path(&sub)
                }
                _ => Err(unknown(head)),
            },
        }
    }
}

/// A call whose arguments are all literals is evaluated once, here
/// (`Duration("500ms")`, `TraceID(0x…)`), unless it reads the span
/// (`IsRootSpan`) or fails: an error stays an evaluation error, so that
/// `error_mode` still applies to it.
fn fold(func: Func, exprs: Vec<Expr>) -> Expr {
    if matches!(func, Func::IsRootSpan) || !exprs.iter().all(|e| matches!(e, Expr::Lit(_))) {
        return Expr::Call(func, exprs);
    }
    // The smallest valid span: what a pure converter never reads.
    let mut bytes = vec![0x0a, 16];
    bytes.extend([0; 16]);
    bytes.extend([0x12, 8]);
    bytes.extend([0; 8]);
    let folded = SpanView::parse(&bytes, 0).ok().and_then(|view| {
        let cx = SpanCtx {
            span: &view,
            resource: &[],
            scope: &[],
            event: None,
        };
        funcs::call(&func, &exprs, &cx)
            .ok()
            .and_then(|v| to_static(&v))
    });
    match folded {
        Some(v) => Expr::Lit(v),
        None => Expr::Call(func, exprs),
    }
}

/// A value that owns its data; `None` for values that point into a span.
fn to_static(v: &Value<'_>) -> Option<Value<'static>> {
    Some(match v {
        Value::Nil => Value::Nil,
        Value::Bool(b) => Value::Bool(*b),
        Value::Int(i) => Value::Int(*i),
        Value::Double(d) => Value::Double(*d),
        Value::Str(s) => Value::Str(Cow::Owned(s.to_string())),
        Value::Bytes(b) => Value::Bytes(Cow::Owned(b.to_vec())),
        Value::TraceId(id) => Value::TraceId(*id),
        Value::SpanId(id) => Value::SpanId(*id),
        Value::Time(t) => Value::Time(*t),
        Value::Duration(d) => Value::Duration(*d),
        Value::List(List::Owned(items)) => Value::List(List::Owned(
            items.iter().map(to_static).collect::<Option<_>>()?,
        )),
        Value::Map(Map::Owned(items)) => Value::Map(Map::Owned(
            items
                .iter()
                .map(|(k, v)| Some((k.clone(), to_static(v)?)))
                .collect::<Option<_>>()?,
        )),
        Value::List(List::Wire(_)) | Value::Map(Map::Wire(..)) | Value::Records(..) => return None,
    })
}

fn path_text(p: &Path) -> String {
    p.segments
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// Binds arguments to parameters: positional first, then by name.
fn bind<'n>(
    name: &str,
    params: &[&str],
    required: usize,
    args: &'n [Arg],
    at: usize,
) -> Result<Vec<Option<&'n Node>>, SyntaxError> {
    let mut out: Vec<Option<&Node>> = vec![None; params.len()];
    let mut named = false;
    for (i, arg) in args.iter().enumerate() {
        match &arg.name {
            None => {
                if named {
                    return Err(err(
                        arg.value.at,
                        format!("{name}: unnamed argument after a named one"),
                    ));
                }
                if i >= params.len() {
                    return Err(err(
                        arg.value.at,
                        format!(
                            "too many arguments to {name}: expected at most {}, got {}",
                            params.len(),
                            args.len()
                        ),
                    ));
                }
                out[i] = Some(&arg.value);
            }
            Some(n) => {
                named = true;
                let Some(p) = params.iter().position(|p| p == n) else {
                    return Err(err(
                        arg.value.at,
                        format!("{name} has no parameter named {n:?}"),
                    ));
                };
                if out[p].is_some() {
                    return Err(err(
                        arg.value.at,
                        format!("{name}: argument {n:?} given twice"),
                    ));
                }
                out[p] = Some(&arg.value);
            }
        }
    }
    if let Some(missing) = out.iter().take(required).position(Option::is_none) {
        return Err(err(
            at,
            format!(
                "incorrect number of arguments to {name}: expected {required}{}, got {} (missing {})",
                if params.len() > required {
                    " or more"
                } else {
                    ""
                },
                args.len(),
                params[missing]
            ),
        ));
    }
    Ok(out)
}

impl Cond {
    pub fn eval<'a>(&'a self, cx: &SpanCtx<'a>) -> Result<bool, String> {
        match self {
            Cond::Or(terms) => {
                for t in terms {
                    if t.eval(cx)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Cond::And(terms) => {
                for t in terms {
                    if !t.eval(cx)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Cond::Not(inner) => Ok(!inner.eval(cx)?),
            Cond::Const(b) => Ok(*b),
            Cond::Cmp(op, a, b) => {
                let a = a.eval(cx)?;
                let b = b.eval(cx)?;
                Ok(value::compare(&a, &b, *op))
            }
            Cond::Converter(e) => match e.eval(cx)? {
                Value::Bool(b) => Ok(b),
                other => Err(format!(
                    "value returned from Converter in constant expression must be bool but got {}",
                    other.type_name()
                )),
            },
        }
    }
}

/// A literal, borrowed from the compiled condition rather than copied.
fn borrow_lit<'a>(v: &'a Value<'static>) -> Value<'a> {
    match v {
        Value::Str(s) => Value::Str(Cow::Borrowed(s.as_ref())),
        Value::Bytes(b) => Value::Bytes(Cow::Borrowed(b.as_ref())),
        other => other.clone(),
    }
}

/// `GetMapValue` then `getIndexableValue` (ctxutil): the first key must be
/// a string; a missing key gives nil; indexing anything but a map or a
/// list is an error.
pub(crate) fn index<'a>(mut v: Value<'a>, keys: &[Key]) -> Result<Value<'a>, String> {
    for key in keys {
        v = match (&v, key) {
            (Value::Map(m), Key::Str(k)) => match m.get(k) {
                Some(x) => x,
                None => return Ok(Value::Nil),
            },
            (Value::Map(_), Key::Int(_)) => {
                return Err(
                    "unable to resolve a string index in map: non-string indexing is not supported"
                        .into(),
                );
            }
            (Value::List(l), Key::Int(i)) => {
                let items = l.items();
                match usize::try_from(*i)
                    .ok()
                    .and_then(|i| items.into_iter().nth(i))
                {
                    Some(x) => x,
                    None => return Err(format!("index {i} out of bounds")),
                }
            }
            (Value::List(_), Key::Str(_)) => {
                return Err("unable to resolve an integer index in slice: could not resolve key for map/slice, expecting 'int64' but got 'string'".into());
            }
            (other, _) => {
                return Err(format!(
                    "type {} does not support string indexing",
                    other.type_name()
                ));
            }
        };
    }
    Ok(v)
}

fn attributes<'a>(msg: &'a [u8], field: u32, keys: &[Key]) -> Result<Value<'a>, String> {
    let map = Value::Map(Map::Wire(msg, field));
    match keys.first() {
        None => Ok(map),
        Some(Key::Int(_)) => Err("non-string indexing is not supported".into()),
        Some(Key::Str(_)) => index(map, keys),
    }
}

fn kind_string(kind: i32) -> &'static str {
    match kind {
        0 => "Unspecified",
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "",
    }
}

fn kind_deprecated_string(kind: i32) -> &'static str {
    match kind {
        0 => "SPAN_KIND_UNSPECIFIED",
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "",
    }
}

fn str_value(s: &str) -> Value<'_> {
    Value::Str(Cow::Borrowed(s))
}

impl PathRef {
    pub fn eval<'a>(&self, cx: &SpanCtx<'a>) -> Result<Value<'a>, String> {
        let s = cx.span;
        let event = || cx.event.unwrap_or(&[]);
        Ok(match self {
            PathRef::Name => str_value(s.name()),
            PathRef::Kind => Value::Int(i64::from(s.kind)),
            PathRef::KindString => str_value(kind_string(s.kind)),
            PathRef::KindDeprecatedString => str_value(kind_deprecated_string(s.kind)),
            PathRef::TraceId => Value::TraceId(s.trace_id.0),
            PathRef::TraceIdString => Value::Str(Cow::Owned(value::hex(&s.trace_id.0))),
            PathRef::SpanId => Value::SpanId(s.span_id.0),
            PathRef::SpanIdString => Value::Str(Cow::Owned(value::hex(&s.span_id.0))),
            PathRef::ParentSpanId => Value::SpanId(s.parent_span_id.map_or([0; 8], |p| p.0)),
            PathRef::ParentSpanIdString => Value::Str(Cow::Owned(value::hex(
                &s.parent_span_id.map_or([0; 8], |p| p.0),
            ))),
            PathRef::TraceState => str_value(s.trace_state()),
            PathRef::TraceStateKey(k) => {
                // An invalid tracestate gives nil; a missing key "".
                match crate::tracestate::parse(s.trace_state()) {
                    Some(members) => str_value(
                        members
                            .into_iter()
                            .find_map(|(mk, v)| (mk == k).then_some(v))
                            .unwrap_or(""),
                    ),
                    None => Value::Nil,
                }
            }
            PathRef::StartTimeUnixNano => Value::Int(s.start_time_unix_nano as i64),
            PathRef::EndTimeUnixNano => Value::Int(s.end_time_unix_nano as i64),
            PathRef::StartTime => Value::Time(i128::from(s.start_time_unix_nano as i64)),
            PathRef::EndTime => Value::Time(i128::from(s.end_time_unix_nano as i64)),
            PathRef::Attributes(keys) => return attributes(cx.span_bytes(), 9, keys),
            PathRef::DroppedAttributesCount => Value::Int(span::uint(cx.span_bytes(), 10)),
            PathRef::Events => Value::Records(cx.span_bytes(), 11),
            PathRef::DroppedEventsCount => Value::Int(span::uint(cx.span_bytes(), 12)),
            PathRef::Links => Value::Records(cx.span_bytes(), 13),
            PathRef::DroppedLinksCount => Value::Int(span::uint(cx.span_bytes(), 14)),
            PathRef::StatusCode => Value::Int(i64::from(s.status_code)),
            PathRef::StatusMessage => str_value(span::string(cx.status(), 2)),
            PathRef::ResourceAttributes(keys) => return attributes(cx.resource_message(), 1, keys),
            PathRef::ResourceDroppedAttributesCount => {
                Value::Int(span::uint(cx.resource_message(), 2))
            }
            PathRef::ResourceSchemaUrl => str_value(span::string(cx.resource, 3)),
            PathRef::ScopeName => str_value(span::string(cx.scope_message(), 1)),
            PathRef::ScopeVersion => str_value(span::string(cx.scope_message(), 2)),
            PathRef::ScopeAttributes(keys) => return attributes(cx.scope_message(), 3, keys),
            PathRef::ScopeDroppedAttributesCount => Value::Int(span::uint(cx.scope_message(), 4)),
            PathRef::ScopeSchemaUrl => str_value(span::string(cx.scope, 3)),
            PathRef::EventName => str_value(span::string(event(), 2)),
            PathRef::EventTimeUnixNano => Value::Int(span::fixed64(event(), 1) as i64),
            PathRef::EventTime => Value::Time(i128::from(span::fixed64(event(), 1) as i64)),
            PathRef::EventAttributes(keys) => return attributes(event(), 3, keys),
            PathRef::EventDroppedAttributesCount => Value::Int(span::uint(event(), 4)),
        })
    }
}

impl Expr {
    pub fn eval<'a>(&'a self, cx: &SpanCtx<'a>) -> Result<Value<'a>, String> {
        match self {
            Expr::Lit(v) => Ok(borrow_lit(v)),
            Expr::Path(p) => p.eval(cx),
            Expr::Math(op, a, b) => value::math(a.eval(cx)?, *op, b.eval(cx)?),
            Expr::Neg(inner) => match inner.eval(cx)? {
                Value::Int(i) => Ok(Value::Int(i.wrapping_neg())),
                Value::Double(d) => Ok(Value::Double(-d)),
                other => Err(format!(
                    "unsupported unary minus operation on type {}",
                    other.type_name()
                )),
            },
            Expr::List(items) => Ok(Value::List(List::Owned(
                items.iter().map(|i| i.eval(cx)).collect::<Result<_, _>>()?,
            ))),
            Expr::Map(items) => Ok(Value::Map(Map::Owned(
                items
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.eval(cx)?)))
                    .collect::<Result<_, String>>()?,
            ))),
            Expr::Call(f, args) => funcs::call(f, args, cx),
            Expr::Index(inner, keys) => index(inner.eval(cx)?, keys),
        }
    }
}
