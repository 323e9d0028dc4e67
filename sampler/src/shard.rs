//! One shard's task: owns a [`TraceBuffer`], feeds it the batches the
//! receivers hand over, wakes at the next deadline, decides what is due with
//! the policies in force, and hands kept traces, whole, to the exporter.
//!
//! No lock is taken on this path but the rate limiters' (see
//! [`ActivePolicy`]): the buffer is the task's own, batches arrive over a
//! bounded channel, and the node-wide counters it publishes are atomics.
//!
//! In a cluster the shard also sorts what clients send: spans of a trace it
//! neither holds nor owns (nor has a decision for) are strays, forwarded to
//! their owner; and the [`crate::cluster`] mover reaches the buffer through
//! the same channel, to take traces and decisions out ([`ShardMsg::Take`])
//! and to put decisions taken elsewhere in ([`ShardMsg::Decisions`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use policy::{Decision, Outcome, SamplingStrategy, TraceView};
use proto::exporter::{Exporter, OtlpBatch, SendError};
use proto::view::TraceId;
use proto::wire::{len_field_len, put_len_header};
use proto::write::{self, SpanRef};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::active::{ActivePolicy, Tally};
use crate::buffer::{Due, TakenTrace, TraceBuffer};
use crate::cache::{CachedDecision, Kept};
use crate::cluster::ClusterShared;
use crate::config::SamplerConfig;
use crate::durable::Durable;
use crate::holds::RefusedHolds;
use crate::ingest::IngestBatch;
use crate::logs::{HeldLogs, LogsPath};
use crate::metrics::{Dropped, HandOver, Metrics};
use crate::state::NodeState;

/// Work for a shard.
pub(crate) enum ShardMsg {
    /// Spans to buffer.
    Ingest(IngestMsg),
    /// Decisions another sampler took for traces that now belong here.
    Decisions(Vec<(TraceId, CachedDecision)>),
    /// The cluster mover takes traces (and copies of decisions) out.
    Take(TakeMsg),
    /// Log records of traces of this shard (see [`crate::logs`]): per
    /// trace, a complete logs request and its record count; and who sent
    /// them (a client's strays are forwarded to their owner, like spans).
    Logs(Vec<(TraceId, bytes::Bytes, usize)>, Origin),
    /// The write-ahead log is replayed: sent after the last replayed
    /// batch on the same channel, so every one of them is in the buffer
    /// when the shard starts deciding again.
    ReplayDone,
}

/// Spans to buffer, and where they came from.
#[derive(Debug)]
pub(crate) struct IngestMsg {
    pub batch: IngestBatch,
    /// Bytes of the request this batch accounts for in
    /// [`NodeState`]'s in-flight count, released once inserted.
    pub charge: usize,
    pub origin: Origin,
}

/// Who sent a batch, which decides whether its strays may be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An LB or any client: strays are forwarded to their owner.
    Client,
    /// Another sampler forwarded these strays here: kept, never forwarded
    /// again (no loops, whatever the rings say).
    Forwarded,
    /// Whole traces moved here (handed over by another sampler, or put
    /// back by this node's mover), first seen at `first_seen` on the
    /// shard's clock: their decision wait does not restart.
    Moved { first_seen: Duration },
}

/// A predicate over trace IDs, run on the shard's task.
pub(crate) type IdFilter = Box<dyn FnMut(&TraceId) -> bool + Send>;

/// Take out, undecided, up to `max_traces` traces matching `traces`, and
/// copies of the remembered decisions matching `decisions`.
pub(crate) struct TakeMsg {
    pub traces: IdFilter,
    pub max_traces: usize,
    pub decisions: Option<IdFilter>,
    pub reply: oneshot::Sender<Taken>,
}

/// What a [`TakeMsg`] took. The traces' spans still count as buffered
/// (`tailgate_buffer_spans`) until the mover hands them over or puts them
/// back.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub traces: Vec<TakenTrace>,
    pub decisions: Vec<(TraceId, CachedDecision)>,
}

/// At most this many batches are inserted between two expiries, so a
/// stream of batches cannot hold back deadlines.
const BATCHES_PER_ROUND: usize = 32;

/// The least time between two expiries a timer wakes the shard for. A
/// batch's new traces share a deadline, so deadlines come as often as
/// batches, and waking for each (besides the wake-up each batch brings,
/// which expires too) doubled the shard's wake-ups; now a stream's traces
/// are decided at the wake-ups its batches bring, and a deadline waits at
/// most this long past its time (the Collector decides on a 1 s tick).
const WAKE_GAP: Duration = Duration::from_millis(20);

/// How long batches gather in a shard's queue after a round before the
/// next round takes them (unless the queue is half full: then a receiver
/// nudges the shard at once). At a few hundred requests a second, a shard
/// woken for each request paid for cold caches at every wake-up, more than
/// for the request's own spans; a round of several requests keeps them
/// warm (BENCHMARKS.md, "the shards' gather gap": 20 ms gave +12 %, 50 ms
/// +16 % spans per CPU-second at 100k spans/s). Spans reach the buffer at
/// most this much later, far inside any decision wait; a request that
/// finds the shard idle longer than this is taken at once.
const GATHER_GAP: Duration = Duration::from_millis(50);

/// Waits for a receiver's nudge to shard `index` (never, without one).
async fn nudged(node: &NodeState, index: usize) {
    match node.nudged(index) {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// What every shard shares.
pub(crate) struct ShardContext {
    pub exporter: Exporter,
    pub node: Arc<NodeState>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<SamplerConfig>,
    /// The shards' clock starts here; paused in tests.
    pub epoch: Instant,
    /// Kept spans are handed to the exporter in batches of about this many
    /// bytes (a decided trace is never split).
    pub flush_bytes: usize,
    /// Ownership and stray forwarding, when the node is in a cluster.
    pub cluster: Option<Arc<ClusterShared>>,
    /// Traces whose refused spans are awaited (see [`crate::holds`]).
    pub holds: Arc<RefusedHolds>,
    /// The write-ahead log, with `storage:`: decisions, and traces settled.
    pub durable: Option<Durable>,
    /// The logs exporter and the log metrics.
    pub logs: Arc<LogsPath>,
    /// The node starts by replaying its write-ahead log: each shard decides
    /// nothing until [`ShardMsg::ReplayDone`] reaches it, since a past-due
    /// trace's other spans may come later in the log.
    pub replays: bool,
}

pub(crate) struct Shard {
    ctx: Arc<ShardContext>,
    /// This shard's index, for its table in [`RefusedHolds`].
    index: usize,
    /// Until [`ShardMsg::ReplayDone`]: nothing is decided by its deadline
    /// (a flag shared by the shards and cleared when the last replayed
    /// batch was *sent* let a shard decide a trace on the part of it that
    /// it had taken off its queue so far).
    replaying: bool,
    buffer: TraceBuffer,
    /// Traces held for refused spans, and until when (the shard's clock).
    held: HashMap<TraceId, Duration>,
    rx: mpsc::Receiver<ShardMsg>,
    policies: watch::Receiver<Arc<ActivePolicy>>,
    /// `Some(deadline)`: stop taking work, decide everything, hand it over
    /// by `deadline`.
    stop: watch::Receiver<Option<Instant>>,
    /// Kept spans written, not yet handed to the exporter.
    out: BytesMut,
    out_spans: usize,
    /// With `storage:`, the traces those spans belong to: logged as
    /// delivered once handed over.
    out_traces: Vec<[u8; 16]>,
    /// With `storage:`, decisions not sent to the log yet (sent once per
    /// round, not once per trace).
    decided: Vec<([u8; 16], bool)>,
    /// Decisions of the round not remembered yet: remembered together at
    /// its end (and before it waits on a flush), so that their lookups in
    /// the decision cache overlap ([`crate::buffer::TraceBuffer::record_decisions`]).
    remember: Vec<(TraceId, CachedDecision)>,
    /// The traces due at a wake-up: empty between wake-ups, its room kept.
    ready: Vec<TakenTrace>,
    /// Votes and decisions counted since the last flush to the policy
    /// file's counters, and spans not sampled.
    tally: Tally,
    not_sampled: u64,
    next_deadline: Option<Duration>,
    /// When [`Shard::expire`] last ran.
    last_expiry: Instant,
    /// What this shard last added to the node-wide gauges.
    published: Published,
    /// Log records held with their traces, beside the buffer.
    logs: HeldLogs,
    /// Kept log records written, not yet handed to the logs exporter.
    logs_out: BytesMut,
    logs_out_records: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Published {
    traces: usize,
    spans: usize,
    bytes: usize,
    log_records: usize,
}

impl Shard {
    pub fn new(
        ctx: Arc<ShardContext>,
        index: usize,
        rx: mpsc::Receiver<ShardMsg>,
        mut policies: watch::Receiver<Arc<ActivePolicy>>,
        stop: watch::Receiver<Option<Instant>>,
    ) -> Shard {
        let settings = ctx
            .config
            .buffer_settings(&policies.borrow_and_update().file);
        Shard {
            buffer: TraceBuffer::new(settings),
            held: HashMap::new(),
            replaying: ctx.replays,
            ctx,
            index,
            rx,
            policies,
            stop,
            out: BytesMut::new(),
            out_spans: 0,
            out_traces: Vec::new(),
            decided: Vec::new(),
            remember: Vec::new(),
            ready: Vec::new(),
            tally: Tally::default(),
            not_sampled: 0,
            next_deadline: None,
            // As if idle long enough: the first batch is taken at once.
            last_expiry: Instant::now()
                .checked_sub(GATHER_GAP.max(WAKE_GAP))
                .unwrap_or_else(Instant::now),
            published: Published::default(),
            logs: HeldLogs::default(),
            logs_out: BytesMut::new(),
            logs_out_records: 0,
        }
    }

    fn now(&self) -> Duration {
        self.ctx.epoch.elapsed()
    }

    pub async fn run(mut self) {
        let mut policies_open = true;
        // The last round took all it could: more is waiting, no gap.
        let mut full_round = false;
        // A receiver found the queue half full: no gap.
        let mut nudged_now = false;
        let node = self.ctx.node.clone();
        loop {
            let wake = self
                .next_deadline
                .map(|d| (self.ctx.epoch + d).max(self.last_expiry + WAKE_GAP));
            // Gather: batches that arrive within GATHER_GAP of the last
            // round wait for the next one, unless the queue is half full.
            let gather_until = self.last_expiry + GATHER_GAP;
            let take = full_round
                || nudged_now
                || self.rx.len() * 2 >= self.rx.max_capacity()
                || Instant::now() >= gather_until;
            tokio::select! {
                biased;
                changed = self.stop.changed() => {
                    if changed.is_err() || self.stop.borrow().is_some() {
                        break;
                    }
                }
                changed = self.policies.changed(), if policies_open => match changed {
                    Ok(()) => self.apply_policy(),
                    Err(_) => policies_open = false,
                },
                msg = self.rx.recv(), if take => match msg {
                    Some(msg) => {
                        self.handle(msg);
                        full_round = self.take_queued(1);
                        nudged_now = false;
                    }
                    None => break,
                },
                () = nudged(&node, self.index), if !take => {
                    nudged_now = true;
                    continue;
                }
                () = tokio::time::sleep_until(gather_until), if !take => continue,
                // Awake anyway: what gathered goes in before the expiry.
                () = sleep_until(wake) => full_round = self.take_queued(0),
            }
            self.expire().await;
        }
        self.drain().await;
    }

    /// Handles what is queued, up to a round's worth with the `handled`
    /// already taken; true if that left more waiting.
    fn take_queued(&mut self, mut handled: usize) -> bool {
        while handled < BATCHES_PER_ROUND {
            match self.rx.try_recv() {
                Ok(msg) => self.handle(msg),
                Err(_) => return false,
            }
            handled += 1;
        }
        true
    }

    fn apply_policy(&mut self) {
        let active = self.policies.borrow_and_update().clone();
        self.buffer
            .set_settings(self.ctx.config.buffer_settings(&active.file));
    }

    fn handle(&mut self, msg: ShardMsg) {
        debug_assert!(
            self.remember.is_empty(),
            "a round's decisions are remembered before the next message"
        );
        match msg {
            ShardMsg::Ingest(msg) => self.ingest(msg),
            ShardMsg::Decisions(decisions) => self.apply_decisions(decisions),
            ShardMsg::Take(msg) => self.take(msg),
            ShardMsg::Logs(parts, origin) => self.ingest_logs(parts, origin),
            // The loop decides what is due right after.
            ShardMsg::ReplayDone => self.replaying = false,
        }
    }

    /// Log records of traces of this shard: they follow a remembered
    /// decision at once, or wait with their trace (see [`crate::logs`]).
    /// A client's records of a trace this node neither holds (spans or
    /// records), nor owns, nor has a decision for go to the owner first.
    fn ingest_logs(&mut self, mut parts: Vec<(TraceId, bytes::Bytes, usize)>, origin: Origin) {
        if origin == Origin::Client {
            self.forward_stray_logs(&mut parts);
        }
        let now = self.now();
        let wait = self.buffer.settings().decision_wait;
        for (id, part, records) in parts {
            match self.buffer.cached_decision(&id) {
                Some(decision) => {
                    let kept = matches!(decision, CachedDecision::Sampled(_));
                    self.release_logs(vec![part], records, Some(kept));
                }
                None => self.logs.hold(id, part, records, now + wait),
            }
        }
        self.wake_for_logs();
    }

    /// Forwards, through the logs forwarder (marked as forwarded, so the
    /// owner holds them and never forwards them again), the records of
    /// traces that are strays here, and removes them from `parts`. When
    /// the owner cannot be reached they stay: held here like any records
    /// (handed over with the trace if its spans come here, else forwarded
    /// as orphans at their deadline).
    fn forward_stray_logs(&mut self, parts: &mut Vec<(TraceId, bytes::Bytes, usize)>) {
        let Some(cluster) = self.ctx.cluster.clone() else {
            return;
        };
        let ownership = cluster.ownership.borrow().clone();
        let down = cluster.logs_forwarder.members_down();
        let is_stray = |id: &TraceId| {
            !ownership.owns(id)
                && !self.buffer.holds(id)
                && !self.logs.holds(id)
                && self.buffer.cached_decision(id).is_none()
                && !ownership.owner(id).is_some_and(|m| down.contains(m))
        };
        let (strays, here): (Vec<_>, Vec<_>) = parts.drain(..).partition(|(id, ..)| is_stray(id));
        *parts = here;
        if strays.is_empty() {
            return;
        }
        let mut request = BytesMut::new();
        for (_, part, _) in &strays {
            request.extend_from_slice(part);
        }
        match cluster.logs_forwarder.send(&request.freeze()) {
            Ok(records) => self.ctx.logs.metrics.handed_over.increment(records as u64),
            Err(e) => {
                tracing::debug!(error = %e, "stray log records kept: the owner cannot take them now");
                parts.extend(strays);
            }
        }
    }

    /// Writes released records out (kept, orphans with no decision
    /// (`None`), or every record in a dry run, counted by the decision
    /// they would have followed) or counts them not sampled.
    fn release_logs(&mut self, parts: Vec<bytes::Bytes>, records: usize, kept: Option<bool>) {
        let dry_run = self.ctx.config.dry_run;
        if dry_run && let Some(kept) = kept {
            self.ctx.logs.metrics.dry_run[usize::from(!kept)].increment(records as u64);
        }
        if kept != Some(false) || dry_run {
            for part in parts {
                self.logs_out.extend_from_slice(&part);
            }
            self.logs_out_records += records;
        } else {
            self.ctx.logs.metrics.not_sampled.increment(records as u64);
        }
    }

    /// The records held for `id` leave with its decision.
    ///
    /// `kept` is the decision itself, not the remembered one: a decision
    /// is remembered at the end of its round, and not at all when its
    /// kind's cache size is 0.
    fn settle_logs(&mut self, id: &TraceId, kept: bool) {
        if let Some(taken) = self.logs.take(id) {
            self.release_logs(taken.parts, taken.records, Some(kept));
        }
    }

    /// Records whose wait ended: their trace is still buffered (wait
    /// more), decided (follow it), or has no spans here (orphans,
    /// forwarded).
    fn expire_logs(&mut self, now: Duration) {
        let wait = self.buffer.settings().decision_wait;
        for taken in self.logs.expire(now) {
            if self.buffer.holds(&taken.id) {
                self.logs.hold_again(taken, now + wait);
                continue;
            }
            self.release_unbuffered_logs(taken);
        }
        self.wake_for_logs();
    }

    /// Records whose trace has no spans here (any more): they follow its
    /// decision if one is remembered, else go out as orphans.
    fn release_unbuffered_logs(&mut self, taken: crate::logs::TakenLogs) {
        match self.buffer.cached_decision(&taken.id) {
            Some(decision) => {
                let kept = matches!(decision, CachedDecision::Sampled(_));
                self.release_logs(taken.parts, taken.records, Some(kept));
            }
            None => {
                self.ctx
                    .logs
                    .metrics
                    .orphaned
                    .increment(taken.records as u64);
                self.release_logs(taken.parts, taken.records, None);
            }
        }
    }

    fn wake_for_logs(&mut self) {
        if let Some(d) = self.logs.next_deadline() {
            self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
        }
    }

    /// Hands the written log records to the logs exporter, waiting for
    /// room like spans do (only the shutdown deadline ends the wait, with
    /// a drop).
    async fn flush_logs(&mut self) {
        if self.logs_out_records == 0 {
            return;
        }
        let records = self.logs_out_records;
        let batch = OtlpBatch {
            request: self.logs_out.split().freeze(),
            spans: records,
        };
        self.logs_out_records = 0;
        let exporter = self.ctx.logs.exporter.clone();
        let outcome = match exporter.try_send(batch) {
            Ok(()) => Ok(()),
            Err(SendError::QueueFull(batch)) => {
                let _blocked = self.ctx.node.export_blocked();
                self.publish_with_logs(records);
                tokio::select! {
                    sent = exporter.send(batch) => sent.map_err(|_| Dropped::ExporterClosed),
                    () = shutdown_deadline(self.stop.clone()) => Err(Dropped::ShutdownDeadline),
                }
            }
            Err(SendError::Closed(_)) => Err(Dropped::ExporterClosed),
        };
        let metrics = &self.ctx.logs.metrics;
        match outcome {
            Ok(()) => metrics.forwarded.increment(records as u64),
            Err(reason) => {
                tracing::warn!(records, reason = ?reason, "kept log records could not be handed to the logs exporter, dropped");
                metrics.dropped(reason).increment(records as u64);
            }
        }
        self.publish();
    }

    /// Inserts a batch; late spans of kept traces are written out at once.
    /// A client's strays are forwarded to their owner first.
    fn ingest(&mut self, mut msg: IngestMsg) {
        if msg.origin == Origin::Client {
            self.forward_strays(&mut msg.batch);
        } else if let Some(cluster) = &self.ctx.cluster {
            // Sent here by a sampler whose ring is ahead of or behind ours:
            // kept (never bounced back at once), and offered to the owner
            // by the mover once the rings agree.
            let ownership = cluster.ownership.borrow();
            if msg.batch.spans.iter().any(|s| !ownership.owns(&s.trace_id)) {
                cluster.kept_unowned.notify_one();
            }
        }
        let report = match msg.origin {
            Origin::Moved { first_seen } => {
                self.buffer
                    .insert_with_first_seen(&msg.batch, first_seen, self.now())
            }
            Origin::Client | Origin::Forwarded => self.buffer.insert(&msg.batch, self.now()),
        };
        let metrics = &self.ctx.metrics;
        let dry_run = self.ctx.config.dry_run;
        // Late spans follow their trace's decision: kept ones are written
        // out at once; in a dry run, every one is, marked.
        let mut late: Vec<(usize, Cow<'_, [u8]>)> = report
            .late_sampled
            .iter()
            .map(|(i, kept)| {
                let span = msg.batch.span_ref(*i).span;
                let span = if dry_run {
                    mark_dry_run(span, Some(kept))
                } else {
                    annotate(span, kept, self.ctx.config.record_policy)
                };
                (*i, span)
            })
            .collect();
        if dry_run {
            late.extend(
                report
                    .late_not_sampled
                    .iter()
                    .map(|i| (*i, mark_dry_run(msg.batch.span_ref(*i).span, None))),
            );
        }
        if !late.is_empty() {
            let refs: Vec<SpanRef<'_>> = late
                .iter()
                .map(|(i, span)| SpanRef {
                    span,
                    ..msg.batch.span_ref(*i)
                })
                .collect();
            write::write_request(&refs, &mut self.out);
            self.out_spans += late.len();
            if self.ctx.durable.is_some() {
                self.out_traces
                    .extend(late.iter().map(|(i, _)| msg.batch.spans[*i].trace_id.0));
            }
        }
        let (kept, not_kept) = (
            report.late_sampled.len() as u64,
            report.late_not_sampled.len() as u64,
        );
        metrics.late[0].increment(kept);
        metrics.late[1].increment(not_kept);
        if dry_run {
            metrics.dry_run[0].increment(kept);
            metrics.dry_run[1].increment(not_kept);
        } else if !report.late_not_sampled.is_empty() {
            metrics.not_sampled.increment(not_kept);
            // Would any of them have made its trace kept? Then a kept
            // trace was lost to lateness: say so.
            let active = self.policies.borrow().clone();
            let now = self.now();
            let would = report
                .late_not_sampled
                .iter()
                .filter(|&&i| {
                    let span = &msg.batch.spans[i];
                    let refs = [msg.batch.span_ref(i)];
                    let view = TraceView {
                        trace_id: span.trace_id,
                        summary: &span.summary,
                        spans: &refs,
                    };
                    active.would_keep(&view, now)
                })
                .count();
            if let Some(durable) = &self.ctx.durable {
                // The request that carried them was logged: settle it.
                let mut ids: Vec<TraceId> = report
                    .late_not_sampled
                    .iter()
                    .map(|&i| msg.batch.spans[i].trace_id)
                    .collect();
                crate::holds::dedup_ids(&mut ids);
                durable.decisions(ids.iter().map(|id| (id.0, false)).collect());
            }
            if would > 0 {
                metrics.late_would_have_kept.increment(would as u64);
                tracing::debug!(
                    spans = would,
                    "late spans of traces decided not kept would have kept them"
                );
            }
        }
        for age in &report.late_ages {
            metrics.late_age.record(age.as_secs_f64());
        }
        self.ctx.node.release_inflight(msg.charge);
        if report.buffered > 0
            && self.policies.borrow().file.sampling_strategy == SamplingStrategy::SpanIngest
        {
            let mut ids: Vec<TraceId> = msg.batch.spans.iter().map(|s| s.trace_id).collect();
            ids.sort_unstable();
            ids.dedup();
            self.decide_on_arrival(&ids);
        }
    }

    /// Forwards, through the load-balancing exporter and marked as
    /// forwarded, the spans of traces this node neither owns, nor holds,
    /// nor has a decision for, and removes them from `batch`. When the
    /// owner cannot be reached (marked down, or the exporter refuses), they
    /// stay in the batch: this node keeps the trace, and the mover offers
    /// it to the owner later.
    fn forward_strays(&mut self, batch: &mut IngestBatch) {
        let Some(cluster) = self.ctx.cluster.clone() else {
            return;
        };
        let ownership = cluster.ownership.borrow().clone();
        let stray: Vec<bool> = batch
            .spans
            .iter()
            .map(|span| {
                let id = &span.trace_id;
                !ownership.owns(id)
                    && !self.buffer.holds(id)
                    && self.buffer.cached_decision(id).is_none()
            })
            .collect();
        let strays = stray.iter().filter(|s| **s).count();
        if strays == 0 {
            return;
        }
        let down = cluster.forwarder.members_down();
        let reachable = |i: usize| {
            let id = &batch.spans[i].trace_id;
            !ownership.owner(id).is_some_and(|m| down.contains(m))
        };
        let send: Vec<usize> = (0..stray.len())
            .filter(|&i| stray[i] && reachable(i))
            .collect();
        let mut sent = vec![false; stray.len()];
        if !send.is_empty() {
            let refs: Vec<SpanRef<'_>> = send.iter().map(|&i| batch.span_ref(i)).collect();
            let request = write::request(&refs);
            match cluster.forwarder.send(&request) {
                Ok(spans) => {
                    self.ctx
                        .metrics
                        .handed_over(HandOver::Stray)
                        .increment(spans as u64);
                    if let Some(durable) = &self.ctx.durable {
                        // Settled once the forwarder has passed them on:
                        // queued here, a SIGKILL would lose them.
                        durable
                            .forwarded(send.iter().map(|&i| batch.spans[i].trace_id.0).collect());
                    }
                    for &i in &send {
                        sent[i] = true;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, spans = send.len(), "stray spans kept: the owner cannot take them now");
                }
            }
        }
        let kept = strays - sent.iter().filter(|s| **s).count();
        if kept > 0 {
            self.ctx.metrics.strays_kept.increment(kept as u64);
            cluster.kept_unowned.notify_one();
        }
        let mut i = 0;
        batch.spans.retain(|_| {
            let keep = !sent[i];
            i += 1;
            keep
        });
    }

    /// Takes traces and copies of decisions out for the mover. Their spans
    /// stay counted as buffered until the mover settles them.
    fn take(&mut self, mut msg: TakeMsg) {
        let mut n = 0;
        let max = msg.max_traces;
        let pred = &mut msg.traces;
        let traces = self.buffer.take_where(|id| {
            if n < max && pred(id) {
                n += 1;
                true
            } else {
                false
            }
        });
        let decisions = match msg.decisions.as_mut() {
            Some(pred) => self.buffer.decisions_where(|id| pred(id)),
            None => Vec::new(),
        };
        let spans: usize = traces.iter().map(TakenTrace::span_count).sum();
        self.ctx.metrics.buffer_spans.increment(spans as f64);
        self.hand_over_logs(&traces, (max > 0).then_some(&mut msg.traces));
        // Not settled in the log here: the mover does it once their owner
        // has taken them (put back, they are decided here as usual).
        if let Err(taken) = msg.reply.send(Taken { traces, decisions }) {
            // The mover is gone: the traces stay here.
            self.ctx.metrics.buffer_spans.decrement(spans as f64);
            for trace in taken.traces {
                self.put_back(trace);
            }
        }
    }

    /// The log records of traces the mover takes go with them, to the
    /// traces' owners on the ring (where they wait for the trace like any
    /// records). With `unbuffered`, so do the records of the traces it
    /// picks that have no spans here: waiting for spans that went to
    /// another node (or are still on their way), left here they would
    /// leave as orphans, forwarded whatever the owner decides. Kept here
    /// if the owner cannot take them now.
    fn hand_over_logs(&mut self, traces: &[TakenTrace], unbuffered: Option<&mut IdFilter>) {
        let Some(cluster) = self.ctx.cluster.clone() else {
            return;
        };
        let mut taken: Vec<_> = traces
            .iter()
            .filter_map(|t| self.logs.take(&t.id))
            .collect();
        if let Some(pred) = unbuffered {
            let buffer = &self.buffer;
            taken.extend(self.logs.take_where(|id| !buffer.holds(id) && pred(id)));
        }
        if taken.is_empty() {
            return;
        }
        let mut request = BytesMut::new();
        for t in &taken {
            for part in &t.parts {
                request.extend_from_slice(part);
            }
        }
        match cluster.logs_forwarder.send(&request.freeze()) {
            Ok(records) => self.ctx.logs.metrics.handed_over.increment(records as u64),
            Err(e) => {
                tracing::debug!(error = %e, "log records of taken traces kept here: the owner cannot take them now");
                let deadline = self.now() + self.buffer.settings().decision_wait;
                for t in taken {
                    self.logs.hold_again(t, deadline);
                }
                self.wake_for_logs();
            }
        }
        self.publish();
    }

    /// Buffers a taken trace again, keeping its first-seen time.
    fn put_back(&mut self, mut trace: TakenTrace) {
        self.buffer.resolve(&mut trace);
        match IngestBatch::parse(trace.to_request()) {
            Ok(batch) => self.ingest(IngestMsg {
                batch,
                charge: 0,
                origin: Origin::Moved {
                    first_seen: trace.first_seen,
                },
            }),
            // Written by us from spans that parsed; cannot happen.
            Err(e) => tracing::error!(error = %e, "a taken trace no longer parses"),
        }
    }

    /// Follows decisions taken elsewhere: a trace buffered here is decided
    /// at once (its spans count as late spans of that decision), and later
    /// spans follow the remembered decision.
    fn apply_decisions(&mut self, decisions: Vec<(TraceId, CachedDecision)>) {
        for (id, decision) in decisions {
            if let Some(trace) = self.buffer.take_trace(&id) {
                let spans = trace.span_count();
                let metrics = &self.ctx.metrics;
                let dry_run = self.ctx.config.dry_run;
                match &decision {
                    CachedDecision::Sampled(kept) => {
                        let record_policy = self.ctx.config.record_policy;
                        write_annotated(&mut self.out, &trace.span_refs(), |span| {
                            if dry_run {
                                mark_dry_run(span, Some(kept))
                            } else {
                                annotate(span, kept, record_policy)
                            }
                        });
                        self.out_spans += spans;
                        metrics.late[0].increment(spans as u64);
                        if self.ctx.durable.is_some() {
                            self.out_traces.push(id.0);
                        }
                        if dry_run {
                            metrics.dry_run[0].increment(spans as u64);
                        }
                    }
                    CachedDecision::NotSampled if dry_run => {
                        write_annotated(&mut self.out, &trace.span_refs(), |span| {
                            mark_dry_run(span, None)
                        });
                        self.out_spans += spans;
                        metrics.late[1].increment(spans as u64);
                        metrics.dry_run[1].increment(spans as u64);
                        if self.ctx.durable.is_some() {
                            self.out_traces.push(id.0);
                        }
                    }
                    CachedDecision::NotSampled => {
                        metrics.late[1].increment(spans as u64);
                        metrics.not_sampled.increment(spans as u64);
                    }
                }
            }
            let kept = decision.is_sampled();
            self.buffer.record_decision(id, decision);
            self.settle_logs(&id, kept);
        }
    }

    /// Takes the holds noted since the last call: buffered traces wait
    /// for their refused spans; expired holds are forgotten.
    fn take_holds(&mut self) {
        let noted = self.ctx.holds.take(self.index);
        let now = self.now();
        for (id, until) in noted {
            let known = self.held.contains_key(&id);
            let entry = self.held.entry(id).or_insert(until);
            *entry = (*entry).max(until);
            if self.buffer.hold(&id, until) {
                if !known {
                    self.ctx.metrics.traces_held.increment(1);
                }
                self.next_deadline = Some(self.next_deadline.map_or(until, |d| d.min(until)));
            }
        }
        if !self.held.is_empty() {
            self.held.retain(|_, until| *until > now);
        }
    }

    /// When a held trace's hold ends, if it has not ended yet.
    fn held_until(&self, id: &TraceId) -> Option<Duration> {
        let until = *self.held.get(id)?;
        (until > self.now()).then_some(until)
    }

    /// Decides what is due, publishes the counts, hands kept spans over.
    async fn expire(&mut self) {
        self.last_expiry = Instant::now();
        if self.replaying {
            // Woken again by the message that ends the replay.
            self.next_deadline = None;
            self.publish();
            return;
        }
        self.take_holds();
        let now = self.now();
        let mut ready = std::mem::take(&mut self.ready);
        self.next_deadline = self.buffer.expire_into(now, &mut ready);
        self.decide_all(&mut ready, now, true).await;
        self.ready = ready;
        self.expire_logs(now);
        self.publish();
        self.flush(0).await;
        self.flush_logs().await;
        self.publish();
    }

    /// Decides `ready`, flushing as `out` fills. With `holds`, a trace
    /// whose refused spans are still awaited goes back into the buffer
    /// until its hold ends instead (holds noted while a flush waited for
    /// the exporter count too: that wait is when requests are refused).
    async fn decide_all(&mut self, ready: &mut Vec<TakenTrace>, now: Duration, holds: bool) {
        self.decide_each(ready, now, holds).await;
        if let Some(durable) = &self.ctx.durable {
            durable.decisions(std::mem::take(&mut self.decided));
        }
    }

    /// Decides every trace of `ready`, leaving it empty.
    async fn decide_each(&mut self, ready: &mut Vec<TakenTrace>, now: Duration, holds: bool) {
        if ready.is_empty() {
            return;
        }
        let active = self.policies.borrow().clone();
        // Spans taken out of the buffer but not decided yet still count as
        // buffered while a flush waits.
        let mut undecided: usize = ready.iter().map(TakenTrace::span_count).sum();
        for trace in ready.drain(..) {
            undecided -= trace.span_count();
            if holds && let Some(until) = self.held_until(&trace.id) {
                let id = trace.id;
                self.put_back(trace);
                if self.buffer.hold(&id, until) {
                    self.next_deadline = Some(self.next_deadline.map_or(until, |d| d.min(until)));
                }
                continue;
            }
            self.decide(trace, &active, now);
            if self.out.len() >= self.ctx.flush_bytes {
                self.close_round(&active);
                self.publish_with(undecided);
                self.flush(undecided).await;
                if holds {
                    self.take_holds();
                }
            }
        }
        self.close_round(&active);
    }

    /// Ends a round of decisions (or its part before a flush waits):
    /// remembers its decisions together (`remember`), and adds the votes,
    /// decisions and spans not sampled counted since the last call to the
    /// node's counters (once per round, not per trace: see [`Tally`]).
    fn close_round(&mut self, active: &ActivePolicy) {
        self.buffer.record_decisions(&mut self.remember);
        active.flush(&mut self.tally);
        if self.not_sampled > 0 {
            self.ctx
                .metrics
                .not_sampled
                .increment(std::mem::take(&mut self.not_sampled));
        }
    }

    fn decide(&mut self, mut trace: TakenTrace, active: &ActivePolicy, now: Duration) {
        let metrics = &self.ctx.metrics;
        let span_ingest = active.file.sampling_strategy == SamplingStrategy::SpanIngest;
        let reason = match trace.due {
            // span-ingest gives up on what no policy kept by its wait.
            Due::Wait | Due::RootWait if span_ingest => Some("span_ingest_timeout"),
            due => due.reason(),
        };
        if let Some(counter) = reason.and_then(|r| metrics.decision_reason(r)) {
            counter.increment(1);
        }
        let spans = trace.span_count() as u64;
        // maximum_trace_size_bytes: dropped before any decision, as the
        // Collector does; late spans follow as not sampled.
        if trace.due == Due::TooLarge {
            metrics.dropped(Dropped::TooLarge).increment(spans);
            if self.ctx.durable.is_some() {
                self.decided.push((trace.id.0, false));
            }
            self.remember.push((trace.id, CachedDecision::NotSampled));
            self.settle_logs(&trace.id, false);
            self.buffer.recycle(trace);
            return;
        }
        if trace.due == Due::Shutdown && active.file.drop_pending_traces_on_shutdown {
            metrics.dropped(Dropped::PendingAtShutdown).increment(spans);
            if self.ctx.durable.is_some() {
                self.decided.push((trace.id.0, false));
            }
            if let Some(logs) = self.logs.take(&trace.id) {
                self.ctx
                    .logs
                    .metrics
                    .dropped(Dropped::PendingAtShutdown)
                    .increment(logs.records as u64);
            }
            self.buffer.recycle(trace);
            return;
        }
        if span_ingest {
            // span-ingest: a trace still undecided when its wait ends (or a
            // cap takes it out) is not sampled, without another evaluation.
            let decision = Decision::not_sampled();
            active.count(&decision, &mut self.tally);
            self.finish(trace, &decision, now);
            return;
        }
        // Policies that read only the summary and the trace ID decide the
        // same without the spans: gathered only for the kept traces, then.
        let refs = if active.file.policies.reads_spans() {
            self.buffer.resolve(&mut trace);
            trace.span_refs()
        } else {
            Vec::new()
        };
        let view = TraceView {
            trace_id: trace.id,
            summary: &trace.summary,
            spans: &refs,
        };
        let decision = active.evaluate(&view, now, &mut self.tally);
        drop(refs);
        self.finish(trace, &decision, now);
    }

    /// Writes out a kept trace, or counts a dropped one, and remembers the
    /// decision.
    fn finish(&mut self, mut trace: TakenTrace, decision: &Decision, now: Duration) {
        let metrics = &self.ctx.metrics;
        if let Some(counter) = metrics.decided_early(trace.due) {
            counter.increment(1);
        }
        metrics
            .decision_latency
            .record(now.saturating_sub(trace.first_seen).as_secs_f64());
        let spans = trace.span_count();
        if self.ctx.config.dry_run {
            // Forward every trace, marked with what would have happened:
            // no threshold (every trace arrives), the policy always named.
            let kept = decision.sampled.then(|| Kept {
                policy: decision.policy.clone(),
                composite_policy: decision.composite_policy.clone(),
                threshold: None,
            });
            self.buffer.resolve(&mut trace);
            let refs = trace.span_refs();
            write_annotated(&mut self.out, &refs, |span| {
                mark_dry_run(span, kept.as_ref())
            });
            self.out_spans += spans;
            metrics.dry_run[usize::from(kept.is_none())].increment(spans as u64);
            if self.ctx.durable.is_some() {
                self.out_traces.push(trace.id.0);
                self.decided.push((trace.id.0, true));
            }
            let is_kept = kept.is_some();
            let cached = kept.map_or(CachedDecision::NotSampled, CachedDecision::sampled);
            self.remember.push((trace.id, cached));
            self.settle_logs(&trace.id, is_kept);
            self.buffer.recycle(trace);
            return;
        }
        let cached = if decision.sampled {
            self.buffer.resolve(&mut trace);
            let refs = trace.span_refs();
            let record_policy = self.ctx.config.record_policy;
            if record_policy || decision.threshold.is_some() {
                write_annotated(&mut self.out, &refs, |span| {
                    decision.annotate(span, record_policy)
                });
            } else {
                write::write_request(&refs, &mut self.out);
            }
            self.out_spans += spans;
            if self.ctx.durable.is_some() {
                self.out_traces.push(trace.id.0);
            }
            CachedDecision::sampled(Kept {
                policy: record_policy.then(|| decision.policy.clone()).flatten(),
                composite_policy: record_policy
                    .then(|| decision.composite_policy.clone())
                    .flatten(),
                threshold: decision.threshold,
            })
        } else {
            self.not_sampled += spans as u64;
            CachedDecision::NotSampled
        };
        if self.ctx.durable.is_some() {
            self.decided.push((trace.id.0, decision.sampled));
        }
        self.remember.push((trace.id, cached));
        self.settle_logs(&trace.id, decision.sampled);
        self.buffer.recycle(trace);
    }

    /// `span-ingest`: evaluates the traces a batch added to, as they are
    /// now; one a policy keeps or drops is finished at once, the others
    /// wait for more spans or for their deadline.
    fn decide_on_arrival(&mut self, ids: &[TraceId]) {
        let active = self.policies.borrow().clone();
        if active.file.sampling_strategy != SamplingStrategy::SpanIngest {
            return;
        }
        let now = self.now();
        for id in ids {
            let Some(decision) = self.buffer.peek(id, |summary, refs| {
                active.evaluate_quietly(
                    &TraceView {
                        trace_id: *id,
                        summary,
                        spans: refs,
                    },
                    now,
                    &mut self.tally,
                )
            }) else {
                continue;
            };
            if decision.outcome == Outcome::NotSampled {
                continue;
            }
            let Some(trace) = self.buffer.take_trace(id) else {
                continue;
            };
            active.count(&decision, &mut self.tally);
            if let Some(counter) = self.ctx.metrics.decision_reason("span_ingest") {
                counter.increment(1);
            }
            self.finish(trace, &decision, now);
        }
        self.close_round(&active);
    }

    /// Hands the written spans to the exporter. When its queue is full the
    /// shard waits for room (and the receivers refuse new requests while
    /// any shard waits: backpressure before dropping); only the shutdown
    /// deadline ends the wait with a drop. `undecided` spans are held
    /// besides (for the gauges).
    async fn flush(&mut self, undecided: usize) {
        if self.out_spans == 0 {
            return;
        }
        let spans = self.out_spans;
        let batch = OtlpBatch {
            request: self.out.split().freeze(),
            spans,
        };
        self.out_spans = 0;
        let traces = std::mem::take(&mut self.out_traces);
        if let Some(durable) = &self.ctx.durable {
            // Decisions before the deliveries that follow from them.
            durable.decisions(std::mem::take(&mut self.decided));
        }
        let mark = self.ctx.durable.as_ref().map(|d| d.reserve(spans));
        let outcome = match self.ctx.exporter.try_send(batch) {
            Ok(()) => Ok(()),
            Err(SendError::QueueFull(batch)) => {
                let _blocked = self.ctx.node.export_blocked();
                // Counted as buffered while it waits.
                self.publish_with(spans + undecided);
                tokio::select! {
                    sent = self.ctx.exporter.send(batch) => sent.map_err(|_| Dropped::ExporterClosed),
                    () = shutdown_deadline(self.stop.clone()) => Err(Dropped::ShutdownDeadline),
                }
            }
            Err(SendError::Closed(_)) => Err(Dropped::ExporterClosed),
        };
        if let (Some(durable), Some(mark)) = (&self.ctx.durable, mark) {
            match outcome {
                // Delivered once the exporter has caught up with them.
                Ok(()) => durable.exported(traces, mark),
                // Dropped and counted: settled.
                Err(_) => {
                    durable.unreserve(spans);
                    durable.delivered(traces);
                }
            }
        }
        let metrics = &self.ctx.metrics;
        match outcome {
            Ok(()) => metrics.forwarded.increment(spans as u64),
            Err(reason) => {
                tracing::warn!(
                    spans,
                    reason = ?reason,
                    "kept spans could not be handed to the exporter, dropped"
                );
                metrics.dropped(reason).increment(spans as u64);
            }
        }
    }

    /// Takes what is still queued, decides every trace, hands it over.
    async fn drain(&mut self) {
        self.rx.close();
        // Batches already accepted (counted as received) are buffered first.
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg);
        }
        let now = self.now();
        let mut ready = self.buffer.drain();
        // In a cluster, what is left now is what the hand-over did not place.
        if !ready.is_empty()
            && let Some(cluster) = &self.ctx.cluster
            && cluster.ownership.borrow().has_others()
        {
            self.ctx
                .metrics
                .handover_failed(HandOver::Shutdown)
                .increment(ready.len() as u64);
        }
        self.decide_all(&mut ready, now, false).await;
        // Records still held have no trace left here.
        for taken in self.logs.drain() {
            self.release_unbuffered_logs(taken);
        }
        self.publish();
        self.flush(0).await;
        self.flush_logs().await;
        self.publish();
    }

    fn publish(&mut self) {
        self.publish_with(0);
    }

    /// [`Self::publish`] with `waiting` log records out of `logs_out` and
    /// not handed over yet.
    fn publish_with_logs(&mut self, waiting: usize) {
        self.logs_out_records += waiting;
        self.publish_with(0);
        self.logs_out_records -= waiting;
    }

    /// Moves the node-wide gauges by what changed since the last call.
    /// `waiting` spans were taken out of the buffer and not handed over
    /// (nor written to `out`, which is counted here).
    fn publish_with(&mut self, waiting: usize) {
        let now = Published {
            traces: self.buffer.traces(),
            spans: self.buffer.spans() + self.out_spans + waiting,
            bytes: self.buffer.held_bytes() + self.logs.bytes(),
            log_records: self.logs.records() + self.logs_out_records,
        };
        let before = std::mem::replace(&mut self.published, now);
        let m = &self.ctx.metrics;
        let delta = |a: usize, b: usize| a as f64 - b as f64;
        if now.traces != before.traces {
            m.buffer_traces.increment(delta(now.traces, before.traces));
        }
        if now.spans != before.spans {
            m.buffer_spans.increment(delta(now.spans, before.spans));
        }
        if now.bytes != before.bytes {
            m.buffer_bytes.increment(delta(now.bytes, before.bytes));
        }
        if now.log_records != before.log_records {
            self.ctx
                .logs
                .metrics
                .buffered
                .increment(delta(now.log_records, before.log_records));
        }
        self.ctx
            .node
            .buffered((before.traces, now.traces), (before.bytes, now.bytes));
    }
}

/// Writes `refs` as one request into `out`, each span as `annotate` makes
/// it.
fn write_annotated<'a>(
    out: &mut BytesMut,
    refs: &[SpanRef<'a>],
    annotate: impl Fn(&'a [u8]) -> Cow<'a, [u8]>,
) {
    let annotated: Vec<Cow<'a, [u8]>> = refs.iter().map(|r| annotate(r.span)).collect();
    let refs: Vec<SpanRef<'_>> = refs
        .iter()
        .zip(&annotated)
        .map(|(r, span)| SpanRef { span, ..*r })
        .collect();
    write::write_request(&refs, out);
}

/// A late span of a kept trace, annotated as its other spans were (and, with
/// `record_policy`, marked as following a cached decision).
fn annotate<'a>(span: &'a [u8], kept: &Kept, record_policy: bool) -> Cow<'a, [u8]> {
    if kept.threshold.is_none() && !record_policy {
        return Cow::Borrowed(span);
    }
    policy::annotate_span_with(span, &kept.annotations(record_policy))
}

/// The dry-run marks on a span: `tailsampling.dry_run.kept` (whether its
/// trace would have been kept) and, for a kept one, `tailsampling.policy`.
/// Appended to the span's bytes like every annotation (a repeated field
/// takes one more entry).
fn mark_dry_run<'a>(span: &'a [u8], kept: Option<&Kept>) -> Cow<'a, [u8]> {
    let policy = kept.and_then(|k| k.policy.as_deref());
    let mut out = policy::annotate_span(span, policy, None).into_owned();
    // Span.attributes (9): KeyValue { key = 1; value = 2: AnyValue { bool_value = 2 } }.
    let key = DRY_RUN_ATTRIBUTE.as_bytes();
    let any_value = [0x10, u8::from(kept.is_some())];
    let key_value_len = len_field_len(key.len()) + len_field_len(any_value.len());
    put_len_header(&mut out, 9, key_value_len);
    put_len_header(&mut out, 1, key.len());
    out.extend_from_slice(key);
    put_len_header(&mut out, 2, any_value.len());
    out.extend_from_slice(&any_value);
    Cow::Owned(out)
}

/// The attribute a dry run marks every span with.
pub(crate) const DRY_RUN_ATTRIBUTE: &str = "tailsampling.dry_run.kept";

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Completes once a shutdown deadline is set and has passed.
async fn shutdown_deadline(mut stop: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *stop.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if stop.changed().await.is_err() {
            // Nobody can set one any more.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{SpanSpec, request};
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
    use policy::PolicyFile;
    use proto::exporter::ExporterConfig;

    const POLICY: &str = "\
decision_wait: 10s
decision_wait_after_root_received: 2s
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";

    struct Harness {
        recorder: PrometheusRecorder,
        holds: Arc<RefusedHolds>,
        node: Arc<NodeState>,
        tx: mpsc::Sender<ShardMsg>,
        _stop: watch::Sender<Option<Instant>>,
        _policies: watch::Sender<Arc<ActivePolicy>>,
    }

    impl Harness {
        fn start() -> Harness {
            Harness::with_policy(POLICY)
        }

        fn with_policy(policy: &str) -> Harness {
            let recorder = PrometheusBuilder::new().build_recorder();
            let (metrics, active) = metrics::with_local_recorder(&recorder, || {
                let metrics = Arc::new(Metrics::new("t"));
                let file = PolicyFile::parse(policy, "policy.yaml").unwrap();
                let active = Arc::new(ActivePolicy::new(file, 7, &metrics, false));
                (metrics, active)
            });
            let config = SamplerConfig {
                policy_file: "policy.yaml".into(),
                shards: 1,
                ..SamplerConfig::default()
            }
            .effective(None);
            let holds = Arc::new(RefusedHolds::new(1, 100, Duration::from_secs(3)));
            // Kept traces wait in the exporter's queue: it never connects.
            let exporter = Exporter::start(ExporterConfig {
                endpoint: "http://127.0.0.1:9".into(),
                ..ExporterConfig::default()
            })
            .unwrap();
            let node = Arc::new(NodeState::new(&config, 1000));
            let ctx = Arc::new(ShardContext {
                exporter,
                node: node.clone(),
                metrics,
                config: Arc::new(config),
                epoch: Instant::now(),
                flush_bytes: 1 << 20,
                cluster: None,
                holds: holds.clone(),
                durable: None,
                replays: false,
                logs: Arc::new(crate::logs::LogsPath {
                    exporter: Exporter::start_with(
                        ExporterConfig {
                            endpoint: "http://127.0.0.1:9".into(),
                            name: "logs".into(),
                            ..ExporterConfig::default()
                        },
                        proto::exporter::StartOptions {
                            signal: proto::receiver::Signal::Logs,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                    metrics: crate::logs::LogMetrics::new("t"),
                }),
            });
            let (tx, rx) = mpsc::channel(4);
            let (policies, policies_rx) = watch::channel(active);
            let (stop, stop_rx) = watch::channel(None);
            tokio::spawn(Shard::new(ctx, 0, rx, policies_rx, stop_rx).run());
            Harness {
                recorder,
                holds,
                node,
                tx,
                _stop: stop,
                _policies: policies,
            }
        }

        async fn send(&self, specs: &[SpanSpec]) {
            self.send_from(specs, Origin::Client).await;
        }

        async fn send_from(&self, specs: &[SpanSpec], origin: Origin) {
            let batch = IngestBatch::parse(request(specs)).unwrap();
            self.tx
                .send(ShardMsg::Ingest(IngestMsg {
                    batch,
                    charge: 0,
                    origin,
                }))
                .await
                .unwrap();
        }

        async fn take_all(&self) -> Taken {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(ShardMsg::Take(TakeMsg {
                    traces: Box::new(|_| true),
                    max_traces: usize::MAX,
                    decisions: Some(Box::new(|_| true)),
                    reply,
                }))
                .await
                .unwrap();
            rx.await.unwrap()
        }

        fn metric(&self, name: &str) -> f64 {
            self.recorder
                .handle()
                .render()
                .lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        }

        fn decided(&self) -> u64 {
            self.decided_as("")
        }

        /// Decisions whose labels contain `labels`.
        fn decided_as(&self, labels: &str) -> u64 {
            self.recorder
                .handle()
                .render()
                .lines()
                .filter(|l| l.starts_with("tailgate_traces_decided_total{") && l.contains(labels))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_moved_trace_keeps_its_decision_wait() {
        let h = Harness::start();
        tokio::time::sleep(Duration::from_secs(20)).await;
        // First seen 8 s ago on the node it comes from: due in 2 s, not 10.
        h.send_from(
            &[SpanSpec::new(1, 1)],
            Origin::Moved {
                first_seen: Duration::from_secs(12),
            },
        )
        .await;
        h.send(&[SpanSpec::new(2, 1)]).await;
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert_eq!(h.decided(), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            h.decided(),
            1,
            "the moved trace, 10 s after it was first seen"
        );
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(h.decided(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn taken_traces_stay_counted_as_buffered_and_decisions_from_elsewhere_decide_held_traces()
    {
        let h = Harness::start();
        h.send(&[
            SpanSpec::new(1, 1),
            SpanSpec::new(1, 2),
            SpanSpec::new(2, 1),
        ])
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let taken = h.take_all().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(taken.traces.len(), 2);
        assert_eq!(
            h.metric("tailgate_buffer_spans"),
            3.0,
            "the mover holds them; still on the books"
        );
        // A decision for a trace buffered here decides it at once.
        h.send(&[SpanSpec::new(3, 1), SpanSpec::new(3, 2)]).await;
        h.tx.send(ShardMsg::Decisions(vec![(
            crate::testutil::trace_id(3),
            CachedDecision::NotSampled,
        )]))
        .await
        .unwrap();
        // And a later span follows it.
        h.send(&[SpanSpec::new(3, 3)]).await;
        // Taken at the shard's next round.
        tokio::time::sleep(GATHER_GAP + Duration::from_millis(10)).await;
        assert_eq!(h.metric("tailgate_spans_not_sampled_total"), 3.0);
        assert_eq!(h.metric("tailgate_late_spans_total"), 3.0);
        assert_eq!(h.metric("tailgate_buffer_spans"), 3.0);
        assert_eq!(h.decided(), 0, "decided elsewhere, not here");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trace_whose_spans_were_refused_waits_for_their_retry() {
        let h = Harness::start();
        h.send(&[SpanSpec::new(1, 1), SpanSpec::new(2, 1)]).await;
        tokio::time::sleep(Duration::from_millis(9500)).await;
        // A request with trace 1's error span is refused at 9.5 s: its
        // decision waits until 12.5 s for the retry.
        assert_eq!(
            h.holds
                .note(&[crate::testutil::trace_id(1)], Duration::from_millis(9500)),
            0
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(h.decided(), 1, "10.5 s: trace 2 on time, trace 1 held");
        assert_eq!(h.metric("tailgate_traces_held_for_refused_total"), 1.0);
        // The retry arrives.
        h.send(&[SpanSpec::new(1, 2).error()]).await;
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert_eq!(h.decided(), 1, "12.4 s: still held");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            h.decided_as(r#"decision="sampled""#),
            1,
            "kept, error span and all"
        );
        assert_eq!(h.metric("tailgate_late_spans_would_have_kept_total"), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_span_that_would_have_kept_its_trace_is_counted() {
        let h = Harness::start();
        h.send(&[SpanSpec::new(3, 1)]).await;
        tokio::time::sleep(Duration::from_millis(10_100)).await;
        assert_eq!(h.decided_as(r#"decision="not_sampled""#), 1);
        // A plain late span changes nothing; an error span would have.
        h.send(&[SpanSpec::new(3, 2)]).await;
        h.send(&[SpanSpec::new(3, 3).error(), SpanSpec::new(3, 4)])
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.metric("tailgate_late_spans_total"), 3.0);
        assert_eq!(h.metric("tailgate_late_spans_would_have_kept_total"), 1.0);
        assert_eq!(h.metric("tailgate_spans_not_sampled_total"), 4.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_shard_wakes_at_each_deadline_and_not_before() {
        let h = Harness::start();
        h.send(&[SpanSpec::new(1, 1), SpanSpec::new(2, 1)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Trace 2's root at 1 s: due at 3 s, not 11 s.
        h.send(&[SpanSpec::new(2, 0).root()]).await;
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert_eq!(h.decided(), 0, "2.9 s: nothing due yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.decided(), 1, "3.1 s: the trace with a root");
        tokio::time::sleep(Duration::from_millis(6800)).await;
        assert_eq!(h.decided(), 1, "9.9 s: the other one waits");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.decided(), 2, "10.1 s: decision_wait after its first span");
    }

    #[tokio::test(start_paused = true)]
    async fn batches_within_the_gather_gap_wait_for_one_round_unless_the_shard_is_nudged() {
        let h = Harness::start();
        let at = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
        h.send(&[SpanSpec::new(1, 1)]).await;
        at(1).await;
        let buffered = || h.metric("tailgate_buffer_spans");
        assert_eq!(buffered(), 1.0, "an idle shard takes a batch at once");
        h.send(&[SpanSpec::new(2, 1)]).await;
        at(5).await;
        assert_eq!(buffered(), 1.0, "within the gap: gathered, not taken");
        h.send(&[SpanSpec::new(3, 1)]).await;
        tokio::time::sleep(GATHER_GAP).await;
        assert_eq!(buffered(), 3.0, "both at the next round");
        // A receiver that finds the queue half full nudges: taken at once.
        h.send(&[SpanSpec::new(4, 1)]).await;
        at(1).await;
        assert_eq!(buffered(), 3.0);
        h.node.nudge(0);
        at(1).await;
        assert_eq!(buffered(), 4.0, "nudged: no gap");
        assert_eq!(h.decided(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_just_after_a_wake_up_waits_for_the_wake_gap_and_no_longer() {
        let h = Harness::start();
        h.send(&[SpanSpec::new(1, 1)]).await;
        // A batch 5 ms before trace 1 is due wakes the shard (and expires).
        tokio::time::sleep(Duration::from_millis(9_995)).await;
        h.send(&[SpanSpec::new(2, 1)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.decided(), 0, "10.005 s: not woken again within the gap");
        tokio::time::sleep(WAKE_GAP).await;
        assert_eq!(
            h.decided(),
            1,
            "10.025 s: decided one gap after that wake-up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn span_ingest_keeps_a_trace_as_its_error_span_arrives_and_gives_up_on_the_rest() {
        let h = Harness::with_policy(&format!("sampling_strategy: span-ingest\n{POLICY}"));
        h.send(&[SpanSpec::new(1, 1), SpanSpec::new(2, 1)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.decided(), 0, "nothing keeps either trace yet");
        h.send(&[SpanSpec::new(1, 2).error()]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.decided(), 1, "kept on arrival, not after decision_wait");
        assert_eq!(h.metric("tailgate_spans_forwarded_total"), 2.0);
        assert_eq!(
            h.metric("tailgate_traces_decision_reason_total{node=\"t\",reason=\"span_ingest\"}"),
            1.0
        );
        // Trace 2 is never kept: at its wait it is not sampled, and its
        // error span, arriving later, no longer counts.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(h.decided(), 2);
        assert_eq!(
            h.metric(
                "tailgate_traces_decision_reason_total{node=\"t\",reason=\"span_ingest_timeout\"}"
            ),
            1.0
        );
        h.send(&[SpanSpec::new(2, 2).error()]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.metric("tailgate_spans_not_sampled_total"), 2.0);
        assert_eq!(h.metric("tailgate_spans_forwarded_total"), 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trace_past_maximum_trace_size_is_dropped_at_once_and_counted() {
        let h = Harness::with_policy(&format!("maximum_trace_size_bytes: 200\n{POLICY}"));
        h.send(&[SpanSpec::new(1, 1).error(), SpanSpec::new(2, 1).error()])
            .await;
        h.send(&[SpanSpec::new(1, 2).error().padded(300)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            h.metric("tailgate_spans_dropped_total{node=\"t\",reason=\"too_large\"}"),
            2.0,
            "both spans of the trace that passed the size, before its decision"
        );
        assert_eq!(h.decided(), 0, "dropped, not decided");
        // A late span follows as not sampled; the small trace is kept.
        h.send(&[SpanSpec::new(1, 3)]).await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(h.metric("tailgate_spans_not_sampled_total"), 1.0);
        assert_eq!(h.metric("tailgate_spans_forwarded_total"), 1.0);
        assert_eq!(
            h.metric("tailgate_traces_decision_reason_total{node=\"t\",reason=\"too_large\"}"),
            1.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pending_traces_are_dropped_at_shutdown_when_the_file_says_so() {
        let h = Harness::with_policy(&format!("drop_pending_traces_on_shutdown: true\n{POLICY}"));
        h.send(&[SpanSpec::new(1, 1).error(), SpanSpec::new(1, 2)])
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Harness { recorder, tx, .. } = h;
        drop(tx);
        // The shard sees its queue close at its next round.
        tokio::time::sleep(GATHER_GAP + Duration::from_millis(10)).await;
        let text = recorder.handle().render();
        assert!(
            text.contains(
                "tailgate_spans_dropped_total{node=\"t\",reason=\"pending_at_shutdown\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("tailgate_spans_forwarded_total{node=\"t\"} 2"));
    }

    #[tokio::test(start_paused = true)]
    async fn every_policy_vote_decision_reason_and_late_span_age_is_counted() {
        let h = Harness::with_policy(
            "decision_wait: 10s\npolicies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n  - {name: slow, type: latency, latency: {threshold_ms: 5000}}\n",
        );
        h.send(&[SpanSpec::new(1, 1).error(), SpanSpec::new(2, 1)])
            .await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        let votes = |policy: &str, vote: &str| {
            h.metric(&format!(
                "tailgate_policy_votes_total{{node=\"t\",policy=\"{policy}\",vote=\"{vote}\"}}"
            ))
        };
        assert_eq!(votes("errors", "sampled"), 1.0);
        assert_eq!(votes("errors", "not_sampled"), 1.0);
        assert_eq!(
            votes("slow", "not_sampled"),
            2.0,
            "not only the deciding policy"
        );
        assert_eq!(
            h.metric("tailgate_traces_decision_reason_total{node=\"t\",reason=\"timeout\"}"),
            2.0
        );
        // One evaluation in 64 is timed: the first.
        assert_eq!(
            h.metric("tailgate_policy_evaluation_seconds_count{node=\"t\",policy=\"errors\"}"),
            1.0
        );
        // Late spans at 14 s, 4 s after their traces were decided (at 10 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        h.send(&[SpanSpec::new(1, 2), SpanSpec::new(2, 2)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.metric("tailgate_late_span_age_seconds_count"), 2.0);
        let sum = h.metric("tailgate_late_span_age_seconds_sum");
        assert!((7.9..8.2).contains(&sum), "two ages of about 4 s: {sum}");
    }
}
