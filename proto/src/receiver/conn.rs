//! Accepting connections, for both OTLP protocols and the admin server: at
//! most `max_connections` open at once per listener, and for TLS the
//! handshake done here, bounded by `read_timeout`, before a connection
//! reaches the HTTP/2 or HTTP/1 server.
//!
//! A connection past the limit is accepted and closed at once, and counted:
//! the client sees a closed connection it can retry, rather than a SYN that
//! waits in the backlog while idle or hostile connections hold every slot.
//! A failed or slow handshake is closed and counted the same way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::ServerTls;

/// Connections handshaken but not yet taken by the server.
const READY_QUEUE: usize = 64;

/// How a listener accepts.
pub(crate) struct AcceptConfig {
    /// The `protocol` label of the connection metrics: `grpc`, `http`,
    /// `admin`.
    pub listener: &'static str,
    pub node: String,
    pub max_connections: usize,
    pub tls: Option<Arc<ServerTls>>,
    pub handshake_timeout: Duration,
    /// A connection is closed at this age, whatever it carries (the
    /// receiver's `max_connection_age` plus its grace; the server asked the
    /// client to go away at `max_connection_age`).
    pub hard_limit: Option<Duration>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection; holds its slot until dropped.
pub(crate) struct Conn {
    io: Io,
    info: TcpConnectInfo,
    _slot: OwnedSemaphorePermit,
    /// Past it, reads and writes fail, and the server drops the connection.
    end: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    pub(crate) fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.info.remote_addr
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl Conn {
    fn new(
        io: Io,
        info: TcpConnectInfo,
        slot: OwnedSemaphorePermit,
        hard_limit: Option<Duration>,
    ) -> Conn {
        Conn {
            io,
            info,
            _slot: slot,
            end: hard_limit.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }

    /// Whether the connection has outlived its hard limit. Polled by every
    /// read and write, so the server, which always has a read pending, is
    /// woken at the limit even on an idle connection.
    fn ended(&mut self, cx: &mut Context<'_>) -> bool {
        self.end
            .as_mut()
            .is_some_and(|end| end.as_mut().poll(cx).is_ready())
    }
}

fn past_age() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection closed: past max_connection_age and its grace",
    )
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended(cx) {
            return Poll::Ready(Err(past_age()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ended(cx) {
            return Poll::Ready(Err(past_age()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ended(cx) {
            return Poll::Ready(Err(past_age()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a connection was closed before it could carry a request: the
/// `reason` label of `tailgate_connections_refused_total`.
#[derive(Clone, Copy)]
enum Refused {
    Limit,
    Handshake,
}

const CONNECTIONS_REFUSED: &str = "tailgate_connections_refused_total";

struct ConnMetrics {
    limit: Counter,
    handshake: Counter,
}

impl ConnMetrics {
    fn new(node: &str, listener: &'static str) -> Self {
        metrics::describe_counter!(
            CONNECTIONS_REFUSED,
            metrics::Unit::Count,
            "Connections closed before a request: over max_connections, or a TLS handshake that failed or was too slow."
        );
        let counter = |reason: &'static str| {
            metrics::counter!(
                CONNECTIONS_REFUSED,
                "node" => node.to_owned(),
                "protocol" => listener,
                "reason" => reason
            )
        };
        ConnMetrics {
            limit: counter("limit"),
            handshake: counter("tls_handshake"),
        }
    }

    fn count(&self, reason: Refused) {
        match reason {
            Refused::Limit => self.limit.increment(1),
            Refused::Handshake => self.handshake.increment(1),
        }
    }
}

/// Accepts on `listener` until the returned receiver is dropped (the
/// server stopped), yielding connections ready for HTTP.
pub(crate) fn accept(
    listener: TcpListener,
    config: AcceptConfig,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    let metrics = Arc::new(ConnMetrics::new(&config.node, config.listener));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Per-connection failures (reset before accept, out of
                    // descriptors): back off briefly rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics.count(Refused::Limit);
                drop(tcp);
                continue;
            };
            // Best effort: a socket without TCP_NODELAY still works.
            let _ = tcp.set_nodelay(true);
            let info = TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: Some(remote),
            };
            match &config.tls {
                None => {
                    let conn = Conn::new(Io::Plain(tcp), info, slot, config.hard_limit);
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    // Handshakes run beside the accept loop, so one slow
                    // client cannot hold up the others.
                    let acceptor = tls.acceptor();
                    let tx = tx.clone();
                    let metrics = metrics.clone();
                    let timeout = config.handshake_timeout;
                    let hard_limit = config.hard_limit;
                    tokio::spawn(async move {
                        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let conn =
                                    Conn::new(Io::Tls(Box::new(stream)), info, slot, hard_limit);
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Ok(Err(e)) => {
                                metrics.count(Refused::Handshake);
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                metrics.count(Refused::Handshake);
                                tracing::debug!(%remote, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    rx
}
