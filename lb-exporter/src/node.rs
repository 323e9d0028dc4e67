//! The `tailgate lb` node: the OTLP receiver feeding the load-balancing
//! exporter, a resolver keeping its member set, and the admin server.
//! Logs go through a second exporter of the same kind on the same member
//! set ([`LbExporter::start_logs`]), so a trace's log records reach the
//! member that owns its spans; both drain in the same step. With
//! `logs_backend` set, records without a trace ID go to that backend instead
//! ([`crate::logs_backend`]).
//!
//! Shutdown order (one place): fail `/readyz` → stop the receivers (their
//! in-flight requests are answered) → drain the exporter until
//! `drain_timeout` (failing over as usual; what is left is dropped,
//! counted) → stop the resolver → stop the admin server, last, so the drain
//! shows on `/metrics` until the end.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::admin::{Admin, AdminError, Readiness};
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, ReceiverError, Refusal, Sink};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::exporter::{ExportConfig, ExportConfigError, LbExporter, SendError, StartError};
use crate::logs_backend::{self, LogsBackend};
use crate::resolver::{self, Membership, ResolverConfig, ResolverError};

/// The `tailgate lb` configuration (YAML; unknown keys are an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LbConfig {
    /// This node's name: the `node` label on every metric it exports.
    /// Default `tailgate-lb`.
    pub node: String,
    /// The OTLP receivers (see "Receiving OTLP"). Its `node` may be left
    /// out: the node's name above is used.
    pub receiver: ReceiverConfig,
    /// The admin server (`/metrics`, `/healthz`, `/readyz`) listen address.
    /// Default `0.0.0.0:8888`.
    pub admin: SocketAddr,
    /// TLS on the admin server (mTLS with `client_ca_file`). Default none:
    /// plain HTTP.
    pub admin_tls: Option<proto::tls::ServerTlsConfig>,
    /// Where the members (samplers) come from: `dns: {hostname, port,
    /// interval, timeout, nameservers}` or `static: {members}`. Required.
    pub resolver: ResolverConfig,
    /// How spans are sent to each member: queue size, batching, timeouts,
    /// retries, probing.
    pub export: ExportConfig,
    /// The delay clients are asked to wait before retrying a refused
    /// request (RetryInfo / `Retry-After`), at most. A request refused
    /// because a member's queue is full is asked to wait how soon that
    /// queue is expected to have room (the time to drain it to half its
    /// bound, at least `export.queue_wait`), capped by this; other refusals
    /// and a full queue that is not draining get this. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// On shutdown, how long the exporter may take to send what it holds
    /// before dropping the rest (counted). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Where log records without a trace ID go (OTLP/gRPC `LogsService`,
    /// the sampler's exporter keys). Default none: they are spread over the
    /// members that are up, in turn.
    pub logs_backend: Option<proto::exporter::ExporterConfig>,
}

pub const DEFAULT_NODE: &str = "tailgate-lb";
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8888);

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            node: DEFAULT_NODE.into(),
            receiver: ReceiverConfig::default(),
            admin: DEFAULT_ADMIN_ADDR,
            admin_tls: None,
            // Invalid on purpose (validate says "resolver is required"):
            // there is no sensible default member.
            resolver: ResolverConfig::Static(crate::resolver::StaticConfig {
                members: Vec::new(),
            }),
            export: ExportConfig::default(),
            retry_after: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            logs_backend: None,
        }
    }
}

/// A configuration that cannot work; found before any port is bound.
#[derive(Debug, thiserror::Error)]
pub enum LbConfigError {
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    #[error(transparent)]
    Export(#[from] ExportConfigError),
    #[error("logs_backend: {0}")]
    LogsBackend(#[from] proto::exporter::ExporterConfigError),
}

impl LbConfig {
    /// Checks every field and the rules between them.
    pub fn validate(&self) -> Result<(), LbConfigError> {
        let invalid = |field, why: &str| {
            Err(LbConfigError::Invalid {
                field,
                why: why.into(),
            })
        };
        if self.node.trim().is_empty() {
            return invalid("node", "must not be empty");
        }
        let receiver_default = ReceiverConfig::default().node;
        if self.receiver.node != self.node && self.receiver.node != receiver_default {
            return invalid(
                "receiver.node",
                "leave it out or set it equal to node: the LB labels all its metrics with node",
            );
        }
        if self.receiver.grpc.is_none() && self.receiver.http.is_none() {
            return invalid(
                "receiver",
                "both grpc and http are off: enable at least one",
            );
        }
        if self.receiver.max_request_bytes == 0 {
            return invalid("receiver.max_request_bytes", "must be at least 1");
        }
        for (field, listen) in [
            ("receiver.grpc", self.receiver.grpc),
            ("receiver.http", self.receiver.http),
        ] {
            if listen.is_some_and(|l| clashes(l, self.admin)) {
                return Err(LbConfigError::Invalid {
                    field,
                    why: format!("{} is also the admin address", self.admin),
                });
            }
        }
        if let (Some(g), Some(h)) = (self.receiver.grpc, self.receiver.http)
            && clashes(g, h)
        {
            return invalid("receiver.http", "is also the receiver.grpc address");
        }
        if let ResolverConfig::Static(s) = &self.resolver
            && s.members.is_empty()
        {
            return Err(ResolverError::Source("is required").into());
        }
        self.resolver.validate()?;
        self.export.validate()?;
        if self.retry_after.is_zero() {
            return invalid("retry_after", "must be more than 0");
        }
        if self.drain_timeout.is_zero() {
            return invalid("drain_timeout", "must be more than 0");
        }
        if let Some(backend) = &self.logs_backend {
            backend.validate()?;
        }
        Ok(())
    }
}

/// Two listen addresses that cannot both be bound (port 0 never clashes).
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The LB could not start, or a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("lb config: {0}")]
    Config(#[from] LbConfigError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    #[error("lb exporter: {0}")]
    Exporter(#[from] StartError),
    #[error("logs backend: {0}")]
    LogsBackend(#[from] proto::exporter::StartError),
    #[error("the lb must run inside a tokio runtime")]
    NoRuntime,
}

impl LbError {
    /// A bad configuration: exit code 64, not worth retrying.
    pub fn is_config(&self) -> bool {
        matches!(self, LbError::Config(_))
            || matches!(self, LbError::Admin(e) if e.is_config())
            || matches!(
                self,
                LbError::Receiver(
                    ReceiverError::Config(_) | ReceiverError::Tls(_) | ReceiverError::Auth(_)
                )
            )
    }

    /// Whether starting again later may work (a port still in use, the
    /// system DNS configuration unreadable).
    pub fn is_retryable(&self) -> bool {
        match self {
            LbError::Receiver(e) => e.is_retryable(),
            LbError::Admin(e) => e.is_retryable(),
            LbError::Resolver(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The receiver's view of the exporter.
struct LbSink {
    exporter: LbExporter,
    logs: LbExporter,
    logs_backend: Option<LogsBackend>,
    retry_after: Duration,
}

impl Sink for LbSink {
    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        self.send(&self.exporter, batch).await
    }

    async fn accept_logs(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let Some(backend) = &self.logs_backend else {
            return self.send(&self.logs, batch).await;
        };
        // The backend's part first (see crate::logs_backend for why).
        let split = logs_backend::split(&batch.request)?;
        let mut records = 0;
        if let Some(traceless) = split.traceless {
            records += traceless.spans;
            backend.send(traceless).await?;
        }
        if let Some(traced) = split.traced {
            let accepted = self
                .send(
                    &self.logs,
                    Batch {
                        request: traced,
                        ..batch
                    },
                )
                .await?;
            records += accepted.spans;
        }
        Ok(Accepted { spans: records })
    }
}

impl LbSink {
    /// Hands a request to `exporter` (spans or logs), or says why not.
    async fn send(&self, exporter: &LbExporter, batch: Batch) -> Result<Accepted, Refusal> {
        let retry_after = self.retry_after;
        match exporter.send_waiting(&batch.request).await {
            Ok(spans) => Ok(Accepted { spans }),
            Err(SendError::Invalid(e)) => Err(Refusal::from(e)),
            Err(SendError::Full {
                member,
                retry_after: soon,
            }) => {
                let retry_after = soon.map_or(retry_after, |d| d.min(retry_after));
                tracing::debug!(%member, ?retry_after, "member queue full, refusing (backpressure)");
                Err(Refusal::Overloaded { retry_after })
            }
            Err(
                e @ (SendError::NoMembers | SendError::AllMembersDown { .. } | SendError::Closed),
            ) => {
                tracing::debug!(error = %e, "refusing: no member can take it");
                Err(Refusal::Unavailable { retry_after })
            }
        }
    }
}

/// A bound LB node, not yet serving: every port is bound and the resolver
/// and exporter are running.
pub struct Lb {
    receiver: Receiver,
    admin: Admin,
    membership: Membership,
    exporter: LbExporter,
    logs: LbExporter,
    logs_backend: Option<LogsBackend>,
    retry_after: Duration,
    drain_timeout: Duration,
}

impl Lb {
    /// Everything [`bind`](Lb::bind) checks before it binds a port: the
    /// config's rules, the receivers' and the admin port's TLS files and
    /// tokens (the export block's TLS is part of `validate`). Binds nothing,
    /// starts nothing: `tailgate config check`.
    pub fn check(config: &LbConfig) -> Result<(), LbError> {
        config.validate()?;
        Receiver::check(&config.receiver)?;
        if let Some(tls) = &config.admin_tls {
            proto::tls::ServerTls::new(tls, &[b"h2", b"http/1.1"])
                .map_err(|e| LbError::Admin(AdminError::Tls(e)))?;
        }
        Ok(())
    }

    /// Validates `config`, binds the receivers and the admin server, starts
    /// the resolver and the exporter. Must be called inside a tokio runtime.
    pub fn bind(mut config: LbConfig) -> Result<Lb, LbError> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| LbError::NoRuntime)?;
        // Before any component: handles bind to the recorder when created.
        proto::admin::install_metrics();
        config.receiver.node = config.node.clone();
        let receiver = Receiver::bind(config.receiver)?;
        let admin = Admin::bind_tls(config.admin, config.admin_tls.as_ref(), &config.node)?;
        let membership = resolver::start(&config.resolver, &config.node)?;
        let exporter = LbExporter::start(&config.export, &config.node, membership.subscribe())?;
        let logs = LbExporter::start_logs(&config.export, &config.node, membership.subscribe())?;
        let logs_backend = config
            .logs_backend
            .map(|backend| {
                LogsBackend::start(
                    backend,
                    &config.node,
                    config.export.queue_wait,
                    config.retry_after,
                )
            })
            .transpose()?;
        Ok(Lb {
            receiver,
            admin,
            membership,
            exporter,
            logs,
            logs_backend,
            retry_after: config.retry_after,
            drain_timeout: config.drain_timeout,
        })
    }

    /// The bound OTLP/gRPC address, if enabled.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.receiver.grpc_addr()
    }

    /// The bound OTLP/HTTP address, if enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.receiver.http_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The exporter, for inspection.
    pub fn exporter(&self) -> &LbExporter {
        &self.exporter
    }

    /// The logs exporter, for inspection.
    pub fn logs_exporter(&self) -> &LbExporter {
        &self.logs
    }

    /// Serves until `shutdown` completes, then shuts down in the order
    /// written at the top of this module.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), LbError> {
        let Lb {
            receiver,
            admin,
            membership,
            exporter,
            logs,
            logs_backend,
            retry_after,
            drain_timeout,
        } = self;
        let readiness = Readiness::new();
        let (stop_receiver, receiver_stopped) = watch::channel(false);
        let (stop_admin, admin_stopped) = watch::channel(false);
        let admin_task = tokio::spawn(admin.serve(
            proto::admin::install_metrics(),
            readiness.clone(),
            until(admin_stopped),
        ));
        let ready_task = tokio::spawn(track_readiness(
            exporter.clone(),
            readiness.clone(),
            receiver_stopped.clone(),
        ));
        let sink = Arc::new(LbSink {
            exporter: exporter.clone(),
            logs: logs.clone(),
            logs_backend: logs_backend.clone(),
            retry_after,
        });
        let serving = receiver.serve(sink, until(receiver_stopped));
        tokio::pin!(serving);
        let served = tokio::select! {
            result = &mut serving => result,
            () = shutdown => {
                readiness.set_ready(false);
                stop_receiver.send_replace(true);
                serving.await
            }
        };
        readiness.set_ready(false);
        stop_receiver.send_replace(true);
        let deadline = Instant::now() + drain_timeout;
        let backend_shutdown = async {
            match &logs_backend {
                Some(backend) => backend.shutdown(deadline).await.dropped_spans,
                None => 0,
            }
        };
        let (report, logs_report, backend_dropped) = tokio::join!(
            exporter.shutdown(deadline),
            logs.shutdown(deadline),
            backend_shutdown
        );
        if backend_dropped > 0 {
            tracing::warn!(
                dropped = backend_dropped,
                "log records for the logs backend still held at the drain deadline were dropped"
            );
        }
        if report.dropped_spans > 0 {
            tracing::warn!(
                dropped = report.dropped_spans,
                "spans still held at the drain deadline were dropped"
            );
        }
        if logs_report.dropped_spans > 0 {
            tracing::warn!(
                dropped = logs_report.dropped_spans,
                "log records still held at the drain deadline were dropped"
            );
        }
        membership.stop().await;
        let _ = ready_task.await;
        stop_admin.send_replace(true);
        let admin = match admin_task.await {
            Ok(result) => result.map_err(LbError::from),
            Err(e) => {
                tracing::error!(error = %e, "admin server task failed");
                Ok(())
            }
        };
        served?;
        admin
    }
}

/// Binds everything, serves until `shutdown`, then stops in order: fail
/// readiness, stop the receivers, drain the exporter within
/// `drain_timeout`, stop the resolver and the admin server.
pub async fn run(
    config: LbConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LbError> {
    Lb::bind(config)?.serve(shutdown).await
}

async fn until(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Ready while a member is known and one is up; re-checked every 100 ms
/// (cheap) until the receivers stop.
async fn track_readiness(
    exporter: LbExporter,
    readiness: Readiness,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        readiness.set_ready(exporter.is_ready());
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    readiness.set_ready(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::StaticConfig;

    fn valid() -> LbConfig {
        LbConfig {
            resolver: ResolverConfig::Static(StaticConfig {
                members: vec!["10.0.0.1:4317".into()],
            }),
            ..LbConfig::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c: LbConfig =
            serde_json::from_str(r#"{"resolver": {"static": {"members": ["a:1"]}}}"#).unwrap();
        assert_eq!(c.node, "tailgate-lb");
        assert_eq!(c.admin, "0.0.0.0:8888".parse().unwrap());
        assert_eq!(c.receiver, ReceiverConfig::default());
        assert_eq!(c.export, ExportConfig::default());
        assert_eq!(c.retry_after, Duration::from_secs(1));
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_yaml_file_reads_as_documented() {
        let yaml = r#"
node: lb-a
receiver:
  grpc: 0.0.0.0:4317
  http: "off"
admin: 127.0.0.1:9888
resolver:
  dns:
    hostname: tailgate-sampler.tailgate.svc.cluster.local.
    interval: 2s
    nameservers: ["10.96.0.10"]
export:
  queue_bytes: 8388608
  batch_timeout: 1ms
retry_after: 500ms
"#;
        let c: LbConfig = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(c.node, "lb-a");
        assert_eq!(c.receiver.http, None);
        let ResolverConfig::Dns(dns) = &c.resolver else {
            panic!("{:?}", c.resolver)
        };
        assert_eq!(dns.interval, Duration::from_secs(2));
        assert_eq!(dns.port, 4317);
        assert_eq!(c.export.queue_bytes, 8 << 20);
        assert_eq!(c.export.batch_timeout, Duration::from_millis(1));
        assert_eq!(c.retry_after, Duration::from_millis(500));
        assert!(c.validate().is_ok());
        let listed: LbConfig =
            serde_yaml_ng::from_str("resolver:\n  static:\n    members: [a:1, \"[::1]:2\"]\n")
                .unwrap();
        assert!(listed.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        for bad in [
            r#"{"nodes": "x"}"#,
            r#"{"export": {"queue_size": 1}}"#,
            r#"{"receiver": {"grcp": "0.0.0.0:1"}}"#,
            r#"{"resolver": {"dns": {"host": "x"}}}"#,
        ] {
            let e = serde_json::from_str::<LbConfig>(bad).unwrap_err();
            assert!(e.to_string().contains("unknown"), "{bad}: {e}");
        }
    }

    #[test]
    fn cross_field_rules_name_the_field() {
        let msg = |f: fn(&mut LbConfig)| {
            let mut c = valid();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(
            msg(|c| c.resolver = LbConfig::default().resolver).starts_with("resolver is required")
        );
        assert!(msg(|c| c.admin = "0.0.0.0:4317".parse().unwrap()).starts_with("receiver.grpc:"));
        assert!(
            msg(|c| c.receiver.http = Some("127.0.0.1:4317".parse().unwrap()))
                .starts_with("receiver.http:")
        );
        assert!(msg(|c| c.receiver.node = "other".into()).starts_with("receiver.node:"));
        assert!(msg(|c| c.node = " ".into()).starts_with("node:"));
        assert!(msg(|c| c.export.concurrency = 0).contains("export.concurrency"));
        assert!(msg(|c| c.retry_after = Duration::ZERO).starts_with("retry_after"));
        assert!(
            msg(|c| c.logs_backend = Some(proto::exporter::ExporterConfig::default()))
                .starts_with("logs_backend:")
        );
        // The node's own name in receiver.node is fine, and port 0 never
        // clashes.
        let mut c = valid();
        c.receiver.node = c.node.clone();
        c.admin = "127.0.0.1:0".parse().unwrap();
        c.receiver.grpc = Some("127.0.0.1:0".parse().unwrap());
        c.receiver.http = Some("127.0.0.1:0".parse().unwrap());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_bad_config_is_a_config_error_before_anything_is_bound() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(run(LbConfig::default(), async {})).unwrap_err();
        assert!(err.is_config() && !err.is_retryable(), "{err}");
    }
}
