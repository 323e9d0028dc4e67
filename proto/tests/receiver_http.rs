//! OTLP/HTTP receiver, against the real server on 127.0.0.1:0.

mod receiver_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use proto::ExportTraceServiceRequest;
use proto::receiver::{Protocol, ReceiverConfig, Refusal};
use receiver_support::*;
use tokio::sync::Semaphore;

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");
const GZIP: (&str, &str) = ("content-encoding", "gzip");

/// The spec's example request (opentelemetry-proto examples/trace.json).
const SPEC_JSON: &str = r#"{"resourceSpans":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
  "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},
    "spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
      "parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span",
      "startTimeUnixNano":1544712660000000000,"endTimeUnixNano":1544712661000000000,"kind":2,
      "attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}}]}]}]}]}"#;

/// The `google.rpc.Status` of a protobuf error response.
fn rpc_status(body: &Bytes) -> tonic_types::Status {
    tonic_types::Status::decode(body.clone()).expect("a google.rpc.Status")
}

/// The `google.rpc.Status` of a JSON error response.
fn json_status(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON Status")
}

#[tokio::test]
async fn protobuf_export_hands_the_node_the_sent_request() {
    let running = start(loopback_config("lb"));
    let request = sample_request(3, 1);
    let reply = bounded(post(
        &http1_client(),
        running.http,
        "/v1/traces",
        &[PROTOBUF],
        protobuf(&request),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/x-protobuf");
    assert_eq!(
        proto::ExportTraceServiceResponse::decode(reply.body).expect("response decodes"),
        proto::ExportTraceServiceResponse::default()
    );
    let batches = running.sink.batches();
    assert_eq!(batches[0].protocol, Protocol::Http);
    assert_eq!(running.sink.requests(), vec![request]);
    assert_eq!(running.spans_received("http"), 3.0);
    assert_eq!(running.requests("http", "accepted"), 1.0);
}

#[tokio::test]
async fn json_export_reaches_the_node_as_protobuf() {
    let running = start(loopback_config("lb"));
    let reply = bounded(post(
        &http1_client(),
        running.http,
        "/v1/traces",
        &[("content-type", "application/json; charset=utf-8")],
        SPEC_JSON,
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(json_status(&reply.body), serde_json::json!({}));
    let expected = ExportTraceServiceRequest::decode(
        proto::json::to_protobuf(SPEC_JSON.as_bytes())
            .expect("converts")
            .as_slice(),
    )
    .expect("decodes");
    let received = running.sink.requests();
    assert_eq!(received, vec![expected]);
    let span = &received[0].resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "I'm a server span");
    assert_eq!(
        span.trace_id,
        hex::decode("5b8efff798038103d269b633813fc60c").expect("hex")
    );
    assert_eq!(running.spans_received("http"), 1.0);
}

#[tokio::test]
async fn gzip_bodies_arrive_decompressed_in_both_formats() {
    let running = start(loopback_config("lb"));
    let client = http1_client();
    let request = sample_request(200, 2);
    let reply = bounded(post(
        &client,
        running.http,
        "/v1/traces",
        &[PROTOBUF, GZIP],
        gzip(&protobuf(&request)),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(running.sink.requests(), vec![request]);

    let reply = bounded(post(
        &client,
        running.http,
        "/v1/traces",
        &[JSON, GZIP],
        gzip(SPEC_JSON.as_bytes()),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        running.sink.requests()[1].resource_spans[0].scope_spans[0]
            .spans
            .len(),
        1
    );
    assert_eq!(running.spans_received("http"), 201.0);
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let running = start(loopback_config("lb"));
    let request = sample_request(2, 3);
    let reply = bounded(post(
        &h2c_client(),
        running.http,
        "/v1/traces",
        &[PROTOBUF],
        protobuf(&request),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(running.sink.requests(), vec![request]);
}

#[tokio::test]
async fn malformed_protobuf_is_400_with_a_status_from_the_node() {
    let running = start(loopback_config("lb"));
    let client = http1_client();
    let reply = bounded(post(
        &client,
        running.http,
        "/v1/traces",
        &[PROTOBUF],
        &b"\x0a\x64\x01\x02"[..],
    ))
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.headers["content-type"], "application/x-protobuf");
    let status = rpc_status(&reply.body);
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.contains("runs past the end"),
        "{}",
        status.message
    );
    assert!(running.sink.batches().is_empty());
    assert_eq!(running.requests("http", "invalid"), 1.0);
    assert_http_still_accepts(&running, &client).await;
}

#[tokio::test]
async fn bad_json_is_400_with_a_json_status() {
    let running = start(loopback_config("lb"));
    let client = http1_client();
    let cases = [
        (r#"{"resourceSpans": ["#, "malformed JSON"),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8e","spanId":"eee19b7ec3c1b174"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId is 2 bytes",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not hex"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
    ];
    for (i, (body, expected)) in cases.into_iter().enumerate() {
        let reply = bounded(post(&client, running.http, "/v1/traces", &[JSON], body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.headers["content-type"], "application/json");
        let status = json_status(&reply.body);
        assert_eq!(status["code"], tonic::Code::InvalidArgument as i32);
        let message = status["message"].as_str().expect("message");
        assert!(message.contains(expected), "{message}");
        assert_eq!(running.requests("http", "invalid"), (i + 1) as f64);
        assert_http_still_accepts(&running, &client).await;
    }
    assert_eq!(running.sink.batches().len(), 3, "only the good requests");
}

#[tokio::test]
async fn unsupported_content_types_and_encodings_are_415() {
    let running = start(loopback_config("lb"));
    let client = http1_client();
    let body = protobuf(&sample_request(1, 4));
    let cases: [&[(&str, &str)]; 4] = [
        &[("content-type", "text/plain")],
        &[("content-type", "application/protobuf")],
        &[],
        &[PROTOBUF, ("content-encoding", "br")],
    ];
    for (i, headers) in cases.into_iter().enumerate() {
        let reply = bounded(post(
            &client,
            running.http,
            "/v1/traces",
            headers,
            body.clone(),
        ))
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{headers:?}"
        );
        assert_eq!(
            running.requests("http", "unsupported_media_type"),
            (i + 1) as f64
        );
        assert_http_still_accepts(&running, &client).await;
    }
    assert_eq!(running.requests("http", "accepted"), 4.0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_by_content_length() {
    let running = start(ReceiverConfig {
        max_request_bytes: 1024,
        ..loopback_config("lb")
    });
    let client = http1_client();
    let reply = bounded(post(
        &client,
        running.http,
        "/v1/traces",
        &[PROTOBUF],
        vec![0u8; 2048],
    ))
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        rpc_status(&reply.body)
            .message
            .contains("over the 1024-byte limit")
    );
    assert_eq!(running.requests("http", "too_large"), 1.0);
    assert_http_still_accepts(&running, &client).await;
}

#[tokio::test]
async fn a_streamed_body_without_length_is_cut_at_the_limit() {
    let running = start(ReceiverConfig {
        max_request_bytes: 4096,
        ..loopback_config("lb")
    });
    // h2: no Content-Length for a stream body, and the early answer does not
    // depend on the connection surviving.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<StreamBody<
            futures::stream::Iter<
                std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
            >,
        >>();
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..8)
        .map(|_| Ok(Frame::data(Bytes::from(vec![0u8; 1024]))))
        .collect();
    let req = http::Request::post(format!("http://{}/v1/traces", running.http))
        .header(PROTOBUF.0, PROTOBUF.1)
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .expect("request");
    assert!(req.headers().get("content-length").is_none());
    let res = bounded(client.request(req)).await.expect("answers");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert!(
        rpc_status(&body)
            .message
            .contains("over the 4096-byte limit")
    );
    assert_eq!(running.requests("http", "too_large"), 1.0);
    assert_http_still_accepts(&running, &h2c_client()).await;
}

#[tokio::test]
async fn a_gzip_bomb_is_413_without_being_inflated() {
    let running = start(loopback_config("lb"));
    let client = http1_client();
    // 1 GiB of zeros in ~1 MiB: within the 16 MiB body limit, so it is read;
    // inflating stops one byte past 16 MiB.
    let bomb = gzip_bomb(1024);
    let reply = bounded(post(
        &client,
        running.http,
        "/v1/traces",
        &[PROTOBUF, GZIP],
        bomb,
    ))
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        rpc_status(&reply.body)
            .message
            .contains("decompressed body is over the 16777216-byte limit")
    );
    assert!(running.sink.batches().is_empty());
    assert_eq!(running.requests("http", "too_large"), 1.0);
    assert_http_still_accepts(&running, &client).await;
}

#[tokio::test]
async fn the_gzip_bomb_helper_builds_a_valid_stream() {
    use std::io::Read;
    let bomb = gzip_bomb(8);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bomb.as_slice())
        .read_to_end(&mut out)
        .expect("valid gzip with a correct CRC and size");
    assert_eq!(out.len(), 8 << 20);
    assert!(out.iter().all(|&b| b == 0));
}

#[tokio::test]
async fn corrupt_gzip_is_400() {
    let running = start(loopback_config("lb"));
    let client = http1_client();
    let reply = bounded(post(
        &client,
        running.http,
        "/v1/traces",
        &[PROTOBUF, GZIP],
        &b"\x1f\x8b\x08\x00broken"[..],
    ))
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(running.requests("http", "invalid"), 1.0);
    assert_http_still_accepts(&running, &client).await;
}

#[tokio::test]
async fn backpressure_is_429_or_503_with_retry_after() {
    let running = start(loopback_config("sampler-2"));
    let client = http1_client();
    let cases = [
        (
            Refusal::Overloaded {
                retry_after: Duration::from_secs(2),
            },
            StatusCode::TOO_MANY_REQUESTS,
            "2",
            "overloaded",
        ),
        (
            Refusal::Unavailable {
                retry_after: Duration::from_millis(1500),
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "2",
            "unavailable",
        ),
    ];
    for (refusal, status, retry_after, result) in cases {
        running.sink.refuse(Some(refusal.clone()));
        let reply = bounded(post(
            &client,
            running.http,
            "/v1/traces",
            &[JSON],
            SPEC_JSON,
        ))
        .await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.headers["retry-after"], retry_after);
        assert_eq!(json_status(&reply.body)["message"], refusal.to_string());
        assert_eq!(running.requests("http", result), 1.0);
        running.sink.refuse(None);
        assert_http_still_accepts(&running, &client).await;
    }
    // Refused requests are not received.
    assert_eq!(running.spans_received("http"), 4.0);
}

#[tokio::test]
async fn wrong_method_is_405_and_other_paths_404() {
    let running = start(loopback_config("lb"));
    let client = http1_client();
    let get = http::Request::get(format!("http://{}/v1/traces", running.http))
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let res = bounded(client.request(get)).await.expect("answers");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let reply = bounded(post(
        &client,
        running.http,
        "/v1/metrics",
        &[PROTOBUF],
        Vec::new(),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(running.requests("http", "accepted"), 0.0);
    assert_http_still_accepts(&running, &client).await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops() {
    let gate = Arc::new(Semaphore::new(0));
    let mut running = start_with(loopback_config("lb"), FakeSink::holding(gate.clone()));
    let addr = running.http;
    let in_flight = tokio::spawn(async move {
        post(
            &http1_client(),
            addr,
            "/v1/traces",
            &[PROTOBUF],
            protobuf(&sample_request(1, 5)),
        )
        .await
        .status
    });
    bounded(running.sink.arrived.notified()).await;
    running.stop();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !running.server.is_finished(),
        "server waits for in-flight work"
    );
    gate.add_permits(1);
    assert_eq!(bounded(in_flight).await.expect("task"), StatusCode::OK);
    bounded(&mut running.server)
        .await
        .expect("task")
        .expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    assert_eq!(running.sink.requests(), vec![sample_request(1, 5)]);
}

/// Sends one keep-alive POST on `stream` and reads its answer head:
/// (status line, whether it says `connection: close`), or `None` when the
/// server had closed the connection before the request (an idle
/// keep-alive connection may be closed between requests).
async fn post_keep_alive(
    stream: &mut tokio::net::TcpStream,
    body: &[u8],
) -> Option<(String, bool)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: tailgate\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    // The answer: headers, then a body of content-length bytes.
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            // Closed (or reset) before a byte of the answer: not answered.
            _ if buf.is_empty() => return None,
            other => panic!("the connection closed mid-answer ({other:?}): {buf:?}"),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut rest = vec![0u8; length];
    stream.read_exact(&mut rest).await.unwrap();
    let status = head.lines().next().unwrap_or("").to_string();
    Some((status, head.contains("\r\nconnection: close\r\n")))
}

#[tokio::test]
async fn an_http1_connection_past_its_age_is_closed_and_every_request_answered() {
    use tokio::io::AsyncReadExt;
    let running = start(ReceiverConfig {
        max_connection_age: Duration::from_millis(200),
        max_connection_age_grace: Duration::from_secs(30),
        ..loopback_config("lb")
    });
    let body = protobuf(&sample_request(2, 1));
    let mut stream = tokio::net::TcpStream::connect(running.http).await.unwrap();
    // Bounded: at most 300 requests 20 ms apart on one connection, until the
    // server ends it: with `connection: close` on the answer to a request in
    // flight at that age, or by closing it idle between two requests.
    let mut answered = 0;
    let mut ended = false;
    for _ in 0..300 {
        match bounded(post_keep_alive(&mut stream, &body)).await {
            Some((status, close)) => {
                assert_eq!(status, "http/1.1 200 ok");
                answered += 1;
                if close {
                    let mut rest = Vec::new();
                    let read = bounded(stream.read_to_end(&mut rest)).await;
                    assert!(read.is_ok_and(|n| n == 0), "{rest:?}");
                    ended = true;
                    break;
                }
            }
            None => {
                ended = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ended,
        "{answered} requests answered on a connection never ended"
    );
    assert!(answered > 0);
    // Nothing was cut off: every request that reached the node was answered.
    assert_eq!(running.requests("http", "accepted"), answered as f64);
    // A new connection is served as usual.
    assert_http_still_accepts(&running, &http1_client()).await;
}
