//! The policy file in force, shared by every shard and swapped whole on
//! reload (through a `watch` channel): a trace is judged by the policies in
//! force when it is decided, whenever it arrived.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Counter;
use policy::{Decision, PolicyFile, PolicyState, PolicyTimer, TraceView};

use crate::metrics::{Metrics, PolicyMetrics};

/// One trace in this many has each policy's evaluation timed: two clock
/// reads per policy on every trace would cost more than some policies do.
const TIMING_EVERY: u64 = 64;

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
    /// `[sampled, not_sampled]` per deciding policy, made once per file,
    /// and the deciding policy's place among them.
    decided: Vec<[Counter; 2]>,
    deciding: HashMap<Arc<str>, usize>,
    undecided: [Counter; 2],
    /// Per top-level policy, in evaluation order.
    per_policy: Vec<PolicyMetrics>,
}

/// One shard's counts of votes and decisions under one policy file, added to
/// the file's counters by [`ActivePolicy::flush`] once per round: every
/// shard shares those counters, so an increment per trace and per policy
/// moved their cache lines between cores (about 1.5 % of a sampler at 100k
/// spans/s, BENCHMARKS.md, tenth pass).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Evaluations by this shard: one in [`TIMING_EVERY`] is timed.
    evaluations: u64,
    /// Per top-level policy: `[sampled, not_sampled, errors]`.
    votes: Vec<[u64; 3]>,
    /// Per deciding policy, then undecided: `[sampled, not_sampled]`.
    decided: Vec<[u64; 2]>,
}

impl ActivePolicy {
    /// `use_tracestate` is the sampler's `use_tracestate` setting (the
    /// Collector's gate), applied to the file's policies.
    pub fn new(
        mut file: PolicyFile,
        hash: u64,
        metrics: &Metrics,
        use_tracestate: bool,
    ) -> ActivePolicy {
        file.policies.set_use_tracestate(use_tracestate);
        let decided = file.policies.names().map(|n| metrics.decided(n)).collect();
        let deciding = file
            .policies
            .names()
            .enumerate()
            .map(|(at, name)| (Arc::from(name), at))
            .collect();
        let per_policy = file.policies.names().map(|n| metrics.policy(n)).collect();
        ActivePolicy {
            state: file.policies.new_state(),
            what_if: file.policies.new_state(),
            decided,
            deciding,
            undecided: metrics.decided("none"),
            per_policy,
            file,
            hash,
        }
    }

    /// Takes over the learned rates of `old`'s adaptive policies that this
    /// file defines unchanged (same name, place and options), so that a
    /// reload does not send them back to their goal rate. Returns how many.
    pub fn carry_estimators_from(&self, old: &ActivePolicy) -> usize {
        self.file
            .policies
            .carry_estimators(&self.state, &old.file.policies, &old.state)
    }

    /// Decides a trace and counts the decision by policy, and every
    /// policy's vote, into `tally`.
    pub fn evaluate(&self, trace: &TraceView<'_>, now: Duration, tally: &mut Tally) -> Decision {
        let decision = self.evaluate_quietly(trace, now, tally);
        self.count(&decision, tally);
        decision
    }

    /// Evaluates a trace, counting only the votes (`span-ingest`
    /// evaluates a trace on each arrival; only its final decision counts
    /// as one).
    pub fn evaluate_quietly(
        &self,
        trace: &TraceView<'_>,
        now: Duration,
        tally: &mut Tally,
    ) -> Decision {
        let n = tally.evaluations;
        tally.evaluations += 1;
        let decision = if n.is_multiple_of(TIMING_EVERY) {
            let mut timer = Timer {
                started: None,
                per_policy: &self.per_policy,
            };
            self.file
                .policies
                .evaluate_timed(&self.state, trace, now, Some(&mut timer))
        } else {
            self.file.policies.evaluate(&self.state, trace, now)
        };
        tally.votes.resize(self.per_policy.len(), [0; 3]);
        for (at, votes) in tally.votes.iter_mut().enumerate() {
            if let Some(sampled) = decision.votes.get(at) {
                votes[usize::from(!sampled)] += 1;
            } else if at < 64 && decision.votes.errors & (1 << at) != 0 {
                votes[2] += 1;
            }
        }
        decision
    }

    /// Counts a final decision by its deciding policy, into `tally`.
    pub fn count(&self, decision: &Decision, tally: &mut Tally) {
        let at = decision
            .policy
            .as_ref()
            .and_then(|p| self.deciding.get(p))
            .copied()
            .unwrap_or(self.decided.len());
        tally.decided.resize(self.decided.len() + 1, [0; 2]);
        tally.decided[at][usize::from(!decision.sampled)] += 1;
    }

    /// Adds what `tally` counted under this file to its counters, and
    /// empties it. A shard calls it with the file it evaluated with, before
    /// it takes up another.
    pub fn flush(&self, tally: &mut Tally) {
        for (votes, m) in tally.votes.iter_mut().zip(&self.per_policy) {
            let [sampled, not_sampled, errors] = std::mem::take(votes);
            for (n, counter) in [
                (sampled, &m.votes[0]),
                (not_sampled, &m.votes[1]),
                (errors, &m.errors),
            ] {
                if n > 0 {
                    counter.increment(n);
                }
            }
        }
        let counters = self.decided.iter().chain([&self.undecided]);
        for (counts, counter) in tally.decided.iter_mut().zip(counters) {
            for (n, c) in std::mem::take(counts).into_iter().zip(counter) {
                if n > 0 {
                    c.increment(n);
                }
            }
        }
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

    /// The policies' state: rate limiters, estimators, fleet shares.
    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    /// The hash as the metric holds it: the top 48 bits, exact in an f64.
    pub fn hash_gauge(&self) -> f64 {
        (self.hash >> 16) as f64
    }
}

/// Times each top-level policy into its histogram.
struct Timer<'a> {
    started: Option<Instant>,
    per_policy: &'a [PolicyMetrics],
}

impl PolicyTimer for Timer<'_> {
    fn start(&mut self, _at: usize) {
        self.started = Some(Instant::now());
    }

    fn stop(&mut self, at: usize) {
        if let (Some(started), Some(m)) = (self.started.take(), self.per_policy.get(at)) {
            m.evaluation.record(started.elapsed().as_secs_f64());
        }
    }
}
