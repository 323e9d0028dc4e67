//! Shared by the loadtest component tests: a recording sink on 127.0.0.1:0
//! and small, quick traffic.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::time::Duration;

use loadtest::generate::GenConfig;
use loadtest::shape::ShapeConfig;
use loadtest::sink::{self, RunningSink, SinkConfig};
use loadtest::transport::Endpoint;

/// Every test's upper bound on waiting for something that should happen
/// quickly: it fails the test rather than hanging it, and is never what the
/// test asserts on.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Files {
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
    pub record: PathBuf,
}

pub fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    Files {
        manifest: dir.path().join("manifest.jsonl"),
        record: dir.path().join("record.bin"),
        dir,
    }
}

/// A sink on loopback, both protocols, recording to `record`.
pub async fn recording_sink(record: &std::path::Path) -> RunningSink {
    sink::start(SinkConfig {
        record: Some(record.to_owned()),
        retry_after: Duration::from_millis(50),
        ..SinkConfig::loopback()
    })
    .await
    .expect("sink starts")
}

pub fn grpc(sink: &RunningSink) -> Endpoint {
    Endpoint::grpc(sink.grpc_addr().expect("grpc on"))
}

pub fn http(sink: &RunningSink) -> Endpoint {
    Endpoint::http(sink.http_addr().expect("http on"))
}

/// A bounded count of spans at a small rate, traces spread over 100 ms and
/// several requests, errors and slow traces common enough to appear.
pub fn small_run(endpoints: Vec<Endpoint>, count: u64, manifest: &std::path::Path) -> GenConfig {
    GenConfig {
        connections: 3,
        rate: 20_000.0,
        count: Some(count),
        batch_spans: 64,
        batch_timeout: Duration::from_millis(10),
        shape: ShapeConfig {
            mean_spans: 6.0,
            error_rate: 0.1,
            slow_rate: 0.1,
            spread: Duration::from_millis(100),
            ..ShapeConfig::default()
        },
        seed: Some(7),
        manifest: Some(manifest.to_owned()),
        drain_timeout: PATIENCE,
        ..GenConfig::new(endpoints)
    }
}
