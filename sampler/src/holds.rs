//! Traces waiting for refused spans. When the receivers refuse a request for
//! backpressure, the client retries it `retry_after` later; by then its
//! traces may be past their decision wait, and a trace decided without its
//! refused error span is lost while every counter reads 0. So the sink notes
//! the trace IDs a refused request carried (one wire walk, no decode), and
//! each shard postpones those traces' decisions until `refused_wait` after
//! the last refusal: bounded, then decided as usual.
//!
//! One table per shard, each behind its own lock, taken by the sink once per
//! refused request and by the shard once per round; bounded in entries (an
//! ID that does not fit is counted and its trace decided on time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use proto::view::TraceId;

use crate::ingest::shard_of;

/// Trace IDs a shard has not taken yet, each with the time its hold ends.
pub(crate) struct RefusedHolds {
    shards: Vec<Mutex<HashMap<TraceId, Duration>>>,
    per_shard: usize,
    wait: Duration,
}

impl RefusedHolds {
    /// Tables for `shards` shards of `per_shard` IDs each; holds last
    /// `wait` (zero: holding is off).
    pub fn new(shards: usize, per_shard: usize, wait: Duration) -> RefusedHolds {
        RefusedHolds {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            per_shard,
            wait,
        }
    }

    /// Notes the traces of a refused request, refused at `now` (the
    /// shards' clock). Returns how many IDs did not fit.
    pub fn note(&self, ids: &[TraceId], now: Duration) -> u64 {
        if self.wait.is_zero() || ids.is_empty() {
            return 0;
        }
        let until = now + self.wait;
        let n = self.shards.len();
        let mut by_shard: Vec<Vec<TraceId>> = vec![Vec::new(); n];
        for id in ids {
            by_shard[shard_of(id, n)].push(*id);
        }
        let mut dropped = 0;
        for (shard, ids) in by_shard.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            // A poisoned lock only means another thread panicked while
            // holding it; the table is still a valid map.
            let mut table = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
            for id in ids {
                if table.len() >= self.per_shard && !table.contains_key(&id) {
                    dropped += 1;
                    continue;
                }
                table.insert(id, until);
            }
        }
        dropped
    }

    /// Takes what was noted for `shard` since the last call.
    pub fn take(&self, shard: usize) -> Vec<(TraceId, Duration)> {
        let Some(table) = self.shards.get(shard) else {
            return Vec::new();
        };
        let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
        if table.is_empty() {
            return Vec::new();
        }
        table.drain().collect()
    }
}

/// The distinct trace IDs of a request's spans, in first-seen order.
/// Consecutive repeats go first (a request's spans come grouped by trace
/// more often than not), the rest through a hash set rather than a sort:
/// the durable buffer runs this for every request, and a sort of 16-byte
/// IDs was its largest cost after the log itself.
pub(crate) fn dedup_ids(ids: &mut Vec<TraceId>) {
    ids.dedup();
    if ids.len() > 1 {
        let mut seen = hashbrown::HashSet::with_capacity(ids.len());
        ids.retain(|id| seen.insert(u128::from_ne_bytes(id.0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        let mut b = [0u8; 16];
        b[0] = n;
        b[15] = n.wrapping_mul(37);
        TraceId(b)
    }

    #[test]
    fn noted_ids_reach_their_shard_once_with_the_latest_deadline() {
        let holds = RefusedHolds::new(2, 100, Duration::from_secs(3));
        let ids: Vec<TraceId> = (1..=10).map(id).collect();
        assert_eq!(holds.note(&ids, Duration::from_secs(1)), 0);
        assert_eq!(holds.note(&ids[..2], Duration::from_secs(2)), 0);
        let mut got: Vec<(TraceId, Duration)> = holds.take(0);
        got.extend(holds.take(1));
        assert_eq!(got.len(), 10);
        for (t, until) in &got {
            let expect = if ids[..2].contains(t) { 5 } else { 4 };
            assert_eq!(*until, Duration::from_secs(expect), "{t:?}");
            let shard = shard_of(t, 2);
            assert!(shard < 2);
        }
        assert!(holds.take(0).is_empty() && holds.take(1).is_empty());
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_note_and_a_zero_wait_notes_nothing() {
        let holds = RefusedHolds::new(1, 3, Duration::from_secs(1));
        let ids: Vec<TraceId> = (1..=5).map(id).collect();
        assert_eq!(holds.note(&ids, Duration::ZERO), 2);
        // An ID already noted is refreshed, not refused.
        assert_eq!(holds.note(&ids[..1], Duration::from_secs(1)), 0);
        assert_eq!(holds.take(0).len(), 3);
        let off = RefusedHolds::new(1, 3, Duration::ZERO);
        assert_eq!(off.note(&ids, Duration::ZERO), 0);
        assert!(off.take(0).is_empty());
    }

    #[test]
    fn ids_are_deduplicated() {
        let mut ids = vec![id(3), id(1), id(1), id(2), id(1), id(3), id(3)];
        dedup_ids(&mut ids);
        assert_eq!(ids.len(), 3);
        assert_eq!(ids, vec![id(3), id(1), id(2)], "in first-seen order");
    }
}
