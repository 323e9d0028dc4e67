//! Bad input against a live node: a `tailgate sampler` process on loopback,
//! keeping every trace and exporting to an in-process recording sink, takes
//! valid traffic from `loadtest::generate` (OTLP/gRPC and OTLP/HTTP) the
//! whole time a second task throws bad input at it: truncated protobuf,
//! garbage, wrong wire types, 0- and 17-byte trace IDs, invalid UTF-8, JSON
//! with wrong types, an attribute value over the limit, gzip bombs, 100 MiB
//! bodies, bodies (HTTP/1 and gRPC over h2) and headers that trickle in, and
//! a few hundred idle connections.
//!
//! Every bad request must get its clear client error (and be counted under
//! `tailgate_requests_total{result}`), the node must keep answering, and
//! afterwards every span of every valid trace must have reached the sink,
//! whole, exactly once (`loadtest::verify`, keep-all expectations).
//!
//! Logs get the same (`lb_and_sampler_refuse_bad_logs_and_lose_no_valid_record`):
//! bad `LogsService/Export` and `POST /v1/logs` requests against an LB
//! process and the sampler behind it, while both take valid traces and log
//! records (with and without a trace ID, gRPC, protobuf, JSON); every valid
//! record reaches an in-process recording backend once.
//!
//! Bounded: valid traffic runs in rounds of two seconds, at most
//! [`MAX_ROUNDS`], until the bad-input task is done; every network wait has
//! a timeout; the sampler is stopped by PID (killed on drop if the test
//! fails).

mod process_support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use loadtest::generate::{GenConfig, GenReport};
use loadtest::sink::{RunningSink, SinkConfig};
use loadtest::verify::{Expectations, verify_files};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use proto::exporter::{Compression, ExportError, OtlpClient, OtlpClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use process_support::{Process, TempDir, free_port, http_get};

/// The node's request limit in this test (compressed and decompressed).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Rounds of valid traffic, two seconds each, at most.
const MAX_ROUNDS: u64 = 30;
/// Idle connections held open per protocol while valid traffic flows.
const IDLE_CONNECTIONS: usize = 200;
const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_every_bad_input_and_loses_no_valid_span() {
    let dir = TempDir::new("tailgate-bad-input");
    let record = dir.path().join("kept.bin");
    let sink = loadtest::sink::start(SinkConfig {
        record: Some(record.clone()),
        http: None,
        ..SinkConfig::loopback()
    })
    .await
    .expect("the recording sink starts");
    let backend = sink.grpc_addr().expect("sink gRPC address");

    let node = Node::start(&dir, backend);
    let grpc = node.grpc;

    // Bad input in one task, valid traffic in rounds until it is done.
    let bad = tokio::spawn(bad_inputs(node.grpc, node.http));
    let mut manifests = Vec::new();
    let mut reports = Vec::new();
    for round in 0..MAX_ROUNDS {
        let manifest = dir.path().join(format!("sent-{round}.jsonl"));
        reports.push(valid_traffic(&node, round, &manifest).await);
        manifests.push(manifest);
        if bad.is_finished() {
            break;
        }
    }
    assert!(
        bad.is_finished(),
        "the bad-input task outlasted {MAX_ROUNDS} rounds of valid traffic"
    );
    let failures = bad.await.expect("the bad-input task ran to its end");

    // Still serving: one more valid request is accepted.
    let client = client(grpc, Compression::None);
    let accepted = client.export(Bytes::from(valid_request(AFTER_TRACE))).await;
    // The two requests sent outside the generator, in their own manifest.
    let extra = dir.path().join("sent-extra.jsonl");
    write_manifest(&extra, &[HELD_TRACE, AFTER_TRACE]);
    manifests.push(extra);
    let metrics = node.metrics();
    node.terminate();
    let stats = stop_sink(sink).await;

    assert!(
        failures.is_empty(),
        "bad inputs not refused as expected:\n{}",
        failures.join("\n")
    );
    assert!(
        accepted.is_ok(),
        "a valid request after the bad input: {accepted:?}"
    );
    for report in &reports {
        assert_eq!(
            report.spans_unsent, 0,
            "gen gave up on spans: {:?}",
            report.last_error
        );
        assert_eq!(report.spans_rejected, 0, "the node rejected valid spans");
        assert!(report.spans_sent > 0, "a round sent nothing");
    }
    let verified = verify_files(&manifests, &[record], Expectations::keep_all());
    assert!(
        verified.is_ok(),
        "valid traffic was lost or duplicated ({} spans reached the sink): {verified:?}",
        stats.spans
    );
    for result in ["invalid", "too_large", "attribute_too_long", "timeout"] {
        let count = requests_counted(&metrics, result);
        assert!(count > 0.0, "no request counted as {result}:\n{metrics}");
    }
}

/// Throws every kind of bad input at the node, one after another, and
/// returns what was not answered as expected.
async fn bad_inputs(grpc: SocketAddr, http: SocketAddr) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |case: &str, outcome: Result<(), String>| {
        if let Err(e) = outcome {
            failures.push(format!("{case}: {e}"));
        }
    };
    let plain = client(grpc, Compression::None);
    let valid = request(vec![1; 16], b"valid");

    // The protobuf path, over gRPC.
    let truncated = Bytes::copy_from_slice(&valid[..valid.len() / 2]);
    check(
        "grpc truncated protobuf",
        expect_code(&plain, truncated, Code::InvalidArgument).await,
    );
    check(
        "grpc garbage bytes",
        expect_code(&plain, Bytes::from(garbage(4096, 1)), Code::InvalidArgument).await,
    );
    // Field 1 (resource_spans) is a message; here it is a varint.
    let wrong_wire_type = Bytes::from_static(&[0x08, 0x01]);
    check(
        "grpc wrong wire type",
        expect_code(&plain, wrong_wire_type, Code::InvalidArgument).await,
    );
    // A span (field 2 of ScopeSpans) as a fixed64.
    let wrong_nested = Bytes::from_static(&[0x0a, 0x0b, 0x12, 0x09, 0x11, 1, 2, 3, 4, 5, 6, 7, 8]);
    check(
        "grpc wrong nested wire type",
        expect_code(&plain, wrong_nested, Code::InvalidArgument).await,
    );
    check(
        "grpc 0-byte trace ID",
        expect_code(
            &plain,
            Bytes::from(request(Vec::new(), b"x")),
            Code::InvalidArgument,
        )
        .await,
    );
    check(
        "grpc 17-byte trace ID",
        expect_code(
            &plain,
            Bytes::from(request(vec![3; 17], b"x")),
            Code::InvalidArgument,
        )
        .await,
    );
    check(
        "grpc invalid UTF-8 span name",
        expect_code(
            &plain,
            Bytes::from(invalid_utf8_request()),
            Code::InvalidArgument,
        )
        .await,
    );
    // 16 MiB of zeros (4 × the limit), gzip-compressed by the client to
    // about 16 KiB.
    let gzip = client(grpc, Compression::Gzip);
    check(
        "grpc gzip bomb",
        expect_code(
            &gzip,
            Bytes::from(vec![0u8; 16 * MIB]),
            Code::ResourceExhausted,
        )
        .await,
    );
    check(
        "grpc attribute value over the limit",
        expect_code(
            &plain,
            Bytes::from(long_attribute_request()),
            Code::ResourceExhausted,
        )
        .await,
    );
    check("grpc body that trickles in", trickle_grpc_body(grpc).await);
    check(
        "grpc 100 MiB message",
        expect_code(
            &plain,
            Bytes::from(vec![0x0a; 100 * MIB]),
            Code::ResourceExhausted,
        )
        .await,
    );

    // The HTTP path.
    let pb = "application/x-protobuf";
    let json = "application/json";
    check(
        "http truncated protobuf",
        expect_status(http, pb, &[], &valid[..valid.len() / 2], 400).await,
    );
    check(
        "http garbage bytes",
        expect_status(http, pb, &[], &garbage(4096, 2), 400).await,
    );
    check(
        "http wrong wire type",
        expect_status(http, pb, &[], &[0x08, 0x01], 400).await,
    );
    check(
        "http 0-byte trace ID",
        expect_status(http, pb, &[], &request(Vec::new(), b"x"), 400).await,
    );
    check(
        "http 17-byte trace ID",
        expect_status(http, pb, &[], &request(vec![3; 17], b"x"), 400).await,
    );
    check(
        "http invalid UTF-8 protobuf",
        expect_status(http, pb, &[], &invalid_utf8_request(), 400).await,
    );
    check(
        "http invalid UTF-8 JSON",
        expect_status(
            http,
            json,
            &[],
            b"{\"resourceSpans\":[{\"\xff\xfe\":1}]}",
            400,
        )
        .await,
    );
    check(
        "http JSON with wrong types",
        expect_status(
            http,
            json,
            &[],
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":12,"spanId":true,"name":["x"]}]}]}]}"#,
            400,
        )
        .await,
    );
    check(
        "http JSON with a 17-byte trace ID",
        expect_status(
            http,
            json,
            &[],
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"000102030405060708090a0b0c0d0e0f10","spanId":"0001020304050607","name":"x"}]}]}]}"#,
            400,
        )
        .await,
    );
    check(
        "http JSON that is not an object",
        expect_status(http, json, &[], b"[1,2,3]", 400).await,
    );
    check(
        "http gzip bomb",
        expect_status(
            http,
            pb,
            &[("content-encoding", "gzip")],
            &gzip_zeros(64 * MIB),
            413,
        )
        .await,
    );
    check(
        "http corrupt gzip",
        expect_status(
            http,
            pb,
            &[("content-encoding", "gzip")],
            b"\x1f\x8b\x08garbage",
            400,
        )
        .await,
    );
    check(
        "http attribute value over the limit",
        expect_status(http, pb, &[], &long_attribute_request(), 413).await,
    );
    check(
        "http 100 MiB body",
        huge_body(http, "/v1/traces", true).await,
    );
    check(
        "http 100 MiB chunked body",
        huge_body(http, "/v1/traces", false).await,
    );
    check(
        "http body that trickles in",
        trickle_body(http, "/v1/traces").await,
    );
    check("http headers that trickle in", trickle_headers(http).await);
    check(
        "many idle connections",
        idle_connections(grpc, http, &plain).await,
    );
    failures
}

/// One round of valid traffic: two seconds at 2,000 spans/s over gRPC and
/// HTTP, every answer awaited.
async fn valid_traffic(node: &Node, round: u64, manifest: &Path) -> GenReport {
    let endpoints = vec![
        format!("grpc://{}", node.grpc)
            .parse()
            .expect("gRPC endpoint"),
        format!("http://{}", node.http)
            .parse()
            .expect("HTTP endpoint"),
    ];
    let mut config = GenConfig::new(endpoints);
    config.connections = 2;
    config.rate = 2000.0;
    config.duration = Some(Duration::from_secs(2));
    config.seed = Some(0x5eed_0000 + round);
    config.manifest = Some(manifest.to_path_buf());
    config.drain_timeout = Duration::from_secs(20);
    loadtest::generate::run(config)
        .await
        .expect("a round of valid traffic runs")
}

fn client(grpc: SocketAddr, compression: Compression) -> OtlpClient {
    let mut config = OtlpClientConfig::new(format!("http://{grpc}"));
    config.compression = compression;
    config.timeout = Duration::from_secs(30);
    OtlpClient::new(&config).expect("client config")
}

async fn expect_code(client: &OtlpClient, body: Bytes, expected: Code) -> Result<(), String> {
    match client.export(body).await {
        Ok(_) => Err(format!("accepted, expected {expected:?}")),
        Err(ExportError::Status { code, message, .. }) if code == expected => {
            if message.is_empty() {
                Err(format!("{code:?} without a message"))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(format!("{e}, expected {expected:?}")),
    }
}

/// One HTTP/1.1 POST to `path` on a fresh connection; the status code.
async fn post(
    http: SocketAddr,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<u16, String> {
    let mut stream = connect(http).await?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {http}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("writing: {e}"))?;
    // The server may answer (and close) before the whole body is read.
    let _ = stream.write_all(body).await;
    read_status(&mut stream).await
}

async fn expect_status(
    http: SocketAddr,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    expected: u16,
) -> Result<(), String> {
    expect_status_at(http, "/v1/traces", content_type, headers, body, expected).await
}

async fn expect_status_at(
    http: SocketAddr,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    expected: u16,
) -> Result<(), String> {
    match post(http, path, content_type, headers, body).await? {
        status if status == expected => Ok(()),
        status => Err(format!("HTTP {status}, expected {expected}")),
    }
}

/// 100 MiB announced with a Content-Length (refused before reading), or
/// streamed chunked (cut at the limit): 413 either way, and the node never
/// buffers more than its limit.
async fn huge_body(http: SocketAddr, path: &str, with_length: bool) -> Result<(), String> {
    let mut stream = connect(http).await?;
    let framing = if with_length {
        format!("content-length: {}", 100 * MIB)
    } else {
        "transfer-encoding: chunked".to_owned()
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/x-protobuf\r\n{framing}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("writing: {e}"))?;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x0au8; MIB];
        for _ in 0..100 {
            let sent = if with_length {
                write.write_all(&chunk).await
            } else {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                write.write_all(&framed).await
            };
            // The node answered and closed: it did not read the rest.
            if sent.is_err() {
                return;
            }
        }
        let _ = write.write_all(b"0\r\n\r\n").await;
    });
    let status = read_status_from(&mut read).await;
    writer.abort();
    match status? {
        413 => Ok(()),
        other => Err(format!("HTTP {other}, expected 413")),
    }
}

/// Headers complete, then the body one byte every 100 ms: the node must
/// give up on it (408, or close the connection) long before it is complete.
async fn trickle_body(http: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = connect(http).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 1000\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("writing: {e}"))?;
    trickle(stream, 1000, 408).await
}

/// The request line, then the headers one byte every 100 ms.
async fn trickle_headers(http: SocketAddr) -> Result<(), String> {
    let mut stream = connect(http).await?;
    stream
        .write_all(b"POST /v1/traces HTTP/1.1\r\n")
        .await
        .map_err(|e| format!("writing: {e}"))?;
    trickle(stream, 1000, 408).await
}

/// A gRPC call over h2 whose message (1,000 bytes, framed) trickles in a
/// byte every 100 ms after its 5-byte frame header: the node must end the
/// call DEADLINE_EXCEEDED at its read timeout (3 s here), well before the
/// 100 s the body would take.
async fn trickle_grpc_body(grpc: SocketAddr) -> Result<(), String> {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let stream = connect(grpc).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let body = StreamBody::new(Box::pin(futures::stream::unfold(
        0usize,
        |sent| async move {
            let chunk = match sent {
                0 => Bytes::from_static(&[0, 0, 0, 0x03, 0xe8]),
                1..=1000 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Bytes::from_static(b"x")
                }
                _ => return None,
            };
            Some((
                Ok::<_, std::convert::Infallible>(Frame::data(chunk)),
                sent + 1,
            ))
        },
    )));
    let request = hyper::Request::post(format!(
        "http://{grpc}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(body)
    .map_err(|e| format!("building the request: {e}"))?;
    let call = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        // A trailers-only answer carries the status in its headers.
        if let Some(status) = response.headers().get("grpc-status") {
            return Ok(status.as_bytes().to_vec());
        }
        let trailers = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|status| status.as_bytes().to_vec());
        trailers.ok_or_else(|| "no grpc-status in the answer".to_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), call).await;
    driver.abort();
    match answer {
        Err(_) => Err("no answer after 100 trickled bytes (10 s)".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if status.as_slice() == b"4" => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "grpc-status {}, expected 4 (DEADLINE_EXCEEDED)",
            String::from_utf8_lossy(&status)
        )),
    }
}

/// Sends a byte every 100 ms, at most `bytes` of them (100 s), until the
/// node answers or closes. Within the node's read timeout (3 s here) it
/// must; 100 bytes (10 s) is ample.
async fn trickle(stream: TcpStream, bytes: usize, expected: u16) -> Result<(), String> {
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        for _ in 0..bytes {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 4096];
    let answer = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await;
    sender.abort();
    match answer {
        Err(_) => Err("still reading after 100 trickled bytes (10 s)".into()),
        // Closed without an answer, or reset: the node gave up on it.
        Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
        Ok(Ok(n)) => match parse_status(&buf[..n]) {
            Some(status) if status == expected => Ok(()),
            other => Err(format!(
                "answered {other:?}, expected {expected} or a close"
            )),
        },
    }
}

/// Opens [`IDLE_CONNECTIONS`] connections to each port, each with a
/// partial request, and holds them while a valid request goes through.
async fn idle_connections(
    grpc: SocketAddr,
    http: SocketAddr,
    client: &OtlpClient,
) -> Result<(), String> {
    let mut held = Vec::new();
    for i in 0..IDLE_CONNECTIONS * 2 {
        let (addr, partial): (SocketAddr, &[u8]) = if i % 2 == 0 {
            (http, b"POST /v1/traces HTTP/1.1\r\nhost: x\r\n")
        } else {
            (grpc, b"PRI * HTTP/2.0\r\n")
        };
        let mut stream = connect(addr).await?;
        stream
            .write_all(partial)
            .await
            .map_err(|e| format!("writing: {e}"))?;
        held.push(stream);
    }
    let answer = client.export(Bytes::from(valid_request(HELD_TRACE))).await;
    drop(held);
    answer
        .map(|_| ())
        .map_err(|e| format!("a valid request while connections were held: {e}"))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))
}

async fn read_status(stream: &mut TcpStream) -> Result<u16, String> {
    read_status_from(stream).await
}

/// Reads until the status line is in, within 30 s.
async fn read_status_from(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<u16, String> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(2).any(|w| w == b"\r\n") {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?;
    parse_status(&answer)
        .ok_or_else(|| format!("no status line in {:?}", String::from_utf8_lossy(&answer)))
}

fn parse_status(answer: &[u8]) -> Option<u16> {
    // The status line only: a protobuf body after the head is not UTF-8.
    let line = answer.split(|&b| b == b'\r').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Trace numbers of the valid requests sent outside the generator (which
/// draws 128 random bits: these small ones never collide with its).
const HELD_TRACE: u128 = 0x0bad_0001;
const AFTER_TRACE: u128 = 0x0bad_0002;

/// A valid one-span request with the IDs `loadtest::verify` recognises.
fn valid_request(n: u128) -> Vec<u8> {
    let trace = loadtest::ids::trace_id(n);
    let mut bytes = request(trace.0.to_vec(), b"valid");
    let span = loadtest::ids::span_id(&trace, 0);
    let at = bytes
        .windows(8)
        .position(|w| w == [1; 8])
        .expect("the span ID is in the encoding");
    bytes[at..at + 8].copy_from_slice(&span.0);
    bytes
}

fn write_manifest(path: &Path, traces: &[u128]) {
    use loadtest::manifest::{Class, Header, ManifestWriter, TraceEntry};
    let mut writer = ManifestWriter::create(path, &Header::default()).expect("manifest");
    for &n in traces {
        let entry = TraceEntry {
            trace_id: loadtest::ids::trace_id(n),
            spans: 1,
            class: Class::Normal,
            duration_us: 0,
        };
        writer.trace(&entry).expect("manifest line");
    }
    writer.finish().expect("manifest end");
}

/// A one-span request, encoded by prost.
fn request(trace_id: Vec<u8>, name: &[u8]) -> Vec<u8> {
    let span = Span {
        trace_id,
        span_id: vec![1; 8],
        name: String::from_utf8_lossy(name).into_owned(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

/// A one-span request with a `db.statement` of 2 KiB, over the node's
/// `max_attribute_value_bytes` (1 KiB here).
fn long_attribute_request() -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    let mut request = ExportTraceServiceRequest::decode(&request(vec![6; 16], b"query")[..])
        .expect("our own encoding");
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(KeyValue {
            key: "db.statement".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(2048))),
            }),
            ..KeyValue::default()
        });
    request.encode_to_vec()
}

/// A request whose span name is not UTF-8 (prost cannot write one: the
/// name is patched in the encoding).
fn invalid_utf8_request() -> Vec<u8> {
    let mut bytes = request(vec![5; 16], b"NAME");
    let at = bytes
        .windows(4)
        .position(|w| w == b"NAME")
        .expect("the name is in the encoding");
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
    bytes
}

/// Deterministic noise (xorshift), so a failure replays.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn gzip_zeros(len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; MIB];
    for _ in 0..len / MIB {
        encoder.write_all(&zeros).expect("in memory");
    }
    encoder.finish().expect("in memory")
}

/// The value of `tailgate_requests_total` summed over protocols for one
/// `result`.
fn requests_counted(metrics: &str, result: &str) -> f64 {
    let label = format!("result=\"{result}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("tailgate_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn stop_sink(sink: RunningSink) -> loadtest::sink::SinkStats {
    // The node has drained and exited: wait for the sink to go quiet, then
    // stop it so the record is flushed.
    for _ in 0..100 {
        if sink
            .sink()
            .idle()
            .is_some_and(|idle| idle >= Duration::from_millis(500))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.stop()
        .await
        .expect("the sink stops and flushes its record")
}

const POLICY: &str = "\
decision_wait: 2s
num_traces: 100000
policies:
  - name: keep-everything
    type: always_sample
";

/// The receiver block of every node here: the test's limits.
fn receiver_block(grpc: SocketAddr, http: SocketAddr) -> String {
    format!(
        "\
receiver:
  grpc: {grpc}
  http: {http}
  max_request_bytes: {MAX_REQUEST_BYTES}
  read_timeout: 3s
  max_attribute_value_bytes: 1024
"
    )
}

/// A `tailgate` process (sampler or LB) and its ports; killed by PID on
/// drop if still running.
struct Node {
    process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Node {
    fn start(dir: &TempDir, backend: SocketAddr) -> Node {
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, POLICY).expect("policy file");
        Node::launch(dir, "sampler", |grpc, http, admin| {
            format!(
                "\
node: bad-input
{receiver}admin: {admin}
policy_file: {policy}
shutdown:
  grace: 0s
  drain_timeout: 10s
exporter:
  endpoint: http://{backend}
  batch_timeout: 10ms
",
                receiver = receiver_block(grpc, http),
                policy = policy.display()
            )
        })
    }

    /// `tailgate ROLE` with the config `config(grpc, http, admin)` writes,
    /// on free ports, ready on `/readyz`.
    fn launch(
        dir: &TempDir,
        role: &str,
        config: impl Fn(SocketAddr, SocketAddr, SocketAddr) -> String,
    ) -> Node {
        // Ports are picked free, then bound by the node: another process
        // may take one in between, so a start that fails on a taken port is
        // tried again with new ones.
        for attempt in 0..3 {
            let [grpc, http, admin] = [free_port(), free_port(), free_port()];
            let file = dir.path().join(format!("{role}-{attempt}.yaml"));
            std::fs::write(&file, config(grpc, http, admin)).expect("node config");
            let log = dir.path().join(format!("{role}-{attempt}.log"));
            let mut process = Process::tailgate(
                &[OsStr::new(role), OsStr::new("--config"), file.as_os_str()],
                log,
            );
            if process.wait_ready(admin, "/readyz") {
                return Node {
                    process,
                    grpc,
                    http,
                    admin,
                };
            }
        }
        panic!("tailgate {role} did not find free ports in three tries");
    }

    fn metrics(&self) -> String {
        http_get(self.admin, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 30 s) for exit 0: every pending trace
    /// decided and delivered.
    fn terminate(mut self) {
        self.process.terminate(Duration::from_secs(30));
    }
}

#[test]
fn tls_or_token_files_that_do_not_load_are_a_config_error_exit_64() {
    let dir = TempDir::new("tailgate-bad-security-config");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy file");
    let missing = dir.path().join("missing.pem");
    for (case, block) in [
        (
            "tls",
            format!(
                "  tls: {{cert_file: {m}, key_file: {m}}}\n",
                m = missing.display()
            ),
        ),
        (
            "auth",
            format!("  auth: {{tokens_file: {}}}\n", missing.display()),
        ),
        (
            "admin_tls",
            format!(
                "admin_tls: {{cert_file: {m}, key_file: {m}}}\n",
                m = missing.display()
            ),
        ),
    ] {
        let config = dir.path().join(format!("{case}.yaml"));
        std::fs::write(
            &config,
            format!(
                "receiver:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\n{block}admin: 127.0.0.1:0\npolicy_file: {}\nexporter:\n  endpoint: http://127.0.0.1:9\n",
                policy.display()
            ),
        )
        .expect("config");
        refused_before_binding("sampler", &config, case);
    }
    // The LB's admin port too.
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        format!(
            "receiver:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\nadmin: 127.0.0.1:0\nadmin_tls: {{cert_file: {m}, key_file: {m}}}\nresolver:\n  static: {{members: [\"127.0.0.1:9\"]}}\n",
            m = missing.display()
        ),
    )
    .expect("config");
    refused_before_binding("lb", &config, "lb admin_tls");
}

/// `tailgate ROLE --config CONFIG` must exit 64 naming the missing file.
fn refused_before_binding(role: &str, config: &Path, case: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_tailgate"))
        .args([role, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("tailgate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{case}: {stderr}");
    assert!(stderr.contains("missing.pem"), "{case}: {stderr}");
}

// ---------------------------------------------------------------------------
// Logs: the same bad input on `LogsService/Export` and `POST /v1/logs`,
// against an LB process and the sampler process behind it.

/// An in-process OTLP backend (proto's receiver on 127.0.0.1:0) recording
/// the body of every log record and the trace ID of every span it takes.
#[derive(Default)]
struct Recorder {
    bodies: std::sync::Mutex<Vec<String>>,
    traces: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl proto::receiver::Sink for Recorder {
    async fn accept(
        &self,
        batch: proto::receiver::Batch,
    ) -> Result<proto::receiver::Accepted, proto::receiver::Refusal> {
        let request = ExportTraceServiceRequest::decode(batch.request.as_ref())
            .map_err(|e| proto::receiver::Refusal::Invalid(e.to_string()))?;
        let mut traces = self.traces.lock().expect("lock");
        let mut spans = 0;
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            traces.push(span.trace_id.clone());
            spans += 1;
        }
        Ok(proto::receiver::Accepted { spans })
    }

    async fn accept_logs(
        &self,
        batch: proto::receiver::Batch,
    ) -> Result<proto::receiver::Accepted, proto::receiver::Refusal> {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value;
        let request = ExportLogsServiceRequest::decode(batch.request.as_ref())
            .map_err(|e| proto::receiver::Refusal::Invalid(e.to_string()))?;
        let mut bodies = self.bodies.lock().expect("lock");
        let mut records = 0;
        for record in request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            if let Some(any_value::Value::StringValue(body)) =
                record.body.as_ref().and_then(|b| b.value.as_ref())
            {
                bodies.push(body.clone());
            }
            records += 1;
        }
        Ok(proto::receiver::Accepted { spans: records })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_and_sampler_refuse_bad_logs_and_lose_no_valid_record() {
    use std::sync::Arc;

    let dir = TempDir::new("tailgate-bad-logs");
    let receiver = proto::receiver::Receiver::bind(proto::receiver::ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        http: None,
        node: "backend".into(),
        ..proto::receiver::ReceiverConfig::default()
    })
    .expect("the backend binds");
    let backend = receiver.grpc_addr().expect("backend gRPC address");
    let recorder = Arc::new(Recorder::default());
    let (stop_backend, backend_stopped) = tokio::sync::oneshot::channel::<()>();
    let backend_task = tokio::spawn(receiver.serve(recorder.clone(), async move {
        let _ = backend_stopped.await;
    }));

    let sampler = Node::start(&dir, backend);
    let member = sampler.grpc;
    let lb = Node::launch(&dir, "lb", |grpc, http, admin| {
        format!(
            "\
node: bad-input-lb
{receiver}admin: {admin}
resolver:
  static:
    members: [\"{member}\"]
export:
  batch_timeout: 10ms
drain_timeout: 10s
",
            receiver = receiver_block(grpc, http)
        )
    });

    // Valid logs and traces to both nodes the whole time the bad input
    // goes in, every answer awaited.
    let valid = tokio::spawn(valid_logs(
        [(lb.grpc, lb.http), (sampler.grpc, sampler.http)],
        40,
    ));
    let mut failures = Vec::new();
    for (name, node) in [("lb", &lb), ("sampler", &sampler)] {
        for failure in bad_logs(node.grpc, node.http).await {
            failures.push(format!("{name}: {failure}"));
        }
    }
    let sent = valid.await.expect("the valid-traffic task ran to its end");
    // Still serving: ready, and one more valid request each is accepted.
    let after = valid_logs([(lb.grpc, lb.http), (sampler.grpc, sampler.http)], 1).await;
    let lb_ready = http_get(lb.admin, "/readyz").map(|(status, _)| status);
    let sampler_ready = http_get(sampler.admin, "/readyz").map(|(status, _)| status);
    let lb_metrics = lb.metrics();
    let sampler_metrics = sampler.metrics();
    // The LB first, so what it holds reaches the sampler before that stops.
    lb.terminate();
    sampler.terminate();
    let _ = stop_backend.send(());
    backend_task
        .await
        .expect("the backend task")
        .expect("the backend stops");

    assert!(
        failures.is_empty(),
        "bad logs not refused as expected:\n{}",
        failures.join("\n")
    );
    assert_eq!(lb_ready, Some(200), "the LB is ready after the bad input");
    assert_eq!(
        sampler_ready,
        Some(200),
        "the sampler is ready after the bad input"
    );
    let sent = sent.merge(after);
    assert!(
        sent.errors.is_empty(),
        "valid requests refused:\n{}",
        sent.errors.join("\n")
    );
    // Every valid record, once; and every valid span (always_sample).
    let mut bodies = recorder.bodies.lock().expect("lock").clone();
    bodies.sort();
    let mut expected = sent.bodies.clone();
    expected.sort();
    assert_eq!(
        bodies.len(),
        expected.len(),
        "valid log records lost or duplicated"
    );
    assert_eq!(bodies, expected, "the valid log records, each once");
    let traces: std::collections::BTreeSet<Vec<u8>> = recorder
        .traces
        .lock()
        .expect("lock")
        .iter()
        .cloned()
        .collect();
    for trace in &sent.traces {
        assert!(traces.contains(trace), "a valid trace's span was lost");
    }
    for (node, metrics) in [("lb", &lb_metrics), ("sampler", &sampler_metrics)] {
        for result in ["invalid", "too_large", "attribute_too_long", "timeout"] {
            let count = requests_counted(metrics, result);
            assert!(
                count > 0.0,
                "{node}: no request counted as {result}:\n{metrics}"
            );
        }
    }
}

/// What [`valid_logs`] sent and had accepted.
#[derive(Default)]
struct SentLogs {
    bodies: Vec<String>,
    traces: Vec<Vec<u8>>,
    errors: Vec<String>,
}

impl SentLogs {
    fn merge(mut self, other: SentLogs) -> SentLogs {
        self.bodies.extend(other.bodies);
        self.traces.extend(other.traces);
        self.errors.extend(other.errors);
        self
    }
}

/// `rounds` rounds, 100 ms apart: to each node, a one-span trace over
/// gRPC, and its two log records plus one without a trace ID over gRPC,
/// HTTP protobuf and HTTP JSON in turn.
async fn valid_logs(nodes: [(SocketAddr, SocketAddr); 2], rounds: u32) -> SentLogs {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let mut sent = SentLogs::default();
    for _ in 0..rounds {
        for (grpc, http) in nodes {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut trace = vec![0x10; 16];
            trace[..4].copy_from_slice(&n.to_be_bytes());
            let spans = client(grpc, Compression::None);
            if let Err(e) = spans
                .export(Bytes::from(request(trace.clone(), b"valid")))
                .await
            {
                sent.errors.push(format!("trace {n} to {grpc}: {e}"));
                continue;
            }
            sent.traces.push(trace.clone());
            let bodies = [
                format!("valid {n} in 1"),
                format!("valid {n} in 2"),
                format!("valid {n} none"),
            ];
            let records = vec![
                log_record(trace.clone(), bodies[0].as_bytes()),
                log_record(trace.clone(), bodies[1].as_bytes()),
                log_record(Vec::new(), bodies[2].as_bytes()),
            ];
            let answer = match n % 3 {
                0 => client(grpc, Compression::None)
                    .for_signal(proto::receiver::Signal::Logs)
                    .export(Bytes::from(logs_request(records)))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                1 => {
                    expect_status_at(
                        http,
                        "/v1/logs",
                        "application/x-protobuf",
                        &[],
                        &logs_request(records),
                        200,
                    )
                    .await
                }
                _ => {
                    let request = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(
                        logs_request(records).as_slice(),
                    )
                    .expect("our own encoding");
                    let json = serde_json::to_vec(&request).expect("OTLP/JSON");
                    expect_status_at(http, "/v1/logs", "application/json", &[], &json, 200).await
                }
            };
            match answer {
                Ok(()) => sent.bodies.extend(bodies),
                Err(e) => sent.errors.push(format!("logs {n} to {grpc}/{http}: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent
}

/// Throws every kind of bad logs request at a node and returns what was
/// not answered as expected.
async fn bad_logs(grpc: SocketAddr, http: SocketAddr) -> Vec<String> {
    use proto::receiver::Signal;
    let mut failures = Vec::new();
    let mut check = |case: &str, outcome: Result<(), String>| {
        if let Err(e) = outcome {
            failures.push(format!("{case}: {e}"));
        }
    };
    let plain = client(grpc, Compression::None).for_signal(Signal::Logs);
    let valid = logs_request(vec![log_record(vec![1; 16], b"valid")]);
    let truncated = &valid[..valid.len() / 2];
    let long_trace = logs_request(vec![log_record(vec![3; 17], b"x")]);
    let mut long_span = log_record(vec![3; 16], b"x");
    long_span.span_id = vec![4; 9];
    let long_span = logs_request(vec![long_span]);
    let bad_utf8 = invalid_utf8_logs_request();
    let long_attribute = long_attribute_logs_request();
    // A log record (field 2 of ScopeLogs) as a fixed64.
    let wrong_nested: &[u8] = &[0x0a, 0x0b, 0x12, 0x09, 0x11, 1, 2, 3, 4, 5, 6, 7, 8];

    // The protobuf path, over gRPC.
    for (case, body, code) in [
        (
            "truncated protobuf",
            truncated.to_vec(),
            Code::InvalidArgument,
        ),
        ("garbage bytes", garbage(4096, 3), Code::InvalidArgument),
        ("wrong wire type", vec![0x08, 0x01], Code::InvalidArgument),
        (
            "wrong nested wire type",
            wrong_nested.to_vec(),
            Code::InvalidArgument,
        ),
        (
            "17-byte trace ID",
            long_trace.clone(),
            Code::InvalidArgument,
        ),
        ("9-byte span ID", long_span.clone(), Code::InvalidArgument),
        (
            "invalid UTF-8 body",
            bad_utf8.clone(),
            Code::InvalidArgument,
        ),
        (
            "attribute value over the limit",
            long_attribute.clone(),
            Code::ResourceExhausted,
        ),
        (
            "100 MiB message",
            vec![0x0a; 100 * MIB],
            Code::ResourceExhausted,
        ),
    ] {
        check(
            &format!("grpc logs {case}"),
            expect_code(&plain, Bytes::from(body), code).await,
        );
    }
    let gzip = client(grpc, Compression::Gzip).for_signal(Signal::Logs);
    check(
        "grpc logs gzip bomb",
        expect_code(
            &gzip,
            Bytes::from(vec![0u8; 16 * MIB]),
            Code::ResourceExhausted,
        )
        .await,
    );

    // The HTTP path.
    let pb = "application/x-protobuf";
    let json = "application/json";
    let logs = "/v1/logs";
    for (case, content_type, body, status) in [
        ("truncated protobuf", pb, truncated.to_vec(), 400),
        ("garbage bytes", pb, garbage(4096, 4), 400),
        ("wrong wire type", pb, vec![0x08, 0x01], 400),
        ("17-byte trace ID", pb, long_trace, 400),
        ("9-byte span ID", pb, long_span, 400),
        ("invalid UTF-8 protobuf", pb, bad_utf8, 400),
        ("attribute value over the limit", pb, long_attribute, 413),
        (
            "invalid UTF-8 JSON",
            json,
            b"{\"resourceLogs\":[{\"\xff\xfe\":1}]}".to_vec(),
            400,
        ),
        (
            "JSON with wrong types",
            json,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":12,"spanId":true,"body":["x"]}]}]}]}"#.to_vec(),
            400,
        ),
        (
            "JSON with a 17-byte trace ID",
            json,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"000102030405060708090a0b0c0d0e0f10","body":{"stringValue":"x"}}]}]}]}"#.to_vec(),
            400,
        ),
        ("JSON that is not an object", json, b"[1,2,3]".to_vec(), 400),
        ("wrong content type", "text/plain", valid.clone(), 415),
    ] {
        check(
            &format!("http logs {case}"),
            expect_status_at(http, logs, content_type, &[], &body, status).await,
        );
    }
    check(
        "http logs gzip bomb",
        expect_status_at(
            http,
            logs,
            pb,
            &[("content-encoding", "gzip")],
            &gzip_zeros(64 * MIB),
            413,
        )
        .await,
    );
    check(
        "http logs corrupt gzip",
        expect_status_at(
            http,
            logs,
            pb,
            &[("content-encoding", "gzip")],
            b"\x1f\x8b\x08garbage",
            400,
        )
        .await,
    );
    check("http logs 100 MiB body", huge_body(http, logs, true).await);
    check(
        "http logs 100 MiB chunked body",
        huge_body(http, logs, false).await,
    );
    check(
        "http logs body that trickles in",
        trickle_body(http, logs).await,
    );
    failures
}

fn log_record(trace_id: Vec<u8>, body: &[u8]) -> opentelemetry_proto::tonic::logs::v1::LogRecord {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    opentelemetry_proto::tonic::logs::v1::LogRecord {
        span_id: if trace_id.is_empty() {
            Vec::new()
        } else {
            vec![1; 8]
        },
        trace_id,
        time_unix_nano: 1,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(
                String::from_utf8_lossy(body).into_owned(),
            )),
        }),
        ..Default::default()
    }
}

fn logs_request(records: Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}

/// A one-record request whose string body is not UTF-8 (patched in the
/// encoding).
fn invalid_utf8_logs_request() -> Vec<u8> {
    let mut bytes = logs_request(vec![log_record(vec![5; 16], b"BODY")]);
    let at = bytes
        .windows(4)
        .position(|w| w == b"BODY")
        .expect("the body is in the encoding");
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
    bytes
}

/// A one-record request with a 2 KiB attribute value, over the node's
/// `max_attribute_value_bytes` (1 KiB here).
fn long_attribute_logs_request() -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    let mut record = log_record(vec![6; 16], b"query");
    record.attributes.push(KeyValue {
        key: "db.statement".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(2048))),
        }),
        ..KeyValue::default()
    });
    logs_request(vec![record])
}
