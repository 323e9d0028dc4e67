//! Annotating kept spans by appending fields: the result decodes (with
//! prost, and with tailgate's own reader) to the original span plus the
//! annotations, and nothing else changes.

mod common;

use std::borrow::Cow;

use common::{b, kv, s, span};
use opentelemetry_proto::tonic::trace::v1::Span;
use policy::{
    Annotations, CACHED_DECISION_ATTRIBUTE, COMPOSITE_POLICY_ATTRIBUTE, POLICY_ATTRIBUTE,
    PolicyFile, Threshold, TraceSummary, TraceView, annotate_span, annotate_span_with,
};
use prost::Message;
use proto::view::{RequestView, SpanView, TraceId};
use proto::write::{SpanRef, request};

const ID: [u8; 16] = [7; 16];

fn encoded(span: &Span) -> Vec<u8> {
    span.encode_to_vec()
}

fn decoded(bytes: &[u8]) -> Span {
    Span::decode(bytes).expect("annotated span decodes")
}

fn ten_percent() -> Option<Threshold> {
    Threshold::from_percentage(10.0)
}

#[test]
fn the_policy_name_is_appended_as_an_attribute() {
    let mut original = span(ID, 1, 0, 5);
    original.attributes.push(kv("http.route", s("/cart")));
    let bytes = encoded(&original);
    let out = annotate_span(&bytes, Some("errors"), None);
    assert!(
        out.starts_with(&bytes),
        "the original bytes are kept as they are"
    );
    let mut expected = original.clone();
    expected.attributes.push(kv(POLICY_ATTRIBUTE, s("errors")));
    assert_eq!(decoded(&out), expected);
}

#[test]
fn the_threshold_becomes_the_tracestate_of_a_span_without_one() {
    let original = span(ID, 1, 0, 5);
    let bytes = encoded(&original);
    let out = annotate_span(&bytes, None, ten_percent());
    let mut expected = original.clone();
    expected.trace_state = "ot=th:e6666666666666".to_string();
    assert_eq!(decoded(&out), expected);
}

#[test]
fn the_threshold_is_merged_into_an_existing_ot_member() {
    let mut original = span(ID, 1, 0, 5);
    original.trace_state = "vendor=abc,ot=rv:0123456789abcd;th:8".to_string();
    let bytes = encoded(&original);
    let out = annotate_span(&bytes, Some("sample-10pct"), ten_percent());
    let got = decoded(&out);
    assert_eq!(
        got.trace_state,
        "ot=rv:0123456789abcd;th:e6666666666666,vendor=abc"
    );
    assert_eq!(
        got.attributes,
        vec![kv(POLICY_ATTRIBUTE, s("sample-10pct"))]
    );
    // tailgate's reader sees the last trace_state, as protobuf says.
    assert_eq!(
        SpanView::parse(&out, 0).unwrap().trace_state(),
        "ot=rv:0123456789abcd;th:e6666666666666,vendor=abc"
    );
}

#[test]
fn a_more_restrictive_threshold_or_nothing_to_add_leaves_the_span_borrowed() {
    let mut strict = span(ID, 1, 0, 5);
    strict.trace_state = "ot=th:fd70a3d70a3d71".to_string(); // 1%
    let bytes = encoded(&strict);
    assert!(
        matches!(annotate_span(&bytes, None, ten_percent()), Cow::Borrowed(b) if b == bytes.as_slice())
    );
    assert!(matches!(
        annotate_span(&bytes, None, None),
        Cow::Borrowed(_)
    ));
    // 100% keeps everything: no threshold worth writing.
    let plain = encoded(&span(ID, 1, 0, 5));
    assert!(matches!(
        annotate_span(&plain, None, Threshold::from_percentage(100.0)),
        Cow::Borrowed(_)
    ));
}

#[test]
fn the_same_policy_attribute_is_not_added_twice() {
    let mut original = span(ID, 1, 0, 5);
    original.attributes.push(kv(POLICY_ATTRIBUTE, s("errors")));
    let bytes = encoded(&original);
    assert!(matches!(
        annotate_span(&bytes, Some("errors"), None),
        Cow::Borrowed(_)
    ));
}

#[test]
fn an_invalid_tracestate_is_left_alone() {
    let mut original = span(ID, 1, 0, 5);
    original.trace_state = "Not A Tracestate".to_string();
    let bytes = encoded(&original);
    assert!(matches!(
        annotate_span(&bytes, None, ten_percent()),
        Cow::Borrowed(_)
    ));
}

#[test]
fn annotated_spans_make_a_valid_request_with_the_writer() {
    let header = common::resource_header(vec![kv("service.name", s("cart"))]);
    let spans: Vec<Vec<u8>> = (1..=3)
        .map(|n| annotate_span(&encoded(&span(ID, n, 0, 5)), Some("p"), ten_percent()).into_owned())
        .collect();
    let refs: Vec<SpanRef<'_>> = spans
        .iter()
        .map(|b| SpanRef {
            resource: &header,
            scope: &[],
            span: b,
        })
        .collect();
    let req = request(&refs);
    assert_eq!(RequestView::new(&req).validate(), Ok(3));
    let decoded = proto::ExportTraceServiceRequest::decode(req.as_ref()).unwrap();
    let got = &decoded.resource_spans[0].scope_spans[0].spans;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|s| s.trace_state == "ot=th:e6666666666666"));
}

#[test]
fn a_decision_annotates_only_kept_traces_and_the_policy_only_when_asked() {
    let mut file = PolicyFile::parse(
        "policies:\n  - {name: sample-10pct, type: probabilistic, probabilistic: {sampling_percentage: 10}}\n",
        "p.yaml",
    )
    .unwrap();
    file.policies.set_use_tracestate(true);
    // Hashes under the 10% threshold (see probabilistic.rs), and one above.
    let kept_id = TraceId([
        0xe0, 0x1d, 0xf5, 0x45, 0xfb, 0x66, 0x5e, 0x2f, 0xee, 0x98, 0x3a, 0xd7, 0xc3, 0x38, 0xc6,
        0x92,
    ]);
    let dropped_id = TraceId([0; 16]);
    let summary = TraceSummary::new();
    let decide = |id| {
        file.policies.evaluate(
            &file.policies.new_state(),
            &TraceView {
                trace_id: id,
                summary: &summary,
                spans: &[],
            },
            std::time::Duration::ZERO,
        )
    };
    let bytes = encoded(&span(kept_id.0, 1, 0, 5));
    let kept = decide(kept_id);
    assert!(kept.sampled);
    assert_eq!(
        decoded(&kept.annotate(&bytes, false)).trace_state,
        "ot=th:e6666666666666"
    );
    assert!(decoded(&kept.annotate(&bytes, false)).attributes.is_empty());
    assert_eq!(
        decoded(&kept.annotate(&bytes, true)).attributes,
        vec![kv(POLICY_ATTRIBUTE, s("sample-10pct"))]
    );
    let not_kept = decide(dropped_id);
    assert!(!not_kept.sampled);
    assert!(matches!(not_kept.annotate(&bytes, true), Cow::Borrowed(_)));
}

#[test]
fn record_policy_attributes_are_written_as_the_collector_names_them() {
    let bytes = encoded(&span(ID, 1, 0, 5));
    let out = annotate_span_with(
        &bytes,
        &Annotations {
            policy: Some("budget"),
            composite_policy: Some("errors"),
            cached_decision: true,
            threshold: Threshold::from_percentage(100.0),
        },
    );
    let got = decoded(&out);
    assert_eq!(
        got.attributes,
        vec![
            kv(POLICY_ATTRIBUTE, s("budget")),
            kv(COMPOSITE_POLICY_ATTRIBUTE, s("errors")),
            kv(CACHED_DECISION_ATTRIBUTE, b(true)),
        ]
    );
    // th:0 (keep everything) is written when asked for: the span's weight
    // is 1, not unknown.
    assert_eq!(got.trace_state, "ot=th:0");
    // Already there: nothing to add.
    assert!(matches!(
        annotate_span_with(
            &out,
            &Annotations {
                policy: Some("budget"),
                composite_policy: Some("errors"),
                cached_decision: true,
                threshold: Threshold::from_percentage(100.0),
            }
        ),
        Cow::Borrowed(_)
    ));
}
