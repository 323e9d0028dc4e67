//! Per-member export settings (the `export:` block), and their checks.

use std::collections::BTreeMap;
use std::time::Duration;

use proto::exporter::{BackoffPolicy, BatchLimits, Compression, OtlpClientConfig};
use serde::{Deserialize, Serialize};

const MIB: usize = 1024 * 1024;

/// How spans are sent to each member. Every member gets its own queue,
/// connection and export slots with these settings.
///
/// Many keys are those of the sampler's `exporter:` block
/// ([`proto::exporter::ExporterConfig`]), on purpose with other defaults
/// (members are near: short timeouts, no batching delay, quick fail-over)
/// and without the backend's backoff shape. The keys are listed again
/// rather than shared through `#[serde(flatten)]`, which serde cannot
/// combine with `deny_unknown_fields`: a misspelt key must stay an error.
/// Both turn into the same [`OtlpClientConfig`], [`BatchLimits`] and
/// [`BackoffPolicy`] below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// The longest one export call may take; past it the member is marked
    /// down and the request re-routed. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest a TCP connect to a member may take. Default 1 s: members
    /// are in the same cluster, and a slow connect should fail over fast.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `none`, `gzip` or `zstd`. Default `none` (members are close; CPU is
    /// the LB's budget).
    pub compression: Compression,
    /// gRPC metadata sent with every call. Default none.
    pub headers: BTreeMap<String, String>,
    /// TLS to the members (mTLS with `cert_file` and `key_file`): every
    /// member's certificate must chain to `ca_file` and carry `server_name`
    /// (default: the member's host, an IP address from DNS). Default none:
    /// plain HTTP/2.
    pub tls: Option<proto::tls::ClientTlsConfig>,
    /// A request to a member is sent once it holds this many spans.
    /// Default 8192.
    pub max_batch_spans: usize,
    /// A request to a member is sent once it holds this many bytes. A part
    /// bigger than this is sent alone, never split. Default 4 MiB.
    pub max_batch_bytes: usize,
    /// How long a request that is not full waits for more parts. Default 0:
    /// sent as soon as an export slot is free, so parts are merged only
    /// while every slot is busy (batching under load, no added latency when
    /// idle).
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// With `batch_timeout` 0: while an export to a member is in flight,
    /// what arrives for it is merged into one request, sent when that export
    /// returns (a full request still goes at once on a free slot). At low
    /// load nothing waits (no export is in flight); under load the exports
    /// grow instead of multiplying. `false`: a partial request goes on any
    /// free slot, up to `concurrency` small exports at once. Default true.
    pub adaptive_batching: bool,
    /// How long a request may wait for room when a member's queue is full,
    /// before it is refused (RESOURCE_EXHAUSTED / 429). Space usually frees
    /// within one export; waiting costs the client a few milliseconds
    /// instead of a retry. Default 5 ms; 0 refuses at once; at most 1 s.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
    /// The most encoded bytes held per member (queued, batching, in flight,
    /// waiting to retry), in bytes. Past it, requests with spans for that
    /// member are refused (backpressure). Default 32 MiB. Re-routed spans
    /// are queued past it: they were accepted already.
    pub queue_bytes: usize,
    /// Export calls in flight per member. Default 4.
    pub concurrency: usize,
    /// Retries of an answer that is retryable but does not mean the member
    /// is down (RESOURCE_EXHAUSTED with RetryInfo, ABORTED, ...): the delay
    /// before the first. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    /// The cap on the delay between two retries. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// A request is dropped (counted) this long after its first attempt.
    /// Default 60 s; 0 means retry until shutdown.
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
    /// A member marked down is probed (an empty export) after this long,
    /// then at growing intervals. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// The cap on the delay between two probes. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub probe_max_interval: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            compression: Compression::None,
            headers: BTreeMap::new(),
            tls: None,
            max_batch_spans: 8192,
            max_batch_bytes: 4 * MIB,
            batch_timeout: Duration::ZERO,
            adaptive_batching: true,
            queue_wait: Duration::from_millis(5),
            queue_bytes: 32 * MIB,
            concurrency: 4,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: Duration::from_secs(60),
            probe_interval: Duration::from_millis(500),
            probe_max_interval: Duration::from_secs(10),
        }
    }
}

/// An export config that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportConfigError {
    #[error("export.{field} {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    /// A bad header, or TLS files that cannot be used.
    #[error("export: {0}")]
    Headers(String),
}

/// A checked [`ExportConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub limits: BatchLimits,
    pub queue_bytes: usize,
    pub concurrency: usize,
    pub adaptive: bool,
    pub queue_wait: Duration,
    pub retry: BackoffPolicy,
    pub probe: BackoffPolicy,
}

impl ExportConfig {
    /// Checks everything the exporter would refuse, without a runtime.
    pub fn validate(&self) -> Result<(), ExportConfigError> {
        self.settings().map(|_| ())
    }

    /// The client settings for one member.
    pub fn client(&self, endpoint: String) -> OtlpClientConfig {
        OtlpClientConfig {
            endpoint,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            compression: self.compression,
            headers: self.headers.clone(),
            tls: self.tls.clone(),
        }
    }

    pub(crate) fn settings(&self) -> Result<Settings, ExportConfigError> {
        let c = self;
        let checks: [(bool, &'static str, &'static str); 10] = [
            (c.timeout.is_zero(), "timeout", "must be more than 0"),
            (
                c.connect_timeout.is_zero(),
                "connect_timeout",
                "must be more than 0",
            ),
            (
                c.max_batch_spans == 0,
                "max_batch_spans",
                "must be at least 1",
            ),
            (
                c.max_batch_bytes == 0,
                "max_batch_bytes",
                "must be at least 1",
            ),
            (
                c.queue_bytes < c.max_batch_bytes,
                "queue_bytes",
                "must be at least max_batch_bytes",
            ),
            (c.concurrency == 0, "concurrency", "must be at least 1"),
            (
                c.queue_wait > Duration::from_secs(1),
                "queue_wait",
                "must be at most 1s (a client holds its request meanwhile)",
            ),
            (
                c.initial_interval.is_zero() || c.max_interval < c.initial_interval,
                "initial_interval",
                "must be more than 0 and at most max_interval",
            ),
            (
                c.probe_interval.is_zero() || c.probe_max_interval < c.probe_interval,
                "probe_interval",
                "must be more than 0 and at most probe_max_interval",
            ),
            (
                u32::try_from(c.max_batch_spans).is_err(),
                "max_batch_spans",
                "must be at most 4294967295",
            ),
        ];
        if let Some((_, field, rule)) = checks.into_iter().find(|(bad, _, _)| *bad) {
            return Err(ExportConfigError::Invalid { field, rule });
        }
        // The endpoint is checked per member; here only the headers and
        // the TLS files matter.
        c.client("http://member.invalid:4317".into())
            .validate()
            .map_err(|e| ExportConfigError::Headers(e.to_string()))?;
        Ok(Settings {
            limits: BatchLimits {
                max_spans: c.max_batch_spans,
                max_bytes: c.max_batch_bytes,
                timeout: c.batch_timeout,
            },
            queue_bytes: c.queue_bytes,
            concurrency: c.concurrency,
            adaptive: c.adaptive_batching,
            queue_wait: c.queue_wait,
            retry: BackoffPolicy {
                initial_interval: c.initial_interval,
                max_interval: c.max_interval,
                max_elapsed_time: (!c.max_elapsed_time.is_zero()).then_some(c.max_elapsed_time),
                multiplier: 1.5,
                randomization_factor: 0.5,
            },
            probe: BackoffPolicy {
                initial_interval: c.probe_interval,
                max_interval: c.probe_max_interval,
                max_elapsed_time: None,
                multiplier: 2.0,
                // LB replicas that saw a member fail together should not
                // all probe it together.
                randomization_factor: 0.2,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c: ExportConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ExportConfig::default());
        assert_eq!(c.queue_bytes, 32 * MIB);
        assert_eq!(c.batch_timeout, Duration::ZERO);
        assert!(c.adaptive_batching);
        assert_eq!(c.queue_wait, Duration::from_millis(5));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn units_parse_and_unknown_keys_are_refused() {
        let c: ExportConfig = serde_json::from_str(
            r#"{"timeout": "2s", "batch_timeout": "5ms", "queue_bytes": 8388608,
                "compression": "zstd", "probe_interval": "1s"}"#,
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.batch_timeout, Duration::from_millis(5));
        assert_eq!(c.compression, Compression::Zstd);
        let e = serde_json::from_str::<ExportConfig>(r#"{"queue_size": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `queue_size`"), "{e}");
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let field = |c: ExportConfig| match c.validate() {
            Err(ExportConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let d = ExportConfig::default;
        assert_eq!(
            field(ExportConfig {
                queue_bytes: MIB,
                ..d()
            }),
            "queue_bytes"
        );
        assert_eq!(
            field(ExportConfig {
                queue_wait: Duration::from_secs(2),
                ..d()
            }),
            "queue_wait"
        );
        assert_eq!(
            field(ExportConfig {
                concurrency: 0,
                ..d()
            }),
            "concurrency"
        );
        assert_eq!(
            field(ExportConfig {
                probe_max_interval: Duration::from_millis(1),
                ..d()
            }),
            "probe_interval"
        );
        let mut bad = d();
        bad.headers.insert("Bad Key".into(), "v".into());
        assert!(matches!(bad.validate(), Err(ExportConfigError::Headers(_))));
    }
}
