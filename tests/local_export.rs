//! `tailgate local --export file:PATH` and `--export stdout`: a kept trace
//! sent to the LB over OTLP/HTTP JSON comes out whole, as OTLP/JSON lines
//! that the OTLP/JSON path reads back, or as a summary line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A `tailgate local` process, stopped by PID (SIGKILL) if the test fails.
struct Local(Child);

impl Drop for Local {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn http(addr: SocketAddr, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// An error trace of three spans (the error span last), as OTLP/JSON.
const TRACE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
  "scopeSpans":[{"scope":{"name":"test"},"spans":[
   {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /cart","kind":2,
    "startTimeUnixNano":"1000000000","endTimeUnixNano":"1050000000"},
   {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174",
    "name":"db","startTimeUnixNano":"1010000000","endTimeUnixNano":"1020000000"},
   {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b176","parentSpanId":"eee19b7ec3c1b174",
    "name":"pay","startTimeUnixNano":"1020000000","endTimeUnixNano":"1040000000","status":{"code":2,"message":"declined"}}]}]}]}"#;

/// Log records: one inside the trace above (kept: it has an error), one
/// outside any span.
const LOGS: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
  "scopeLogs":[{"scope":{"name":"test"},"logRecords":[
   {"timeUnixNano":"1015000000","severityText":"ERROR","body":{"stringValue":"card declined"},
    "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b176"},
   {"timeUnixNano":"1016000000","severityText":"INFO","body":{"stringValue":"cache warmed"}}]}]}]}"#;

/// Runs `tailgate local --export TARGET`, posts the logs and the trace, stops it with
/// SIGTERM (which decides what is pending) and returns its stdout.
fn run_local(export: &str) -> String {
    let (grpc, http_addr, admin) = (free_addr(), free_addr(), free_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_tailgate"))
        .args(["local", "--samplers", "2", "--export", export])
        .args([
            "--grpc",
            &grpc.to_string(),
            "--http",
            &http_addr.to_string(),
        ])
        .args(["--admin", &admin.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut local = Local(child);
    let started = Instant::now();
    while !http(admin, "GET /readyz HTTP/1.0\r\n\r\n")
        .is_some_and(|a| a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tailgate local not ready in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = http(
        http_addr,
        &format!(
            "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{LOGS}",
            LOGS.len()
        ),
    )
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = http(
        http_addr,
        &format!(
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TRACE}",
            TRACE.len()
        ),
    )
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let kill = Command::new("kill")
        .args(["-TERM", &local.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = local.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no exit 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut out = String::new();
    local
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[test]
fn a_kept_trace_is_written_whole_as_otlp_json_lines() {
    let path = std::env::temp_dir().join(format!(
        "tailgate-local-export-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    run_local(&format!("file:{}", path.display()));
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let mut spans = Vec::new();
    let mut records = Vec::new();
    for line in text.lines() {
        if line.starts_with("{\"resourceLogs\"") {
            let request =
                proto::json::logs_to_protobuf(line.as_bytes()).expect("each line is OTLP/JSON");
            proto::logs::LogsView::new(&request)
                .for_each_record(|_, _, r| {
                    records.push((r.trace_id.map(|t| t.to_string()), r.time_unix_nano))
                })
                .unwrap();
            continue;
        }
        let request = proto::json::to_protobuf(line.as_bytes()).expect("each line is OTLP/JSON");
        proto::view::RequestView::new(&request)
            .for_each_span(|resource, _, span| {
                let service = proto::view::resource_attributes(&resource.header)
                    .get("service.name")
                    .and_then(|v| v.as_str().map(str::to_owned));
                spans.push((span.trace_id.to_string(), span.span_id.to_string(), service));
            })
            .unwrap();
    }
    spans.sort();
    let want: Vec<_> = ["eee19b7ec3c1b174", "eee19b7ec3c1b175", "eee19b7ec3c1b176"]
        .iter()
        .map(|s| {
            (
                "5b8efff798038103d269b633813fc60c".to_owned(),
                s.to_string(),
                Some("checkout".to_owned()),
            )
        })
        .collect();
    assert_eq!(spans, want, "{text}");
    records.sort();
    assert_eq!(
        records,
        vec![
            (None, 1_016_000_000),
            (
                Some("5b8efff798038103d269b633813fc60c".to_owned()),
                1_015_000_000
            )
        ],
        "{text}"
    );
}

#[test]
fn a_kept_trace_is_summarised_on_stdout() {
    let out = run_local("stdout");
    // The record outside any span is written at once, the trace's with it.
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "kept log trace=5b8efff798038103d269b633813fc60c severity=ERROR body=\"card declined\"",
            "kept log trace=none severity=INFO body=\"cache warmed\"",
            "kept trace 5b8efff798038103d269b633813fc60c spans=3 service=checkout root=\"GET /cart\" duration=50ms status=error",
        ],
        "{out}"
    );
}
