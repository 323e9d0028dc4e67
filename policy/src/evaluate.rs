//! Deciding one trace: each policy votes as the Collector's evaluators do
//! (processor/tailsamplingprocessor/internal/sampling/*.go, contrib
//! v0.165), and the votes combine as its `makeDecision` does
//! (processor.go): a drop wins, then a sampled; anything else is not
//! sampled. `invert_match` only flips its own policy's vote: the
//! "inverted" decisions and their precedence were removed with the
//! `disableinvertdecisions` gate (contrib #48976, v0.156).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proto::view::{AnyValue, SpanView, TraceId, resource_attributes};
use proto::write::SpanRef;

use crate::adaptive::{self, Estimator, EstimatorStats, Method};
use crate::fleet::{BudgetUnit, FleetBudget, FleetCell};
use crate::ottl;
use crate::policy::{Node, Rule, StringMatcher};
use crate::probabilistic::{Threshold, hash_trace_id};
use crate::summary::TraceSummary;
use crate::tracestate;

/// A trace as the sampler holds it.
#[derive(Debug, Clone, Copy)]
pub struct TraceView<'a> {
    pub trace_id: TraceId,
    /// Kept up to date at ingest; `latency`, `status_code`, `span_count`,
    /// `trace_flags` and the rate limiters read only this.
    pub summary: &'a TraceSummary,
    /// The spans with the headers of their resource (and scope) groups, as
    /// stored; attribute and `trace_state` policies read them lazily.
    pub spans: &'a [SpanRef<'a>],
}

/// Which final decision a trace got, in the Collector's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A policy sampled it.
    Sampled,
    /// A `drop` policy matched.
    Dropped,
    /// No policy sampled it.
    NotSampled,
}

impl Outcome {
    pub fn is_sampled(self) -> bool {
        self == Outcome::Sampled
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Sampled => "sampled",
            Outcome::Dropped => "dropped",
            Outcome::NotSampled => "not sampled",
        })
    }
}

/// The decision for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub sampled: bool,
    pub outcome: Outcome,
    /// The top-level policy that decided: the first that sampled, or the
    /// drop policy that dropped; `None` when no policy sampled.
    pub policy: Option<Arc<str>>,
    /// When the deciding policy is a `composite`, its sub-policy that
    /// sampled (the Collector's `tailsampling.composite_policy`).
    pub composite_policy: Option<Arc<str>>,
    /// With the Collector's `usetracestate` gate on
    /// ([`PolicySet::set_use_tracestate`]), for a kept trace: the least
    /// strict threshold among the policies that voted to keep it (0, keep
    /// everything, for a policy that is not probabilistic), to write into
    /// each kept span's `tracestate` as `ot=th:…`. `None` with the gate off.
    pub threshold: Option<Threshold>,
    /// Every top-level policy's vote, for the per-policy metrics.
    pub votes: Votes,
}

/// The top-level policies' votes on one trace, as bit sets over their
/// evaluation order ([`PolicySet::names`]); policies past the 64th are not
/// tracked. A policy not evaluated (after a drop, or past the first match
/// with `sample_on_first_match`) has neither bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Votes {
    pub evaluated: u64,
    pub sampled: u64,
    /// Policies whose evaluation failed (and voted as their error mode says).
    pub errors: u64,
}

impl Votes {
    fn record(&mut self, at: usize, sampled: bool) {
        if at < 64 {
            self.evaluated |= 1 << at;
            if sampled {
                self.sampled |= 1 << at;
            }
        }
    }

    fn record_error(&mut self, at: usize) {
        if at < 64 {
            self.errors |= 1 << at;
        }
    }

    /// The vote of policy `at`: `None` if it was not evaluated.
    pub fn get(&self, at: usize) -> Option<bool> {
        (at < 64 && self.evaluated & (1 << at) != 0).then(|| self.sampled & (1 << at) != 0)
    }
}

/// No timing: [`PolicySet::evaluate`].
struct NoTimer;

impl PolicyTimer for NoTimer {
    #[inline(always)]
    fn start(&mut self, _at: usize) {}
    #[inline(always)]
    fn stop(&mut self, _at: usize) {}
}

/// Measures policies one by one, for the per-policy evaluation time: the
/// caller's clock, so that this crate keeps none.
pub trait PolicyTimer {
    /// Policy `at` (in evaluation order) is about to be evaluated.
    fn start(&mut self, at: usize);
    /// Policy `at` is done.
    fn stop(&mut self, at: usize);
}

impl Decision {
    /// Not sampled, by no policy (a trace given up on without evaluation).
    pub fn not_sampled() -> Decision {
        Decision {
            sampled: false,
            outcome: Outcome::NotSampled,
            policy: None,
            composite_policy: None,
            threshold: None,
            votes: Votes::default(),
        }
    }

    /// `span` with this decision's annotations appended (see
    /// [`crate::annotate_span`]); `record_policy` adds the
    /// `tailsampling.policy` attribute (off by default in the Collector).
    pub fn annotate<'s>(&self, span: &'s [u8], record_policy: bool) -> Cow<'s, [u8]> {
        if !self.sampled {
            return Cow::Borrowed(span);
        }
        crate::annotate::annotate_span_with(
            span,
            &crate::annotate::Annotations {
                policy: self.policy.as_deref().filter(|_| record_policy),
                composite_policy: self.composite_policy.as_deref().filter(|_| record_policy),
                cached_decision: false,
                threshold: self.threshold,
            },
        )
    }
}

/// Compiled policies in evaluation order (drop policies first).
#[derive(Debug)]
pub struct PolicySet {
    nodes: Vec<Node>,
    sample_on_first_match: bool,
    slots: Vec<SlotKind>,
    /// The attribute keys the policies read (indexed by the rules' `attr`).
    attribute_keys: Vec<String>,
    /// The Collector's `processor.tailsamplingprocessor.usetracestate`
    /// gate: `probabilistic` reads `ot=rv` and decisions carry thresholds.
    use_tracestate: bool,
    /// The adaptive policies at any depth, in evaluation order: their
    /// names (`outer/inner` for a sub-policy), slots and definitions (kind
    /// and every option, to tell an unchanged policy across a reload).
    adaptive: Vec<(Arc<str>, usize, String)>,
    /// The budgeted policies at any depth (crate::fleet).
    budgets: Vec<FleetBudget>,
    /// Some policy reads the spans themselves, not only the trace's
    /// summary and ID ([`PolicySet::reads_spans`]).
    reads_spans: bool,
}

/// What a stateful policy keeps between evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotKind {
    Bucket,
    Composite {
        subs: usize,
    },
    /// An adaptive policy's estimator (crate::adaptive).
    Adaptive,
}

/// The state of the rate-limiting policies of one [`PolicySet`]: token
/// buckets and composite counters, each behind its own lock, so threads
/// deciding traces side by side meet only on the policy whose tokens they
/// take, and only for that update. Make a new one (with
/// [`PolicySet::new_state`]) whenever the set changes; with a state that
/// does not fit the set, a decision starts from a fresh one.
#[derive(Debug)]
pub struct PolicyState {
    /// The kinds the state was made for, to tell whether it fits a set
    /// without locking every slot.
    kinds: Vec<SlotKind>,
    slots: Vec<Mutex<Slot>>,
    /// Per slot: what its budget was asked for since the last exchange, and
    /// this node's share of the budget (1 unless a cluster set it).
    fleet: Vec<FleetCell>,
}

impl PolicyState {
    /// Slot `at`. A poisoned lock only means a thread panicked mid-update
    /// of token counts: still usable.
    fn slot(&self, at: usize) -> Option<MutexGuard<'_, Slot>> {
        self.slots
            .get(at)
            .map(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// What the budget of slot `at` (a [`FleetBudget::slot`]) was asked
    /// for since the last call, in its unit, and resets it.
    pub fn take_demand(&self, at: usize) -> u64 {
        self.fleet.get(at).map_or(0, FleetCell::take_demand)
    }

    /// Sets this node's share of the budget of slot `at`, in `(0, 1]`; a
    /// rate limiter refills at its share of the rate into its share of the
    /// burst, a composite spends its share of each allocation each second,
    /// a throughput goal is its share from the next rate update.
    pub fn set_share(&self, at: usize, share: f64) {
        if let Some(cell) = self.fleet.get(at) {
            cell.set_share(share);
        }
    }

    /// This node's share of the budget of slot `at` (1 standalone).
    pub fn share(&self, at: usize) -> f64 {
        self.fleet.get(at).map_or(1.0, FleetCell::share)
    }

    fn ask(&self, at: usize, amount: u64) -> f64 {
        match self.fleet.get(at) {
            Some(cell) => {
                cell.ask(amount);
                cell.share()
            }
            None => 1.0,
        }
    }
}

#[derive(Debug, Clone)]
enum Slot {
    /// golang.org/x/time/rate's limiter: tokens, and the time they were
    /// counted at (`None`: never used, the bucket is full).
    Bucket {
        tokens: f64,
        last: Option<Duration>,
        kept: KeptShare,
    },
    /// composite.go: spans sampled by each sub-policy in `second`.
    Composite {
        second: Option<u64>,
        sampled: Vec<i64>,
        /// With `budget_lending`: spans each sub-policy kept on others'
        /// allocations, and spans of its allocation others kept, this second.
        borrowed: Vec<i64>,
        lent: Vec<i64>,
    },
    /// An adaptive policy's per-key counts, averages and rates.
    Adaptive(Box<Estimator>),
}

/// One policy's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Sampled,
    NotSampled,
    Dropped,
    /// The policy failed to evaluate (an `ottl_condition` with
    /// `error_mode: propagate`): no vote, as the Collector skips a policy
    /// that returns an error; `and`, `drop` and `composite` fail with it.
    Error,
}

/// 16 bytes, so that it comes back from `eval` in registers.
#[derive(Debug, Clone, Copy)]
struct Vote {
    verdict: Verdict,
    /// The randomness `threshold` was compared with ([`SOURCE_RV`],
    /// [`SOURCE_ADAPTIVE`], a probabilistic salt's, or [`SOURCE_MIXED`]);
    /// it fits in `verdict`'s padding.
    source: u16,
    /// The index of the composite sub-policy that sampled, when this is a
    /// composite's vote; [`NO_SUB`] otherwise.
    composite_sub: u32,
    /// The OTel threshold behind a Sampled vote: 0 unless only
    /// probabilistic sampling kept it.
    threshold: u64,
}

const NO_SUB: u32 = u32::MAX;
const _: () = assert!(std::mem::size_of::<Vote>() == 16);

/// No threshold behind the vote.
const SOURCE_NONE: u16 = 0;
/// The spans' own `ot=rv` (the usetracestate gate).
const SOURCE_RV: u16 = 1;
/// The adaptive policies' trace-ID hash (crate::adaptive::randomness).
const SOURCE_ADAPTIVE: u16 = 2;
/// Thresholds of independent randomness already combined.
const SOURCE_MIXED: u16 = 3;

/// The randomness source of `probabilistic` with this salt: its own id,
/// above the fixed ones (two salts sharing an id, 1 in ~65,000, would be
/// combined as if they were one hash).
pub(crate) fn salt_source(salt: &str) -> u16 {
    let h = crate::probabilistic::hash_trace_id(salt.as_bytes(), &[0; 16]);
    4 + (h % u64::from(u16::MAX - 4)) as u16
}

/// The threshold of an `and` of two sampling votes (OTEP 235: a trace is
/// kept when its randomness R >= th, probability 1 - th / 2^56). Drawn from
/// the same randomness, both hold when R passes the larger threshold: the
/// max, as the OTel consistent-sampling rule has it. Drawn from
/// independent randomness (a `probabilistic` hash and an adaptive policy's,
/// or two salts), both hold with the product of their probabilities, so
/// the threshold is `1 - (1 - a)(1 - b)` of 2^56: taking the max there
/// would overstate the probability and under-count the adjusted count.
fn and_threshold(a: (u64, u16), b: (u64, u16)) -> (u64, u16) {
    const ONE: u128 = 1 << 56;
    match (a, b) {
        ((0, _), other) | (other, (0, _)) => other,
        ((ta, sa), (tb, sb)) if sa == sb && sa != SOURCE_MIXED => (ta.max(tb), sa),
        ((ta, _), (tb, _)) => {
            let (ta, tb) = (u128::from(ta).min(ONE), u128::from(tb).min(ONE));
            let kept = (ONE - ta) * (ONE - tb) / ONE;
            ((ONE - kept).min(ONE - 1) as u64, SOURCE_MIXED)
        }
    }
}

impl Vote {
    fn of(verdict: Verdict) -> Self {
        Vote {
            verdict,
            source: SOURCE_NONE,
            threshold: 0,
            composite_sub: NO_SUB,
        }
    }

    fn sampled_if(keep: bool) -> Self {
        Vote::of(if keep {
            Verdict::Sampled
        } else {
            Verdict::NotSampled
        })
    }

    /// `invert_match` flips the policy's own vote, nothing more
    /// (contrib #48976 removed the inverted decisions).
    fn matched(matched: bool, invert: bool) -> Self {
        Vote::sampled_if(matched != invert)
    }
}

/// What one evaluation reads, parsed at most once and only if a policy
/// needs span bytes.
struct Ctx<'t> {
    trace: &'t TraceView<'t>,
    now: Duration,
    attribute_keys: &'t [String],
    use_tracestate: bool,
    spans: OnceCell<Vec<SpanView<'t>>>,
    attributes: OnceCell<AttributeIndex<'t>>,
}

/// The values of the keys the policies read: for each key, the first value
/// on each resource and on each span (pdata's `Get` returns the first).
/// Built in one pass over the trace's attributes, however many policies
/// read them.
struct AttributeIndex<'t> {
    resource: Vec<Vec<AnyValue<'t>>>,
    span: Vec<Vec<AnyValue<'t>>>,
}

impl<'t> Ctx<'t> {
    fn spans(&self) -> &[SpanView<'t>] {
        self.spans.get_or_init(|| {
            self.trace
                .spans
                .iter()
                // Stored spans were validated at ingest; one that does not
                // parse now is left out rather than guessed at.
                .filter_map(|s| SpanView::parse(s.span, 0).ok())
                .collect()
        })
    }

    /// Each span with its resource header, for the adaptive policies' keys.
    fn spans_with_resources(&self) -> Vec<(SpanView<'t>, &'t [u8])> {
        let views = self.spans();
        if views.len() == self.trace.spans.len() {
            views
                .iter()
                .copied()
                .zip(self.trace.spans.iter().map(|s| s.resource))
                .collect()
        } else {
            self.trace
                .spans
                .iter()
                .filter_map(|s| SpanView::parse(s.span, 0).ok().map(|v| (v, s.resource)))
                .collect()
        }
    }

    /// With the usetracestate gate, the OTel randomness (`ot=rv`) of the
    /// first span that carries one; `None` without the gate or without one.
    /// The randomness a limiter keeps consistently by, with the
    /// usetracestate gate on: the spans' `ot=rv`, else the adaptive
    /// policies' trace-ID hash. `None` with the gate off: the Collector's
    /// token bucket alone decides.
    fn limiter_randomness(&self) -> Option<(u64, u16)> {
        if !self.use_tracestate {
            return None;
        }
        Some(match self.randomness() {
            Some(rv) => (rv, SOURCE_RV),
            None => (
                adaptive::randomness(&self.trace.trace_id.0),
                SOURCE_ADAPTIVE,
            ),
        })
    }

    fn randomness(&self) -> Option<u64> {
        if !self.use_tracestate {
            return None;
        }
        self.spans()
            .iter()
            .find_map(|s| tracestate::ot_randomness(s.trace_state()))
    }

    fn attributes(&self) -> &AttributeIndex<'t> {
        self.attributes.get_or_init(|| {
            let keys = self.attribute_keys;
            let mut index = AttributeIndex {
                resource: vec![Vec::new(); keys.len()],
                span: vec![Vec::new(); keys.len()],
            };
            let mut seen = vec![false; keys.len()];
            let mut collect = |attrs: proto::view::Attributes<'t>,
                               into: &mut Vec<Vec<AnyValue<'t>>>| {
                seen.iter_mut().for_each(|s| *s = false);
                for (k, v) in attrs {
                    if let Some(i) = keys.iter().position(|key| key.len() == k.len() && key == k)
                        && !seen[i]
                    {
                        seen[i] = true;
                        into[i].push(v);
                    }
                }
            };
            // Spans of one resource group share its header: read each
            // distinct header once.
            let mut read: Vec<&'t [u8]> = Vec::new();
            for s in self.trace.spans {
                let header = s.resource;
                if !read
                    .iter()
                    .any(|r| std::ptr::eq(*r, header) || *r == header)
                {
                    read.push(header);
                    collect(resource_attributes(header), &mut index.resource);
                }
            }
            for view in self.spans() {
                collect(view.attributes(), &mut index.span);
            }
            index
        })
    }

    /// True if any resource or span has attribute `attr` satisfying the
    /// checks (the Collector's `hasResourceOrSpanWithCondition`).
    fn any_attribute(
        &self,
        attr: usize,
        resource_check: impl Fn(AnyValue<'_>) -> bool,
        span_check: impl Fn(AnyValue<'_>) -> bool,
    ) -> bool {
        let index = self.attributes();
        index.resource[attr].iter().any(|v| resource_check(*v))
            || index.span[attr].iter().any(|v| span_check(*v))
    }
}

impl PolicySet {
    pub(crate) fn new(
        nodes: Vec<Node>,
        sample_on_first_match: bool,
        slots: Vec<SlotKind>,
        attribute_keys: Vec<String>,
    ) -> PolicySet {
        fn walk(node: &Node, prefix: Option<&str>, out: &mut Vec<(Arc<str>, usize, String)>) {
            let name: Arc<str> = match prefix {
                Some(p) => Arc::from(format!("{p}/{}", node.name)),
                None => node.name.clone(),
            };
            match &node.rule {
                Rule::Adaptive(a) => {
                    let definition = format!("{} {:?} {:?}", a.kind, a.params, a.key);
                    out.push((name, a.slot, definition))
                }
                Rule::And(subs) | Rule::Drop(subs) => {
                    subs.iter().for_each(|s| walk(s, Some(&name), out))
                }
                Rule::Not(sub) => walk(sub, Some(&name), out),
                Rule::Composite { subs, .. } => {
                    subs.iter().for_each(|(s, _)| walk(s, Some(&name), out))
                }
                _ => {}
            }
        }
        let mut adaptive = Vec::new();
        nodes.iter().for_each(|n| walk(n, None, &mut adaptive));
        let mut budgets = Vec::new();
        nodes.iter().for_each(|n| budgets_of(n, None, &mut budgets));
        let reads_spans = nodes.iter().any(node_reads_spans);
        PolicySet {
            nodes,
            sample_on_first_match,
            slots,
            attribute_keys,
            use_tracestate: false,
            adaptive,
            budgets,
            reads_spans,
        }
    }

    /// The budgeted policies (`rate_limiting`, `bytes_limiting`,
    /// `composite`, `ema_throughput`, `windowed_throughput`) at any depth, in
    /// evaluation order: what a cluster shares among its samplers.
    pub fn fleet_budgets(&self) -> &[FleetBudget] {
        &self.budgets
    }

    /// The adaptive policies (tailgate's `ema_dynamic`, `ema_throughput`,
    /// `windowed_throughput`) at any depth, in evaluation order, with what
    /// their estimators in `state` are doing: their current rates, and the
    /// `top` keys with the most spans.
    pub fn adaptive_stats(
        &self,
        state: &PolicyState,
        top: usize,
    ) -> Vec<(Arc<str>, EstimatorStats)> {
        if !self.state_fits(state) {
            return Vec::new();
        }
        self.adaptive
            .iter()
            .filter_map(|(name, slot, _)| match &*state.slot(*slot)? {
                Slot::Adaptive(e) => Some((name.clone(), e.stats(top))),
                _ => None,
            })
            .collect()
    }

    /// Copies into `state` (made for this set) the estimators that `old`
    /// and its `old_state` hold for the adaptive policies this set defines
    /// the same way: the same name at the same place, the same kind and
    /// options. A reload that leaves such a policy as it was keeps its
    /// learned rates instead of starting again from the goal rate. Returns
    /// how many were carried over.
    pub fn carry_estimators(
        &self,
        state: &PolicyState,
        old: &PolicySet,
        old_state: &PolicyState,
    ) -> usize {
        if !self.state_fits(state) || !old.state_fits(old_state) {
            return 0;
        }
        let mut carried = 0;
        for (name, slot, definition) in &self.adaptive {
            let Some((_, old_slot, _)) = old
                .adaptive
                .iter()
                .find(|(n, _, d)| n == name && d == definition)
            else {
                continue;
            };
            let estimator = match old_state.slot(*old_slot).as_deref() {
                Some(Slot::Adaptive(e)) => e.clone(),
                _ => continue,
            };
            if let Some(mut new) = state.slot(*slot) {
                *new = Slot::Adaptive(estimator);
                carried += 1;
            }
        }
        carried
    }

    /// Turns the Collector's `processor.tailsamplingprocessor.usetracestate`
    /// gate on or off (off by default, as in contrib v0.165): with it on,
    /// `probabilistic` decides by the spans' `ot=rv` randomness when they
    /// carry one, and kept traces carry the threshold of their least strict
    /// sampling vote.
    pub fn set_use_tracestate(&mut self, on: bool) {
        self.use_tracestate = on;
    }

    /// Whether the `usetracestate` gate is on.
    pub fn use_tracestate(&self) -> bool {
        self.use_tracestate
    }

    /// Whether evaluating can read the trace's spans. When it cannot, a
    /// [`TraceView`] with no spans decides exactly as one with all of
    /// them: the summary and the trace ID are all that is read (the
    /// Collector's seed policies — `status_code`, `latency` without an upper
    /// bound, `probabilistic`, the limiters — and `and`/`not`/`drop`/
    /// `composite` of those), so the sampler skips gathering the spans of
    /// the traces it drops. With the `usetracestate` gate on, `probabilistic`
    /// and the limiters read the spans' `ot=rv`.
    pub fn reads_spans(&self) -> bool {
        self.reads_spans || self.use_tracestate
    }

    pub(crate) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    #[cfg(test)]
    pub(crate) fn into_parts(self) -> (Vec<Node>, Vec<SlotKind>, Vec<String>) {
        (self.nodes, self.slots, self.attribute_keys)
    }

    /// The top-level policy names, in evaluation order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| &*n.name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A fresh state for this set: full token buckets, zero counters.
    pub fn new_state(&self) -> PolicyState {
        PolicyState {
            kinds: self.slots.clone(),
            slots: self
                .slots
                .iter()
                .map(|kind| {
                    Mutex::new(match kind {
                        SlotKind::Bucket => Slot::Bucket {
                            tokens: 0.0,
                            last: None,
                            kept: KeptShare::default(),
                        },
                        SlotKind::Composite { subs } => Slot::Composite {
                            second: None,
                            sampled: vec![0; *subs],
                            borrowed: vec![0; *subs],
                            lent: vec![0; *subs],
                        },
                        SlotKind::Adaptive => Slot::Adaptive(Box::default()),
                    })
                })
                .collect(),
            fleet: self.slots.iter().map(|_| FleetCell::default()).collect(),
        }
    }

    fn state_fits(&self, state: &PolicyState) -> bool {
        state.kinds == self.slots
    }

    /// Decides `trace`. `now` is any monotonic time (the same epoch for every
    /// call with one state); only rate limiting reads it. Threads may share
    /// one state.
    pub fn evaluate(&self, state: &PolicyState, trace: &TraceView<'_>, now: Duration) -> Decision {
        self.decide(state, trace, now, &mut NoTimer)
    }

    /// [`PolicySet::evaluate`], telling `timer` when each top-level policy
    /// starts and stops.
    pub fn evaluate_timed(
        &self,
        state: &PolicyState,
        trace: &TraceView<'_>,
        now: Duration,
        timer: Option<&mut dyn PolicyTimer>,
    ) -> Decision {
        match timer {
            Some(timer) => self.decide(state, trace, now, timer),
            None => self.decide(state, trace, now, &mut NoTimer),
        }
    }

    /// Generic over the timer so that the untimed path carries no checks.
    fn decide<T: PolicyTimer + ?Sized>(
        &self,
        state: &PolicyState,
        trace: &TraceView<'_>,
        now: Duration,
        timer: &mut T,
    ) -> Decision {
        let fresh;
        let state = if self.state_fits(state) {
            state
        } else {
            fresh = self.new_state();
            &fresh
        };
        let ctx = Ctx {
            trace,
            now,
            attribute_keys: &self.attribute_keys,
            use_tracestate: self.use_tracestate,
            spans: OnceCell::new(),
            attributes: OnceCell::new(),
        };
        // The first policy to cast each kind of vote, as the Collector keeps.
        let mut first_sampled: Option<(usize, u32)> = None;
        let mut first_dropped: Option<usize> = None;
        let mut min_threshold = u64::MAX;
        let mut votes = Votes::default();
        for (i, node) in self.nodes.iter().enumerate() {
            timer.start(i);
            let vote = eval(node, &ctx, state);
            timer.stop(i);
            if vote.verdict == Verdict::Error {
                votes.record_error(i);
            } else {
                votes.record(i, vote.verdict == Verdict::Sampled);
            }
            match vote.verdict {
                Verdict::Sampled => {
                    first_sampled.get_or_insert((i, vote.composite_sub));
                    min_threshold = min_threshold.min(vote.threshold);
                }
                Verdict::NotSampled | Verdict::Error => {}
                Verdict::Dropped => {
                    first_dropped.get_or_insert(i);
                    break;
                }
            }
            if self.sample_on_first_match && vote.verdict == Verdict::Sampled {
                break;
            }
        }
        let name = |i: usize| Some(self.nodes[i].name.clone());
        let (outcome, policy, composite_policy) = if let Some(i) = first_dropped {
            (Outcome::Dropped, name(i), None)
        } else if let Some((i, sub)) = first_sampled {
            let sub_name = match &self.nodes[i].rule {
                Rule::Composite { subs, .. } if sub != NO_SUB => {
                    subs.get(sub as usize).map(|(node, _)| node.name.clone())
                }
                _ => None,
            };
            (Outcome::Sampled, name(i), sub_name)
        } else {
            (Outcome::NotSampled, None, None)
        };
        let threshold = (self.use_tracestate && outcome == Outcome::Sampled)
            .then(|| Threshold::from_value(min_threshold))
            .flatten();
        Decision {
            sampled: outcome.is_sampled(),
            outcome,
            policy,
            composite_policy,
            threshold,
            votes,
        }
    }
}

/// The budgeted policies under `node`, in evaluation order.
fn budgets_of(node: &Node, prefix: Option<&str>, out: &mut Vec<FleetBudget>) {
    let name: Arc<str> = match prefix {
        Some(p) => Arc::from(format!("{p}/{}", node.name)),
        None => node.name.clone(),
    };
    let mut push = |slot: usize, unit: BudgetUnit, per_second: f64| {
        out.push(FleetBudget {
            policy: name.clone(),
            slot,
            unit,
            per_second,
        })
    };
    match &node.rule {
        Rule::RateLimiting {
            slot, per_second, ..
        } => push(*slot, BudgetUnit::Spans, *per_second as f64),
        Rule::BytesLimiting {
            slot, per_second, ..
        } => push(*slot, BudgetUnit::Bytes, *per_second as f64),
        Rule::Composite {
            slot,
            max_total,
            subs,
            ..
        } => {
            push(*slot, BudgetUnit::Spans, *max_total as f64);
            subs.iter()
                .for_each(|(s, _)| budgets_of(s, Some(&name), out));
        }
        Rule::Adaptive(a) => match &a.params.method {
            Method::EmaThroughput { goal_per_sec, .. } | Method::Windowed { goal_per_sec, .. } => {
                push(a.slot, BudgetUnit::Spans, *goal_per_sec)
            }
            Method::EmaDynamic { .. } => {}
        },
        Rule::And(subs) | Rule::Drop(subs) => {
            subs.iter().for_each(|s| budgets_of(s, Some(&name), out))
        }
        Rule::Not(sub) => budgets_of(sub, Some(&name), out),
        _ => {}
    }
}

/// latency.go with `upper_threshold_ms`: after each span, in order, the
/// running earliest start and latest end (a zero timestamp resets them, as
/// there), and true as soon as their distance in whole milliseconds lies in
/// `(threshold, upper]`.
fn running_latency_in_range(spans: &[SpanView<'_>], threshold: i128, upper: i128) -> bool {
    let (mut min, mut max) = (0u64, 0u64);
    spans.iter().any(|span| {
        if min == 0 || span.start_time_unix_nano < min {
            min = span.start_time_unix_nano;
        }
        if max == 0 || span.end_time_unix_nano > max {
            max = span.end_time_unix_nano;
        }
        // Go's Time.Sub saturates at the Duration range.
        let nanos =
            (i128::from(max) - i128::from(min)).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        let ms = nanos / 1_000_000;
        threshold < ms && ms <= upper
    })
}

/// Whether evaluating `node` can read spans (beyond the summary and the
/// trace ID) with the `usetracestate` gate off: the types that read only
/// those are listed, every other type reads spans.
fn node_reads_spans(node: &Node) -> bool {
    match &node.rule {
        Rule::AlwaysSample
        | Rule::StatusCode { .. }
        | Rule::SpanCount { .. }
        | Rule::TraceFlags
        | Rule::Probabilistic { .. }
        | Rule::RateLimiting { .. } => false,
        Rule::Latency {
            upper_threshold_ms, ..
        } => upper_threshold_ms.is_some(),
        Rule::And(nodes) | Rule::Drop(nodes) => nodes.iter().any(node_reads_spans),
        Rule::Not(node) => node_reads_spans(node),
        Rule::Composite { subs, .. } => subs.iter().any(|(node, _)| node_reads_spans(node)),
        _ => true,
    }
}

fn eval(node: &Node, ctx: &Ctx<'_>, state: &PolicyState) -> Vote {
    let summary = ctx.trace.summary;
    let has_spans = summary.span_count() > 0;
    match &node.rule {
        Rule::AlwaysSample => Vote::of(Verdict::Sampled),
        Rule::Latency {
            threshold_ms,
            upper_threshold_ms,
        } => {
            let t = i128::from(*threshold_ms);
            match upper_threshold_ms {
                // latency.go: Go's Duration.Milliseconds() truncates toward
                // zero, and `threshold_ms` is an exclusive lower bound with
                // or without an upper one (contrib #49595, v0.157). The
                // running duration only grows span by span, so "some prefix
                // passes the threshold" is "the whole trace does": read
                // from the summary.
                None => Vote::sampled_if(has_spans && summary.duration_nanos() / 1_000_000 > t),
                // With an upper bound the Collector's answer depends on span
                // order: it checks the running duration after each span, in
                // arrival order, and keeps the trace as soon as one prefix is
                // in range, even if the whole trace is longer. Same here.
                Some(u) => {
                    Vote::sampled_if(running_latency_in_range(ctx.spans(), t, i128::from(*u)))
                }
            }
        }
        Rule::StatusCode { mask, .. } => Vote::sampled_if(summary.status_bits() & mask != 0),
        Rule::Probabilistic {
            salt,
            salt_source,
            hash_threshold,
            otel,
            ..
        } => {
            // probabilistic.go: with the usetracestate gate on, the `rv`
            // randomness of the first span that carries one decides against
            // the OTel threshold (rv >= th keeps); without one, or with the
            // gate off, the FNV hash of salt and trace ID does.
            let rv = ctx.randomness();
            let keep = match rv {
                Some(rv) => otel.is_some_and(|th| rv >= th.value()),
                None => hash_trace_id(salt.as_bytes(), &ctx.trace.trace_id.0) <= *hash_threshold,
            };
            if keep {
                Vote {
                    verdict: Verdict::Sampled,
                    source: if rv.is_some() {
                        SOURCE_RV
                    } else {
                        *salt_source
                    },
                    threshold: otel.map_or(0, |t| t.value()),
                    composite_sub: NO_SUB,
                }
            } else {
                Vote::of(Verdict::NotSampled)
            }
        }
        Rule::StringAttribute {
            attr,
            matcher,
            invert,
            ..
        } => {
            let matches = |s: &str| match matcher {
                StringMatcher::Exact(set) => set.contains(s),
                StringMatcher::Regex(list) => list.iter().any(|r| r.is_match(s)),
            };
            // string_tag_filter.go: a resource value is matched as pdata's
            // Str() gives it ("" for a non-string); a span value only when
            // it is a non-empty string.
            let matched = ctx.any_attribute(
                *attr,
                |v| matches(v.as_str().unwrap_or("")),
                |v| v.as_str().is_some_and(|s| !s.is_empty() && matches(s)),
            );
            Vote::matched(matched, *invert)
        }
        Rule::NumericAttribute {
            attr,
            min,
            max,
            invert,
            ..
        } => {
            let (lo, hi) = (min.unwrap_or(i64::MIN), max.unwrap_or(i64::MAX));
            // pdata's Int() is 0 for a value that is not an int.
            let in_range = |v: AnyValue<'_>| {
                let n = match v {
                    AnyValue::Int(n) => n,
                    _ => 0,
                };
                lo <= n && n <= hi
            };
            let matched = ctx.any_attribute(*attr, in_range, in_range);
            Vote::matched(matched, *invert)
        }
        Rule::BooleanAttribute {
            attr,
            value,
            invert,
            ..
        } => {
            // pdata's Bool() is false for a value that is not a bool.
            let equal = |v: AnyValue<'_>| matches!(v, AnyValue::Bool(true)) == *value;
            let matched = ctx.any_attribute(*attr, equal, equal);
            Vote::matched(matched, *invert)
        }
        Rule::SpanCount { min, max } => {
            let n = summary.span_count() as i64;
            Vote::sampled_if(match max {
                None => n >= *min,
                Some(hi) => *min <= n && n <= *hi,
            })
        }
        Rule::TraceState { key, set, .. } => {
            let matched = ctx
                .spans()
                .iter()
                .any(|s| tracestate::get(s.trace_state(), key).is_some_and(|v| set.contains(v)));
            Vote::sampled_if(matched)
        }
        Rule::TraceFlags => Vote::sampled_if(summary.sampled_flag_seen()),
        Rule::RateLimiting {
            slot,
            per_second,
            burst,
        } => {
            let n = summary.span_count();
            let share = state.ask(*slot, n);
            limiter_vote(take_tokens(
                state,
                *slot,
                ctx.now,
                *per_second as f64 * share,
                *burst as f64 * share,
                n,
                ctx.limiter_randomness(),
            ))
        }
        Rule::BytesLimiting {
            slot,
            per_second,
            burst,
        } => {
            // bytes_limiting.go charges ptrace.ProtoMarshaler.TracesSize:
            // the protobuf size of the trace's spans under their resource
            // and scope groups, which is what writing them out produces.
            let n = proto::write::encoded_len(ctx.trace.spans) as u64;
            let share = state.ask(*slot, n);
            limiter_vote(take_tokens(
                state,
                *slot,
                ctx.now,
                *per_second as f64 * share,
                *burst as f64 * share,
                n,
                ctx.limiter_randomness(),
            ))
        }
        Rule::Adaptive(a) => eval_adaptive(a, ctx, state),
        Rule::And(subs) => {
            // and.go: every sub-policy must sample; the first that does not
            // ends the evaluation.
            let mut threshold = (0, SOURCE_NONE);
            for sub in subs {
                let v = eval(sub, ctx, state);
                if v.verdict == Verdict::Error {
                    return v;
                }
                if v.verdict != Verdict::Sampled {
                    return Vote::of(Verdict::NotSampled);
                }
                threshold = and_threshold(threshold, (v.threshold, v.source));
            }
            Vote {
                verdict: Verdict::Sampled,
                source: threshold.1,
                threshold: threshold.0,
                composite_sub: NO_SUB,
            }
        }
        Rule::Drop(subs) => {
            // drop.go: dropped when every sub-policy matches.
            for sub in subs {
                let v = eval(sub, ctx, state);
                if v.verdict == Verdict::Error {
                    return v;
                }
                if v.verdict != Verdict::Sampled {
                    return Vote::of(Verdict::NotSampled);
                }
            }
            Vote::of(Verdict::Dropped)
        }
        Rule::Not(sub) => {
            // not.go: swaps sampled and not sampled; anything else passes.
            let v = eval(sub, ctx, state);
            match v.verdict {
                Verdict::Sampled => Vote::of(Verdict::NotSampled),
                Verdict::NotSampled => Vote::of(Verdict::Sampled),
                Verdict::Dropped | Verdict::Error => v,
            }
        }
        Rule::Composite {
            slot,
            max_total,
            subs,
            lending,
        } => {
            // composite.go: per-second span budgets, one per sub-policy,
            // reset at each new second.
            // The counters are locked to reset them and to spend from them,
            // not while sub-policies are evaluated.
            let second = ctx.now.as_secs();
            if let Some(mut guard) = state.slot(*slot)
                && let Slot::Composite {
                    second: s,
                    sampled,
                    borrowed,
                    lent,
                } = &mut *guard
                && *s != Some(second)
            {
                *s = Some(second);
                for v in [sampled, borrowed, lent] {
                    v.iter_mut().for_each(|n| *n = 0);
                }
            }
            let count = summary.span_count() as i64;
            let share = state.ask(*slot, summary.span_count());
            // This node's part of the budgets (all of them standalone).
            let max_total = *max_total as f64 * share;
            for (i, (sub, _)) in subs.iter().enumerate() {
                let v = eval(sub, ctx, state);
                if v.verdict == Verdict::Error {
                    return v;
                }
                if v.verdict == Verdict::Sampled {
                    let Some(mut guard) = state.slot(*slot) else {
                        return Vote::of(Verdict::NotSampled);
                    };
                    let Slot::Composite {
                        sampled,
                        borrowed,
                        lent,
                        ..
                    } = &mut *guard
                    else {
                        return Vote::of(Verdict::NotSampled);
                    };
                    let if_sampled = sampled[i].saturating_add(count);
                    // What is left of each sub-policy's allocation this second.
                    let rooms: Vec<f64> = subs
                        .iter()
                        .enumerate()
                        .map(|(j, (_, a))| {
                            *a as f64 * share - (sampled[j] - borrowed[j] + lent[j]) as f64
                        })
                        .collect();
                    let fits = count as f64 <= rooms[i];
                    let need = count as f64 - rooms[i].max(0.0);
                    let lend = !fits && *lending && {
                        let total: i64 = sampled.iter().sum();
                        let spare: f64 = rooms
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i)
                            .map(|(_, r)| r.max(0.0))
                            .sum();
                        need <= spare && total.saturating_add(count) as f64 <= max_total
                    };
                    if (fits || lend) && if_sampled as f64 <= max_total {
                        if lend {
                            // Borrow what is missing from the others, in order.
                            let mut need = need.ceil() as i64;
                            borrowed[i] += need;
                            for (j, room) in rooms.iter().enumerate() {
                                if j == i || need <= 0 {
                                    continue;
                                }
                                let take = (room.max(0.0).floor() as i64).min(need);
                                lent[j] += take;
                                need -= take;
                            }
                        }
                        sampled[i] = if_sampled;
                        // The sub-policy's threshold passes through: an
                        // adaptive or probabilistic keep is still one.
                        return Vote {
                            composite_sub: u32::try_from(i).unwrap_or(NO_SUB),
                            threshold: v.threshold,
                            source: v.source,
                            ..Vote::of(Verdict::Sampled)
                        };
                    }
                    // Over budget; the counter stays so that a smaller trace
                    // may still fit this second.
                    return Vote::of(Verdict::NotSampled);
                }
            }
            Vote::of(Verdict::NotSampled)
        }
        // ottl.go: any span or span event condition true samples.
        Rule::OttlCondition(c) => match c.evaluate(ctx.trace.spans, ctx.spans()) {
            ottl::Outcome::Matched(_) => Vote::of(Verdict::Sampled),
            ottl::Outcome::NotMatched => Vote::of(Verdict::NotSampled),
            ottl::Outcome::Error(_) => Vote::of(Verdict::Error),
        },
    }
}

/// An adaptive policy's vote (out of line: `eval`'s common arms stay small).
#[inline(never)]
fn eval_adaptive(a: &adaptive::Adaptive, ctx: &Ctx<'_>, state: &PolicyState) -> Vote {
    let summary = ctx.trace.summary;
    // Refinery counts a trace's spans under its key, then reads the
    // key's rate.
    let key = a
        .key
        .build(&ctx.spans_with_resources(), summary.span_count());
    let share = state.ask(a.slot, summary.span_count());
    let rate = match state.slot(a.slot) {
        Some(mut guard) => match &mut *guard {
            Slot::Adaptive(e) => {
                e.set_goal_share(share);
                e.observe(&a.params, &key, summary.span_count() as f64, ctx.now)
            }
            _ => 1,
        },
        None => 1,
    };
    let threshold = adaptive::threshold(rate).map_or(0, |t| t.value());
    // With the usetracestate gate, the spans' own `ot=rv` decides, as
    // for probabilistic, so that upstream consistent sampling nests.
    let (rv, source) = match ctx.randomness() {
        Some(rv) => (rv, SOURCE_RV),
        None => (adaptive::randomness(&ctx.trace.trace_id.0), SOURCE_ADAPTIVE),
    };
    if rv >= threshold {
        Vote {
            verdict: Verdict::Sampled,
            source,
            threshold,
            composite_sub: NO_SUB,
        }
    } else {
        Vote::of(Verdict::NotSampled)
    }
}

/// What a limiter was asked for (spans or bytes) this second and the
/// one before: its offered rate, from which, with the usetracestate gate,
/// it keeps a consistent share of traces (issue 16; the Collector's
/// limiting policies report a threshold too, contrib #49979, computed there
/// per batch of traces sorted by randomness).
#[derive(Debug, Default, Clone, Copy)]
struct KeptShare {
    second: Option<u64>,
    /// `[previous second, this second]`.
    offered: [f64; 2],
    /// Whether `offered[0]` is a second that was counted.
    whole_second: bool,
}

impl KeptShare {
    /// Counts a request of `n` at `now`; returns the offered rate per
    /// second over the window, this request included.
    fn offered_rate(&mut self, now: Duration, n: f64) -> f64 {
        let second = now.as_secs();
        match self.second {
            Some(s) if s == second => {}
            Some(s) if s + 1 == second => {
                self.offered = [self.offered[1], 0.0];
                self.whole_second = true;
                self.second = Some(second);
            }
            _ => {
                self.offered = [0.0; 2];
                self.whole_second = false;
                self.second = Some(second);
            }
        }
        self.offered[1] += n;
        let into = now.as_secs_f64() - second as f64;
        if self.whole_second {
            (self.offered[0] + self.offered[1]) / (1.0 + into)
        } else {
            // A first part-second is a noisy sample: never read as more
            // than 20 times what it counted.
            self.offered[1] / into.max(0.05)
        }
    }
}

/// A limiter's vote: a keep carries `threshold` (0 while the limiter keeps
/// everything). Its randomness is the trace-ID hash the adaptive policies
/// use, or the spans' `ot=rv`.
fn limiter_vote((keep, threshold, source): (bool, u64, u16)) -> Vote {
    if !keep {
        return Vote::of(Verdict::NotSampled);
    }
    Vote {
        source: if threshold == 0 { SOURCE_NONE } else { source },
        threshold,
        ..Vote::of(Verdict::Sampled)
    }
}

/// golang.org/x/time/rate `Limiter.AllowN(now, n)` with rate `per_second`
/// and burst `burst`: the bucket starts full, refills continuously, and a
/// request larger than the burst never passes. Tokens change only when the
/// request passes, as in the Go limiter.
///
/// With the usetracestate gate (`randomness` given), a limiter asked for
/// more than its rate keeps traces consistently, as a sampler: only those
/// whose randomness passes the threshold of `per_second / offered rate`
/// go on to the bucket, and a keep carries that threshold, so that summing
/// 1/p over kept spans estimates what was sent whatever the traces' sizes
/// (first come, first served, small traces would take the tokens big ones
/// wait for). Returns whether it keeps, the threshold, and its source.
fn take_tokens(
    state: &PolicyState,
    slot: usize,
    now: Duration,
    per_second: f64,
    burst: f64,
    n: u64,
    randomness: Option<(u64, u16)>,
) -> (bool, u64, u16) {
    let Some(mut guard) = state.slot(slot) else {
        return (false, 0, SOURCE_NONE);
    };
    let Slot::Bucket { tokens, last, kept } = &mut *guard else {
        return (false, 0, SOURCE_NONE);
    };
    let n = n as f64;
    let (mut threshold, mut source) = (0, SOURCE_NONE);
    if let Some((r, from)) = randomness {
        let offered = kept.offered_rate(now, n);
        if offered > per_second {
            threshold =
                Threshold::from_percentage(per_second / offered * 100.0).map_or(0, |t| t.value());
            source = from;
            if r < threshold {
                return (false, threshold, source);
            }
        }
    }
    if n > burst {
        return (false, threshold, source);
    }
    let available = match *last {
        None => burst,
        Some(at) => (*tokens + now.saturating_sub(at).as_secs_f64() * per_second).min(burst),
    };
    if available < n {
        return (false, threshold, source);
    }
    *tokens = available - n;
    *last = Some(now);
    (true, threshold, source)
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
