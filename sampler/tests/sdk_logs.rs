//! The real OpenTelemetry Python SDK logs pipeline (LoggerProvider,
//! BatchLogRecordProcessor, the OTLP log exporter over gRPC and HTTP)
//! beside its traces, through a sampler node keeping error traces: the
//! records of the kept trace arrive, none of the dropped one, and every
//! record emitted outside a span.
//!
//! Needs a Python with the SDK (scripts/requirements-test.txt), from
//! `TAILGATE_TEST_PYTHON` or `<workspace>/.venv/bin/python`; fails without.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use serde_json::Value as Json;
use support::*;

const ERRORS_ONLY: &str = "\
decision_wait: 60s
decision_wait_after_root_received: 300ms
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";

fn python() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("TAILGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with the OpenTelemetry SDK at {}: see scripts/requirements-test.txt",
        python.display()
    );
    python
}

/// (body, trace ID in hex) of every record the backend received.
fn received(backend: &Backend) -> BTreeSet<(String, Option<String>)> {
    let mut out = BTreeSet::new();
    for request in backend.sink.logs.lock().unwrap().iter() {
        let request = ExportLogsServiceRequest::decode(request.clone()).unwrap();
        for record in request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                other => panic!("unexpected body {other:?}"),
            };
            let trace = (!record.trace_id.iter().all(|b| *b == 0)).then(|| hex(&record.trace_id));
            out.insert((body, trace));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn sdk_logs_through_the_sampler(protocol: &str) {
    let backend = Backend::start().await;
    let dir = temp_dir(&format!("sdk-logs-{protocol}"));
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, ERRORS_ONLY).unwrap();
    let name = format!("sdk-logs-{protocol}");
    let node = Node::start(config(&name, &policy, &backend));
    let endpoint = match protocol {
        "grpc" => format!("http://{}", node.grpc),
        _ => format!("http://{}", node.http),
    };
    let mut command = Command::new(python());
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/otel_sdk_logs.py"))
        .args(["--endpoint", &endpoint, "--protocol", protocol])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS");
    let output = within(60, tokio::task::spawn_blocking(move || command.output()))
        .await
        .unwrap()
        .expect("python starts");
    assert!(
        output.status.success(),
        "the SDK failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let emitted: Json = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    let kept = emitted["kept"].as_str().unwrap().to_owned();
    let dropped = emitted["dropped"].as_str().unwrap().to_owned();
    let records: Vec<(String, Option<String>)> = emitted["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["body"].as_str().unwrap().to_owned(),
                r["trace_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let want: BTreeSet<(String, Option<String>)> = records
        .iter()
        .filter(|(_, t)| t.as_deref() != Some(dropped.as_str()))
        .cloned()
        .collect();
    assert_eq!(want.len(), 4, "two records in the kept trace, two outside");
    assert!(
        wait_for(500, || received(&backend) == want).await,
        "received {:?}, wanted {want:?}",
        received(&backend)
    );
    // The spans go by the traces' exporter, the records by the logs'
    // exporter: one may arrive a batch before the other.
    assert!(
        wait_for(500, || backend
            .spans()
            .iter()
            .any(|(t, _)| t.to_string() == kept))
        .await,
        "the kept trace's spans arrive"
    );
    assert!(
        !backend
            .spans()
            .iter()
            .any(|(t, _)| t.to_string() == dropped)
    );
    let n = [("node", name.as_str())];
    let m = node
        .metrics_until(200, |m| {
            m.sum("tailgate_log_records_not_sampled_total", &n) == 2.0
        })
        .await;
    assert_eq!(m.sum("tailgate_log_records_received_total", &n), 6.0);
    assert_eq!(m.sum("tailgate_log_records_forwarded_total", &n), 4.0);
    assert_eq!(m.sum("tailgate_log_records_not_sampled_total", &n), 2.0);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_logs_over_grpc_arrive_with_kept_traces_only() {
    sdk_logs_through_the_sampler("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_logs_over_http_arrive_with_kept_traces_only() {
    sdk_logs_through_the_sampler("http").await;
}
