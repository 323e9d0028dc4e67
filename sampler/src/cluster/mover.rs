//! The mover: moves traces and decisions to the members that own them.
//!
//! - After a membership change (once the set has been stable for
//!   `cluster.settle`), a **redistribution** pass: in rounds, each shard
//!   gives up to [`ROUND_TRACES`] traces this node holds but does not own;
//!   they are pushed, whole, to their owners, paced to
//!   `cluster.redistribute_bytes_per_second`; then copies of the
//!   remembered decisions for traces owned elsewhere. A shard is held only
//!   for one bounded take per round, so ingest never waits on the network.
//! - At shutdown, a **hand-over** pass: the same, to the owners under the
//!   ring without this node, unpaced, until a deadline.
//!
//! A push that fails (the owner refuses, is unreachable, or the deadline
//! passed) puts its traces back in their shard with their first-seen time;
//! their owner is skipped for the rest of the pass, and the pass is tried
//! again `cluster.retry_interval` later (at shutdown, the shard decides
//! them instead).
//!
//! Each push request holds whole traces first seen within [`AGE_SPREAD`] of
//! each other, and carries the age of the youngest: the receiver's decision
//! wait starts that long ago, so a move never delays a decision by more
//! than the spread and never brings it forward.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lb_exporter::{Member, MemberSet};
use proto::receiver::ClusterMark;
use proto::view::TraceId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::peer::Peer;
use super::wire::{decision_len, put_decision};
use super::{ClusterShared, Ownership};
use crate::buffer::TakenTrace;
use crate::cache::CachedDecision;
use crate::config::ClusterConfig;
use crate::durable::Durable;
use crate::ingest::{IngestBatch, shard_of};
use crate::metrics::{HandOver, Metrics};
use crate::shard::{IdFilter, IngestMsg, Origin, ShardMsg, TakeMsg, Taken};

/// Traces each shard gives up per round: bounds how long a take holds it.
pub(crate) const ROUND_TRACES: usize = 1024;
/// A push request holds at most about this many bytes.
const MAX_PUSH_BYTES: usize = 1024 * 1024;
/// The traces of one push were first seen within this of each other.
pub(crate) const AGE_SPREAD: Duration = Duration::from_millis(100);
/// Rounds per pass at most, in case traces keep arriving for other owners.
const MAX_ROUNDS: usize = 10_000;

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Everything owned elsewhere was handed over.
    Complete,
    /// Some owner could not be reached (or the deadline passed); its traces
    /// are still here.
    Incomplete,
    /// Stopped between rounds: the ring changed again, or the node stops.
    Interrupted,
}

/// Paces pushes to a byte rate.
struct Pace {
    bytes_per_second: f64,
    next: Instant,
}

impl Pace {
    async fn wait(&mut self, bytes: usize) {
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        let start = self.next.max(now);
        self.next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
    }
}

pub(crate) struct Mover {
    shared: Arc<ClusterShared>,
    metrics: Arc<Metrics>,
    shards: Vec<mpsc::Sender<ShardMsg>>,
    /// The shards' clock.
    epoch: Instant,
    config: ClusterConfig,
    peers: HashMap<Member, Peer>,
    pace: Pace,
    /// The member set every remembered decision was last pushed for: a
    /// pass on the same ring (a retry, a kept stray) pushes none again.
    decisions_pushed_for: Option<MemberSet>,
    /// The write-ahead log (`storage:`): a trace is settled there once its
    /// owner has taken it, not when taken from its shard.
    durable: Option<Durable>,
}

/// What may cut a pass short between rounds.
struct Interrupt<'a> {
    stop: Option<&'a watch::Receiver<bool>>,
    ownership: Option<&'a watch::Receiver<Arc<Ownership>>>,
    deadline: Option<Instant>,
}

impl Interrupt<'_> {
    fn interrupted(&self) -> bool {
        self.stop.is_some_and(|s| *s.borrow())
            || self
                .ownership
                .is_some_and(|o| o.has_changed().unwrap_or(false))
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl Mover {
    pub fn new(
        shared: Arc<ClusterShared>,
        metrics: Arc<Metrics>,
        shards: Vec<mpsc::Sender<ShardMsg>>,
        epoch: Instant,
        config: ClusterConfig,
        durable: Option<Durable>,
    ) -> Mover {
        Mover {
            pace: Pace {
                bytes_per_second: config.redistribute_bytes_per_second as f64,
                next: Instant::now(),
            },
            shared,
            metrics,
            shards,
            epoch,
            config,
            peers: HashMap::new(),
            decisions_pushed_for: None,
            durable,
        }
    }

    /// Redistributes after every membership change (and retries an
    /// incomplete pass), until `stop` turns true; returns itself for the
    /// shutdown hand-over.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Mover {
        let mut ownership = self.shared.ownership.clone();
        ownership.mark_unchanged();
        let shared = self.shared.clone();
        let mut ownership_open = true;
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::select! {
                () = stopped(&mut stop) => return self,
                changed = ownership.changed(), if ownership_open => {
                    if changed.is_err() {
                        ownership_open = false;
                        continue;
                    }
                }
                // After an incomplete pass, wait for the retry instead.
                () = shared.kept_unowned.notified(), if retry_at.is_none() => {}
                () = sleep_until(retry_at) => {}
            }
            retry_at = None;
            // Let a burst of changes (a rolling restart's DNS updates) end.
            loop {
                tokio::select! {
                    () = stopped(&mut stop) => return self,
                    changed = ownership.changed(), if ownership_open => {
                        if changed.is_err() {
                            ownership_open = false;
                        }
                    }
                    () = tokio::time::sleep(self.config.settle) => break,
                }
            }
            let current = ownership.borrow_and_update().clone();
            let interrupt = Interrupt {
                stop: Some(&stop),
                ownership: Some(&ownership),
                deadline: None,
            };
            match self.pass(&current, HandOver::Rebalance, &interrupt).await {
                Pass::Complete => self.metrics.redistributions[0].increment(1),
                Pass::Incomplete => {
                    self.metrics.redistributions[1].increment(1);
                    retry_at = Some(Instant::now() + self.config.retry_interval);
                }
                // The next change (or the stop) is already pending.
                Pass::Interrupted => {}
            }
        }
    }

    /// At shutdown: hands every trace and decision held to its owner under
    /// the ring without this node, until `deadline`. What is left stays in
    /// the shards, which decide it.
    pub async fn hand_over(&mut self, deadline: Instant) -> Pass {
        let without_me = Arc::new(self.shared.ownership.borrow().without_me());
        if !without_me.has_ring() {
            tracing::info!("no other member: every trace is decided here");
            return Pass::Incomplete;
        }
        let interrupt = Interrupt {
            stop: None,
            ownership: None,
            deadline: Some(deadline),
        };
        self.pass(&without_me, HandOver::Shutdown, &interrupt).await
    }

    /// Moves what this node holds but `ownership` gives to others.
    async fn pass(
        &mut self,
        ownership: &Arc<Ownership>,
        reason: HandOver,
        interrupt: &Interrupt<'_>,
    ) -> Pass {
        if !ownership.has_ring() {
            return Pass::Complete;
        }
        let mut unreached: HashSet<Member> = HashSet::new();
        let mut complete = true;
        for _ in 0..MAX_ROUNDS {
            if interrupt.interrupted() {
                return Pass::Interrupted;
            }
            if interrupt.past_deadline() {
                complete = false;
                break;
            }
            let taken = self
                .take(owned_elsewhere(ownership, &unreached), ROUND_TRACES, false)
                .await;
            if taken.traces.is_empty() {
                break;
            }
            let failed = self
                .push_traces(ownership, taken.traces, reason, interrupt, &mut unreached)
                .await;
            self.put_back(failed, reason).await;
        }
        let members = ownership.members();
        let decisions_due =
            reason == HandOver::Shutdown || self.decisions_pushed_for.as_ref() != Some(&members);
        if interrupt.past_deadline() {
            complete = false;
        } else if decisions_due {
            if interrupt.interrupted() {
                return Pass::Interrupted;
            }
            let taken = self
                .take(owned_elsewhere(ownership, &unreached), 0, true)
                .await;
            self.push_decisions(
                ownership,
                taken.decisions,
                reason,
                interrupt,
                &mut unreached,
            )
            .await;
            if unreached.is_empty() {
                self.decisions_pushed_for = Some(members);
            }
        }
        if complete && unreached.is_empty() {
            Pass::Complete
        } else {
            Pass::Incomplete
        }
    }

    /// Asks every shard at once for traces (up to `max` each) and, with
    /// `decisions`, copies of decisions, matching the filter `filter` makes.
    async fn take(&self, filter: impl Fn() -> IdFilter, max: usize, decisions: bool) -> Taken {
        let mut replies = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (reply, rx) = oneshot::channel();
            let msg = TakeMsg {
                traces: filter(),
                max_traces: max,
                decisions: decisions.then(&filter),
                reply,
            };
            if shard.send(ShardMsg::Take(msg)).await.is_ok() {
                replies.push(rx);
            }
        }
        let mut all = Taken::default();
        for rx in replies {
            if let Ok(taken) = rx.await {
                all.traces.extend(taken.traces);
                all.decisions.extend(taken.decisions);
            }
        }
        all
    }

    fn peer(&mut self, member: &Member) -> Option<Peer> {
        if let Some(peer) = self.peers.get(member) {
            return Some(peer.clone());
        }
        match Peer::new(member, &self.config.forward) {
            Ok(peer) => {
                self.peers.insert(member.clone(), peer.clone());
                Some(peer)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot push to this member");
                None
            }
        }
    }

    /// The time left for one push.
    fn push_timeout(&self, interrupt: &Interrupt<'_>) -> Duration {
        let timeout = self.config.push_timeout;
        match interrupt.deadline {
            Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
            None => timeout,
        }
    }

    /// Pushes traces to their owners; returns those that did not land.
    async fn push_traces(
        &mut self,
        ownership: &Ownership,
        traces: Vec<TakenTrace>,
        reason: HandOver,
        interrupt: &Interrupt<'_>,
        unreached: &mut HashSet<Member>,
    ) -> Vec<TakenTrace> {
        let mut failed = Vec::new();
        let mut by_owner: HashMap<Member, Vec<TakenTrace>> = HashMap::new();
        for trace in traces {
            match ownership.owner(&trace.id) {
                Some(owner) => by_owner.entry(owner.clone()).or_default().push(trace),
                None => failed.push(trace),
            }
        }
        for (owner, mut traces) in by_owner {
            // Youngest first: each request's age is its first trace's.
            traces.sort_by_key(|t| Reverse(t.first_seen));
            // (traces, their requests end to end: one request).
            let mut chunks: Vec<(Vec<TakenTrace>, BytesMut)> = Vec::new();
            for trace in traces {
                let request = trace.to_request();
                let fits = chunks.last().is_some_and(|(c, body)| {
                    body.len() + request.len() <= MAX_PUSH_BYTES
                        && c[0].first_seen.saturating_sub(trace.first_seen) <= AGE_SPREAD
                });
                match chunks.last_mut() {
                    Some((c, body)) if fits => {
                        body.extend_from_slice(&request);
                        c.push(trace);
                    }
                    _ => chunks.push((vec![trace], BytesMut::from(&request[..]))),
                }
            }
            for (chunk, body) in chunks {
                if unreached.contains(&owner) || interrupt.past_deadline() {
                    failed.extend(chunk);
                    continue;
                }
                let Some(peer) = self.peer(&owner) else {
                    unreached.insert(owner.clone());
                    failed.extend(chunk);
                    continue;
                };
                let body: Bytes = body.freeze();
                if reason == HandOver::Rebalance {
                    self.pace.wait(body.len()).await;
                }
                let age = self.epoch.elapsed().saturating_sub(chunk[0].first_seen);
                let spans: usize = chunk.iter().map(TakenTrace::span_count).sum();
                let timeout = self.push_timeout(interrupt);
                match peer
                    .push(body, ClusterMark::HandedOver { age }, timeout)
                    .await
                {
                    Ok(()) => {
                        let m = &self.metrics;
                        m.handed_over(reason).increment(spans as u64);
                        m.traces_handed_over(reason).increment(chunk.len() as u64);
                        m.buffer_spans.decrement(spans as f64);
                        if let Some(durable) = &self.durable {
                            durable.delivered(chunk.iter().map(|t| t.id.0).collect());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, traces = chunk.len(), "hand-over failed; the traces stay here");
                        unreached.insert(owner.clone());
                        failed.extend(chunk);
                    }
                }
            }
        }
        failed
    }

    /// Pushes copies of decisions to the owners of their traces. One that
    /// does not land costs nothing but the late spans that follow it here.
    async fn push_decisions(
        &mut self,
        ownership: &Ownership,
        decisions: Vec<(TraceId, CachedDecision)>,
        reason: HandOver,
        interrupt: &Interrupt<'_>,
        unreached: &mut HashSet<Member>,
    ) {
        let mut by_owner: HashMap<Member, Vec<(TraceId, CachedDecision)>> = HashMap::new();
        for (id, decision) in decisions {
            if let Some(owner) = ownership.owner(&id) {
                by_owner
                    .entry(owner.clone())
                    .or_default()
                    .push((id, decision));
            }
        }
        for (owner, decisions) in by_owner {
            let mut start = 0;
            while start < decisions.len() {
                if unreached.contains(&owner) || interrupt.past_deadline() {
                    break;
                }
                let mut body = Vec::new();
                let mut end = start;
                while end < decisions.len() && body.len() < MAX_PUSH_BYTES / 16 {
                    let (id, d) = &decisions[end];
                    body.reserve(decision_len(d));
                    put_decision(&mut body, id, d);
                    end += 1;
                }
                let Some(peer) = self.peer(&owner) else {
                    unreached.insert(owner.clone());
                    break;
                };
                if reason == HandOver::Rebalance {
                    self.pace.wait(body.len()).await;
                }
                let timeout = self.push_timeout(interrupt);
                match peer
                    .push(Bytes::from(body), ClusterMark::Decisions, timeout)
                    .await
                {
                    Ok(()) => self
                        .metrics
                        .decisions_handed_over(reason)
                        .increment((end - start) as u64),
                    Err(e) => {
                        tracing::warn!(error = %e, "pushing decisions failed");
                        unreached.insert(owner.clone());
                        break;
                    }
                }
                start = end;
            }
        }
    }

    /// Puts traces that did not land back in their shards, first-seen time
    /// kept.
    async fn put_back(&self, traces: Vec<TakenTrace>, reason: HandOver) {
        if traces.is_empty() {
            return;
        }
        // At shutdown the shard counts them, with those never taken.
        if reason == HandOver::Rebalance {
            self.metrics
                .handover_failed(reason)
                .increment(traces.len() as u64);
        }
        for trace in traces {
            let spans = trace.span_count();
            let shard = &self.shards[shard_of(&trace.id, self.shards.len())];
            let msg = match IngestBatch::parse(trace.to_request()) {
                Ok(batch) => ShardMsg::Ingest(IngestMsg {
                    batch,
                    charge: 0,
                    origin: Origin::Moved {
                        first_seen: trace.first_seen,
                    },
                }),
                Err(e) => {
                    // Written by us from spans that parsed; cannot happen.
                    tracing::error!(error = %e, spans, "a taken trace no longer parses");
                    continue;
                }
            };
            // The shard counts them again once inserted.
            self.metrics.buffer_spans.decrement(spans as f64);
            if shard.send(msg).await.is_err() {
                tracing::error!(spans, "a shard stopped before a trace could be put back");
            }
        }
    }
}

/// Whether `id` belongs to another member that is not known unreachable.
/// Makes, for each shard, a filter for the trace IDs another member owns,
/// leaving out the members in `unreached`.
fn owned_elsewhere(
    ownership: &Ownership,
    unreached: &HashSet<Member>,
) -> impl Fn() -> IdFilter + use<> {
    let own = ownership.clone();
    let skip = Arc::new(unreached.clone());
    move || -> IdFilter {
        let own = own.clone();
        let skip = skip.clone();
        Box::new(move |id| !own.owns(id) && own.owner(id).is_some_and(|m| !skip.contains(m)))
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means stop too.
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
