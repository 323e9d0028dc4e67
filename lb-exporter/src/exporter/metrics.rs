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
        describe();
        let node_label = || ("node", node.to_owned());
        Metrics {
            node: node.to_owned(),
            received: metrics::counter!(RECEIVED, &[node_label()]),
            rerouted: RerouteReason::ALL.map(|r| {
                metrics::counter!(REROUTED, &[node_label(), ("reason", r.as_str().to_owned())])
            }),
            dropped: DropReason::ALL.map(|r| {
                metrics::counter!(DROPPED, &[node_label(), ("reason", r.as_str().to_owned())])
            }),
            ring_changes: metrics::counter!(RING_CHANGES, &[node_label()]),
            ring_members: metrics::gauge!(RING_MEMBERS, &[node_label()]),
            members_down: metrics::gauge!(MEMBERS_DOWN, &[node_label()]),
            export_duration: metrics::histogram!(EXPORT_DURATION, &[node_label()]),
            queue_waits: QueueWait::ALL.map(|w| {
                metrics::counter!(
                    QUEUE_WAITS,
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
        let labels = [("node", node.to_owned()), ("member", member.to_owned())];
        MemberMetrics {
            forwarded: metrics::counter!(FORWARDED, &labels),
            queue_bytes: metrics::gauge!(QUEUE_BYTES, &labels),
            queue_spans: metrics::gauge!(QUEUE_SPANS, &labels),
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        RECEIVED,
        metrics::Unit::Count,
        "Spans the load-balancing exporter took (refused requests are not counted)."
    );
    metrics::describe_counter!(
        FORWARDED,
        metrics::Unit::Count,
        "Spans a member accepted, by member."
    );
    metrics::describe_counter!(
        REROUTED,
        metrics::Unit::Count,
        "Spans moved to another member, by reason (member_down, member_left, in_flight)."
    );
    metrics::describe_counter!(DROPPED, metrics::Unit::Count, "Spans given up, by reason.");
    metrics::describe_counter!(
        RING_CHANGES,
        metrics::Unit::Count,
        "Times the ring was rebuilt for a new member set."
    );
    metrics::describe_gauge!(RING_MEMBERS, "Members on the ring.");
    metrics::describe_gauge!(
        MEMBERS_DOWN,
        "Members on the ring marked down (their traffic goes to the next member)."
    );
    metrics::describe_gauge!(
        QUEUE_BYTES,
        metrics::Unit::Bytes,
        "Encoded bytes held per member: queued, batching, in flight or waiting to retry."
    );
    metrics::describe_gauge!(
        QUEUE_SPANS,
        metrics::Unit::Count,
        "Spans held per member: queued, batching, in flight or waiting to retry."
    );
    metrics::describe_counter!(
        QUEUE_WAITS,
        metrics::Unit::Count,
        "Requests that found a member's queue full and waited for room, by outcome (admitted, refused)."
    );
    metrics::describe_histogram!(
        EXPORT_DURATION,
        metrics::Unit::Seconds,
        "Duration of one export call to a member."
    );
}
