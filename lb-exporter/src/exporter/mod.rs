//! The load-balancing exporter: splits each request by trace owner, queues
//! each part for its member, and exports with batching, retries and
//! failover.
//!
//! ```text
//! send(request) ─ split by owner ─ reserve room in every owner's lane ─ commit
//!     (all parts queued, or none and SendError::Full with how soon room
//!     is expected; send_waiting first waits up to queue_wait for room)
//! lane worker (one per member) ─ Batcher ─ ≤ concurrency export calls ─ member
//!     (adaptive: a partial request waits while an export is in flight)
//!     member down (refused, UNAVAILABLE, timeout) ─▶ marked down at once,
//!       its traffic and queue go to the next member on the ring, a probe
//!       with backoff brings it back
//!     member left the set ─▶ its queue is re-routed under the new ring
//! ```
//!
//! Built on [`OtlpClient`] rather than one `proto::exporter::Exporter` per
//! member: failover needs what that exporter keeps inside (take a member's
//! queue back when it goes down or leaves, stop retrying a member at its
//! first "down" answer, reserve room across several members before
//! committing a request), so the lane reuses its parts instead: `Batcher`,
//! `Backoff`, `OtlpClient` and the `ExportError` classification.
//!
//! Nothing here assumes an LB: a sampler forwards the spans it does not own
//! through the same exporter.
//!
//! Logs take a parallel exporter of the same kind ([`LbExporter::start_logs`]):
//! its own lanes, calling each member's LogsService, following the same
//! member set, so the same ring sends a trace's log records to the member
//! that owns its spans. Log records without a trace ID go, a request's
//! worth at a time, to the members that are up in turn. Its metrics are
//! the `tailgate_lb_log_records_*` / `tailgate_lb_logs_*` twins of the
//! span ones ([`metrics::Names`]).

mod config;
mod lane;
pub mod metrics;
mod room;

pub use config::{ExportConfig, ExportConfigError};
pub use metrics::{DropReason, QueueWait, RerouteReason};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use proto::exporter::{ExportError, OtlpBatch, OtlpClient};
use proto::receiver::Signal;
use proto::split::{Part, split_whole};
use proto::view::TraceId;
use proto::wire::WireError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::config::Settings;
use self::lane::Lane;
use self::metrics::{MemberMetrics, Metrics};
use crate::member::{Member, MemberSet};
use crate::ring::Ring;

/// Where the exporter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Shutting down: no new requests; lanes send what they hold without
    /// waiting for batch timeouts.
    Draining,
    /// Past the shutdown deadline: lanes drop what they hold and return.
    Stopped,
}

/// A request the exporter did not take. Nothing of it was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The request is malformed; sending it again will not help.
    #[error("invalid request: {0}")]
    Invalid(#[from] WireError),
    /// A member that owns some of its traces has no room now (backpressure).
    /// `retry_after`: how soon its queue is expected to have room (at the
    /// rate the member takes it), `None` when that is not known (no export
    /// to it ended lately).
    #[error("export queue for member {member} is full")]
    Full {
        member: Member,
        retry_after: Option<Duration>,
    },
    /// No member is known yet (the first resolution has not answered).
    #[error("no member to export to yet")]
    NoMembers,
    /// Every member is marked down.
    #[error("every member ({members}) is down")]
    AllMembersDown { members: usize },
    /// The exporter is shutting down.
    #[error("the exporter is shut down")]
    Closed,
}

impl SendError {
    /// Whether the same request may be taken later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SendError::Invalid(_))
    }
}

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ExportConfigError),
    #[error("the exporter must be started inside a tokio runtime")]
    NoRuntime,
}

/// The least delay a refused client is asked to wait: sooner, it would
/// find the queue as full as it left it.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(1);

/// A request split by the lane each part goes to, not queued yet.
struct Split {
    routing: Arc<Routing>,
    /// `key`: the index of the part's lane in `routing.lanes`.
    parts: Vec<Part<usize>>,
}

/// What [`LbExporter::shutdown`] left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Spans still held at the deadline, dropped (counted as `shutdown`).
    pub dropped_spans: u64,
}

/// The ring and the lanes of its members, swapped whole on a membership
/// change.
struct Routing {
    ring: Option<Ring>,
    /// `lanes[i]` is the lane of `ring.members()[i]`.
    lanes: Vec<Arc<Lane>>,
}

impl Routing {
    /// The member a trace goes to now: its owner, or the next member on the
    /// ring that is up. Falls back to the owner when every member is down
    /// (its lane then holds the spans until a probe finds a member back).
    fn pick(&self, ring: &Ring, id: &TraceId) -> usize {
        let owner = ring.route_index(id);
        if !self.lanes[owner].is_down() {
            return owner;
        }
        ring.route_where(id, |i| !self.lanes[i].is_down())
            .unwrap_or(owner)
    }

    fn any_up(&self) -> bool {
        self.lanes.iter().any(|l| !l.is_down())
    }

    fn lane_of(&self, member: &Member) -> Option<&Arc<Lane>> {
        let ring = self.ring.as_ref()?;
        let i = ring.members().members().binary_search(member).ok()?;
        self.lanes.get(i)
    }
}

/// What the lanes, probes and the membership task share.
struct Shared {
    settings: Settings,
    config: ExportConfig,
    metrics: Metrics,
    routing: RwLock<Arc<Routing>>,
    /// Every lane with a running worker, current or left and draining.
    lanes: Mutex<Vec<(Arc<Lane>, JoinHandle<()>)>>,
    phase: watch::Sender<Phase>,
    runtime: tokio::runtime::Handle,
    /// Spans, or log records (the logs twin of this exporter).
    signal: Signal,
    /// Turns through the members for log records without a trace ID.
    spread: AtomicUsize,
}

impl Shared {
    /// Splits a request of this exporter's signal by the lane each part
    /// goes to now: a trace's owner (or the next member up); for log
    /// records without a trace ID, the next member up in turn.
    fn split_routed(
        &self,
        routing: &Routing,
        ring: &Ring,
        request: &Bytes,
    ) -> Result<Vec<Part<usize>>, WireError> {
        match self.signal {
            Signal::Traces => split_whole(request, |id| routing.pick(ring, id)),
            Signal::Logs => {
                let mut spread = None;
                proto::logs::split_whole(request, |id| match id {
                    Some(id) => routing.pick(ring, id),
                    None => *spread.get_or_insert_with(|| self.next_spread(routing)),
                })
            }
        }
    }

    /// The next lane that is up, in turn (the first in turn if none is).
    fn next_spread(&self, routing: &Routing) -> usize {
        let n = routing.lanes.len().max(1);
        let start = self.spread.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| routing.lanes.get(i).is_some_and(|l| !l.is_down()))
            .unwrap_or(start)
    }

    fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds the ring for a new member set: lanes of members that stay
    /// are kept (with their queues and down state), new members get a lane,
    /// and members that left hand their queues back to be re-routed.
    fn apply(self: &Arc<Self>, set: MemberSet) {
        let old = self.routing();
        if old.ring.as_ref().map(Ring::members) == Some(&set) {
            return;
        }
        let ring = match Ring::new(set.clone()) {
            Ok(ring) => ring,
            Err(_) => {
                // An empty set cannot route anything; keeping the old ring
                // keeps the spans moving. (Resolvers never publish one after
                // a good answer.)
                tracing::warn!("member set is empty; keeping the current ring");
                return;
            }
        };
        let lanes: Vec<Arc<Lane>> = ring
            .members()
            .members()
            .iter()
            .map(|m| match old.lane_of(m) {
                Some(lane) => lane.clone(),
                None => self.start_lane(m),
            })
            .collect();
        let removed: Vec<Arc<Lane>> = old
            .lanes
            .iter()
            .filter(|l| !set.contains(&l.member))
            .cloned()
            .collect();
        let added: Vec<&str> = old
            .ring
            .as_ref()
            .map(|r| set.difference(r.members()).map(Member::as_str).collect())
            .unwrap_or_else(|| set.members().iter().map(Member::as_str).collect());
        tracing::info!(
            node = %self.metrics.node,
            ?added,
            removed = ?removed.iter().map(|l| l.member.as_str()).collect::<Vec<_>>(),
            members = set.len(),
            "ring rebuilt"
        );
        let routing = Arc::new(Routing {
            ring: Some(ring),
            lanes,
        });
        *self.routing.write().unwrap_or_else(|e| e.into_inner()) = routing.clone();
        // After the swap, so that what they hand back goes to the new ring.
        for lane in &removed {
            lane.leave();
        }
        self.metrics.ring_changes.increment(1);
        self.metrics.ring_members.set(set.len() as f64);
        self.update_down_gauge(&routing);
        let mut all = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, task)| !task.is_finished());
    }

    fn start_lane(self: &Arc<Self>, member: &Member) -> Arc<Lane> {
        let client = OtlpClient::new(&self.config.client(member.endpoint()))
            .map(|c| c.for_signal(self.signal))
            .map_err(|e| {
                tracing::error!(%member, error = %e, "no client for member; it stays down");
                e.to_string()
            });
        let broken = client.is_err();
        let lane = Arc::new(Lane::new(
            member.clone(),
            client,
            self.settings.queue_bytes,
            MemberMetrics::for_signal(&self.metrics.node, member.as_str(), self.signal),
        ));
        if broken {
            lane.set_down(true);
        }
        let task = self.runtime.spawn(lane::run(self.clone(), lane.clone()));
        self.lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((lane.clone(), task));
        lane
    }

    fn update_down_gauge(&self, routing: &Routing) {
        let down = routing.lanes.iter().filter(|l| l.is_down()).count();
        self.metrics.members_down.set(down as f64);
    }

    /// Marks a member down at its first failure: new traffic goes to the
    /// next member on the ring at once, and a probe looks for it.
    fn mark_down(self: &Arc<Self>, lane: &Arc<Lane>, error: &ExportError) {
        if lane.set_down(true) {
            tracing::warn!(
                node = %self.metrics.node,
                member = %lane.member,
                %error,
                "member marked down; its traffic goes to the next member on the ring"
            );
            self.update_down_gauge(&self.routing());
            self.runtime.spawn(lane::probe(self.clone(), lane.clone()));
        }
    }

    fn mark_up(&self, lane: &Lane) {
        if lane.set_down(false) {
            tracing::info!(node = %self.metrics.node, member = %lane.member, "member is back up");
            let routing = self.routing();
            self.update_down_gauge(&routing);
            // Lanes holding spans because every member was down can move
            // them now.
            for l in &routing.lanes {
                l.wake();
            }
        }
    }

    /// Queues already-accepted batches under the current ring, past the
    /// lanes' bounds (moving them does not add to what the exporter holds).
    /// `from` is the lane they leave, if any: parts that land back on it are
    /// not counted as re-routed.
    fn reroute(
        &self,
        from: Option<&Arc<Lane>>,
        mut batches: Vec<OtlpBatch>,
        reason: RerouteReason,
    ) {
        // A push fails only when a lane's worker has just returned (its
        // member left); the next round sees the ring without it. Bounded in
        // case the set keeps changing.
        for _ in 0..8 {
            if batches.is_empty() {
                return;
            }
            let routing = self.routing();
            let Some(ring) = routing.ring.as_ref() else {
                break;
            };
            let mut again = Vec::new();
            for batch in batches {
                let parts = match self.split_routed(&routing, ring, &batch.request) {
                    Ok(parts) => parts,
                    Err(e) => {
                        // It was split once already; this is a bug, not input.
                        tracing::error!(error = %e, spans = batch.spans, "re-routing: request no longer parses, dropped");
                        self.metrics
                            .dropped(DropReason::NotRetryable)
                            .increment(batch.spans as u64);
                        continue;
                    }
                };
                for part in parts {
                    let target = &routing.lanes[part.key];
                    let spans = part.spans;
                    let batch = OtlpBatch {
                        request: part.request,
                        spans,
                    };
                    match target.push(batch, false) {
                        Ok(()) => {
                            if !from.is_some_and(|f| Arc::ptr_eq(f, target)) {
                                self.metrics.rerouted(reason).increment(spans as u64);
                            }
                        }
                        Err(batch) => again.push(batch),
                    }
                }
            }
            batches = again;
        }
        let spans: usize = batches.iter().map(|b| b.spans).sum();
        if spans > 0 {
            tracing::error!(spans, "re-routing: no member to take these spans, dropped");
            self.metrics
                .dropped(DropReason::NoMembers)
                .increment(spans as u64);
        }
    }

    fn held_spans(&self) -> usize {
        self.lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(l, _)| l.held_spans())
            .sum()
    }
}

/// A handle on a running load-balancing exporter. Cheap to clone. It stops
/// at [`LbExporter::shutdown`], or at once (dropping what it holds, counted)
/// when the last handle is dropped.
#[derive(Clone)]
pub struct LbExporter {
    inner: Arc<Owner>,
}

struct Owner {
    shared: Arc<Shared>,
    follow: Mutex<Option<JoinHandle<()>>>,
    shut: AtomicBool,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Workers and probes hold the shared state; this is what ends them.
        self.shared.phase.send_replace(Phase::Stopped);
    }
}

impl std::fmt::Debug for LbExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbExporter")
            .field("members", &self.members())
            .finish_non_exhaustive()
    }
}

impl LbExporter {
    /// Starts the exporter on the current tokio runtime, following the
    /// member set `members` publishes (its current value is applied before
    /// this returns). `node` labels the metrics.
    pub fn start(
        config: &ExportConfig,
        node: &str,
        members: watch::Receiver<MemberSet>,
    ) -> Result<LbExporter, StartError> {
        Self::start_for(config, node, members, Signal::Traces)
    }

    /// [`LbExporter::start`] for logs: [`send`](LbExporter::send) then takes
    /// encoded `ExportLogsServiceRequest`s, routed by their records' trace
    /// IDs on the same ring, and counts log records where the span
    /// exporter counts spans.
    pub fn start_logs(
        config: &ExportConfig,
        node: &str,
        members: watch::Receiver<MemberSet>,
    ) -> Result<LbExporter, StartError> {
        Self::start_for(config, node, members, Signal::Logs)
    }

    fn start_for(
        config: &ExportConfig,
        node: &str,
        mut members: watch::Receiver<MemberSet>,
        signal: Signal,
    ) -> Result<LbExporter, StartError> {
        let settings = config.settings()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let shared = Arc::new(Shared {
            settings,
            config: config.clone(),
            metrics: Metrics::for_signal(node, signal),
            routing: RwLock::new(Arc::new(Routing {
                ring: None,
                lanes: Vec::new(),
            })),
            lanes: Mutex::new(Vec::new()),
            phase: watch::channel(Phase::Running).0,
            runtime: runtime.clone(),
            signal,
            spread: AtomicUsize::new(0),
        });
        let _guard = runtime.enter();
        let initial = members.borrow_and_update().clone();
        if !initial.is_empty() {
            shared.apply(initial);
        }
        let follow = runtime.spawn(follow(shared.clone(), members));
        Ok(LbExporter {
            inner: Arc::new(Owner {
                shared,
                follow: Mutex::new(Some(follow)),
                shut: AtomicBool::new(false),
            }),
        })
    }

    /// Splits `request` by owner and queues every part, or none: when a
    /// member that owns part of it has no room, nothing is queued and
    /// [`SendError::Full`] names it, so a client retry duplicates nothing.
    /// Returns the number of spans taken.
    pub fn send(&self, request: &Bytes) -> Result<usize, SendError> {
        let split = self.split(request)?;
        match self.reserve(&split) {
            Ok(()) => Ok(self.commit(split)),
            Err(full) => Err(self.full(&split.routing.lanes[full])),
        }
    }

    /// [`send`](Self::send), but when a member's queue is full the request
    /// waits up to `queue_wait` for room (counted in
    /// `tailgate_lb_queue_waits_total`) before it is refused.
    pub async fn send_waiting(&self, request: &Bytes) -> Result<usize, SendError> {
        let shared = &self.inner.shared;
        let split = self.split(request)?;
        let mut full = match self.reserve(&split) {
            Ok(()) => return Ok(self.commit(split)),
            Err(full) => full,
        };
        let wait = shared.settings.queue_wait;
        if wait.is_zero() {
            return Err(self.full(&split.routing.lanes[full]));
        }
        let deadline = Instant::now() + wait;
        loop {
            let lane = split.routing.lanes[full].clone();
            let space = lane.space();
            tokio::pin!(space);
            // Registered before the check: a release between the check and
            // the wait still wakes it.
            space.as_mut().enable();
            if *shared.phase.borrow() != Phase::Running {
                return Err(SendError::Closed);
            }
            match self.reserve(&split) {
                Ok(()) => {
                    shared.metrics.queue_wait(QueueWait::Admitted).increment(1);
                    return Ok(self.commit(split));
                }
                // Another lane is the one without room now: wait on it.
                Err(other) if other != full => {
                    full = other;
                    continue;
                }
                Err(_) => {}
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                // One last look: the deadline may have raced a release.
                if self.reserve(&split).is_ok() {
                    shared.metrics.queue_wait(QueueWait::Admitted).increment(1);
                    return Ok(self.commit(split));
                }
                shared.metrics.queue_wait(QueueWait::Refused).increment(1);
                return Err(self.full(&lane));
            }
        }
    }

    /// Splits a request by the lane each trace goes to now.
    fn split(&self, request: &Bytes) -> Result<Split, SendError> {
        let shared = &self.inner.shared;
        if *shared.phase.borrow() != Phase::Running {
            return Err(SendError::Closed);
        }
        let routing = shared.routing();
        let Some(ring) = routing.ring.as_ref() else {
            return Err(SendError::NoMembers);
        };
        if !routing.any_up() {
            return Err(SendError::AllMembersDown {
                members: ring.len(),
            });
        }
        let parts = shared.split_routed(&routing, ring, request)?;
        Ok(Split { routing, parts })
    }

    /// Takes room for every part, or for none: `Err` is the index (in
    /// `routing.lanes`) of a lane without room.
    fn reserve(&self, split: &Split) -> Result<(), usize> {
        let lanes = &split.routing.lanes;
        for (i, part) in split.parts.iter().enumerate() {
            if !lanes[part.key].try_reserve(part.request.len()) {
                for done in &split.parts[..i] {
                    lanes[done.key].unreserve(done.request.len());
                }
                return Err(part.key);
            }
        }
        Ok(())
    }

    /// Queues the parts of a request whose room is reserved.
    fn commit(&self, split: Split) -> usize {
        let shared = &self.inner.shared;
        let Split { routing, parts } = split;
        let mut spans = 0;
        let mut orphans = Vec::new();
        for part in parts {
            spans += part.spans;
            let batch = OtlpBatch {
                request: part.request,
                spans: part.spans,
            };
            if let Err(batch) = routing.lanes[part.key].push(batch, true) {
                // Its member left and its worker returned after we read the
                // routing: the request is accepted, so it goes to the new
                // owner.
                orphans.push(batch);
            }
        }
        shared.metrics.received.increment(spans as u64);
        if !orphans.is_empty() {
            shared.reroute(None, orphans, RerouteReason::MemberLeft);
        }
        spans
    }

    fn full(&self, lane: &Lane) -> SendError {
        let min = self.inner.shared.settings.queue_wait.max(MIN_RETRY_AFTER);
        SendError::Full {
            member: lane.member.clone(),
            retry_after: lane.room_in(Instant::now(), min),
        }
    }

    /// The current member set (empty until the first one is known).
    pub fn members(&self) -> MemberSet {
        match &self.inner.shared.routing().ring {
            Some(ring) => ring.members().clone(),
            None => MemberSet::default(),
        }
    }

    /// The owner of `id` on the current ring, up or not: what a sampler
    /// compares with itself to know whether it owns a trace.
    pub fn owner(&self, id: &TraceId) -> Option<Member> {
        let routing = self.inner.shared.routing();
        routing.ring.as_ref().map(|r| r.route(id).clone())
    }

    /// Whether requests can be taken now: a member is known and one is up.
    pub fn is_ready(&self) -> bool {
        let routing = self.inner.shared.routing();
        routing.ring.is_some() && routing.any_up()
    }

    /// Members marked down now.
    pub fn members_down(&self) -> Vec<Member> {
        let routing = self.inner.shared.routing();
        routing
            .lanes
            .iter()
            .filter(|l| l.is_down())
            .map(|l| l.member.clone())
            .collect()
    }

    /// Spans held: queued, batching, in flight or waiting to retry.
    pub fn held_spans(&self) -> usize {
        self.inner.shared.held_spans()
    }

    /// Stops taking requests, sends everything held (failing over as
    /// usual) until `deadline`, then drops what is left, counted as
    /// `shutdown`. A second call returns at once with an empty report.
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        let shared = &self.inner.shared;
        if self.inner.shut.swap(true, Ordering::AcqRel) {
            return ShutdownReport::default();
        }
        shared.phase.send_replace(Phase::Draining);
        for (lane, _) in shared
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            lane.wake();
        }
        // Bounded by the deadline; a short poll keeps this simple, and it
        // runs once per process.
        while shared.held_spans() > 0 && Instant::now() < deadline {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        let dropped = shared.held_spans() as u64;
        shared.phase.send_replace(Phase::Stopped);
        let tasks: Vec<JoinHandle<()>> = shared
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .map(|(_, task)| task)
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "exporter lane task failed");
            }
        }
        let follow = self
            .inner
            .follow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(follow) = follow {
            follow.abort();
        }
        ShutdownReport {
            dropped_spans: dropped,
        }
    }
}

/// Applies every member set the resolver publishes, until the exporter
/// stops or the resolver is gone (a static resolver publishes once).
async fn follow(shared: Arc<Shared>, mut members: watch::Receiver<MemberSet>) {
    let mut phase = shared.phase.subscribe();
    loop {
        tokio::select! {
            changed = members.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = phase.wait_for(|p| *p == Phase::Stopped) => return,
        }
        let set = members.borrow_and_update().clone();
        shared.apply(set);
    }
}
