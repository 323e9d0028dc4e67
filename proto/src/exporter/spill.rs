//! The exporter's disk queue (optional): a batch that finds the memory queue
//! full goes to a [`storage::Spill`] instead, while the disk budget allows;
//! one task reads spilled batches back, oldest first, and sends them (one
//! request at a time, retried until it goes through or the exporter shuts
//! down). A spilled batch is settled for the caller the moment it is on
//! disk (`tailgate_exporter_spans_spilled_total`); its later send counts in
//! `tailgate_exporter_spans_sent_total` only, so [`Exporter::settled_spans`]
//! counts each span once.
//!
//! Batches left on disk at shutdown (or by a killed process) are sent by
//! the next exporter opened on the same directory.
//!
//! [`Exporter::settled_spans`]: super::Exporter::settled_spans

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use metrics::{Counter, Gauge};
use storage::{Spill, SpillRecovery};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Backoff, BackoffPolicy, BatchLimits, Context, DropReason, shutdown_deadline};

/// Metric handles of the spill.
pub(super) struct SpillMetrics {
    pub spilled: Counter,
    full: Counter,
    errors: Counter,
    bytes: Gauge,
    batches: Gauge,
}

impl SpillMetrics {
    /// The series of an exporter without a disk queue: a budget of 0 and
    /// nothing spilled, so dashboards and alerts see every exporter (as the
    /// sampler's `tailgate_storage_*` series exist without `storage:`).
    pub(super) fn without_queue(labels: &[(&'static str, String)]) {
        Self::new(labels, 0, SpillRecovery::default());
    }

    fn new(labels: &[(&'static str, String)], budget: u64, recovered: SpillRecovery) -> Self {
        metrics::describe_counter!(
            "tailgate_exporter_spans_spilled_total",
            "Spans the memory queue had no room for, written to the disk queue."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spill_full_total",
            "Batches neither queue had room for (the disk budget was reached): handed back to the caller, which pushes back."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spill_errors_total",
            "Disk queue writes or reads that failed (the batch was handed back, or is read again later)."
        );
        metrics::describe_gauge!(
            "tailgate_exporter_spill_bytes",
            metrics::Unit::Bytes,
            "Bytes of the disk queue's segment files."
        );
        metrics::describe_gauge!(
            "tailgate_exporter_spill_batches",
            "Batches in the disk queue, waiting for the endpoint."
        );
        metrics::describe_gauge!(
            "tailgate_exporter_spill_budget_bytes",
            metrics::Unit::Bytes,
            "The disk budget the queue shares with the write-ahead log (storage.max_bytes)."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spill_recovered_spans_total",
            "Spans found in the disk queue at start, left by the previous process."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spill_torn_segments_total",
            "Disk queue segments found at start ending in a torn or corrupt frame."
        );
        metrics::describe_counter!(
            "tailgate_exporter_spill_skipped_bytes_total",
            "Bytes of the disk queue skipped at start after a torn or corrupt frame."
        );
        metrics::gauge!("tailgate_exporter_spill_budget_bytes", labels).set(budget as f64);
        metrics::counter!("tailgate_exporter_spill_recovered_spans_total", labels)
            .increment(recovered.spans);
        metrics::counter!("tailgate_exporter_spill_torn_segments_total", labels)
            .increment(recovered.torn);
        metrics::counter!("tailgate_exporter_spill_skipped_bytes_total", labels)
            .increment(recovered.skipped_bytes);
        SpillMetrics {
            spilled: metrics::counter!("tailgate_exporter_spans_spilled_total", labels),
            full: metrics::counter!("tailgate_exporter_spill_full_total", labels),
            errors: metrics::counter!("tailgate_exporter_spill_errors_total", labels),
            bytes: metrics::gauge!("tailgate_exporter_spill_bytes", labels),
            batches: metrics::gauge!("tailgate_exporter_spill_batches", labels),
        }
    }
}

/// The disk queue, shared by the senders and the drain task.
pub(super) struct SpillQueue {
    spill: Mutex<Spill>,
    ready: Notify,
    /// Set once the dispatch task has ended at shutdown: nothing is
    /// spilled any more, so an empty queue stays empty.
    closed: AtomicBool,
    pub metrics: SpillMetrics,
}

impl SpillQueue {
    pub fn new(
        spill: Spill,
        recovered: SpillRecovery,
        budget: u64,
        labels: &[(&'static str, String)],
    ) -> Arc<Self> {
        if recovered.batches > 0 {
            tracing::info!(
                dir = %spill.dir().display(),
                batches = recovered.batches,
                spans = recovered.spans,
                torn = recovered.torn,
                "disk queue: batches left by the previous process will be sent"
            );
        }
        let queue = Arc::new(SpillQueue {
            metrics: SpillMetrics::new(labels, budget, recovered),
            spill: Mutex::new(spill),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        });
        queue.with(|_| ());
        queue.ready.notify_one();
        queue
    }

    /// Runs `f` on the spill and publishes its size.
    fn with<T>(&self, f: impl FnOnce(&mut Spill) -> T) -> T {
        let mut spill = self.spill.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut spill);
        self.metrics.bytes.set(spill.bytes() as f64);
        self.metrics.batches.set(spill.batches() as f64);
        out
    }

    /// No batch will be spilled any more (the dispatch task has ended):
    /// the drain task stops once the queue is empty rather than waiting
    /// for the shutdown deadline.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Writes a batch to disk. `false`: no room in the budget, or the write
    /// failed (counted); the caller keeps the batch.
    pub fn push(&self, request: &[u8], spans: usize) -> bool {
        let spans32 = u32::try_from(spans).unwrap_or(u32::MAX);
        match self.with(|s| s.push(spans32, request)) {
            Ok(true) => {
                self.metrics.spilled.increment(spans as u64);
                self.ready.notify_one();
                true
            }
            Ok(false) => {
                self.metrics.full.increment(1);
                false
            }
            Err(error) => {
                self.metrics.errors.increment(1);
                tracing::warn!(%error, "disk queue: write failed, batch handed back");
                false
            }
        }
    }

    /// Reads batches back, oldest first, up to one request's limits (at
    /// least one batch).
    fn take(&self, limits: &BatchLimits) -> (Bytes, usize) {
        self.with(|spill| {
            let mut body = BytesMut::new();
            let mut spans = 0;
            while spans < limits.max_spans && body.len() < limits.max_bytes {
                match spill.pop() {
                    Ok(Some(batch)) => {
                        spans += batch.spans as usize;
                        body.extend_from_slice(&batch.request);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.metrics.errors.increment(1);
                        tracing::warn!(%error, "disk queue: read failed, will retry");
                        break;
                    }
                }
            }
            (body.freeze(), spans)
        })
    }

    fn ack(&self) {
        self.with(Spill::ack);
    }
}

/// The drain task: sends what the disk queue holds until the exporter's
/// shutdown deadline; what is left stays on disk for the next start. Once
/// the queue is [closed](SpillQueue::close) and empty it ends at once.
pub(super) async fn drain(
    context: Arc<Context>,
    queue: Arc<SpillQueue>,
    limits: BatchLimits,
    backoff: BackoffPolicy,
) {
    let deadline = shutdown_deadline(context.deadline.clone());
    tokio::pin!(deadline);
    loop {
        let (body, spans) = {
            let queue = queue.clone();
            match tokio::task::spawn_blocking(move || queue.take(&limits)).await {
                Ok(taken) => taken,
                Err(_) => return,
            }
        };
        if body.is_empty() {
            if spans > 0 {
                queue.ack();
            }
            if queue.closed.load(Ordering::Acquire) && queue.with(|s| s.batches() == 0) {
                return;
            }
            tokio::select! {
                biased;
                () = &mut deadline => return,
                () = queue.ready.notified() => {}
                // A read that failed is tried again.
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            continue;
        }
        tokio::select! {
            biased;
            // Not acknowledged: read again at the next start.
            () = &mut deadline => return,
            () = send(&context, body, spans as u64, backoff) => queue.ack(),
        }
    }
}

/// Sends one request read from disk until the endpoint takes it or refuses
/// it for good (dropped, counted).
async fn send(context: &Context, body: Bytes, spans: u64, backoff: BackoffPolicy) {
    let metrics = &context.room.metrics;
    // The batches waited on disk already: retry for as long as it takes.
    let policy = BackoffPolicy {
        max_elapsed_time: None,
        ..backoff
    };
    let mut backoff = Backoff::new(policy, Instant::now());
    loop {
        let started = Instant::now();
        let result = context.client.export(body.clone()).await;
        metrics.duration.record(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(response) => {
                let rejected = response.rejected_spans.min(spans);
                // Counters only: these spans were settled when spilled.
                metrics.sent.metric.increment(spans - rejected);
                metrics
                    .dropped(DropReason::Rejected)
                    .metric
                    .increment(rejected);
                return;
            }
            Err(error) => error,
        };
        metrics.failed.increment(spans);
        let delay = backoff.after(&error);
        let Some(delay) = delay else {
            tracing::warn!(%error, spans, "disk queue: export failed for good, dropped");
            metrics
                .dropped(DropReason::NotRetryable)
                .metric
                .increment(spans);
            return;
        };
        metrics.retried.increment(spans);
        tokio::time::sleep(delay).await;
    }
}
