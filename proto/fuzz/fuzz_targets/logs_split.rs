//! The logs wire walk, its split by trace ID and the receiver's limit scan
//! for logs on arbitrary bytes: never panic, and what the walk accepts
//! must round-trip: every record lands in exactly one part, records
//! without a trace ID only in the `None` part, and prost decodes every
//! part; the limit scan counts exactly the records the walk accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use proto::logs::{LogsView, split};
use proto::receiver::{RequestLimits, Signal, Violation, check_limits_of};

fn limits(max_spans: usize, max_attribute_value_bytes: usize) -> RequestLimits {
    RequestLimits {
        max_spans,
        max_attribute_value_bytes,
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = check_limits_of(data, limits(3, 8), Signal::Logs);
    let Ok(records) = LogsView::new(data).validate() else {
        assert!(split(data, |id| id.map(|t| t.0[0] % 3)).is_err());
        return;
    };
    assert_eq!(
        check_limits_of(data, limits(records.max(1), data.len().max(1)), Signal::Logs),
        Ok(())
    );
    if records > 1 {
        assert!(matches!(
            check_limits_of(data, limits(records - 1, 0), Signal::Logs),
            Err(Violation::TooManySpans { .. })
        ));
    }
    let parts = split(data, |id| id.map(|t| t.0[0] % 3)).expect("validated request splits");
    let mut total = 0;
    for part in &parts {
        let mut n = 0;
        LogsView::new(&part.request)
            .for_each_record(|_, _, record| {
                assert_eq!(record.trace_id.map(|t| t.0[0] % 3), part.key);
                n += 1;
            })
            .expect("a part walks");
        assert_eq!(n, part.spans);
        let decoded =
            ExportLogsServiceRequest::decode(part.request.as_ref()).expect("prost decodes a part");
        let decoded: usize = decoded
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        assert_eq!(decoded, part.spans);
        total += part.spans;
    }
    assert_eq!(total, records);
});
