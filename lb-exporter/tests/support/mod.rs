//! Test doubles and helpers: a recording OTLP/gRPC sink that can be killed
//! like a crashed process, an in-process DNS server whose records change
//! while the test runs, request builders and metric readers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub mod dns;
// Not every test binary that includes this module asks DNS.
#[allow(unused_imports)]
pub use dns::FakeDns;

/// How a sink answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// A non-OK status; with a RetryInfo delay if given.
    Fail(Code, Option<Duration>),
    /// Never answers (until the sink is killed).
    Stall,
    /// Takes the spans, answers OK after this long.
    Slow(Duration),
}

#[derive(Debug, Default)]
struct SinkState {
    script: VecDeque<Answer>,
    /// After the script: how to answer.
    then: Option<Answer>,
    /// (trace ID, span ID) of every span in a request answered OK.
    spans: Vec<([u8; 16], u64)>,
    /// Requests seen, answered or not (probes included).
    requests: usize,
    /// Spans in requests that got no answer (stalled).
    stalled_spans: usize,
}

/// A recording OTLP/gRPC endpoint. `kill` drops its listener and every
/// connection at once, as a crashed process would.
#[derive(Clone)]
pub struct FakeSink {
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
    tasks: Arc<Mutex<Option<JoinSet<()>>>>,
}

#[derive(Clone)]
struct Service(Arc<Mutex<SinkState>>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = span_keys(request.get_ref());
        let answer = {
            let mut state = self.0.lock().unwrap();
            state.requests += 1;
            let answer = state
                .script
                .pop_front()
                .or(state.then)
                .unwrap_or(Answer::Ok);
            match answer {
                Answer::Ok | Answer::Slow(_) => state.spans.extend(spans),
                Answer::Stall => state.stalled_spans += spans.len(),
                Answer::Fail(..) => {}
            }
            answer
        };
        match answer {
            Answer::Ok => Ok(Response::new(ExportTraceServiceResponse::default())),
            Answer::Fail(code, None) => Err(Status::new(code, "scripted failure")),
            Answer::Fail(code, Some(delay)) => Err(Status::with_error_details(
                code,
                "scripted failure",
                ErrorDetails::with_retry_info(Some(delay)),
            )),
            Answer::Stall => std::future::pending().await,
            Answer::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Ok(Response::new(ExportTraceServiceResponse::default()))
            }
        }
    }
}

impl FakeSink {
    /// Serves on `addr` (port 0 for any).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<FakeSink> {
        let sink = FakeSink {
            addr,
            state: Arc::default(),
            tasks: Arc::default(),
        };
        sink.listen(addr)
            .await
            .map(|addr| FakeSink { addr, ..sink })
    }

    async fn listen(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let service =
            TowerToHyperService::new(TraceServiceServer::new(Service(self.state.clone())));
        let mut tasks = JoinSet::new();
        let connections: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let conns = connections.clone();
        tasks.spawn(async move {
            // Owns the connection tasks: aborting this task aborts them all.
            let _guard = AbortOnDrop(conns.clone());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = service.clone();
                conns.lock().unwrap().spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.tasks.lock().unwrap() = Some(tasks);
        Ok(addr)
    }

    /// Drops the listener and every open connection.
    pub fn kill(&self) {
        if let Some(mut tasks) = self.tasks.lock().unwrap().take() {
            tasks.abort_all();
        }
    }

    /// Serves again on the same address after `kill`.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.listen(self.addr).await.map(|_| ())
    }

    pub fn member(&self) -> String {
        self.addr.to_string()
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// How to answer once the script is used up.
    pub fn then(&self, answer: Answer) {
        self.state.lock().unwrap().then = Some(answer);
    }

    pub fn spans(&self) -> Vec<([u8; 16], u64)> {
        self.state.lock().unwrap().spans.clone()
    }

    pub fn span_count(&self) -> usize {
        self.state.lock().unwrap().spans.len()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    pub fn stalled_spans(&self) -> usize {
        self.state.lock().unwrap().stalled_spans
    }

    pub fn traces(&self) -> BTreeSet<[u8; 16]> {
        self.spans().into_iter().map(|(t, _)| t).collect()
    }
}

struct AbortOnDrop(Arc<Mutex<JoinSet<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.abort_all();
        }
    }
}

/// Binds one sink on each of `ips`, all on the same port.
pub async fn sinks_on_one_port(ips: &[&str]) -> Vec<FakeSink> {
    for _ in 0..20 {
        let first: IpAddr = ips[0].parse().unwrap();
        let Ok(a) = FakeSink::bind(SocketAddr::new(first, 0)).await else {
            continue;
        };
        let port = a.addr.port();
        let mut sinks = vec![a];
        for ip in &ips[1..] {
            match FakeSink::bind(SocketAddr::new(ip.parse().unwrap(), port)).await {
                Ok(s) => sinks.push(s),
                Err(_) => break,
            }
        }
        if sinks.len() == ips.len() {
            return sinks;
        }
        sinks.iter().for_each(FakeSink::kill);
    }
    panic!("no port free on all of {ips:?}");
}

fn span_keys(request: &ExportTraceServiceRequest) -> Vec<([u8; 16], u64)> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let trace: [u8; 16] = span.trace_id.as_slice().try_into().unwrap();
                let id = u64::from_be_bytes(span.span_id.as_slice().try_into().unwrap());
                out.push((trace, id));
            }
        }
    }
    out
}

/// Builds requests of traces with unique span IDs.
pub struct Traces {
    next_span: u64,
    seed: u64,
}

impl Traces {
    pub fn new(seed: u64) -> Self {
        Traces {
            next_span: seed << 32,
            seed: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    pub fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        for chunk in id.chunks_mut(8) {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            chunk.copy_from_slice(&self.seed.to_le_bytes());
        }
        id
    }

    /// One request: `spans_per_trace` spans of each trace, in two resource
    /// groups.
    pub fn request(&mut self, traces: &[[u8; 16]], spans_per_trace: usize) -> Bytes {
        let mut spans = Vec::new();
        for trace in traces {
            for _ in 0..spans_per_trace {
                self.next_span += 1;
                spans.push(Span {
                    trace_id: trace.to_vec(),
                    span_id: self.next_span.to_be_bytes().to_vec(),
                    name: "GET /checkout".into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_100_000_000,
                    ..Default::default()
                });
            }
        }
        let half = spans.len() / 2;
        let second = spans.split_off(half);
        let group = |service: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                service.into(),
                            ),
                        ),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![group("checkout", spans), group("payments", second)],
        }
        .encode_to_vec()
        .into()
    }

    /// A request of `n` new traces, `spans_per_trace` spans each; returns
    /// the request and its trace IDs.
    pub fn fresh(&mut self, n: usize, spans_per_trace: usize) -> (Bytes, Vec<[u8; 16]>) {
        let ids: Vec<[u8; 16]> = (0..n).map(|_| self.trace_id()).collect();
        (self.request(&ids, spans_per_trace), ids)
    }
}

/// Polls `cond` every 10 ms for at most `limit`; true if it came true.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let rounds = limit.as_millis() / 10;
    for _ in 0..rounds.max(1) {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Reads metrics from the process-wide recorder.
pub struct Scrape(String);

impl Scrape {
    pub fn now() -> Scrape {
        Scrape(proto::admin::install_metrics().render())
    }

    /// The sum over series of `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                all.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }
}

/// Label pairs for a node, plus extras.
pub fn node<'a>(node: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("node", node)];
    v.extend_from_slice(extra);
    v
}

/// Waits for `fut` at most `limit`.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .expect("did not finish in time")
}

/// Spans per sink, as a map from sink index to count (for messages).
pub fn per_sink(sinks: &[FakeSink]) -> BTreeMap<usize, usize> {
    sinks
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.span_count()))
        .collect()
}
