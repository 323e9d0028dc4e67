//! Shared by the receiver component tests: a recording sink, a running
//! receiver on 127.0.0.1:0, clients, requests, a gzip bomb and metric reads.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proto::ExportTraceServiceRequest;
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, Refusal, Sink};
use proto::view::RequestView;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Records every batch it accepts, after parsing it with the zero-copy view
/// the way a node does. Can be told to refuse, or to hold requests until
/// released.
#[derive(Default)]
pub struct FakeSink {
    pub batches: Mutex<Vec<Batch>>,
    /// Logs batches, after the logs walk.
    pub log_batches: Mutex<Vec<Batch>>,
    /// Returned instead of accepting, while set.
    pub refuse_with: Mutex<Option<Refusal>>,
    /// When set, each call waits for a permit before answering.
    pub hold: Option<Arc<Semaphore>>,
    /// Notified once per call, on arrival.
    pub arrived: Notify,
}

impl FakeSink {
    pub fn holding(gate: Arc<Semaphore>) -> Self {
        FakeSink {
            hold: Some(gate),
            ..FakeSink::default()
        }
    }

    pub fn refuse(&self, refusal: Option<Refusal>) {
        *self.refuse_with.lock().expect("lock") = refusal;
    }

    pub fn batches(&self) -> Vec<Batch> {
        self.batches.lock().expect("lock").clone()
    }

    /// Every recorded batch, decoded.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.batches()
            .iter()
            .map(|b| prost::Message::decode(b.request.clone()).expect("recorded batches decode"))
            .collect()
    }
}

impl Sink for FakeSink {
    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        self.arrived.notify_one();
        if let Some(gate) = &self.hold {
            let _permit = gate.acquire().await.expect("gate open");
        }
        let refusal = self.refuse_with.lock().expect("lock").clone();
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let spans = RequestView::new(&batch.request).validate()?;
        self.batches.lock().expect("lock").push(batch);
        Ok(Accepted { spans })
    }

    async fn accept_logs(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let refusal = self.refuse_with.lock().expect("lock").clone();
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let spans = proto::logs::LogsView::new(&batch.request).validate()?;
        self.log_batches.lock().expect("lock").push(batch);
        Ok(Accepted { spans })
    }
}

/// A receiver serving on loopback until `stop`.
pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub sink: Arc<FakeSink>,
    pub metrics: PrometheusHandle,
    stop: Option<oneshot::Sender<()>>,
    pub server: JoinHandle<Result<(), proto::receiver::ReceiverError>>,
}

pub fn loopback_config(node: &str) -> ReceiverConfig {
    ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        http: Some("127.0.0.1:0".parse().expect("addr")),
        node: node.into(),
        ..ReceiverConfig::default()
    }
}

pub fn start(config: ReceiverConfig) -> Running {
    start_with(config, FakeSink::default())
}

pub fn start_with(config: ReceiverConfig, sink: FakeSink) -> Running {
    let metrics = proto::admin::install_metrics();
    let receiver = Receiver::bind(config).expect("binds on loopback");
    let grpc = receiver.grpc_addr().expect("grpc enabled");
    let http = receiver.http_addr().expect("http enabled");
    let sink = Arc::new(sink);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(receiver.serve(sink.clone(), async move {
        let _ = stopped.await;
    }));
    Running {
        grpc,
        http,
        sink,
        metrics,
        stop: Some(stop),
        server,
    }
}

impl Running {
    /// Starts a graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A counter or gauge as the Prometheus endpoint renders it; 0 if absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics.render(), name, labels)
    }

    pub fn requests(&self, protocol: &str, result: &str) -> f64 {
        self.metric(
            "tailgate_requests_total",
            &[("protocol", protocol), ("result", result)],
        )
    }

    pub fn spans_received(&self, protocol: &str) -> f64 {
        self.metric("tailgate_spans_received_total", &[("protocol", protocol)])
    }
}

/// Sums the series `name{...}` whose labels include `labels`, in Prometheus
/// text; 0 if there is no such series.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once("} ") {
                Some(parts) => parts,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let found: BTreeMap<&str, &str> = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            sum += value
                .trim()
                .parse::<f64>()
                .expect("metric value is a number");
        }
    }
    sum
}

pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// A request with `spans` spans of one trace, with a resource, a scope,
/// attributes and an error status on the first span.
pub fn sample_request(spans: usize, seed: u8) -> ExportTraceServiceRequest {
    let trace_id = vec![seed; 16];
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: trace_id.clone(),
            span_id: vec![seed, (i + 1) as u8, 0, 0, 0, 0, 0, 1],
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                vec![seed, 1, 0, 0, 0, 0, 0, 1]
            },
            name: format!("span-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_500_000_000 + i as u64,
            attributes: vec![
                kv("index", any_value::Value::IntValue(i as i64)),
                kv("route", any_value::Value::StringValue("/cart".into())),
            ],
            status: (i == 0).then(|| Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("checkout".into()),
                )],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// A gzip stream that inflates to `mib` MiB of zeros, built without ever
/// holding (or compressing) more than 1 MiB: one compressed MiB, flushed so
/// it stands alone, repeated. Compressed size is about 1 KiB per MiB.
pub fn gzip_bomb(mib: u32) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(64 * 1024);
    deflate
        .compress_vec(&zeros, &mut block, FlushCompress::Full)
        .expect("deflate in memory");
    assert_eq!(
        deflate.total_in(),
        zeros.len() as u64,
        "one call takes the MiB"
    );
    let mut end = Vec::with_capacity(64);
    deflate
        .compress_vec(&[], &mut end, FlushCompress::Finish)
        .expect("deflate in memory");
    let mut crc_mib = Crc::new();
    crc_mib.update(&zeros);
    let mut crc = Crc::new();
    for _ in 0..mib {
        crc.combine(&crc_mib);
    }
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..mib {
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&end);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(mib.wrapping_shl(20)).to_le_bytes());
    out
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTP/2 with prior knowledge (h2c), as a gRPC client would speak.
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct HttpReply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub async fn post(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpReply {
    let mut req = http::Request::post(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("valid request");
    let res = client.request(req).await.expect("server answers");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    HttpReply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn protobuf(request: &ExportTraceServiceRequest) -> Vec<u8> {
    prost::Message::encode_to_vec(request)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).expect("in memory");
    enc.finish().expect("in memory")
}

/// A good OTLP/HTTP protobuf export succeeds and reaches the sink.
pub async fn assert_http_still_accepts(running: &Running, client: &HttpClient) {
    let before = running.sink.batches().len();
    let request = sample_request(2, 0x77);
    let reply = post(
        client,
        running.http,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        protobuf(&request),
    )
    .await;
    assert_eq!(
        reply.status,
        http::StatusCode::OK,
        "good request after a bad one"
    );
    assert_eq!(running.sink.batches().len(), before + 1);
}

/// Runs `f` with a timeout so a hung server fails the test instead of
/// hanging it. Not a timing assertion: the bound is generous.
pub async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), f)
        .await
        .expect("finished within 60 s")
}
