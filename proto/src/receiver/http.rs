//! OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs` over HTTP/1.1 and h2c.
//!
//! Bodies are `application/x-protobuf` or `application/json` (converted once
//! to protobuf), optionally `Content-Encoding: gzip`. Sizes are bounded at
//! every step: a declared `Content-Length` over the limit is refused before
//! reading, the body stream is cut at the limit, and decompression reads at
//! most `limit + 1` bytes, so a gzip bomb costs at most the limit in memory.
//! Responses follow the OTLP/HTTP spec: an `ExportTraceServiceResponse` on
//! success, a `google.rpc.Status` on failure, both in the request's format.
//!
//! Connections are served by hyper directly (not `axum::serve`) so that
//! they can be TLS and bounded in number ([`super::conn`]), and so that a
//! client gets `read_timeout` to send its headers (HTTP/1; then the
//! connection is closed) and again its body (then 408).

use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{
    CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use ::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use tonic::Code;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use super::conn::{self, AcceptConfig};
use super::{
    ClusterMark, Outcome, Protocol, ReceiverError, Refusal, Shared, Signal, Sink, retry_after_secs,
};
use crate::ExportTraceServiceResponse;

/// The OTLP/HTTP traces path.
pub const TRACES_PATH: &str = "/v1/traces";
/// The OTLP/HTTP logs path.
pub const LOGS_PATH: &str = "/v1/logs";

/// Bodies larger than this are decompressed and converted on the blocking
/// pool rather than on a runtime worker (a 16 MiB inflate takes tens of ms).
const INLINE_DECODE_BYTES: usize = 64 * 1024;

pub(super) async fn serve<S: Sink>(
    socket: std::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared<S>>,
    accept: AcceptConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let listener =
        tokio::net::TcpListener::from_std(socket).map_err(|source| ReceiverError::Bind {
            protocol: Protocol::Http,
            addr,
            source,
        })?;
    let read_timeout = shared.limits.read_timeout;
    let lifetime = shared.limits.lifetime;
    let app = Router::new()
        .route(TRACES_PATH, post(export::<S>))
        .route(LOGS_PATH, post(export_logs::<S>))
        // We bound the body ourselves, with the configured limit and a 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared);
    let service = TowerToHyperService::new(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    if let Some((interval, timeout)) = lifetime.keepalive {
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout);
    }
    // Every connection holds a receiver; `closed()` says when all are gone.
    let (stop, stopping) = watch::channel(false);
    let mut ready = conn::accept(listener, accept);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = ready.recv() => conn,
            () = &mut shutdown => break,
        };
        let Some(Ok(conn)) = conn else {
            // The accept task ended: nothing more will come.
            break;
        };
        let connection = builder
            .serve_connection(TokioIo::new(conn), service.clone())
            .into_owned();
        let mut stop_rx = stopping.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let aged = async {
                match lifetime.max_age {
                    Some(age) => tokio::time::sleep(age).await,
                    None => std::future::pending().await,
                }
            };
            let mut aged = std::pin::pin!(aged);
            let mut closing = false;
            loop {
                tokio::select! {
                    // A client that goes away mid-request is not our error.
                    _ = &mut connection => break,
                    () = &mut aged, if !closing => {
                        // HTTP/2: GOAWAY; HTTP/1: close after the request
                        // in flight. Cut at the hard limit (conn.rs).
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = stop_rx.wait_for(|stop| *stop), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    // Stop accepting, let requests in flight be answered, close idle
    // connections.
    drop(ready);
    drop(stopping);
    let _ = stop.send(true);
    stop.closed().await;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// A refusal decided by the receiver or the node, ready to become a response.
struct Failure {
    outcome: Outcome,
    status: StatusCode,
    code: Code,
    message: String,
    retry_after: Option<Duration>,
    /// The request body was not read to its end: on HTTP/1.1 the connection
    /// cannot carry another request.
    unread_body: bool,
    /// The node refused it, and `Shared::deliver` counted that already.
    counted: bool,
}

impl Failure {
    fn new(outcome: Outcome, status: StatusCode, code: Code, message: String) -> Self {
        Failure {
            outcome,
            status,
            code,
            message,
            retry_after: None,
            unread_body: false,
            counted: false,
        }
    }

    fn invalid(message: String) -> Self {
        Failure::new(
            Outcome::Invalid,
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            message,
        )
    }

    fn too_large(message: String) -> Self {
        Failure::new(
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            message,
        )
    }

    fn unsupported(message: String) -> Self {
        Failure::new(
            Outcome::UnsupportedMediaType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Unimplemented,
            message,
        )
    }

    fn unauthenticated(message: String) -> Self {
        Failure::new(
            Outcome::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            message,
        )
    }

    fn timed_out(message: String) -> Self {
        Failure::new(
            Outcome::TimedOut,
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            message,
        )
    }

    fn unread(mut self) -> Self {
        self.unread_body = true;
        self
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure {
            outcome: Outcome::from(&refusal),
            status: refusal.http_status(),
            code: refusal.grpc_code(),
            retry_after: refusal.retry_after(),
            message: refusal.to_string(),
            unread_body: false,
            counted: true,
        }
    }
}

async fn export<S: Sink>(State(shared): State<Arc<Shared<S>>>, req: Request) -> Response {
    respond(&shared, req, Signal::Traces).await
}

async fn export_logs<S: Sink>(State(shared): State<Arc<Shared<S>>>, req: Request) -> Response {
    respond(&shared, req, Signal::Logs).await
}

async fn respond<S: Sink>(shared: &Shared<S>, req: Request, signal: Signal) -> Response {
    let version = req.version();
    let format = format(req.headers());
    match receive(shared, req, signal).await {
        Ok(()) => success(format.unwrap_or(Format::Protobuf)),
        Err(failure) => {
            if !failure.counted {
                shared.metrics.count(failure.outcome);
            }
            failure_response(failure, format.unwrap_or(Format::Json), version)
        }
    }
}

async fn receive<S: Sink>(shared: &Shared<S>, req: Request, signal: Signal) -> Result<(), Failure> {
    let max = shared.max_request_bytes;
    let (parts, body) = req.into_parts();
    // Credentials before anything else: an unauthenticated client learns
    // nothing about what the node would accept.
    shared
        .authenticate(|name| parts.headers.get(name).map(|v| v.as_bytes()))
        .map_err(|message| Failure::unauthenticated(message).unread())?;
    let Some(format) = format(&parts.headers) else {
        let found = parts
            .headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return Err(Failure::unsupported(format!(
            "Content-Type {found:?} is not supported: use application/x-protobuf or application/json"
        ))
        .unread());
    };
    let encoding = encoding(&parts.headers).map_err(|e| Failure::unsupported(e).unread())?;
    let mark = ClusterMark::from_headers(|name| parts.headers.get(name).map(|v| v.as_bytes()));
    if let Some(len) = content_length(&parts.headers)
        && len > max as u64
    {
        return Err(Failure::too_large(format!(
            "body of {len} bytes is over the {max}-byte limit"
        ))
        .unread());
    }
    // Without a Content-Length (chunked, h2), the stream is cut at the limit.
    let read_timeout = shared.limits.read_timeout;
    let collected = tokio::time::timeout(read_timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| {
            Failure::timed_out(format!(
                "the body did not arrive within {read_timeout:?} (read_timeout)"
            ))
            .unread()
        })?;
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Failure::too_large(format!("body is over the {max}-byte limit")).unread());
        }
        Err(e) => return Err(Failure::invalid(format!("reading the body: {e}"))),
    };
    let request = if body.len() <= INLINE_DECODE_BYTES {
        decode(body, encoding, format, signal, max)?
    } else {
        tokio::task::spawn_blocking(move || decode(body, encoding, format, signal, max))
            .await
            .map_err(|e| {
                Failure::new(
                    Outcome::Invalid,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    format!("decoding the body: {e}"),
                )
            })??
    };
    shared
        .deliver(request, Protocol::Http, signal, mark)
        .await
        .map(|_| ())
        .map_err(Failure::from)
}

/// Decompresses and converts the body to protobuf bytes. CPU-bound.
fn decode(
    body: Bytes,
    encoding: Encoding,
    format: Format,
    signal: Signal,
    max: usize,
) -> Result<Bytes, Failure> {
    let body = match encoding {
        Encoding::Identity => body,
        Encoding::Gzip => gunzip(&body, max)?,
    };
    match format {
        Format::Protobuf => Ok(body),
        Format::Json => match signal {
            Signal::Traces => crate::json::to_protobuf(&body),
            Signal::Logs => crate::json::logs_to_protobuf(&body),
        }
        .map(Bytes::from)
        .map_err(|e| Failure::invalid(e.to_string())),
    }
}

/// Inflates at most `max + 1` bytes: one past the limit proves the body is
/// too large without inflating the rest of it.
fn gunzip(compressed: &[u8], max: usize) -> Result<Bytes, Failure> {
    let limit = max.saturating_add(1);
    // Real OTLP gzips by 5-10x; start there and let the Vec grow.
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(8).min(limit));
    // Multi: a gzip body may be several concatenated members.
    MultiGzDecoder::new(compressed)
        .take(limit as u64)
        .read_to_end(&mut out)
        .map_err(|e| Failure::invalid(format!("gzip body does not decompress: {e}")))?;
    if out.len() > max {
        return Err(Failure::too_large(format!(
            "decompressed body is over the {max}-byte limit"
        )));
    }
    Ok(Bytes::from(out))
}

fn format(headers: &HeaderMap) -> Option<Format> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    // Parameters (`; charset=utf-8`) do not change the format.
    let essence = value.split(';').next()?.trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf") {
        Some(Format::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Some(Format::Json)
    } else {
        None
    }
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let name = value.to_str().map(str::trim).unwrap_or_default();
    if name.is_empty() || name.eq_ignore_ascii_case("identity") {
        Ok(Encoding::Identity)
    } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
        Ok(Encoding::Gzip)
    } else {
        Err(format!(
            "Content-Encoding {:?} is not supported: use gzip or identity",
            String::from_utf8_lossy(value.as_bytes())
        ))
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn success(format: Format) -> Response {
    match format {
        Format::Protobuf => (
            [(CONTENT_TYPE, "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        // The default response has no fields set: `{}` in OTLP/JSON.
        Format::Json => ([(CONTENT_TYPE, "application/json")], "{}").into_response(),
    }
}

fn failure_response(failure: Failure, format: Format, version: Version) -> Response {
    let status = tonic_types::Status {
        code: failure.code as i32,
        message: failure.message,
        details: Vec::new(),
    };
    let mut response = match format {
        Format::Protobuf => (
            failure.status,
            [(CONTENT_TYPE, "application/x-protobuf")],
            status.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            failure.status,
            [(CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": status.code, "message": status.message}).to_string(),
        )
            .into_response(),
    };
    let headers = response.headers_mut();
    if let Some(delay) = failure.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(delay)));
    }
    if failure.status == StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    // HTTP/2 streams are independent; an HTTP/1.1 connection with an unread
    // body is not, so tell the client not to reuse it.
    if failure.unread_body && version <= Version::HTTP_11 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    ::http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn content_types_with_parameters_and_any_case_are_recognised() {
        let ct = |v| format(&headers(&[("content-type", v)]));
        assert_eq!(ct("application/x-protobuf"), Some(Format::Protobuf));
        assert_eq!(ct("Application/JSON; charset=utf-8"), Some(Format::Json));
        assert_eq!(ct("application/protobuf"), None);
        assert_eq!(ct("text/plain"), None);
        assert_eq!(format(&HeaderMap::new()), None);
    }

    #[test]
    fn only_gzip_and_identity_encodings_are_accepted() {
        let ce = |v| encoding(&headers(&[("content-encoding", v)]));
        assert_eq!(ce("gzip"), Ok(Encoding::Gzip));
        assert_eq!(ce("identity"), Ok(Encoding::Identity));
        assert_eq!(encoding(&HeaderMap::new()), Ok(Encoding::Identity));
        assert!(ce("br").is_err());
        assert!(ce("zstd").is_err());
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("in memory");
        enc.finish().expect("in memory")
    }

    #[test]
    fn gunzip_stops_one_byte_past_the_limit() {
        let data = vec![7u8; 1000];
        let body = gzip(&data);
        assert_eq!(gunzip(&body, 1000).ok(), Some(Bytes::from(data)));
        let err = gunzip(&body, 999).expect_err("over the limit");
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.outcome, Outcome::TooLarge);
    }

    #[test]
    fn gunzip_reads_concatenated_members() {
        let mut body = gzip(b"abc");
        body.extend(gzip(b"def"));
        assert_eq!(gunzip(&body, 100).ok(), Some(Bytes::from_static(b"abcdef")));
    }

    #[test]
    fn corrupt_gzip_is_a_bad_request() {
        let err = gunzip(b"\x1f\x8b\x08garbage", 100).expect_err("corrupt");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }
}
