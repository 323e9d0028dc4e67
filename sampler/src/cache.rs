//! Decisions for recent traces, so that a span arriving after its trace was
//! decided follows that decision instead of starting a trace of its own.
//!
//! Keyed by the full 128-bit trace ID (a truncated key would let two traces
//! share a decision). Bounded by entries, separately for each kind, as the
//! Collector's `decision_cache` is; the oldest decision of a kind is
//! forgotten first (insertion order: one ring of IDs per kind, no per-hit
//! bookkeeping on the hot path).

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;
use policy::{Decision, Outcome, Threshold};
use proto::view::TraceId;

/// What is remembered of a decision to keep a trace: enough to annotate its
/// late spans the way its other spans were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The policy that kept it, when spans are annotated with it.
    pub policy: Option<Arc<str>>,
    /// The OTel sampling threshold written into kept spans' tracestate.
    pub threshold: Option<Threshold>,
}

impl Kept {
    /// The decision to annotate late spans with.
    pub fn decision(&self) -> Decision {
        Decision {
            sampled: true,
            outcome: Outcome::Sampled,
            policy: self.policy.clone(),
            threshold: self.threshold,
        }
    }
}

/// A remembered decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedDecision {
    Sampled(Kept),
    NotSampled,
}

impl CachedDecision {
    pub fn is_sampled(&self) -> bool {
        matches!(self, CachedDecision::Sampled(_))
    }
}

/// The two bounded caches, behind one map so that a span of an unknown
/// trace costs one lookup.
#[derive(Debug, Default)]
pub struct DecisionCache {
    map: HashMap<TraceId, CachedDecision>,
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

    pub fn get(&self, id: &TraceId) -> Option<&CachedDecision> {
        self.map.get(id)
    }

    /// Remembers a decision, forgetting the oldest of its kind if full. A
    /// trace already remembered takes the new decision (a decision handed
    /// over by another node wins over a local one).
    pub fn insert(&mut self, id: TraceId, decision: CachedDecision) {
        let sampled = decision.is_sampled();
        let remember = self.capacity(sampled) > 0;
        // Not remembering this kind: forget any other answer too, so a late
        // span does not follow a stale one.
        let previous = if remember {
            self.map.insert(id, decision)
        } else {
            self.map.remove(&id)
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
        self.ring(sampled).push_back(id);
        self.evict(sampled);
    }

    /// Changes the bounds, forgetting the oldest decisions past them.
    pub fn resize(&mut self, sampled: usize, not_sampled: usize) {
        self.sampled_capacity = sampled;
        self.not_sampled_capacity = not_sampled;
        self.evict(true);
        self.evict(false);
    }

    /// Every remembered decision, in no particular order (to hand the
    /// decisions for traces that moved to their new owners).
    pub fn iter(&self) -> impl Iterator<Item = (&TraceId, &CachedDecision)> {
        self.map.iter()
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

    fn evict(&mut self, sampled: bool) {
        let capacity = self.capacity(sampled);
        loop {
            let ring = if sampled {
                &mut self.sampled
            } else {
                &mut self.not_sampled
            };
            if ring.len() <= capacity {
                break;
            }
            let Some(id) = ring.pop_front() else { break };
            self.map.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::trace_id;
    use proptest::prelude::*;

    fn kept() -> CachedDecision {
        CachedDecision::Sampled(Kept {
            policy: Some("errors".into()),
            threshold: None,
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
    fn a_zero_size_kind_is_not_remembered() {
        let mut cache = DecisionCache::new(0, 4);
        cache.insert(trace_id(1), kept());
        assert!(cache.is_empty());
        cache.insert(trace_id(1), CachedDecision::NotSampled);
        assert_eq!(cache.len(), 1);
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

    proptest! {
        /// Whatever the sequence, each kind stays within its bound and the
        /// most recent decision for an ID is the one returned.
        #[test]
        fn stays_bounded_and_returns_the_latest(
            ops in prop::collection::vec((0u8..24, any::<bool>()), 0..300),
            caps in (0usize..6, 0usize..6),
        ) {
            let mut cache = DecisionCache::new(caps.0, caps.1);
            for (n, sampled) in &ops {
                let d = if *sampled { kept() } else { CachedDecision::NotSampled };
                cache.insert(trace_id(*n), d.clone());
                let got = cache.get(&trace_id(*n)).cloned();
                let cap = if *sampled { caps.0 } else { caps.1 };
                prop_assert_eq!(got, (cap > 0).then_some(d));
                let s = cache.map.values().filter(|d| d.is_sampled()).count();
                prop_assert!(s <= caps.0);
                prop_assert!(cache.len() - s <= caps.1);
            }
        }
    }
}
