//! The OTLP/JSON path on arbitrary bytes: `to_protobuf` never panics, and a
//! body it accepts becomes a request the wire reader accepts too, with the
//! same spans prost sees: the HTTP receiver hands the converted bytes to a
//! node that walks them with `RequestView`, and a conversion that produced
//! bytes the node refuses would turn a valid JSON body into a 400.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use proto::view::RequestView;

fuzz_target!(|data: &[u8]| {
    let Ok(encoded) = proto::json::to_protobuf(data) else {
        return;
    };
    let spans = RequestView::new(&encoded)
        .validate()
        .expect("the wire reader accepts what the JSON path produced");
    let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).expect("prost decodes it");
    let n: usize = decoded
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(n, spans);
});
