//! One OTLP/gRPC `TraceService/Export` call, the request as encoded bytes.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use crate::codec::{ClientCodec, EXPORT_PATH, LOGS_EXPORT_PATH};
use crate::receiver::Signal;
use crate::tls::{ClientTls, ClientTlsConfig, TlsConnector, TlsError};

/// How request bodies are compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// Where and how to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpClientConfig {
    /// `http://host:port`, or `https://host:port` for TLS.
    pub endpoint: String,
    /// The longest one call may take, connecting included. Default 10 s.
    pub timeout: Duration,
    /// The longest a TCP connect may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Default none.
    pub compression: Compression,
    /// gRPC metadata sent with every call (e.g. an API key). Default none.
    pub headers: BTreeMap<String, String>,
    /// TLS settings; TLS is on when set or when the endpoint is `https://`
    /// (then with the system's roots). Default none.
    pub tls: Option<ClientTlsConfig>,
}

impl OtlpClientConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpClientConfig {
            endpoint: endpoint.into(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            compression: Compression::None,
            headers: BTreeMap::new(),
            tls: None,
        }
    }

    /// Checks what [`OtlpClient::new`] would refuse, without a runtime
    /// (TLS files are read).
    pub fn validate(&self) -> Result<(), ClientConfigError> {
        self.parts().map(|_| ())
    }

    /// The endpoint tonic dials (always `http://`: with TLS, our connector
    /// does the handshake), the metadata, and the TLS connector if any.
    fn parts(&self) -> Result<(Endpoint, MetadataMap, Option<TlsConnector>), ClientConfigError> {
        let bad_uri = |source| ClientConfigError::Endpoint {
            endpoint: self.endpoint.clone(),
            source,
        };
        let uri = Endpoint::from_shared(self.endpoint.clone())
            .map_err(bad_uri)?
            .uri()
            .clone();
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(ClientConfigError::Scheme {
                    endpoint: self.endpoint.clone(),
                });
            }
        };
        let Some(host) = uri.host() else {
            return Err(ClientConfigError::Scheme {
                endpoint: self.endpoint.clone(),
            });
        };
        let tls = match (&self.tls, https) {
            (Some(config), _) => Some(config.clone()),
            (None, true) => Some(ClientTlsConfig::default()),
            (None, false) => None,
        };
        let connector = tls
            .map(|config| {
                let tls = Arc::new(ClientTls::new(&config)?);
                TlsConnector::new(tls, host, true)
            })
            .transpose()
            .map_err(|source| ClientConfigError::Tls {
                endpoint: self.endpoint.clone(),
                source: Box::new(source),
            })?;
        let plain = match https {
            true => format!("http{}", &self.endpoint["https".len()..]),
            false => self.endpoint.clone(),
        };
        let endpoint = Endpoint::from_shared(plain).map_err(bad_uri)?;
        let mut headers = MetadataMap::new();
        for (name, value) in &self.headers {
            let key = AsciiMetadataKey::from_bytes(name.as_bytes())
                .map_err(|_| ClientConfigError::HeaderName { name: name.clone() })?;
            let value = AsciiMetadataValue::try_from(value.as_str())
                .map_err(|_| ClientConfigError::HeaderValue { name: name.clone() })?;
            headers.insert(key, value);
        }
        Ok((endpoint, headers, connector))
    }
}

/// A client configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("exporter endpoint {endpoint:?} is not a valid URI: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("exporter endpoint {endpoint:?} must be http://host:port or https://host:port")]
    Scheme { endpoint: String },
    #[error("exporter endpoint {endpoint:?}: {source}")]
    Tls {
        endpoint: String,
        // Boxed: rustls errors are large, and this is the rare path.
        #[source]
        source: Box<TlsError>,
    },
    #[error("exporter header {name:?} is not a valid gRPC metadata key")]
    HeaderName { name: String },
    #[error("exporter header {name:?} has a value that is not visible ASCII")]
    HeaderValue { name: String },
}

/// A call that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    /// The server answered with a non-OK status.
    #[error("export to {endpoint} failed: {code:?}: {message}")]
    Status {
        endpoint: Arc<str>,
        code: Code,
        message: String,
        /// The `google.rpc.RetryInfo` delay in the status details, if any.
        retry_after: Option<Duration>,
    },
    /// No connection could be made (refused, unreachable, connect timeout).
    #[error("export to {endpoint} failed: cannot connect: {message}")]
    Connect { endpoint: Arc<str>, message: String },
    /// The connection was lost during the call (the peer crashed or reset
    /// it): the request may or may not have arrived.
    #[error("export to {endpoint} failed: connection lost: {message}")]
    Disconnected { endpoint: Arc<str>, message: String },
    /// No answer within the per-request timeout.
    #[error("export to {endpoint} failed: no answer within {timeout:?}")]
    Timeout {
        endpoint: Arc<str>,
        timeout: Duration,
    },
}

impl ExportError {
    fn from_status(endpoint: Arc<str>, status: tonic::Status) -> Self {
        // tonic reports a failed connect as UNAVAILABLE with the connector's
        // error in the source chain; tell it apart from a server's answer.
        // A connection lost mid-call comes back as UNKNOWN "transport error"
        // with hyper's or the socket's error in the chain: the peer is gone
        // (member down, retryable), whether or not it got the request.
        let mut source = status.source();
        while let Some(err) = source {
            if err.downcast_ref::<tonic::ConnectError>().is_some() {
                return ExportError::Connect {
                    endpoint,
                    message: err.to_string(),
                };
            }
            if err.downcast_ref::<hyper::Error>().is_some()
                || err.downcast_ref::<std::io::Error>().is_some()
            {
                return ExportError::Disconnected {
                    endpoint,
                    message: err.to_string(),
                };
            }
            source = err.source();
        }
        ExportError::Status {
            endpoint,
            code: status.code(),
            message: status.message().to_owned(),
            retry_after: status.get_details_retry_info().and_then(|r| r.retry_delay),
        }
    }

    /// The endpoint the call went to.
    pub fn endpoint(&self) -> &str {
        match self {
            ExportError::Status { endpoint, .. }
            | ExportError::Connect { endpoint, .. }
            | ExportError::Disconnected { endpoint, .. }
            | ExportError::Timeout { endpoint, .. } => endpoint,
        }
    }

    /// The gRPC code, as a client library would report it.
    pub fn code(&self) -> Code {
        match self {
            ExportError::Status { code, .. } => *code,
            ExportError::Connect { .. } | ExportError::Disconnected { .. } => Code::Unavailable,
            ExportError::Timeout { .. } => Code::DeadlineExceeded,
        }
    }

    /// Whether the same request may succeed later, per the OTLP spec's
    /// retryable codes. RESOURCE_EXHAUSTED is retryable only with RetryInfo:
    /// without it the server says it cannot take this request at all.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Connect { .. }
            | ExportError::Disconnected { .. }
            | ExportError::Timeout { .. } => true,
            ExportError::Status {
                code, retry_after, ..
            } => match code {
                Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss => true,
                Code::ResourceExhausted => retry_after.is_some(),
                _ => false,
            },
        }
    }

    /// The server's requested delay before a retry (`google.rpc.RetryInfo`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the endpoint itself looks gone or stuck (refused, UNAVAILABLE,
    /// no answer in time), so a load balancer should route around it rather
    /// than retry it.
    pub fn is_member_down(&self) -> bool {
        matches!(self.code(), Code::Unavailable | Code::DeadlineExceeded)
    }
}

/// What a successful call answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportResponse {
    /// Spans the server accepted the request for but rejected
    /// (`partial_success.rejected_spans`). Never retried: the OTLP spec
    /// says the server will not accept them on a retry either.
    pub rejected_spans: u64,
    /// The server's `partial_success.error_message`, possibly empty.
    pub message: String,
}

/// Sends encoded `ExportTraceServiceRequest`s to one endpoint. Cheap to
/// clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct OtlpClient {
    channel: Channel,
    compression: Compression,
    endpoint: Arc<str>,
    timeout: Duration,
    /// Every call's headers: the configured metadata and gRPC's own.
    headers: http::HeaderMap,
    /// The Export method called: TraceService's, or LogsService's.
    path: &'static str,
}

impl OtlpClient {
    /// The same client calling the Export method of `signal`'s service.
    /// Requests are then encoded `ExportLogsServiceRequest`s for logs; the
    /// two responses share their encoding (`partial_success` as field 1,
    /// its rejected count as field 1), so [`ExportResponse::rejected_spans`]
    /// counts rejected log records.
    pub fn for_signal(mut self, signal: Signal) -> Self {
        self.path = match signal {
            Signal::Traces => EXPORT_PATH,
            Signal::Logs => LOGS_EXPORT_PATH,
        };
        self
    }

    /// Connects lazily: nothing is dialled until the first call, and a lost
    /// connection is redialled by the next one. Call it inside a tokio
    /// runtime (the channel spawns its worker task there).
    pub fn new(config: &OtlpClientConfig) -> Result<Self, ClientConfigError> {
        let (endpoint, headers, tls) = config.parts()?;
        let endpoint = endpoint
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        let channel = match tls {
            Some(connector) => endpoint.connect_with_connector_lazy(connector),
            None => endpoint.connect_lazy(),
        };
        Ok(OtlpClient {
            channel,
            compression: config.compression,
            endpoint: config.endpoint.as_str().into(),
            timeout: config.timeout,
            headers: grpc_headers(headers),
            path: EXPORT_PATH,
        })
    }

    /// The endpoint, as configured.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One `Export` call.
    ///
    /// The timeout is enforced here rather than sent as `grpc-timeout`: a
    /// server enforcing the same deadline would race this one and turn a
    /// DEADLINE_EXCEEDED into a CANCELLED.
    pub async fn export(&self, request: Bytes) -> Result<ExportResponse, ExportError> {
        self.export_with(request, None, self.timeout).await
    }

    /// [`Self::export`] with one more metadata entry for this call only
    /// (beside the configured headers) and its own timeout.
    pub async fn export_with(
        &self,
        request: Bytes,
        extra: Option<(AsciiMetadataKey, AsciiMetadataValue)>,
        timeout: Duration,
    ) -> Result<ExportResponse, ExportError> {
        self.export_inner(request, extra, timeout, false).await
    }

    /// [`Self::export`], but the gRPC prefix and the request go in one
    /// chunk of the body, as tonic's and grpc-go's clients send a unary
    /// call (its first DATA frame holds both): one copy of the request.
    /// The load generator sends this way, so that a node under test reads
    /// what an SDK's export looks like.
    pub async fn export_in_one_frame(&self, request: Bytes) -> Result<ExportResponse, ExportError> {
        self.export_inner(request, None, self.timeout, true).await
    }

    async fn export_inner(
        &self,
        request: Bytes,
        extra: Option<(AsciiMetadataKey, AsciiMetadataValue)>,
        timeout: Duration,
        one_frame: bool,
    ) -> Result<ExportResponse, ExportError> {
        let attempt = async {
            let encoding = match self.compression {
                Compression::None => return self.call_plain(request, extra, one_frame).await,
                Compression::Gzip => CompressionEncoding::Gzip,
                Compression::Zstd => CompressionEncoding::Zstd,
            };
            self.call_compressed(request, extra, encoding).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Err(ExportError::Timeout {
                endpoint: self.endpoint.clone(),
                timeout,
            }),
            Ok(Err(status)) => Err(ExportError::from_status(self.endpoint.clone(), status)),
            Ok(Ok(response)) => Ok(ExportResponse::from(response)),
        }
    }

    /// One compressed call, through tonic, which compresses into its own
    /// buffer.
    async fn call_compressed(
        &self,
        request: Bytes,
        extra: Option<(AsciiMetadataKey, AsciiMetadataValue)>,
        encoding: CompressionEncoding,
    ) -> Result<crate::ExportTraceServiceResponse, tonic::Status> {
        let mut grpc = Grpc::new(self.channel.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(encoding);
        let mut call = tonic::Request::new(request);
        // tonic drops `te` and `content-type` from the metadata and sets
        // its own.
        *call.metadata_mut() = MetadataMap::from_headers(self.headers.clone());
        if let Some((key, value)) = extra {
            call.metadata_mut().insert(key, value);
        }
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
        let response = grpc
            .unary(
                call,
                PathAndQuery::from_static(self.path),
                ClientCodec::default(),
            )
            .await?;
        Ok(response.into_inner())
    }

    /// One uncompressed call without tonic's encoder, which copies every
    /// request into a buffer of its own behind the 5-byte gRPC prefix: here
    /// the prefix and the request go out as two chunks of the body, so the
    /// request's bytes (an LB's received request, whole) reach the socket
    /// uncopied. The answer is read as tonic reads it: a status in the
    /// headers (trailers-only) or the trailers, else one mapped from the
    /// HTTP status; errors from the connection keep their source, so
    /// [`ExportError::from_status`] tells a failed connect from a lost one.
    async fn call_plain(
        &self,
        request: Bytes,
        extra: Option<(AsciiMetadataKey, AsciiMetadataValue)>,
        one_frame: bool,
    ) -> Result<crate::ExportTraceServiceResponse, tonic::Status> {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let len = u32::try_from(request.len()).map_err(|_| {
            tonic::Status::resource_exhausted("a request over 4 GiB cannot be framed")
        })?;
        let mut prefix = [0u8; 5];
        prefix[1..].copy_from_slice(&len.to_be_bytes());
        let chunks = if one_frame {
            let mut framed = bytes::BytesMut::with_capacity(prefix.len() + request.len());
            framed.extend_from_slice(&prefix);
            framed.extend_from_slice(&request);
            [Some(framed.freeze()), None]
        } else {
            [Some(Bytes::copy_from_slice(&prefix)), Some(request)]
        };
        let body = PlainBody { chunks };
        let mut call = http::Request::new(tonic::body::Body::new(body));
        *call.method_mut() = http::Method::POST;
        *call.version_mut() = http::Version::HTTP_2;
        *call.uri_mut() = http::Uri::from_static(self.path);
        *call.headers_mut() = self.headers.clone();
        if let Some((key, value)) = extra {
            // Replacing a configured entry of the same name, as tonic's
            // `MetadataMap::insert` does.
            let mut metadata = MetadataMap::new();
            metadata.insert(key, value);
            for (name, value) in metadata.into_headers() {
                if let Some(name) = name {
                    call.headers_mut().insert(name, value);
                }
            }
        }
        let response = self
            .channel
            .clone()
            .oneshot(call)
            .await
            .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
        let (parts, mut body) = response.into_parts();
        if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
            // Trailers-only: a refusal, or an OK without a message.
            return match status.code() {
                Code::Ok => Ok(Default::default()),
                _ => Err(status),
            };
        }
        let mut message = bytes::BytesMut::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                Ok(data) if message.len() + data.len() > MAX_RESPONSE_BYTES => {
                    return Err(tonic::Status::out_of_range(format!(
                        "the response is over {MAX_RESPONSE_BYTES} bytes (tonic's limit)"
                    )));
                }
                Ok(data) => message.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        match trailers.as_ref().and_then(tonic::Status::from_header_map) {
            Some(status) if status.code() == Code::Ok => {}
            Some(status) => return Err(status),
            None => return Err(status_without_grpc_status(parts.status)),
        }
        decode_response(&message)
    }
}

/// The largest answer read, as tonic's default `max_decoding_message_size`:
/// an Export's answer is a few bytes, so more is a broken or hostile server.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The configured metadata without the names gRPC reserves (as tonic
/// sanitizes them), then gRPC's own request headers.
fn grpc_headers(metadata: MetadataMap) -> http::HeaderMap {
    let mut headers = metadata.into_headers();
    for reserved in [
        "te",
        "content-type",
        "grpc-message",
        "grpc-message-type",
        "grpc-status",
    ] {
        headers.remove(reserved);
    }
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers
}

/// A response that ends without `grpc-status`, mapped from its HTTP
/// status as gRPC's HTTP-to-gRPC table (and tonic) map it.
fn status_without_grpc_status(http: http::StatusCode) -> tonic::Status {
    let code = match http {
        http::StatusCode::OK => {
            return tonic::Status::unknown(
                "protocol error: the response ended without a grpc-status",
            );
        }
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    tonic::Status::new(
        code,
        format!(
            "grpc-status header missing, mapped from HTTP status code {}",
            http.as_u16()
        ),
    )
}

/// The one message of an OK answer (an empty body is an empty message).
fn decode_response(body: &[u8]) -> Result<crate::ExportTraceServiceResponse, tonic::Status> {
    use prost::Message;
    if body.is_empty() {
        return Ok(Default::default());
    }
    let Some((header, rest)) = body.split_first_chunk::<5>() else {
        return Err(tonic::Status::internal(
            "the response ends inside its gRPC frame header",
        ));
    };
    if header[0] != 0 {
        // No grpc-accept-encoding is sent, so no answer may be compressed.
        return Err(tonic::Status::internal(
            "protocol error: a compressed response to a call that accepts none",
        ));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let Some(message) = rest.get(..len) else {
        return Err(tonic::Status::internal(
            "the response ends inside its message",
        ));
    };
    crate::ExportTraceServiceResponse::decode(message)
        .map_err(|e| tonic::Status::internal(format!("decoding response: {e}")))
}

/// A request body of two chunks, the gRPC prefix and the message.
struct PlainBody {
    chunks: [Option<Bytes>; 2],
}

impl http_body::Body for PlainBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.iter_mut().find_map(Option::take);
        std::task::Poll::Ready(next.map(|data| Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.iter().all(Option::is_none)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.chunks.iter().flatten().map(|c| c.len() as u64).sum();
        http_body::SizeHint::with_exact(len)
    }
}

impl From<crate::ExportTraceServiceResponse> for ExportResponse {
    fn from(response: crate::ExportTraceServiceResponse) -> Self {
        match response.partial_success {
            Some(partial) => ExportResponse {
                rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
                message: partial.error_message,
            },
            None => ExportResponse::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    fn error(status: tonic::Status) -> ExportError {
        ExportError::from_status("http://x:1".into(), status)
    }

    /// An uncompressed call's body is the gRPC prefix, then the request's
    /// own bytes: not a copy of them.
    #[tokio::test]
    async fn a_plain_call_sends_the_request_uncopied_behind_its_prefix() {
        use http_body_util::BodyExt;
        let request = Bytes::from(vec![7u8; 300]);
        let mut body = PlainBody {
            chunks: [
                Some(Bytes::from_static(&[0, 0, 0, 1, 44])),
                Some(request.clone()),
            ],
        };
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(305));
        let prefix = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&prefix[..], &[0, 0, 0, 1, 44]);
        let sent = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(sent.as_ptr(), request.as_ptr());
        assert_eq!(sent.len(), 300);
        assert!(http_body::Body::is_end_stream(&body));
        assert!(body.frame().await.is_none());
    }

    #[test]
    fn an_answer_without_grpc_status_is_mapped_from_its_http_status() {
        let code =
            |s: u16| status_without_grpc_status(http::StatusCode::from_u16(s).unwrap()).code();
        assert_eq!(code(200), Code::Unknown);
        assert_eq!(code(400), Code::Internal);
        assert_eq!(code(401), Code::Unauthenticated);
        assert_eq!(code(403), Code::PermissionDenied);
        assert_eq!(code(404), Code::Unimplemented);
        for s in [429, 502, 503, 504] {
            assert_eq!(code(s), Code::Unavailable, "{s}");
        }
        assert_eq!(code(500), Code::Unknown);
    }

    #[test]
    fn an_answer_message_is_read_from_its_frame() {
        use prost::Message;
        let response = crate::ExportTraceServiceResponse {
            partial_success: Some(
                crate::otlp::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans: 3,
                    error_message: "no".into(),
                },
            ),
        };
        let message = response.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        assert_eq!(decode_response(&framed).unwrap(), response);
        assert_eq!(decode_response(&[]).unwrap(), Default::default());
        assert_eq!(
            decode_response(&framed[..3]).unwrap_err().code(),
            Code::Internal
        );
        assert_eq!(
            decode_response(&framed[..framed.len() - 1])
                .unwrap_err()
                .code(),
            Code::Internal
        );
        framed[0] = 1;
        assert_eq!(decode_response(&framed).unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn retryable_codes_follow_the_otlp_spec() {
        let retryable = [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ];
        let all = [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
        ];
        for code in retryable {
            assert!(
                error(tonic::Status::new(code, "")).is_retryable(),
                "{code:?}"
            );
        }
        for code in all {
            assert!(
                !error(tonic::Status::new(code, "")).is_retryable(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn resource_exhausted_is_retryable_only_with_retry_info() {
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(7))),
        );
        let e = error(status);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(!e.is_member_down());
    }

    #[test]
    fn member_down_means_unreachable_unavailable_or_too_slow() {
        let connect = ExportError::Connect {
            endpoint: "e".into(),
            message: "refused".into(),
        };
        let timeout = ExportError::Timeout {
            endpoint: "e".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(connect.is_member_down() && connect.is_retryable());
        assert!(timeout.is_member_down() && timeout.is_retryable());
        assert!(error(tonic::Status::unavailable("")).is_member_down());
        assert!(error(tonic::Status::deadline_exceeded("")).is_member_down());
        assert!(!error(tonic::Status::aborted("")).is_member_down());
        assert!(!error(tonic::Status::invalid_argument("")).is_member_down());
    }

    #[test]
    fn errors_name_the_endpoint_and_the_code() {
        let e = error(tonic::Status::invalid_argument("bad span"));
        assert_eq!(e.endpoint(), "http://x:1");
        assert_eq!(
            e.to_string(),
            "export to http://x:1 failed: InvalidArgument: bad span"
        );
    }

    #[test]
    fn bad_endpoints_and_headers_are_config_errors() {
        let bad = |f: fn(&mut OtlpClientConfig)| {
            let mut c = OtlpClientConfig::new("http://127.0.0.1:4317");
            f(&mut c);
            OtlpClient::new(&c).unwrap_err()
        };
        assert!(matches!(
            bad(|c| c.endpoint = "not a uri".into()),
            ClientConfigError::Endpoint { .. }
        ));
        assert!(matches!(
            bad(|c| c.endpoint = "ftp://x:1".into()),
            ClientConfigError::Scheme { .. }
        ));
        assert!(matches!(
            bad(|c| c.tls = Some(ClientTlsConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..ClientTlsConfig::default()
            })),
            ClientConfigError::Tls { .. }
        ));
        assert!(matches!(
            bad(|c| {
                c.headers.insert("Bad Key".into(), "v".into());
            }),
            ClientConfigError::HeaderName { .. }
        ));
        assert!(matches!(
            bad(|c| {
                c.headers.insert("k".into(), "line\nbreak".into());
            }),
            ClientConfigError::HeaderValue { .. }
        ));
    }
}
