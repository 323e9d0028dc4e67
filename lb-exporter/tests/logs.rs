//! The logs exporter of the LB: log records are split by trace ID on the
//! wire and go to the member that owns the trace on the same ring as its
//! spans; records without a trace ID are spread over the members that are
//! up. Members are real OTLP receivers on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_exporter::{ExportConfig, LbExporter, Member, MemberSet};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, Refusal, Sink};
use proto::view::TraceId;
use tokio::sync::{oneshot, watch};

/// Records the body and trace ID of every log record it takes.
#[derive(Default)]
struct LogSink {
    records: Mutex<Vec<(Option<[u8; 16]>, String)>>,
}

impl Sink for LogSink {
    async fn accept(&self, _batch: Batch) -> Result<Accepted, Refusal> {
        Err(Refusal::Invalid("spans are not expected here".into()))
    }

    async fn accept_logs(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let request = ExportLogsServiceRequest::decode(batch.request.clone())
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        let mut records = self.records.lock().expect("lock");
        let mut n = 0;
        for record in request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            let id = <[u8; 16]>::try_from(record.trace_id.as_slice()).ok();
            let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            records.push((id, body));
            n += 1;
        }
        Ok(Accepted { spans: n })
    }
}

struct Member_ {
    member: Member,
    sink: Arc<LogSink>,
    _stop: oneshot::Sender<()>,
}

fn member() -> Member_ {
    let receiver = Receiver::bind(ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        http: None,
        node: "member".into(),
        ..ReceiverConfig::default()
    })
    .expect("binds");
    let addr = receiver.grpc_addr().expect("grpc");
    let sink = Arc::new(LogSink::default());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(receiver.serve(sink.clone(), async move {
        let _ = stopped.await;
    }));
    Member_ {
        member: Member::from_addr(addr),
        sink,
        _stop: stop,
    }
}

fn record(trace: Option<[u8; 16]>, body: String) -> LogRecord {
    LogRecord {
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        trace_id: trace.map(|t| t.to_vec()).unwrap_or_default(),
        ..Default::default()
    }
}

fn request(records: Vec<LogRecord>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn trace(i: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&i.to_be_bytes());
    id[15] = 1;
    id
}

#[tokio::test]
async fn log_records_follow_their_traces_owner_and_the_rest_are_spread() {
    proto::admin::install_metrics();
    let members = [member(), member(), member()];
    let set: MemberSet = members.iter().map(|m| m.member.clone()).collect();
    let (_tx, rx) = watch::channel(set);
    let config = ExportConfig {
        batch_timeout: Duration::from_millis(20),
        ..ExportConfig::default()
    };
    let spans = LbExporter::start(&config, "lb-logs", rx.clone()).expect("starts");
    let logs = LbExporter::start_logs(&config, "lb-logs", rx).expect("starts");
    // 30 requests, each with records of 4 traces (2 each) and 2 without.
    let mut expected: BTreeMap<String, Option<Member>> = BTreeMap::new();
    let mut sent = 0;
    for r in 0..30u32 {
        let mut records = Vec::new();
        for t in 0..4 {
            let id = trace(r * 4 + t);
            for k in 0..2 {
                let body = format!("r{r} t{t} k{k}");
                expected.insert(body.clone(), spans.owner(&TraceId(id)));
                records.push(record(Some(id), body));
            }
        }
        for k in 0..2 {
            let body = format!("r{r} none {k}");
            expected.insert(body.clone(), None);
            records.push(record(None, body));
        }
        sent += records.len();
        assert_eq!(logs.send(&request(records)), Ok(10));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: usize = members
            .iter()
            .map(|m| m.sink.records.lock().expect("lock").len())
            .sum();
        if got >= sent || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut traceless = Vec::new();
    let mut arrived = 0;
    for m in &members {
        let records = m.sink.records.lock().expect("lock").clone();
        let mut none = 0;
        for (id, body) in &records {
            arrived += 1;
            match expected.get(body) {
                Some(Some(owner)) => {
                    assert_eq!(
                        owner, &m.member,
                        "{body} went to a member that does not own its trace"
                    );
                    assert!(id.is_some());
                }
                Some(None) => none += 1,
                None => panic!("unexpected record {body}"),
            }
        }
        traceless.push(none);
    }
    assert_eq!(arrived, sent, "every record arrives once");
    // 60 records without a trace ID in 30 requests, taken in turn: 20 each.
    assert_eq!(traceless, vec![20, 20, 20], "spread evenly");
    let report = logs
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(report.dropped_spans, 0);
    spans
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn a_malformed_logs_request_is_refused_whole() {
    proto::admin::install_metrics();
    let m = member();
    let (_tx, rx) = watch::channel([m.member.clone()].into_iter().collect::<MemberSet>());
    let logs = LbExporter::start_logs(&ExportConfig::default(), "lb-bad-logs", rx).expect("starts");
    let mut bad = request(vec![record(Some(trace(1)), "x".into())]);
    bad.truncate(bad.len() - 1);
    assert!(matches!(
        logs.send(&bad),
        Err(lb_exporter::SendError::Invalid(_))
    ));
    assert_eq!(logs.held_spans(), 0);
}
