//! OTLP/gRPC receiver, against the real server on 127.0.0.1:0.

mod receiver_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proto::codec::{ClientCodec, EXPORT_PATH};
use proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use proto::receiver::{Protocol, ReceiverConfig, Refusal};
use proto::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use receiver_support::*;
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

async fn client(addr: SocketAddr) -> TraceServiceClient<Channel> {
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

/// Sends `body` as the request bytes, whatever they are.
async fn export_raw(
    addr: SocketAddr,
    body: impl Into<Bytes>,
) -> Result<ExportTraceServiceResponse, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(body.into()),
        http::uri::PathAndQuery::from_static(EXPORT_PATH),
        ClientCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Sends one hand-built gRPC frame on `path`, for what tonic clients will
/// not send (a pre-compressed bomb, an unknown encoding).
async fn send_frame(
    addr: SocketAddr,
    path: &str,
    encoding: Option<&str>,
    compressed: bool,
    payload: &[u8],
) -> Status {
    let mut frame = grpc_frame(payload);
    frame[0] = u8::from(compressed);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        req = req.header("grpc-encoding", encoding);
    }
    let req = req.body(Full::new(Bytes::from(frame))).expect("request");
    grpc_status(h2c_client().request(req).await.expect("answers")).await
}

/// The gRPC status of an answer: in its headers (trailers-only) or its
/// trailers.
async fn grpc_status(res: http::Response<hyper::body::Incoming>) -> Status {
    assert_eq!(
        res.status(),
        http::StatusCode::OK,
        "gRPC errors travel in grpc-status"
    );
    let (parts, body) = res.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    Status::from_header_map(&parts.headers)
        .or_else(|| Status::from_header_map(&trailers))
        .expect("a grpc-status")
}

/// Sends a gRPC body in the given pieces, each its own DATA frame, and
/// returns the status the server answered.
async fn send_pieces(addr: SocketAddr, pieces: Vec<Bytes>) -> Status {
    let frames = futures::stream::iter(
        pieces
            .into_iter()
            .map(|piece| Ok::<_, std::convert::Infallible>(http_body::Frame::data(piece))),
    );
    let req = http::Request::post(format!("http://{addr}{EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(frames))
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    grpc_status(client.request(req).await.expect("answers")).await
}

/// The gRPC frame of an uncompressed message.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("fits").to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

async fn assert_grpc_still_accepts(running: &Running) {
    let before = running.sink.batches().len();
    client(running.grpc)
        .await
        .export(sample_request(2, 0x66))
        .await
        .expect("good request after a bad one");
    assert_eq!(running.sink.batches().len(), before + 1);
}

#[tokio::test]
async fn grpc_export_hands_the_node_the_sent_request() {
    let running = start(loopback_config("sampler-0"));
    let request = sample_request(3, 1);
    let response = bounded(client(running.grpc).await.export(request.clone()))
        .await
        .expect("accepted");
    assert_eq!(response.into_inner(), ExportTraceServiceResponse::default());
    let batches = running.sink.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].protocol, Protocol::Grpc);
    assert_eq!(running.sink.requests(), vec![request]);
    assert_eq!(running.spans_received("grpc"), 3.0);
    assert_eq!(running.requests("grpc", "accepted"), 1.0);
    assert_eq!(
        running.metric("tailgate_spans_received_total", &[("node", "sampler-0")]),
        3.0
    );
}

#[tokio::test]
async fn gzip_and_zstd_requests_arrive_decompressed() {
    let running = start(loopback_config("lb"));
    for (seed, encoding) in [
        (1, CompressionEncoding::Gzip),
        (2, CompressionEncoding::Zstd),
    ] {
        let request = sample_request(50, seed);
        bounded(
            client(running.grpc)
                .await
                .send_compressed(encoding)
                .export(request.clone()),
        )
        .await
        .expect("accepted");
        assert_eq!(
            running.sink.requests().last(),
            Some(&request),
            "{encoding:?}"
        );
    }
    assert_eq!(running.spans_received("grpc"), 100.0);
    assert_eq!(running.requests("grpc", "accepted"), 2.0);
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_and_not_received() {
    let running = start(loopback_config("lb"));
    // Field 1 (resource_spans) claims 100 bytes; 2 follow.
    let status = bounded(export_raw(running.grpc, &b"\x0a\x64\x01\x02"[..]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("runs past the end"), "{status:?}");
    assert!(running.sink.batches().is_empty());
    assert_eq!(running.requests("grpc", "invalid"), 1.0);
    assert_eq!(running.spans_received("grpc"), 0.0);
    assert_grpc_still_accepts(&running).await;
}

#[tokio::test]
async fn oversize_message_is_resource_exhausted_without_retry_info() {
    let running = start(ReceiverConfig {
        max_request_bytes: 64 * 1024,
        ..loopback_config("lb")
    });
    let big = sample_request(2000, 3);
    assert!(protobuf(&big).len() > 64 * 1024);
    let status = bounded(client(running.grpc).await.export(big))
        .await
        .expect_err("refused");
    // tonic says OUT_OF_RANGE, which OTLP clients retry forever; the
    // receiver makes it RESOURCE_EXHAUSTED without RetryInfo: not retried.
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_retry_info().is_none());
    assert!(running.sink.batches().is_empty());
    assert_eq!(running.requests("grpc", "too_large"), 1.0);
    assert_grpc_still_accepts(&running).await;
}

#[tokio::test]
async fn gzip_bomb_is_refused_at_the_limit() {
    let running = start(loopback_config("lb"));
    // 1 GiB of zeros in ~1 MiB: under the 16 MiB frame limit, far over it
    // inflated. tonic stops inflating at the limit.
    let bomb = gzip_bomb(1024);
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let status = bounded(send_frame(
        running.grpc,
        EXPORT_PATH,
        Some("gzip"),
        true,
        &bomb,
    ))
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("size limit"), "{status:?}");
    assert!(running.sink.batches().is_empty());
    assert_eq!(running.requests("grpc", "too_large"), 1.0);
    assert_grpc_still_accepts(&running).await;
}

#[tokio::test]
async fn corrupt_compression_is_invalid_argument() {
    let running = start(loopback_config("lb"));
    let status = bounded(send_frame(
        running.grpc,
        EXPORT_PATH,
        Some("gzip"),
        true,
        b"\x1f\x8b\x08\x00not gzip at all",
    ))
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(running.requests("grpc", "invalid"), 1.0);
    assert_grpc_still_accepts(&running).await;
}

#[tokio::test]
async fn unsupported_grpc_encoding_is_unimplemented() {
    let running = start(loopback_config("lb"));
    let status = bounded(send_frame(
        running.grpc,
        EXPORT_PATH,
        Some("deflate"),
        true,
        b"\x78\x9c\x03\x00\x00\x00\x00\x01",
    ))
    .await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(running.requests("grpc", "unsupported_media_type"), 1.0);
    assert_grpc_still_accepts(&running).await;
}

#[tokio::test]
async fn other_methods_and_services_are_unimplemented() {
    let running = start(loopback_config("lb"));
    for path in [
        "/opentelemetry.proto.collector.trace.v1.TraceService/Other",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Other",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    ] {
        let status = bounded(send_frame(running.grpc, path, None, false, b"")).await;
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
    assert!(running.sink.batches().is_empty());
    assert_grpc_still_accepts(&running).await;
}

#[tokio::test]
async fn backpressure_is_resource_exhausted_or_unavailable_with_retry_info() {
    let running = start(loopback_config("sampler-1"));
    let cases = [
        (
            Refusal::Overloaded {
                retry_after: Duration::from_secs(2),
            },
            Code::ResourceExhausted,
            "overloaded",
        ),
        (
            Refusal::Unavailable {
                retry_after: Duration::from_millis(500),
            },
            Code::Unavailable,
            "unavailable",
        ),
    ];
    for (refusal, code, result) in cases {
        let delay = refusal.retry_after();
        running.sink.refuse(Some(refusal));
        let status = bounded(client(running.grpc).await.export(sample_request(4, 9)))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code);
        assert_eq!(
            status.get_details_retry_info().and_then(|r| r.retry_delay),
            delay
        );
        assert_eq!(running.requests("grpc", result), 1.0);
        running.sink.refuse(None);
        assert_grpc_still_accepts(&running).await;
    }
    // Refused requests are not received: only the two good ones count.
    assert_eq!(running.spans_received("grpc"), 4.0);
    assert_eq!(running.requests("grpc", "accepted"), 2.0);
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops() {
    let gate = Arc::new(Semaphore::new(0));
    let mut running = start_with(loopback_config("lb"), FakeSink::holding(gate.clone()));
    let addr = running.grpc;
    let in_flight =
        tokio::spawn(async move { client(addr).await.export(sample_request(1, 5)).await });
    bounded(running.sink.arrived.notified()).await;
    running.stop();
    // Stopping waits for the request the sink is still holding.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !running.server.is_finished(),
        "server waits for in-flight work"
    );
    gate.add_permits(1);
    let response = bounded(in_flight).await.expect("task");
    assert!(response.is_ok(), "{response:?}");
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

#[tokio::test]
async fn an_empty_request_is_accepted_with_zero_spans() {
    let running = start(loopback_config("lb"));
    bounded(
        client(running.grpc)
            .await
            .export(ExportTraceServiceRequest::default()),
    )
    .await
    .expect("accepted");
    assert_eq!(running.requests("grpc", "accepted"), 1.0);
    assert_eq!(running.spans_received("grpc"), 0.0);
}

/// Uncompressed requests are read by the receiver itself, not tonic's
/// decoder: one arriving in one DATA frame is handed on as a slice of it,
/// one split over frames is put together. Pieces that cut the frame header
/// and the message anywhere, and a second message after the first (read
/// and dropped, as tonic does), still give the node exactly the request.
#[tokio::test]
async fn a_message_split_over_data_frames_arrives_whole() {
    let running = start(loopback_config("lb"));
    let request = sample_request(40, 9);
    let frame = grpc_frame(&protobuf(&request));
    for cuts in [vec![1, 3, 5], vec![2, 700], vec![5, 6, 1000, 1001, 2500]] {
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([frame.len()]) {
            pieces.push(Bytes::copy_from_slice(&frame[at..cut]));
            at = cut;
        }
        let status = bounded(send_pieces(running.grpc, pieces)).await;
        assert_eq!(status.code(), Code::Ok, "{status:?}");
        assert_eq!(running.sink.requests().last(), Some(&request));
    }
    let mut two = frame.clone();
    two.extend_from_slice(&grpc_frame(b"\x0a\x00"));
    let status = bounded(send_pieces(running.grpc, vec![Bytes::from(two)])).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(running.sink.requests().last(), Some(&request));
    assert_eq!(running.requests("grpc", "accepted"), 4.0);
    assert_eq!(running.spans_received("grpc"), 160.0);
}

/// What tonic's decoder refused, the receiver's own reading refuses the
/// same way: INVALID_ARGUMENT for a body with no whole message or a
/// compressed flag without an encoding, counted as invalid, and the
/// receiver goes on serving.
#[tokio::test]
async fn an_uncompressed_body_without_a_whole_message_is_invalid_argument() {
    let running = start(loopback_config("lb"));
    let message = protobuf(&sample_request(3, 4));
    let frame = grpc_frame(&message);
    let cases: Vec<(&str, Vec<Bytes>)> = vec![
        ("no message at all", vec![]),
        ("half a header", vec![Bytes::from_static(&[0, 0])]),
        (
            "a message cut short",
            vec![Bytes::copy_from_slice(&frame[..frame.len() - 1])],
        ),
        ("compressed flag, no encoding", {
            let mut flagged = frame.clone();
            flagged[0] = 1;
            vec![Bytes::from(flagged)]
        }),
        ("an unknown flag", {
            let mut flagged = frame.clone();
            flagged[0] = 7;
            vec![Bytes::from(flagged)]
        }),
    ];
    for (n, (what, pieces)) in cases.into_iter().enumerate() {
        let status = bounded(send_pieces(running.grpc, pieces)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(
            running.requests("grpc", "invalid"),
            (n + 1) as f64,
            "{what}"
        );
    }
    assert!(running.sink.batches().is_empty());
    assert_grpc_still_accepts(&running).await;
}
