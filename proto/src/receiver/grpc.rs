//! OTLP/gRPC: the TraceService and LogsService routes, whose request body
//! reaches the node as `Bytes`, never decoded. Both services are one
//! implementation told its [`Signal`]; the two Export responses have the
//! same encoding (an empty message, or `partial_success` as field 1), so
//! one response type serves both.
//!
//! An uncompressed request is read here ([`unary_identity`]): its message
//! is a slice of the DATA frame it arrived in. A compressed one goes
//! through tonic with the pass-through codec: tonic frames, decompresses
//! (gzip, zstd) and bounds the message: a frame
//! longer than `max_request_bytes` is refused before it is buffered, and
//! decompression stops at `max_request_bytes` (a gzip bomb is never
//! inflated past it). Those refusals happen before our handler runs; the
//! service below recognises them to count them and to give them OTLP
//! semantics (see [`refused_before_handler`]).
//!
//! Before that, the service checks the request's credentials (if the
//! receiver has `auth`), and the body must arrive within `read_timeout` of
//! the headers ([`DeadlineBody`]): a client that trickles its body gets
//! DEADLINE_EXCEEDED instead of holding a stream open.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{HeaderValue, Request, Response};
use bytes::Bytes;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::BoxFuture;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

use super::conn::{self, AcceptConfig};
use super::{ClusterMark, Outcome, Protocol, ReceiverError, Shared, Signal, Sink};
use crate::ExportTraceServiceResponse;
use crate::codec::{EXPORT_PATH, LOGS_EXPORT_PATH, LOGS_SERVICE_NAME, SERVICE_NAME, ServerCodec};

pub(super) async fn serve<S: Sink>(
    socket: std::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared<S>>,
    accept: AcceptConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReceiverError> {
    let listener =
        tokio::net::TcpListener::from_std(socket).map_err(|source| ReceiverError::Bind {
            protocol: Protocol::Grpc,
            addr,
            source,
        })?;
    // Connections come bounded in number, TLS done, TCP_NODELAY set.
    let mut ready = conn::accept(listener, accept);
    let incoming = futures::stream::poll_fn(move |cx| ready.poll_recv(cx));
    let lifetime = shared.limits.lifetime;
    // HTTP/2 flow control sized for OTLP requests (a 512-span request is
    // about 100 KB): with the 64 KiB default every such request stalls
    // once for a WINDOW_UPDATE round trip and arrives in 16 KiB frames,
    // each a wake-up of both ends at low load. Bodies are read at once and
    // bounded by `max_request_bytes`, so a larger window holds no more.
    let mut server = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    if let Some(age) = lifetime.max_age {
        // A GOAWAY at that age; requests in flight finish (the connection
        // itself is cut at `hard_limit`, in conn.rs: tonic's own grace
        // closes without a GOAWAY).
        server = server.max_connection_age(age);
    }
    if let Some((interval, timeout)) = lifetime.keepalive {
        server = server
            .http2_keepalive_interval(Some(interval))
            .http2_keepalive_timeout(Some(timeout));
    }
    server
        .add_service(TraceService {
            shared: shared.clone(),
            signal: Signal::Traces,
        })
        .add_service(LogsService(TraceService {
            shared,
            signal: Signal::Logs,
        }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| ReceiverError::Grpc { addr, source })
}

/// Per stream: a whole request of a few thousand spans without a pause.
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// Per connection: a few such requests at once.
const CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// The largest DATA frame a client may send (HTTP/2 allows up to 16 MiB).
const MAX_FRAME_BYTES: u32 = 256 * 1024;

/// The TraceService, as a tower service (the shape tonic's generated server
/// has), over the pass-through codec.
struct TraceService<S> {
    shared: Arc<Shared<S>>,
    signal: Signal,
}

impl<S> Clone for TraceService<S> {
    fn clone(&self) -> Self {
        TraceService {
            shared: self.shared.clone(),
            signal: self.signal,
        }
    }
}

impl<S> NamedService for TraceService<S> {
    const NAME: &'static str = SERVICE_NAME;
}

/// The LogsService: the same service under the logs name (tonic routes by
/// a type's constant name).
struct LogsService<S>(TraceService<S>);

impl<S> Clone for LogsService<S> {
    fn clone(&self) -> Self {
        LogsService(self.0.clone())
    }
}

impl<S> NamedService for LogsService<S> {
    const NAME: &'static str = LOGS_SERVICE_NAME;
}

impl<S: Sink> tower::Service<Request<Body>> for LogsService<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.0.call(req)
    }
}

impl<S: Sink> tower::Service<Request<Body>> for TraceService<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = match self.signal {
            Signal::Traces => EXPORT_PATH,
            Signal::Logs => LOGS_EXPORT_PATH,
        };
        if req.uri().path() != path {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let shared = self.shared.clone();
        let signal = self.signal;
        if let Err(message) =
            shared.authenticate(|name| req.headers().get(name).map(|v| v.as_bytes()))
        {
            shared.metrics.count(Outcome::Unauthenticated);
            return Box::pin(async move { Ok(Status::unauthenticated(message).into_http()) });
        }
        let expired = Arc::new(AtomicBool::new(false));
        let req = req.map(|body| {
            Body::new(DeadlineBody::new(
                body,
                shared.limits.read_timeout,
                expired.clone(),
            ))
        });
        if is_identity(req.headers()) {
            return Box::pin(
                async move { Ok(unary_identity(shared, signal, req, &expired).await) },
            );
        }
        Box::pin(async move {
            let max = shared.max_request_bytes;
            let handled = Arc::new(AtomicBool::new(false));
            let export = Export {
                shared: shared.clone(),
                handled: handled.clone(),
                signal,
            };
            let mut grpc = Grpc::new(ServerCodec::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max);
            let mut response = grpc.unary(export, req).await;
            if !handled.load(Ordering::Acquire) {
                shared
                    .metrics
                    .count(refused_unread(&mut response, &expired));
            }
            Ok(response)
        })
    }
}

/// Whether the request's message travels uncompressed (no `grpc-encoding`,
/// or `identity`): such requests are read by [`unary_identity`], the others
/// by tonic's codec, which decompresses and bounds them.
fn is_identity(headers: &::http::HeaderMap) -> bool {
    headers
        .get("grpc-encoding")
        .is_none_or(|v| v.as_bytes() == b"identity")
}

/// A unary Export whose message is uncompressed, read without tonic's
/// decoder. tonic copies every body into a buffer of its own, grown from
/// 8 KiB to the message's length (a reallocation and, past glibc's mmap
/// threshold, fresh pages for every request): a tenth of a sampler's CPU
/// at 100k spans/s in the profile of issue 19. A request arrives in one
/// DATA frame here (frames of up to [`MAX_FRAME_BYTES`]), or in one after
/// a frame of its prefix alone, so its message is a slice of that frame,
/// not a copy; a message split over frames is copied once, into a buffer
/// of its exact length. The answers are tonic's, as
/// [`refused_before_handler`] rewrites them: a message over
/// `max_request_bytes` is RESOURCE_EXHAUSTED, read from its length prefix
/// before it is buffered; a body with no whole message, or a compressed
/// flag without an encoding, is INVALID_ARGUMENT; a body later than
/// `read_timeout` is DEADLINE_EXCEEDED.
async fn unary_identity<S: Sink>(
    shared: Arc<Shared<S>>,
    signal: Signal,
    req: Request<Body>,
    expired: &AtomicBool,
) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let message = match read_message(&mut body, shared.max_request_bytes).await {
        Ok(message) => message,
        Err(status) => {
            let mut response = status.into_http();
            shared.metrics.count(refused_unread(&mut response, expired));
            return response;
        }
    };
    let mark = ClusterMark::from_headers(|name| parts.headers.get(name).map(|v| v.as_bytes()));
    match shared.deliver(message, Protocol::Grpc, signal, mark).await {
        Ok(_) => ok_response(),
        Err(refusal) => refusal.grpc_status().into_http(),
    }
}

/// The gRPC frame header: a compressed flag and the message's length.
const FRAME_HEADER: usize = 5;

/// Reads the body of a unary call to its end and returns its first
/// message (bytes after it are read and dropped, as tonic does).
async fn read_message(body: &mut Body, max: usize) -> Result<Bytes, Status> {
    use http_body_util::BodyExt;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut have = 0usize;
    // FRAME_HEADER + the message's length, once the header is read.
    let mut end: Option<usize> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() || end.is_some_and(|end| have >= end) {
            continue;
        }
        have += data.len();
        chunks.push(data);
        if end.is_none() && have >= FRAME_HEADER {
            let mut header = [0u8; FRAME_HEADER];
            gather(&chunks, 0..FRAME_HEADER, &mut &mut header[..]);
            match header[0] {
                0 => {}
                1 => {
                    return Err(Status::invalid_argument(
                        "protocol error: a message with the compressed flag but no grpc-encoding",
                    ));
                }
                f => {
                    return Err(Status::invalid_argument(format!(
                        "protocol error: compressed flag {f} (valid flags are 0 and 1)"
                    )));
                }
            }
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if len > max {
                return Err(Status::resource_exhausted(format!(
                    "the message is {len} bytes, over the limit of {max} bytes (max_request_bytes)"
                )));
            }
            end = Some(FRAME_HEADER + len);
        }
    }
    let Some(end) = end else {
        return Err(Status::invalid_argument(match have {
            0 => "missing request message",
            _ => "the request body ends inside its gRPC frame header",
        }));
    };
    if have < end {
        return Err(Status::invalid_argument(format!(
            "the request body ends after {} of its message's {} bytes",
            have - FRAME_HEADER,
            end - FRAME_HEADER
        )));
    }
    // The message whole in one frame: with its prefix (most clients), or
    // after a frame of the prefix alone (our exporter, which sends the
    // prefix and the message as two chunks so as not to copy the message).
    let mut start = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        if start <= FRAME_HEADER && start + chunk.len() >= end {
            return Ok(chunks
                .swap_remove(i)
                .slice(FRAME_HEADER - start..end - start));
        }
        start += chunk.len();
        if start > FRAME_HEADER {
            break;
        }
    }
    let mut message = bytes::BytesMut::with_capacity(end - FRAME_HEADER);
    gather(&chunks, FRAME_HEADER..end, &mut message);
    Ok(message.freeze())
}

/// Copies bytes `range` of the body the `chunks` make, in order, into `out`.
fn gather(chunks: &[Bytes], range: std::ops::Range<usize>, out: &mut impl bytes::BufMut) {
    let mut start = 0;
    for chunk in chunks {
        let end = start + chunk.len();
        let (from, to) = (range.start.max(start), range.end.min(end));
        if from < to {
            out.put_slice(&chunk[from - start..to - start]);
        }
        start = end;
    }
}

/// A successful Export's answer, as tonic writes it: the empty response
/// message in one frame, then `grpc-status: 0` in the trailers.
fn ok_response() -> Response<Body> {
    let mut trailers = ::http::HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(
            &[0; FRAME_HEADER],
        ))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let mut response = Response::new(Body::new(http_body_util::StreamBody::new(
        futures::stream::iter(frames),
    )));
    response.headers_mut().insert(
        ::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The outcome of a request refused before its message was read whole
/// (by tonic or by [`read_message`]), its answer rewritten where needed: a
/// body later than `read_timeout` is DEADLINE_EXCEEDED, the rest as
/// [`refused_before_handler`] says.
fn refused_unread(response: &mut Response<Body>, expired: &AtomicBool) -> Outcome {
    if expired.load(Ordering::Acquire) {
        set_code(response, Code::DeadlineExceeded);
        Outcome::TimedOut
    } else {
        refused_before_handler(response)
    }
}

/// Classifies, and where needed rewrites, a status tonic returned before the
/// handler ran (the request was never decoded).
///
/// - OUT_OF_RANGE: the frame is longer than the limit. OTLP clients retry
///   OUT_OF_RANGE, and the same request would fail forever, so it becomes
///   RESOURCE_EXHAUSTED without RetryInfo, which they do not retry.
/// - RESOURCE_EXHAUSTED: decompression passed the limit (a bomb).
/// - UNIMPLEMENTED: a `grpc-encoding` we do not accept.
/// - INTERNAL: corrupt compressed data or no message at all; the client's
///   fault, so INVALID_ARGUMENT.
fn refused_before_handler(response: &mut Response<Body>) -> Outcome {
    let code = response
        .headers()
        .get(Status::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
        .unwrap_or(Code::Unknown);
    let (outcome, rewrite) = match code {
        Code::OutOfRange => (Outcome::TooLarge, Some(Code::ResourceExhausted)),
        Code::ResourceExhausted => (Outcome::TooLarge, None),
        Code::Unimplemented => (Outcome::UnsupportedMediaType, None),
        Code::Internal => (Outcome::Invalid, Some(Code::InvalidArgument)),
        _ => (Outcome::Invalid, None),
    };
    if let Some(code) = rewrite {
        response
            .headers_mut()
            .insert(Status::GRPC_STATUS, HeaderValue::from(code as i32));
    }
    outcome
}

fn set_code(response: &mut Response<Body>, code: Code) {
    response
        .headers_mut()
        .insert(Status::GRPC_STATUS, HeaderValue::from(code as i32));
}

/// A request body that fails once `timeout` has passed since the request's
/// headers arrived, so a body trickled in byte by byte cannot hold a stream
/// (and its buffer) open for ever. `expired` tells the service why the
/// request failed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration, expired: Arc<AtomicBool>) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            expired,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the request body did not arrive within {:?} (read_timeout)",
                this.timeout
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One Export call: hands the bytes to the node.
struct Export<S> {
    shared: Arc<Shared<S>>,
    /// Set when tonic decoded the request and called us; if it stays unset,
    /// tonic refused the request itself.
    handled: Arc<AtomicBool>,
    signal: Signal,
}

impl<S: Sink> UnaryService<Bytes> for Export<S> {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.handled.store(true, Ordering::Release);
        let shared = self.shared.clone();
        let signal = self.signal;
        let metadata = request.metadata();
        let mark = ClusterMark::from_headers(|name| metadata.get(name).map(|v| v.as_bytes()));
        Box::pin(async move {
            match shared
                .deliver(request.into_inner(), Protocol::Grpc, signal, mark)
                .await
            {
                Ok(_) => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
                Err(refusal) => Err(refusal.grpc_status()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[Bytes]) -> Body {
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(c.clone())))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    /// A message whole in one frame is a slice of that frame, whether its
    /// prefix came in the same frame or in one before it; one split over
    /// frames is put together.
    #[tokio::test]
    async fn a_message_whole_in_one_frame_is_not_copied() {
        let message = Bytes::from_static(b"\x0a\x03abc\x12\x01z");
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&(message.len() as u32).to_be_bytes());
        let mut framed = prefix.clone();
        framed.extend_from_slice(&message);
        let framed = Bytes::from(framed);

        let got = read_message(&mut body(std::slice::from_ref(&framed)), 1 << 20)
            .await
            .unwrap();
        assert_eq!(got, message);
        assert_eq!(got.as_ptr(), framed[FRAME_HEADER..].as_ptr());

        let apart = [Bytes::from(prefix.clone()), message.clone()];
        let got = read_message(&mut body(&apart), 1 << 20).await.unwrap();
        assert_eq!(got, message);
        assert_eq!(got.as_ptr(), message.as_ptr());

        let cut = [framed.slice(..7), framed.slice(7..)];
        let got = read_message(&mut body(&cut), 1 << 20).await.unwrap();
        assert_eq!(got, message);
    }
}
