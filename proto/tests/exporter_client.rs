//! `OtlpClient` against a real tonic server on 127.0.0.1:0: what arrives, and
//! how each kind of failure is classified.

mod exporter_support;

use std::time::Duration;

use exporter_support::{Answer, FakeBackend, batch};
use proto::exporter::{Compression, ExportError, OtlpClient, OtlpClientConfig};
use tonic::Code;

fn client(endpoint: &str) -> OtlpClient {
    OtlpClient::new(&OtlpClientConfig::new(endpoint)).unwrap()
}

#[tokio::test]
async fn export_delivers_the_request_and_its_headers() {
    let backend = FakeBackend::default();
    let endpoint = backend.serve().await;
    let mut config = OtlpClientConfig::new(&endpoint);
    config.headers.insert("x-api-key".into(), "secret".into());
    let client = OtlpClient::new(&config).unwrap();

    let response = client.export(batch(1..=3, 10).request).await.unwrap();

    assert_eq!(response.rejected_spans, 0);
    let received = backend.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].span_ids(), [1, 2, 3]);
    assert_eq!(received[0].api_key.as_deref(), Some("secret"));
    assert_eq!(received[0].encoding, None);
}

#[tokio::test]
async fn concatenated_requests_arrive_as_one_request_holding_both() {
    let backend = FakeBackend::default();
    let client = client(&backend.serve().await);
    let mut body = batch([1, 2], 0).request.to_vec();
    body.extend_from_slice(&batch([3], 0).request);

    client.export(body.into()).await.unwrap();

    assert_eq!(backend.received()[0].span_ids(), [1, 2, 3]);
}

#[tokio::test]
async fn gzip_and_zstd_requests_arrive_compressed_and_decodable() {
    for (compression, name) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
        let backend = FakeBackend::default();
        let mut config = OtlpClientConfig::new(backend.serve().await);
        config.compression = compression;
        let client = OtlpClient::new(&config).unwrap();

        client.export(batch(1..=50, 100).request).await.unwrap();

        let received = backend.received();
        assert_eq!(received[0].encoding.as_deref(), Some(name));
        assert_eq!(received[0].span_ids(), (1..=50).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn unavailable_is_retryable_and_marks_the_member_down() {
    let backend = FakeBackend::default();
    backend.script([Answer::Fail(Code::Unavailable, None)]);
    let endpoint = backend.serve().await;

    let e = client(&endpoint)
        .export(batch([1], 0).request)
        .await
        .unwrap_err();

    assert!(
        matches!(
            e,
            ExportError::Status {
                code: Code::Unavailable,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable() && e.is_member_down());
    assert_eq!(e.endpoint(), endpoint);
    assert_eq!(e.retry_after(), None);
}

#[tokio::test]
async fn resource_exhausted_is_retryable_only_with_retry_info() {
    let backend = FakeBackend::default();
    backend.script([
        Answer::Fail(Code::ResourceExhausted, Some(Duration::from_millis(1500))),
        Answer::Fail(Code::ResourceExhausted, None),
    ]);
    let client = client(&backend.serve().await);

    let with_info = client.export(batch([1], 0).request).await.unwrap_err();
    let without = client.export(batch([1], 0).request).await.unwrap_err();

    assert_eq!(with_info.code(), Code::ResourceExhausted);
    assert!(with_info.is_retryable());
    assert_eq!(with_info.retry_after(), Some(Duration::from_millis(1500)));
    assert!(!with_info.is_member_down());
    assert!(!without.is_retryable());
}

#[tokio::test]
async fn invalid_argument_is_not_retryable() {
    let backend = FakeBackend::default();
    backend.script([Answer::Fail(Code::InvalidArgument, None)]);
    let client = client(&backend.serve().await);

    let e = client.export(batch([1], 0).request).await.unwrap_err();

    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(!e.is_retryable() && !e.is_member_down());
}

#[tokio::test]
async fn partial_success_reports_the_rejected_count() {
    let backend = FakeBackend::default();
    backend.script([Answer::Reject(2)]);
    let client = client(&backend.serve().await);

    let response = client.export(batch(1..=5, 0).request).await.unwrap();

    assert_eq!(response.rejected_spans, 2);
    assert_eq!(response.message, "span too old");
}

#[tokio::test]
async fn connection_refused_is_a_retryable_connect_error_and_member_down() {
    // A port that was just free: nothing listens on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let e = client(&endpoint)
        .export(batch([1], 0).request)
        .await
        .unwrap_err();

    assert!(matches!(e, ExportError::Connect { .. }), "{e:?}");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.is_retryable() && e.is_member_down());
    assert!(e.to_string().contains(&endpoint), "{e}");
}

#[tokio::test]
async fn a_connection_lost_mid_call_is_retryable_and_member_down() {
    // A peer that accepts, reads a little of the request, then hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let peer = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        for _ in 0..4 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 64];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });

    let e = client(&endpoint)
        .export(batch([1], 0).request)
        .await
        .unwrap_err();
    peer.abort();

    assert!(matches!(e, ExportError::Disconnected { .. }), "{e:?}");
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.is_member_down(), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_backend_times_out_as_deadline_exceeded() {
    let backend = FakeBackend::default();
    backend.script([Answer::Slow(Duration::from_secs(60))]);
    let mut config = OtlpClientConfig::new(backend.serve().await);
    config.timeout = Duration::from_secs(2);
    let client = OtlpClient::new(&config).unwrap();

    let e = client.export(batch([1], 0).request).await.unwrap_err();

    assert!(
        matches!(e, ExportError::Timeout { timeout, .. } if timeout == Duration::from_secs(2)),
        "{e:?}"
    );
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(e.is_retryable() && e.is_member_down());
    assert_eq!(backend.received().len(), 1, "the call reached the backend");
}
