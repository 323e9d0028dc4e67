//! The Collector's own vectors for OTTL conditions, as data: each case is
//! named after the Go test and case it comes from (pkg/ottl parser, boolean
//! and comparison tests, the span and span event context tests, the
//! ottlfuncs converter tests, and the tail sampling processor's
//! ottl_test.go), run against real encoded spans.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use proto::view::SpanView;
use proto::write::SpanRef;

use super::compile::Context;
use super::span::{SpanCtx, find_event};
use super::{ErrorMode, Match, OttlCondition, Outcome, compile_condition};
use crate::Outcome as Decision;
use crate::testutil::{TestTrace, decide, kv, policies, s};

fn i(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

fn list(items: Vec<any_value::Value>) -> any_value::Value {
    any_value::Value::ArrayValue(ArrayValue {
        values: items
            .into_iter()
            .map(|v| AnyValue { value: Some(v) })
            .collect(),
    })
}

fn map(items: Vec<KeyValue>) -> any_value::Value {
    any_value::Value::KvlistValue(KeyValueList { values: items })
}

const TRACE_ID: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// The span every context case reads (after ottlspan's span_test.go
/// fixture): name "bear", a server span with an error status, attributes
/// of every type, two events and a link.
fn fixture_span(root: bool) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        parent_span_id: if root {
            Vec::new()
        } else {
            vec![8, 7, 6, 5, 4, 3, 2, 1]
        },
        trace_state: "key1=val1,key2=val2".into(),
        name: "bear".into(),
        kind: 2,
        start_time_unix_nano: 100,
        end_time_unix_nano: 500,
        attributes: vec![
            kv("str", s("val")),
            kv("bool", any_value::Value::BoolValue(true)),
            kv("int", i(10)),
            kv("double", any_value::Value::DoubleValue(1.2)),
            kv("bytes", any_value::Value::BytesValue(vec![1, 2, 3])),
            kv("arr_str", list(vec![s("one"), s("two")])),
            kv(
                "map",
                map(vec![
                    kv("k", s("v")),
                    kv("nested", list(vec![i(1), map(vec![kv("deep", s("x"))])])),
                ]),
            ),
            kv("http.method", s("GET")),
            KeyValue {
                key: "empty".into(),
                value: None,
                ..KeyValue::default()
            },
        ],
        dropped_attributes_count: 5,
        events: vec![
            Event {
                time_unix_nano: 1000,
                name: "event1".into(),
                attributes: vec![kv("e", s("1"))],
                dropped_attributes_count: 0,
            },
            Event {
                time_unix_nano: 2000,
                name: "event2".into(),
                attributes: Vec::new(),
                dropped_attributes_count: 6,
            },
        ],
        dropped_events_count: 3,
        links: vec![Link {
            trace_id: TRACE_ID.to_vec(),
            span_id: vec![9; 8],
            ..Link::default()
        }],
        dropped_links_count: 4,
        status: Some(Status {
            code: 2,
            message: "bad".into(),
        }),
        flags: 0,
    }
}

fn fixture_resource() -> Vec<u8> {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s("svc")), kv("res_int", i(7))],
            dropped_attributes_count: 2,
            ..Resource::default()
        }),
        schema_url: "https://res".into(),
        ..ResourceSpans::default()
    }
    .encode_to_vec()
}

fn fixture_scope() -> Vec<u8> {
    ScopeSpans {
        scope: Some(InstrumentationScope {
            name: "lib".into(),
            version: "1.0".into(),
            attributes: vec![kv("scope_attr", s("s"))],
            dropped_attributes_count: 1,
        }),
        schema_url: "https://scope".into(),
        ..ScopeSpans::default()
    }
    .encode_to_vec()
}

/// `Ok(result)` or `Err(message)` of one condition on the fixture: in the
/// span context, or in the span event context on the first event.
fn eval_on(context: Context, root: bool, text: &str) -> Result<bool, String> {
    let cond = compile_condition(text, context).map_err(|e| format!("load: {}", e.message))?;
    let bytes = fixture_span(root).encode_to_vec();
    let view = SpanView::parse(&bytes, 0).expect("fixture parses");
    let (resource, scope) = (fixture_resource(), fixture_scope());
    let mut cx = SpanCtx {
        span: &view,
        resource: &resource,
        scope: &scope,
        event: None,
    };
    if context == Context::SpanEvent {
        let mut first = None;
        find_event(view.bytes(), |e| {
            first = Some(e);
            true
        });
        cx.event = first;
    }
    cond.eval(&cx)
}

fn eval(text: &str) -> Result<bool, String> {
    eval_on(Context::Span, false, text)
}

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    True,
    False,
    /// An error while evaluating.
    Error,
    /// Refused when loading.
    Load,
}

fn check(cases: &[(&str, &str, Want)], context: Context) {
    let mut failures = Vec::new();
    for (name, text, want) in cases {
        let got = eval_on(context, false, text);
        let ok = match (want, &got) {
            (Want::True, Ok(true)) | (Want::False, Ok(false)) => true,
            (Want::Error, Err(e)) => !e.starts_with("load:"),
            (Want::Load, Err(e)) => e.starts_with("load:"),
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: {text}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

use Want::{Error, False, Load, True};

#[test]
fn boolean_value_test_new_comparison_evaluator() {
    // TEST_ENUM is 0, TEST_ENUM_TWO is 2 there: SPAN_KIND_UNSPECIFIED and
    // SPAN_KIND_SERVER here. The path `name` reads "bear".
    check(
        &[
            ("literals match", r#""hello" == "hello""#, True),
            ("literals don't match", r#""hello" != "goodbye""#, True),
            ("path expression matches", r#"name == "bear""#, True),
            ("path expression not matches", r#"name != "cat""#, True),
            ("compare Enum to int", "SPAN_KIND_UNSPECIFIED == 0", True),
            ("compare int to Enum", "2 == SPAN_KIND_SERVER", True),
            ("2 > Enum 0", "2 > SPAN_KIND_UNSPECIFIED", True),
            ("not 2 < Enum 0", "2 < SPAN_KIND_UNSPECIFIED", False),
            ("not 6 == 3.14", "6 == 3.14", False),
            ("6 != 3.14", "6 != 3.14", True),
            ("6 > 3.14", "6 > 3.14", True),
            ("6 >= 3.14", "6 >= 3.14", True),
            ("not 6 < 3.14", "6 < 3.14", False),
            ("not 6 <= 3.14", "6 <= 3.14", False),
            ("'foo' > 'bar'", r#""foo" > "bar""#, True),
            ("'foo' > bear", r#""foo" > name"#, True),
            ("true > false", "true > false", True),
            ("not true > 0", "true > 0", False),
            ("not 'true' == true", r#""true" == true"#, False),
            ("[]byte('a') < []byte('b')", "0x61 < 0x62", True),
            ("nil == nil", "nil == nil", True),
            (
                "nil == missing attribute",
                r#"nil == attributes["missing"]"#,
                True,
            ),
        ],
        Context::Span,
    );
}

#[test]
fn boolean_value_test_new_condition_evaluator_invalid() {
    check(
        &[("unknown Path", r#"SYMBOL_NOT_FOUND == "trash""#, Load)],
        Context::Span,
    );
}

#[test]
fn boolean_value_test_new_boolean_expression_evaluator() {
    check(
        &[
            ("a", "true and false", False),
            ("b", "true and true", True),
            ("c", "true and true and false", False),
            ("d", "true or false", True),
            ("e", "false or true", True),
            ("f", "false or false", False),
            ("g", "false and false or true", True),
            ("h", "true and (true or false)", True),
            ("not of a group", "not (true and false)", True),
            (
                "not binds to the comparison",
                r#"not name == "bear" or true"#,
                True,
            ),
            (
                "short circuit skips an erroring operand",
                r#"false and Substring(attributes["missing"], 0, 1) == "x""#,
                False,
            ),
            (
                "an erroring operand before the decision fails",
                r#"Substring(attributes["missing"], 0, 1) == "x" or true"#,
                Error,
            ),
        ],
        Context::Span,
    );
}

#[test]
fn compare_test_through_conditions() {
    // pkg/ottl/compare_test.go, Test_compare, with attribute values on the
    // left (pdata's types as OTTL sees them).
    check(
        &[
            ("string == string", r#"attributes["str"] == "val""#, True),
            ("string < string", r#"attributes["str"] < "zzz""#, True),
            ("int == double", r#"attributes["int"] == 10.0"#, True),
            ("int < double", r#"attributes["int"] < 10.5"#, True),
            ("double > int", r#"attributes["double"] > 1"#, True),
            ("double == double", r#"attributes["double"] == 1.2"#, True),
            ("bool == bool", r#"attributes["bool"] == true"#, True),
            ("bool != int", r#"attributes["bool"] != 1"#, True),
            ("bool == int is false", r#"attributes["bool"] == 1"#, False),
            (
                "string vs int ordering is false",
                r#"attributes["str"] > 1"#,
                False,
            ),
            (
                "string vs int inequality",
                r#"attributes["str"] != 1"#,
                True,
            ),
            ("bytes == bytes", r#"attributes["bytes"] == 0x010203"#, True),
            ("bytes < bytes", r#"attributes["bytes"] < 0x0104"#, True),
            (
                "bytes vs string",
                r#"attributes["bytes"] == "\x01\x02\x03""#,
                False,
            ),
            ("missing is nil", r#"attributes["missing"] == nil"#, True),
            (
                "missing is not a string",
                r#"attributes["missing"] == """#,
                False,
            ),
            (
                "missing != string",
                r#"attributes["missing"] != "val""#,
                True,
            ),
            (
                "nil ordering is false",
                r#"attributes["missing"] < 1"#,
                False,
            ),
            ("nil <= nil", r#"attributes["missing"] <= nil"#, True),
            ("empty value is nil", r#"attributes["empty"] == nil"#, True),
            (
                "list == list literal",
                r#"attributes["arr_str"] == ["one", "two"]"#,
                True,
            ),
            (
                "list order matters",
                r#"attributes["arr_str"] == ["two", "one"]"#,
                False,
            ),
            (
                "list has no order",
                r#"attributes["arr_str"] < ["z"]"#,
                False,
            ),
            (
                "map == map literal",
                r#"attributes["map"] == {"k": "v", "nested": [1, {"deep": "x"}]}"#,
                True,
            ),
            (
                "map != smaller map",
                r#"attributes["map"] != {"k": "v"}"#,
                True,
            ),
            (
                "trace id vs bytes is unequal",
                "trace_id == 0x0102030405060708090a0b0c0d0e0f10",
                False,
            ),
        ],
        Context::Span,
    );
}

#[test]
fn ottlspan_span_test_paths() {
    // pkg/ottl/contexts/internal/ctxspan/span_test.go: each path of the
    // span context, legacy and context-prefixed.
    check(
        &[
            (
                "trace_id",
                "trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)",
                True,
            ),
            (
                "trace_id string",
                r#"trace_id.string == "0102030405060708090a0b0c0d0e0f10""#,
                True,
            ),
            ("span_id", "span_id == SpanID(0x0102030405060708)", True),
            (
                "span_id string",
                r#"span_id.string == "0102030405060708""#,
                True,
            ),
            (
                "parent_span_id",
                "parent_span_id == SpanID(0x0807060504030201)",
                True,
            ),
            (
                "parent_span_id string",
                r#"parent_span_id.string == "0807060504030201""#,
                True,
            ),
            (
                "trace_state",
                r#"trace_state == "key1=val1,key2=val2""#,
                True,
            ),
            ("trace_state key", r#"trace_state["key1"] == "val1""#, True),
            (
                "trace_state missing key",
                r#"trace_state["nope"] == """#,
                True,
            ),
            ("name", r#"name == "bear""#, True),
            ("kind", "kind == SPAN_KIND_SERVER", True),
            ("kind int", "kind == 2", True),
            ("string kind", r#"kind.string == "Server""#, True),
            (
                "deprecated string kind",
                r#"kind.deprecated_string == "SPAN_KIND_SERVER""#,
                True,
            ),
            ("start_time_unix_nano", "start_time_unix_nano == 100", True),
            ("end_time_unix_nano", "end_time_unix_nano == 500", True),
            ("start_time", "start_time == Unix(0, 100)", True),
            ("end_time", "end_time > start_time", True),
            (
                "duration",
                r#"end_time - start_time == Duration("400ns")"#,
                True,
            ),
            ("attributes", r#"attributes["str"] == "val""#, True),
            ("attributes bool", r#"attributes["bool"] == true"#, True),
            ("attributes int", r#"attributes["int"] == 10"#, True),
            ("attributes double", r#"attributes["double"] == 1.2"#, True),
            (
                "attributes bytes",
                r#"attributes["bytes"] == 0x010203"#,
                True,
            ),
            (
                "attributes array",
                r#"attributes["arr_str"][1] == "two""#,
                True,
            ),
            (
                "attributes nested map",
                r#"attributes["map"]["k"] == "v""#,
                True,
            ),
            (
                "attributes nested slice map",
                r#"attributes["map"]["nested"][1]["deep"] == "x""#,
                True,
            ),
            (
                "attributes nested missing key",
                r#"attributes["map"]["nope"] == nil"#,
                True,
            ),
            ("attributes whole map", r#"Len(attributes) == 9"#, True),
            (
                "dropped_attributes_count",
                "dropped_attributes_count == 5",
                True,
            ),
            ("events", "Len(events) == 2", True),
            ("dropped_events_count", "dropped_events_count == 3", True),
            ("links", "Len(links) == 1", True),
            ("dropped_links_count", "dropped_links_count == 4", True),
            ("status code", "status.code == STATUS_CODE_ERROR", True),
            ("status message", r#"status.message == "bad""#, True),
            (
                "resource attributes",
                r#"resource.attributes["service.name"] == "svc""#,
                True,
            ),
            (
                "resource dropped",
                "resource.dropped_attributes_count == 2",
                True,
            ),
            (
                "resource schema_url",
                r#"resource.schema_url == "https://res""#,
                True,
            ),
            ("scope name", r#"instrumentation_scope.name == "lib""#, True),
            (
                "scope version",
                r#"instrumentation_scope.version == "1.0""#,
                True,
            ),
            (
                "scope attributes",
                r#"instrumentation_scope.attributes["scope_attr"] == "s""#,
                True,
            ),
            (
                "scope dropped",
                "instrumentation_scope.dropped_attributes_count == 1",
                True,
            ),
            ("scope context name", r#"scope.name == "lib""#, True),
            (
                "scope schema_url",
                r#"scope.schema_url == "https://scope""#,
                True,
            ),
            ("prefixed name", r#"span.name == "bear""#, True),
            (
                "prefixed attributes",
                r#"span.attributes["http.method"] == "GET""#,
                True,
            ),
            ("prefixed status", "span.status.code == 2", True),
        ],
        Context::Span,
    );
}

#[test]
fn ottlspan_span_test_path_errors() {
    check(
        &[
            (
                "index out of bounds",
                r#"attributes["arr_str"][5] == nil"#,
                Error,
            ),
            ("index a string", r#"attributes["str"]["x"] == nil"#, Error),
            ("int key on a map", r#"attributes["map"][0] == nil"#, Error),
            (
                "string key on a slice",
                r#"attributes["arr_str"]["x"] == nil"#,
                Error,
            ),
            ("int key on attributes", "attributes[0] == nil", Error),
            ("unknown path", r#"nme == "x""#, Load),
            ("unknown sub path", "status.nope == 1", Load),
            ("unknown suffix", r#"trace_id.hex == "x""#, Load),
            ("status as a whole", "status == 1", Load),
            ("name cannot be indexed", r#"name["x"] == 1"#, Load),
            (
                "spanevent context in span conditions",
                r#"spanevent.name == "x""#,
                Load,
            ),
            ("resource unknown", r#"resource.name == "x""#, Load),
            (
                "trace_state two keys",
                r#"trace_state["a"]["b"] == "x""#,
                Load,
            ),
            ("cache is not supported", r#"cache["a"] == "x""#, Load),
        ],
        Context::Span,
    );
}

#[test]
fn ottlspanevent_span_events_test_paths() {
    // ctxspanevent/span_events_test.go, on the fixture's first event.
    check(
        &[
            ("name", r#"name == "event1""#, True),
            ("prefixed name", r#"spanevent.name == "event1""#, True),
            ("time_unix_nano", "time_unix_nano == 1000", True),
            ("time", "time == Unix(0, 1000)", True),
            ("attributes", r#"attributes["e"] == "1""#, True),
            (
                "prefixed attributes",
                r#"spanevent.attributes["e"] == "1""#,
                True,
            ),
            (
                "dropped_attributes_count",
                "dropped_attributes_count == 0",
                True,
            ),
            ("span name", r#"span.name == "bear""#, True),
            (
                "span attributes",
                r#"span.attributes["str"] == "val""#,
                True,
            ),
            ("span kind", "span.kind == SPAN_KIND_SERVER", True),
            (
                "resource",
                r#"resource.attributes["service.name"] == "svc""#,
                True,
            ),
            ("scope", r#"instrumentation_scope.name == "lib""#, True),
            ("unknown path", r#"kind == 1"#, Load),
            ("IsRootSpan is a span function", "IsRootSpan()", Load),
        ],
        Context::SpanEvent,
    );
}

#[test]
fn parser_test_literals_and_math() {
    // pkg/ottl/parser_test.go and math_test.go, evaluated.
    check(
        &[
            ("escaped string", r#""a\"b\\c" == "a\"b\\c""#, True),
            ("unicode escape", r#""\u00e9" == "é""#, True),
            ("bytes", "0x01ff == 0x01FF", True),
            ("negative int", "-1 < 0", True),
            ("float exponent", "1.5e3 == 1500", True),
            ("leading dot float", ".5 == 0.5", True),
            ("add and multiply", "1 + 2 * 3 == 7", True),
            ("parenthesised math", "(1 + 2) * 3 == 9", True),
            ("left associative", "10 - 2 - 3 == 5", True),
            ("int division", "10 / 4 == 2", True),
            ("float division", "10.0 / 4 == 2.5", True),
            (
                "path math",
                "end_time_unix_nano - start_time_unix_nano == 400",
                True,
            ),
            (
                "path math divided",
                "(end_time_unix_nano - start_time_unix_nano) / 100 == 4",
                True,
            ),
            (
                "unary minus on a path",
                r#"-attributes["int"] == -10"#,
                True,
            ),
            ("math on both sides", "2 * 3 == 12 / 2", True),
            ("divide by zero", "1 / 0 == 0", Error),
            (
                "math on a string attribute",
                r#"attributes["str"] + 1 == 1"#,
                Error,
            ),
            (
                "unary minus on a string",
                r#"-attributes["str"] == 1"#,
                Error,
            ),
            ("string literal in math", r#""a" + 1 == 1"#, Load),
            ("enum in math", "SPAN_KIND_SERVER + 1 == 3", Load),
            ("bare path", r#"attributes["str"]"#, Load),
            ("bare math", "1 + 2", Load),
            ("bare string", r#""true""#, Load),
            (
                "comparison as an argument",
                r#"IsString(name == "x")"#,
                Load,
            ),
            ("syntax error", "name ==", Load),
            ("double not", "not not true", Load),
            ("chained comparison", "1 < 2 < 3", Load),
            ("odd bytes", "0x123 == 0x123", Load),
        ],
        Context::Span,
    );
}

#[test]
fn ottlfuncs_converter_tests() {
    check(
        &[
            // func_is_match_test.go
            (
                "IsMatch replace match true",
                r#"IsMatch("hello world", "hello.*")"#,
                True,
            ),
            (
                "IsMatch replace match false",
                r#"IsMatch("goodbye world", "hello.*")"#,
                False,
            ),
            (
                "IsMatch replace match complex",
                r#"IsMatch("-12.001", "[-+]?\\d*\\.\\d+([eE][-+]?\\d+)?")"#,
                True,
            ),
            ("IsMatch target bool", r#"IsMatch(true, "true")"#, True),
            ("IsMatch target int", r#"IsMatch(1, "\\d")"#, True),
            ("IsMatch target float", r#"IsMatch(1.1, "\\d\\.\\d")"#, True),
            ("IsMatch target path", r#"IsMatch(name, "^be")"#, True),
            (
                "IsMatch target bytes as hex",
                r#"IsMatch(attributes["bytes"], "^010203$")"#,
                True,
            ),
            (
                "IsMatch target map as json",
                r#"IsMatch(attributes["map"], "\"k\":\"v\"")"#,
                True,
            ),
            (
                "IsMatch nil target",
                r#"IsMatch(attributes["missing"], ".*")"#,
                False,
            ),
            ("IsMatch unanchored", r#"IsMatch(name, "ea")"#, True),
            ("IsMatch invalid regex", r#"IsMatch(name, "(")"#, Load),
            ("IsMatch pattern not literal", "IsMatch(name, name)", Load),
            // func_is_string_test.go and friends
            ("IsString string", r#"IsString(attributes["str"])"#, True),
            ("IsString int", r#"IsString(attributes["int"])"#, False),
            ("IsString nil", r#"IsString(attributes["missing"])"#, False),
            ("IsInt int", r#"IsInt(attributes["int"])"#, True),
            ("IsInt double", r#"IsInt(attributes["double"])"#, False),
            ("IsDouble double", r#"IsDouble(attributes["double"])"#, True),
            ("IsBool bool", r#"IsBool(attributes["bool"])"#, True),
            ("IsBool string", r#"IsBool("true")"#, False),
            ("IsMap map", r#"IsMap(attributes["map"])"#, True),
            ("IsMap list", r#"IsMap(attributes["arr_str"])"#, False),
            ("IsList slice", r#"IsList(attributes["arr_str"])"#, True),
            ("IsList split result", r#"IsList(Split("a,b", ","))"#, True),
            ("IsList string", r#"IsList(name)"#, False),
            // func_is_root_span_test.go (the fixture has a parent)
            ("IsRootSpan not root", "IsRootSpan()", False),
            ("IsRootSpan takes no arguments", "IsRootSpan(name)", Load),
            // func_len_test.go
            ("Len string", r#"Len("hello") == 5"#, True),
            ("Len bytes of UTF-8", r#"Len("é") == 2"#, True),
            ("Len slice", r#"Len(attributes["arr_str"]) == 2"#, True),
            ("Len map", r#"Len(attributes["map"]) == 2"#, True),
            ("Len int is unsupported", "Len(1) == 1", Error),
            (
                "Len nil is unsupported",
                r#"Len(attributes["missing"]) == 0"#,
                Error,
            ),
            // func_concat_test.go
            (
                "Concat concat strings",
                r#"Concat(["hello", "world"], " ") == "hello world""#,
                True,
            ),
            (
                "Concat nil",
                r#"Concat(["hello", attributes["missing"]], "") == "hello<nil>""#,
                True,
            ),
            (
                "Concat non-strings",
                r#"Concat(["a", 1, 2.5, true], "|") == "a|1|2.5|true""#,
                True,
            ),
            (
                "Concat paths",
                r#"Concat([name, attributes["str"]], "-") == "bear-val""#,
                True,
            ),
            ("Concat empty", r#"Concat([], "-") == """#, True),
            ("Concat vals not a list", r#"Concat(name, "-") == """#, Load),
            // func_convert_case_test.go
            (
                "ConvertCase snake",
                r#"ConvertCase("simpleTest", "snake") == "simple_test""#,
                True,
            ),
            (
                "ConvertCase camel",
                r#"ConvertCase("simple_test", "camel") == "SimpleTest""#,
                True,
            ),
            (
                "ConvertCase upper",
                r#"ConvertCase("simple", "upper") == "SIMPLE""#,
                True,
            ),
            (
                "ConvertCase lower",
                r#"ConvertCase("SIMPLE", "lower") == "simple""#,
                True,
            ),
            (
                "ConvertCase empty string",
                r#"ConvertCase("", "snake") == """#,
                True,
            ),
            (
                "ConvertCase non-string target",
                r#"ConvertCase(attributes["int"], "lower") == """#,
                Error,
            ),
            (
                "ConvertCase invalid case",
                r#"ConvertCase(name, "kebab") == """#,
                Load,
            ),
            ("ToLowerCase", r#"ToLowerCase("ABC") == "abc""#, True),
            ("ToUpperCase", r#"ToUpperCase(name) == "BEAR""#, True),
            (
                "ToSnakeCase",
                r#"ToSnakeCase("HTTPRequest") == "http_request""#,
                True,
            ),
            (
                "ToCamelCase",
                r#"ToCamelCase("http_request") == "HttpRequest""#,
                True,
            ),
            // func_substring_test.go
            (
                "Substring substring",
                r#"Substring("123456789", 3, 3) == "456""#,
                True,
            ),
            (
                "Substring whole",
                r#"Substring("123456789", 0, 9) == "123456789""#,
                True,
            ),
            (
                "Substring invalid start",
                r#"Substring("123456789", -1, 3) == """#,
                Error,
            ),
            (
                "Substring invalid length",
                r#"Substring("123456789", 0, 0) == """#,
                Error,
            ),
            (
                "Substring invalid range",
                r#"Substring("123456789", 3, 7) == """#,
                Error,
            ),
            (
                "Substring nil target",
                r#"Substring(attributes["missing"], 0, 1) == """#,
                Error,
            ),
            (
                "Substring named arguments",
                r#"Substring(target=name, start=1, length=2) == "ea""#,
                True,
            ),
            (
                "Substring unknown argument name",
                r#"Substring(target=name, begin=1, length=2) == """#,
                Load,
            ),
            (
                "Substring too few arguments",
                r#"Substring(name, 1) == """#,
                Load,
            ),
            // func_split_test.go
            (
                "Split split string",
                r#"Split("A|B|C", "|") == ["A", "B", "C"]"#,
                True,
            ),
            (
                "Split no match",
                r#"Split("A|B|C", "@") == ["A|B|C"]"#,
                True,
            ),
            ("Split empty string", r#"Split("", "|") == [""]"#, True),
            ("Split indexed", r#"Split("a,b", ",")[1] == "b""#, True),
            (
                "Split non-string",
                r#"Split(attributes["int"], ",") == []"#,
                Error,
            ),
            // func_has_prefix_test.go, func_has_suffix_test.go
            (
                "HasPrefix has prefix true",
                r#"HasPrefix("hello world", "hello")"#,
                True,
            ),
            (
                "HasPrefix has prefix false",
                r#"HasPrefix("hello world", "world")"#,
                False,
            ),
            (
                "HasPrefix non-string target",
                r#"HasPrefix(attributes["int"], "1")"#,
                Error,
            ),
            (
                "HasSuffix has suffix true",
                r#"HasSuffix("hello world", "world")"#,
                True,
            ),
            (
                "HasSuffix has suffix false",
                r#"HasSuffix("hello world", "hello")"#,
                False,
            ),
            // func_contains_value_test.go
            (
                "ContainsValue find string",
                r#"ContainsValue(["hello", "world"], "hello")"#,
                True,
            ),
            (
                "ContainsValue not found",
                r#"ContainsValue([1, 2], 3)"#,
                False,
            ),
            (
                "ContainsValue int as double",
                r#"ContainsValue([1, 2], 2.0)"#,
                True,
            ),
            (
                "ContainsValue attribute slice",
                r#"ContainsValue(attributes["arr_str"], "two")"#,
                True,
            ),
            (
                "ContainsValue not a slice",
                r#"ContainsValue(name, "bear")"#,
                Error,
            ),
            // func_int_test.go, func_double_test.go, func_string_test.go
            ("Int string", r#"Int("50") == 50"#, True),
            ("Int float truncates", "Int(1.9) == 1", True),
            ("Int bool", "Int(true) == 1", True),
            ("Int bad string is nil", r#"Int("no") == nil"#, True),
            (
                "Int nil is nil",
                r#"Int(attributes["missing"]) == nil"#,
                True,
            ),
            (
                "Int map is unsupported",
                r#"Int(attributes["map"]) == nil"#,
                Error,
            ),
            ("Double string", r#"Double("1.5") == 1.5"#, True),
            ("Double int", "Double(1) == 1.0", True),
            ("Double bool", "Double(true) == 1.0", True),
            ("Double bad string is nil", r#"Double("x") == nil"#, True),
            ("String int", r#"String(1) == "1""#, True),
            ("String double", r#"String(1.5) == "1.5""#, True),
            ("String bool", r#"String(true) == "true""#, True),
            ("String bytes", r#"String(0x0102) == "0102""#, True),
            (
                "String nil",
                r#"String(attributes["missing"]) == nil"#,
                True,
            ),
            (
                "String slice",
                r#"String(attributes["arr_str"]) == "[\"one\",\"two\"]""#,
                True,
            ),
            // func_hex_test.go
            ("Hex string", r#"Hex("hi") == "6869""#, True),
            ("Hex int", r#"Hex(1) == "0000000000000001""#, True),
            ("Hex float", r#"Hex(1.0) == "3ff0000000000000""#, True),
            ("Hex bool", r#"Hex(true) == "01""#, True),
            ("Hex bytes", r#"Hex(0x01ab) == "01ab""#, True),
            // func_duration_test.go and the duration unit functions
            (
                "Duration hours",
                r#"Duration("1h") == Duration("60m")"#,
                True,
            ),
            (
                "Duration complex",
                r#"Duration("1h2m3s") > Duration("1h")"#,
                True,
            ),
            (
                "Duration negative",
                r#"Duration("-1s") < Duration("0s")"#,
                True,
            ),
            ("Duration invalid", r#"Duration("one hour") == nil"#, Error),
            ("Seconds", r#"Seconds(Duration("1500ms")) == 1.5"#, True),
            (
                "Milliseconds",
                r#"Milliseconds(Duration("1.5s")) == 1500"#,
                True,
            ),
            (
                "Microseconds",
                r#"Microseconds(Duration("1ms")) == 1000"#,
                True,
            ),
            (
                "Nanoseconds",
                r#"Nanoseconds(Duration("1us")) == 1000"#,
                True,
            ),
            ("Minutes", r#"Minutes(Duration("90s")) == 1.5"#, True),
            ("Hours", r#"Hours(Duration("30m")) == 0.5"#, True),
            (
                "span duration",
                r#"Nanoseconds(end_time - start_time) == 400"#,
                True,
            ),
            // func_unix_test.go and the Unix* functions
            (
                "Unix seconds",
                "UnixSeconds(Unix(1700000000)) == 1700000000",
                True,
            ),
            (
                "Unix nanoseconds",
                "UnixNano(Unix(1, 5)) == 1000000005",
                True,
            ),
            ("UnixMilli", "UnixMilli(Unix(2)) == 2000", True),
            ("UnixMicro", "UnixMicro(Unix(0, 5000)) == 5", True),
            (
                "UnixNano of a span time",
                "UnixNano(start_time) == start_time_unix_nano",
                True,
            ),
            ("Unix needs ints", r#"Unix("1") == nil"#, Error),
            // func_time_test.go
            (
                "Time date",
                r#"Time("2023-01-01", "%Y-%m-%d") == Unix(1672531200)"#,
                True,
            ),
            (
                "Time compared with a span time",
                r#"Time("1970-01-01T00:00:00.0000001", "%Y-%m-%dT%H:%M:%S.%f") == start_time"#,
                True,
            ),
            (
                "Time bad value",
                r#"Time("2023-13-01", "%Y-%m-%d") == nil"#,
                Error,
            ),
            ("Time empty value", r#"Time("", "%Y") == nil"#, Error),
            ("Time bad format", r#"Time("x", "%Q") == nil"#, Load),
            (
                "Time location",
                r#"Time("2023-01-01", "%Y-%m-%d", "America/New_York") == nil"#,
                Load,
            ),
            // func_trace_id_test.go, func_span_id_test.go
            (
                "TraceID",
                "TraceID(0x0102030405060708090a0b0c0d0e0f10) == trace_id",
                True,
            ),
            ("TraceID wrong length", "TraceID(0x0102) == trace_id", Error),
            ("SpanID", "SpanID(0x0102030405060708) == span_id", True),
            ("SpanID wrong length", "SpanID(0x01) == span_id", Error),
            // Converters that are not in the subset are load errors.
            ("undefined function", r#"Foo(name) == 1"#, Load),
            ("editor in a condition", r#"set(name, "x")"#, Load),
            ("converter not bool", r#"Concat(["a"], "")"#, Error),
        ],
        Context::Span,
    );
}

#[test]
fn is_root_span_is_true_on_a_root_span() {
    assert_eq!(eval_on(Context::Span, true, "IsRootSpan()"), Ok(true));
    assert_eq!(
        eval_on(
            Context::Span,
            true,
            "parent_span_id == SpanID(0x0000000000000000)"
        ),
        Ok(true)
    );
    assert_eq!(eval("IsRootSpan()"), Ok(false));
}

#[test]
fn load_errors_name_the_place_and_the_name() {
    let at = |text: &str| {
        let e = OttlCondition::compile(ErrorMode::Propagate, &[text.to_string()], &[]).unwrap_err();
        (e.line, e.column, e.message)
    };
    let (line, column, message) = at(r#"name == "x" and Foo(name)"#);
    assert_eq!((line, column), (1, 17));
    assert!(message.contains("undefined function \"Foo\""), "{message}");
    let (line, column, message) = at("name == \"x\" and\n  nme == 1");
    assert_eq!((line, column), (2, 3));
    assert!(message.contains("segment \"nme\""), "{message}");
    let (_, column, message) = at("name ==");
    assert_eq!(column, 8);
    assert!(message.contains("found the end"), "{message}");
    let (_, column, message) = at(r#"kind == SPAN_KIND_NOPE"#);
    assert_eq!(column, 9);
    assert!(message.contains("SPAN_KIND_NOPE"), "{message}");
    let e = OttlCondition::compile(ErrorMode::Propagate, &[], &[]).unwrap_err();
    assert!(e.message.contains("at least one"), "{e}");
    let e = OttlCondition::compile(
        ErrorMode::Propagate,
        &["true".into()],
        &["true".into(), "IsRootSpan()".into()],
    )
    .unwrap_err();
    assert_eq!((e.list, e.index), ("spanevent", 1));
}

// ---------------------------------------------------------------------------
// The policy: processor/tailsamplingprocessor/internal/sampling/ottl_test.go
// and ottl_default_error_mode_test.go, through policy files.

/// ottl_test.go's `newTraceWithSpansAttributes`: one resource, one scope,
/// each span with its attributes and one event named "test event" with
/// the event attributes.
/// Attributes as key and string value.
type Attrs<'a> = &'a [(&'a str, &'a str)];

fn trace_with(spans: &[(Attrs<'_>, Attrs<'_>)]) -> TestTrace {
    let mut trace = TestTrace::new(TRACE_ID, Vec::new(), &[]);
    for (span_attrs, event_attrs) in spans {
        let span = Span {
            trace_id: TRACE_ID.to_vec(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            attributes: span_attrs.iter().map(|(k, v)| kv(k, s(v))).collect(),
            events: vec![Event {
                name: "test event".into(),
                attributes: event_attrs.iter().map(|(k, v)| kv(k, s(v))).collect(),
                ..Event::default()
            }],
            ..Span::default()
        };
        let bytes = span.encode_to_vec();
        let view = SpanView::parse(&bytes, 0).expect("span parses");
        trace.summary.add(&view, bytes.len());
        trace.spans.push((0, bytes));
    }
    trace
}

fn ottl_policy(error_mode: Option<&str>, span: &[&str], spanevent: &[&str]) -> String {
    let quote = |l: &[&str]| {
        l.iter()
            .map(|c| format!("'{}'", c.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut block = String::new();
    if let Some(m) = error_mode {
        block.push_str(&format!("error_mode: {m}, "));
    }
    block.push_str(&format!(
        "span: [{}], spanevent: [{}]",
        quote(span),
        quote(spanevent)
    ));
    format!("  - {{name: ottl, type: ottl_condition, ottl_condition: {{{block}}}}}\n")
}

#[test]
fn ottl_test_evaluate_ottl() {
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        Vec<(Attrs<'a>, Attrs<'a>)>,
        Decision,
    );
    let k1: &[(&str, &str)] = &[("attr_k_1", "attr_v_1")];
    let k2: &[(&str, &str)] = &[("attr_k_1", "attr_v_2")];
    let e1: &[(&str, &str)] = &[("event_attr_k_1", "event_attr_v_1")];
    let none: &[(&str, &str)] = &[];
    let cases: Vec<Case<'_>> = vec![
        (
            "OTTL conditions match specific span attributes 1",
            &[r#"attributes["attr_k_1"] == "attr_v_1""#],
            &[],
            vec![(k1, none)],
            Decision::Sampled,
        ),
        (
            "OTTL conditions match specific span attributes 2",
            &[r#"attributes["attr_k_1"] != "attr_v_1""#],
            &[],
            vec![(k1, none)],
            Decision::NotSampled,
        ),
        (
            "OTTL conditions inverse match(!=) span attributes 2",
            &[r#"attributes["attr_k_1"] != "attr_v_1""#],
            &[],
            vec![(k2, none)],
            Decision::Sampled,
        ),
        (
            "OTTL conditions match specific span event attributes",
            &[],
            &[r#"attributes["event_attr_k_1"] == "event_attr_v_1""#],
            vec![(none, e1)],
            Decision::Sampled,
        ),
        (
            "OTTL conditions match specific span event name",
            &[],
            &[r#"name != "incorrect event name""#],
            vec![(none, none)],
            Decision::Sampled,
        ),
        (
            "OTTL conditions not matched",
            &[r#"attributes["attr_k_1"] == "attr_v_1""#],
            &[r#"attributes["event_attr_k_1"] == "event_attr_v_1""#],
            vec![],
            Decision::NotSampled,
        ),
    ];
    for (name, span, spanevent, spans, want) in cases {
        let set = policies(&ottl_policy(Some("ignore"), span, spanevent));
        let got = decide(&set, &trace_with(&spans)).outcome;
        assert_eq!(got, want, "{name}");
    }
    // "OTTL conditions not set": refused when loading.
    let e = crate::PolicyFile::parse(
        &format!("policies:\n{}", ottl_policy(Some("ignore"), &[], &[])),
        "p.yaml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least one OTTL condition"), "{e}");
}

#[test]
fn ottl_default_error_mode_test() {
    // TestOTTLDefaultErrorMode with the feature gate at its default (off, as
    // in the pinned release): an unset error_mode propagates.
    let conditions = [
        r#"Substring(attributes["value"], 0, 4) == "keep""#,
        r#"name == "keep""#,
    ];
    for mode in [None, Some("propagate"), Some("ignore"), Some("silent")] {
        for scenario in [
            "span_conditions",
            "span_event_conditions",
            "next_span",
            "next_span_event",
            "no_match",
        ] {
            let mut first = Span {
                trace_id: TRACE_ID.to_vec(),
                span_id: vec![1; 8],
                events: vec![Event {
                    name: "test event".into(),
                    ..Event::default()
                }],
                ..Span::default()
            };
            let mut extra: Option<Span> = None;
            let (span_conds, event_conds): (&[&str], &[&str]) = match scenario {
                "span_conditions" => {
                    first.name = "keep".into();
                    (&conditions, &[])
                }
                "span_event_conditions" => {
                    first.events[0].name = "keep".into();
                    (&[], &conditions)
                }
                "next_span" => {
                    extra = Some(Span {
                        trace_id: TRACE_ID.to_vec(),
                        span_id: vec![2; 8],
                        attributes: vec![kv("value", s("keep"))],
                        ..Span::default()
                    });
                    (&conditions[..1], &[])
                }
                "next_span_event" => {
                    first.events.push(Event {
                        attributes: vec![kv("value", s("keep"))],
                        ..Event::default()
                    });
                    (&[], &conditions[..1])
                }
                _ => (&conditions, &[]),
            };
            let mut trace = TestTrace::new(TRACE_ID, Vec::new(), &[]);
            for span in std::iter::once(first).chain(extra) {
                let bytes = span.encode_to_vec();
                let view = SpanView::parse(&bytes, 0).expect("span parses");
                trace.summary.add(&view, bytes.len());
                trace.spans.push((0, bytes));
            }
            let set = policies(&ottl_policy(mode, span_conds, event_conds));
            let got = decide(&set, &trace).outcome;
            let propagate = matches!(mode, None | Some("propagate"));
            // Under propagate the policy errors: no vote, so not sampled.
            let want = if propagate || scenario == "no_match" {
                Decision::NotSampled
            } else {
                Decision::Sampled
            };
            assert_eq!(got, want, "mode={mode:?}/{scenario}");
        }
    }
}

/// One span with `name`, for the combinator cases.
fn named(name: &str) -> TestTrace {
    let mut trace = TestTrace::new(TRACE_ID, Vec::new(), &[]);
    let bytes = Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: vec![1; 8],
        name: name.into(),
        ..Span::default()
    }
    .encode_to_vec();
    let view = SpanView::parse(&bytes, 0).expect("span parses");
    trace.summary.add(&view, bytes.len());
    trace.spans.push((0, bytes));
    trace
}

#[test]
fn ottl_condition_works_inside_and_not_drop_and_composite() {
    let sub = |name: &str, cond: &str| {
        format!("{{name: {name}, type: ottl_condition, ottl_condition: {{span: ['{cond}']}}}}")
    };
    let is_a = sub("is-a", r#"name == "a""#);
    let starts_a = sub("starts-a", r#"HasPrefix(name, "a")"#);
    let set = policies(&format!(
        "  - {{name: both, type: and, and: {{and_sub_policy: [{is_a}, {starts_a}]}}}}\n"
    ));
    assert_eq!(decide(&set, &named("a")).outcome, Decision::Sampled);
    assert_eq!(decide(&set, &named("ab")).outcome, Decision::NotSampled);

    let set = policies(&format!(
        "  - {{name: neg, type: not, not: {{not_sub_policy: {is_a}}}}}\n"
    ));
    assert_eq!(decide(&set, &named("a")).outcome, Decision::NotSampled);
    assert_eq!(decide(&set, &named("b")).outcome, Decision::Sampled);

    let set = policies(&format!(
        "  - {{name: keep, type: always_sample}}\n  - {{name: d, type: drop, drop: {{drop_sub_policy: [{is_a}]}}}}\n"
    ));
    assert_eq!(decide(&set, &named("a")).outcome, Decision::Dropped);
    assert_eq!(decide(&set, &named("b")).outcome, Decision::Sampled);

    let set = policies(&format!(
        "  - {{name: c, type: composite, composite: {{max_total_spans_per_second: 100, composite_sub_policy: [{is_a}], rate_allocation: [{{policy: is-a, percent: 100}}]}}}}\n"
    ));
    assert_eq!(decide(&set, &named("a")).outcome, Decision::Sampled);
    assert_eq!(decide(&set, &named("b")).outcome, Decision::NotSampled);
}

#[test]
fn a_propagated_error_casts_no_vote_and_fails_its_and() {
    let failing = r#"Substring(name, 5, 1) == "x""#;
    // It casts no vote: the inverted policy's non-match (a plain sampled
    // vote since contrib #48976) decides, and the failure is counted.
    let set = policies(&format!(
        "{}  - {{name: inv, type: string_attribute, string_attribute: {{key: k, values: [v], invert_match: true}}}}\n",
        ottl_policy(None, &[failing], &[])
    ));
    let d = decide(&set, &named("a"));
    assert_eq!(d.outcome, Decision::Sampled);
    assert_eq!((d.votes.errors, d.votes.evaluated), (0b01, 0b10));
    // Inside `and`, the error fails the `and` (no vote either).
    let set = policies(&format!(
        "  - {{name: both, type: and, and: {{and_sub_policy: [{{name: t, type: always_sample}}, {{name: e, type: ottl_condition, ottl_condition: {{span: ['{failing}']}}}}]}}}}\n  - {{name: inv, type: string_attribute, string_attribute: {{key: k, values: [v], invert_match: true}}}}\n"
    ));
    assert_eq!(decide(&set, &named("a")).outcome, Decision::Sampled);
    // With ignore, the failing condition is false and the next one decides.
    let set = policies(&ottl_policy(
        Some("ignore"),
        &[failing, r#"name == "a""#],
        &[],
    ));
    assert_eq!(decide(&set, &named("a")).outcome, Decision::Sampled);
    let set = policies(&ottl_policy(Some("IGNORE"), &[failing], &[]));
    assert_eq!(decide(&set, &named("a")).outcome, Decision::NotSampled);
}

#[test]
fn the_matching_condition_is_reported() {
    let set = policies(&ottl_policy(
        None,
        &[r#"name == "x""#, r#"name == "a""#],
        &[r#"name == "test event""#],
    ));
    let node = &set.nodes()[0];
    let crate::policy::Rule::OttlCondition(c) = &node.rule else {
        panic!("not an ottl_condition: {:?}", node.rule);
    };
    let trace = named("a");
    let refs: Vec<SpanRef<'_>> = trace
        .spans
        .iter()
        .map(|(r, b)| SpanRef {
            resource: &trace.resources[*r],
            scope: &[],
            span: b,
        })
        .collect();
    let views: Vec<SpanView<'_>> = refs
        .iter()
        .filter_map(|s| SpanView::parse(s.span, 0).ok())
        .collect();
    assert_eq!(
        c.evaluate(&refs, &views),
        Outcome::Matched(Match {
            list: "span",
            index: 1
        })
    );
    assert_eq!(
        c.text(Match {
            list: "span",
            index: 1
        }),
        r#"name == "a""#
    );
}

#[test]
fn the_collectors_readme_example_decides_as_the_collector() {
    // README's test-policy-13 (error_mode ignore): any span with
    // test_attr_key_1 = test_attr_val_1, or without test_attr_key_2 =
    // test_attr_val_1 (a missing attribute is nil, and nil != "..."), or
    // with an event not named test_span_event_name, or an event without
    // test_event_attr_key_2 = test_event_attr_val_1, keeps the trace.
    let set = policies(&ottl_policy(
        Some("ignore"),
        &[
            r#"attributes["test_attr_key_1"] == "test_attr_val_1""#,
            r#"attributes["test_attr_key_2"] != "test_attr_val_1""#,
        ],
        &[
            r#"name != "test_span_event_name""#,
            r#"attributes["test_event_attr_key_2"] != "test_event_attr_val_1""#,
        ],
    ));
    let span = |attrs: Vec<KeyValue>, event: &str, event_attrs: Vec<KeyValue>| {
        let mut trace = TestTrace::new(TRACE_ID, Vec::new(), &[]);
        let bytes = Span {
            trace_id: TRACE_ID.to_vec(),
            span_id: vec![1; 8],
            attributes: attrs,
            events: vec![Event {
                name: event.into(),
                attributes: event_attrs,
                ..Event::default()
            }],
            ..Span::default()
        }
        .encode_to_vec();
        let view = SpanView::parse(&bytes, 0).expect("span parses");
        trace.summary.add(&view, bytes.len());
        trace.spans.push((0, bytes));
        trace
    };
    let blocked = || kv("test_attr_key_2", s("test_attr_val_1"));
    let blocked_event = || kv("test_event_attr_key_2", s("test_event_attr_val_1"));
    let cases = [
        (
            "every condition false",
            span(
                vec![blocked()],
                "test_span_event_name",
                vec![blocked_event()],
            ),
            Decision::NotSampled,
        ),
        (
            "first span condition",
            span(
                vec![blocked(), kv("test_attr_key_1", s("test_attr_val_1"))],
                "test_span_event_name",
                vec![blocked_event()],
            ),
            Decision::Sampled,
        ),
        (
            "missing attribute is not equal",
            span(vec![], "test_span_event_name", vec![blocked_event()]),
            Decision::Sampled,
        ),
        (
            "another event name",
            span(vec![blocked()], "other", vec![blocked_event()]),
            Decision::Sampled,
        ),
        (
            "event attribute missing",
            span(vec![blocked()], "test_span_event_name", vec![]),
            Decision::Sampled,
        ),
    ];
    for (name, trace, want) in cases {
        assert_eq!(decide(&set, &trace).outcome, want, "{name}");
    }
}

#[test]
fn the_fuzz_coverage_conditions_compile_and_read_a_real_request() {
    for text in super::COVERAGE_SPAN {
        compile_condition(text, Context::Span).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    }
    for text in super::COVERAGE_SPANEVENT {
        compile_condition(text, Context::SpanEvent).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    }
    let mut resource = ResourceSpans::decode(fixture_resource().as_slice()).expect("decodes");
    let mut scope = ScopeSpans::decode(fixture_scope().as_slice()).expect("decodes");
    scope.spans = vec![fixture_span(false), fixture_span(true)];
    resource.scope_spans = vec![scope];
    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![resource],
    }
    .encode_to_vec();
    // The fixture is named "bear", so only the extra condition matches.
    assert_eq!(super::evaluate_request(None, &request), Some(true));
    assert_eq!(super::evaluate_request(Some("((("), &request), Some(true));
    assert_eq!(super::evaluate_request(None, b"\xff\xff"), None);
}

#[test]
fn calls_on_literals_are_folded_at_load_but_keep_their_errors() {
    use super::compile::{Cond, Expr};
    let folded = |text: &str| match compile_condition(text, Context::Span) {
        Ok(Cond::Cmp(_, _, Expr::Lit(_))) => true,
        Ok(Cond::Cmp(..)) => false,
        other => panic!("{text}: {other:?}"),
    };
    assert!(folded(r#"end_time - start_time > Duration("500ms")"#));
    assert!(folded(r#"name == Concat(["a", "b"], "-")"#));
    assert!(folded(
        "trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)"
    ));
    assert!(!folded(r#"name == Concat([name, "b"], "-")"#));
    // A literal call that fails stays a call, and fails when evaluated.
    assert!(!folded(r#"name == Substring("abc", 5, 1)"#));
    assert!(eval(r#"name == Substring("abc", 5, 1)"#).is_err());
}

#[test]
fn the_longest_operator_chain_and_the_deepest_nesting_evaluate() {
    let chain = format!(
        "1{} == {}",
        " + 1".repeat(super::parser::MAX_OPERATORS),
        super::parser::MAX_OPERATORS + 1
    );
    assert_eq!(eval(&chain), Ok(true));
    let depth = super::parser::MAX_DEPTH;
    let nested = format!("{}name{} == \"bear\"", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(eval(&nested), Ok(true));
    let lists = format!("{}1{} != nil", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(eval(&lists), Ok(true));
}

mod no_panic {
    use proptest::prelude::*;

    use super::*;

    /// Pieces of the language, so that random conditions get past the lexer.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "name",
            "attributes",
            "[\"str\"]",
            "[0]",
            "[",
            "]",
            "(",
            ")",
            "{",
            "}",
            ":",
            ",",
            ".",
            " == ",
            " != ",
            " < ",
            " >= ",
            " and ",
            " or ",
            "not ",
            " + ",
            " - ",
            " * ",
            " / ",
            "1",
            "-2",
            "3.5",
            "\"s\"",
            "nil",
            "true",
            "0x01",
            "SPAN_KIND_SERVER",
            "IsMatch(",
            "Len(",
            "Substring(",
            "Concat(",
            "Split(",
            "Int(",
            "Duration(",
            "Time(",
            "Unix(",
            "TraceID(",
            "span.",
            "resource.",
            "spanevent.",
            "status.code",
            "events",
            "trace_state",
            "start_time",
            "end_time",
            "kind.string",
            "x=",
            "\"%Y\"",
            "\"a|b\"",
        ])
    }

    proptest! {
        #[test]
        fn any_text_compiles_or_is_refused(text in "\\PC{0,80}") {
            let _ = compile_condition(&text, Context::Span);
            let _ = compile_condition(&text, Context::SpanEvent);
        }

        #[test]
        fn any_condition_of_language_pieces_compiles_and_evaluates_or_errors(
            pieces in prop::collection::vec(piece(), 1..24)
        ) {
            let text: String = pieces.concat();
            let _ = eval_on(Context::Span, false, &text);
            let _ = eval_on(Context::SpanEvent, false, &text);
        }

        #[test]
        fn any_request_bytes_evaluate_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = super::super::evaluate_request(None, &bytes);
        }
    }
}
