//! The exporter's metric handles, created once per exporter and once per
//! member, never per request.
//!
//! Every span the exporter takes ends in exactly one of: forwarded, dropped
//! (by reason), or still held; re-routes are counted on the side (a re-routed
//! span is then forwarded or dropped like any other):
//!
//! `tailgate_lb_spans_received_total` = `tailgate_lb_spans_forwarded_total`
//! + `tailgate_lb_spans_dropped_total` + `tailgate_lb_queue_spans`.

use metrics::{Counter, Gauge, Histogram};
use proto::receiver::Signal;

/// The metric names of one exporter: the span names below, or their logs
/// twins for the logs exporter (`tailgate_lb_log_records_*` counting log
/// records, `tailgate_lb_logs_*` for its ring and queues), so that neither
/// signal's figures mix into the other's.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub received: &'static str,
    pub forwarded: &'static str,
    pub rerouted: &'static str,
    pub dropped: &'static str,
    pub ring_changes: &'static str,
    pub ring_members: &'static str,
    pub members_down: &'static str,
    pub queue_bytes: &'static str,
    pub queue_spans: &'static str,
    pub export_duration: &'static str,
    pub queue_waits: &'static str,
}

pub const SPAN_NAMES: Names = Names {
    received: RECEIVED,
    forwarded: FORWARDED,
    rerouted: REROUTED,
    dropped: DROPPED,
    ring_changes: RING_CHANGES,
    ring_members: RING_MEMBERS,
    members_down: MEMBERS_DOWN,
    queue_bytes: QUEUE_BYTES,
    queue_spans: QUEUE_SPANS,
    export_duration: EXPORT_DURATION,
    queue_waits: QUEUE_WAITS,
};

pub const LOG_NAMES: Names = Names {
    received: "tailgate_lb_log_records_received_total",
    forwarded: "tailgate_lb_log_records_forwarded_total",
    rerouted: "tailgate_lb_log_records_rerouted_total",
    dropped: "tailgate_lb_log_records_dropped_total",
    ring_changes: "tailgate_lb_logs_ring_changes_total",
    ring_members: "tailgate_lb_logs_ring_members",
    members_down: "tailgate_lb_logs_members_down",
    queue_bytes: "tailgate_lb_logs_queue_bytes",
    queue_spans: "tailgate_lb_logs_queue_records",
    export_duration: "tailgate_lb_logs_export_duration_seconds",
    queue_waits: "tailgate_lb_logs_queue_waits_total",
};

impl Names {
    pub fn of(signal: Signal) -> &'static Names {
        match signal {
            Signal::Traces => &SPAN_NAMES,
            Signal::Logs => &LOG_NAMES,
        }
    }
}

pub const RECEIVED: &str = "tailgate_lb_spans_received_total";
pub const FORWARDED: &str = "tailgate_lb_spans_forwarded_total";
pub const REROUTED: &str = "tailgate_lb_spans_rerouted_total";
pub const DROPPED: &str = "tailgate_lb_spans_dropped_total";
pub const RING_CHANGES: &str = "tailgate_lb_ring_changes_total";
pub const RING_MEMBERS: &str = "tailgate_lb_ring_members";
pub const MEMBERS_DOWN: &str = "tailgate_lb_members_down";
pub const QUEUE_BYTES: &str = "tailgate_lb_queue_bytes";
pub const QUEUE_SPANS: &str = "tailgate_lb_queue_spans";
pub const EXPORT_DURATION: &str = "tailgate_lb_export_duration_seconds";
pub const QUEUE_WAITS: &str = "tailgate_lb_queue_waits_total";

/// How a request that found a member's queue full ended its wait for room:
/// the `outcome` label of `tailgate_lb_queue_waits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueWait {
    /// Room freed within `queue_wait`: the request was taken.
    Admitted,
    /// No room within `queue_wait`: refused, with how soon to come back.
    Refused,
}

impl QueueWait {
    pub const ALL: [QueueWait; 2] = [QueueWait::Admitted, QueueWait::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueWait::Admitted => "admitted",
            QueueWait::Refused => "refused",
        }
    }
}

/// Why spans went to a member other than the one they were queued for: the
/// `reason` label of `tailgate_lb_spans_rerouted_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerouteReason {
    /// Queued (or refused at connect) for a member that was then marked
    /// down: never delivered.
    MemberDown,
    /// Queued for a member that left the member set.
    MemberLeft,
    /// In flight to a member that then failed (timeout, reset, UNAVAILABLE):
    /// it may have received them, so the new owner may see them twice.
    InFlight,
}

impl RerouteReason {
    pub const ALL: [RerouteReason; 3] = [
        RerouteReason::MemberDown,
        RerouteReason::MemberLeft,
        RerouteReason::InFlight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RerouteReason::MemberDown => "member_down",
            RerouteReason::MemberLeft => "member_left",
            RerouteReason::InFlight => "in_flight",
        }
    }
}

/// Why spans were given up: the `reason` label of
/// `tailgate_lb_spans_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The member answered a status the OTLP spec says not to retry.
    NotRetryable,
    /// Retryable answers (not "member down") until `max_elapsed_time`.
    RetriesExhausted,
    /// The member accepted the request but rejected these spans
    /// (`partial_success`).
    Rejected,
    /// Still held when the shutdown deadline passed.
    Shutdown,
    /// No member left to send them to (the set became empty).
    NoMembers,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::NotRetryable,
        DropReason::RetriesExhausted,
        DropReason::Rejected,
        DropReason::Shutdown,
        DropReason::NoMembers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotRetryable => "not_retryable",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Rejected => "rejected",
            DropReason::Shutdown => "shutdown",
            DropReason::NoMembers => "no_members",
        }
    }
}

/// Exporter-wide handles.
pub struct Metrics {
    pub node: String,
    pub received: Counter,
    rerouted: [Counter; RerouteReason::ALL.len()],
    dropped: [Counter; DropReason::ALL.len()],
    pub ring_changes: Counter,
    pub ring_members: Gauge,
    pub members_down: Gauge,
    pub export_duration: Histogram,
    queue_waits: [Counter; QueueWait::ALL.len()],
}

impl Metrics {
    pub fn new(node: &str) -> Self {
        Self::for_signal(node, Signal::Traces)
    }

    /// The handles of the exporter of `signal` (see [`Names`]).
    pub fn for_signal(node: &str, signal: Signal) -> Self {
        let names = Names::of(signal);
        describe(names);
        let node_label = || ("node", node.to_owned());
        Metrics {
            node: node.to_owned(),
            received: metrics::counter!(names.received, &[node_label()]),
            rerouted: RerouteReason::ALL.map(|r| {
                metrics::counter!(
                    names.rerouted,
                    &[node_label(), ("reason", r.as_str().to_owned())]
                )
            }),
            dropped: DropReason::ALL.map(|r| {
                metrics::counter!(
                    names.dropped,
                    &[node_label(), ("reason", r.as_str().to_owned())]
                )
            }),
            ring_changes: metrics::counter!(names.ring_changes, &[node_label()]),
            ring_members: metrics::gauge!(names.ring_members, &[node_label()]),
            members_down: metrics::gauge!(names.members_down, &[node_label()]),
            export_duration: metrics::histogram!(names.export_duration, &[node_label()]),
            queue_waits: QueueWait::ALL.map(|w| {
                metrics::counter!(
                    names.queue_waits,
                    &[node_label(), ("outcome", w.as_str().to_owned())]
                )
            }),
        }
    }

    pub fn rerouted(&self, reason: RerouteReason) -> &Counter {
        // ALL lists the variants in declaration order.
        &self.rerouted[reason as usize]
    }

    pub fn dropped(&self, reason: DropReason) -> &Counter {
        &self.dropped[reason as usize]
    }

    pub fn queue_wait(&self, outcome: QueueWait) -> &Counter {
        &self.queue_waits[outcome as usize]
    }
}

/// Per-member handles, created when the member joins.
pub struct MemberMetrics {
    pub forwarded: Counter,
    pub queue_bytes: Gauge,
    pub queue_spans: Gauge,
}

impl MemberMetrics {
    pub fn new(node: &str, member: &str) -> Self {
        Self::for_signal(node, member, Signal::Traces)
    }

    pub fn for_signal(node: &str, member: &str, signal: Signal) -> Self {
        let names = Names::of(signal);
        let labels = [("node", node.to_owned()), ("member", member.to_owned())];
        MemberMetrics {
            forwarded: metrics::counter!(names.forwarded, &labels),
            queue_bytes: metrics::gauge!(names.queue_bytes, &labels),
            queue_spans: metrics::gauge!(names.queue_spans, &labels),
        }
    }
}

fn describe(names: &Names) {
    // The logs twins count log records where these say spans.
    metrics::describe_counter!(
        names.received,
        metrics::Unit::Count,
        "Spans the load-balancing exporter took (refused requests are not counted)."
    );
    metrics::describe_counter!(
        names.forwarded,
        metrics::Unit::Count,
        "Spans a member accepted, by member."
    );
    metrics::describe_counter!(
        names.rerouted,
        metrics::Unit::Count,
        "Spans moved to another member, by reason (member_down, member_left, in_flight)."
    );
    metrics::describe_counter!(
        names.dropped,
        metrics::Unit::Count,
        "Spans given up, by reason."
    );
    metrics::describe_counter!(
        names.ring_changes,
        metrics::Unit::Count,
        "Times the ring was rebuilt for a new member set."
    );
    metrics::describe_gauge!(names.ring_members, "Members on the ring.");
    metrics::describe_gauge!(
        names.members_down,
        "Members on the ring marked down (their traffic goes to the next member)."
    );
    metrics::describe_gauge!(
        names.queue_bytes,
        metrics::Unit::Bytes,
        "Encoded bytes held per member: queued, batching, in flight or waiting to retry."
    );
    metrics::describe_gauge!(
        names.queue_spans,
        metrics::Unit::Count,
        "Spans held per member: queued, batching, in flight or waiting to retry."
    );
    metrics::describe_counter!(
        names.queue_waits,
        metrics::Unit::Count,
        "Requests that found a member's queue full and waited for room, by outcome (admitted, refused)."
    );
    metrics::describe_histogram!(
        names.export_duration,
        metrics::Unit::Seconds,
        "Duration of one export call to a member."
    );
}
