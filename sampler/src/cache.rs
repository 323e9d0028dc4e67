//! Decisions for recent traces, so that a span arriving after its trace was
//! decided follows that decision instead of starting a trace of its own.
//!
//! Keyed by the full 128-bit trace ID (a truncated key would let two traces
//! share a decision). Bounded by entries, separately for each kind, as the
//! Collector's `decision_cache` is. Like the Collector's LRU caches, a
//! decision that late spans keep asking for outlives one nobody asks for:
//! eviction is second-chance (CLOCK) over one ring of IDs per kind, so a hit
//! only sets a flag, and the oldest decision not asked for since its last
//! pass is forgotten first. An LRU crate (hashlink, lru) would need a map
//! per kind, and a span of an unknown trace would cost two lookups instead
//! of one.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;
use policy::{Annotations, Threshold};
use proto::view::TraceId;

/// What is remembered of a decision to keep a trace: enough to annotate its
/// late spans the way its other spans were.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kept {
    /// The policy that kept it, when spans are annotated with it.
    pub policy: Option<Arc<str>>,
    /// The composite sub-policy that kept it, likewise.
    pub composite_policy: Option<Arc<str>>,
    /// The OTel sampling threshold written into kept spans' tracestate.
    pub threshold: Option<Threshold>,
}

impl Kept {
    /// What to write into a late span of the trace: the same as into its
    /// other spans, and, with `record_policy`, that it followed a decision
    /// taken before it arrived (`tailsampling.cached_decision`).
    pub fn annotations(&self, record_policy: bool) -> Annotations<'_> {
        Annotations {
            policy: self.policy.as_deref().filter(|_| record_policy),
            composite_policy: self.composite_policy.as_deref().filter(|_| record_policy),
            cached_decision: record_policy,
            threshold: self.threshold,
        }
    }
}

/// A remembered decision.
///
/// What a kept trace's decision carries is behind an `Arc`: eight bytes in
/// the cache's entries instead of 48 (with the key and the entry's own
/// fields, 40-byte buckets instead of 80), so a shard's 100,000 remembered
/// decisions take half the memory and the cache lines a lookup touches;
/// an allocation per kept trace pays for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedDecision {
    Sampled(Arc<Kept>),
    NotSampled,
}

impl CachedDecision {
    /// A decision to keep, remembering `kept`.
    pub fn sampled(kept: Kept) -> Self {
        CachedDecision::Sampled(Arc::new(kept))
    }

    pub fn is_sampled(&self) -> bool {
        matches!(self, CachedDecision::Sampled(_))
    }
}

/// A decision, and whether it was asked for since eviction last passed it.
#[derive(Debug)]
struct Entry {
    decision: CachedDecision,
    asked: bool,
    /// When it was taken, in the buffer's clock (nanoseconds), for the age
    /// of late spans.
    decided_at: u64,
}

/// The two bounded caches, behind one map so that a span of an unknown
/// trace costs one lookup.
#[derive(Debug, Default)]
pub struct DecisionCache {
    map: HashMap<TraceId, Entry>,
    sampled: VecDeque<TraceId>,
    not_sampled: VecDeque<TraceId>,
    sampled_capacity: usize,
    not_sampled_capacity: usize,
}

impl DecisionCache {
    /// A cache of at most `sampled` kept and `not_sampled` not-kept trace
    /// IDs; 0 disables that kind.
    pub fn new(sampled: usize, not_sampled: usize) -> Self {
        DecisionCache {
            sampled_capacity: sampled,
            not_sampled_capacity: not_sampled,
            ..DecisionCache::default()
        }
    }

    /// The decision for `id`, marking it asked for (it survives the next
    /// eviction pass).
    pub fn get(&mut self, id: &TraceId) -> Option<&CachedDecision> {
        self.get_with_time(id).map(|(d, _)| d)
    }

    /// [`DecisionCache::get`], with the time the decision was remembered
    /// at (as given to [`DecisionCache::insert_at`]).
    pub fn get_with_time(&mut self, id: &TraceId) -> Option<(&CachedDecision, u64)> {
        self.map.get_mut(id).map(|entry| {
            entry.asked = true;
            (&entry.decision, entry.decided_at)
        })
    }

    /// The decision for `id`, without marking it.
    pub fn peek(&self, id: &TraceId) -> Option<&CachedDecision> {
        self.map.get(id).map(|entry| &entry.decision)
    }

    /// Remembers a decision, forgetting the oldest of its kind if full. A
    /// trace already remembered takes the new decision (a decision handed
    /// over by another node wins over a local one).
    pub fn insert(&mut self, id: TraceId, decision: CachedDecision) {
        self.insert_at(id, decision, 0);
    }

    /// [`DecisionCache::insert`], remembering when (any clock, nanoseconds).
    pub fn insert_at(&mut self, id: TraceId, decision: CachedDecision, decided_at: u64) {
        let sampled = decision.is_sampled();
        let remember = self.capacity(sampled) > 0;
        // Not remembering this kind: forget any other answer too, so a late
        // span does not follow a stale one.
        let previous = if remember {
            let entry = Entry {
                decision,
                asked: false,
                decided_at,
            };
            self.map.insert(id, entry).map(|e| e.decision)
        } else {
            self.map.remove(&id).map(|e| e.decision)
        };
        match previous {
            Some(previous) if remember && previous.is_sampled() == sampled => return,
            Some(previous) => {
                // Changed kind (only a decision handed over from outside
                // does this, so the linear scan is off the hot path).
                let old = self.ring(previous.is_sampled());
                if let Some(i) = old.iter().position(|x| *x == id) {
                    old.remove(i);
                }
            }
            None => {}
        }
        if !remember {
            return;
        }
        // Room first, so the new decision is never the one forgotten.
        self.evict(sampled, 1);
        self.ring(sampled).push_back(id);
    }

    /// [`DecisionCache::insert_at`] for each of `decisions` in order,
    /// emptying it. First reads, in a loop of independent lookups, where
    /// each insert and each eviction it will cause will look: a shard's
    /// remembered decisions are tens of megabytes, each lookup a trip to
    /// memory, and a round's lookups made one after another (between the
    /// policy evaluation and the output of each trace) wait for each trip
    /// in turn, where a loop of lookups alone overlaps them.
    pub fn insert_all_at(&mut self, decisions: &mut Vec<(TraceId, CachedDecision)>, at: u64) {
        if decisions.len() > 1 {
            let mut found = 0usize;
            let mut sampled = 0usize;
            for (id, decision) in decisions.iter() {
                found += usize::from(self.map.contains_key(id));
                sampled += usize::from(decision.is_sampled());
            }
            for (ring, new, capacity) in [
                (&self.sampled, sampled, self.sampled_capacity),
                (
                    &self.not_sampled,
                    decisions.len() - sampled,
                    self.not_sampled_capacity,
                ),
            ] {
                let over = (ring.len() + new).saturating_sub(capacity);
                for id in ring.iter().take(over) {
                    found += usize::from(self.map.contains_key(id));
                }
            }
            std::hint::black_box(found);
        }
        for (id, decision) in decisions.drain(..) {
            self.insert_at(id, decision, at);
        }
    }

    /// Changes the bounds, forgetting the oldest decisions past them.
    pub fn resize(&mut self, sampled: usize, not_sampled: usize) {
        self.sampled_capacity = sampled;
        self.not_sampled_capacity = not_sampled;
        self.evict(true, 0);
        self.evict(false, 0);
    }

    /// Every remembered decision, in no particular order (to hand the
    /// decisions for traces that moved to their new owners).
    pub fn iter(&self) -> impl Iterator<Item = (&TraceId, &CachedDecision)> {
        self.map.iter().map(|(id, entry)| (id, &entry.decision))
    }

    /// Decisions remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn capacity(&self, sampled: bool) -> usize {
        if sampled {
            self.sampled_capacity
        } else {
            self.not_sampled_capacity
        }
    }

    fn ring(&mut self, sampled: bool) -> &mut VecDeque<TraceId> {
        if sampled {
            &mut self.sampled
        } else {
            &mut self.not_sampled
        }
    }

    /// Forgets decisions of a kind until `room` more fit: the oldest first,
    /// except that one asked for since the last pass goes to the back
    /// instead, unmarked. Each hit buys one such move, so this is O(1)
    /// amortised.
    fn evict(&mut self, sampled: bool, room: usize) {
        let capacity = self.capacity(sampled);
        let ring = if sampled {
            &mut self.sampled
        } else {
            &mut self.not_sampled
        };
        while ring.len() + room > capacity {
            let Some(id) = ring.pop_front() else { break };
            match self.map.get_mut(&id) {
                Some(entry) if entry.asked && capacity > 0 => {
                    entry.asked = false;
                    ring.push_back(id);
                }
                _ => {
                    self.map.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::trace_id;
    use proptest::prelude::*;

    fn kept() -> CachedDecision {
        CachedDecision::sampled(Kept {
            policy: Some("errors".into()),
            ..Kept::default()
        })
    }

    #[test]
    fn forgets_the_oldest_decision_of_a_kind_first() {
        let mut cache = DecisionCache::new(2, 1);
        cache.insert(trace_id(1), kept());
        cache.insert(trace_id(2), kept());
        cache.insert(trace_id(3), CachedDecision::NotSampled);
        cache.insert(trace_id(4), kept());
        assert_eq!(cache.get(&trace_id(1)), None);
        assert!(
            cache
                .get(&trace_id(2))
                .is_some_and(CachedDecision::is_sampled)
        );
        assert_eq!(cache.get(&trace_id(3)), Some(&CachedDecision::NotSampled));
        cache.insert(trace_id(5), CachedDecision::NotSampled);
        assert_eq!(cache.get(&trace_id(3)), None);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_decision_late_spans_ask_for_outlives_one_nobody_asks_for() {
        let mut cache = DecisionCache::new(3, 1);
        for n in 1..=3 {
            cache.insert(trace_id(n), kept());
        }
        // Trace 1 is still getting late spans.
        assert!(cache.get(&trace_id(1)).is_some());
        cache.insert(trace_id(4), kept());
        assert!(cache.peek(&trace_id(1)).is_some(), "asked for: kept");
        assert_eq!(cache.peek(&trace_id(2)), None, "oldest not asked for: gone");
        // A peek does not count as asking; the second chance is used up.
        cache.insert(trace_id(5), kept());
        cache.insert(trace_id(6), kept());
        assert_eq!(cache.peek(&trace_id(1)), None);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_zero_size_kind_is_not_remembered() {
        let mut cache = DecisionCache::new(0, 4);
        cache.insert(trace_id(1), kept());
        assert!(cache.is_empty());
        cache.insert(trace_id(1), CachedDecision::NotSampled);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_remembered_decision_costs_a_pointer_and_its_bucket_40_bytes() {
        assert_eq!(size_of::<CachedDecision>(), size_of::<usize>());
        assert_eq!(size_of::<(TraceId, Entry)>(), 40);
    }

    #[test]
    fn keys_use_all_128_bits() {
        let mut cache = DecisionCache::new(4, 4);
        let a = trace_id(1);
        let mut b = a;
        b.0[0] ^= 1;
        cache.insert(a, kept());
        assert_eq!(cache.get(&b), None);
    }

    #[test]
    fn resizing_down_forgets_the_oldest() {
        let mut cache = DecisionCache::new(4, 4);
        for n in 0..4 {
            cache.insert(trace_id(n), kept());
        }
        cache.resize(1, 4);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&trace_id(3)).is_some());
    }

    fn contents(cache: &DecisionCache) -> Vec<(TraceId, bool, bool, u64)> {
        let mut all: Vec<_> = cache
            .map
            .iter()
            .map(|(id, e)| (*id, e.decision.is_sampled(), e.asked, e.decided_at))
            .collect();
        all.sort_unstable_by_key(|e| e.0);
        all
    }

    proptest! {
        /// Remembering a round's decisions together leaves the cache as
        /// remembering them one by one does: same decisions, same order of
        /// eviction, second chances kept.
        #[test]
        fn a_round_remembered_together_is_remembered_as_one_by_one(
            rounds in prop::collection::vec(
                prop::collection::vec((0u8..40, any::<bool>()), 0..12), 0..30),
            asks in prop::collection::vec(0u8..40, 0..30),
            caps in (0usize..8, 0usize..8),
        ) {
            let mut together = DecisionCache::new(caps.0, caps.1);
            let mut one_by_one = DecisionCache::new(caps.0, caps.1);
            for (r, round) in rounds.iter().enumerate() {
                let ask = trace_id(asks.get(r).copied().unwrap_or(0));
                let _ = together.get(&ask);
                let _ = one_by_one.get(&ask);
                let mut decisions: Vec<_> = round
                    .iter()
                    .map(|(n, s)| (trace_id(*n), if *s { kept() } else { CachedDecision::NotSampled }))
                    .collect();
                for (id, d) in &decisions {
                    one_by_one.insert_at(*id, d.clone(), r as u64);
                }
                together.insert_all_at(&mut decisions, r as u64);
                prop_assert!(decisions.is_empty());
                prop_assert_eq!(contents(&together), contents(&one_by_one));
                prop_assert_eq!(&together.sampled, &one_by_one.sampled);
                prop_assert_eq!(&together.not_sampled, &one_by_one.not_sampled);
            }
        }

        /// Whatever the sequence, each kind stays within its bound and the
        /// most recent decision for an ID is the one returned.
        #[test]
        fn stays_bounded_and_returns_the_latest(
            ops in prop::collection::vec((0u8..24, any::<bool>(), any::<bool>()), 0..300),
            caps in (0usize..6, 0usize..6),
        ) {
            let mut cache = DecisionCache::new(caps.0, caps.1);
            for (n, sampled, ask_first) in &ops {
                // Sometimes a lookup first, so second chances are exercised.
                if *ask_first {
                    let _ = cache.get(&trace_id(n.wrapping_mul(7) % 24));
                }
                let d = if *sampled { kept() } else { CachedDecision::NotSampled };
                cache.insert(trace_id(*n), d.clone());
                let got = cache.get(&trace_id(*n)).cloned();
                let cap = if *sampled { caps.0 } else { caps.1 };
                prop_assert_eq!(got, (cap > 0).then_some(d));
                let s = cache.map.values().filter(|e| e.decision.is_sampled()).count();
                prop_assert!(s <= caps.0);
                prop_assert!(cache.len() - s <= caps.1);
            }
        }
    }
}
