//! The durable buffer (`storage:`), the sampler's side of the `storage`
//! crate: what to log, the task that owns the log, and recovery at start.
//!
//! - The receivers' sink logs each accepted request (with the trace IDs it
//!   holds and the time) before its spans reach the shards; with
//!   `durable_ack` it answers the client once the record is synced.
//! - The shards log each decision, and "delivered" for the traces whose
//!   kept spans the exporter has settled (sent, or dropped and counted),
//!   whose stray spans the forwarder has passed to their owner, or that
//!   the mover has pushed to another sampler: settled traces free their
//!   segments. Nothing is settled while it is only queued in this process,
//!   so a SIGKILL finds it in the log.
//! - One task owns the [`Wal`]: it appends what arrives on a bounded
//!   channel and commits every `commit_interval` on a blocking thread. A
//!   full channel, a log at `max_bytes` or a failing commit (disk full)
//!   make the sink refuse with a retryable status, counted as
//!   `storage_full`: backpressure, never a crash.
//! - [`recover`] runs before the node is ready: one read-only pass learns
//!   which traces were settled, a second replays the rest into the shards
//!   (each trace keeps its first-seen time, so past-due ones are decided
//!   at once), then decisions: kept traces whose delivery was not logged
//!   are exported again. `/readyz` and a gauge report the progress.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lb_exporter::LbExporter;
use proto::exporter::Exporter;
use proto::view::TraceId;
use storage::{Budget, Progress, Record, RecoveryStats, StorageError, TraceKey, Wal, WalConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::{CachedDecision, Kept};
use crate::config::StorageConfig;
use crate::ingest::{IngestBatch, shard_of};
use crate::metrics::Metrics;
use crate::shard::{IngestMsg, Origin, ShardMsg};

/// Records waiting for the log task, at most: past it the sink refuses.
const QUEUE: usize = 16_384;

/// Request bytes waiting for the log task, at most: past it the sink
/// refuses (the queue holds the requests alive).
const QUEUE_BYTES: usize = 64 << 20;

/// How long after the exporter settled as many spans as a batch's mark
/// the batch counts as delivered, when the exporter never empties.
const MARK_DELAY: Duration = Duration::from_secs(10);

/// How long after strays were queued to the forwarder they count as
/// passed on, when the forwarder never empties (past its timeout and a few
/// retries: by then they were delivered, re-routed, or dropped and counted).
const FORWARD_DELAY: Duration = Duration::from_secs(30);

/// What the node logs.
pub(crate) enum Entry {
    Spans {
        at_unix_nanos: u64,
        traces: Vec<TraceKey>,
        request: Bytes,
    },
    /// A shard's decisions of one round, in order.
    Decisions(Vec<(TraceKey, bool)>),
    Delivered {
        traces: Vec<TraceKey>,
    },
    /// Stray spans of these traces queued to the forwarder: delivered once
    /// the forwarder holds nothing (or after [`FORWARD_DELAY`]).
    Forwarded {
        traces: Vec<TraceKey>,
    },
    /// Kept traces handed to the exporter: delivered once the exporter has
    /// settled `mark` spans (the count handed to it by then).
    Exported {
        traces: Vec<TraceKey>,
        mark: u64,
    },
}

struct Op {
    entry: Entry,
    /// Answered once the record is synced (`durable_ack`).
    ack: Option<oneshot::Sender<()>>,
}

/// The handle the sink and the shards log through. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Durable {
    tx: mpsc::Sender<Op>,
    full: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    durable_ack: bool,
    /// Spans handed to the exporter so far, by every shard.
    handed: Arc<AtomicU64>,
    /// Request bytes queued for the log task.
    queued: Arc<AtomicUsize>,
}

/// The receiving end, for [`start`] once recovery is done.
pub(crate) struct DurableQueue {
    rx: mpsc::Receiver<Op>,
    full: Arc<AtomicBool>,
    handed: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
}

/// Now, in Unix nanoseconds.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Durable {
    /// The handle and its queue; records queue up until [`start`] runs.
    pub fn new(config: &StorageConfig, metrics: Arc<Metrics>) -> (Durable, DurableQueue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let full = Arc::new(AtomicBool::new(false));
        let handed = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Durable {
                tx,
                full: full.clone(),
                metrics,
                durable_ack: config.durable_ack,
                handed: handed.clone(),
                queued: queued.clone(),
            },
            DurableQueue {
                rx,
                full,
                handed,
                queued,
            },
        )
    }

    /// Logs an accepted request. `Err`: the log cannot take it now (push
    /// back). With `durable_ack`, the receiver completes once it is synced.
    pub fn spans(
        &self,
        traces: Vec<TraceKey>,
        request: Bytes,
    ) -> Result<Option<oneshot::Receiver<()>>, ()> {
        if self.full.load(Ordering::Relaxed)
            || self.queued.load(Ordering::Relaxed) + request.len() > QUEUE_BYTES
        {
            return Err(());
        }
        let len = request.len();
        let (ack, synced) = if self.durable_ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let entry = Entry::Spans {
            at_unix_nanos: unix_nanos(),
            traces,
            request,
        };
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(Op { entry, ack }).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return Err(());
        }
        Ok(synced)
    }

    /// Decisions, one record each, sent together (one message per shard
    /// round rather than per trace).
    pub fn decisions(&self, decided: Vec<(TraceKey, bool)>) {
        if !decided.is_empty() {
            self.log(Entry::Decisions(decided));
        }
    }

    /// These traces are settled here: their kept spans went to the
    /// exporter, or they left this node.
    pub fn delivered(&self, traces: Vec<TraceKey>) {
        if !traces.is_empty() {
            self.log(Entry::Delivered { traces });
        }
    }

    /// Stray spans of these traces were queued to the forwarder: settled
    /// once it has passed them on (see [`Entry::Forwarded`]).
    pub fn forwarded(&self, traces: Vec<TraceKey>) {
        if !traces.is_empty() {
            self.log(Entry::Forwarded { traces });
        }
    }

    /// Counts `spans` as handed to the exporter, before they are: a batch
    /// is never in the exporter without being counted here, so "the
    /// exporter settled as many spans as were counted" means it holds
    /// none. Returns the count with them: the batch's mark.
    pub fn reserve(&self, spans: usize) -> u64 {
        self.handed.fetch_add(spans as u64, Ordering::SeqCst) + spans as u64
    }

    /// The exporter did not take a batch [`reserve`](Self::reserve)d for.
    pub fn unreserve(&self, spans: usize) {
        self.handed.fetch_sub(spans as u64, Ordering::SeqCst);
    }

    /// Kept spans of these traces were handed to the exporter with `mark`:
    /// logged as delivered once the exporter has held nothing since (exact),
    /// or has settled `mark` spans at least [`MARK_DELAY`] ago (under load
    /// that never lets it empty: requests running side by side make this
    /// one approximate).
    pub fn exported(&self, traces: Vec<TraceKey>, mark: u64) {
        if !traces.is_empty() {
            self.log(Entry::Exported { traces, mark });
        }
    }

    fn log(&self, entry: Entry) {
        if self.tx.try_send(Op { entry, ack: None }).is_err() {
            self.metrics.storage_records_dropped.increment(1);
        }
    }
}

/// What the log task watches to learn that handed-off spans left the
/// process: the exporter (kept spans) and the cluster's forwarder (strays).
pub(crate) struct Outlets {
    pub exporter: Exporter,
    pub forwarder: Option<LbExporter>,
}

/// Starts the task that owns the log. It ends, with a last commit, once
/// every [`Durable`] handle is dropped.
pub(crate) fn start(
    wal: Wal,
    queue: DurableQueue,
    epoch: Instant,
    metrics: Arc<Metrics>,
    outlets: Outlets,
    budget: Option<Arc<Budget>>,
) -> JoinHandle<()> {
    tokio::spawn(drive(wal, queue, epoch, metrics, outlets, budget))
}

/// `budget`: shared with the exporter's disk queue; the log refuses once
/// the two together reach it.
async fn drive(
    mut wal: Wal,
    queue: DurableQueue,
    epoch: Instant,
    metrics: Arc<Metrics>,
    outlets: Outlets,
    budget: Option<Arc<Budget>>,
) {
    let Outlets {
        exporter,
        forwarder,
    } = outlets;
    let DurableQueue {
        mut rx,
        full,
        handed,
        queued,
    } = queue;
    let interval = wal.config().commit_interval;
    let mut waiters: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
    let mut failing = false;
    let mut retry_at: Option<Instant> = None;
    let mut expired = 0;
    // Exported traces waiting for the exporter: their mark, and when the
    // exporter first had settled that many spans.
    let mut exported: VecDeque<(u64, Option<Instant>, Vec<TraceKey>)> = VecDeque::new();
    // Strays queued to the forwarder, and when.
    let mut forwarded: VecDeque<(Instant, Vec<TraceKey>)> = VecDeque::new();
    loop {
        // Settled first, then counted: if the exporter had settled every
        // span counted, it held nothing, and every batch before is done.
        let settled = exporter.settled_spans();
        let idle = settled >= handed.load(Ordering::SeqCst);
        let now = Instant::now();
        for (mark, reached, _) in exported.iter_mut() {
            if reached.is_none() && *mark <= settled {
                *reached = Some(now);
            }
        }
        while exported.front().is_some_and(|(_, reached, _)| {
            idle || reached.is_some_and(|r| now.duration_since(r) >= MARK_DELAY)
        }) {
            if let Some((_, _, traces)) = exported.pop_front() {
                let _ = wal.append(&Record::Delivered { traces }, epoch.elapsed());
            }
        }
        // Every entry here was queued before it was logged: a forwarder
        // holding nothing now has passed them all on.
        let passed_on = forwarder.as_ref().is_none_or(|f| f.held_spans() == 0);
        while forwarded
            .front()
            .is_some_and(|(at, _)| passed_on || now.duration_since(*at) >= FORWARD_DELAY)
        {
            if let Some((_, traces)) = forwarded.pop_front() {
                let _ = wal.append(&Record::Delivered { traces }, epoch.elapsed());
            }
        }
        let mut due = wal
            .commit_due()
            .map(|d| (epoch + d).max(retry_at.unwrap_or(epoch)));
        if !exported.is_empty() || !forwarded.is_empty() {
            let check = Instant::now() + interval;
            due = Some(due.map_or(check, |d| d.min(check)));
        }
        let op = tokio::select! {
            op = rx.recv() => op,
            () = sleep_until(due) => {
                let Some(w) = commit(wal, epoch, &metrics, &mut waiters, &mut failing).await else {
                    full.store(true, Ordering::Relaxed);
                    return;
                };
                wal = w;
                retry_at = failing.then(|| Instant::now() + interval);
                let (_, now_expired) = wal.deleted_segments();
                metrics.storage_segments_expired.increment(now_expired - expired);
                expired = now_expired;
                let shared_full = budget.as_ref().is_some_and(|b| {
                    b.set_wal(wal.bytes());
                    b.is_full()
                });
                full.store(failing || wal.is_full() || shared_full, Ordering::Relaxed);
                continue;
            }
        };
        let Some(Op { mut entry, ack }) = op else {
            // Every handle is gone: the node is stopping, and the exporter
            // has drained (or dropped and counted) what it held.
            let settled = exporter.settled_spans();
            if settled >= handed.load(Ordering::SeqCst) {
                for (_, _, traces) in exported.drain(..) {
                    let _ = wal.append(&Record::Delivered { traces }, epoch.elapsed());
                }
            }
            if forwarder.as_ref().is_none_or(|f| f.held_spans() == 0) {
                for (_, traces) in forwarded.drain(..) {
                    let _ = wal.append(&Record::Delivered { traces }, epoch.elapsed());
                }
            }
            let _ = commit(wal, epoch, &metrics, &mut waiters, &mut failing).await;
            return;
        };
        let now = epoch.elapsed();
        let appended = match &mut entry {
            Entry::Spans {
                at_unix_nanos,
                traces,
                request,
            } => {
                queued.fetch_sub(request.len(), Ordering::Relaxed);
                wal.append(
                    &Record::Spans {
                        at_unix_nanos: *at_unix_nanos,
                        traces: std::mem::take(traces),
                        request,
                    },
                    now,
                )
            }
            Entry::Decisions(decided) => {
                let at_unix_nanos = unix_nanos();
                decided
                    .iter()
                    .map(|(trace, kept)| {
                        wal.append(
                            &Record::Decision {
                                trace: *trace,
                                kept: *kept,
                                at_unix_nanos,
                            },
                            now,
                        )
                    })
                    .last()
                    .unwrap_or(Ok(wal.appended()))
            }
            Entry::Delivered { traces } => wal.append(
                &Record::Delivered {
                    traces: std::mem::take(traces),
                },
                now,
            ),
            Entry::Exported { traces, mark } => {
                exported.push_back((*mark, None, std::mem::take(traces)));
                continue;
            }
            Entry::Forwarded { traces } => {
                forwarded.push_back((Instant::now(), std::mem::take(traces)));
                continue;
            }
        };
        match appended {
            Ok(n) => {
                if let Some(ack) = ack {
                    waiters.push((n, ack));
                }
            }
            Err(e) => {
                // Too large: never logged; the client is answered anyway.
                tracing::warn!(error = %e, "a record was not logged");
                metrics.storage_records_dropped.increment(1);
            }
        }
        full.store(failing || wal.is_full(), Ordering::Relaxed);
    }
}

/// One group commit on a blocking thread. `None` if that thread panicked
/// (the log is gone: the node refuses from then on).
async fn commit(
    mut wal: Wal,
    epoch: Instant,
    metrics: &Metrics,
    waiters: &mut Vec<(u64, oneshot::Sender<()>)>,
    failing: &mut bool,
) -> Option<Wal> {
    let now = epoch.elapsed();
    let (wal, result) = match tokio::task::spawn_blocking(move || {
        let r = wal.commit(now);
        (wal, r)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "the write-ahead log's commit failed; storage is off");
            return None;
        }
    };
    match result {
        Ok(durable) => {
            *failing = false;
            metrics.storage_commits.increment(1);
            waiters.retain_mut(|(n, _)| *n > durable);
            // Dropping a sender completes its receiver: answered.
        }
        Err(e) => {
            if !*failing {
                tracing::error!(error = %e, "the write-ahead log cannot commit; refusing until it can");
            }
            *failing = true;
            metrics.storage_errors[usize::from(e.is_disk_full())].increment(1);
        }
    }
    metrics.storage_bytes.set(wal.bytes() as f64);
    Some(wal)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What became of a trace, by the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    NotKept,
    /// Kept; its delivery not logged: exported again.
    Kept,
    Delivered,
}

/// What recovery did.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub stats: RecoveryStats,
    pub spans: u64,
    pub decisions: u64,
}

/// Reads the log in `config.path` and replays it into the shards (see the
/// module doc). Blocking: run it on a blocking thread. `progress` gets the
/// share done, 0 to 1.
pub(crate) fn recover(
    config: &StorageConfig,
    shards: &[mpsc::Sender<ShardMsg>],
    epoch: Instant,
    mut progress: impl FnMut(f64),
) -> Result<(Wal, Recovered), StorageError> {
    let share = |p: Progress, half: f64| {
        let done = if p.total_bytes == 0 {
            1.0
        } else {
            p.done_bytes as f64 / p.total_bytes as f64
        };
        half + done / 2.0
    };
    let mut settled: HashMap<TraceKey, Settled> = HashMap::new();
    storage::scan(&config.path, |record, p| {
        match record {
            Record::Decision { trace, kept, .. } => {
                let to = if kept {
                    Settled::Kept
                } else {
                    Settled::NotKept
                };
                settled
                    .entry(trace)
                    .and_modify(|s| {
                        if *s != Settled::Delivered {
                            *s = to;
                        }
                    })
                    .or_insert(to);
            }
            Record::Delivered { traces } => {
                for t in traces {
                    settled.insert(t, Settled::Delivered);
                }
            }
            Record::Spans { .. } => {}
        }
        progress(share(p, 0.0));
    })?;
    let mut done = Recovered::default();
    let now_unix = unix_nanos();
    let now = epoch.elapsed();
    let n = shards.len().max(1);
    let replayed = |id: &TraceId| {
        !matches!(
            settled.get(&id.0),
            Some(Settled::NotKept | Settled::Delivered)
        )
    };
    let wal_config = WalConfig {
        dir: config.path.clone(),
        segment_bytes: config.segment_bytes,
        commit_interval: config.commit_interval,
        max_bytes: config.max_bytes,
        max_age: config.max_age,
    };
    let (wal, stats) = Wal::open(wal_config, now, |record, p| {
        match record {
            Record::Spans {
                at_unix_nanos,
                request,
                ..
            } => {
                let age = Duration::from_nanos(now_unix.saturating_sub(at_unix_nanos));
                // Checksummed, written by us from a request that parsed.
                if let Ok(batches) = IngestBatch::split(Bytes::copy_from_slice(request), n) {
                    for (shard, mut batch) in batches.into_iter().enumerate() {
                        batch.spans.retain(|s| replayed(&s.trace_id));
                        if batch.is_empty() {
                            continue;
                        }
                        done.spans += batch.len() as u64;
                        let msg = ShardMsg::Ingest(IngestMsg {
                            batch,
                            charge: 0,
                            origin: Origin::Moved {
                                first_seen: now.saturating_sub(age),
                            },
                        });
                        if shards[shard].blocking_send(msg).is_err() {
                            return;
                        }
                    }
                }
            }
            Record::Decision { trace, kept, .. } => {
                let decision = if kept {
                    CachedDecision::sampled(Kept::default())
                } else {
                    CachedDecision::NotSampled
                };
                let id = TraceId(trace);
                done.decisions += 1;
                let msg = ShardMsg::Decisions(vec![(id, decision)]);
                let _ = shards[shard_of(&id, n)].blocking_send(msg);
            }
            Record::Delivered { .. } => {}
        }
        progress(share(p, 0.5));
    })?;
    progress(1.0);
    done.stats = stats;
    Ok((wal, done))
}
