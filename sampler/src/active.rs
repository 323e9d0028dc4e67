//! The policy file in force, shared by every shard and swapped whole on
//! reload (through a `watch` channel): a trace is judged by the policies in
//! force when it is decided, whenever it arrived.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use policy::{Decision, PolicyFile, PolicyState, TraceView};

use crate::metrics::Metrics;

/// A validated policy file, with what evaluating it needs.
pub(crate) struct ActivePolicy {
    pub file: PolicyFile,
    /// The rate limiters' tokens, shared by every shard so that a limit is
    /// the node's, not each shard's. Each limiter has its own lock, held
    /// only while its tokens are taken: shards evaluate side by side.
    state: PolicyState,
    /// A state of its own for [`ActivePolicy::would_keep`], so asking what
    /// a late span would have done takes no token from the real limiters.
    what_if: PolicyState,
    /// xxh3-64 of the file's bytes.
    pub hash: u64,
    /// `[sampled, not_sampled]` per deciding policy, made once per file.
    decided: HashMap<Arc<str>, [Counter; 2]>,
    undecided: [Counter; 2],
}

impl ActivePolicy {
    pub fn new(file: PolicyFile, hash: u64, metrics: &Metrics) -> ActivePolicy {
        let decided = file
            .policies
            .names()
            .map(|name| (Arc::from(name), metrics.decided(name)))
            .collect();
        ActivePolicy {
            state: file.policies.new_state(),
            what_if: file.policies.new_state(),
            decided,
            undecided: metrics.decided("none"),
            file,
            hash,
        }
    }

    /// Decides a trace and counts the decision by policy.
    pub fn evaluate(&self, trace: &TraceView<'_>, now: Duration) -> Decision {
        let decision = self.file.policies.evaluate(&self.state, trace, now);
        let counters = decision
            .policy
            .as_ref()
            .and_then(|p| self.decided.get(p))
            .unwrap_or(&self.undecided);
        counters[usize::from(!decision.sampled)].increment(1);
        decision
    }

    /// Whether the policies keep `trace` on its own, without counting a
    /// decision or touching the rate limiters in force: for a late span of
    /// a trace decided not kept, whether it would have changed the decision.
    pub fn would_keep(&self, trace: &TraceView<'_>, now: Duration) -> bool {
        self.file
            .policies
            .evaluate(&self.what_if, trace, now)
            .sampled
    }

    /// The hash as the metric holds it: the top 48 bits, exact in an f64.
    pub fn hash_gauge(&self) -> f64 {
        (self.hash >> 16) as f64
    }
}
