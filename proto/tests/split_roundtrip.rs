//! Property tests: splitting by any key function, then decoding every part
//! with prost, gives exactly the input spans, each under its own resource and
//! scope; and no input, however malformed, makes the reader panic.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;
use proto::split::{split, split_whole};
use proto::view::RequestView;

#[derive(Debug, Clone)]
struct SpanSpec {
    trace: u8,
    span_id: u64,
    name: String,
    status: i32,
    attrs: Vec<(String, i64)>,
    /// An unknown field appended to the span's bytes, as a newer SDK might send.
    unknown: Option<u32>,
}

#[derive(Debug, Clone)]
struct ScopeSpec {
    name: String,
    schema_url: String,
    spans: Vec<SpanSpec>,
    unknown: bool,
}

#[derive(Debug, Clone)]
struct ResourceSpec {
    service: String,
    schema_url: String,
    scopes: Vec<ScopeSpec>,
    unknown: bool,
}

fn span_spec() -> impl Strategy<Value = SpanSpec> {
    (
        0u8..6,
        1u64..u64::MAX,
        "[a-z]{0,12}",
        0i32..3,
        prop::collection::vec(("[a-z.]{1,8}", any::<i64>()), 0..4),
        prop::option::of(17u32..1000),
    )
        .prop_map(|(trace, span_id, name, status, attrs, unknown)| SpanSpec {
            trace,
            span_id,
            name,
            status,
            attrs,
            unknown,
        })
}

fn scope_spec() -> impl Strategy<Value = ScopeSpec> {
    (
        "[a-z]{0,8}",
        prop_oneof![Just(String::new()), "https://[a-z]{1,6}"],
        prop::collection::vec(span_spec(), 0..12),
        any::<bool>(),
    )
        .prop_map(|(name, schema_url, spans, unknown)| ScopeSpec {
            name,
            schema_url,
            spans,
            unknown,
        })
}

fn request_spec() -> impl Strategy<Value = Vec<ResourceSpec>> {
    prop::collection::vec(
        (
            "[a-z]{1,8}",
            prop_oneof![Just(String::new()), "https://[a-z]{1,6}"],
            prop::collection::vec(scope_spec(), 0..4),
            any::<bool>(),
        )
            .prop_map(|(service, schema_url, scopes, unknown)| ResourceSpec {
                service,
                schema_url,
                scopes,
                unknown,
            }),
        0..5,
    )
}

fn trace_id(n: u8) -> Vec<u8> {
    let mut id = vec![0xa0 | n; 16];
    id[15] = n;
    id
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn len_field(out: &mut Vec<u8>, field: u32, content: &[u8]) {
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(content.len() as u64, out);
    out.extend_from_slice(content);
}

fn unknown_field(out: &mut Vec<u8>, field: u32) {
    prost::encoding::encode_key(field, prost::encoding::WireType::Varint, out);
    prost::encoding::encode_varint(u64::from(field) * 3, out);
}

/// Encodes the request by hand, so unknown fields can be placed at every
/// level and `schema_url` lands after the children, as prost writes it.
fn encode(spec: &[ResourceSpec]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in spec {
        let mut rs = Vec::new();
        let resource = Resource {
            attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue(r.service.clone()),
            )],
            ..Default::default()
        };
        len_field(&mut rs, 1, &resource.encode_to_vec());
        for s in &r.scopes {
            let mut ss = Vec::new();
            if s.unknown {
                unknown_field(&mut ss, 99);
            }
            let scope = InstrumentationScope {
                name: s.name.clone(),
                ..Default::default()
            };
            len_field(&mut ss, 1, &scope.encode_to_vec());
            for sp in &s.spans {
                let span = Span {
                    trace_id: trace_id(sp.trace),
                    span_id: sp.span_id.to_le_bytes().to_vec(),
                    name: sp.name.clone(),
                    start_time_unix_nano: sp.span_id % 1000,
                    end_time_unix_nano: sp.span_id % 1000 + 5,
                    attributes: sp
                        .attrs
                        .iter()
                        .map(|(k, v)| kv(k, any_value::Value::IntValue(*v)))
                        .collect(),
                    status: (sp.status != 0).then_some(Status {
                        code: sp.status,
                        message: String::new(),
                    }),
                    ..Default::default()
                };
                let mut bytes = span.encode_to_vec();
                if let Some(f) = sp.unknown {
                    unknown_field(&mut bytes, f);
                }
                len_field(&mut ss, 2, &bytes);
            }
            if !s.schema_url.is_empty() {
                len_field(&mut ss, 3, s.schema_url.as_bytes());
            }
            len_field(&mut rs, 2, &ss);
        }
        if !r.schema_url.is_empty() {
            len_field(&mut rs, 3, r.schema_url.as_bytes());
        }
        if r.unknown {
            unknown_field(&mut rs, 77);
        }
        len_field(&mut out, 1, &rs);
    }
    out
}

/// Every span of a decoded request, with its resource and scope (children
/// cleared), as comparable values.
fn flatten(req: &ExportTraceServiceRequest) -> Vec<(ResourceSpans, ScopeSpans, Span)> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let r = ResourceSpans {
            scope_spans: vec![],
            ..rs.clone()
        };
        for ss in &rs.scope_spans {
            let s = ScopeSpans {
                spans: vec![],
                ..ss.clone()
            };
            for span in &ss.spans {
                out.push((r.clone(), s.clone(), span.clone()));
            }
        }
    }
    out
}

fn raw_spans(buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    RequestView::new(buf)
        .for_each_span(|_, _, s| out.push(s.bytes().to_vec()))
        .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn split_then_decode_gives_the_input_spans_under_their_own_groups(
        spec in request_spec(),
        keys in 1u8..6,
    ) {
        let input = encode(&spec);
        let decoded = ExportTraceServiceRequest::decode(input.as_slice()).unwrap();
        let key_of = |id: &proto::view::TraceId| id.0[15] % keys;
        let parts = split(&input, key_of).unwrap();

        // Distinct keys, each part holding only its own key's spans, in input order.
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for part in &parts {
            prop_assert!(seen.insert(part.key));
            let got = ExportTraceServiceRequest::decode(part.request.as_ref()).unwrap();
            let got = flatten(&got);
            prop_assert_eq!(got.len(), part.spans);
            let want: Vec<_> = flatten(&decoded)
                .into_iter()
                .filter(|(_, _, s)| s.trace_id[15] % keys == part.key)
                .collect();
            prop_assert_eq!(&got, &want);
            total += got.len();

            // Span bytes, unknown fields and all, are the input's bytes.
            let want_raw: Vec<_> = raw_spans(&input)
                .into_iter()
                .filter(|b| {
                    let s = Span::decode(b.as_slice()).unwrap();
                    s.trace_id[15] % keys == part.key
                })
                .collect();
            prop_assert_eq!(raw_spans(&part.request), want_raw);
        }
        prop_assert_eq!(total, flatten(&decoded).len());
    }

    #[test]
    fn split_whole_is_split_but_forwards_a_one_key_request_as_it_came(
        spec in request_spec(),
        keys in 1u8..4,
    ) {
        let input = bytes::Bytes::from(encode(&spec));
        let key_of = |id: &proto::view::TraceId| id.0[15] % keys;
        let copied = split(&input, key_of).unwrap();
        let whole = split_whole(&input, key_of).unwrap();
        prop_assert_eq!(whole.len(), copied.len());
        for (w, c) in whole.iter().zip(&copied) {
            prop_assert_eq!((w.key, w.spans), (c.key, c.spans));
            if copied.len() == 1 {
                // The request itself, not a copy of it.
                prop_assert_eq!(w.request.as_ptr(), input.as_ptr());
                prop_assert_eq!(w.request.len(), input.len());
                prop_assert_eq!(raw_spans(&w.request), raw_spans(&c.request));
            } else {
                prop_assert_eq!(&w.request, &c.request);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = split(&bytes, |id| id.0[0]);
        let _ = RequestView::new(&bytes).validate();
    }

    #[test]
    fn what_the_reader_accepts_prost_decodes_the_same(
        spec in request_spec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut input = encode(&spec);
        if input.is_empty() {
            return Ok(());
        }
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] = byte;
        }
        input.truncate(cut.index(input.len() + 1));
        if let Ok(n) = RequestView::new(&input).validate() {
            let decoded = ExportTraceServiceRequest::decode(input.as_slice());
            prop_assert!(decoded.is_ok(), "reader accepted what prost refuses: {:?}", decoded);
            prop_assert_eq!(flatten(&decoded.unwrap()).len(), n);
        }
    }
}

#[test]
fn truncating_a_valid_request_anywhere_is_an_error_or_a_prefix() {
    let spec = vec![ResourceSpec {
        service: "svc".into(),
        schema_url: "https://s".into(),
        unknown: true,
        scopes: vec![ScopeSpec {
            name: "lib".into(),
            schema_url: String::new(),
            unknown: false,
            spans: (0..3)
                .map(|i| SpanSpec {
                    trace: i,
                    span_id: 7 + u64::from(i),
                    name: "op".into(),
                    status: 2,
                    attrs: vec![("k".into(), 1)],
                    unknown: None,
                })
                .collect(),
        }],
    }];
    let input = encode(&spec);
    for cut in 0..input.len() {
        // The only valid proper prefix is the empty request.
        let result = RequestView::new(&input[..cut]).validate();
        if cut == 0 {
            assert_eq!(result, Ok(0));
        } else {
            assert!(result.is_err(), "prefix of {cut} bytes accepted");
        }
    }
}
