//! OTLP logs on the receiver (gRPC LogsService and `POST /v1/logs`),
//! against the real server on 127.0.0.1:0: valid requests reach the node
//! as the sent bytes (JSON converted once), and bad input gets the same
//! refusals as traces, counted, losing nothing else.

mod receiver_support;

use std::net::SocketAddr;

use bytes::Bytes;
use prost::Message;
use proto::ExportLogsServiceRequest;
use proto::codec::{ClientCodec, LOGS_EXPORT_PATH};
use proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use proto::otlp::common::v1::{AnyValue, any_value};
use proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use proto::otlp::resource::v1::Resource;
use proto::receiver::{AuthConfig, LOGS_PATH, ReceiverConfig};
use receiver_support::*;
use tonic::{Code, Status};

fn logs_request(records: usize, with_trace: bool) -> ExportLogsServiceRequest {
    let log_records = (0..records)
        .map(|i| LogRecord {
            time_unix_nano: i as u64,
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("record {i}"))),
            }),
            trace_id: if with_trace {
                vec![i as u8 + 1; 16]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("svc".into()),
                )],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

async fn export_logs_raw(addr: SocketAddr, body: impl Into<Bytes>) -> Result<(), Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary::<Bytes, proto::ExportTraceServiceResponse, _>(
        tonic::Request::new(body.into()),
        http::uri::PathAndQuery::from_static(LOGS_EXPORT_PATH),
        ClientCodec::default(),
    )
    .await
    .map(drop)
}

fn log_records(running: &Running, protocol: &str) -> f64 {
    running.metric(
        "tailgate_log_records_received_total",
        &[("protocol", protocol)],
    )
}

#[tokio::test]
async fn grpc_logs_export_hands_the_node_the_sent_request() {
    let running = start(loopback_config("logs-grpc"));
    let request = logs_request(3, true);
    let mut client = LogsServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .expect("connects");
    bounded(client.export(request.clone()))
        .await
        .expect("accepted");
    let batches = running.sink.log_batches.lock().expect("lock").clone();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].request.as_ref(), request.encode_to_vec());
    assert!(running.sink.batches().is_empty(), "not a traces batch");
    assert_eq!(log_records(&running, "grpc"), 3.0);
    assert_eq!(running.spans_received("grpc"), 0.0);
}

#[tokio::test]
async fn http_logs_arrive_as_protobuf_whether_sent_as_protobuf_or_json() {
    let running = start(loopback_config("logs-http"));
    let client = http1_client();
    let request = logs_request(2, false);
    let reply = bounded(post(
        &client,
        running.http,
        LOGS_PATH,
        &[("content-type", "application/x-protobuf")],
        request.encode_to_vec(),
    ))
    .await;
    assert_eq!(reply.status, 200);
    let json = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"body":{"stringValue":"in a span"},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"},
        {"body":{"stringValue":"outside"}}]}]}]}"#;
    let reply = bounded(post(
        &client,
        running.http,
        LOGS_PATH,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        gzip(json.as_bytes()),
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_ref(), b"{}");
    let batches = running.sink.log_batches.lock().expect("lock").clone();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].request.as_ref(), request.encode_to_vec());
    let converted = ExportLogsServiceRequest::decode(batches[1].request.clone()).expect("decodes");
    let records = &converted.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].trace_id.len(), 16);
    assert!(records[1].trace_id.is_empty());
    assert_eq!(log_records(&running, "http"), 4.0);
}

#[tokio::test]
async fn bad_logs_are_refused_like_bad_traces_and_counted() {
    let config = ReceiverConfig {
        max_spans_per_request: 5,
        max_attribute_value_bytes: 64,
        max_request_bytes: 64 * 1024,
        ..loopback_config("logs-bad")
    };
    let running = start(config);
    let client = http1_client();
    // Not protobuf at all: the node's walk refuses it.
    let status = export_logs_raw(running.grpc, vec![0xff, 0xff, 0xff])
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::InvalidArgument);
    // A trace ID of 15 bytes.
    let mut bad = logs_request(1, true);
    bad.resource_logs[0].scope_logs[0].log_records[0].trace_id = vec![1; 15];
    let status = export_logs_raw(running.grpc, bad.encode_to_vec())
        .await
        .expect_err("bad trace id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("trace_id is 15 bytes"),
        "{status:?}"
    );
    // More records than max_spans_per_request.
    let status = export_logs_raw(running.grpc, logs_request(6, true).encode_to_vec())
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::ResourceExhausted);
    // A record attribute over max_attribute_value_bytes.
    let mut long = logs_request(1, false);
    long.resource_logs[0].scope_logs[0].log_records[0].attributes =
        vec![kv("stack", any_value::Value::StringValue("x".repeat(200)))];
    let reply = post(
        &client,
        running.http,
        LOGS_PATH,
        &[("content-type", "application/x-protobuf")],
        long.encode_to_vec(),
    )
    .await;
    assert_eq!(reply.status, 413);
    assert!(
        String::from_utf8_lossy(&reply.body).contains("log record attribute \"stack\""),
        "{:?}",
        reply.body
    );
    // Bad JSON, a bad JSON trace ID, an unknown content type, a gzip bomb.
    for (headers, body, expected) in [
        (
            vec![("content-type", "application/json")],
            b"{\"resourceLogs\":[".to_vec(),
            400,
        ),
        (
            vec![("content-type", "application/json")],
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"ab"}]}]}]}"#.to_vec(),
            400,
        ),
        (vec![("content-type", "text/plain")], b"hello".to_vec(), 415),
        (
            vec![
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "gzip"),
            ],
            gzip_bomb(4),
            413,
        ),
    ] {
        let reply = bounded(post(&client, running.http, LOGS_PATH, &headers, body)).await;
        assert_eq!(reply.status, expected, "{headers:?}: {:?}", reply.body);
    }
    // Nothing reached the node, nothing was counted as received; valid
    // logs still pass.
    assert!(running.sink.log_batches.lock().expect("lock").is_empty());
    assert_eq!(
        log_records(&running, "grpc") + log_records(&running, "http"),
        0.0
    );
    export_logs_raw(running.grpc, logs_request(5, true).encode_to_vec())
        .await
        .expect("valid logs still accepted");
    assert_eq!(log_records(&running, "grpc"), 5.0);
    assert_eq!(running.requests("grpc", "invalid"), 2.0);
    assert_eq!(running.requests("grpc", "too_many_spans"), 1.0);
    assert_eq!(running.requests("http", "attribute_too_long"), 1.0);
}

#[tokio::test]
async fn logs_need_the_same_token_as_traces() {
    let dir = std::env::temp_dir().join(format!("tailgate-logs-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "s3cret\n").expect("tokens");
    let config = ReceiverConfig {
        auth: Some(AuthConfig {
            tokens_file: Some(tokens),
            tokens_env: None,
            header: "authorization".into(),
        }),
        ..loopback_config("logs-auth")
    };
    let running = start(config);
    let status = export_logs_raw(running.grpc, logs_request(1, true).encode_to_vec())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let client = http1_client();
    let body = logs_request(1, true).encode_to_vec();
    let reply = post(
        &client,
        running.http,
        LOGS_PATH,
        &[("content-type", "application/x-protobuf")],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = post(
        &client,
        running.http,
        LOGS_PATH,
        &[
            ("content-type", "application/x-protobuf"),
            ("authorization", "Bearer s3cret"),
        ],
        body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(log_records(&running, "http"), 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_exporter_sends_logs_to_the_logs_service_batched_and_retried() {
    use proto::exporter::{Exporter, ExporterConfig, OtlpBatch, StartOptions};
    use proto::receiver::{Refusal, Signal};
    use std::time::Duration;

    let running = start(loopback_config("logs-export"));
    // The first attempt is refused as retryable; the retry goes through.
    running.sink.refuse(Some(Refusal::Unavailable {
        retry_after: Duration::from_millis(10),
    }));
    let config = ExporterConfig {
        endpoint: format!("http://{}", running.grpc),
        batch_timeout: Duration::from_millis(50),
        initial_interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(50),
        name: "logs".into(),
        ..ExporterConfig::default()
    };
    let exporter = Exporter::start_with(
        config,
        StartOptions {
            signal: Signal::Logs,
            ..StartOptions::default()
        },
    )
    .expect("starts");
    let (a, b) = (logs_request(2, true), logs_request(3, false));
    for request in [&a, &b] {
        exporter
            .try_send(OtlpBatch {
                request: request.encode_to_vec().into(),
                spans: request.resource_logs[0].scope_logs[0].log_records.len(),
            })
            .expect("room");
    }
    bounded(async {
        while running.metric("tailgate_requests_total", &[("result", "unavailable")]) < 1.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    running.sink.refuse(None);
    bounded(async {
        while log_records(&running, "grpc") < 5.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let batches = running.sink.log_batches.lock().expect("lock").clone();
    assert_eq!(batches.len(), 1, "the two batches leave as one request");
    let merged = ExportLogsServiceRequest::decode(batches[0].request.clone()).expect("decodes");
    assert_eq!(
        merged.resource_logs,
        [a.resource_logs, b.resource_logs].concat()
    );
    assert!(
        running.sink.batches().is_empty(),
        "nothing went to TraceService"
    );
    let report = exporter
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(report.dropped_spans, 0, "{report:?}");
}
