//! Log records in the sampler: held with their trace until its decision,
//! then forwarded with it or dropped with it.
//!
//! The receiver's logs request is split by trace ID on the wire
//! ([`proto::logs::split`]); each trace's part (its records, with their
//! resource and scope headers: a complete `ExportLogsServiceRequest`) is
//! copied, so that holding it does not pin the request, and goes to the
//! shard of its trace. There, beside the trace buffer (the spans' layout
//! is not touched), [`HeldLogs`] keeps the parts of each trace:
//!
//! - a trace with a remembered decision: its records follow it at once,
//!   like late spans (forwarded if kept, counted not sampled if not);
//! - otherwise they are held until the trace is decided, and leave with
//!   it; logs never vote;
//! - records whose trace has no spans here by `decision_wait` after they
//!   came (and no decision) have no trace to follow: they are forwarded
//!   rather than lost (counted `tailgate_log_records_orphaned_total`, and
//!   forwarded). When the ring moves a trace's ownership away (a rescale,
//!   this node leaving), its held records go to the new owner, with its
//!   spans or without them (the mover's take).
//!
//! Records without a trace ID never reach a shard: the node forwards them
//! at once. Held records count in the buffer's bytes (`tailgate_buffer_bytes`),
//! so the memory limit and its backpressure cover them.
//!
//! Accounting, per node, exact once quiet:
//!
//! ```text
//! tailgate_log_records_received_total (the receiver's, summed over protocol)
//!   = tailgate_log_records_forwarded_total
//!   + tailgate_log_records_not_sampled_total
//!   + tailgate_log_records_dropped_total   by reason
//!   + tailgate_log_records_handed_over_total  sent with their traces to another sampler
//!   + tailgate_log_records_buffered        held, or written and not handed over yet
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bytes::Bytes;
use hashbrown::HashMap;
use metrics::{Counter, Gauge};
use proto::exporter::Exporter;
use proto::view::TraceId;

use crate::metrics::Dropped;

pub(crate) const FORWARDED: &str = "tailgate_log_records_forwarded_total";
pub(crate) const NOT_SAMPLED: &str = "tailgate_log_records_not_sampled_total";
pub(crate) const DROPPED: &str = "tailgate_log_records_dropped_total";
pub(crate) const ORPHANED: &str = "tailgate_log_records_orphaned_total";
pub(crate) const BUFFERED: &str = "tailgate_log_records_buffered";
pub(crate) const HANDED_OVER: &str = "tailgate_log_records_handed_over_total";
pub(crate) const DRY_RUN: &str = "tailgate_log_records_dry_run_total";

/// What the node and its shards share for logs: the logs exporter and the
/// log metrics.
pub(crate) struct LogsPath {
    pub exporter: Exporter,
    pub metrics: LogMetrics,
}

pub(crate) struct LogMetrics {
    pub forwarded: Counter,
    pub not_sampled: Counter,
    pub orphaned: Counter,
    pub handed_over: Counter,
    pub buffered: Gauge,
    /// With `dry_run`: records forwarded that followed a decision, as
    /// `[kept, not kept]` (what would have been kept or dropped).
    pub dry_run: [Counter; 2],
    /// By reason, in `Dropped::ALL` order; created at start so that the
    /// series exist (and alerts can see them) before the first drop.
    dropped: [Counter; Dropped::ALL.len()],
}

impl LogMetrics {
    pub fn new(node: &str) -> LogMetrics {
        metrics::describe_counter!(
            FORWARDED,
            metrics::Unit::Count,
            "Log records handed to the logs exporter: of kept traces, without a trace ID, or orphaned."
        );
        metrics::describe_counter!(
            NOT_SAMPLED,
            metrics::Unit::Count,
            "Log records of traces decided not kept."
        );
        metrics::describe_counter!(
            DROPPED,
            metrics::Unit::Count,
            "Log records dropped by the sampler, by reason."
        );
        metrics::describe_counter!(
            ORPHANED,
            metrics::Unit::Count,
            "Log records whose trace had no spans here by decision_wait (forwarded)."
        );
        metrics::describe_counter!(
            HANDED_OVER,
            metrics::Unit::Count,
            "Log records sent with their traces to another sampler (hand-over, redistribution)."
        );
        metrics::describe_gauge!(
            BUFFERED,
            metrics::Unit::Count,
            "Log records held with their traces, or written and not yet handed to the exporter."
        );
        metrics::describe_counter!(
            DRY_RUN,
            metrics::Unit::Count,
            "With dry_run: log records forwarded, by the decision of their trace (kept true or false)."
        );
        let n = || node.to_owned();
        LogMetrics {
            forwarded: metrics::counter!(FORWARDED, "node" => n()),
            not_sampled: metrics::counter!(NOT_SAMPLED, "node" => n()),
            orphaned: metrics::counter!(ORPHANED, "node" => n()),
            handed_over: metrics::counter!(HANDED_OVER, "node" => n()),
            buffered: metrics::gauge!(BUFFERED, "node" => n()),
            dry_run: ["true", "false"]
                .map(|k| metrics::counter!(DRY_RUN, "node" => n(), "kept" => k)),
            dropped: Dropped::ALL
                .map(|r| metrics::counter!(DROPPED, "node" => n(), "reason" => r.as_str())),
        }
    }

    /// The drop counter for `reason` (the spans' reasons).
    pub fn dropped(&self, reason: Dropped) -> &Counter {
        // ALL lists the variants in declaration order.
        &self.dropped[reason as usize]
    }
}

/// One trace's held records.
#[derive(Debug)]
struct Held {
    /// Complete encoded `ExportLogsServiceRequest`s: concatenated, they are
    /// one request.
    parts: Vec<Bytes>,
    records: usize,
    bytes: usize,
    /// When the records stop waiting for spans of their trace.
    deadline: Duration,
}

/// The held log records of one shard, by trace. Time is passed in.
#[derive(Debug, Default)]
pub(crate) struct HeldLogs {
    traces: HashMap<TraceId, Held>,
    /// Deadlines, earliest first; an entry whose trace left or whose
    /// deadline moved is skipped when popped.
    deadlines: BinaryHeap<Reverse<(Duration, TraceId)>>,
    records: usize,
    bytes: usize,
}

/// Records taken out: one trace's parts and how many records they hold.
#[derive(Debug)]
pub(crate) struct TakenLogs {
    pub id: TraceId,
    pub parts: Vec<Bytes>,
    pub records: usize,
}

/// Per-record bookkeeping charged besides the bytes (the part's `Bytes`
/// handle and the map slot share of a trace), for the memory limit.
const PART_OVERHEAD: usize = std::mem::size_of::<Bytes>();

impl HeldLogs {
    /// Holds `part` (`records` records of trace `id`) until `deadline` or
    /// until the trace is decided. A trace already held keeps its deadline.
    pub fn hold(&mut self, id: TraceId, part: Bytes, records: usize, deadline: Duration) {
        let bytes = part.len() + PART_OVERHEAD;
        self.records += records;
        self.bytes += bytes;
        match self.traces.get_mut(&id) {
            Some(held) => {
                held.parts.push(part);
                held.records += records;
                held.bytes += bytes;
            }
            None => {
                self.traces.insert(
                    id,
                    Held {
                        parts: vec![part],
                        records,
                        bytes,
                        deadline,
                    },
                );
                self.deadlines.push(Reverse((deadline, id)));
            }
        }
    }

    /// Holds records taken out again, until `deadline`.
    pub fn hold_again(&mut self, taken: TakenLogs, deadline: Duration) {
        let mut records = taken.records;
        for part in taken.parts {
            // The count goes with the first part, as when they came.
            self.hold(taken.id, part, std::mem::take(&mut records), deadline);
        }
    }

    /// Takes the records of `id`, if any are held.
    pub fn take(&mut self, id: &TraceId) -> Option<TakenLogs> {
        let held = self.traces.remove(id)?;
        self.records -= held.records;
        self.bytes -= held.bytes;
        Some(TakenLogs {
            id: *id,
            parts: held.parts,
            records: held.records,
        })
    }

    /// The traces whose records' deadline has passed, taken out.
    pub fn expire(&mut self, now: Duration) -> Vec<TakenLogs> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if self.traces.get(&id).is_some_and(|h| h.deadline == deadline)
                && let Some(taken) = self.take(&id)
            {
                out.push(taken);
            }
        }
        out
    }

    /// The records of every held trace that `pred` picks, taken out.
    pub fn take_where(&mut self, mut pred: impl FnMut(&TraceId) -> bool) -> Vec<TakenLogs> {
        let ids: Vec<TraceId> = self.traces.keys().filter(|id| pred(id)).copied().collect();
        ids.iter().filter_map(|id| self.take(id)).collect()
    }

    /// Every held trace's records, taken out (shutdown).
    pub fn drain(&mut self) -> Vec<TakenLogs> {
        self.deadlines.clear();
        let ids: Vec<TraceId> = self.traces.keys().copied().collect();
        ids.iter().filter_map(|id| self.take(id)).collect()
    }

    /// The earliest deadline still pending.
    pub fn next_deadline(&mut self) -> Option<Duration> {
        // Drop stale entries so the shard does not wake for nothing.
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if self.traces.get(&id).is_some_and(|h| h.deadline == deadline) {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Whether records of `id` are held.
    pub fn holds(&self, id: &TraceId) -> bool {
        self.traces.contains_key(id)
    }

    pub fn records(&self) -> usize {
        self.records
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        TraceId([n; 16])
    }

    #[test]
    fn records_are_held_by_trace_and_taken_whole() {
        let mut held = HeldLogs::default();
        held.hold(id(1), Bytes::from_static(b"aa"), 2, Duration::from_secs(5));
        held.hold(id(1), Bytes::from_static(b"bbb"), 1, Duration::from_secs(9));
        held.hold(id(2), Bytes::from_static(b"c"), 1, Duration::from_secs(6));
        assert_eq!(held.records(), 4);
        assert_eq!(held.bytes(), 6 + 3 * PART_OVERHEAD);
        let one = held.take(&id(1)).expect("held");
        assert_eq!((one.records, one.parts.len()), (3, 2));
        assert_eq!(held.records(), 1);
        assert!(held.take(&id(1)).is_none());
    }

    #[test]
    fn records_expire_at_their_first_deadline_unless_taken() {
        let mut held = HeldLogs::default();
        held.hold(id(1), Bytes::from_static(b"a"), 1, Duration::from_secs(5));
        held.hold(id(2), Bytes::from_static(b"b"), 1, Duration::from_secs(6));
        held.hold(id(3), Bytes::from_static(b"c"), 1, Duration::from_secs(7));
        held.take(&id(2));
        assert_eq!(held.next_deadline(), Some(Duration::from_secs(5)));
        assert!(held.expire(Duration::from_secs(4)).is_empty());
        let due = held.expire(Duration::from_secs(6));
        assert_eq!(due.iter().map(|t| t.id).collect::<Vec<_>>(), vec![id(1)]);
        // The taken trace's entry is skipped: the next is trace 3's.
        assert_eq!(held.next_deadline(), Some(Duration::from_secs(7)));
        assert_eq!(held.drain().len(), 1);
        assert_eq!((held.records(), held.bytes()), (0, 0));
        assert_eq!(held.next_deadline(), None);
    }

    #[test]
    fn records_are_taken_by_trace_where_a_predicate_says() {
        let mut held = HeldLogs::default();
        for n in 1..=4 {
            held.hold(id(n), Bytes::from_static(b"ab"), 2, Duration::from_secs(5));
        }
        let mut taken: Vec<_> = held
            .take_where(|t| t.0[0] % 2 == 0)
            .into_iter()
            .map(|t| (t.id, t.records))
            .collect();
        taken.sort();
        assert_eq!(taken, vec![(id(2), 2), (id(4), 2)]);
        assert_eq!(held.records(), 4);
        assert!(held.holds(&id(1)) && held.holds(&id(3)) && !held.holds(&id(2)));
        // Their deadlines go with them: only the others expire.
        let due: Vec<_> = held
            .expire(Duration::from_secs(5))
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(due.len(), 2);
        assert!(due.contains(&id(1)) && due.contains(&id(3)));
    }
}
