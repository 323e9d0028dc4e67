//! `tailgate local`: an LB and N samplers in one process on loopback, the
//! whole cluster for trying tailgate out.
//!
//! The samplers listen on ephemeral loopback ports and are the LB's static
//! members; their admin servers too. Every node records into the one
//! process-wide metrics registry, labelled by `node`, so the LB's admin
//! port shows the metrics of all of them. Kept traces go straight to a
//! gRPC target, or through the in-process [`Egress`] for the others.
//!
//! Shutdown order (SIGTERM/SIGINT): the LB stops receiving and drains to the
//! samplers; then the samplers decide everything pending and drain to the
//! target; then the egress stops.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lb_exporter::resolver::{ResolverConfig, StaticConfig};
use lb_exporter::{Lb, LbConfig};
use proto::receiver::{Receiver, ReceiverConfig};
use sampler::{Sampler, SamplerConfig};
use tokio::sync::watch;

use crate::egress::{Egress, Target};

/// The default policy: keep errors, traces slower than 500 ms, 10% of the rest.
pub const DEFAULT_POLICY: &str = include_str!("../examples/policy.yaml");

/// What `tailgate local` runs.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub samplers: usize,
    /// `None`: the embedded default, written to a temporary file.
    pub policy: Option<PathBuf>,
    pub export: Target,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// `KEY=VALUE` overrides applied to every sampler's config.
    pub set_sampler: Vec<String>,
    /// `KEY=VALUE` overrides applied to the LB's config.
    pub set_lb: Vec<String>,
}

/// An error and whether it is the user's configuration (exit 64).
pub type LocalError = (bool, String);

fn config_error(e: impl std::fmt::Display) -> LocalError {
    (true, e.to_string())
}

fn runtime_error(e: impl std::fmt::Display) -> LocalError {
    (false, e.to_string())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Completes when the watch turns true.
async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

pub async fn run(
    config: LocalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LocalError> {
    if config.samplers == 0 {
        return Err(config_error("--samplers must be at least 1"));
    }
    // The embedded policy goes to a file of our own, so the samplers load
    // (and would reload) it like any other.
    let scratch = std::env::temp_dir().join(format!("tailgate-local-{}", std::process::id()));
    let policy_file = match &config.policy {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(&scratch).map_err(runtime_error)?;
            let path = scratch.join("policy.yaml");
            std::fs::write(&path, DEFAULT_POLICY).map_err(runtime_error)?;
            path
        }
    };

    // The egress first: the samplers need its address.
    let (egress_stop, egress_rx) = watch::channel(false);
    let (endpoint, egress_task) = match Egress::new(&config.export).map_err(config_error)? {
        None => match &config.export {
            Target::Grpc(endpoint) => (endpoint.clone(), None),
            _ => unreachable!("only a gRPC target has no egress"),
        },
        Some(egress) => {
            let receiver = Receiver::bind(ReceiverConfig {
                grpc: Some(loopback(0)),
                http: None,
                node: "egress".into(),
                ..ReceiverConfig::default()
            })
            .map_err(runtime_error)?;
            let addr = receiver
                .grpc_addr()
                .ok_or_else(|| runtime_error("egress has no address"))?;
            let task = tokio::spawn(receiver.serve(Arc::new(egress), until(egress_rx)));
            (format!("http://{addr}"), Some(task))
        }
    };

    let mut samplers = Vec::with_capacity(config.samplers);
    let mut members = Vec::with_capacity(config.samplers);
    for i in 0..config.samplers {
        let mut sc = SamplerConfig {
            node: format!("sampler-{i}"),
            admin: loopback(0),
            policy_file: policy_file.clone(),
            ..SamplerConfig::default()
        };
        sc.receiver.grpc = Some(loopback(0));
        sc.receiver.http = None;
        sc.exporter.endpoint = endpoint.clone();
        let sc = crate::config::with_overrides(&sc, &config.set_sampler, "--set-sampler")
            .map_err(config_error)?;
        sc.validate().map_err(config_error)?;
        let sampler = Sampler::bind(sc).map_err(|e| (e.is_config(), e.to_string()))?;
        let addr = sampler
            .grpc_addr()
            .ok_or_else(|| runtime_error("sampler has no gRPC address"))?;
        members.push(addr.to_string());
        samplers.push(sampler);
    }

    let mut lc = LbConfig {
        node: "lb".into(),
        admin: config.admin,
        resolver: ResolverConfig::Static(StaticConfig {
            members: members.clone(),
        }),
        ..LbConfig::default()
    };
    lc.receiver.grpc = Some(config.grpc);
    lc.receiver.http = Some(config.http);
    let lc =
        crate::config::with_overrides(&lc, &config.set_lb, "--set-lb").map_err(config_error)?;
    lc.validate().map_err(config_error)?;
    let lb = Lb::bind(lc).map_err(|e| (e.is_config(), e.to_string()))?;

    eprintln!(
        "tailgate local: {} samplers ({}), policy {}, export {}\n\
         \x20 send OTLP/gRPC to {}  OTLP/HTTP to http://{}/v1/traces\n\
         \x20 metrics of every node: http://{}/metrics  (Ctrl-C to stop)",
        config.samplers,
        members.join(", "),
        config
            .policy
            .as_ref()
            .map_or("embedded default (examples/policy.yaml)".into(), |p| p
                .display()
                .to_string()),
        match &config.export {
            Target::Grpc(e) => format!("grpc {e}"),
            Target::Http(e) => format!("http {e}/v1/traces"),
            Target::File(p) => format!("OTLP/JSON lines to {}", p.display()),
            Target::Stdout => "a summary line per kept trace on stdout".into(),
        },
        lb.grpc_addr().map_or("-".into(), |a| a.to_string()),
        lb.http_addr().map_or("-".into(), |a| a.to_string()),
        lb.admin_addr(),
    );

    let (sampler_stop, sampler_rx) = watch::channel(false);
    let sampler_tasks: Vec<_> = samplers
        .into_iter()
        .map(|s| tokio::spawn(s.serve(until(sampler_rx.clone()))))
        .collect();

    // The LB drains into the samplers before they are told to stop.
    let lb_result = lb.serve(shutdown).await.map_err(runtime_error);
    let _ = sampler_stop.send(true);
    let mut result = lb_result;
    for task in sampler_tasks {
        let r = match task.await {
            Ok(r) => r.map_err(runtime_error),
            Err(e) => Err(runtime_error(e)),
        };
        if result.is_ok() {
            result = r;
        }
    }
    let _ = egress_stop.send(true);
    if let Some(task) = egress_task {
        let r = match task.await {
            Ok(r) => r.map_err(runtime_error),
            Err(e) => Err(runtime_error(e)),
        };
        if result.is_ok() {
            result = r;
        }
    }
    if config.policy.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}
