//! The sampler's metrics, every one labelled `node`; handles are created
//! once, when the node starts (per policy file for the per-policy ones).
//!
//! The accounting identity (docs/design.md), exact once the node is quiet:
//!
//! ```text
//! tailgate_spans_received_total        (the receiver's, summed over protocol)
//!   + tailgate_spans_recovered_total    (from the write-ahead log, at start)
//!   = tailgate_spans_forwarded_total    handed to the backend exporter
//!   + tailgate_spans_not_sampled_total  in traces decided not kept, and late spans of them
//!   + tailgate_spans_dropped_total      by reason, dropped by the sampler itself
//!   + tailgate_spans_handed_over_total  by reason, passed to another sampler (cluster)
//!   + tailgate_buffer_spans             still buffered (or decided, not yet handed over,
//!                                       or on their way to another sampler)
//! ```
//!
//! With `dry_run`, every decided span is forwarded: the not-sampled term
//! stays 0 and `tailgate_dry_run_spans_total{kept}` splits the forwarded
//! ones by the decision they would have had.
//!
//! Spans another sampler passes here are received here like any others, so
//! the identity holds on every node; summed over the cluster, a span that
//! moved is received twice and handed over once.
//!
//! What the exporter does with forwarded spans has its own identity, in its
//! own metrics: forwarded = `tailgate_exporter_spans_sent_total` +
//! `tailgate_exporter_spans_dropped_total{reason}` (retries exhausted, not
//! retryable, rejected, shutdown) + what it still holds.

use metrics::{Counter, Gauge, Histogram};

use crate::buffer::Due;

pub(crate) const SPANS_FORWARDED: &str = "tailgate_spans_forwarded_total";
pub(crate) const SPANS_NOT_SAMPLED: &str = "tailgate_spans_not_sampled_total";
pub(crate) const SPANS_DROPPED: &str = "tailgate_spans_dropped_total";
pub(crate) const SPANS_REFUSED: &str = "tailgate_spans_refused_total";
pub(crate) const TRACES_DECIDED: &str = "tailgate_traces_decided_total";
pub(crate) const TRACES_DECIDED_EARLY: &str = "tailgate_traces_decided_early_total";
pub(crate) const LATE_SPANS: &str = "tailgate_late_spans_total";
pub(crate) const BUFFER_TRACES: &str = "tailgate_buffer_traces";
pub(crate) const BUFFER_SPANS: &str = "tailgate_buffer_spans";
pub(crate) const BUFFER_BYTES: &str = "tailgate_buffer_bytes";
pub(crate) const BUFFER_LIMIT_TRACES: &str = "tailgate_buffer_limit_traces";
pub(crate) const BUFFER_LIMIT_BYTES: &str = "tailgate_buffer_limit_bytes";
pub(crate) const DECISION_LATENCY: &str = "tailgate_decision_latency_seconds";
pub(crate) const POLICY_RELOADS: &str = "tailgate_policy_reloads_total";
pub(crate) const POLICY_HASH: &str = "tailgate_policy_hash";
pub(crate) const SPANS_HANDED_OVER: &str = "tailgate_spans_handed_over_total";
pub(crate) const TRACES_HANDED_OVER: &str = "tailgate_traces_handed_over_total";
pub(crate) const DECISIONS_HANDED_OVER: &str = "tailgate_decisions_handed_over_total";
pub(crate) const HANDOVER_FAILED: &str = "tailgate_traces_handover_failed_total";
pub(crate) const STRAY_SPANS_KEPT: &str = "tailgate_stray_spans_kept_total";
pub(crate) const SPANS_FROM_PEERS: &str = "tailgate_spans_received_from_peers_total";
pub(crate) const DECISIONS_RECEIVED: &str = "tailgate_decisions_received_total";
pub(crate) const REDISTRIBUTIONS: &str = "tailgate_redistributions_total";
pub(crate) const SPANS_RECOVERED: &str = "tailgate_spans_recovered_total";
pub(crate) const STORAGE_BYTES: &str = "tailgate_storage_bytes";
pub(crate) const STORAGE_COMMITS: &str = "tailgate_storage_commits_total";
pub(crate) const STORAGE_ERRORS: &str = "tailgate_storage_errors_total";
pub(crate) const STORAGE_RECORDS_DROPPED: &str = "tailgate_storage_records_dropped_total";
pub(crate) const STORAGE_RECOVERY_PROGRESS: &str = "tailgate_storage_recovery_progress_ratio";
pub(crate) const STORAGE_TORN_TAILS: &str = "tailgate_storage_torn_tails_total";
pub(crate) const STORAGE_SKIPPED_BYTES: &str = "tailgate_storage_skipped_bytes_total";
pub(crate) const STORAGE_SEGMENTS_EXPIRED: &str = "tailgate_storage_segments_expired_total";
pub(crate) const LATE_WOULD_HAVE_KEPT: &str = "tailgate_late_spans_would_have_kept_total";
pub(crate) const TRACES_HELD: &str = "tailgate_traces_held_for_refused_total";
pub(crate) const HOLDS_DROPPED: &str = "tailgate_refused_holds_dropped_total";
pub(crate) const POLICY_VOTES: &str = "tailgate_policy_votes_total";
pub(crate) const POLICY_EVALUATION: &str = "tailgate_policy_evaluation_seconds";
pub(crate) const POLICY_ERRORS: &str = "tailgate_policy_evaluation_errors_total";
pub(crate) const LATE_SPAN_AGE: &str = "tailgate_late_span_age_seconds";
pub(crate) const DECISION_REASON: &str = "tailgate_traces_decision_reason_total";
pub(crate) const DRY_RUN_SPANS: &str = "tailgate_dry_run_spans_total";
pub(crate) const FLEET_SHARE: &str = "tailgate_fleet_share";
pub(crate) const FLEET_DEMAND: &str = "tailgate_fleet_demand_per_second";
pub(crate) const FLEET_EXCHANGE_AGE: &str = "tailgate_fleet_exchange_age_seconds";
pub(crate) const FLEET_PEERS_REPORTING: &str = "tailgate_fleet_peers_reporting";
pub(crate) const FLEET_PUSHES: &str = "tailgate_fleet_pushes_total";
pub(crate) const ADAPTIVE_RATE: &str = "tailgate_adaptive_sample_rate";
pub(crate) const ADAPTIVE_KEYS: &str = "tailgate_adaptive_keys";
pub(crate) const ADAPTIVE_KEY_RATE: &str = "tailgate_adaptive_key_sample_rate";

/// Why spans left this sampler for another one: the `reason` label of
/// `tailgate_spans_handed_over_total` (and, but for `stray`, of the trace
/// and decision counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOver {
    /// Spans of a trace this node neither held nor owned, forwarded to the
    /// owner.
    Stray,
    /// Traces this node held but no longer owned after a membership change.
    Rebalance,
    /// Everything held, at shutdown.
    Shutdown,
}

impl HandOver {
    const ALL: [HandOver; 3] = [HandOver::Stray, HandOver::Rebalance, HandOver::Shutdown];

    fn as_str(self) -> &'static str {
        match self {
            HandOver::Stray => "stray",
            HandOver::Rebalance => "rebalance",
            HandOver::Shutdown => "shutdown",
        }
    }
}

/// Why a request was refused: the `reason` label of
/// `tailgate_spans_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The buffer is above its high watermark (traces or bytes).
    BufferFull,
    /// The export queue to the backend is full.
    ExportBacklog,
    /// A shard's request queue is full.
    QueueFull,
    /// The node is shutting down.
    ShuttingDown,
    /// The write-ahead log is at its budget, its disk is full, or its
    /// queue is (`storage:`).
    StorageFull,
}

impl Refused {
    const ALL: [Refused; 5] = [
        Refused::BufferFull,
        Refused::ExportBacklog,
        Refused::QueueFull,
        Refused::ShuttingDown,
        Refused::StorageFull,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Refused::BufferFull => "buffer_full",
            Refused::ExportBacklog => "export_backlog",
            Refused::QueueFull => "queue_full",
            Refused::ShuttingDown => "shutting_down",
            Refused::StorageFull => "storage_full",
        }
    }
}

/// Why the sampler dropped spans: the `reason` label of
/// `tailgate_spans_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// The exporter was already shut down.
    ExporterClosed,
    /// The export queue stayed full until the shutdown deadline.
    ShutdownDeadline,
    /// The trace passed `maximum_trace_size_bytes` (the Collector's
    /// `traces_dropped_too_large`).
    TooLarge,
    /// Undecided at shutdown with `drop_pending_traces_on_shutdown`.
    PendingAtShutdown,
}

impl Dropped {
    pub(crate) const ALL: [Dropped; 4] = [
        Dropped::ExporterClosed,
        Dropped::ShutdownDeadline,
        Dropped::TooLarge,
        Dropped::PendingAtShutdown,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dropped::ExporterClosed => "exporter_closed",
            Dropped::ShutdownDeadline => "shutdown_deadline",
            Dropped::TooLarge => "too_large",
            Dropped::PendingAtShutdown => "pending_at_shutdown",
        }
    }
}

pub(crate) struct Metrics {
    pub node: String,
    pub forwarded: Counter,
    pub not_sampled: Counter,
    dropped: [Counter; Dropped::ALL.len()],
    refused: [Counter; Refused::ALL.len()],
    early: [Counter; Due::EARLY.len()],
    /// `[sampled, not_sampled]`.
    pub late: [Counter; 2],
    pub buffer_traces: Gauge,
    pub buffer_spans: Gauge,
    pub buffer_bytes: Gauge,
    /// The limits the buffer gauges are held to (`limits.max_traces`, which
    /// may follow the policy file, and `limits.max_buffer_bytes`).
    pub buffer_limit_traces: Gauge,
    pub buffer_limit_bytes: Gauge,
    pub decision_latency: Histogram,
    /// `[success, failure]`.
    pub reloads: [Counter; 2],
    pub policy_hash: Gauge,
    handed_over: [Counter; HandOver::ALL.len()],
    traces_handed_over: [Counter; HandOver::ALL.len()],
    decisions_handed_over: [Counter; HandOver::ALL.len()],
    handover_failed: [Counter; HandOver::ALL.len()],
    pub strays_kept: Counter,
    /// `[forwarded, handed_over]`.
    pub from_peers: [Counter; 2],
    pub decisions_received: Counter,
    /// `[complete, incomplete]`.
    pub redistributions: [Counter; 2],
    /// Late spans of traces decided not kept that the policies would have
    /// kept: a must-keep trace lost to lateness.
    pub late_would_have_kept: Counter,
    /// Traces whose decision was held for the retry of refused spans.
    pub traces_held: Counter,
    /// Trace IDs of refused requests not noted (the per-shard table full).
    pub holds_dropped: Counter,
    /// Spans recovered from the write-ahead log at start: received, as far
    /// as the accounting identity goes.
    pub recovered: Counter,
    pub storage_bytes: Gauge,
    pub storage_commits: Counter,
    /// `[io, disk_full]`.
    pub storage_errors: [Counter; 2],
    /// Decision or delivery records not logged (the log's queue full): the
    /// segment stays until `storage.max_age`.
    pub storage_records_dropped: Counter,
    pub storage_recovery_progress: Gauge,
    pub storage_torn_tails: Counter,
    pub storage_skipped_bytes: Counter,
    pub storage_segments_expired: Counter,
    /// With `dry_run`: spans forwarded marked as `[kept, not kept]`.
    pub dry_run: [Counter; 2],
    /// How long after its trace's decision a late span arrived.
    pub late_age: Histogram,
    reasons: [Counter; DECISION_REASONS.len()],
}

/// The `reason` label of `tailgate_traces_decision_reason_total`: why a
/// trace was decided when it was.
pub(crate) const DECISION_REASONS: [&str; 10] = [
    "timeout",
    "root",
    "span_cap",
    "byte_cap",
    "max_traces",
    "max_buffer_bytes",
    "shutdown",
    "too_large",
    "span_ingest",
    "span_ingest_timeout",
];

/// One top-level policy's counters, made once per policy file.
pub(crate) struct PolicyMetrics {
    /// `[sampled, not_sampled]`: its vote on each trace it evaluated.
    pub votes: [Counter; 2],
    pub evaluation: Histogram,
    pub errors: Counter,
}

impl Metrics {
    /// Install the recorder first ([`proto::admin::install_metrics`]).
    pub fn new(node: &str) -> Metrics {
        describe();
        let n = || node.to_owned();
        let with = |name: &'static str, key: &'static str, value: &'static str| metrics::counter!(name, "node" => n(), key => value);
        let metrics = Metrics {
            node: n(),
            forwarded: metrics::counter!(SPANS_FORWARDED, "node" => n()),
            not_sampled: metrics::counter!(SPANS_NOT_SAMPLED, "node" => n()),
            dropped: Dropped::ALL.map(|r| with(SPANS_DROPPED, "reason", r.as_str())),
            refused: Refused::ALL.map(|r| with(SPANS_REFUSED, "reason", r.as_str())),
            early: Due::EARLY.map(|d| {
                with(
                    TRACES_DECIDED_EARLY,
                    "reason",
                    d.early_reason().unwrap_or(""),
                )
            }),
            late: ["sampled", "not_sampled"].map(|d| with(LATE_SPANS, "decision", d)),
            buffer_traces: metrics::gauge!(BUFFER_TRACES, "node" => n()),
            buffer_spans: metrics::gauge!(BUFFER_SPANS, "node" => n()),
            buffer_bytes: metrics::gauge!(BUFFER_BYTES, "node" => n()),
            buffer_limit_traces: metrics::gauge!(BUFFER_LIMIT_TRACES, "node" => n()),
            buffer_limit_bytes: metrics::gauge!(BUFFER_LIMIT_BYTES, "node" => n()),
            decision_latency: metrics::histogram!(DECISION_LATENCY, "node" => n()),
            reloads: ["success", "failure"].map(|r| with(POLICY_RELOADS, "result", r)),
            policy_hash: metrics::gauge!(POLICY_HASH, "node" => n()),
            handed_over: HandOver::ALL.map(|r| with(SPANS_HANDED_OVER, "reason", r.as_str())),
            traces_handed_over: HandOver::ALL
                .map(|r| with(TRACES_HANDED_OVER, "reason", r.as_str())),
            decisions_handed_over: HandOver::ALL
                .map(|r| with(DECISIONS_HANDED_OVER, "reason", r.as_str())),
            handover_failed: HandOver::ALL.map(|r| with(HANDOVER_FAILED, "reason", r.as_str())),
            strays_kept: metrics::counter!(STRAY_SPANS_KEPT, "node" => n()),
            from_peers: ["forwarded", "handed_over"].map(|m| with(SPANS_FROM_PEERS, "mark", m)),
            decisions_received: metrics::counter!(DECISIONS_RECEIVED, "node" => n()),
            redistributions: ["complete", "incomplete"].map(|r| with(REDISTRIBUTIONS, "result", r)),
            late_would_have_kept: metrics::counter!(LATE_WOULD_HAVE_KEPT, "node" => n()),
            traces_held: metrics::counter!(TRACES_HELD, "node" => n()),
            holds_dropped: metrics::counter!(HOLDS_DROPPED, "node" => n()),
            recovered: metrics::counter!(SPANS_RECOVERED, "node" => n()),
            storage_bytes: metrics::gauge!(STORAGE_BYTES, "node" => n()),
            storage_commits: metrics::counter!(STORAGE_COMMITS, "node" => n()),
            storage_errors: ["io", "disk_full"].map(|k| with(STORAGE_ERRORS, "kind", k)),
            storage_records_dropped: metrics::counter!(STORAGE_RECORDS_DROPPED, "node" => n()),
            storage_recovery_progress: metrics::gauge!(STORAGE_RECOVERY_PROGRESS, "node" => n()),
            storage_torn_tails: metrics::counter!(STORAGE_TORN_TAILS, "node" => n()),
            storage_skipped_bytes: metrics::counter!(STORAGE_SKIPPED_BYTES, "node" => n()),
            storage_segments_expired: metrics::counter!(STORAGE_SEGMENTS_EXPIRED, "node" => n()),
            dry_run: ["true", "false"].map(|k| with(DRY_RUN_SPANS, "kept", k)),
            late_age: metrics::histogram!(LATE_SPAN_AGE, "node" => n()),
            reasons: DECISION_REASONS.map(|r| with(DECISION_REASON, "reason", r)),
        };
        // Standalone, the exchange's gauges still exist (no peers, age 0),
        // so the rules and dashboard that read them have a series.
        metrics.fleet_exchange(std::time::Duration::ZERO, 0);
        metrics
    }

    /// Counts a trace decided for `reason` (one of [`DECISION_REASONS`]).
    pub fn decision_reason(&self, reason: &str) -> Option<&Counter> {
        DECISION_REASONS
            .iter()
            .position(|r| *r == reason)
            .map(|i| &self.reasons[i])
    }

    /// A budgeted policy's share of the fleet's budget and its demand here.
    pub fn fleet(&self, policy: &str, share: f64, demand_per_second: f64) {
        let n = self.node.clone();
        metrics::gauge!(FLEET_SHARE, "node" => n.clone(), "policy" => policy.to_owned()).set(share);
        metrics::gauge!(FLEET_DEMAND, "node" => n, "policy" => policy.to_owned())
            .set(demand_per_second);
    }

    /// The age of the stalest report among the other members, and how many
    /// reported within three intervals.
    pub fn fleet_exchange(&self, oldest: std::time::Duration, reporting: usize) {
        metrics::gauge!(FLEET_EXCHANGE_AGE, "node" => self.node.clone()).set(oldest.as_secs_f64());
        metrics::gauge!(FLEET_PEERS_REPORTING, "node" => self.node.clone()).set(reporting as f64);
    }

    /// One counts push: `ok`, `failed` or `skipped` (the last still in flight).
    pub fn fleet_push(&self, result: &'static str) {
        metrics::counter!(FLEET_PUSHES, "node" => self.node.clone(), "result" => result)
            .increment(1);
    }

    /// An adaptive policy's rates: overall, and for its top keys; `gone`
    /// are keys published before that are no longer among the top (set to
    /// 0, so that the series read as "not a top key now").
    pub fn adaptive(&self, policy: &str, stats: &policy::EstimatorStats, gone: &[String]) {
        let n = || self.node.clone();
        metrics::gauge!(ADAPTIVE_RATE, "node" => n(), "policy" => policy.to_owned())
            .set(stats.mean_rate);
        metrics::gauge!(ADAPTIVE_KEYS, "node" => n(), "policy" => policy.to_owned())
            .set(stats.keys as f64);
        for (key, rate, _) in &stats.top {
            metrics::gauge!(ADAPTIVE_KEY_RATE, "node" => n(), "policy" => policy.to_owned(), "key" => key.clone())
                .set(*rate as f64);
        }
        for key in gone {
            metrics::gauge!(ADAPTIVE_KEY_RATE, "node" => n(), "policy" => policy.to_owned(), "key" => key.clone())
                .set(0.0);
        }
    }

    /// The counters of one top-level policy.
    pub fn policy(&self, policy: &str) -> PolicyMetrics {
        let label = || policy.to_owned();
        PolicyMetrics {
            votes: ["sampled", "not_sampled"].map(|v| {
                metrics::counter!(
                    POLICY_VOTES,
                    "node" => self.node.clone(),
                    "policy" => label(),
                    "vote" => v
                )
            }),
            evaluation: metrics::histogram!(
                POLICY_EVALUATION,
                "node" => self.node.clone(),
                "policy" => label()
            ),
            errors: metrics::counter!(
                POLICY_ERRORS,
                "node" => self.node.clone(),
                "policy" => label()
            ),
        }
    }

    /// Spans passed to another sampler: the identity's `handed_over` term.
    pub fn handed_over(&self, reason: HandOver) -> &Counter {
        &self.handed_over[reason as usize]
    }

    pub fn traces_handed_over(&self, reason: HandOver) -> &Counter {
        &self.traces_handed_over[reason as usize]
    }

    pub fn decisions_handed_over(&self, reason: HandOver) -> &Counter {
        &self.decisions_handed_over[reason as usize]
    }

    pub fn handover_failed(&self, reason: HandOver) -> &Counter {
        &self.handover_failed[reason as usize]
    }

    pub fn dropped(&self, reason: Dropped) -> &Counter {
        &self.dropped[reason as usize]
    }

    pub fn refused(&self, reason: Refused) -> &Counter {
        &self.refused[reason as usize]
    }

    pub fn decided_early(&self, due: Due) -> Option<&Counter> {
        Due::EARLY
            .iter()
            .position(|d| *d == due)
            .map(|i| &self.early[i])
    }

    /// The counters for one policy's decisions: `[sampled, not_sampled]`.
    pub fn decided(&self, policy: &str) -> [Counter; 2] {
        ["sampled", "not_sampled"].map(|d| {
            metrics::counter!(
                TRACES_DECIDED,
                "node" => self.node.clone(),
                "decision" => d,
                "policy" => policy.to_owned()
            )
        })
    }
}

fn describe() {
    metrics::describe_counter!(
        POLICY_VOTES,
        metrics::Unit::Count,
        "Each top-level policy's vote on each trace it evaluated (vote=sampled|not_sampled), not only the deciding policy's."
    );
    metrics::describe_histogram!(
        POLICY_EVALUATION,
        metrics::Unit::Seconds,
        "Time one top-level policy took on one trace, measured on one trace in 64."
    );
    metrics::describe_counter!(
        POLICY_ERRORS,
        metrics::Unit::Count,
        "Evaluations of a policy that failed (an OTTL condition in error); the policy then votes as its error_mode says."
    );
    metrics::describe_histogram!(
        LATE_SPAN_AGE,
        metrics::Unit::Seconds,
        "How long after its trace was decided a late span arrived."
    );
    metrics::describe_counter!(
        DECISION_REASON,
        metrics::Unit::Count,
        "Traces decided (or dropped) here, by what made them due: timeout (decision_wait), root (decision_wait_after_root_received), span_cap, byte_cap, max_traces, max_buffer_bytes, shutdown, too_large (maximum_trace_size_bytes), span_ingest (kept or dropped on arrival), span_ingest_timeout (undecided at its wait: not sampled)."
    );
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        FLEET_SHARE,
        "This sampler's share of a budgeted policy's fleet-wide budget (1 standalone)."
    );
    describe_gauge!(
        FLEET_DEMAND,
        "What a budgeted policy was asked for here, per second, over the last exchange interval (spans, or bytes for bytes_limiting)."
    );
    describe_gauge!(
        FLEET_EXCHANGE_AGE,
        Unit::Seconds,
        "Age of the stalest demand report among the other members of the ring."
    );
    describe_gauge!(
        FLEET_PEERS_REPORTING,
        Unit::Count,
        "Other members whose demand report is recent (within three exchange intervals)."
    );
    describe_counter!(
        FLEET_PUSHES,
        Unit::Count,
        "Demand-count pushes to other samplers, by result (ok, failed, skipped: the previous one still in flight)."
    );
    describe_gauge!(
        ADAPTIVE_RATE,
        "An adaptive policy's current sample rate over all its keys (counted spans per kept span)."
    );
    describe_gauge!(
        ADAPTIVE_KEYS,
        Unit::Count,
        "Keys with a sample rate in an adaptive policy."
    );
    describe_gauge!(
        ADAPTIVE_KEY_RATE,
        "The sample rate of an adaptive policy's busiest keys (top 10; 0 once a key is no longer among them)."
    );
    describe_counter!(
        SPANS_FORWARDED,
        Unit::Count,
        "Spans of kept traces (and late spans of them) handed to the backend exporter."
    );
    describe_counter!(
        SPANS_NOT_SAMPLED,
        Unit::Count,
        "Spans of traces decided not kept, late spans of them included."
    );
    describe_counter!(
        SPANS_DROPPED,
        Unit::Count,
        "Spans of kept traces the sampler could not hand to the exporter, by reason."
    );
    describe_counter!(
        SPANS_REFUSED,
        Unit::Count,
        "Spans in requests refused with a retryable status (not received), by reason."
    );
    describe_counter!(
        DRY_RUN_SPANS,
        Unit::Count,
        "With dry_run: spans forwarded, by the decision they are marked with (kept true or false)."
    );
    describe_counter!(
        TRACES_DECIDED,
        Unit::Count,
        "Traces decided, by decision and deciding policy (`none` when no policy kept it)."
    );
    describe_counter!(
        TRACES_DECIDED_EARLY,
        Unit::Count,
        "Traces decided before their wait was over, by reason."
    );
    describe_counter!(
        LATE_SPANS,
        Unit::Count,
        "Spans that arrived after their trace was decided, by that decision."
    );
    describe_gauge!(BUFFER_TRACES, Unit::Count, "Traces buffered.");
    describe_gauge!(
        BUFFER_SPANS,
        Unit::Count,
        "Spans buffered, or decided and waiting for room in the export queue."
    );
    describe_gauge!(
        BUFFER_BYTES,
        Unit::Bytes,
        "Memory held by the trace buffer: span bytes as stored, plus bookkeeping."
    );
    describe_gauge!(
        BUFFER_LIMIT_TRACES,
        Unit::Count,
        "limits.max_traces in force: past it the oldest traces are decided early."
    );
    describe_gauge!(
        BUFFER_LIMIT_BYTES,
        Unit::Bytes,
        "limits.max_buffer_bytes: past it the oldest traces are decided early."
    );
    describe_histogram!(
        DECISION_LATENCY,
        Unit::Seconds,
        "Time from a trace's first span to its decision."
    );
    describe_counter!(
        POLICY_RELOADS,
        Unit::Count,
        "Policy file reloads, by result (a failed one keeps the active policies)."
    );
    describe_counter!(
        SPANS_HANDED_OVER,
        Unit::Count,
        "Spans passed to another sampler, by reason: stray (forwarded to the owner), rebalance (a membership change), shutdown."
    );
    describe_counter!(
        TRACES_HANDED_OVER,
        Unit::Count,
        "Whole traces handed to their new owner, by reason (rebalance, shutdown)."
    );
    describe_counter!(
        DECISIONS_HANDED_OVER,
        Unit::Count,
        "Decisions pushed to the new owner of their trace, by reason (rebalance, shutdown)."
    );
    describe_counter!(
        HANDOVER_FAILED,
        Unit::Count,
        "Traces that could not be handed over (owner unreachable, deadline): kept here and tried again (rebalance), or decided here (shutdown)."
    );
    describe_counter!(
        STRAY_SPANS_KEPT,
        Unit::Count,
        "Spans of traces owned by another sampler kept here because the owner could not be reached."
    );
    describe_counter!(
        SPANS_FROM_PEERS,
        Unit::Count,
        "Spans received from other samplers (also in tailgate_spans_received_total), by mark: forwarded, handed_over."
    );
    describe_counter!(
        DECISIONS_RECEIVED,
        Unit::Count,
        "Decisions received from other samplers for traces that moved here."
    );
    describe_counter!(
        REDISTRIBUTIONS,
        Unit::Count,
        "Redistributions after a membership change, by result: complete, or incomplete (an owner was unreachable; tried again)."
    );
    describe_counter!(
        SPANS_RECOVERED,
        Unit::Count,
        "Spans recovered from the write-ahead log at start (storage:); on the received side of the accounting identity."
    );
    describe_gauge!(
        STORAGE_BYTES,
        Unit::Bytes,
        "Bytes of the write-ahead log on disk, and waiting for a commit."
    );
    describe_counter!(
        STORAGE_COMMITS,
        Unit::Count,
        "Group commits of the write-ahead log (one write and one sync each)."
    );
    describe_counter!(
        STORAGE_ERRORS,
        Unit::Count,
        "Failed commits of the write-ahead log, by kind (io, disk_full); the records stay in memory and the receivers push back."
    );
    describe_counter!(
        STORAGE_RECORDS_DROPPED,
        Unit::Count,
        "Decision or delivery records not logged (the log's queue was full): their segment stays until storage.max_age."
    );
    describe_gauge!(
        STORAGE_RECOVERY_PROGRESS,
        "How far the recovery of the write-ahead log is, 0 to 1 (1 once done, or with no log)."
    );
    describe_counter!(
        STORAGE_TORN_TAILS,
        Unit::Count,
        "Segments whose tail was cut short or corrupt at recovery: the rest of the segment was skipped."
    );
    describe_counter!(
        STORAGE_SKIPPED_BYTES,
        Unit::Bytes,
        "Bytes skipped at recovery after a torn or corrupt record."
    );
    describe_counter!(
        STORAGE_SEGMENTS_EXPIRED,
        Unit::Count,
        "Segments deleted past storage.max_age with traces never settled here."
    );
    describe_counter!(
        LATE_WOULD_HAVE_KEPT,
        Unit::Count,
        "Late spans of traces decided not kept that the policies keep on their own (an error span, a slow span): kept traces lost to lateness."
    );
    describe_counter!(
        TRACES_HELD,
        Unit::Count,
        "Traces whose decision was postponed because a request carrying spans of theirs was refused (backpressure), so the retry can join them."
    );
    describe_counter!(
        HOLDS_DROPPED,
        Unit::Count,
        "Trace IDs of refused requests that could not be noted for a hold (the table was full): those traces are decided on time."
    );
    describe_gauge!(
        POLICY_HASH,
        "The active policy file's hash: the top 48 bits of its xxh3-64, exact as a float."
    );
}
