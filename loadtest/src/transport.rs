//! One connection to an OTLP endpoint, over gRPC ([`proto::exporter::OtlpClient`])
//! or HTTP/1.1 (`POST /v1/traces`, protobuf, through hyper), with one
//! error type that says whether to retry.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use prost::Message;
use proto::exporter::{OtlpClient, OtlpClientConfig};
use serde::Serialize;

/// Where `gen` sends: `grpc://HOST:PORT` (OTLP/gRPC) or
/// `http://HOST:PORT[/PATH]` (OTLP/HTTP, path `/v1/traces` by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Endpoint {
    Grpc { authority: String },
    Http { authority: String, path: String },
}

impl Endpoint {
    pub fn protocol(&self) -> &'static str {
        match self {
            Endpoint::Grpc { .. } => "grpc",
            Endpoint::Http { .. } => "http",
        }
    }

    pub fn grpc(addr: std::net::SocketAddr) -> Self {
        Endpoint::Grpc {
            authority: addr.to_string(),
        }
    }

    pub fn http(addr: std::net::SocketAddr) -> Self {
        Endpoint::Http {
            authority: addr.to_string(),
            path: proto::receiver::TRACES_PATH.into(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Grpc { authority } => write!(f, "grpc://{authority}"),
            Endpoint::Http { authority, path } => write!(f, "http://{authority}{path}"),
        }
    }
}

/// An endpoint that is not `grpc://HOST:PORT` or `http://HOST:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint {0:?}: expected grpc://HOST:PORT or http://HOST:PORT[/PATH]")]
pub struct EndpointError(pub String);

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EndpointError(s.to_owned());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // HOST:PORT, the port a number: connections are made to it as given.
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let authority = authority.to_owned();
        match scheme {
            "grpc" if path.is_empty() || path == "/" => Ok(Endpoint::Grpc { authority }),
            "http" => Ok(Endpoint::Http {
                authority,
                path: match path {
                    "" | "/" => proto::receiver::TRACES_PATH.into(),
                    p => p.into(),
                },
            }),
            _ => Err(bad()),
        }
    }
}

/// A send that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    /// Per the OTLP spec: UNAVAILABLE, RESOURCE_EXHAUSTED with RetryInfo…
    /// (gRPC), 429/502/503/504 (HTTP), and lost connections.
    pub retryable: bool,
    /// The server's requested delay (RetryInfo, `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Timeouts of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per request, connecting included.
    pub request: Duration,
    pub connect: Duration,
}

/// One connection (gRPC: one HTTP/2 connection; HTTP: one HTTP/1.1
/// keep-alive connection), redialled when lost.
pub enum Connection {
    Grpc(OtlpClient),
    Http(HttpConnection),
}

impl Connection {
    /// Call inside a tokio runtime. Nothing is dialled until the first send.
    pub fn new(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Self, EndpointError> {
        match endpoint {
            Endpoint::Grpc { authority } => {
                let mut config = OtlpClientConfig::new(format!("http://{authority}"));
                config.timeout = timeouts.request;
                config.connect_timeout = timeouts.connect;
                OtlpClient::new(&config)
                    .map(Connection::Grpc)
                    .map_err(|e| EndpointError(e.to_string()))
            }
            Endpoint::Http { authority, path } => Ok(Connection::Http(HttpConnection {
                endpoint: endpoint.to_string(),
                authority: authority.clone(),
                path: path.clone(),
                sender: None,
                timeouts,
            })),
        }
    }

    /// Sends one encoded `ExportTraceServiceRequest`; returns the spans the
    /// server rejected in a partial success.
    pub async fn send(&mut self, body: Bytes) -> Result<u64, SendError> {
        match self {
            Connection::Grpc(client) => match client.export_in_one_frame(body).await {
                Ok(response) => Ok(response.rejected_spans),
                Err(e) => Err(SendError {
                    message: e.to_string(),
                    retryable: e.is_retryable(),
                    retry_after: e.retry_after(),
                }),
            },
            Connection::Http(http) => http.send(body).await,
        }
    }
}

pub struct HttpConnection {
    endpoint: String,
    authority: String,
    path: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeouts: Timeouts,
}

impl HttpConnection {
    fn lost(&mut self, what: &str, e: impl fmt::Display) -> SendError {
        // Whatever state the connection is in, the next send starts afresh.
        self.sender = None;
        SendError {
            message: format!("{}: {what}: {e}", self.endpoint),
            retryable: true,
            retry_after: None,
        }
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let stream = match tokio::time::timeout(
            self.timeouts.connect,
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        {
            Err(_) => return Err(self.lost("connect", "timed out")),
            Ok(Err(e)) => return Err(self.lost("connect", e)),
            Ok(Ok(stream)) => stream,
        };
        // Best effort: without it requests still work, only slower.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.lost("handshake", e))?;
        // Ends when the sender is dropped or the server closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn send(&mut self, body: Bytes) -> Result<u64, SendError> {
        let deadline = self.timeouts.request;
        match tokio::time::timeout(deadline, self.attempt(body)).await {
            Ok(result) => result,
            Err(_) => Err(self.lost("request", format!("no answer within {deadline:?}"))),
        }
    }

    async fn attempt(&mut self, body: Bytes) -> Result<u64, SendError> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        if let Err(e) = sender.ready().await {
            return Err(self.lost("connection", e));
        }
        let request = Request::post(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| SendError {
                message: format!("{}: building the request: {e}", self.endpoint),
                retryable: false,
                retry_after: None,
            })?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => return Err(self.lost("request", e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return Err(self.lost("response body", e)),
        };
        self.sender = Some(sender);
        if status == StatusCode::OK {
            let rejected = proto::ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
            return Ok(rejected);
        }
        let message = tonic_types::Status::decode(body)
            .map(|s| s.message)
            .unwrap_or_default();
        Err(SendError {
            message: format!("{}: HTTP {status}: {message}", self.endpoint),
            retryable: matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_from_urls() {
        assert_eq!(
            "grpc://127.0.0.1:4317".parse(),
            Ok(Endpoint::Grpc {
                authority: "127.0.0.1:4317".into()
            })
        );
        assert_eq!(
            "http://localhost:4318".parse(),
            Ok(Endpoint::Http {
                authority: "localhost:4318".into(),
                path: "/v1/traces".into()
            })
        );
        assert_eq!(
            "http://[::1]:9/otlp/v1/traces".parse(),
            Ok(Endpoint::Http {
                authority: "[::1]:9".into(),
                path: "/otlp/v1/traces".into()
            })
        );
        for bad in [
            "127.0.0.1:4317",
            "https://x:1",
            "grpc://x",
            "grpc://x:1/path",
            "http://:1",
            "http://x:port",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        let e: Endpoint = "http://h:1".parse().expect("parses");
        assert_eq!(e.to_string(), "http://h:1/v1/traces");
    }
}
