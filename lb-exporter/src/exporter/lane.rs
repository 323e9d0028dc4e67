//! One member's lane: its bounded queue, its worker (batching, export slots,
//! retries) and its up / down / left status.
//!
//! The worker owns everything between the queue and the wire. When its
//! member is marked down (and another member is up) or leaves the set, it
//! hands everything it holds that is not in flight back to the exporter to
//! be re-routed; what was in flight is re-routed as each call fails.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use proto::exporter::{Backoff, Batcher, ExportError, OtlpBatch, OtlpClient, Request};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::metrics::{DropReason, MemberMetrics, RerouteReason};
use super::room::{self, DrainRate};
use super::{Phase, Shared};
use crate::member::Member;

/// Where a member stands, for tasks that wait on a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Up,
    Down,
    Left,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<OtlpBatch>,
    /// The worker has returned: nothing pushed now would ever be sent.
    exited: bool,
}

pub(crate) struct Lane {
    pub member: Member,
    /// `Err` when no client can be built for this member's name: it is then
    /// down for good (every export fails as a connect error).
    client: Result<OtlpClient, String>,
    capacity: usize,
    /// Bytes held from reservation until sent or given up, reservations
    /// included: the bound `try_reserve` checks.
    held_bytes: AtomicUsize,
    held_spans: AtomicUsize,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Notified whenever held bytes are given back: what a request waiting
    /// for room in a full queue waits on.
    space: Notify,
    /// How fast the member takes bytes off this queue.
    drain: Mutex<DrainRate>,
    down: AtomicBool,
    left: AtomicBool,
    status: watch::Sender<Status>,
    metrics: MemberMetrics,
}

impl Lane {
    pub fn new(
        member: Member,
        client: Result<OtlpClient, String>,
        capacity: usize,
        metrics: MemberMetrics,
    ) -> Lane {
        Lane {
            member,
            client,
            capacity,
            held_bytes: AtomicUsize::new(0),
            held_spans: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            space: Notify::new(),
            drain: Mutex::new(DrainRate::default()),
            down: AtomicBool::new(false),
            left: AtomicBool::new(false),
            status: watch::channel(Status::Up).0,
            metrics,
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    pub fn is_left(&self) -> bool {
        self.left.load(Ordering::Acquire)
    }

    /// Sets the down flag; true if that changed it.
    pub fn set_down(&self, down: bool) -> bool {
        let changed = self.down.swap(down, Ordering::AcqRel) != down;
        if changed && !self.is_left() {
            self.status
                .send_replace(if down { Status::Down } else { Status::Up });
        }
        self.wake.notify_one();
        changed
    }

    /// The member left the set: the worker re-routes what it holds, then
    /// returns.
    pub fn leave(&self) {
        self.left.store(true, Ordering::Release);
        self.status.send_replace(Status::Left);
        self.wake.notify_one();
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn client(&self) -> Result<&OtlpClient, ExportError> {
        self.client
            .as_ref()
            .map_err(|message| ExportError::Connect {
                endpoint: self.member.endpoint().into(),
                message: message.clone(),
            })
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Spans held: queued, batching, in flight or waiting to retry.
    pub fn held_spans(&self) -> usize {
        self.held_spans.load(Ordering::Acquire)
    }

    /// Takes room for `bytes` if the bound allows it now. An empty lane
    /// takes a part of any size, so an oversize part is sent rather than
    /// refused for ever.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.held_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held + bytes <= self.capacity).then_some(held + bytes)
            })
            .is_ok()
    }

    /// Gives back room taken by [`Lane::try_reserve`] for a part that was
    /// not queued here.
    pub fn unreserve(&self, bytes: usize) {
        self.held_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Queues a batch. `reserved`: its room was taken by `try_reserve`;
    /// otherwise (a re-routed batch, already accepted) it is queued past the
    /// bound. Hands the batch back if the worker has returned; the room it
    /// reserved is given back then.
    pub fn push(&self, batch: OtlpBatch, reserved: bool) -> Result<(), OtlpBatch> {
        let len = batch.request.len();
        {
            let mut queue = self.lock();
            if queue.exited {
                if reserved {
                    self.unreserve(len);
                }
                return Err(batch);
            }
            if !reserved {
                self.held_bytes.fetch_add(len, Ordering::AcqRel);
            }
            self.held_spans.fetch_add(batch.spans, Ordering::AcqRel);
            self.metrics.queue_bytes.increment(len as f64);
            self.metrics.queue_spans.increment(batch.spans as f64);
            queue.batches.push_back(batch);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// A request or batch is done with (sent, given up or moved away).
    pub fn release(&self, bytes: usize, spans: usize) {
        self.held_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.held_spans.fetch_sub(spans, Ordering::AcqRel);
        self.metrics.queue_bytes.decrement(bytes as f64);
        self.metrics.queue_spans.decrement(spans as f64);
        // Once per export, not per request: cheap even with no one waiting.
        self.space.notify_waiters();
    }

    /// Resolves at the next [`Lane::release`] after it was enabled (pin it
    /// and call `enable` before checking for room, so no release is missed).
    pub fn space(&self) -> tokio::sync::futures::Notified<'_> {
        self.space.notified()
    }

    /// How soon this lane's queue is expected to have room again for the
    /// requests it refuses (see [`room::room_in`]); `None` if not known.
    pub fn room_in(&self, now: Instant, min: Duration) -> Option<Duration> {
        let drain = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        room::room_in(
            &drain,
            self.held_bytes.load(Ordering::Acquire),
            self.capacity,
            now,
            min,
        )
    }

    pub fn forwarded(&self, spans: u64) {
        self.metrics.forwarded.increment(spans);
    }

    /// An export of `bytes` was answered: the member took them off the queue.
    fn drained(&self, bytes: usize, now: Instant) {
        self.drain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(bytes, now);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves a consistent VecDeque.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves queued batches into the batcher until a request is ready or
    /// the queue is empty.
    fn pull_into(&self, batcher: &mut Batcher, ready: &mut VecDeque<Request>, now: Instant) {
        let mut queue = self.lock();
        while ready.is_empty() {
            let Some(batch) = queue.batches.pop_front() else {
                break;
            };
            ready.extend(batcher.push(batch, now));
        }
    }

    fn drain_queue(&self) -> Vec<OtlpBatch> {
        self.lock().batches.drain(..).collect()
    }

    /// Marks the worker gone if nothing is queued; false if something
    /// arrived meanwhile.
    fn exit_if_empty(&self) -> bool {
        let mut queue = self.lock();
        if queue.batches.is_empty() {
            queue.exited = true;
        }
        queue.exited
    }

    fn exit(&self) {
        self.lock().exited = true;
    }
}

/// How one request's export ended.
enum Outcome {
    /// The member answered OK (possibly rejecting some spans).
    Sent { request: Request, rejected: u64 },
    /// The member failed in a way that means it is down.
    Down {
        request: Request,
        error: ExportError,
    },
    /// The member went down or left while this request waited to retry.
    Moved { request: Request },
    /// Given up on.
    Failed {
        request: Request,
        error: ExportError,
        reason: DropReason,
    },
}

fn to_batch(request: Request) -> OtlpBatch {
    OtlpBatch {
        request: request.body,
        spans: request.spans,
    }
}

/// The lane's worker; returns when the member has left and everything it
/// held is gone, or at the shutdown deadline.
pub(crate) async fn run(shared: Arc<Shared>, lane: Arc<Lane>) {
    let concurrency = shared.settings.concurrency;
    // With no batching delay, a partial request waits only while an export
    // to the member is in flight (see `ExportConfig::adaptive_batching`).
    let adaptive = shared.settings.adaptive && shared.settings.limits.timeout.is_zero();
    let mut batcher = Batcher::new(shared.settings.limits);
    let mut ready: VecDeque<Request> = VecDeque::new();
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut phase = shared.phase.subscribe();
    loop {
        let current = *phase.borrow_and_update();
        if current == Phase::Stopped {
            stop(&shared, &lane, tasks).await;
            return;
        }
        let left = lane.is_left();
        let down = lane.is_down();
        if left || (down && shared.routing().any_up()) {
            let reason = if left {
                RerouteReason::MemberLeft
            } else {
                RerouteReason::MemberDown
            };
            let mut batches: Vec<OtlpBatch> = ready.drain(..).map(to_batch).collect();
            batches.extend(batcher.flush().map(to_batch));
            batches.extend(lane.drain_queue());
            if !batches.is_empty() {
                for b in &batches {
                    lane.release(b.request.len(), b.spans);
                }
                shared.reroute(Some(&lane), batches, reason);
            }
        } else if !down {
            let draining = current == Phase::Draining;
            while tasks.len() < concurrency {
                if ready.is_empty() {
                    let now = Instant::now();
                    lane.pull_into(&mut batcher, &mut ready, now);
                    // Adaptive: what arrives while an export is in flight is
                    // merged and goes when it returns; a full request goes
                    // at once (above, from `pull_into`).
                    let due = if adaptive {
                        tasks.is_empty()
                    } else {
                        batcher.deadline().is_some_and(|d| d <= now)
                    };
                    if ready.is_empty() && (due || draining) {
                        ready.extend(batcher.flush());
                    }
                }
                let Some(request) = ready.pop_front() else {
                    break;
                };
                tasks.spawn(export(shared.clone(), lane.clone(), request));
            }
        }
        if left
            && tasks.is_empty()
            && ready.is_empty()
            && batcher.is_empty()
            && lane.exit_if_empty()
        {
            return;
        }
        // No timer while adaptive batching holds a partial request: the
        // export it waits for wakes this loop when it returns.
        let due = if !down && !adaptive && tasks.len() < concurrency && ready.is_empty() {
            batcher.deadline()
        } else {
            None
        };
        tokio::select! {
            biased;
            _ = phase.changed() => {}
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(outcome) = joined {
                    settle(&shared, &lane, outcome);
                }
            }
            () = lane.wake.notified() => {}
            () = sleep_until(due), if due.is_some() => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The shutdown deadline passed: whatever the lane still holds is dropped,
/// counted.
async fn stop(shared: &Shared, lane: &Lane, mut tasks: JoinSet<Outcome>) {
    tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        // A call that finished before the abort landed still counts as sent.
        if let Ok(Outcome::Sent { request, rejected }) = joined {
            let rejected = rejected.min(request.spans as u64);
            lane.forwarded(request.spans as u64 - rejected);
            shared
                .metrics
                .dropped(DropReason::Rejected)
                .increment(rejected);
            lane.release(request.body.len(), request.spans);
        }
    }
    lane.exit();
    // Nothing is sent after this: take the counters to zero for the gauges.
    let spans = lane.held_spans.swap(0, Ordering::AcqRel);
    let bytes = lane.held_bytes.swap(0, Ordering::AcqRel);
    if spans > 0 {
        tracing::warn!(
            member = %lane.member,
            spans,
            "still held at the shutdown deadline, dropped"
        );
    }
    shared
        .metrics
        .dropped(DropReason::Shutdown)
        .increment(spans as u64);
    lane.metrics.queue_bytes.decrement(bytes as f64);
    lane.metrics.queue_spans.decrement(spans as f64);
}

fn settle(shared: &Arc<Shared>, lane: &Arc<Lane>, outcome: Outcome) {
    match outcome {
        Outcome::Sent { request, rejected } => {
            lane.drained(request.body.len(), Instant::now());
            let spans = request.spans as u64;
            let rejected = rejected.min(spans);
            lane.forwarded(spans - rejected);
            if rejected > 0 {
                shared
                    .metrics
                    .dropped(DropReason::Rejected)
                    .increment(rejected);
                tracing::warn!(member = %lane.member, rejected, "member rejected spans (partial success)");
            }
            lane.release(request.body.len(), request.spans);
        }
        Outcome::Down { request, error } => {
            shared.mark_down(lane, &error);
            // Refused at connect: never delivered. Anything else (a timeout,
            // a reset, UNAVAILABLE) may have been.
            let reason = match error {
                ExportError::Connect { .. } => RerouteReason::MemberDown,
                _ => RerouteReason::InFlight,
            };
            lane.release(request.body.len(), request.spans);
            shared.reroute(Some(lane), vec![to_batch(request)], reason);
        }
        Outcome::Moved { request } => {
            let reason = if lane.is_left() {
                RerouteReason::MemberLeft
            } else {
                RerouteReason::MemberDown
            };
            lane.release(request.body.len(), request.spans);
            shared.reroute(Some(lane), vec![to_batch(request)], reason);
        }
        Outcome::Failed {
            request,
            error,
            reason,
        } => {
            tracing::warn!(
                member = %lane.member,
                %error,
                spans = request.spans,
                reason = reason.as_str(),
                "export failed for good, dropped"
            );
            shared
                .metrics
                .dropped(reason)
                .increment(request.spans as u64);
            lane.release(request.body.len(), request.spans);
        }
    }
}

/// One request, from first attempt to an outcome. Answers that mean "member
/// down" end it at once (the exporter re-routes it); other retryable answers
/// are retried here with backoff, unless the member goes down or leaves
/// meanwhile.
async fn export(shared: Arc<Shared>, lane: Arc<Lane>, request: Request) -> Outcome {
    let client = match lane.client() {
        Ok(client) => client,
        Err(error) => return Outcome::Down { request, error },
    };
    let mut status = lane.subscribe();
    let mut backoff = Backoff::new(shared.settings.retry, Instant::now());
    loop {
        let started = Instant::now();
        let result = client.export(request.body.clone()).await;
        shared
            .metrics
            .export_duration
            .record(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(response) => {
                return Outcome::Sent {
                    request,
                    rejected: response.rejected_spans,
                };
            }
            Err(error) => error,
        };
        if error.is_member_down() {
            return Outcome::Down { request, error };
        }
        if !error.is_retryable() {
            return Outcome::Failed {
                request,
                error,
                reason: DropReason::NotRetryable,
            };
        }
        let Some(delay) = backoff.next_delay(Instant::now(), error.retry_after(), rand::random())
        else {
            return Outcome::Failed {
                request,
                error,
                reason: DropReason::RetriesExhausted,
            };
        };
        tracing::debug!(member = %lane.member, %error, ?delay, "export failed, retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = status.wait_for(|s| *s != Status::Up) => return Outcome::Moved { request },
        }
    }
}

/// Probes a member marked down with an empty export, backing off, until it
/// answers (anything but "down") or leaves, or the exporter stops.
pub(crate) async fn probe(shared: Arc<Shared>, lane: Arc<Lane>) {
    let mut backoff = Backoff::new(shared.settings.probe, Instant::now());
    let mut phase = shared.phase.subscribe();
    loop {
        let delay = backoff
            .next_delay(Instant::now(), None, rand::random())
            .unwrap_or(shared.settings.probe.max_interval);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = phase.wait_for(|p| *p == Phase::Stopped) => return,
        }
        if lane.is_left() || !lane.is_down() {
            return;
        }
        let Ok(client) = lane.client() else {
            continue;
        };
        match client.export(Bytes::new()).await {
            Ok(_) => break,
            Err(e) if e.is_member_down() => {
                tracing::debug!(member = %lane.member, error = %e, "probe failed, member still down");
            }
            // It answered: it is up, even if it did not like the probe.
            Err(_) => break,
        }
    }
    shared.mark_up(&lane);
}
