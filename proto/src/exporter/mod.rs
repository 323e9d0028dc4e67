//! Sending encoded spans to an OTLP/gRPC endpoint: the backend (from samplers)
//! or a sampler member (from the LB).
//!
//! [`OtlpClient`] makes one `TraceService/Export` call with the request as
//! bytes. [`Exporter`] puts a bounded queue, batching, retries and metrics in
//! front of it:
//!
//! ```text
//! try_send/send ─▶ queue (bounded in bytes) ─▶ dispatch task: Batcher
//!     ─▶ up to `concurrency` export tasks: call, back off, retry
//!     ─▶ sent | dropped{reason} | FailedBatch channel
//! ```
//!
//! The byte bound covers everything the exporter holds, from `try_send` until
//! the request is sent or given up (waiting, being batched, in flight, waiting
//! to retry), so `queue_bytes` is the most memory it holds for spans, and a
//! backend outage turns into `QueueFull` for the caller rather than growth.
//!
//! With a disk queue ([`StartOptions::spill`], the sampler's `storage:`), a
//! batch the memory queue has no room for is written to disk instead, up to
//! the disk budget, and sent from there once the endpoint takes requests
//! again (see [`spill`]); only past the budget does the caller see
//! `QueueFull`. Requests still held at the shutdown deadline are spilled
//! rather than dropped when the budget allows.

mod batch;
mod client;
mod retry;
mod spill;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, TryAcquireError, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use batch::{BatchLimits, Batcher, OtlpBatch, Request};
pub use client::{
    ClientConfigError, Compression, ExportError, ExportResponse, OtlpClient, OtlpClientConfig,
};
pub use retry::{Backoff, BackoffPolicy};

const MIB: usize = 1024 * 1024;

/// The exporter's configuration, as read from the config file. The defaults
/// are the OTel Collector's (batch processor: 8192 spans, 200 ms;
/// `retry_on_failure`: 5 s, 30 s, 300 s, ×1.5, ±50 %), but the queue is
/// bounded in bytes, not requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    /// The OTLP/gRPC endpoint, `http://host:port` or `https://host:port`.
    /// Required.
    pub endpoint: String,
    /// The longest one export call may take. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest a TCP connect may take. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `none`, `gzip` or `zstd`. Default `none`.
    pub compression: Compression,
    /// gRPC metadata sent with every call, e.g. an API key. Default none.
    pub headers: BTreeMap<String, String>,
    /// TLS: trusted CAs, a client certificate for mTLS, the server name.
    /// TLS is on when this is set or the endpoint is `https://`. Default
    /// none.
    pub tls: Option<crate::tls::ClientTlsConfig>,
    /// A request is sent once it holds this many spans. Default 8192.
    pub max_batch_spans: usize,
    /// A request is sent once it holds this many bytes (encoded). A single
    /// batch bigger than this is sent alone, never split. Default 4 MiB.
    pub max_batch_bytes: usize,
    /// A request that is not full is sent this long after its first batch
    /// arrived. Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// The most encoded request bytes the exporter holds, queued, batching, in
    /// flight or waiting to retry; past it `try_send` hands batches back.
    /// At least `max_batch_bytes`, at most 4 GiB. Default 64 MiB.
    pub queue_bytes: usize,
    /// Export calls in flight at once. Default 4.
    pub concurrency: usize,
    /// The delay before the first retry. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    /// The cap on the delay between retries. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// A request is given up this long after its first attempt; 0 means
    /// retry until shutdown (as in the Collector). Default 300 s.
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
    /// The factor the retry interval grows by, at least 1. Default 1.5.
    pub multiplier: f64,
    /// Each delay is drawn from `interval × [1 − r, 1 + r]`, r in [0, 1].
    /// Default 0.5.
    pub randomization_factor: f64,
    /// The `exporter` label on this exporter's metrics. Default `backend`.
    pub name: String,
    /// The `node` label on this exporter's metrics. Default `tailgate`.
    pub node: String,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        let client = OtlpClientConfig::new("");
        let backoff = BackoffPolicy::default();
        ExporterConfig {
            endpoint: String::new(),
            timeout: client.timeout,
            connect_timeout: client.connect_timeout,
            compression: client.compression,
            headers: client.headers,
            tls: None,
            max_batch_spans: 8192,
            max_batch_bytes: 4 * MIB,
            batch_timeout: Duration::from_millis(200),
            queue_bytes: 64 * MIB,
            concurrency: 4,
            initial_interval: backoff.initial_interval,
            max_interval: backoff.max_interval,
            max_elapsed_time: backoff.max_elapsed_time.unwrap_or_default(),
            multiplier: backoff.multiplier,
            randomization_factor: backoff.randomization_factor,
            name: "backend".into(),
            node: "tailgate".into(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ExporterConfigError {
    #[error("exporter {exporter:?}: endpoint is required")]
    MissingEndpoint { exporter: String },
    #[error("exporter {exporter:?}: {source}")]
    Client {
        exporter: String,
        source: ClientConfigError,
    },
    #[error("exporter {exporter:?}: {field} {rule}")]
    Invalid {
        exporter: String,
        field: &'static str,
        rule: &'static str,
    },
}

/// Why [`Exporter::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ExporterConfigError),
    #[error("exporter {exporter:?} must be started inside a tokio runtime")]
    NoRuntime { exporter: String },
}

/// A checked [`ExporterConfig`].
#[derive(Debug, Clone)]
struct Settings {
    client: OtlpClientConfig,
    limits: BatchLimits,
    queue_bytes: usize,
    concurrency: usize,
    backoff: BackoffPolicy,
    name: String,
    node: String,
}

impl TryFrom<ExporterConfig> for Settings {
    type Error = ExporterConfigError;

    fn try_from(c: ExporterConfig) -> Result<Self, Self::Error> {
        let invalid = |field, rule| ExporterConfigError::Invalid {
            exporter: c.name.clone(),
            field,
            rule,
        };
        if c.endpoint.is_empty() {
            return Err(ExporterConfigError::MissingEndpoint { exporter: c.name });
        }
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
            (
                u32::try_from(c.queue_bytes).is_err(),
                "queue_bytes",
                "must be at most 4 GiB",
            ),
            (c.concurrency == 0, "concurrency", "must be at least 1"),
            (
                c.initial_interval.is_zero() || c.max_interval < c.initial_interval,
                "initial_interval",
                "must be more than 0 and at most max_interval",
            ),
            (
                !(c.multiplier >= 1.0 && c.multiplier.is_finite()),
                "multiplier",
                "must be at least 1",
            ),
            (
                !(0.0..=1.0).contains(&c.randomization_factor),
                "randomization_factor",
                "must be between 0 and 1",
            ),
        ];
        if let Some((_, field, rule)) = checks.into_iter().find(|(bad, _, _)| *bad) {
            return Err(invalid(field, rule));
        }
        let client = OtlpClientConfig {
            endpoint: c.endpoint,
            timeout: c.timeout,
            connect_timeout: c.connect_timeout,
            compression: c.compression,
            headers: c.headers,
            tls: c.tls,
        };
        client
            .validate()
            .map_err(|source| ExporterConfigError::Client {
                exporter: c.name.clone(),
                source,
            })?;
        Ok(Settings {
            client,
            limits: BatchLimits {
                max_spans: c.max_batch_spans,
                max_bytes: c.max_batch_bytes,
                timeout: c.batch_timeout,
            },
            queue_bytes: c.queue_bytes,
            concurrency: c.concurrency,
            backoff: BackoffPolicy {
                initial_interval: c.initial_interval,
                max_interval: c.max_interval,
                max_elapsed_time: (!c.max_elapsed_time.is_zero()).then_some(c.max_elapsed_time),
                multiplier: c.multiplier,
                randomization_factor: c.randomization_factor,
            },
            name: c.name,
            node: c.node,
        })
    }
}

impl ExporterConfig {
    /// Checks everything [`Exporter::start`] would refuse, so a bad config
    /// fails before any port is bound.
    pub fn validate(&self) -> Result<(), ExporterConfigError> {
        Settings::try_from(self.clone()).map(|_| ())
    }
}

/// Why spans were dropped: the `reason` label of
/// `tailgate_exporter_spans_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Retryable failures until `max_elapsed_time`.
    RetriesExhausted,
    /// A status the OTLP spec says not to retry.
    NotRetryable,
    /// The server accepted the request but rejected these spans
    /// (`partial_success`).
    Rejected,
    /// Still held when the shutdown deadline passed.
    Shutdown,
    /// Failed for good, and the failed-batch channel was full.
    FailedHandlerFull,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::RetriesExhausted,
        DropReason::NotRetryable,
        DropReason::Rejected,
        DropReason::Shutdown,
        DropReason::FailedHandlerFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::NotRetryable => "not_retryable",
            DropReason::Rejected => "rejected",
            DropReason::Shutdown => "shutdown",
            DropReason::FailedHandlerFull => "failed_handler_full",
        }
    }
}

/// A request that failed for good, handed to the failed-batch channel
/// instead of being dropped.
#[derive(Debug, Clone)]
pub struct FailedBatch {
    /// The whole request: every batch merged into it.
    pub batch: OtlpBatch,
    /// The last attempt's error.
    pub error: ExportError,
    /// [`DropReason::RetriesExhausted`] or [`DropReason::NotRetryable`].
    pub reason: DropReason,
}

/// Options for [`Exporter::start_with`].
#[derive(Debug, Default)]
pub struct StartOptions {
    /// Where requests that failed for good go, for a caller that must not
    /// lose them (the LB re-routes them to another member). Without it they
    /// are dropped and counted; with it, they are dropped and counted as
    /// `failed_handler_full` only when this channel is full or closed.
    pub failed: Option<mpsc::Sender<FailedBatch>>,
    /// A disk queue for what the memory queue has no room for.
    pub spill: Option<DiskQueue>,
    /// What the batches are: encoded trace requests (the default) or logs
    /// requests, sent to the LogsService. Batching, retries, the byte
    /// bound and backpressure are the same; a logs request's records count
    /// where spans do (`max_batch_spans`, the span metrics of this
    /// exporter, whose `exporter` label tells them apart).
    pub signal: crate::receiver::Signal,
}

/// An opened [`storage::Spill`], with what it found at open and the disk
/// budget it shares (for the budget gauge).
#[derive(Debug)]
pub struct DiskQueue {
    pub spill: storage::Spill,
    pub recovered: storage::SpillRecovery,
    pub budget_bytes: u64,
}

/// A batch the exporter did not take, handed back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No room in the queue now; the caller refuses upstream (backpressure)
    /// or counts its own drop.
    #[error("export queue is full")]
    QueueFull(OtlpBatch),
    /// The exporter is shutting down.
    #[error("exporter is shut down")]
    Closed(OtlpBatch),
}

impl SendError {
    pub fn into_batch(self) -> OtlpBatch {
        match self {
            SendError::QueueFull(b) | SendError::Closed(b) => b,
        }
    }
}

/// What happened between [`Exporter::shutdown`] and its return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Spans delivered during the flush.
    pub sent_spans: u64,
    /// Spans that failed for good during the flush (dropped with a reason
    /// other than `shutdown`, or handed to the failed-batch channel).
    pub failed_spans: u64,
    /// Spans still held at the deadline, dropped as `shutdown`.
    pub dropped_spans: u64,
}

/// A counter that also keeps its own total, for [`ShutdownReport`].
#[derive(Debug)]
struct Tally {
    metric: Counter,
    total: AtomicU64,
}

impl Tally {
    fn new(metric: Counter) -> Self {
        Tally {
            metric,
            total: AtomicU64::new(0),
        }
    }

    fn add(&self, n: u64) {
        self.metric.increment(n);
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Metric handles, created once per exporter.
struct Metrics {
    sent: Tally,
    failed: Counter,
    retried: Counter,
    dropped: [Tally; 5],
    handed_off: AtomicU64,
    /// Spans written to the disk queue (settled for the caller).
    spilled: AtomicU64,
    queue_bytes: Gauge,
    duration: Histogram,
}

impl Metrics {
    fn new(node: &str, exporter: &str) -> Self {
        let labels = [("node", node.to_owned()), ("exporter", exporter.to_owned())];
        metrics::describe_counter!(
            "tailgate_exporter_spans_sent_total",
            "Spans the exporter's endpoint accepted."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spans_failed_total",
            "Spans in export attempts that failed (each attempt counts)."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spans_retried_total",
            "Spans in export attempts scheduled for a retry."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spans_dropped_total",
            "Spans the exporter gave up on, by reason."
        );
        metrics::describe_gauge!(
            "tailgate_exporter_queue_bytes",
            metrics::Unit::Bytes,
            "Encoded request bytes held: queued, batching, in flight or waiting to retry."
        );
        metrics::describe_histogram!(
            "tailgate_exporter_request_duration_seconds",
            metrics::Unit::Seconds,
            "Duration of one export call."
        );
        let dropped = DropReason::ALL.map(|reason| {
            let mut l = labels.to_vec();
            l.push(("reason", reason.as_str().to_owned()));
            Tally::new(metrics::counter!(
                "tailgate_exporter_spans_dropped_total",
                &l
            ))
        });
        Metrics {
            sent: Tally::new(metrics::counter!(
                "tailgate_exporter_spans_sent_total",
                &labels
            )),
            failed: metrics::counter!("tailgate_exporter_spans_failed_total", &labels),
            retried: metrics::counter!("tailgate_exporter_spans_retried_total", &labels),
            dropped,
            handed_off: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            queue_bytes: metrics::gauge!("tailgate_exporter_queue_bytes", &labels),
            duration: metrics::histogram!("tailgate_exporter_request_duration_seconds", &labels),
        }
    }

    fn dropped(&self, reason: DropReason) -> &Tally {
        // DropReason::ALL lists the variants in declaration order.
        &self.dropped[reason as usize]
    }

    fn report(&self) -> ShutdownReport {
        let failed = DropReason::ALL
            .into_iter()
            .filter(|r| *r != DropReason::Shutdown)
            .map(|r| self.dropped(r).get())
            .sum::<u64>()
            + self.handed_off.load(Ordering::Relaxed);
        ShutdownReport {
            sent_spans: self.sent.get(),
            failed_spans: failed,
            dropped_spans: self.dropped(DropReason::Shutdown).get(),
        }
    }
}

/// The bytes the exporter holds, and the room for more.
struct Room {
    /// One permit per byte held, released when a request is done.
    permits: Semaphore,
    capacity: usize,
    held: AtomicUsize,
    metrics: Metrics,
}

impl Room {
    /// Permits a batch of `len` bytes takes. A batch bigger than the whole
    /// queue takes all of it, so it goes through when the queue is empty
    /// rather than never.
    fn permits_for(&self, len: usize) -> u32 {
        // capacity ≤ u32::MAX is checked in Settings.
        u32::try_from(len.min(self.capacity)).unwrap_or(u32::MAX)
    }

    fn hold(&self, len: usize) {
        self.held.fetch_add(len, Ordering::Relaxed);
        self.metrics.queue_bytes.increment(len as f64);
    }

    fn release(&self, len: usize) {
        self.held.fetch_sub(len, Ordering::Relaxed);
        self.metrics.queue_bytes.decrement(len as f64);
        self.permits.add_permits(self.permits_for(len) as usize);
    }

    /// Drops a request or batch still held at the shutdown deadline.
    fn drop_at_shutdown(&self, len: usize, spans: usize) {
        self.metrics.dropped(DropReason::Shutdown).add(spans as u64);
        self.release(len);
    }

    /// A request or batch still held at the shutdown deadline goes to the
    /// disk queue if there is one with room, else is dropped.
    fn spill_or_drop(&self, spill: Option<&spill::SpillQueue>, body: &[u8], spans: usize) {
        if spill.is_some_and(|s| s.push(body, spans)) {
            self.metrics
                .spilled
                .fetch_add(spans as u64, Ordering::Relaxed);
            self.release(body.len());
        } else {
            self.drop_at_shutdown(body.len(), spans);
        }
    }
}

/// What the export tasks share.
struct Context {
    room: Arc<Room>,
    client: OtlpClient,
    backoff: BackoffPolicy,
    failed: Option<mpsc::Sender<FailedBatch>>,
    spill: Option<Arc<spill::SpillQueue>>,
    /// `Some(deadline)` once shutdown has begun.
    deadline: watch::Receiver<Option<Instant>>,
}

/// A handle on a running exporter. Cheap to clone; the exporter stops when
/// [`Exporter::shutdown`] is called, or at once (dropping what it holds,
/// counted) when the last handle is dropped.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<OtlpBatch>,
    room: Arc<Room>,
    deadline: watch::Sender<Option<Instant>>,
    task: Mutex<Option<JoinHandle<()>>>,
    spill: Option<Arc<spill::SpillQueue>>,
    drain: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody can send or shut down any more: stop now. Dropping the
        // watch sender tells every task the deadline has passed.
        self.room.permits.close();
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("queued_bytes", &self.queued_bytes())
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Starts an exporter on the current tokio runtime.
    pub fn start(config: ExporterConfig) -> Result<Exporter, StartError> {
        Exporter::start_with(config, StartOptions::default())
    }

    /// Starts an exporter on the current tokio runtime, with options.
    pub fn start_with(
        config: ExporterConfig,
        options: StartOptions,
    ) -> Result<Exporter, StartError> {
        let settings = Settings::try_from(config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime {
            exporter: settings.name.clone(),
        })?;
        let _guard = runtime.enter();
        let client = OtlpClient::new(&settings.client)
            .map_err(|source| ExporterConfigError::Client {
                exporter: settings.name.clone(),
                source,
            })?
            .for_signal(options.signal);
        let room = Arc::new(Room {
            permits: Semaphore::new(settings.queue_bytes),
            capacity: settings.queue_bytes,
            held: AtomicUsize::new(0),
            metrics: Metrics::new(&settings.node, &settings.name),
        });
        // Every queued batch holds at least one byte permit, so the byte
        // bound is reached before this count: the channel never says Full.
        let (tx, rx) = mpsc::channel(settings.queue_bytes.max(1));
        let (deadline_tx, deadline_rx) = watch::channel(None);
        let labels = [
            ("node", settings.node.clone()),
            ("exporter", settings.name.clone()),
        ];
        let spill = match options.spill {
            Some(q) => Some(spill::SpillQueue::new(
                q.spill,
                q.recovered,
                q.budget_bytes,
                &labels,
            )),
            None => {
                spill::SpillMetrics::without_queue(&labels);
                None
            }
        };
        let context = Arc::new(Context {
            room: room.clone(),
            client,
            backoff: settings.backoff,
            failed: options.failed,
            spill: spill.clone(),
            deadline: deadline_rx,
        });
        let drain = spill.as_ref().map(|queue| {
            runtime.spawn(spill::drain(
                context.clone(),
                queue.clone(),
                settings.limits,
                settings.backoff,
            ))
        });
        let dispatch = Dispatch {
            rx,
            batcher: Batcher::new(settings.limits),
            ready: VecDeque::new(),
            workers: Arc::new(Semaphore::new(settings.concurrency)),
            tasks: JoinSet::new(),
            context,
        };
        let task = runtime.spawn(dispatch.run());
        Ok(Exporter {
            inner: Arc::new(Inner {
                tx,
                room,
                deadline: deadline_tx,
                task: Mutex::new(Some(task)),
                spill,
                drain: Mutex::new(drain),
            }),
        })
    }

    /// Queues a batch if there is room now, in memory or else in the disk
    /// queue; never waits. Hands the batch back when there is not. An empty
    /// batch is accepted and ignored.
    pub fn try_send(&self, batch: OtlpBatch) -> Result<(), SendError> {
        if batch.request.is_empty() {
            return Ok(());
        }
        let room = &self.inner.room;
        match room
            .permits
            .try_acquire_many(room.permits_for(batch.request.len()))
        {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => {
                return match &self.inner.spill {
                    Some(spill) if spill.push(&batch.request, batch.spans) => {
                        room.metrics
                            .spilled
                            .fetch_add(batch.spans as u64, Ordering::Relaxed);
                        Ok(())
                    }
                    _ => Err(SendError::QueueFull(batch)),
                };
            }
            Err(TryAcquireError::Closed) => return Err(SendError::Closed(batch)),
        }
        self.enqueue(batch)
    }

    /// Queues a batch, waiting for room.
    pub async fn send(&self, batch: OtlpBatch) -> Result<(), SendError> {
        if batch.request.is_empty() {
            return Ok(());
        }
        let room = &self.inner.room;
        match room
            .permits
            .acquire_many(room.permits_for(batch.request.len()))
            .await
        {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(SendError::Closed(batch)),
        }
        self.enqueue(batch)
    }

    /// Byte permits are taken: account for them and queue.
    fn enqueue(&self, batch: OtlpBatch) -> Result<(), SendError> {
        let room = &self.inner.room;
        let len = batch.request.len();
        room.hold(len);
        self.inner.tx.try_send(batch).map_err(|e| {
            room.release(len);
            match e {
                mpsc::error::TrySendError::Full(b) => SendError::QueueFull(b),
                mpsc::error::TrySendError::Closed(b) => SendError::Closed(b),
            }
        })
    }

    /// Encoded request bytes held: queued, batching, in flight or waiting to
    /// retry.
    pub fn queued_bytes(&self) -> usize {
        self.inner.room.held.load(Ordering::Relaxed)
    }

    /// Spans the exporter is done with since it started: accepted by the
    /// endpoint, dropped (counted), or handed to the failed-batch channel.
    /// Requests run side by side, so this passing a count does not say
    /// which spans are done: only how many.
    pub fn settled_spans(&self) -> u64 {
        let metrics = &self.inner.room.metrics;
        let r = metrics.report();
        r.sent_spans + r.failed_spans + r.dropped_spans + metrics.spilled.load(Ordering::Relaxed)
    }

    /// Stops taking batches (`try_send` and waiting `send`s return
    /// [`SendError::Closed`]), sends everything held without waiting for
    /// batch timeouts, retrying as usual until `deadline`, then drops what is
    /// left, counted as `shutdown`. Returns when all of that is done. A second
    /// call returns at once with an empty report.
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        let Some(task) = task else {
            return ShutdownReport::default();
        };
        let metrics = &self.inner.room.metrics;
        let before = metrics.report();
        self.inner.room.permits.close();
        self.inner.deadline.send_replace(Some(deadline));
        if let Err(e) = task.await {
            tracing::error!(error = %e, "exporter dispatch task failed");
        }
        // Nothing spills after the dispatch task: the drain task ends once
        // the disk queue is empty, not at the deadline.
        if let Some(spill) = &self.inner.spill {
            spill.close();
        }
        let drain = self.inner.drain.lock().ok().and_then(|mut t| t.take());
        if let Some(drain) = drain {
            let _ = drain.await;
        }
        let after = metrics.report();
        ShutdownReport {
            sent_spans: after.sent_spans - before.sent_spans,
            failed_spans: after.failed_spans - before.failed_spans,
            dropped_spans: after.dropped_spans - before.dropped_spans,
        }
    }
}

/// Waits until the shutdown deadline has passed (at once if every exporter
/// handle is gone).
async fn shutdown_deadline(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The dispatch task: takes batches off the queue, batches them, and starts
/// an export task per request, at most `concurrency` at once.
struct Dispatch {
    rx: mpsc::Receiver<OtlpBatch>,
    batcher: Batcher,
    /// Requests waiting for a free export task. While one waits, the
    /// dispatcher stops taking batches, so the next request fills up in the
    /// batcher and the rest wait in the queue (at most two wait here, until
    /// shutdown turns the whole queue into requests).
    ready: VecDeque<Request>,
    workers: Arc<Semaphore>,
    tasks: JoinSet<()>,
    context: Arc<Context>,
}

impl Dispatch {
    async fn run(mut self) {
        let mut shutdown = self.context.deadline.clone();
        let mut draining = false;
        let hard_deadline = shutdown_deadline(self.context.deadline.clone());
        tokio::pin!(hard_deadline);
        loop {
            while self.tasks.try_join_next().is_some() {}
            if draining && self.ready.is_empty() {
                // Shutting down: everything queued becomes requests now.
                let now = Instant::now();
                while let Ok(batch) = self.rx.try_recv() {
                    let ready = self.batcher.push(batch, now);
                    self.ready.extend(ready);
                }
                self.ready.extend(self.batcher.flush());
                if self.ready.is_empty() {
                    break;
                }
            }
            let batch_due = self.batcher.deadline();
            let idle = self.ready.is_empty() && !draining;
            tokio::select! {
                biased;
                _ = shutdown.changed(), if !draining => {
                    draining = true;
                    self.rx.close();
                }
                () = &mut hard_deadline, if draining => break,
                permit = self.workers.clone().acquire_owned(), if !self.ready.is_empty() => {
                    let (Ok(permit), Some(request)) = (permit, self.ready.pop_front()) else {
                        break;
                    };
                    let context = self.context.clone();
                    self.tasks.spawn(async move {
                        export(context, request).await;
                        drop(permit);
                    });
                }
                batch = self.rx.recv(), if idle => match batch {
                    Some(batch) => {
                        let ready = self.batcher.push(batch, Instant::now());
                        self.ready.extend(ready);
                    }
                    // Every handle is gone.
                    None => draining = true,
                },
                () = sleep_until_some(batch_due), if idle && batch_due.is_some() => {
                    self.ready.extend(self.batcher.poll(Instant::now()));
                }
            }
        }
        // Past the deadline (or nothing left): drop what never started.
        let room = &self.context.room;
        self.rx.close();
        self.ready.extend(self.batcher.flush());
        let spill = self.context.spill.as_deref();
        for request in self.ready.drain(..) {
            room.spill_or_drop(spill, &request.body, request.spans);
        }
        while let Ok(batch) = self.rx.try_recv() {
            room.spill_or_drop(spill, &batch.request, batch.spans);
        }
        // Export tasks watch the deadline themselves.
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One request, from first attempt to its end: sent, given up, or cut off by
/// the shutdown deadline.
async fn export(context: Arc<Context>, request: Request) {
    let room = &context.room;
    tokio::select! {
        biased;
        () = deliver(&context, &request) => {}
        () = shutdown_deadline(context.deadline.clone()) => {
            tracing::warn!(
                endpoint = context.client.endpoint(),
                spans = request.spans,
                "export still pending at the shutdown deadline, dropped or spilled"
            );
            room.spill_or_drop(context.spill.as_deref(), &request.body, request.spans);
            return;
        }
    }
    room.release(request.body.len());
}

async fn deliver(context: &Context, request: &Request) {
    let metrics = &context.room.metrics;
    let spans = request.spans as u64;
    let mut backoff = Backoff::new(context.backoff, Instant::now());
    loop {
        let started = Instant::now();
        let result = context.client.export(request.body.clone()).await;
        metrics.duration.record(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(response) => {
                let rejected = response.rejected_spans.min(spans);
                metrics.sent.add(spans - rejected);
                if response.rejected_spans > 0 {
                    metrics.dropped(DropReason::Rejected).add(rejected);
                    tracing::warn!(
                        endpoint = context.client.endpoint(),
                        rejected = response.rejected_spans,
                        message = %response.message,
                        "endpoint rejected spans (partial success); not retried"
                    );
                }
                return;
            }
            Err(error) => error,
        };
        metrics.failed.increment(spans);
        let delay = backoff.after(&error);
        let Some(delay) = delay else {
            let reason = if error.is_retryable() {
                DropReason::RetriesExhausted
            } else {
                DropReason::NotRetryable
            };
            give_up(context, request, error, reason);
            return;
        };
        tracing::debug!(%error, ?delay, spans, "export failed, retrying");
        metrics.retried.increment(spans);
        tokio::time::sleep(delay).await;
    }
}

fn give_up(context: &Context, request: &Request, error: ExportError, reason: DropReason) {
    let metrics = &context.room.metrics;
    let spans = request.spans as u64;
    // Out of retries for a backend that may yet come back: the disk queue
    // keeps trying, for as long as its budget holds.
    if reason == DropReason::RetriesExhausted
        && context
            .spill
            .as_ref()
            .is_some_and(|s| s.push(&request.body, request.spans))
    {
        metrics.spilled.fetch_add(spans, Ordering::Relaxed);
        return;
    }
    let Some(failed) = &context.failed else {
        tracing::warn!(%error, spans, reason = reason.as_str(), "export failed for good, dropped");
        metrics.dropped(reason).add(spans);
        return;
    };
    let batch = FailedBatch {
        batch: OtlpBatch {
            request: request.body.clone(),
            spans: request.spans,
        },
        error,
        reason,
    };
    match failed.try_send(batch) {
        Ok(()) => {
            metrics.handed_off.fetch_add(spans, Ordering::Relaxed);
        }
        Err(e) => {
            let error = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => {
                    b.error
                }
            };
            tracing::warn!(%error, spans, "export failed for good and the failed-batch channel is full, dropped");
            metrics.dropped(DropReason::FailedHandlerFull).add(spans);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ExporterConfig {
        ExporterConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            ..ExporterConfig::default()
        }
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = ExporterConfig::default();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.compression, Compression::None);
        assert_eq!((c.max_batch_spans, c.max_batch_bytes), (8192, 4 * MIB));
        assert_eq!(c.batch_timeout, Duration::from_millis(200));
        assert_eq!((c.queue_bytes, c.concurrency), (64 * MIB, 4));
        assert_eq!(c.initial_interval, Duration::from_secs(5));
        assert_eq!(c.max_interval, Duration::from_secs(30));
        assert_eq!(c.max_elapsed_time, Duration::from_secs(300));
        assert_eq!((c.multiplier, c.randomization_factor), (1.5, 0.5));
    }

    #[test]
    fn config_reads_units_and_refuses_unknown_keys() {
        let c: ExporterConfig = serde_json::from_str(
            r#"{"endpoint": "http://backend:4317", "batch_timeout": "50ms",
                "max_elapsed_time": "0s", "compression": "zstd",
                "headers": {"x-api-key": "k"}}"#,
        )
        .unwrap();
        assert_eq!(c.batch_timeout, Duration::from_millis(50));
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.concurrency, 4);
        let s = Settings::try_from(c).unwrap();
        assert_eq!(s.backoff.max_elapsed_time, None);
        let e = serde_json::from_str::<ExporterConfig>(r#"{"queue_size": 10}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `queue_size`"), "{e}");
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let field = |c: ExporterConfig| match c.validate() {
            Err(ExporterConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(ExporterConfig {
                queue_bytes: MIB,
                ..config()
            }),
            "queue_bytes"
        );
        assert_eq!(
            field(ExporterConfig {
                concurrency: 0,
                ..config()
            }),
            "concurrency"
        );
        assert_eq!(
            field(ExporterConfig {
                randomization_factor: 1.5,
                ..config()
            }),
            "randomization_factor"
        );
        assert!(matches!(
            ExporterConfig::default().validate(),
            Err(ExporterConfigError::MissingEndpoint { .. })
        ));
        assert!(matches!(
            ExporterConfig {
                endpoint: "ftp://x:1".into(),
                ..config()
            }
            .validate(),
            Err(ExporterConfigError::Client { .. })
        ));
        assert!(config().validate().is_ok());
    }

    #[test]
    fn starting_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            Exporter::start(config()),
            Err(StartError::NoRuntime { .. })
        ));
    }
}
