//! The wire reader, splitter and the receiver's limit scan on arbitrary
//! bytes: never panic, and what they accept must round-trip: every span
//! lands in exactly one part, the parts hold exactly the accepted spans,
//! and prost decodes every part; the limit scan counts exactly the spans
//! the walk accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use proto::receiver::{RequestLimits, Violation, check_limits};
use proto::view::RequestView;

fn limits(max_spans: usize, max_attribute_value_bytes: usize) -> RequestLimits {
    RequestLimits {
        max_spans,
        max_attribute_value_bytes,
    }
}

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, the scan answers without panicking.
    let _ = check_limits(data, limits(3, 8));
    let view = RequestView::new(data);
    let Ok(spans) = view.validate() else {
        // A refused request must also be refused by the splitter.
        assert!(proto::split::split(data, |id| id.0[0] % 3).is_err());
        return;
    };
    // The scan counts what the walk accepted; no value is longer than the
    // request that holds it.
    assert_eq!(check_limits(data, limits(spans.max(1), data.len().max(1))), Ok(()));
    if spans > 1 {
        assert!(matches!(
            check_limits(data, limits(spans - 1, 0)),
            Err(Violation::TooManySpans { .. })
        ));
    }
    // Lazy reads over accepted bytes never fail or panic.
    view.for_each_span(|resource, _, span| {
        for (k, _) in span.attributes() {
            std::hint::black_box(k);
        }
        std::hint::black_box(proto::view::resource_attributes(&resource.header).count());
    })
    .expect("validated");
    let parts = proto::split::split(data, |id| id.0[0] % 3).expect("validated request splits");
    let mut total = 0;
    for part in &parts {
        assert_eq!(RequestView::new(&part.request).validate(), Ok(part.spans));
        let decoded =
            ExportTraceServiceRequest::decode(part.request.as_ref()).expect("prost decodes a part");
        let n: usize = decoded
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(n, part.spans);
        total += part.spans;
    }
    assert_eq!(total, spans);
});
