//! A scriptable OTLP/gRPC backend on 127.0.0.1:0 for the exporter tests,
//! and helpers to build requests and read metrics.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use proto::exporter::OtlpBatch;

/// How the backend answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Ok,
    /// A non-OK status, with a RetryInfo delay if given.
    Fail(Code, Option<Duration>),
    /// OK with `partial_success.rejected_spans`.
    Reject(i64),
    /// OK, after this long (tokio time).
    Slow(Duration),
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: ExportTraceServiceRequest,
    pub at: Instant,
    /// The request's `grpc-encoding` header.
    pub encoding: Option<String>,
    pub api_key: Option<String>,
    pub answer: Answer,
}

impl Received {
    pub fn span_ids(&self) -> Vec<u64> {
        span_ids(&self.request)
    }

    pub fn accepted(&self) -> bool {
        matches!(self.answer, Answer::Ok | Answer::Slow(_))
    }
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

/// Records every request; answers from its script, then OK.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    state: Arc<Mutex<State>>,
}

impl FakeBackend {
    /// Queues answers for the next requests, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Span IDs of every request answered OK, in arrival order.
    pub fn accepted_span_ids(&self) -> Vec<u64> {
        self.received()
            .iter()
            .filter(|r| r.accepted())
            .flat_map(|r| r.span_ids())
            .collect()
    }

    /// Serves the backend on 127.0.0.1:0; returns its `http://` endpoint.
    pub async fn serve(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }
}

#[tonic::async_trait]
impl TraceService for FakeBackend {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let encoding = header("grpc-encoding");
        let api_key = header("x-api-key");
        let answer = {
            let mut state = self.state.lock().unwrap();
            let answer = state.script.pop_front().unwrap_or(Answer::Ok);
            state.received.push(Received {
                request: request.get_ref().clone(),
                at: Instant::now(),
                encoding,
                api_key,
                answer,
            });
            answer
        };
        match answer {
            Answer::Ok => Ok(Response::new(ExportTraceServiceResponse::default())),
            Answer::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Ok(Response::new(ExportTraceServiceResponse::default()))
            }
            Answer::Reject(n) => Ok(Response::new(ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: n,
                    error_message: "span too old".into(),
                }),
            })),
            Answer::Fail(code, None) => Err(Status::new(code, "scripted failure")),
            Answer::Fail(code, Some(delay)) => Err(Status::with_error_details(
                code,
                "scripted failure",
                ErrorDetails::with_retry_info(Some(delay)),
            )),
        }
    }
}

/// A request with one span per ID (span_id = the ID, big-endian), each
/// padded with a `name` of `pad` bytes so tests can size requests.
pub fn request(ids: impl IntoIterator<Item = u64>, pad: usize) -> ExportTraceServiceRequest {
    let spans = ids
        .into_iter()
        .map(|id| Span {
            trace_id: vec![1; 16],
            span_id: id.to_be_bytes().to_vec(),
            name: "x".repeat(pad),
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// The encoded batch of [`request`].
pub fn batch(ids: impl IntoIterator<Item = u64>, pad: usize) -> OtlpBatch {
    let r = request(ids, pad);
    let spans = r.resource_spans[0].scope_spans[0].spans.len();
    OtlpBatch {
        request: Bytes::from(r.encode_to_vec()),
        spans,
    }
}

pub fn span_ids(request: &ExportTraceServiceRequest) -> Vec<u64> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap()))
        .collect()
}

/// The value of the sample `name{labels…}` in a Prometheus rendering, where
/// every `key="value"` in `labels` must appear; 0 if there is none.
pub fn metric(rendered: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    rendered
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Lets the runtime run other tasks until `done` holds, advancing paused
/// time by `step` per round; panics after `rounds` rounds.
pub async fn wait_until(rounds: usize, step: Duration, mut done: impl FnMut() -> bool) {
    for _ in 0..rounds {
        if done() {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("condition not reached after {rounds} rounds of {step:?}");
}
