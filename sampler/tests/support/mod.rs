//! Shared by the sampler's component tests: a recording OTLP backend on
//! 127.0.0.1:0 (proto's own receiver with a recording sink), a running
//! sampler node, OTLP clients, and reading `/metrics`.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

#[path = "../../src/testutil.rs"]
pub mod testutil;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proto::exporter::{ExportError, OtlpClient, OtlpClientConfig};
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, Refusal, Sink};
use proto::view::{RequestView, TraceId};
use sampler::{Sampler, SamplerConfig, SamplerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use testutil::{SpanSpec, request, trace_id};

mod metrics;
pub use metrics::Metrics;

/// The node label of the recording backend's own receiver metrics, kept
/// apart from the sampler's.
pub const BACKEND_NODE: &str = "backend";

/// Records every request it accepts; can be told to refuse (a backend that
/// is down: UNAVAILABLE, which the exporter retries).
#[derive(Default)]
pub struct RecordingSink {
    pub requests: Mutex<Vec<Bytes>>,
    /// Logs requests, after the logs walk.
    pub logs: Mutex<Vec<Bytes>>,
    pub down: std::sync::atomic::AtomicBool,
}

impl Sink for RecordingSink {
    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        if self.down.load(Ordering::Relaxed) {
            return Err(Refusal::Unavailable {
                retry_after: Duration::from_millis(50),
            });
        }
        let spans = RequestView::new(&batch.request).validate()?;
        self.requests.lock().unwrap().push(batch.request);
        Ok(Accepted { spans })
    }

    async fn accept_logs(&self, batch: Batch) -> Result<Accepted, Refusal> {
        if self.down.load(Ordering::Relaxed) {
            return Err(Refusal::Unavailable {
                retry_after: Duration::from_millis(50),
            });
        }
        let records = proto::logs::LogsView::new(&batch.request).validate()?;
        self.logs.lock().unwrap().push(batch.request);
        Ok(Accepted { spans: records })
    }
}

/// The backend: a recording OTLP/gRPC endpoint.
pub struct Backend {
    pub sink: Arc<RecordingSink>,
    pub endpoint: String,
}

impl Backend {
    pub async fn start() -> Backend {
        let receiver = Receiver::bind(ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().unwrap()),
            http: None,
            node: BACKEND_NODE.into(),
            ..ReceiverConfig::default()
        })
        .unwrap();
        let endpoint = format!("http://{}", receiver.grpc_addr().unwrap());
        let sink = Arc::new(RecordingSink::default());
        tokio::spawn(receiver.serve(sink.clone(), std::future::pending()));
        Backend { sink, endpoint }
    }

    /// Every span received: (trace ID, span ID byte), in arrival order.
    /// The byte is `SpanSpec`'s span number (its span IDs are `[n + 1; 8]`);
    /// for an SDK's spans, whose IDs are random (the first byte may be 0),
    /// it means nothing.
    pub fn spans(&self) -> Vec<(TraceId, u8)> {
        let requests = self.sink.requests.lock().unwrap().clone();
        let mut out = Vec::new();
        for r in &requests {
            RequestView::new(r)
                .for_each_span(|_, _, s| out.push((s.trace_id, s.span_id.0[0].wrapping_sub(1))))
                .unwrap();
        }
        out
    }

    /// Span ID bytes received for one trace, sorted.
    pub fn spans_of(&self, id: TraceId) -> Vec<u8> {
        let mut v: Vec<u8> = self
            .spans()
            .into_iter()
            .filter(|(t, _)| *t == id)
            .map(|(_, s)| s)
            .collect();
        v.sort_unstable();
        v
    }

    pub fn requests(&self) -> Vec<Bytes> {
        self.sink.requests.lock().unwrap().clone()
    }

    /// Every log record received: (trace ID, `time_unix_nano`, which the
    /// tests use as the record's number), in arrival order.
    pub fn log_records(&self) -> Vec<(Option<TraceId>, u64)> {
        let requests = self.sink.logs.lock().unwrap().clone();
        let mut out = Vec::new();
        for r in &requests {
            proto::logs::LogsView::new(r)
                .for_each_record(|_, _, l| out.push((l.trace_id, l.time_unix_nano)))
                .unwrap();
        }
        out
    }

    pub fn set_down(&self, down: bool) {
        self.sink.down.store(down, Ordering::Relaxed);
    }
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir. The first call in a
/// process also removes the ones earlier test processes left behind.
pub fn temp_dir(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_stale_dirs);
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "tailgate-sampler-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `tailgate-sampler-NAME-PID-N` directories whose process is gone
/// (no `/proc/PID`): each test runs in a process of its own (nextest) and
/// nothing removes its directory when it ends. Where there is no `/proc`,
/// nothing is removed.
fn remove_stale_dirs() {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tailgate-sampler-"))
        else {
            continue;
        };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A policy file laid out as a Kubernetes ConfigMap mount:
/// `dir/policy.yaml → ..data/policy.yaml`, `..data → ..<version>`.
pub struct ConfigMapDir {
    pub dir: PathBuf,
    version: usize,
}

impl ConfigMapDir {
    pub fn new(name: &str, policy: &str) -> ConfigMapDir {
        let mut cm = ConfigMapDir {
            dir: temp_dir(name),
            version: 0,
        };
        cm.swap(policy);
        std::os::unix::fs::symlink("..data/policy.yaml", cm.path()).unwrap();
        cm
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    /// Writes a new version and swaps `..data` to it atomically, as the
    /// kubelet does.
    pub fn swap(&mut self, policy: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir_all(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("policy.yaml"), policy).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

/// A config for a node on 127.0.0.1:0 exporting to `backend`, with short
/// timeouts for tests.
pub fn config(node: &str, policy_file: &Path, backend: &Backend) -> SamplerConfig {
    let mut c: SamplerConfig = serde_yaml_ng::from_str(&format!(
        "node: {node}\n\
         admin: 127.0.0.1:0\n\
         policy_file: {}\n\
         policy_poll_interval: 50ms\n\
         shards: 2\n\
         receiver:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\n\
         exporter:\n  endpoint: {}\n  batch_timeout: 10ms\n  initial_interval: 50ms\n  max_interval: 200ms\n\
         shutdown:\n  grace: 0s\n  drain_timeout: 10s\n",
        policy_file.display(),
        backend.endpoint
    ))
    .unwrap();
    c.exporter.timeout = Duration::from_secs(5);
    c
}

/// A node running in the background.
pub struct Node {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub reload: sampler::ReloadHandle,
    pub name: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), SamplerError>>>,
}

impl Node {
    pub fn start(config: SamplerConfig) -> Node {
        Node::try_start(config).unwrap()
    }

    /// Like `start`, but a bind failure (a port taken meanwhile) is returned.
    pub fn try_start(config: SamplerConfig) -> Result<Node, SamplerError> {
        let name = config.node.clone();
        let sampler = Sampler::bind(config)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let node = Node {
            grpc: sampler.grpc_addr().unwrap(),
            http: sampler.http_addr().unwrap(),
            admin: sampler.admin_addr(),
            reload: sampler.reload_handle(),
            name,
            stop: Some(stop),
            task: None,
        };
        let task = tokio::spawn(sampler.serve(async move {
            let _ = stopped.await;
        }));
        Ok(Node {
            task: Some(task),
            ..node
        })
    }

    /// Completes the shutdown future (what SIGTERM does in the binary).
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers the shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> Result<(), SamplerError> {
        self.trigger_shutdown();
        self.task.take().unwrap().await.unwrap()
    }

    pub fn client(&self) -> OtlpClient {
        OtlpClient::new(&OtlpClientConfig::new(format!("http://{}", self.grpc))).unwrap()
    }

    pub async fn send(&self, specs: &[SpanSpec]) -> Result<(), ExportError> {
        self.client().export(request(specs)).await.map(|_| ())
    }

    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&http_get(self.admin, "/metrics").await.1)
    }

    /// Scrapes until `check` holds, at most `tries` times 50 ms apart;
    /// returns the last scrape either way.
    pub async fn metrics_until(&self, tries: usize, check: impl Fn(&Metrics) -> bool) -> Metrics {
        let mut m = self.metrics().await;
        for _ in 0..tries {
            if check(&m) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            m = self.metrics().await;
        }
        m
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, body).
pub async fn http_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        b"",
    )
    .await
}

/// POSTs an OTLP/protobuf request to `/v1/traces`: (status, headers+body).
pub async fn http_post_traces(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    http_request(
        addr,
        &format!(
            "POST /v1/traces HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body,
    )
    .await
}

/// Runs `f` with a timeout, failing the test rather than hanging it.
pub async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("finished in time")
}

/// Waits until `cond` holds, checking every 20 ms at most `tries` times.
pub async fn wait_for(tries: usize, cond: impl Fn() -> bool) -> bool {
    for _ in 0..tries {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
