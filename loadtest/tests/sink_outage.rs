//! The sink's outage mode, and gen's retries of what it refuses.

mod common;

use std::time::Duration;

use common::*;
use loadtest::generate;
use loadtest::manifest::{self, Line};
use loadtest::shape::{Generator, ShapeConfig};
use loadtest::sink::{self, Outage, SinkConfig};
use loadtest::transport::{Connection, Timeouts};
use loadtest::verify::{Expectations, verify_files};
use proto::exporter::{OtlpClient, OtlpClientConfig};

/// One encoded request of `traces` generated traces.
fn request(traces: u64) -> (bytes::Bytes, u32) {
    let mut generator = Generator::new(ShapeConfig::default(), 1).expect("shape");
    for i in 0..traces {
        generator.start_trace(i, 1, u32::MAX);
    }
    generator.emit_due(u64::MAX, u32::MAX, &mut |_| {});
    let request = generator.flush().expect("spans");
    (request.bytes, request.spans)
}

async fn outage_sink(record: &std::path::Path) -> loadtest::RunningSink {
    sink::start(SinkConfig {
        record: Some(record.to_owned()),
        // Starts at once and outlasts any test; the test ends it.
        outage: Some(Outage {
            after: Duration::ZERO,
            length: Duration::from_secs(3600),
        }),
        retry_after: Duration::from_millis(50),
        ..SinkConfig::loopback()
    })
    .await
    .expect("sink starts")
}

#[tokio::test]
async fn grpc_is_refused_with_unavailable_during_the_outage_then_accepted() {
    let files = files();
    let sink = outage_sink(&files.record).await;
    let client = OtlpClient::new(&OtlpClientConfig::new(format!(
        "http://{}",
        sink.grpc_addr().expect("grpc")
    )))
    .expect("client");
    let (body, spans) = request(20);

    let refused = client.export(body.clone()).await.expect_err("outage");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(refused.retry_after(), Some(Duration::from_millis(50)));
    assert!(refused.is_retryable());

    sink.sink().end_refusal();
    client
        .export(body)
        .await
        .expect("accepted after the outage");
    let stats = sink.stop().await.expect("stops");
    assert_eq!(stats.refused, 1);
    assert_eq!(stats.spans, u64::from(spans));
    assert_eq!(
        stats.recorded,
        u64::from(spans),
        "refused spans are not recorded"
    );
}

#[tokio::test]
async fn http_is_refused_with_503_during_the_outage_then_accepted() {
    let files = files();
    let sink = outage_sink(&files.record).await;
    let timeouts = Timeouts {
        request: PATIENCE,
        connect: PATIENCE,
    };
    let mut connection = Connection::new(&http(&sink), timeouts).expect("connection");
    let (body, spans) = request(20);

    let refused = connection.send(body.clone()).await.expect_err("outage");
    assert!(refused.message.contains("503"), "{}", refused.message);
    assert!(refused.retryable);
    // Retry-After is whole seconds, rounded up.
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));

    sink.sink().end_refusal();
    assert_eq!(connection.send(body).await, Ok(0));
    let stats = sink.stop().await.expect("stops");
    assert_eq!((stats.refused, stats.spans), (1, u64::from(spans)));
}

#[tokio::test]
async fn refuse_for_starts_an_outage_on_a_running_sink() {
    let files = files();
    let sink = recording_sink(&files.record).await;
    assert!(!sink.sink().refusing());
    sink.sink().refuse_for(Duration::from_secs(3600));
    assert!(sink.sink().refusing());
    let mut connection = Connection::new(
        &grpc(&sink),
        Timeouts {
            request: PATIENCE,
            connect: PATIENCE,
        },
    )
    .expect("connection");
    let refused = connection.send(request(3).0).await.expect_err("refused");
    assert!(refused.retryable, "{}", refused.message);
    sink.sink().end_refusal();
    assert!(!sink.sink().refusing());
    sink.stop().await.expect("stops");
}

async fn gen_rides_out_an_outage(endpoint: fn(&loadtest::RunningSink) -> loadtest::Endpoint) {
    let files = files();
    let sink = outage_sink(&files.record).await;
    let config = small_run(vec![endpoint(&sink)], 500, &files.manifest);
    let run = tokio::spawn(generate::run(config));
    // End the outage once gen has been refused at least once.
    tokio::time::timeout(PATIENCE, async {
        while sink.stats().refused == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("gen reaches the sink");
    sink.sink().end_refusal();
    let report = run.await.expect("joins").expect("gen runs");
    let stats = sink.stop().await.expect("stops");

    assert!(report.errors >= 1 && report.retries >= 1, "{report}");
    assert_eq!(report.errors, report.retries, "every failure was retried");
    assert_eq!(report.requests_given_up, 0);
    assert_eq!(report.spans_sent, 500);
    assert_eq!(report.spans_unsent, 0);
    assert_eq!(stats.spans, 500);
    assert!(stats.refused >= 1);
    verify_files(&[files.manifest], &[files.record], Expectations::keep_all())
        .expect("retried requests arrive once, whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_retries_refused_grpc_requests_until_the_outage_ends() {
    gen_rides_out_an_outage(grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_retries_refused_http_requests_until_the_outage_ends() {
    gen_rides_out_an_outage(http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_gives_up_after_its_retries_and_writes_the_unsent_spans() {
    let files = files();
    let sink = outage_sink(&files.record).await;
    let mut config = small_run(vec![grpc(&sink)], 200, &files.manifest);
    config.max_retries = 2;
    let report = generate::run(config).await.expect("gen runs");
    let stats = sink.stop().await.expect("stops");

    assert_eq!(report.spans_sent, 0);
    assert_eq!(report.spans_unsent, 200);
    assert!(report.requests_given_up >= 1);
    assert_eq!(
        report.errors,
        report.requests_given_up * 3,
        "1 try + 2 retries each"
    );
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Unavailable"))
    );
    assert_eq!(stats.spans, 0);
    assert_eq!(stats.refused, report.errors);

    let mut unsent = 0;
    manifest::read(&files.manifest, |line| {
        if let Line::Unsent { spans, .. } = line {
            unsent += u64::from(spans);
        }
    })
    .expect("complete");
    assert_eq!(unsent, 200);
    let verified = verify_files(&[files.manifest], &[files.record], Expectations::keep_all())
        .expect("nothing is expected of traces gen could not send");
    assert_eq!(verified.traces_with_unsent_spans, verified.traces);
}
