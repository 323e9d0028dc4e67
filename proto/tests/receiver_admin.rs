//! The admin server (/metrics, /healthz, /readyz) and the metrics recorder,
//! against the real server on 127.0.0.1:0.

mod receiver_support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use proto::admin::{Admin, Readiness, install_metrics};
use receiver_support::*;
use tokio::sync::oneshot;

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = http1_client().request(req).await.expect("answers");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

#[tokio::test]
async fn admin_serves_metrics_health_and_flipping_readiness() {
    let running = start(loopback_config("sampler-0"));
    let reply = bounded(post(
        &http1_client(),
        running.http,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        protobuf(&sample_request(3, 1)),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let admin = Admin::bind("127.0.0.1:0".parse().expect("addr")).expect("binds");
    let addr = admin.local_addr();
    let readiness = Readiness::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(admin.serve(install_metrics(), readiness.clone(), async {
        let _ = stopped.await;
    }));

    let (status, headers, text) = bounded(get(addr, "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    assert_eq!(
        metric(
            &text,
            "tailgate_spans_received_total",
            &[("node", "sampler-0"), ("protocol", "http")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "tailgate_requests_total",
            &[
                ("node", "sampler-0"),
                ("protocol", "http"),
                ("result", "accepted")
            ]
        ),
        1.0
    );
    // Request sizes are a real histogram with byte buckets, not a summary.
    assert!(
        text.contains(
            r#"tailgate_request_bytes_bucket{node="sampler-0",protocol="http",le="1024"}"#
        ),
        "{text}"
    );

    assert_eq!(bounded(get(addr, "/healthz")).await.0, StatusCode::OK);
    assert_eq!(
        bounded(get(addr, "/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    readiness.set_ready(true);
    assert_eq!(bounded(get(addr, "/readyz")).await.0, StatusCode::OK);
    readiness.clone().set_ready(false);
    assert_eq!(
        bounded(get(addr, "/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(bounded(get(addr, "/nope")).await.0, StatusCode::NOT_FOUND);

    let _ = stop.send(());
    bounded(server)
        .await
        .expect("task")
        .expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[test]
fn install_metrics_is_idempotent_and_every_handle_sees_every_metric() {
    let first = install_metrics();
    let second = install_metrics();
    metrics::counter!("tailgate_test_total", "node" => "n").increment(2);
    metrics::histogram!("tailgate_test_seconds", "node" => "n").record(0.003);
    for handle in [&first, &second] {
        let text = handle.render();
        assert_eq!(metric(&text, "tailgate_test_total", &[("node", "n")]), 2.0);
        assert_eq!(
            metric(
                &text,
                "tailgate_test_seconds_bucket",
                &[("node", "n"), ("le", "0.005")]
            ),
            1.0,
            "{text}"
        );
    }
}

#[test]
fn admin_bind_reports_the_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = taken.local_addr().expect("addr");
    let err = Admin::bind(addr).expect_err("in use");
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
