//! The OTLP receiver shared by every role: OTLP/gRPC on the TraceService
//! route and OTLP/HTTP on `POST /v1/traces`, both handing the node the same
//! [`Batch`]: an encoded `ExportTraceServiceRequest`. Logs come the same
//! way, on the LogsService route and `POST /v1/logs`, with the same limits,
//! auth and TLS, and reach the node through [`Sink::accept_logs`] as an
//! encoded `ExportLogsServiceRequest` ([`Signal::Logs`]).
//!
//! The receiver only unframes, decompresses, checks sizes and content types,
//! converts OTLP/JSON (once, [`crate::json`]) and applies the request limits
//! ([`limits`]: span count, attribute value length) by reading lengths. It
//! never walks the spans: the node does that with [`crate::view`] /
//! [`crate::split`], and walking them here too would double the cost. A
//! malformed body therefore reaches the node, which answers
//! [`Refusal::Invalid`].
//!
//! What the node answers decides the status the client sees:
//!
//! | node answer | gRPC | HTTP |
//! |---|---|---|
//! | [`Accepted`] | OK | 200, `ExportTraceServiceResponse` |
//! | [`Refusal::Invalid`] | INVALID_ARGUMENT | 400 |
//! | [`Refusal::Overloaded`] | RESOURCE_EXHAUSTED + RetryInfo | 429 + Retry-After |
//! | [`Refusal::Unavailable`] | UNAVAILABLE + RetryInfo | 503 + Retry-After |
//!
//! and the receiver itself refuses a body over `max_request_bytes`, more
//! spans than `max_spans_per_request` or an attribute value over
//! `max_attribute_value_bytes` (RESOURCE_EXHAUSTED without RetryInfo, so
//! OTLP clients do not retry it / 413), an unsupported content type or encoding (UNIMPLEMENTED / 415) and
//! bad JSON or corrupt compression (INVALID_ARGUMENT / 400).
//!
//! Metrics (labels `node`, `protocol`): `tailgate_spans_received_total`
//! (`tailgate_log_records_received_total` for logs) counts the spans of
//! accepted requests only, since a refused request is not received; `tailgate_requests_total{result}` counts every export
//! request by outcome; `tailgate_request_bytes` is the size of each request
//! handed to the node (protobuf, after decompression and JSON conversion).

mod auth;
pub(crate) mod conn;
mod grpc;
mod http;
mod limits;

pub use self::auth::{AuthConfig, AuthError};
pub use self::http::{LOGS_PATH, TRACES_PATH};
pub use self::limits::{
    RequestLimits, Violation, check as check_limits, check_signal as check_limits_of,
};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use metrics::{Counter, Histogram};
use serde::{Deserialize, Serialize};
use tonic_types::{ErrorDetails, StatusExt};

use crate::tls::{ServerTls, ServerTlsConfig, TlsError};
use crate::wire::WireError;

/// The transport a batch arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    /// The `protocol` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

/// What an export request carries: the two OTLP signals tailgate takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Signal {
    #[default]
    Traces,
    Logs,
}

impl Signal {
    /// The `signal` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

/// One export request, as the node receives it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// An encoded `ExportTraceServiceRequest`, not yet validated (for
    /// [`ClusterMark::Decisions`], the sampler's decision list instead).
    pub request: Bytes,
    pub protocol: Protocol,
    /// Set when another tailgate sampler sent this batch (gRPC metadata or
    /// HTTP header, see [`ClusterMark`]); `None` for every other client.
    pub mark: Option<ClusterMark>,
}

/// Stray spans a sampler forwards to their owner: `x-tailgate-forwarded: 1`.
pub const FORWARDED_HEADER: &str = "x-tailgate-forwarded";
/// Traces a sampler hands over to their new owner:
/// `x-tailgate-handover: <age in ms>`, the time since the sender first saw
/// the youngest trace of the request.
pub const HANDOVER_HEADER: &str = "x-tailgate-handover";
/// Decisions a sampler pushes to the new owners of their traces:
/// `x-tailgate-decisions: 1`; the body is the sampler's decision list, not
/// an OTLP request.
pub const DECISIONS_HEADER: &str = "x-tailgate-decisions";
/// A sampler's per-policy demand counts for fleet-wide budgets:
/// `x-tailgate-counts: 1`; the body is the sampler's counts message, not
/// an OTLP request.
pub const COUNTS_HEADER: &str = "x-tailgate-counts";

/// How a batch came from another sampler of the cluster. Samplers exchange
/// traces over the same OTLP Export call every client uses, and mark them
/// with one of three headers (gRPC metadata or HTTP headers) so that the
/// receiving sampler neither forwards them again (no loops) nor restarts
/// their decision wait. The receiver only reads the mark; what it means is
/// the sampler's business. Any client can set these headers: they are for
/// the samplers' own network, not for agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMark {
    /// `x-tailgate-forwarded: 1`: spans of traces the sender neither held nor
    /// owned. Never forwarded again.
    Forwarded,
    /// `x-tailgate-handover: <ms>`: whole traces that moved here, first seen
    /// `age` before the request was sent (an age, because the two nodes'
    /// clocks are not comparable). Never forwarded again.
    HandedOver { age: Duration },
    /// `x-tailgate-decisions: 1`: decisions taken by the sender for traces
    /// that now belong here.
    Decisions,
    /// `x-tailgate-counts: 1`: the sender's demand on each budgeted policy
    /// (fleet-wide budgets).
    Counts,
}

impl ClusterMark {
    /// True when the body is a sampler's own message, not an OTLP request.
    pub fn is_control(&self) -> bool {
        matches!(self, ClusterMark::Decisions | ClusterMark::Counts)
    }
}

impl ClusterMark {
    /// The header name and value that carry this mark.
    pub fn header(&self) -> (&'static str, String) {
        match self {
            ClusterMark::Forwarded => (FORWARDED_HEADER, "1".into()),
            ClusterMark::HandedOver { age } => (HANDOVER_HEADER, age.as_millis().to_string()),
            ClusterMark::Decisions => (DECISIONS_HEADER, "1".into()),
            ClusterMark::Counts => (COUNTS_HEADER, "1".into()),
        }
    }

    /// Reads the mark from a request's headers (`get` looks one up by its
    /// lower-case name). More than one mark, or a value that does not
    /// parse, is a client error.
    pub fn from_headers<'a>(
        get: impl Fn(&'static str) -> Option<&'a [u8]>,
    ) -> Result<Option<ClusterMark>, Refusal> {
        let flag = |name: &'static str| -> Result<bool, Refusal> {
            match get(name) {
                None => Ok(false),
                Some(b"1") => Ok(true),
                Some(other) => Err(Refusal::Invalid(format!(
                    "header {name}: {:?} is not 1",
                    String::from_utf8_lossy(other)
                ))),
            }
        };
        let handover = match get(HANDOVER_HEADER) {
            None => None,
            Some(value) => {
                let ms = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        Refusal::Invalid(format!(
                            "header {HANDOVER_HEADER}: {:?} is not an age in milliseconds",
                            String::from_utf8_lossy(value)
                        ))
                    })?;
                Some(ClusterMark::HandedOver {
                    age: Duration::from_millis(ms),
                })
            }
        };
        let marks = [
            flag(FORWARDED_HEADER)?.then_some(ClusterMark::Forwarded),
            handover,
            flag(DECISIONS_HEADER)?.then_some(ClusterMark::Decisions),
            flag(COUNTS_HEADER)?.then_some(ClusterMark::Counts),
        ];
        let mut set = marks.into_iter().flatten();
        let mark = set.next();
        if set.next().is_some() {
            return Err(Refusal::Invalid(format!(
                "more than one of {FORWARDED_HEADER}, {HANDOVER_HEADER}, {DECISIONS_HEADER}, {COUNTS_HEADER}"
            )));
        }
        Ok(mark)
    }
}

/// The node took the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    /// Spans in the batch (log records in a logs batch); counted in
    /// `tailgate_spans_received_total` (`tailgate_log_records_received_total`).
    pub spans: usize,
}

/// Why the node did not take a batch. Nothing of a refused batch was kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed (e.g. a [`WireError`] from the node's parse).
    /// INVALID_ARGUMENT / 400; the client must not retry it.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The request is over a limit it would be over on every retry (too
    /// many spans). RESOURCE_EXHAUSTED without RetryInfo / 413; the client
    /// must not retry it.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The node is at capacity. RESOURCE_EXHAUSTED / 429.
    #[error("overloaded, retry after {}s", retry_after_secs(*retry_after))]
    Overloaded { retry_after: Duration },
    /// The node cannot take data now (shutting down, no owner reachable).
    /// UNAVAILABLE / 503.
    #[error("unavailable, retry after {}s", retry_after_secs(*retry_after))]
    Unavailable { retry_after: Duration },
}

impl Refusal {
    /// Whether the client should send the same batch again later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Refusal::Invalid(_) | Refusal::TooLarge(_))
    }

    /// How long the client should wait before retrying, if it should.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Invalid(_) | Refusal::TooLarge(_) => None,
            Refusal::Overloaded { retry_after } | Refusal::Unavailable { retry_after } => {
                Some(*retry_after)
            }
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Refusal::Invalid(_) => tonic::Code::InvalidArgument,
            Refusal::TooLarge(_) | Refusal::Overloaded { .. } => tonic::Code::ResourceExhausted,
            Refusal::Unavailable { .. } => tonic::Code::Unavailable,
        }
    }

    /// The gRPC status for this refusal. Retryable ones carry a
    /// `google.rpc.RetryInfo`: OTLP clients retry RESOURCE_EXHAUSTED only
    /// when it is present, and use its delay.
    pub fn grpc_status(&self) -> tonic::Status {
        match self.retry_after() {
            None => tonic::Status::new(self.grpc_code(), self.to_string()),
            Some(delay) => tonic::Status::with_error_details(
                self.grpc_code(),
                self.to_string(),
                ErrorDetails::with_retry_info(Some(delay)),
            ),
        }
    }

    pub fn http_status(&self) -> ::http::StatusCode {
        match self {
            Refusal::Invalid(_) => ::http::StatusCode::BAD_REQUEST,
            Refusal::TooLarge(_) => ::http::StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Overloaded { .. } => ::http::StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable { .. } => ::http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<WireError> for Refusal {
    fn from(e: WireError) -> Self {
        Refusal::Invalid(e.to_string())
    }
}

/// `Retry-After` is whole seconds; round up so a client never comes back
/// before the node asked.
fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The node behind the receiver: the sampler or the LB.
pub trait Sink: Send + Sync + 'static {
    /// Takes the batch whole, or refuses it whole.
    fn accept(&self, batch: Batch) -> impl Future<Output = Result<Accepted, Refusal>> + Send;

    /// Takes a logs batch (an encoded `ExportLogsServiceRequest`) whole, or
    /// refuses it whole. A node that has no logs path refuses every one.
    fn accept_logs(&self, batch: Batch) -> impl Future<Output = Result<Accepted, Refusal>> + Send {
        let _ = batch;
        std::future::ready(Err(Refusal::Invalid("this node does not take logs".into())))
    }
}

/// Receiver settings (the `receiver:` block of a node's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address. Default `0.0.0.0:4317`; `off` (or null)
    /// disables it.
    #[serde(with = "listen")]
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address (`POST /v1/traces`). Default `0.0.0.0:4318`;
    /// `off` (or null) disables it.
    #[serde(with = "listen")]
    pub http: Option<SocketAddr>,
    /// Largest request accepted, in bytes, applied to the body as received
    /// (compressed) and, separately, to the decompressed body. Default
    /// 16 MiB.
    pub max_request_bytes: usize,
    /// This node's name, the `node` label of the receiver's metrics.
    /// Default `tailgate`.
    pub node: String,
    /// Most spans in one request; a request with more is refused whole
    /// (RESOURCE_EXHAUSTED without RetryInfo / 413), as it would be on every
    /// retry. 0 = no limit. Default 100,000.
    pub max_spans_per_request: usize,
    /// Longest resource or span attribute value (encoded `AnyValue`) in a
    /// request: what a policy may read. A request with a longer one is
    /// refused whole (RESOURCE_EXHAUSTED without RetryInfo / 413), naming
    /// the attribute. Event, link and scope attributes are not bounded.
    /// 0 = no limit. Default 1 MiB.
    pub max_attribute_value_bytes: usize,
    /// The longest a client may take to send a request: the TLS handshake,
    /// HTTP/1 headers, and the body (timed from the headers); past it the
    /// connection is closed or the request answered DEADLINE_EXCEEDED /
    /// 408. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Open connections per listener; past it a new connection is closed at
    /// once (counted). Default 4096.
    pub max_connections: usize,
    /// A connection older than this is asked to go away (HTTP/2 GOAWAY;
    /// HTTP/1: closed when idle, or `Connection: close` on the answer to
    /// the request in flight), so that
    /// long-lived clients reconnect and spread over the replicas behind a
    /// load balancer when it scales. Default 0: off.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// After `max_connection_age`, how long requests in flight may still
    /// take before the connection is closed. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub max_connection_age_grace: Duration,
    /// Send an HTTP/2 PING on a connection this often, to find dead peers
    /// (and keep idle connections through NATs). Default 0: off.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Close the connection when a PING is not answered within this.
    /// Default 20 s.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// TLS on both listeners (mTLS with `client_ca_file`). Default none.
    pub tls: Option<ServerTlsConfig>,
    /// Tokens every export request must carry. Default none: no check.
    pub auth: Option<AuthConfig>,
}

pub const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 4317);
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 4318);
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_SPANS_PER_REQUEST: usize = 100_000;
pub const DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            grpc: Some(DEFAULT_GRPC_ADDR),
            http: Some(DEFAULT_HTTP_ADDR),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            node: "tailgate".into(),
            max_spans_per_request: DEFAULT_MAX_SPANS_PER_REQUEST,
            max_attribute_value_bytes: DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connection_age: Duration::ZERO,
            max_connection_age_grace: DEFAULT_MAX_CONNECTION_AGE_GRACE,
            keepalive_interval: Duration::ZERO,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            tls: None,
            auth: None,
        }
    }
}

/// A listen address that can be switched off: `"0.0.0.0:4317"`, or `off` /
/// null.
mod listen {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.eq_ignore_ascii_case("off") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|e| {
                D::Error::custom(format!(
                    "listen address {s:?}: {e} (expected IP:PORT such as 0.0.0.0:4317, or off)"
                ))
            }),
        }
    }
}

/// The receiver could not start, or a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("receiver config: {0}")]
    Config(String),
    #[error("receiver tls: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("binding the OTLP/{} listener on {addr}: {source}", protocol.as_str())]
    Bind {
        protocol: Protocol,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("OTLP/gRPC server on {addr}: {source}")]
    Grpc {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("OTLP/HTTP server on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ReceiverError {
    /// Only a port still in use may bind on a later try.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReceiverError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

struct Listener {
    socket: std::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds without a runtime (std), so `bind` can run, and fail, before
    /// anything async starts.
    fn bind(protocol: Protocol, addr: SocketAddr) -> Result<Listener, ReceiverError> {
        let bind = || {
            let socket = std::net::TcpListener::bind(addr)?;
            socket.set_nonblocking(true)?;
            let addr = socket.local_addr()?;
            Ok(Listener { socket, addr })
        };
        bind().map_err(|source| ReceiverError::Bind {
            protocol,
            addr,
            source,
        })
    }
}

/// Bound OTLP listeners, ready to [`serve`](Receiver::serve).
pub struct Receiver {
    grpc: Option<Listener>,
    http: Option<Listener>,
    max_request_bytes: usize,
    node: String,
    limits: Limits,
    grpc_tls: Option<Arc<ServerTls>>,
    http_tls: Option<Arc<ServerTls>>,
    auth: Option<Arc<auth::Auth>>,
}

/// The per-request and per-connection bounds, as configured.
#[derive(Debug, Clone, Copy)]
struct Limits {
    request: RequestLimits,
    read_timeout: Duration,
    max_connections: usize,
    lifetime: Lifetime,
}

/// How long a connection lives, and how it is kept alive.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lifetime {
    /// Asked to go away at this age.
    pub max_age: Option<Duration>,
    /// Closed at this age, whatever is in flight: `max_age` + its grace.
    pub hard_limit: Option<Duration>,
    /// HTTP/2 PING interval and timeout.
    pub keepalive: Option<(Duration, Duration)>,
}

impl Lifetime {
    fn of(config: &ReceiverConfig) -> Lifetime {
        let max_age = (!config.max_connection_age.is_zero()).then_some(config.max_connection_age);
        Lifetime {
            max_age,
            hard_limit: max_age.map(|age| age + config.max_connection_age_grace),
            keepalive: (!config.keepalive_interval.is_zero())
                .then_some((config.keepalive_interval, config.keepalive_timeout)),
        }
    }
}

/// A receiver's TLS (gRPC, HTTP) and tokens, loaded.
type Prepared = (
    Option<Arc<ServerTls>>,
    Option<Arc<ServerTls>>,
    Option<Arc<auth::Auth>>,
);

impl Receiver {
    /// Checks the config and loads its files and secrets (TLS, tokens),
    /// as [`bind`](Receiver::bind) does first, without binding anything:
    /// what `tailgate config check` runs.
    pub fn check(config: &ReceiverConfig) -> Result<(), ReceiverError> {
        Self::prepare(config).map(drop)
    }

    /// The config's checks, and its TLS and tokens loaded.
    fn prepare(config: &ReceiverConfig) -> Result<Prepared, ReceiverError> {
        if config.max_request_bytes == 0 {
            return Err(ReceiverError::Config(
                "max_request_bytes must be at least 1".into(),
            ));
        }
        if config.grpc.is_none() && config.http.is_none() {
            return Err(ReceiverError::Config(
                "both grpc and http are off: enable at least one".into(),
            ));
        }
        if config.read_timeout.is_zero() {
            return Err(ReceiverError::Config(
                "read_timeout must be more than 0".into(),
            ));
        }
        if config.max_connections == 0 {
            return Err(ReceiverError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        if !config.keepalive_interval.is_zero() && config.keepalive_timeout.is_zero() {
            return Err(ReceiverError::Config(
                "keepalive_timeout must be more than 0 with keepalive_interval".into(),
            ));
        }
        // Files and secrets first: a bad one fails before a port is bound.
        let (grpc_tls, http_tls) = match &config.tls {
            None => (None, None),
            Some(tls) => (
                Some(Arc::new(ServerTls::new(tls, &[b"h2"])?)),
                Some(Arc::new(ServerTls::new(tls, &[b"h2", b"http/1.1"])?)),
            ),
        };
        let auth = config
            .auth
            .as_ref()
            .map(|a| auth::Auth::new(a, |var| std::env::var(var).ok()))
            .transpose()?
            .map(Arc::new);
        Ok((grpc_tls, http_tls, auth))
    }

    /// Checks the config and binds the enabled listeners.
    pub fn bind(config: ReceiverConfig) -> Result<Receiver, ReceiverError> {
        let (grpc_tls, http_tls, auth) = Self::prepare(&config)?;
        let lifetime = Lifetime::of(&config);
        let grpc = config
            .grpc
            .map(|addr| Listener::bind(Protocol::Grpc, addr))
            .transpose()?;
        let http = config
            .http
            .map(|addr| Listener::bind(Protocol::Http, addr))
            .transpose()?;
        Ok(Receiver {
            grpc,
            http,
            max_request_bytes: config.max_request_bytes,
            node: config.node,
            limits: Limits {
                request: RequestLimits {
                    max_spans: config.max_spans_per_request,
                    max_attribute_value_bytes: config.max_attribute_value_bytes,
                },
                read_timeout: config.read_timeout,
                max_connections: config.max_connections,
                lifetime,
            },
            grpc_tls,
            http_tls,
            auth,
        })
    }

    /// The bound OTLP/gRPC address, if enabled (the real port when bound to 0).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|l| l.addr)
    }

    /// The bound OTLP/HTTP address, if enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|l| l.addr)
    }

    /// Serves both protocols until `shutdown` completes, then stops accepting
    /// connections and returns once in-flight requests are answered. If one
    /// server fails, the other is stopped and the error returned.
    ///
    /// Install the metrics recorder ([`crate::admin::install_metrics`])
    /// before calling this: the counters are created here.
    pub async fn serve<S: Sink>(
        self,
        sink: Arc<S>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ReceiverError> {
        describe_metrics();
        let shutdown = shutdown.shared();
        let shared = |protocol| {
            Arc::new(Shared::new(
                sink.clone(),
                &self.node,
                protocol,
                self.max_request_bytes,
                self.limits,
                self.auth.clone(),
            ))
        };
        let accept = |protocol: Protocol, tls: &Option<Arc<ServerTls>>| conn::AcceptConfig {
            listener: protocol.as_str(),
            node: self.node.clone(),
            max_connections: self.limits.max_connections,
            tls: tls.clone(),
            handshake_timeout: self.limits.read_timeout,
            hard_limit: self.limits.lifetime.hard_limit,
        };
        let grpc = self.grpc.map(|listener| {
            grpc::serve(
                listener.socket,
                listener.addr,
                shared(Protocol::Grpc),
                accept(Protocol::Grpc, &self.grpc_tls),
                shutdown.clone(),
            )
        });
        let http = self.http.map(|listener| {
            http::serve(
                listener.socket,
                listener.addr,
                shared(Protocol::Http),
                accept(Protocol::Http, &self.http_tls),
                shutdown.clone(),
            )
        });
        let grpc = async {
            match grpc {
                Some(server) => server.await,
                None => Ok(()),
            }
        };
        let http = async {
            match http {
                Some(server) => server.await,
                None => Ok(()),
            }
        };
        tokio::try_join!(grpc, http).map(|_| ())
    }
}

/// What a protocol server needs per request.
struct Shared<S> {
    sink: Arc<S>,
    metrics: Metrics,
    max_request_bytes: usize,
    limits: Limits,
    auth: Option<Arc<auth::Auth>>,
}

impl<S: Sink> Shared<S> {
    fn new(
        sink: Arc<S>,
        node: &str,
        protocol: Protocol,
        max_request_bytes: usize,
        limits: Limits,
        auth: Option<Arc<auth::Auth>>,
    ) -> Self {
        Shared {
            sink,
            metrics: Metrics::new(node, protocol),
            max_request_bytes,
            limits,
            auth,
        }
    }

    /// Checks a request's credentials (`get` looks a header up by name);
    /// the refusal message never includes what was presented.
    fn authenticate<'a>(
        &self,
        get: impl Fn(&::http::HeaderName) -> Option<&'a [u8]>,
    ) -> Result<(), String> {
        match &self.auth {
            None => Ok(()),
            Some(auth) => auth
                .check(get(auth.header()))
                .map_err(|denied| denied.message(auth.header().as_str())),
        }
    }

    /// Hands a batch to the node and counts the outcome. `mark` is what
    /// [`ClusterMark::from_headers`] read (a bad mark is refused here, so it
    /// is counted like any other refusal).
    async fn deliver(
        &self,
        request: Bytes,
        protocol: Protocol,
        signal: Signal,
        mark: Result<Option<ClusterMark>, Refusal>,
    ) -> Result<Accepted, Refusal> {
        self.metrics.request_bytes.record(request.len() as f64);
        // A decision list or counts message is not an OTLP request: nothing
        // to count.
        let decisions = matches!(&mark, Ok(Some(m)) if m.is_control());
        // Checked before the node sees the request; a malformed request
        // passes here and the node refuses it with the reason.
        if let Err(violation) = match decisions {
            true => Ok(()),
            false => limits::check_signal(&request, self.limits.request, signal),
        } {
            self.metrics.count(match violation {
                Violation::TooManySpans { .. } => Outcome::TooManySpans,
                Violation::AttributeTooLong { .. } => Outcome::AttributeTooLong,
            });
            return Err(Refusal::TooLarge(violation.to_string()));
        }
        let result = match (mark, signal) {
            (Ok(mark), Signal::Traces) => {
                self.sink
                    .accept(Batch {
                        request,
                        protocol,
                        mark,
                    })
                    .await
            }
            (Ok(mark), Signal::Logs) => {
                self.sink
                    .accept_logs(Batch {
                        request,
                        protocol,
                        mark,
                    })
                    .await
            }
            (Err(refusal), _) => Err(refusal),
        };
        match &result {
            Ok(accepted) => {
                match signal {
                    Signal::Traces => &self.metrics.spans_received,
                    Signal::Logs => &self.metrics.log_records_received,
                }
                .increment(accepted.spans as u64);
                self.metrics.count(Outcome::Accepted);
            }
            Err(refusal) => self.metrics.count(Outcome::from(refusal)),
        }
        result
    }
}

/// The `result` label of `tailgate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Invalid,
    TooLarge,
    UnsupportedMediaType,
    Overloaded,
    Unavailable,
    TooManySpans,
    AttributeTooLong,
    TimedOut,
    Unauthenticated,
}

impl Outcome {
    const ALL: [Outcome; 10] = [
        Outcome::Accepted,
        Outcome::Invalid,
        Outcome::TooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::Overloaded,
        Outcome::Unavailable,
        Outcome::TooManySpans,
        Outcome::AttributeTooLong,
        Outcome::TimedOut,
        Outcome::Unauthenticated,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Overloaded => "overloaded",
            Outcome::Unavailable => "unavailable",
            Outcome::TooManySpans => "too_many_spans",
            Outcome::AttributeTooLong => "attribute_too_long",
            Outcome::TimedOut => "timeout",
            Outcome::Unauthenticated => "unauthenticated",
        }
    }
}

impl From<&Refusal> for Outcome {
    fn from(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::Invalid(_) => Outcome::Invalid,
            Refusal::TooLarge(_) => Outcome::TooManySpans,
            Refusal::Overloaded { .. } => Outcome::Overloaded,
            Refusal::Unavailable { .. } => Outcome::Unavailable,
        }
    }
}

const SPANS_RECEIVED: &str = "tailgate_spans_received_total";
const LOG_RECORDS_RECEIVED: &str = "tailgate_log_records_received_total";
const REQUESTS: &str = "tailgate_requests_total";
const REQUEST_BYTES: &str = "tailgate_request_bytes";

fn describe_metrics() {
    metrics::describe_counter!(
        SPANS_RECEIVED,
        metrics::Unit::Count,
        "Spans in export requests the node accepted (refused requests are not received)."
    );
    metrics::describe_counter!(
        LOG_RECORDS_RECEIVED,
        metrics::Unit::Count,
        "Log records in logs export requests the node accepted."
    );
    metrics::describe_counter!(
        REQUESTS,
        metrics::Unit::Count,
        "OTLP export requests, by result."
    );
    metrics::describe_histogram!(
        REQUEST_BYTES,
        metrics::Unit::Bytes,
        "Size of each export request handed to the node (protobuf, decompressed)."
    );
}

/// Handles created once per protocol server, not looked up per request.
struct Metrics {
    spans_received: Counter,
    log_records_received: Counter,
    requests: [Counter; Outcome::ALL.len()],
    request_bytes: Histogram,
}

impl Metrics {
    fn new(node: &str, protocol: Protocol) -> Self {
        let protocol = protocol.as_str();
        Metrics {
            spans_received: metrics::counter!(
                SPANS_RECEIVED,
                "node" => node.to_owned(),
                "protocol" => protocol
            ),
            log_records_received: metrics::counter!(
                LOG_RECORDS_RECEIVED,
                "node" => node.to_owned(),
                "protocol" => protocol
            ),
            requests: Outcome::ALL.map(|outcome| {
                metrics::counter!(
                    REQUESTS,
                    "node" => node.to_owned(),
                    "protocol" => protocol,
                    "result" => outcome.as_str()
                )
            }),
            request_bytes: metrics::histogram!(
                REQUEST_BYTES,
                "node" => node.to_owned(),
                "protocol" => protocol
            ),
        }
    }

    fn count(&self, outcome: Outcome) {
        // ALL lists every variant in declaration order.
        self.requests[outcome as usize].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_the_documented_ones() {
        let config: ReceiverConfig = serde_json::from_str("{}").expect("parses");
        assert_eq!(config, ReceiverConfig::default());
        assert_eq!(config.grpc, Some("0.0.0.0:4317".parse().expect("addr")));
        assert_eq!(config.http, Some("0.0.0.0:4318".parse().expect("addr")));
        assert_eq!(config.max_request_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn config_can_switch_a_protocol_off() {
        let config: ReceiverConfig =
            serde_json::from_str(r#"{"grpc":"off","http":"127.0.0.1:0","node":"lb"}"#)
                .expect("parses");
        assert_eq!(config.grpc, None);
        assert_eq!(config.http, Some("127.0.0.1:0".parse().expect("addr")));
        let config: ReceiverConfig = serde_json::from_str(r#"{"http":null}"#).expect("parses");
        assert_eq!(config.http, None);
        assert_eq!(config.grpc, Some(DEFAULT_GRPC_ADDR));
        let json = serde_json::to_string(&config).expect("serializes");
        let back: ReceiverConfig = serde_json::from_str(&json).expect("round-trips");
        assert_eq!(back, config);
    }

    #[test]
    fn config_refuses_unknown_keys_and_bad_addresses() {
        let err = serde_json::from_str::<ReceiverConfig>(r#"{"grcp":"0.0.0.0:1"}"#)
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<ReceiverConfig>(r#"{"grpc":"localhost"}"#)
            .expect_err("bad address");
        assert!(err.to_string().contains("expected IP:PORT"), "{err}");
    }

    #[test]
    fn bind_refuses_a_config_that_cannot_work() {
        let zero = ReceiverConfig {
            max_request_bytes: 0,
            ..ReceiverConfig::default()
        };
        assert!(matches!(
            Receiver::bind(zero),
            Err(ReceiverError::Config(_))
        ));
        let none = ReceiverConfig {
            grpc: None,
            http: None,
            ..ReceiverConfig::default()
        };
        assert!(matches!(
            Receiver::bind(none),
            Err(ReceiverError::Config(_))
        ));
    }

    #[test]
    fn bind_reports_a_port_in_use_as_retryable() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = taken.local_addr().expect("addr");
        let config = ReceiverConfig {
            grpc: Some(addr),
            http: None,
            ..ReceiverConfig::default()
        };
        let err = Receiver::bind(config).err().expect("port in use");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("OTLP/grpc listener"), "{err}");
    }

    #[test]
    fn refusals_map_to_otlp_statuses() {
        let invalid = Refusal::Invalid("bad".into());
        assert!(!invalid.is_retryable());
        assert_eq!(invalid.grpc_status().code(), tonic::Code::InvalidArgument);
        assert_eq!(invalid.http_status(), ::http::StatusCode::BAD_REQUEST);
        assert!(invalid.grpc_status().get_details_retry_info().is_none());

        let overloaded = Refusal::Overloaded {
            retry_after: Duration::from_millis(1500),
        };
        assert!(overloaded.is_retryable());
        assert_eq!(
            overloaded.http_status(),
            ::http::StatusCode::TOO_MANY_REQUESTS
        );
        let status = overloaded.grpc_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(overloaded.to_string(), "overloaded, retry after 2s");

        let unavailable = Refusal::Unavailable {
            retry_after: Duration::from_secs(3),
        };
        assert_eq!(unavailable.grpc_status().code(), tonic::Code::Unavailable);
        assert_eq!(
            unavailable.http_status(),
            ::http::StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn wire_errors_become_invalid_refusals() {
        let refusal = Refusal::from(WireError::FieldZero { offset: 7 });
        assert_eq!(refusal, Refusal::Invalid("field number 0 at byte 7".into()));
    }

    #[test]
    fn cluster_marks_are_read_from_headers_and_round_trip() {
        let read = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, Vec<u8>)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            ClusterMark::from_headers(|name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_slice())
            })
        };
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(
            read(&[("x-tailgate-forwarded", "1")]),
            Ok(Some(ClusterMark::Forwarded))
        );
        assert_eq!(
            read(&[("x-tailgate-handover", "1500")]),
            Ok(Some(ClusterMark::HandedOver {
                age: Duration::from_millis(1500)
            }))
        );
        assert_eq!(
            read(&[("x-tailgate-decisions", "1")]),
            Ok(Some(ClusterMark::Decisions))
        );
        assert_eq!(
            read(&[("x-tailgate-counts", "1")]),
            Ok(Some(ClusterMark::Counts))
        );
        assert!(read(&[("x-tailgate-counts", "1"), ("x-tailgate-decisions", "1")]).is_err());
        assert!(read(&[("x-tailgate-handover", "soon")]).is_err());
        assert!(read(&[("x-tailgate-forwarded", "yes")]).is_err());
        assert!(read(&[("x-tailgate-forwarded", "1"), ("x-tailgate-decisions", "1")]).is_err());
        for mark in [
            ClusterMark::Forwarded,
            ClusterMark::HandedOver {
                age: Duration::from_millis(42),
            },
            ClusterMark::Decisions,
            ClusterMark::Counts,
        ] {
            let (name, value) = mark.header();
            assert_eq!(read(&[(name, &value)]), Ok(Some(mark)));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
