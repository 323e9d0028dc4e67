//! The sampler's configuration (the YAML `tailgate sampler --config FILE`
//! reads), its defaults and cross-field checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lb_exporter::resolver::ResolverConfig;
use lb_exporter::{ExportConfig, Member};
use policy::PolicyFile;
use proto::exporter::ExporterConfig;
use proto::receiver::ReceiverConfig;
use serde::{Deserialize, Serialize};

use crate::buffer::BufferSettings;
use crate::error::SamplerError;

const MIB: usize = 1024 * 1024;

/// Everything a sampler node needs. Unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// This node's name: the `node` label of every metric. It also replaces
    /// `receiver.node` and `exporter.node`, so all of a node's metrics
    /// agree. Default `tailgate`.
    pub node: String,
    /// The OTLP receivers (gRPC 0.0.0.0:4317, HTTP 0.0.0.0:4318 by default).
    pub receiver: ReceiverConfig,
    /// The admin server: `/metrics`, `/healthz`, `/readyz`. Default
    /// `0.0.0.0:8888`.
    pub admin: SocketAddr,
    /// TLS on the admin server (mTLS with `client_ca_file`). Default none:
    /// plain HTTP.
    pub admin_tls: Option<proto::tls::ServerTlsConfig>,
    /// The policy file (the OTel Collector's `tail_sampling` syntax).
    /// Required. Reloaded when it changes and on SIGHUP.
    pub policy_file: PathBuf,
    /// How often the policy file is checked for a change. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub policy_poll_interval: Duration,
    /// The backend kept traces go to (OTLP/gRPC). `endpoint` is required.
    pub exporter: ExporterConfig,
    /// Where log records go (OTLP/gRPC `LogsService`): those of kept
    /// traces, those without a trace ID. Same keys as `exporter`. Default:
    /// `exporter`'s settings (OTLP backends take both signals), named
    /// `logs` on the exporter metrics.
    pub logs_exporter: Option<ExporterConfig>,
    /// Buffer limits and backpressure.
    pub limits: LimitsConfig,
    /// Decisions remembered for late spans.
    pub decision_cache: DecisionCacheConfig,
    /// Write the deciding policy's name into each kept span as the
    /// `tailsampling.policy` attribute (the Collector's `recordpolicy`
    /// feature gate). Default false.
    pub record_policy: bool,
    /// The Collector's `processor.tailsamplingprocessor.usetracestate`
    /// feature gate (off by default there in v0.165, and here): kept spans
    /// carry the OTel sampling threshold (`ot=th:…`) of the least strict
    /// policy that kept their trace (`th:0` for a policy that is not
    /// probabilistic), and `probabilistic` decides by the spans' `ot=rv`
    /// randomness when they carry one. Default false.
    pub use_tracestate: bool,
    /// Decide every trace but forward all of them, each span marked with
    /// the decision (`tailsampling.dry_run.kept`, bool) and the deciding
    /// policy (`tailsampling.policy`), so tailgate can run beside another
    /// pipeline and be compared with it. The decision metrics count what
    /// would have been kept. No sampling threshold is written (every trace
    /// arrives). Default false.
    pub dry_run: bool,
    /// Shards of the trace buffer, each owned by one task. Default 0: one
    /// per CPU.
    pub shards: usize,
    /// Requests queued per shard before the receivers refuse (429 /
    /// RESOURCE_EXHAUSTED). Default 64.
    pub shard_queue: usize,
    /// The staged shutdown on SIGTERM.
    pub shutdown: ShutdownConfig,
    /// Membership of the sampler tier. Default none: this node owns every
    /// trace it receives (a single sampler, or LBs with a static ring and
    /// no rescale). See [`ClusterConfig`].
    pub cluster: Option<ClusterConfig>,
    /// The durable buffer (ours, not the Collector's): accepted spans,
    /// first-seen times and decisions go to a write-ahead log in
    /// `storage.path`, and a restarted node recovers its buffer and
    /// decisions from it. Default none: a SIGKILL loses the buffer. See
    /// [`StorageConfig`].
    pub storage: Option<StorageConfig>,
}

/// The `storage:` block: where the write-ahead log lives and how it
/// commits. What a crash (SIGKILL, node loss) can lose:
///
/// - `durable_ack: false` (default): spans accepted in the last
///   `commit_interval` before the crash (they were acknowledged to the
///   client before they were synced).
/// - `durable_ack: true`: nothing acknowledged; the client waits up to one
///   `commit_interval` longer for each answer.
///
/// Kept traces count as delivered once handed to the exporter: a crash
/// loses what the exporter held in memory (at most `exporter.queue_bytes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The log's directory (created if missing; one node's only).
    /// Required.
    pub path: PathBuf,
    /// Group commit: appended records are written and synced together at
    /// most this long after they arrive. Default 50 ms.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Answer a client only once its spans are synced to disk. Default
    /// false.
    #[serde(default)]
    pub durable_ack: bool,
    /// The log's budget in bytes: past it the receivers refuse with a
    /// retryable status (counted as `reason="storage_full"`), as on a full
    /// disk. Default 8 GiB.
    #[serde(default = "default_storage_max_bytes")]
    pub max_bytes: u64,
    /// A segment file is closed past this many bytes. Default 64 MiB.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// A segment older than this is deleted even if some trace in it was
    /// never settled here. Default 1 h.
    #[serde(default = "default_storage_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn default_commit_interval() -> Duration {
    Duration::from_millis(50)
}

fn default_storage_max_bytes() -> u64 {
    8 * 1024 * MIB as u64
}

fn default_segment_bytes() -> u64 {
    64 * MIB as u64
}

fn default_storage_max_age() -> Duration {
    Duration::from_secs(3600)
}

impl StorageConfig {
    /// A log in `path`, every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig {
            path: path.into(),
            commit_interval: default_commit_interval(),
            durable_ack: false,
            max_bytes: default_storage_max_bytes(),
            segment_bytes: default_segment_bytes(),
            max_age: default_storage_max_age(),
        }
    }

    fn validate(&self) -> Result<(), SamplerError> {
        let bad = |field: &'static str, rule: &str| {
            Err(SamplerError::Config {
                field,
                rule: rule.to_owned(),
            })
        };
        if self.path.as_os_str().is_empty() {
            return bad("storage.path", "is required");
        }
        if self.commit_interval.is_zero() {
            return bad("storage.commit_interval", "must be more than 0");
        }
        if self.segment_bytes < 4096 {
            return bad("storage.segment_bytes", "must be at least 4096");
        }
        if self.max_bytes < self.segment_bytes {
            return bad(
                "storage.max_bytes",
                "must be at least storage.segment_bytes",
            );
        }
        if self.max_age.is_zero() {
            return bad("storage.max_age", "must be more than 0");
        }
        Ok(())
    }
}

/// The sampler tier as one cluster: the member set (the same `resolver:`
/// block as the LBs', so every node builds the same ring), this node's own
/// name on it, and how traces move between members: stray spans forwarded
/// to their owner, traces and decisions redistributed on a membership
/// change and handed over at shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the member set comes from: `dns: {hostname, port, interval,
    /// ...}` (the samplers' headless Service) or `static: {members: [...]}`.
    /// Required; give the LBs the same block.
    pub resolver: ResolverConfig,
    /// This node's member name, spelt as the resolver lists it: `IP:port`
    /// (`TAILGATE__CLUSTER__SELF=$(POD_IP):4317`), or a bare IP, to which
    /// the DNS resolver's port is added. Required.
    #[serde(rename = "self")]
    pub self_member: String,
    /// How stray spans are forwarded to their owner: the LB's `export:`
    /// block (queues per member, failover, probing). Its `headers` get the
    /// forwarded mark added.
    #[serde(default)]
    pub forward: ExportConfig,
    /// The budget for redistribution after a membership change, in encoded
    /// bytes per second pushed to new owners (traces and decisions). Default
    /// 32 MiB/s. The shutdown hand-over is bounded by its deadline instead.
    #[serde(default = "default_redistribute_bytes_per_second")]
    pub redistribute_bytes_per_second: u64,
    /// How long the member set must stay the same before traces are
    /// redistributed, so that a burst of changes moves each trace once.
    /// Default 1 s.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// After a redistribution that could not reach some owner (their traces
    /// stay here meanwhile), try again this long later. Default 5 s.
    #[serde(default = "default_retry_interval", with = "humantime_serde")]
    pub retry_interval: Duration,
    /// The longest one push to another sampler may take. Default 5 s.
    #[serde(default = "default_push_timeout", with = "humantime_serde")]
    pub push_timeout: Duration,
    /// At shutdown, the deadline for handing every trace over (from the end
    /// of `shutdown.grace`); what is not handed over by then is decided
    /// here, within `shutdown.drain_timeout`. Default 5 s; at most
    /// `shutdown.drain_timeout`.
    #[serde(default = "default_handover_timeout", with = "humantime_serde")]
    pub handover_timeout: Duration,
    /// Fleet-wide budgets (a tailgate extension): `rate_limiting`,
    /// `bytes_limiting`, `composite` and the throughput goals of the policy
    /// file are the whole tier's, each sampler taking a share by its demand.
    /// Default true; false makes every budget each node's, as standalone.
    #[serde(default = "default_fleet_budgets")]
    pub fleet_budgets: bool,
    /// How often samplers exchange their demand counts and recompute their
    /// shares. Default 1 s; at least 100 ms.
    #[serde(default = "default_fleet_interval", with = "humantime_serde")]
    pub fleet_interval: Duration,
}

fn default_fleet_budgets() -> bool {
    true
}

fn default_fleet_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_redistribute_bytes_per_second() -> u64 {
    32 * MIB as u64
}

fn default_settle() -> Duration {
    Duration::from_secs(1)
}

fn default_retry_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_push_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_handover_timeout() -> Duration {
    Duration::from_secs(5)
}

impl ClusterConfig {
    /// A cluster over `resolver` in which this node is `self_member`, every
    /// other setting at its default.
    pub fn new(resolver: ResolverConfig, self_member: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            resolver,
            self_member: self_member.into(),
            forward: ExportConfig::default(),
            redistribute_bytes_per_second: default_redistribute_bytes_per_second(),
            settle: default_settle(),
            retry_interval: default_retry_interval(),
            push_timeout: default_push_timeout(),
            handover_timeout: default_handover_timeout(),
            fleet_budgets: default_fleet_budgets(),
            fleet_interval: default_fleet_interval(),
        }
    }

    /// This node's member name: `self` as given, or a bare IP with the DNS
    /// resolver's port (as the DNS resolver spells it).
    pub fn self_member(&self) -> Result<Member, SamplerError> {
        let bad = |rule: String| SamplerError::Config {
            field: "cluster.self",
            rule,
        };
        if let Ok(ip) = self.self_member.trim().parse::<std::net::IpAddr>() {
            return match &self.resolver {
                ResolverConfig::Dns(dns) => Ok(Member::from_addr(SocketAddr::new(ip, dns.port))),
                ResolverConfig::Static(_) => Err(bad(format!(
                    "{:?} has no port: with a static resolver, write it as in the member list",
                    self.self_member
                ))),
            };
        }
        Member::parse(self.self_member.trim()).map_err(|e| bad(format!("{e}")))
    }
}

/// How much the buffer may hold, and when receivers push back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Traces buffered at most; past it the oldest are decided early on
    /// what they have. Default: the policy file's `num_traces` (50,000 if
    /// it sets none), following it on reload.
    pub max_traces: Option<usize>,
    /// Bytes buffered at most (span bytes as stored, plus per-trace and
    /// per-header bookkeeping); past it the oldest traces are decided
    /// early. Default 512 MiB.
    pub max_buffer_bytes: usize,
    /// The share of `max_traces` and of `max_buffer_bytes` above which the
    /// receivers refuse new requests with a retryable status (429 /
    /// RESOURCE_EXHAUSTED) instead of taking them. Between 0 and 1.
    /// Default 0.9.
    pub high_watermark: f64,
    /// A trace is decided at once when it holds this many spans. Default
    /// 10,000.
    pub max_spans_per_trace: u64,
    /// A trace is decided at once when its spans add up to this many
    /// encoded bytes. Default 8 MiB.
    pub max_bytes_per_trace: u64,
    /// The `Retry-After` (RetryInfo) given with an overloaded refusal.
    /// Default 1 s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// After a request is refused for backpressure, how long the decisions
    /// of the traces it carried wait for the client's retry (counted from
    /// the last refusal; never past the buffer's limits or shutdown).
    /// Default: 3 × `retry_after`. 0 turns holding off.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub refused_wait: Option<Duration>,
}

impl LimitsConfig {
    /// `refused_wait`, or its default: three retries' worth.
    pub fn effective_refused_wait(&self) -> Duration {
        self.refused_wait.unwrap_or(3 * self.retry_after)
    }
}

/// Sizes of the decision cache, in trace IDs. A policy file that sets its
/// own `decision_cache` sizes (non-zero) overrides these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Traces remembered as kept. Default 100,000; 0 disables.
    pub sampled: usize,
    /// Traces remembered as not kept. Default 100,000; 0 disables.
    pub not_sampled: usize,
}

/// The staged shutdown (see [`crate::Sampler::serve`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long the node keeps serving after `/readyz` starts failing, so
    /// LBs and DNS stop sending to it first. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Once the receivers stopped: the deadline for deciding every pending
    /// trace and for the exporter to deliver what it holds; what is left
    /// after it is dropped, and counted. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl ClusterConfig {
    fn validate(&self, shutdown: &ShutdownConfig) -> Result<(), SamplerError> {
        let bad = |field: &'static str, rule: String| Err(SamplerError::Config { field, rule });
        if let Err(e) = self.resolver.validate() {
            return bad("cluster.resolver", e.to_string());
        }
        self.self_member()?;
        if let Err(e) = self.forward.validate() {
            return bad("cluster.forward", e.to_string());
        }
        if self.redistribute_bytes_per_second == 0 {
            return bad(
                "cluster.redistribute_bytes_per_second",
                "must be at least 1".into(),
            );
        }
        if self.retry_interval.is_zero() {
            return bad("cluster.retry_interval", "must be more than 0".into());
        }
        if self.push_timeout.is_zero() {
            return bad("cluster.push_timeout", "must be more than 0".into());
        }
        if self.fleet_interval < Duration::from_millis(100) {
            return bad("cluster.fleet_interval", "must be at least 100ms".into());
        }
        if self.handover_timeout > shutdown.drain_timeout {
            return bad(
                "cluster.handover_timeout",
                format!(
                    "must be at most shutdown.drain_timeout ({:?})",
                    shutdown.drain_timeout
                ),
            );
        }
        Ok(())
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            node: "tailgate".into(),
            receiver: ReceiverConfig::default(),
            admin: SocketAddr::from(([0, 0, 0, 0], 8888)),
            admin_tls: None,
            policy_file: PathBuf::new(),
            policy_poll_interval: Duration::from_secs(1),
            exporter: ExporterConfig::default(),
            logs_exporter: None,
            limits: LimitsConfig::default(),
            decision_cache: DecisionCacheConfig::default(),
            record_policy: false,
            use_tracestate: false,
            dry_run: false,
            shards: 0,
            shard_queue: 64,
            shutdown: ShutdownConfig::default(),
            cluster: None,
            storage: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_traces: None,
            max_buffer_bytes: 512 * MIB,
            high_watermark: 0.9,
            max_spans_per_trace: 10_000,
            max_bytes_per_trace: 8 * MIB as u64,
            retry_after: Duration::from_secs(1),
            refused_wait: None,
        }
    }
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled: 100_000,
            not_sampled: 100_000,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl SamplerConfig {
    /// Checks everything that cannot work, without touching the network or
    /// the policy file.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |field: &'static str, rule: &str| {
            Err(SamplerError::Config {
                field,
                rule: rule.to_owned(),
            })
        };
        let l = &self.limits;
        if self.node.is_empty() {
            return bad("node", "must not be empty");
        }
        if self.policy_file.as_os_str().is_empty() {
            return bad("policy_file", "is required");
        }
        if self.policy_poll_interval.is_zero() {
            return bad("policy_poll_interval", "must be more than 0");
        }
        if self.receiver.grpc.is_none() && self.receiver.http.is_none() {
            return bad("receiver", "has both grpc and http off: enable one");
        }
        if self.receiver.max_request_bytes == 0 {
            return bad("receiver.max_request_bytes", "must be at least 1");
        }
        if l.max_traces == Some(0) {
            return bad("limits.max_traces", "must be at least 1");
        }
        if l.max_buffer_bytes < MIB {
            return bad("limits.max_buffer_bytes", "must be at least 1 MiB");
        }
        if !(l.high_watermark > 0.0 && l.high_watermark <= 1.0) {
            return bad("limits.high_watermark", "must be more than 0 and at most 1");
        }
        if l.max_spans_per_trace == 0 {
            return bad("limits.max_spans_per_trace", "must be at least 1");
        }
        if l.max_bytes_per_trace == 0 {
            return bad("limits.max_bytes_per_trace", "must be at least 1");
        }
        if l.retry_after.is_zero() {
            return bad("limits.retry_after", "must be more than 0");
        }
        if self.shards > 1024 {
            return bad("shards", "must be at most 1024");
        }
        if self.shard_queue == 0 {
            return bad("shard_queue", "must be at least 1");
        }
        if self.shutdown.drain_timeout.is_zero() {
            return bad("shutdown.drain_timeout", "must be more than 0");
        }
        self.exporter.validate()?;
        if let Some(logs) = &self.logs_exporter {
            logs.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate(&self.shutdown)?;
        }
        if let Some(storage) = &self.storage {
            storage.validate()?;
        }
        Ok(())
    }

    /// The config as the node runs it: the node name on every component,
    /// the shard count resolved (when not set: the policy file's
    /// `num_shards`, else one per CPU).
    pub(crate) fn effective(mut self, num_shards: Option<u16>) -> SamplerConfig {
        self.receiver.node = self.node.clone();
        self.exporter.node = self.node.clone();
        let mut logs = self.logs_exporter.take().unwrap_or_else(|| ExporterConfig {
            name: "logs".into(),
            ..self.exporter.clone()
        });
        logs.node = self.node.clone();
        self.logs_exporter = Some(logs);
        if self.shards == 0 {
            self.shards = match num_shards {
                Some(n) => usize::from(n),
                None => std::thread::available_parallelism().map_or(1, usize::from),
            };
        }
        self
    }

    /// Traces buffered at most, under this policy file.
    pub(crate) fn max_traces(&self, file: &PolicyFile) -> usize {
        self.limits
            .max_traces
            .unwrap_or_else(|| usize::try_from(file.num_traces).unwrap_or(usize::MAX))
            .max(1)
    }

    /// One shard's buffer settings under this policy file.
    pub(crate) fn buffer_settings(&self, file: &PolicyFile) -> BufferSettings {
        let shards = self.shards.max(1);
        let share = |total: usize| {
            if total == 0 {
                0
            } else {
                total.div_ceil(shards)
            }
        };
        let from_file = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let sampled = match file.decision_cache.sampled {
            0 => self.decision_cache.sampled,
            n => from_file(n),
        };
        let not_sampled = match file.decision_cache.non_sampled {
            0 => self.decision_cache.not_sampled,
            n => from_file(n),
        };
        BufferSettings {
            decision_wait: file.decision_wait,
            decision_wait_after_root: file.decision_wait_after_root_received,
            max_spans_per_trace: self.limits.max_spans_per_trace,
            max_bytes_per_trace: self.limits.max_bytes_per_trace,
            max_traces: share(self.max_traces(file)).max(1),
            max_bytes: share(self.limits.max_buffer_bytes).max(1),
            sampled_cache: share(sampled),
            not_sampled_cache: share(not_sampled),
            max_trace_size: file.maximum_trace_size_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> SamplerConfig {
        serde_yaml_ng::from_str(
            "policy_file: /etc/tailgate/policy.yaml\nexporter:\n  endpoint: http://backend:4317\n",
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = minimal();
        assert_eq!(c.node, "tailgate");
        assert_eq!(c.admin, "0.0.0.0:8888".parse().unwrap());
        assert_eq!(c.policy_poll_interval, Duration::from_secs(1));
        assert_eq!(c.limits.max_traces, None);
        assert_eq!(c.limits.max_buffer_bytes, 512 * MIB);
        assert_eq!(c.limits.high_watermark, 0.9);
        assert_eq!(c.limits.max_spans_per_trace, 10_000);
        assert_eq!(c.limits.max_bytes_per_trace, 8 * MIB as u64);
        assert_eq!(c.decision_cache, DecisionCacheConfig::default());
        assert_eq!((c.shards, c.shard_queue), (0, 64));
        assert_eq!(c.shutdown.grace, Duration::from_secs(5));
        assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(10));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn storage_takes_a_path_alone_and_checks_its_fields() {
        let c: SamplerConfig = serde_yaml_ng::from_str(
            "policy_file: /p.yaml\nexporter: {endpoint: http://b:4317}\nstorage: {path: /var/lib/tailgate}\n",
        )
        .unwrap();
        let s = c.storage.clone().unwrap();
        assert_eq!(s, StorageConfig::new("/var/lib/tailgate"));
        assert_eq!(s.commit_interval, Duration::from_millis(50));
        assert!(!s.durable_ack);
        assert!(c.validate().is_ok());
        assert_eq!(c.limits.effective_refused_wait(), Duration::from_secs(3));
        let field = |f: fn(&mut StorageConfig)| {
            let mut c = c.clone();
            if let Some(s) = c.storage.as_mut() {
                f(s);
            }
            match c.validate() {
                Err(SamplerError::Config { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(field(|s| s.path = PathBuf::new()), "storage.path");
        assert_eq!(
            field(|s| s.commit_interval = Duration::ZERO),
            "storage.commit_interval"
        );
        assert_eq!(field(|s| s.max_bytes = 1), "storage.max_bytes");
        let e = serde_yaml_ng::from_str::<SamplerConfig>("storage: {path: /x, sync: always}\n")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_yaml_ng::from_str::<SamplerConfig>("policy_fiel: x\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = serde_yaml_ng::from_str::<SamplerConfig>("limits:\n  max_trace: 3\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let field = |c: SamplerConfig| match c.validate() {
            Err(SamplerError::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(SamplerConfig::default()), "policy_file");
        let mut c = minimal();
        c.limits.high_watermark = 1.5;
        assert_eq!(field(c), "limits.high_watermark");
        let mut c = minimal();
        c.limits.max_traces = Some(0);
        assert_eq!(field(c), "limits.max_traces");
        let mut c = minimal();
        c.exporter.endpoint.clear();
        assert!(matches!(c.validate(), Err(SamplerError::Exporter(_))));
    }

    #[test]
    fn the_node_name_reaches_every_component() {
        let mut c = minimal();
        c.node = "sampler-2".into();
        let c = c.effective(None);
        assert_eq!(c.receiver.node, "sampler-2");
        assert_eq!(c.exporter.node, "sampler-2");
        assert!(c.shards >= 1);
    }

    #[test]
    fn the_cluster_block_takes_the_lbs_resolver_and_this_nodes_name() {
        let mut c: SamplerConfig = serde_yaml_ng::from_str(
            "policy_file: p.yaml\nexporter:\n  endpoint: http://backend:4317\ncluster:\n  resolver:\n    dns:\n      hostname: tailgate-sampler.tailgate.svc.cluster.local.\n      port: 4317\n  self: 10.1.2.3\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        let cluster = c.cluster.clone().unwrap();
        // A bare IP (from POD_IP) gets the DNS port: the name DNS lists it under.
        assert_eq!(cluster.self_member().unwrap().as_str(), "10.1.2.3:4317");
        assert_eq!(cluster.settle, Duration::from_secs(1));
        assert_eq!(cluster.handover_timeout, Duration::from_secs(5));
        assert_eq!(cluster.redistribute_bytes_per_second, 32 * MIB as u64);

        let field = |c: &SamplerConfig| match c.validate() {
            Err(SamplerError::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let statics: SamplerConfig = serde_yaml_ng::from_str(
            "policy_file: p.yaml\nexporter:\n  endpoint: http://b:4317\ncluster:\n  resolver:\n    static:\n      members: [127.0.0.2:4317, 127.0.0.3:4317]\n  self: 127.0.0.2\n",
        )
        .unwrap();
        assert_eq!(
            field(&statics),
            "cluster.self",
            "a static member needs its port"
        );
        c.cluster.as_mut().unwrap().self_member = "10.1.2.3:4317".into();
        assert!(c.validate().is_ok());
        c.cluster.as_mut().unwrap().handover_timeout = Duration::from_secs(60);
        assert_eq!(field(&c), "cluster.handover_timeout");
        let e = serde_yaml_ng::from_str::<SamplerConfig>(
            "cluster:\n  resolver:\n    static:\n      members: [a:1]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing field `self`"), "{e}");
    }

    #[test]
    fn limits_are_shared_between_shards_and_follow_the_policy_file() {
        let file = PolicyFile::parse(
            "decision_wait: 5s\nnum_traces: 1000\ndecision_cache:\n  sampled_cache_size: 40\npolicies:\n  - name: all\n    type: always_sample\n",
            "p.yaml",
        )
        .unwrap();
        let mut c = minimal();
        c.shards = 4;
        let s = c.buffer_settings(&file);
        assert_eq!(s.decision_wait, Duration::from_secs(5));
        assert_eq!(s.max_traces, 250);
        assert_eq!(s.sampled_cache, 10, "the file's size wins");
        assert_eq!(s.not_sampled_cache, 25_000, "the config's size");
        c.limits.max_traces = Some(400);
        assert_eq!(c.buffer_settings(&file).max_traces, 100);
    }
}
