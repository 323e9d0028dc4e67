//! OTLP logs on the wire: the walk over an encoded
//! `ExportLogsServiceRequest` and its split by trace ID, beside the span
//! walk of [`crate::view`] and [`crate::split`], decoding nothing.
//!
//! A logs request has the shape of a traces request with the same field
//! numbers (`resource_logs = 1`; `ResourceLogs { resource = 1, scope_logs =
//! 2, schema_url = 3 }`; `ScopeLogs { scope = 1, log_records = 2,
//! schema_url = 3 }`), so group headers are built the same way and
//! [`crate::write`] assembles log records into a request unchanged. Only
//! the leaf differs: a `LogRecord`, whose trace ID is optional (a record
//! emitted outside any span has none, or sixteen zero bytes).

use std::borrow::Cow;
use std::hash::Hash;

use bytes::Bytes;

use crate::split::{Grouper, Part};
use crate::view::{
    self, Group, SpanId, TraceId, validate_any_value, validate_key_value, validate_resource,
    validate_scope,
};
use crate::wire::{self, FIXED32, LEN, Reader, Value, WireError};

/// An encoded `ExportLogsServiceRequest`.
#[derive(Clone, Copy)]
pub struct LogsView<'a> {
    buf: &'a [u8],
}

impl<'a> LogsView<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        LogsView { buf }
    }

    /// Calls `f` for every log record with its resource and scope group, in
    /// order. Checks the whole structure; stops at the first malformed byte.
    pub fn for_each_record<F>(&self, mut f: F) -> Result<(), WireError>
    where
        F: FnMut(&Group<'a>, &Group<'a>, LogRecordView<'a>),
    {
        let mut scope_index = 0;
        let mut resource_index = 0;
        let mut top = Reader::new(self.buf);
        while let Some(field) = top.next_field()? {
            if field.number != 1 {
                // Unknown request-level fields are skipped, as prost would.
                continue;
            }
            let rl = wire::bytes(&field, "ExportLogsServiceRequest")?;
            let (header, scopes) = group(rl, field.value_offset, "ResourceLogs", true)?;
            let resource = Group {
                index: resource_index,
                header,
            };
            resource_index += 1;
            for (sl, base) in scopes {
                let (header, records) = group(sl, base, "ScopeLogs", false)?;
                let scope = Group {
                    index: scope_index,
                    header,
                };
                scope_index += 1;
                for (record, base) in records {
                    f(&resource, &scope, LogRecordView::parse(record, base)?);
                }
            }
        }
        Ok(())
    }

    /// Checks the whole request and counts its log records.
    pub fn validate(&self) -> Result<usize, WireError> {
        let mut n = 0;
        self.for_each_record(|_, _, _| n += 1)?;
        Ok(n)
    }
}

/// Children of a `ResourceLogs` or `ScopeLogs` (field 2) with their
/// absolute offsets.
type Children<'a> = Vec<(&'a [u8], usize)>;

/// Reads a `ResourceLogs` (`resource` true) or `ScopeLogs`: checks its
/// resource or scope and schema URL, and returns its header (every field
/// but the children) and its children.
fn group<'a>(
    buf: &'a [u8],
    base: usize,
    message: &'static str,
    resource: bool,
) -> Result<(Cow<'a, [u8]>, Children<'a>), WireError> {
    let mut reader = Reader::at(buf, base);
    let mut header_fields = Vec::new();
    let mut children = Vec::new();
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => {
                let b = wire::bytes(&field, message)?;
                if resource {
                    validate_resource(b, field.value_offset)?;
                } else {
                    validate_scope(b, field.value_offset)?;
                }
            }
            2 => {
                wire::expect(&field, message, LEN)?;
                children.push((wire::bytes(&field, message)?, field.value_offset));
                continue;
            }
            3 => wire::check_string(&field, message)?,
            _ => {}
        }
        view::push_range(&mut header_fields, field.range());
    }
    Ok((view::header(buf, &header_fields), children))
}

/// One log record: its encoded bytes and the fields the data path reads,
/// in one checked pass.
#[derive(Debug, Clone, Copy)]
pub struct LogRecordView<'a> {
    bytes: &'a [u8],
    offset: usize,
    /// `None` for a record emitted outside any trace: no trace ID, an empty
    /// one, or sixteen zero bytes (the invalid trace ID).
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub flags: u32,
}

impl<'a> LogRecordView<'a> {
    /// Parses and checks the encoded `LogRecord` in `bytes`, which starts at
    /// absolute offset `offset` of the request.
    pub fn parse(bytes: &'a [u8], offset: usize) -> Result<Self, WireError> {
        const M: &str = "LogRecord";
        let mut view = LogRecordView {
            bytes,
            offset,
            trace_id: None,
            span_id: None,
            time_unix_nano: 0,
            observed_time_unix_nano: 0,
            severity_number: 0,
            flags: 0,
        };
        let mut reader = Reader::at(bytes, offset);
        while let Some(field) = reader.next_field()? {
            match field.number {
                1 => view.time_unix_nano = view::fixed64(&field, M)?,
                11 => view.observed_time_unix_nano = view::fixed64(&field, M)?,
                2 => view.severity_number = view::varint(&field, M)? as i32,
                3 | 12 => wire::check_string(&field, M)?,
                5 => validate_any_value(wire::bytes(&field, M)?, field.value_offset, 1)?,
                6 => validate_key_value(wire::bytes(&field, M)?, field.value_offset, 1)?,
                7 => {
                    view::varint(&field, M)?;
                }
                8 => {
                    wire::expect(&field, M, FIXED32)?;
                    if let Value::Fixed32(v) = field.value {
                        view.flags = v;
                    }
                }
                9 => {
                    let b = wire::bytes(&field, M)?;
                    view.trace_id = match b.len() {
                        0 => None,
                        16 => Some(TraceId(b.try_into().unwrap_or_default()))
                            .filter(|id| id.0 != [0; 16]),
                        len => return Err(WireError::BadLogTraceId { offset, len }),
                    };
                }
                10 => {
                    let b = wire::bytes(&field, M)?;
                    view.span_id = match b.len() {
                        0 => None,
                        8 => Some(SpanId(b.try_into().unwrap_or_default()))
                            .filter(|id| id.0 != [0; 8]),
                        len => return Err(WireError::BadLogSpanId { offset, len }),
                    };
                }
                _ => {}
            }
        }
        Ok(view)
    }

    /// The encoded `LogRecord` message, without its tag and length.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Absolute offset of the record's first byte in the request.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// Splits a logs `request` by `key_of(trace ID)` (`None` for a record
/// without one), as [`crate::split::split`] splits spans: parts in the
/// order their key first appears, records in order within a part, each
/// with its resource and scope header; [`Part::spans`] counts the records.
/// A malformed request yields an error and no part.
pub fn split<K, F>(request: &[u8], key_of: F) -> Result<Vec<Part<K>>, WireError>
where
    K: Eq + Hash + Clone,
    F: FnMut(Option<&TraceId>) -> K,
{
    Ok(group_records(request, key_of)?.parts())
}

/// [`split`], but when every record goes to one key the part is `request`
/// itself, not a copy (as [`crate::split::split_whole`]).
pub fn split_whole<K, F>(request: &Bytes, key_of: F) -> Result<Vec<Part<K>>, WireError>
where
    K: Eq + Hash + Clone,
    F: FnMut(Option<&TraceId>) -> K,
{
    Ok(group_records(request, key_of)?.parts_or_whole(request))
}

fn group_records<K, F>(request: &[u8], mut key_of: F) -> Result<Grouper<'_, K>, WireError>
where
    K: Eq + Hash + Clone,
    F: FnMut(Option<&TraceId>) -> K,
{
    let mut groups = Grouper::default();
    LogsView::new(request).for_each_record(|resource, scope, record| {
        groups.push(
            resource,
            scope,
            record.trace_id,
            record.bytes(),
            &mut key_of,
        );
    })?;
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExportLogsServiceRequest;
    use crate::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use crate::otlp::resource::v1::Resource;
    use prost::Message;

    fn record(trace: Option<u8>, body: &str) -> LogRecord {
        LogRecord {
            time_unix_nano: 7,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body.into())),
            }),
            trace_id: trace.map(|t| vec![t; 16]).unwrap_or_default(),
            span_id: trace.map(|t| vec![t; 8]).unwrap_or_default(),
            ..Default::default()
        }
    }

    fn request(groups: Vec<(&str, Vec<LogRecord>)>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: groups
                .into_iter()
                .map(|(service, log_records)| ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(service.into())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
                            ..Default::default()
                        }),
                        log_records,
                        schema_url: "s".into(),
                    }],
                    schema_url: "r".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn records_are_read_with_their_trace_ids() {
        let req = request(vec![(
            "a",
            vec![
                record(Some(1), "x"),
                record(None, "y"),
                record(Some(0), "z"),
            ],
        )]);
        let bytes = req.encode_to_vec();
        let mut seen = Vec::new();
        LogsView::new(&bytes)
            .for_each_record(|_, _, r| seen.push((r.trace_id, r.severity_number)))
            .expect("valid");
        assert_eq!(
            seen,
            vec![(Some(TraceId([1; 16])), 9), (None, 9), (None, 9)],
            "an all-zero trace ID is no trace ID"
        );
    }

    #[test]
    fn split_then_merge_gives_back_every_record_under_its_resource() {
        let req = request(vec![
            ("a", vec![record(Some(1), "a1"), record(Some(2), "a2")]),
            ("b", vec![record(Some(1), "b1"), record(None, "b-")]),
        ]);
        let bytes = req.encode_to_vec();
        let parts = split(&bytes, |id| id.map(|t| t.0[0])).expect("splits");
        assert_eq!(
            parts.iter().map(|p| (p.key, p.spans)).collect::<Vec<_>>(),
            vec![(Some(1), 2), (Some(2), 1), (None, 1)]
        );
        let one = ExportLogsServiceRequest::decode(parts[0].request.clone()).expect("decodes");
        assert_eq!(one.resource_logs.len(), 2);
        assert_eq!(one.resource_logs[0].resource, req.resource_logs[0].resource);
        assert_eq!(one.resource_logs[0].schema_url, "r");
        assert_eq!(one.resource_logs[0].scope_logs[0].schema_url, "s");
        assert_eq!(
            one.resource_logs[1].scope_logs[0].log_records,
            vec![record(Some(1), "b1")]
        );
        let total: usize = parts
            .iter()
            .map(|p| {
                ExportLogsServiceRequest::decode(p.request.clone())
                    .expect("decodes")
                    .resource_logs
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .map(|s| s.log_records.len())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn a_trace_id_of_the_wrong_length_is_refused_with_its_offset() {
        let mut bad = record(Some(1), "x");
        bad.trace_id = vec![1; 15];
        let bytes = request(vec![("a", vec![bad])]).encode_to_vec();
        let err = LogsView::new(&bytes).validate().expect_err("refused");
        assert!(
            matches!(err, WireError::BadLogTraceId { len: 15, .. }),
            "{err}"
        );
        assert!(split(&bytes, |_| 0).is_err());
    }

    #[test]
    fn truncated_and_mistyped_requests_are_errors_not_panics() {
        let bytes = request(vec![("a", vec![record(Some(3), "x")])]).encode_to_vec();
        for cut in 0..bytes.len() {
            let _ = LogsView::new(&bytes[..cut]).validate();
        }
        // severity_text (3) as a varint
        let mut bad = Vec::new();
        let rec = [0x18u8, 0x01];
        let scope = [&[0x12u8, rec.len() as u8][..], &rec].concat();
        let res = [&[0x12u8, scope.len() as u8][..], &scope].concat();
        bad.extend_from_slice(&[0x0a, res.len() as u8]);
        bad.extend_from_slice(&res);
        let err = LogsView::new(&bad).validate().expect_err("wrong wire type");
        assert!(err.to_string().contains("LogRecord.3"), "{err}");
    }
}
