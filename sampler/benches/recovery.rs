//! Recovery time of the durable buffer through a whole sampler: one node
//! with `storage:` takes about 1 GiB of spans over loopback gRPC (every
//! trace still waiting for its decision, so nothing in the log is settled
//! and all of it must be replayed), is killed (its runtime dropped where
//! it stood, as SIGKILL leaves the log), and a second node is started on
//! the same directory: the figure is the time from its start to `/readyz`
//! answering 200, the log replayed into its shards.
//!
//! ```sh
//! cargo bench -p sampler --bench recovery            # 1 GiB
//! cargo bench -p sampler --bench recovery -- 256     # another size, MiB
//! ```
//!
//! The page cache is warm (the log was just written): a cold disk adds its
//! read time (about 1 GiB / its sequential read rate).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use proto::exporter::{OtlpClient, OtlpClientConfig};
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, Refusal, Sink};
use proto::view::RequestView;
use sampler::{Sampler, SamplerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Nothing is decided while the bench runs: the whole log is unsettled.
const POLICY: &str = "\
decision_wait: 1h
decision_wait_after_root_received: 1h
policies:
  - name: all
    type: always_sample
";

const SPANS_PER_REQUEST: u64 = 1_000;
const SPANS_PER_TRACE: u64 = 10;

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
    }
}

/// Request `r`: 100 traces of 10 spans each, none seen before.
fn make_request(r: u64) -> Bytes {
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| {
            let t = r * (SPANS_PER_REQUEST / SPANS_PER_TRACE) + i / SPANS_PER_TRACE;
            let s = i % SPANS_PER_TRACE;
            let mut trace_id = vec![0u8; 16];
            trace_id[..8].copy_from_slice(&t.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            trace_id[8..].copy_from_slice(&(t + 1).to_be_bytes());
            Span {
                trace_id,
                span_id: (t * 16 + s + 1).to_be_bytes().to_vec(),
                parent_span_id: if s == 0 {
                    Vec::new()
                } else {
                    (t * 16 + 1).to_be_bytes().to_vec()
                },
                name: format!("GET /api/v1/items/{s}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + s * 1_000,
                end_time_unix_nano: 1_700_000_000_000_000_000 + s * 1_000 + 250_000,
                attributes: vec![
                    kv("http.method", "GET".into()),
                    kv("http.route", "/api/v1/items/{id}".into()),
                    kv("user.id", format!("user-{}", t % 9973)),
                ],
                ..Default::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout".into())],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(request.encode_to_vec())
}

/// The backend (nothing reaches it: nothing is decided).
struct NullSink;

impl Sink for NullSink {
    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let spans = RequestView::new(&batch.request).validate()?;
        Ok(Accepted { spans })
    }
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(dir: &Path, backend: SocketAddr, policy: &Path) -> SamplerConfig {
    let mut config: SamplerConfig = serde_json::from_value(serde_json::json!({
        "node": "recovery-bench",
        "admin": "127.0.0.1:0",
        "policy_file": policy,
        "shards": 2,
        "receiver": {"grpc": "127.0.0.1:0", "http": "off"},
        "exporter": {"endpoint": format!("http://{backend}")},
        "shutdown": {"grace": "0s", "drain_timeout": "1s"},
        "storage": {"path": dir},
    }))
    .expect("config");
    config.limits.max_buffer_bytes = 4 << 30;
    config.limits.max_traces = Some(20_000_000);
    config
}

/// Bytes of the log's segment files.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// `GET path` on the admin listener: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

/// A metric's value from a Prometheus text page (first sample).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    let mib: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let target = mib << 20;
    let base = std::env::temp_dir().join(format!("tailgate-recovery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("temp dir");
    let policy = base.join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let dir: PathBuf = base.join("wal");

    let load = runtime("tg-load", 1);
    let backend = Receiver::bind(ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        http: None,
        node: "backend".into(),
        ..ReceiverConfig::default()
    })
    .expect("backend binds");
    let backend_addr = backend.grpc_addr().expect("grpc");
    load.spawn(backend.serve(Arc::new(NullSink), std::future::pending()));

    // The first life: fill the log.
    let first = runtime("tg-first", 2);
    let node = Sampler::bind(config(&dir, backend_addr, &policy)).expect("binds");
    let addr = node.grpc_addr().expect("grpc");
    first.spawn(node.serve(std::future::pending()));
    let spans = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    load.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..2u64 {
            let spans = spans.clone();
            let dir = dir.clone();
            tasks.push(tokio::spawn(async move {
                let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{addr}")))
                    .expect("client");
                let mut r = c;
                while log_bytes(&dir) < target {
                    let request = make_request(r);
                    r += 2;
                    for _attempt in 0..10_000 {
                        match client.export(request.clone()).await {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("export failed: {e}"),
                        }
                    }
                    spans.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
        // A few commit intervals: everything answered is on disk.
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let written = started.elapsed();
    let bytes = log_bytes(&dir);
    let spans = spans.load(Ordering::Relaxed);
    // Killed: every task dropped where it stood, nothing drained.
    first.shutdown_background();

    // The second life, on the same directory.
    let second = runtime("tg-second", 2);
    let started = Instant::now();
    let node = Sampler::bind(config(&dir, backend_addr, &policy)).expect("binds again");
    let admin = node.admin_addr();
    second.spawn(node.serve(std::future::pending()));
    let (ready, page) = load.block_on(async {
        loop {
            if let Some((200, _)) = http_get(admin, "/readyz").await {
                let ready = started.elapsed();
                let page = http_get(admin, "/metrics").await.map(|(_, b)| b);
                return (ready, page.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let recovered = metric(&page, "tailgate_spans_recovered_total");
    println!(
        "recovery: {spans} spans ({:.0} MiB of log in {} s) written through the sampler, killed",
        bytes as f64 / (1 << 20) as f64,
        written.as_secs()
    );
    println!(
        "  restarted on the log: ready in {:.2} s ({:.0} MiB/s, {:.0} spans/s replayed); {recovered} spans recovered",
        ready.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64 / ready.as_secs_f64(),
        recovered / ready.as_secs_f64()
    );
    second.shutdown_background();
    load.shutdown_background();
    let _ = std::fs::remove_dir_all(&base);
}
