//! The real OpenTelemetry Python SDK exports to the receiver, over gRPC and
//! OTLP/HTTP protobuf, and every span arrives intact; and the exporter
//! exports to a backend made with grpcio (scripts/grpc_backend.py), which
//! reads what it sends, and whose answers it reads.
//!
//! Needs a Python with the SDK (scripts/requirements-test.txt): the one in
//! `TAILGATE_TEST_PYTHON`, else `<workspace>/.venv/bin/python`. `scripts/test`
//! creates that virtualenv. Without it these tests fail; they never skip.

mod receiver_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use proto::receiver::Protocol;
use receiver_support::*;
use serde_json::Value as Json;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proto/ is inside the workspace")
        .to_path_buf()
}

fn python() -> PathBuf {
    let python = match std::env::var_os("TAILGATE_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => workspace().join(".venv/bin/python"),
    };
    assert!(
        python.exists(),
        "no Python with the OpenTelemetry SDK at {}: run scripts/test, which creates \
         .venv from scripts/requirements-test.txt and sets TAILGATE_TEST_PYTHON",
        python.display()
    );
    python
}

/// Runs scripts/otel_sdk_export.py and returns the spans it recorded.
async fn export_with_sdk(endpoint: String, protocol: &str, extra: &[&str]) -> Vec<Json> {
    let mut command = Command::new(python());
    command
        .arg(workspace().join("scripts/otel_sdk_export.py"))
        .args([
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--spans",
            "5",
        ])
        .args(extra)
        // Keep the SDK from reading exporter settings from the environment.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS");
    // The SDK's exporter blocks; run it off the runtime that serves it.
    let output = bounded(tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("task")
        .expect("python starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK export failed: {stderr}");
    let recorded: Json = serde_json::from_slice(&output.stdout).expect("script prints JSON");
    recorded["spans"].as_array().expect("spans").clone()
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

/// Compares what the SDK recorded with what the sink received.
fn assert_arrived_intact(running: &Running, protocol: Protocol, expected: &[Json]) {
    assert!(
        running
            .sink
            .batches()
            .iter()
            .all(|b| b.protocol == protocol),
        "every batch came over {protocol:?}"
    );
    let mut received = HashMap::new();
    for request in running.sink.requests() {
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap_or_default();
            assert_eq!(
                attr(&resource.attributes, "service.name"),
                Some(&Any::StringValue("tailgate-interop".into()))
            );
            for ss in rs.scope_spans {
                let scope = ss.scope.unwrap_or_default();
                assert_eq!(
                    (scope.name.as_str(), scope.version.as_str()),
                    ("tailgate.interop", "1.2.3")
                );
                for span in ss.spans {
                    let previous = received.insert(hex::encode(&span.span_id), span);
                    assert!(previous.is_none(), "a span arrived twice");
                }
            }
        }
    }
    assert_eq!(received.len(), expected.len(), "every span arrived once");
    for want in expected {
        let span_id = want["span_id"].as_str().expect("span_id");
        let got = received
            .get(span_id)
            .unwrap_or_else(|| panic!("span {span_id} arrived"));
        assert_eq!(got.name, want["name"].as_str().expect("name"));
        assert_eq!(
            hex::encode(&got.trace_id),
            want["trace_id"].as_str().expect("trace_id")
        );
        assert_eq!(
            hex::encode(&got.parent_span_id),
            want["parent_span_id"].as_str().expect("parent")
        );
        let status = got.status.clone().unwrap_or_default();
        assert_eq!(
            i64::from(status.code),
            want["status_code"].as_i64().expect("code")
        );
        assert_eq!(
            status.message,
            want["status_message"].as_str().expect("message")
        );
        for (key, value) in want["attributes"].as_object().expect("attributes") {
            let expected = match value {
                Json::Bool(b) => Any::BoolValue(*b),
                Json::Number(n) if n.is_i64() => Any::IntValue(n.as_i64().expect("i64")),
                Json::Number(n) => Any::DoubleValue(n.as_f64().expect("f64")),
                Json::String(s) => Any::StringValue(s.clone()),
                other => panic!("unexpected attribute {other}"),
            };
            assert_eq!(attr(&got.attributes, key), Some(&expected), "{key}");
        }
        if got.name.starts_with("child-") {
            assert_eq!(got.events.len(), 1);
            assert_eq!(got.events[0].name, "step");
        }
    }
    assert_eq!(
        running.spans_received(protocol.as_str()),
        expected.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exports_over_grpc_arrive_intact() {
    let running = start(loopback_config("lb"));
    let spans = export_with_sdk(format!("http://{}", running.grpc), "grpc", &[]).await;
    assert_eq!(spans.len(), 5);
    assert_arrived_intact(&running, Protocol::Grpc, &spans);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_gzip_grpc_exports_span_by_span_arrive_intact() {
    let running = start(loopback_config("lb"));
    let spans = export_with_sdk(
        format!("http://{}", running.grpc),
        "grpc",
        &["--compression", "gzip", "--processor", "simple"],
    )
    .await;
    assert_arrived_intact(&running, Protocol::Grpc, &spans);
    assert_eq!(
        running.requests("grpc", "accepted"),
        5.0,
        "one request per span"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exports_over_http_protobuf_arrive_intact() {
    let running = start(loopback_config("lb"));
    let spans = export_with_sdk(format!("http://{}/v1/traces", running.http), "http", &[]).await;
    assert_eq!(spans.len(), 5);
    assert_arrived_intact(&running, Protocol::Http, &spans);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_gzip_http_exports_span_by_span_arrive_intact() {
    let running = start(loopback_config("lb"));
    let spans = export_with_sdk(
        format!("http://{}/v1/traces", running.http),
        "http",
        &["--compression", "gzip", "--processor", "simple"],
    )
    .await;
    assert_arrived_intact(&running, Protocol::Http, &spans);
    assert_eq!(
        running.requests("http", "accepted"),
        5.0,
        "one request per span"
    );
}

/// scripts/grpc_backend.py, a trace backend made with grpcio (gRPC's C
/// core): the exporter's own framing of uncompressed calls and its reading
/// of answers must hold against a gRPC server that is not tonic.
struct GrpcioBackend {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    endpoint: String,
}

impl GrpcioBackend {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child = Command::new(python())
            .arg(workspace().join("scripts/grpc_backend.py"))
            .args(["--max-seconds", "120"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut backend = GrpcioBackend {
            child,
            lines,
            endpoint: String::new(),
        };
        let first = backend.line();
        let port = first
            .strip_prefix("PORT ")
            .expect("the backend says its port");
        backend.endpoint = format!("http://127.0.0.1:{port}");
        backend
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a line from the grpcio backend within 30 s")
    }

    /// What the backend read of the next request: its span count and metadata.
    fn next_request(&self) -> (u64, HashMap<String, String>) {
        let line: Json = serde_json::from_str(&self.line()).expect("a JSON line");
        let metadata = line["metadata"]
            .as_object()
            .expect("metadata")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        (line["spans"].as_u64().expect("spans"), metadata)
    }
}

impl Drop for GrpcioBackend {
    fn drop(&mut self) {
        // Closing its standard input stops it.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_backend_reads_our_exports_and_we_read_its_answers() {
    use proto::exporter::{Compression, OtlpClient, OtlpClientConfig};
    use tonic::Code;
    use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

    let backend = tokio::task::spawn_blocking(GrpcioBackend::start)
        .await
        .expect("starts");
    let request = bytes::Bytes::from(protobuf(&sample_request(1000, 3)));
    // Over HTTP/2's default 64 KiB window and 16 KiB frames: the request
    // goes out in many frames, paced by the server's flow control.
    assert!(request.len() > 100_000, "{}", request.len());
    let mut config = OtlpClientConfig::new(&backend.endpoint);
    config.headers.insert("x-api-key".into(), "k1".into());
    let plain = OtlpClient::new(&config).expect("client");
    let timeout = std::time::Duration::from_secs(10);
    let extra = |k: &'static str, v: &'static str| {
        Some((
            AsciiMetadataKey::from_static(k),
            AsciiMetadataValue::from_static(v),
        ))
    };
    let next = || backend.next_request();

    // Delivered whole, with the configured and per-call metadata; the
    // partial success is read.
    let response = plain
        .export_with(request.clone(), extra("x-reject", "7"), timeout)
        .await
        .expect("exported");
    assert_eq!(response.rejected_spans, 7);
    assert_eq!(response.message, "rejected by the test backend");
    let (spans, metadata) = next();
    assert_eq!(spans, 1000);
    assert_eq!(metadata.get("x-api-key").map(String::as_str), Some("k1"));
    assert_eq!(metadata.get("x-reject").map(String::as_str), Some("7"));

    // A plain OK: nothing rejected.
    let response = plain.export(request.clone()).await.expect("exported");
    assert_eq!(response.rejected_spans, 0);
    assert_eq!(next().0, 1000);

    // A per-call entry replaces a configured one of the same name.
    plain
        .export_with(request.clone(), extra("x-api-key", "k2"), timeout)
        .await
        .expect("exported");
    assert_eq!(next().1.get("x-api-key").map(String::as_str), Some("k2"));

    // An answer over 4 MiB is not read whole (tonic's default limit).
    let huge = plain
        .export_with(request.clone(), extra("x-huge", "1"), timeout)
        .await
        .expect_err("too large an answer");
    assert_eq!(huge.code(), Code::OutOfRange, "{huge}");
    assert_eq!(next().0, 1000);

    // Refusals keep their code and message; without RetryInfo a
    // RESOURCE_EXHAUSTED is not retried, UNAVAILABLE marks the member down.
    let refused = plain
        .export_with(
            request.clone(),
            extra("x-abort", "RESOURCE_EXHAUSTED"),
            timeout,
        )
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.to_string().contains("refused by the test backend"));
    assert!(!refused.is_retryable() && !refused.is_member_down());
    assert_eq!(next().0, 1000);
    let down = plain
        .export_with(request.clone(), extra("x-abort", "UNAVAILABLE"), timeout)
        .await
        .expect_err("refused");
    assert_eq!(down.code(), Code::Unavailable, "{down}");
    assert!(down.is_retryable() && down.is_member_down());
    assert_eq!(next().0, 1000);

    // The one-frame shape the load generator sends, and gzip through tonic.
    plain
        .export_in_one_frame(request.clone())
        .await
        .expect("exported");
    assert_eq!(next().0, 1000);
    config.compression = Compression::Gzip;
    let gzip = OtlpClient::new(&config).expect("client");
    gzip.export(request.clone()).await.expect("exported");
    assert_eq!(next().0, 1000);
    tokio::task::spawn_blocking(move || drop(backend))
        .await
        .expect("stops");
}
