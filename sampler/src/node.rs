//! The node: the receivers' [`Sink`], the shard tasks, the exporter, the
//! admin server and the policy reloader, started together and stopped in
//! stages (see [`Sampler::serve`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use proto::admin::{Admin, Readiness};
use proto::exporter::{Exporter, OtlpBatch, StartOptions};
use proto::receiver::Signal;
use proto::receiver::{Accepted, Batch, ClusterMark, Receiver, Refusal, Sink};
use proto::view::RequestView;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::active::ActivePolicy;
use crate::cache::CachedDecision;
use crate::cluster::ClusterRuntime;
use crate::cluster::fleet::{Board, Exchange};
use crate::cluster::mover::Mover;
use crate::config::SamplerConfig;
use crate::durable::{self, Durable};
use crate::error::SamplerError;
use crate::holds::{RefusedHolds, dedup_ids};
use crate::ingest::{IngestBatch, shard_of};
use crate::logs::{LogMetrics, LogsPath};
use crate::metrics::{Metrics, Refused};
use crate::reload::{ReloadHandle, Reloader};
use crate::shard::{IngestMsg, Origin, Shard, ShardContext, ShardMsg};

/// Trace IDs of refused requests noted per shard, at most: about 48 bytes
/// each, so a few MiB per shard at worst.
const HOLDS_PER_SHARD: usize = 65_536;

use crate::state::NodeState;

/// The receivers hand every request here.
struct SamplerSink {
    shards: Vec<mpsc::Sender<ShardMsg>>,
    node: Arc<NodeState>,
    metrics: Arc<Metrics>,
    retry_after: Duration,
    /// The shards' clock: a hand-over's age becomes a first-seen time on it.
    epoch: Instant,
    /// The traces of requests refused for backpressure, whose decisions
    /// wait for the retry.
    holds: Arc<RefusedHolds>,
    /// The write-ahead log, with `storage:`.
    durable: Option<Durable>,
    /// The other samplers' demand reports (fleet-wide budgets).
    fleet: Arc<Board>,
    /// The logs exporter and the log metrics.
    logs: Arc<LogsPath>,
}

impl SamplerSink {
    /// Refuses a request whole, counting its spans by reason. Counting
    /// means walking it; a malformed one is refused as invalid instead.
    /// Refused for backpressure, its traces are held for the retry.
    fn refuse(&self, request: &Bytes, reason: Refused) -> Result<Accepted, Refusal> {
        let mut ids = Vec::new();
        let mut spans = 0usize;
        RequestView::new(request).for_each_span(|_, _, span| {
            spans += 1;
            if reason != Refused::ShuttingDown {
                ids.push(span.trace_id);
            }
        })?;
        self.metrics.refused(reason).increment(spans as u64);
        self.hold(ids);
        Err(self.refusal(reason))
    }

    /// Notes refused traces so their decisions wait for the retry.
    fn hold(&self, mut ids: Vec<proto::view::TraceId>) {
        if ids.is_empty() {
            return;
        }
        dedup_ids(&mut ids);
        let dropped = self.holds.note(&ids, self.epoch.elapsed());
        if dropped > 0 {
            self.metrics.holds_dropped.increment(dropped);
        }
    }

    fn refusal(&self, reason: Refused) -> Refusal {
        let retry_after = self.retry_after;
        match reason {
            Refused::ShuttingDown => Refusal::Unavailable { retry_after },
            Refused::BufferFull
            | Refused::ExportBacklog
            | Refused::QueueFull
            | Refused::StorageFull => Refusal::Overloaded { retry_after },
        }
    }
}

impl SamplerSink {
    /// Decisions another sampler pushed: each to the shard of its trace,
    /// all or nothing like spans. Not spans: nothing is received.
    fn accept_decisions(&self, body: &[u8]) -> Result<Accepted, Refusal> {
        let decisions = crate::cluster::wire::read_decisions(body)?;
        let count = decisions.len();
        let mut per_shard: Vec<Vec<(proto::view::TraceId, CachedDecision)>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        for (id, decision) in decisions {
            per_shard[shard_of(&id, self.shards.len())].push((id, decision));
        }
        let mut permits = Vec::with_capacity(per_shard.len());
        for (shard, list) in per_shard.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            match self.shards[shard].try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(TrySendError::Full(())) => return Err(self.refusal(Refused::QueueFull)),
                Err(TrySendError::Closed(())) => return Err(self.refusal(Refused::ShuttingDown)),
            }
        }
        let mut permits = permits.into_iter();
        for list in per_shard.into_iter().filter(|l| !l.is_empty()) {
            let Some(permit) = permits.next() else { break };
            permit.send(ShardMsg::Decisions(list));
        }
        self.metrics.decisions_received.increment(count as u64);
        Ok(Accepted { spans: 0 })
    }
}

impl SamplerSink {
    /// A logs request: split by trace ID on the wire; each trace's records
    /// go to its shard (held with the trace, see [`crate::logs`]), records
    /// without a trace ID straight to the logs exporter. All or nothing,
    /// like spans.
    fn accept_log_records(&self, request: &[u8], origin: Origin) -> Result<Accepted, Refusal> {
        let parts = proto::logs::split(request, |id| id.copied())?;
        let records: usize = parts.iter().map(|p| p.spans).sum();
        if let Some(reason) = self.node.refusal() {
            return Err(self.refusal(reason));
        }
        let mut per_shard: Vec<Vec<(proto::view::TraceId, Bytes, usize)>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        let mut traceless = None;
        for part in parts {
            match part.key {
                // Copied: held parts must not pin the request.
                Some(id) => per_shard[shard_of(&id, self.shards.len())].push((
                    id,
                    Bytes::copy_from_slice(&part.request),
                    part.spans,
                )),
                None => traceless = Some(part),
            }
        }
        let mut permits = Vec::with_capacity(per_shard.len());
        for (shard, list) in per_shard.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            match self.shards[shard].try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(TrySendError::Full(())) => return Err(self.refusal(Refused::QueueFull)),
                Err(TrySendError::Closed(())) => return Err(self.refusal(Refused::ShuttingDown)),
            }
        }
        if let Some(part) = traceless {
            let n = part.spans;
            match self.logs.exporter.try_send(OtlpBatch {
                request: part.request,
                spans: n,
            }) {
                Ok(()) => self.logs.metrics.forwarded.increment(n as u64),
                Err(proto::exporter::SendError::QueueFull(_)) => {
                    return Err(self.refusal(Refused::ExportBacklog));
                }
                Err(proto::exporter::SendError::Closed(_)) => {
                    return Err(self.refusal(Refused::ShuttingDown));
                }
            }
        }
        let mut permits = permits.into_iter();
        for (shard, list) in per_shard.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let Some(permit) = permits.next() else { break };
            permit.send(ShardMsg::Logs(list, origin));
            self.nudge_if_half_full(shard);
        }
        Ok(Accepted { spans: records })
    }

    /// After a send to `shard`: once its queue is half full the shard takes
    /// it now, not at its next round (see shard::GATHER_GAP), so a queue
    /// filled while the shard gathers is not a refusal.
    fn nudge_if_half_full(&self, shard: usize) {
        let queue = &self.shards[shard];
        if queue.capacity() * 2 <= queue.max_capacity() {
            self.node.nudge(shard);
        }
    }
}

impl Sink for SamplerSink {
    async fn accept_logs(&self, batch: Batch) -> Result<Accepted, Refusal> {
        // Records another sampler sent (strays, hand-overs: marked
        // forwarded) are held here, never forwarded again.
        let origin = match batch.mark {
            None => Origin::Client,
            Some(_) => Origin::Forwarded,
        };
        self.accept_log_records(&batch.request, origin)
    }

    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let request = batch.request;
        if batch.mark == Some(ClusterMark::Counts) {
            // A few bytes, recorded whatever the node's load: shares must
            // follow the fleet most when it is busy.
            let counts = crate::cluster::fleet::decode(&request)?;
            self.fleet.record(counts, tokio::time::Instant::now());
            return Ok(Accepted { spans: 0 });
        }
        if let Some(reason) = self.node.refusal() {
            if batch.mark == Some(ClusterMark::Decisions) {
                return Err(self.refusal(reason));
            }
            return self.refuse(&request, reason);
        }
        let origin = match batch.mark {
            None => Origin::Client,
            Some(ClusterMark::Forwarded) => Origin::Forwarded,
            Some(ClusterMark::HandedOver { age }) => Origin::Moved {
                first_seen: self.epoch.elapsed().saturating_sub(age),
            },
            Some(ClusterMark::Decisions) => return self.accept_decisions(&request),
            Some(ClusterMark::Counts) => return Ok(Accepted { spans: 0 }),
        };
        let len = request.len();
        let batches = IngestBatch::split(request.clone(), self.shards.len())?;
        let spans: usize = batches.iter().map(IngestBatch::len).sum();
        if spans == 0 {
            return Ok(Accepted { spans: 0 });
        }
        // All or nothing: a place in every shard queue the request touches
        // is reserved before any shard gets its part.
        let mut permits = Vec::with_capacity(batches.len());
        for (shard, batch) in batches.iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            match self.shards[shard].try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(TrySendError::Full(())) => {
                    self.metrics
                        .refused(Refused::QueueFull)
                        .increment(spans as u64);
                    self.hold(
                        batches
                            .iter()
                            .flat_map(|b| b.spans.iter().map(|s| s.trace_id))
                            .collect(),
                    );
                    return Err(self.refusal(Refused::QueueFull));
                }
                Err(TrySendError::Closed(())) => {
                    self.metrics
                        .refused(Refused::ShuttingDown)
                        .increment(spans as u64);
                    return Err(self.refusal(Refused::ShuttingDown));
                }
            }
        }
        // Logged before any shard has it, so the log never holds a
        // decision for spans it does not have.
        let mut synced = None;
        if let Some(durable) = &self.durable {
            let mut ids: Vec<proto::view::TraceId> = batches
                .iter()
                .flat_map(|b| b.spans.iter().map(|s| s.trace_id))
                .collect();
            dedup_ids(&mut ids);
            // Same size and alignment: collected in place, no allocation.
            let keys: Vec<storage::TraceKey> = ids.into_iter().map(|id| id.0).collect();
            match durable.spans(keys, request.clone()) {
                Ok(ack) => synced = ack,
                Err(()) => {
                    self.metrics
                        .refused(Refused::StorageFull)
                        .increment(spans as u64);
                    return Err(self.refusal(Refused::StorageFull));
                }
            }
        }
        // The request stays alive until every shard has copied its spans:
        // charge its bytes, split between the shards, until they have.
        self.node.inflight_bytes.fetch_add(len, Ordering::Relaxed);
        let parts = permits.len();
        let share = len / parts;
        let mut first = len - share * parts;
        let mut permits = permits.into_iter();
        for (shard, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let Some(permit) = permits.next() else { break };
            permit.send(ShardMsg::Ingest(IngestMsg {
                batch,
                charge: share + std::mem::take(&mut first),
                origin,
            }));
            self.nudge_if_half_full(shard);
        }
        match origin {
            Origin::Client => {}
            Origin::Forwarded => self.metrics.from_peers[0].increment(spans as u64),
            Origin::Moved { .. } => self.metrics.from_peers[1].increment(spans as u64),
        }
        if let Some(synced) = synced {
            // `durable_ack`: answered once the record is on disk (an error
            // means the log task is gone; the spans are in the buffer).
            let _ = synced.await;
        }
        Ok(Accepted { spans })
    }
}

/// A sampler node with its listeners bound, ready to [`serve`](Self::serve).
pub struct Sampler {
    config: Arc<SamplerConfig>,
    policy: (policy::PolicyFile, u64),
    receiver: Receiver,
    admin: Admin,
    reload: ReloadHandle,
    reload_requests: mpsc::Receiver<()>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("node", &self.config.node)
            .field("grpc", &self.grpc_addr())
            .field("http", &self.http_addr())
            .field("admin", &self.admin_addr())
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// Everything [`bind`](Sampler::bind) checks before it binds a port:
    /// the config's rules, the policy file, the receivers' and the admin
    /// port's TLS files and tokens. Binds nothing, starts nothing: `tailgate
    /// config check`. The policy file's notes are returned.
    pub fn check(config: &SamplerConfig) -> Result<Vec<String>, SamplerError> {
        config.validate()?;
        let policy = crate::reload::load(&config.policy_file)?;
        Receiver::check(&config.receiver)?;
        if let Some(tls) = &config.admin_tls {
            proto::tls::ServerTls::new(tls, &[b"h2", b"http/1.1"])
                .map_err(|e| SamplerError::Admin(proto::admin::AdminError::Tls(e)))?;
        }
        Ok(policy.0.notes.clone())
    }

    /// Checks the config, loads the policy file, then binds the listeners:
    /// a bad config or policy file fails before any port is bound. Needs no
    /// runtime.
    pub fn bind(config: SamplerConfig) -> Result<Sampler, SamplerError> {
        config.validate()?;
        let policy = crate::reload::load(&config.policy_file)?;
        let config = config.effective(policy.0.num_shards);
        for note in &policy.0.notes {
            tracing::info!(file = %config.policy_file.display(), "policy file: {note}");
        }
        let receiver = Receiver::bind(config.receiver.clone())?;
        let admin = Admin::bind_tls(config.admin, config.admin_tls.as_ref(), &config.node)?;
        let (reload, reload_requests) = ReloadHandle::new();
        Ok(Sampler {
            config: Arc::new(config),
            policy,
            receiver,
            admin,
            reload,
            reload_requests,
        })
    }

    /// The bound OTLP/gRPC address, if enabled (the real port when bound to 0).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.receiver.grpc_addr()
    }

    /// The bound OTLP/HTTP address, if enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.receiver.http_addr()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// A handle that asks the node to reload its policy file, like SIGHUP
    /// (which [`serve`](Self::serve) also listens for, on Unix).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Serves until `shutdown` completes (the binary maps SIGTERM onto it),
    /// or a server fails; then shuts down in stages. This is the one place
    /// the order is written:
    ///
    /// 1. `/readyz` fails, so LBs and DNS stop sending here;
    /// 2. the node keeps serving for `shutdown.grace` while they notice;
    /// 3. the receivers stop: requests still arriving get UNAVAILABLE / 503
    ///    (retryable), requests in flight are answered;
    /// 4. in a cluster, the mover stops redistributing, and hands every
    ///    trace held, then its remembered decisions, to their owners under
    ///    the ring without this node, by `cluster.handover_timeout` from
    ///    here;
    /// 5. each shard takes what was accepted, decides every pending trace
    ///    (what was not handed over) with the policies in force, and hands
    ///    kept ones to the exporter, by the drain deadline
    ///    (`shutdown.drain_timeout` from step 4);
    /// 6. the exporter (and the stray forwarder) deliver what they hold by
    ///    the same deadline; what is left is dropped and counted
    ///    (`reason="shutdown"`);
    /// 7. the resolver, the policy watcher and the admin server stop.
    ///
    /// Returns `Ok` once all of it is done, or the error that ended serving.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SamplerError> {
        let Sampler {
            config,
            policy: (file, hash),
            receiver,
            admin,
            reload: _,
            reload_requests,
        } = self;
        let node = config.node.clone();
        let handle = proto::admin::install_metrics();
        let metrics = Arc::new(Metrics::new(&node));
        // With `storage:`, the log and the exporters' disk queues share one
        // budget; each queue takes what its memory queue has no room for.
        let budget = config
            .storage
            .as_ref()
            .map(|s| Arc::new(storage::Budget::new(s.max_bytes)));
        let spill = |dir: &str| match (&config.storage, &budget) {
            (Some(s), Some(budget)) => open_spill(&node, s, budget, dir).map(Some),
            _ => Ok(None),
        };
        let exporter = Exporter::start_with(
            config.exporter.clone(),
            StartOptions {
                spill: spill("spill")?,
                ..StartOptions::default()
            },
        )?;
        let logs = Arc::new(LogsPath {
            exporter: Exporter::start_with(
                config
                    .logs_exporter
                    .clone()
                    .unwrap_or_else(|| config.exporter.clone()),
                StartOptions {
                    signal: Signal::Logs,
                    spill: spill("spill-logs")?,
                    ..StartOptions::default()
                },
            )?,
            metrics: LogMetrics::new(&node),
        });
        let cluster = match &config.cluster {
            Some(c) => Some(ClusterRuntime::start(c, &node)?),
            None => None,
        };

        let active = Arc::new(ActivePolicy::new(
            file,
            hash,
            &metrics,
            config.use_tracestate,
        ));
        metrics.policy_hash.set(active.hash_gauge());
        let max_traces = config.max_traces(&active.file);
        let state = Arc::new(NodeState::new(&config, max_traces));
        metrics.buffer_limit_traces.set(max_traces as f64);
        metrics
            .buffer_limit_bytes
            .set(config.limits.max_buffer_bytes as f64);
        let settings = config.buffer_settings(&active.file);
        tracing::info!(
            node,
            shards = config.shards,
            policies = active.file.policies.len(),
            hash = format!("{hash:016x}"),
            ?settings,
            "sampler starting"
        );
        let (policy_tx, policy_rx) = watch::channel(active);
        let (stop_tx, stop_rx) = watch::channel::<Option<Instant>>(None);

        // Backdated, so that a first-seen time recovered from the log or
        // carried by a hand-over, older than this process, still fits.
        let epoch = Instant::now()
            .checked_sub(EPOCH_BACKDATE)
            .unwrap_or_else(Instant::now);
        let (durable, durable_queue) = match &config.storage {
            Some(s) => {
                let (d, q) = Durable::new(s, metrics.clone());
                (Some(d), Some(q))
            }
            None => (None, None),
        };
        let holds = Arc::new(RefusedHolds::new(
            config.shards,
            HOLDS_PER_SHARD,
            config.limits.effective_refused_wait(),
        ));
        let ctx = Arc::new(ShardContext {
            exporter: exporter.clone(),
            node: state.clone(),
            metrics: metrics.clone(),
            config: config.clone(),
            epoch,
            flush_bytes: (config.exporter.max_batch_bytes / 2).clamp(64 * 1024, 1024 * 1024),
            cluster: cluster.as_ref().map(|c| c.shared.clone()),
            holds: holds.clone(),
            durable: durable.clone(),
            logs: logs.clone(),
            // Until the log is replayed (see recover_log).
            replays: config.storage.is_some(),
        });
        let mut shards = JoinSet::new();
        let mut senders = Vec::with_capacity(config.shards);
        for index in 0..config.shards {
            let (tx, rx) = mpsc::channel(config.shard_queue);
            senders.push(tx);
            shards.spawn(
                Shard::new(ctx.clone(), index, rx, policy_rx.clone(), stop_rx.clone()).run(),
            );
        }
        let fleet_board = Arc::new(Board::default());
        let (fleet_stop, fleet_stop_rx) = watch::channel(false);
        let fleet_cluster = cluster
            .as_ref()
            .filter(|c| c.config.fleet_budgets)
            .map(|c| (c.shared.clone(), c.config.clone()));
        let fleet = tokio::spawn(
            Exchange {
                interval: fleet_cluster
                    .as_ref()
                    .map_or(Duration::from_secs(1), |(_, c)| c.fleet_interval),
                shared: fleet_cluster.as_ref().map(|(s, _)| s.clone()),
                config: fleet_cluster.map(|(_, c)| c),
                board: fleet_board.clone(),
                policy: policy_rx.clone(),
                metrics: metrics.clone(),
            }
            .run(fleet_stop_rx),
        );
        drop(policy_rx);
        let (mover_stop, mover_stop_rx) = watch::channel(false);
        let mover = cluster.as_ref().map(|c| {
            let mover = Mover::new(
                c.shared.clone(),
                metrics.clone(),
                senders.clone(),
                epoch,
                c.config.clone(),
                durable.clone(),
            );
            tokio::spawn(mover.run(mover_stop_rx))
        });
        let recovery_senders = senders.clone();
        let sink = Arc::new(SamplerSink {
            shards: senders,
            node: state.clone(),
            metrics: metrics.clone(),
            retry_after: config.limits.retry_after,
            epoch,
            holds,
            durable,
            fleet: fleet_board,
            logs: logs.clone(),
        });

        let (reload_stop, reload_stop_rx) = watch::channel(false);
        let max_traces_config = config.clone();
        let reloader = Reloader::new(
            config.policy_file.clone(),
            config.policy_poll_interval,
            policy_tx,
            metrics.clone(),
            state.clone(),
            Box::new(move |file| max_traces_config.max_traces(file)),
        );
        let reloader = tokio::spawn(reloader.run(reload_requests, reload_stop_rx));

        let readiness = Readiness::new();
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let mut admin = tokio::spawn(admin.serve(handle, readiness.clone(), until(admin_stop_rx)));
        // The log is replayed before the receivers take anything; the node
        // is not ready meanwhile, and says how far it is.
        let mut log_task = None;
        metrics.storage_recovery_progress.set(1.0);
        if let (Some(storage), Some(queue)) = (config.storage.clone(), durable_queue) {
            // On its own ring while it replays: the traces it recovers are
            // its own, not to be pushed to others because DNS does not list
            // it yet.
            if let Some(cluster) = &cluster {
                cluster.set_ready(true);
            }
            let wal = recover_log(
                &node,
                storage,
                &recovery_senders,
                epoch,
                &metrics,
                &readiness,
            )
            .await?;
            // Every span is sent: each shard decides what is due, each trace
            // whole, once it has taken the replay's last batch off its queue.
            for shard in &recovery_senders {
                let _ = shard.send(ShardMsg::ReplayDone).await;
            }
            if let Some(budget) = &budget {
                budget.set_wal(wal.bytes());
            }
            log_task = Some(durable::start(
                wal,
                queue,
                epoch,
                metrics.clone(),
                durable::Outlets {
                    exporter: exporter.clone(),
                    forwarder: cluster.as_ref().map(|c| c.shared.forwarder.clone()),
                },
                budget.clone(),
            ));
        }
        drop(recovery_senders);
        let (receiver_stop, receiver_stop_rx) = watch::channel(false);
        let mut receiver = tokio::spawn(receiver.serve(sink, until(receiver_stop_rx)));
        readiness.set_ready(true);
        if let Some(cluster) = &cluster {
            cluster.set_ready(true);
        }

        let task_error = |task: &'static str, message: String| SamplerError::Task {
            node: node.clone(),
            task,
            message,
        };
        let mut failure: Option<SamplerError> = None;
        let mut receiver_done = false;
        let mut admin_done = false;
        tokio::select! {
            () = shutdown => tracing::info!(node, "shutting down"),
            r = &mut receiver => {
                receiver_done = true;
                failure = Some(match r {
                    Ok(Ok(())) => task_error("receiver", "stopped on its own".into()),
                    Ok(Err(e)) => e.into(),
                    Err(e) => task_error("receiver", e.to_string()),
                });
            }
            r = &mut admin => {
                admin_done = true;
                failure = Some(match r {
                    Ok(Ok(())) => task_error("admin", "stopped on its own".into()),
                    Ok(Err(e)) => e.into(),
                    Err(e) => task_error("admin", e.to_string()),
                });
            }
        }
        if let Some(e) = &failure {
            tracing::error!(node, error = %e, "a server failed; shutting down");
        }

        // 1. Not ready (and no longer on its own ring unless DNS says so).
        readiness.set_ready(false);
        if let Some(cluster) = &cluster {
            cluster.set_ready(false);
        }
        // 2. Grace: LBs and DNS notice while requests are still served.
        if failure.is_none() && !config.shutdown.grace.is_zero() {
            tokio::time::sleep(config.shutdown.grace).await;
        }
        // 3. Receivers stop.
        state.closing.store(true, Ordering::Release);
        let _ = receiver_stop.send(true);
        if !receiver_done {
            match receiver.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e.into());
                }
                Err(e) => {
                    failure.get_or_insert(task_error("receiver", e.to_string()));
                }
            }
        }
        // 4. Hand-over: everything held goes to its owner without us.
        let deadline = Instant::now() + config.shutdown.drain_timeout;
        if let (Some(task), Some(cluster)) = (mover, &cluster) {
            let _ = mover_stop.send(true);
            match task.await {
                Ok(mut mover) => {
                    let by = Instant::now() + cluster.config.handover_timeout;
                    let pass = mover.hand_over(by.min(deadline)).await;
                    tracing::info!(node, ?pass, "hand-over done");
                }
                Err(e) => {
                    failure.get_or_insert(task_error("mover", e.to_string()));
                }
            }
        }
        // 5. Shards decide everything pending, by the drain deadline.
        stop_tx.send_replace(Some(deadline));
        while let Some(done) = shards.join_next().await {
            if let Err(e) = done {
                tracing::error!(node, error = %e, "a shard task failed");
                failure.get_or_insert(task_error("shard", e.to_string()));
            }
        }
        // 6. The exporters drain by the same deadline.
        let (report, logs_report) = tokio::join!(
            exporter.shutdown(deadline),
            logs.exporter.shutdown(deadline)
        );
        if logs_report.dropped_spans > 0 {
            tracing::warn!(
                node,
                dropped = logs_report.dropped_spans,
                "log records still held by the logs exporter at the deadline were dropped"
            );
        }
        tracing::info!(
            node,
            sent = report.sent_spans,
            failed = report.failed_spans,
            dropped = report.dropped_spans,
            "exporter drained"
        );
        if let Some(cluster) = cluster {
            cluster.stop(deadline).await;
        }
        // The log's last commit, once every handle on it is gone.
        drop(ctx);
        if let Some(task) = log_task {
            let _ = task.await;
        }
        // 7. The rest.
        let _ = fleet_stop.send(true);
        let _ = fleet.await;
        let _ = reload_stop.send(true);
        let _ = reloader.await;
        let _ = admin_stop.send(true);
        if !admin_done {
            match admin.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e.into());
                }
                Err(e) => {
                    failure.get_or_insert(task_error("admin", e.to_string()));
                }
            }
        }
        tracing::info!(node, "sampler stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// How far back the shards' clock starts: further than any decision wait,
/// so recovered and handed-over first-seen times are never clipped.
const EPOCH_BACKDATE: Duration = Duration::from_secs(600);

/// Opens the exporter's disk queue in `storage.path/spill`, with what a
/// previous process left in it.
fn open_spill(
    node: &str,
    storage: &crate::config::StorageConfig,
    budget: &Arc<storage::Budget>,
    dir: &str,
) -> Result<proto::exporter::DiskQueue, SamplerError> {
    let config = storage::SpillConfig {
        dir: storage.path.join(dir),
        segment_bytes: storage.segment_bytes.min(SPILL_SEGMENT_BYTES),
    };
    let (spill, recovered) =
        storage::Spill::open(config, budget.clone()).map_err(|source| SamplerError::Storage {
            node: node.to_owned(),
            source,
        })?;
    Ok(proto::exporter::DiskQueue {
        spill,
        recovered,
        budget_bytes: storage.max_bytes,
    })
}

/// A disk queue segment is synced when closed: small ones keep what a power
/// loss could take small.
const SPILL_SEGMENT_BYTES: u64 = 8 << 20;

/// Replays the write-ahead log into the shards (on a blocking thread),
/// reporting progress in `/readyz` and a gauge.
async fn recover_log(
    node: &str,
    storage: crate::config::StorageConfig,
    senders: &[mpsc::Sender<ShardMsg>],
    epoch: Instant,
    metrics: &Arc<Metrics>,
    readiness: &Readiness,
) -> Result<storage::Wal, SamplerError> {
    let started = std::time::Instant::now();
    readiness.set_detail("recovering the write-ahead log: 0%");
    metrics.storage_recovery_progress.set(0.0);
    let senders = senders.to_vec();
    let progress_metrics = metrics.clone();
    let progress_readiness = readiness.clone();
    let path = storage.path.clone();
    let recovered = tokio::task::spawn_blocking(move || {
        let mut last = -1.0f64;
        durable::recover(&storage, &senders, epoch, |done| {
            // Updated per percent: cheap, and enough for a probe.
            if done - last >= 0.01 || done >= 1.0 {
                last = done;
                progress_metrics.storage_recovery_progress.set(done);
                progress_readiness.set_detail(format!(
                    "recovering the write-ahead log: {:.0}%",
                    done * 100.0
                ));
            }
        })
    })
    .await
    .map_err(|e| SamplerError::Task {
        node: node.to_owned(),
        task: "recovery",
        message: e.to_string(),
    })?
    .map_err(|source| SamplerError::Storage {
        node: node.to_owned(),
        source,
    })?;
    let (wal, done) = recovered;
    metrics.recovered.increment(done.spans);
    metrics.storage_torn_tails.increment(done.stats.torn_tails);
    metrics
        .storage_skipped_bytes
        .increment(done.stats.skipped_bytes);
    metrics.storage_bytes.set(wal.bytes() as f64);
    metrics.storage_recovery_progress.set(1.0);
    readiness.set_detail("");
    tracing::info!(
        node,
        path = %path.display(),
        spans = done.spans,
        decisions = done.decisions,
        segments = done.stats.segments,
        bytes = done.stats.bytes,
        torn_tails = done.stats.torn_tails,
        skipped_bytes = done.stats.skipped_bytes,
        undecodable = done.stats.undecodable,
        bad_segments = done.stats.bad_segments,
        seconds = started.elapsed().as_secs_f64(),
        "write-ahead log recovered"
    );
    Ok(wal)
}

/// Completes when `rx` turns true (or its sender is gone).
async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs a sampler node: binds everything (a bad config or policy file is an
/// error before any port is bound), serves until `shutdown` completes, then
/// shuts down in stages (see [`Sampler::serve`]). SIGHUP reloads the policy
/// file (handled here, on Unix); for another trigger, use
/// [`Sampler::bind`] and [`Sampler::reload_handle`].
pub async fn run(
    config: SamplerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SamplerError> {
    Sampler::bind(config)?.serve(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{SpanSpec, request};
    use proto::receiver::Protocol;

    fn sink(queue: usize) -> (SamplerSink, Arc<NodeState>, mpsc::Receiver<ShardMsg>) {
        let config = SamplerConfig {
            policy_file: "policy.yaml".into(),
            ..SamplerConfig::default()
        };
        let node = Arc::new(NodeState::new(&config, 100));
        let (tx, rx) = mpsc::channel(queue);
        let sink = SamplerSink {
            shards: vec![tx],
            node: node.clone(),
            metrics: Arc::new(Metrics::new("test")),
            retry_after: Duration::from_secs(2),
            epoch: Instant::now(),
            holds: Arc::new(RefusedHolds::new(1, 100, Duration::from_secs(6))),
            durable: None,
            fleet: Arc::default(),
            logs: Arc::new(LogsPath {
                exporter: Exporter::start_with(
                    proto::exporter::ExporterConfig {
                        endpoint: "http://127.0.0.1:9".into(),
                        ..Default::default()
                    },
                    StartOptions {
                        signal: Signal::Logs,
                        ..StartOptions::default()
                    },
                )
                .expect("starts"),
                metrics: LogMetrics::new("test"),
            }),
        };
        (sink, node, rx)
    }

    #[tokio::test]
    async fn demand_counts_from_peers_are_recorded_even_while_refusing_spans() {
        let (sink, node, _rx) = sink(1);
        node.closing.store(true, Ordering::Release);
        let counts = crate::cluster::fleet::Counts {
            member: "127.0.0.11:4317".into(),
            fingerprint: 42,
            demand: vec![120.0],
        };
        let accepted = sink
            .accept(Batch {
                request: Bytes::from(crate::cluster::fleet::encode(&counts)),
                protocol: Protocol::Grpc,
                mark: Some(ClusterMark::Counts),
            })
            .await
            .expect("counts are taken");
        assert_eq!(accepted.spans, 0);
        assert!(
            sink.fleet
                .latest("127.0.0.11:4317")
                .is_some_and(|c| c == counts)
        );
        // Garbage is a client error, not a crash.
        let refused = sink
            .accept(Batch {
                request: Bytes::from_static(&[0x1a, 0x05, 0x01]),
                protocol: Protocol::Grpc,
                mark: Some(ClusterMark::Counts),
            })
            .await;
        assert!(matches!(refused, Err(Refusal::Invalid(_))), "{refused:?}");
    }

    #[tokio::test]
    async fn a_batch_that_leaves_its_shard_queue_half_full_nudges_the_shard() {
        // A kept permit makes the wait ready at its first poll.
        let nudged = |node: &NodeState| {
            let mut wait = std::pin::pin!(node.nudged(0).expect("one shard").notified());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            std::future::Future::poll(wait.as_mut(), &mut cx).is_ready()
        };
        let (sink, node, _rx) = sink(4);
        let req = request(&[SpanSpec::new(1, 1)]);
        sink.accept(batch(req.clone())).await.expect("taken");
        assert!(!nudged(&node), "one of four: the shard may gather");
        sink.accept(batch(req)).await.expect("taken");
        assert!(nudged(&node), "two of four: half full, take them now");
        // Log records go through the same queues.
        let (sink, node, _rx) = super::tests::sink(4);
        let logs = Bytes::from(prost::Message::encode_to_vec(
            &opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
                resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
                    scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                        log_records: vec![opentelemetry_proto::tonic::logs::v1::LogRecord {
                            trace_id: crate::testutil::trace_id(1).0.to_vec(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
        ));
        sink.accept_logs(batch(logs.clone())).await.expect("taken");
        assert!(!nudged(&node), "one of four");
        sink.accept_logs(batch(logs)).await.expect("taken");
        assert!(nudged(&node), "two of four: logs nudge too");
    }

    fn batch(request: Bytes) -> Batch {
        Batch {
            request,
            protocol: Protocol::Grpc,
            mark: None,
        }
    }

    #[tokio::test]
    async fn the_sink_maps_each_condition_to_its_status() {
        let (sink, node, mut rx) = sink(1);
        let req = request(&[SpanSpec::new(1, 1), SpanSpec::new(2, 1)]);
        assert_eq!(
            sink.accept(batch(req.clone())).await,
            Ok(Accepted { spans: 2 })
        );
        assert_eq!(node.inflight_bytes.load(Ordering::Relaxed), req.len());
        // The shard's queue is full: overloaded, retryable.
        let overloaded = Refusal::Overloaded {
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(
            sink.accept(batch(req.clone())).await,
            Err(overloaded.clone())
        );
        let Some(ShardMsg::Ingest(msg)) = rx.recv().await else {
            panic!("expected spans")
        };
        node.release_inflight(msg.charge);
        assert_eq!(node.inflight_bytes.load(Ordering::Relaxed), 0);
        // Above the high watermark (90 of 100 traces): overloaded too.
        node.buffered((0, 95), (0, 0));
        assert_eq!(sink.accept(batch(req.clone())).await, Err(overloaded));
        node.buffered((95, 0), (0, 0));
        // Malformed: invalid, whatever the load.
        assert!(matches!(
            sink.accept(batch(Bytes::from_static(b"\x0a\xff"))).await,
            Err(Refusal::Invalid(_))
        ));
        // Shutting down: unavailable.
        node.closing.store(true, Ordering::Release);
        assert_eq!(
            sink.accept(batch(req)).await,
            Err(Refusal::Unavailable {
                retry_after: Duration::from_secs(2)
            })
        );
    }

    #[tokio::test]
    async fn an_empty_request_is_accepted_without_touching_a_shard() {
        let (sink, _node, mut rx) = sink(1);
        assert_eq!(
            sink.accept(batch(Bytes::new())).await,
            Ok(Accepted { spans: 0 })
        );
        assert!(rx.try_recv().is_err());
    }
}
