//! The logs exporter of the LB: log records are split by trace ID on the
//! wire and go to the member that owns the trace on the same ring as its
//! spans; records without a trace ID are spread over the members that are
//! up, or, with `logs_backend` set on the LB node, to that backend. Members
//! and the backend are real OTLP receivers on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_exporter::resolver::{ResolverConfig, StaticConfig};
use lb_exporter::{ExportConfig, Lb, LbConfig, LbExporter, Member, MemberSet};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use proto::exporter::{ExporterConfig, OtlpClient, OtlpClientConfig};
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, Refusal, Signal, Sink};
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
        assert_eq!(logs.send(&bytes::Bytes::from(request(records))), Ok(10));
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
        logs.send(&bytes::Bytes::from(bad)),
        Err(lb_exporter::SendError::Invalid(_))
    ));
    assert_eq!(logs.held_spans(), 0);
}

/// The LB node with `logs_backend` set: over its gRPC receiver, records with
/// a trace ID still go to their trace's owner by ring, and the records
/// without one (in the same requests) go to the logs backend, none to a
/// member; counted `tailgate_lb_log_records_to_logs_backend_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_logs_backend_trace_less_records_go_there_and_the_rest_by_ring() {
    let members = [member(), member()];
    let backend = member();
    let Member_ {
        member: backend_addr,
        sink: backend_sink,
        _stop: _backend_stop,
    } = backend;
    let config = LbConfig {
        node: "lb-logs-backend".into(),
        receiver: ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().expect("addr")),
            http: None,
            ..ReceiverConfig::default()
        },
        admin: "127.0.0.1:0".parse().expect("addr"),
        resolver: ResolverConfig::Static(StaticConfig {
            members: members.iter().map(|m| m.member.to_string()).collect(),
        }),
        export: ExportConfig {
            batch_timeout: Duration::from_millis(20),
            ..ExportConfig::default()
        },
        logs_backend: Some(ExporterConfig {
            endpoint: format!("http://{backend_addr}"),
            batch_timeout: Duration::from_millis(20),
            ..ExporterConfig::default()
        }),
        drain_timeout: Duration::from_secs(5),
        ..LbConfig::default()
    };
    let lb = Lb::bind(config).expect("the LB binds");
    let grpc = lb.grpc_addr().expect("grpc");
    let spans = lb.exporter().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(lb.serve(async {
        let _ = stopped.await;
    }));
    let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{grpc}")))
        .expect("client")
        .for_signal(Signal::Logs);

    // 20 requests, each with 3 traces (2 records each) and 3 records
    // without a trace ID between them; and one request of trace-less
    // records only.
    let mut owners: BTreeMap<String, Member> = BTreeMap::new();
    let mut traceless = Vec::new();
    for r in 0..20u32 {
        let mut records = Vec::new();
        for t in 0..3 {
            let id = trace(1000 + r * 3 + t);
            for k in 0..2 {
                let body = format!("r{r} t{t} k{k}");
                owners.insert(body.clone(), spans.owner(&TraceId(id)).expect("owner"));
                records.push(record(Some(id), body));
            }
            let body = format!("r{r} none {t}");
            traceless.push(body.clone());
            records.push(record(None, body));
        }
        client
            .export(request(records).into())
            .await
            .expect("the LB accepts a mixed request");
    }
    let only: Vec<LogRecord> = (0..5)
        .map(|k| {
            let body = format!("only none {k}");
            traceless.push(body.clone());
            record(None, body)
        })
        .collect();
    client
        .export(request(only).into())
        .await
        .expect("the LB accepts a trace-less request");

    let sent = owners.len() + traceless.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let count = || {
        members
            .iter()
            .map(|m| m.sink.records.lock().expect("lock").len())
            .sum::<usize>()
            + backend_sink.records.lock().expect("lock").len()
    };
    while count() < sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_backend = backend_sink.records.lock().expect("lock").clone();
    let mut backend_bodies: Vec<String> = at_backend
        .iter()
        .map(|(id, body)| {
            assert!(
                id.is_none(),
                "{body} has a trace ID but went to the backend"
            );
            body.clone()
        })
        .collect();
    backend_bodies.sort();
    traceless.sort();
    assert_eq!(
        backend_bodies, traceless,
        "every trace-less record, once, at the backend"
    );
    let mut routed = 0;
    for m in &members {
        for (id, body) in m.sink.records.lock().expect("lock").iter() {
            assert!(id.is_some(), "{body} has no trace ID but went to a member");
            assert_eq!(
                owners.get(body),
                Some(&m.member),
                "{body} is not at its owner"
            );
            routed += 1;
        }
    }
    assert_eq!(
        routed,
        owners.len(),
        "every record with a trace ID, once, at its owner"
    );

    let scrape = proto::admin::install_metrics().render();
    let to_backend: f64 = scrape
        .lines()
        .filter(|l| {
            l.starts_with("tailgate_lb_log_records_to_logs_backend_total{")
                && l.contains("node=\"lb-logs-backend\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(to_backend, traceless.len() as f64);
    let _ = stop.send(());
    serving
        .await
        .expect("the LB task")
        .expect("the LB stops cleanly");
}

/// A logs backend that cannot take more (unreachable, its small queue
/// full) refuses the whole request, retryably, before anything is routed:
/// the refused request's records with a trace ID never reach a member, so
/// the client's retry sends nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_logs_backend_refuses_the_whole_request_before_routing_any_of_it() {
    let m = member();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("addr")
    };
    let config = LbConfig {
        node: "lb-logs-backend-full".into(),
        receiver: ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().expect("addr")),
            http: None,
            ..ReceiverConfig::default()
        },
        admin: "127.0.0.1:0".parse().expect("addr"),
        resolver: ResolverConfig::Static(StaticConfig {
            members: vec![m.member.to_string()],
        }),
        export: ExportConfig {
            batch_timeout: Duration::from_millis(20),
            ..ExportConfig::default()
        },
        logs_backend: Some(ExporterConfig {
            endpoint: format!("http://{closed}"),
            batch_timeout: Duration::from_millis(1),
            max_batch_bytes: 2048,
            queue_bytes: 2048,
            connect_timeout: Duration::from_millis(200),
            initial_interval: Duration::from_secs(30),
            max_interval: Duration::from_secs(30),
            ..ExporterConfig::default()
        }),
        drain_timeout: Duration::from_millis(200),
        ..LbConfig::default()
    };
    let lb = Lb::bind(config).expect("the LB binds");
    let grpc = lb.grpc_addr().expect("grpc");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(lb.serve(async {
        let _ = stopped.await;
    }));
    let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{grpc}")))
        .expect("client")
        .for_signal(Signal::Logs);

    let mut accepted = Vec::new();
    let mut refused = None;
    for r in 0..500u32 {
        let body = format!("r{r} traced");
        let records = vec![
            record(Some(trace(5000 + r)), body.clone()),
            record(None, format!("r{r} none {}", "x".repeat(64))),
        ];
        match client.export(request(records).into()).await {
            Ok(_) => accepted.push(body),
            Err(proto::exporter::ExportError::Status { code, .. }) => {
                assert_eq!(code, tonic::Code::ResourceExhausted, "a retryable refusal");
                refused = Some(body);
                break;
            }
            Err(e) => panic!("unexpected answer: {e}"),
        }
    }
    let refused = refused.expect("the backend's queue fills within 500 requests");
    assert!(!accepted.is_empty(), "requests were taken before it filled");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while m.sink.records.lock().expect("lock").len() < accepted.len()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Anything of the refused request would have come with the rest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut at_member: Vec<String> = m
        .sink
        .records
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, body)| body.clone())
        .collect();
    at_member.sort();
    accepted.sort();
    assert_eq!(
        at_member, accepted,
        "every accepted request's traced record, once"
    );
    assert!(!at_member.contains(&refused));
    let _ = stop.send(());
    let _ = serving.await.expect("the LB task");
}
