//! The admin HTTP server every role runs (port 8888 by default):
//! `GET /metrics` (Prometheus text), `GET /healthz` (200 while the process
//! serves) and `GET /readyz` (200 when [`Readiness`] says so, 503 otherwise;
//! a sampler fails it on SIGTERM so LBs and DNS stop sending to it).
//!
//! Plain HTTP by default; with `admin_tls` in a node's config it is served
//! over TLS only (mTLS with `client_ca_file`: only scrapers holding a
//! certificate from that CA), with the receivers' accept loop: handshakes
//! beside the accept loop, bounded in time and in connections, counted
//! under `tailgate_connections_refused_total{protocol="admin"}`, and the
//! files re-read when they change.
//!
//! Metrics go through the `metrics` facade to one global Prometheus recorder,
//! installed by [`install_metrics`]. Install it before building components:
//! their counter handles bind to the recorder in place when they are created.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::mpsc;

use crate::receiver::conn::{self, AcceptConfig, Conn};
use crate::tls::{ServerTls, ServerTlsConfig, TlsError};

/// With TLS: the longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// With TLS: open admin connections at most (scrapers and probes are few).
const MAX_CONNECTIONS: usize = 256;

/// Histogram buckets for durations (`*_seconds` and any histogram without a
/// more specific rule): 0.5 ms to 60 s.
/// For `tailgate_policy_evaluation_seconds`: 250 ns to 10 ms.
const POLICY_SECONDS_BUCKETS: &[f64] = &[
    2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2,
];
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// For `*_bytes`: 256 B to 64 MiB, ×4 per bucket (requests are capped at
/// 16 MiB by default).
const BYTES_BUCKETS: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
/// For `*_spans` (spans per request or per trace).
const SPANS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// How often histograms are drained into their buckets between scrapes, so
/// their pending samples stay bounded when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder the first time it is called
/// and returns a handle to render it; later calls return the same handle.
///
/// If another recorder was installed first (outside tailgate), the handle
/// still works but stays empty, and a warning is logged.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!("metrics recorder not installed, /metrics will be empty: {e}");
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                // Rendering drains histograms too; only memory between
                // scrapes is at stake.
                tracing::warn!("metrics upkeep thread not started: {e}");
            }
            handle
        })
        .clone()
}

fn builder() -> PrometheusBuilder {
    // These calls fail only on an empty bucket list; ours are constants.
    const NON_EMPTY: &str = "bucket lists are non-empty constants";
    let mut builder = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)
        .expect(NON_EMPTY);
    for (suffix, buckets) in [
        ("_seconds", SECONDS_BUCKETS),
        ("_bytes", BYTES_BUCKETS),
        ("_spans", SPANS_BUCKETS),
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Suffix(suffix.into()), buckets)
            .expect(NON_EMPTY);
    }
    // One policy on one trace takes microseconds: the general buckets would
    // put every observation in the first.
    builder
        .set_buckets_for_metric(
            Matcher::Full("tailgate_policy_evaluation_seconds".into()),
            POLICY_SECONDS_BUCKETS,
        )
        .expect(NON_EMPTY)
}

/// Whether this node should receive traffic, and while it should not, why
/// (`/readyz` says it: a sampler recovering its log reports its progress).
/// Cheap to clone; all clones share one flag. Starts not ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>, Arc<std::sync::Mutex<String>>);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// What `/readyz` says while not ready (one line; empty: "not ready").
    pub fn set_detail(&self, detail: impl Into<String>) {
        let mut d = self.1.lock().unwrap_or_else(|e| e.into_inner());
        *d = detail.into();
    }

    fn detail(&self) -> String {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The admin server failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("binding the admin listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin_tls: {0}")]
    Tls(#[from] TlsError),
    #[error("admin server on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl AdminError {
    /// Binding may succeed later (the port is freed); a serve error is final.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AdminError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

impl AdminError {
    /// A certificate or key that cannot be used: the configuration's fault.
    pub fn is_config(&self) -> bool {
        matches!(self, AdminError::Tls(_))
    }
}

/// A bound, not yet serving, admin server.
#[derive(Debug)]
pub struct Admin {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    /// TLS, and the node's name for the connection metrics.
    tls: Option<(Arc<ServerTls>, String)>,
}

#[derive(Clone)]
struct AdminState {
    handle: PrometheusHandle,
    readiness: Readiness,
}

impl Admin {
    /// Binds the listener (use port 0 for any free port). Needs no runtime,
    /// so a bad address fails before anything starts.
    pub fn bind(addr: SocketAddr) -> Result<Admin, AdminError> {
        Admin::bind_tls(addr, None, "")
    }

    /// [`Admin::bind`], served over TLS when `tls` is set. The files are
    /// loaded first: one that cannot be used fails before the port is bound.
    /// `node` labels the connection metrics.
    pub fn bind_tls(
        addr: SocketAddr,
        tls: Option<&ServerTlsConfig>,
        node: &str,
    ) -> Result<Admin, AdminError> {
        let tls = tls
            .map(|config| ServerTls::new(config, &[b"h2", b"http/1.1"]))
            .transpose()?
            .map(|tls| (Arc::new(tls), node.to_owned()));
        let bind = |addr| {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            let local = listener.local_addr()?;
            Ok::<_, std::io::Error>((listener, local))
        };
        let (listener, addr) = bind(addr).map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Admin {
            listener,
            addr,
            tls,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn serve(
        self,
        handle: PrometheusHandle,
        readiness: Readiness,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AdminError> {
        let addr = self.addr;
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|source| AdminError::Serve { addr, source })?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(AdminState { handle, readiness });
        let served = match self.tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some((tls, node)) => {
                let ready = conn::accept(
                    listener,
                    AcceptConfig {
                        listener: "admin",
                        node,
                        max_connections: MAX_CONNECTIONS,
                        tls: Some(tls),
                        handshake_timeout: HANDSHAKE_TIMEOUT,
                        hard_limit: None,
                    },
                );
                axum::serve(TlsListener { ready, addr }, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        served.map_err(|source| AdminError::Serve { addr, source })
    }
}

/// Connections that finished their TLS handshake, for axum.
struct TlsListener {
    ready: mpsc::Receiver<std::io::Result<Conn>>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.ready.recv().await {
                Some(Ok(conn)) => {
                    let remote = conn.remote_addr().unwrap_or(self.addr);
                    return (conn, remote);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "admin accept failed"),
                // The accept loop ended (its listener failed): serve what is
                // open until shutdown.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.handle.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let detail = state.readiness.detail();
    let body = if detail.is_empty() {
        "not ready\n".to_owned()
    } else {
        format!("not ready: {detail}\n")
    };
    (StatusCode::SERVICE_UNAVAILABLE, body)
}
