//! The real OpenTelemetry Python SDK exports to the receiver, over gRPC and
//! OTLP/HTTP protobuf, and every span arrives intact.
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
