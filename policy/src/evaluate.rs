//! Deciding one trace: each policy votes as the Collector's evaluators do
//! (processor/tailsamplingprocessor/internal/sampling/*.go), and the votes
//! combine as its `makeDecision` does (processor.go): a drop wins, then an
//! inverted not-sampled, then a sampled, then an inverted sampled when no
//! policy said not-sampled; anything else is not sampled.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proto::view::{AnyValue, SpanView, TraceId, resource_attributes};
use proto::write::SpanRef;

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
    /// Only `invert_match` policies voted to keep it (deprecated in the
    /// Collector, still honoured by default), and none said not-sampled.
    InvertSampled,
    /// A `drop` policy matched.
    Dropped,
    /// An `invert_match` policy matched, which vetoes sampling.
    InvertNotSampled,
    /// No policy sampled it.
    NotSampled,
}

impl Outcome {
    pub fn is_sampled(self) -> bool {
        matches!(self, Outcome::Sampled | Outcome::InvertSampled)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Sampled => "sampled",
            Outcome::InvertSampled => "sampled (inverted)",
            Outcome::Dropped => "dropped",
            Outcome::InvertNotSampled => "not sampled (inverted)",
            Outcome::NotSampled => "not sampled",
        })
    }
}

/// The decision for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub sampled: bool,
    pub outcome: Outcome,
    /// The top-level policy that decided: the first that sampled, the drop
    /// policy that dropped, the inverted policy that vetoed; `None` when no
    /// policy sampled.
    pub policy: Option<Arc<str>>,
    /// For a trace kept by `probabilistic` policies only (no other policy
    /// sampled it), the least restrictive of their thresholds: the OTel
    /// threshold to write into each span's `tracestate`. `None` otherwise,
    /// and for 100%.
    pub threshold: Option<Threshold>,
}

impl Decision {
    /// `span` with this decision's annotations appended (see
    /// [`crate::annotate_span`]); `record_policy` adds the
    /// `tailsampling.policy` attribute (off by default in the Collector).
    pub fn annotate<'s>(&self, span: &'s [u8], record_policy: bool) -> Cow<'s, [u8]> {
        if !self.sampled {
            return Cow::Borrowed(span);
        }
        let policy = if record_policy {
            self.policy.as_deref()
        } else {
            None
        };
        crate::annotate::annotate_span(span, policy, self.threshold)
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
}

/// What a stateful policy keeps between evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotKind {
    Bucket,
    Composite { subs: usize },
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
}

impl PolicyState {
    /// Slot `at`. A poisoned lock only means a thread panicked mid-update
    /// of token counts: still usable.
    fn slot(&self, at: usize) -> Option<MutexGuard<'_, Slot>> {
        self.slots
            .get(at)
            .map(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[derive(Debug, Clone)]
enum Slot {
    /// golang.org/x/time/rate's limiter: tokens, and the time they were
    /// counted at (`None`: never used, the bucket is full).
    Bucket { tokens: f64, last: Option<Duration> },
    /// composite.go: spans sampled by each sub-policy in `second`.
    Composite {
        second: Option<u64>,
        sampled: Vec<i64>,
    },
}

/// One policy's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Sampled,
    NotSampled,
    InvertSampled,
    InvertNotSampled,
    Dropped,
    /// The policy failed to evaluate (an `ottl_condition` with
    /// `error_mode: propagate`): no vote, as the Collector skips a policy
    /// that returns an error; `and`, `drop` and `composite` fail with it.
    Error,
}

#[derive(Debug, Clone, Copy)]
struct Vote {
    verdict: Verdict,
    /// The OTel threshold behind a Sampled vote: 0 unless only
    /// probabilistic sampling kept it.
    threshold: u64,
}

impl Vote {
    fn of(verdict: Verdict) -> Vote {
        Vote {
            verdict,
            threshold: 0,
        }
    }

    fn sampled_if(keep: bool) -> Vote {
        Vote::of(if keep {
            Verdict::Sampled
        } else {
            Verdict::NotSampled
        })
    }

    fn inverted(matched: bool) -> Vote {
        Vote::of(if matched {
            Verdict::InvertNotSampled
        } else {
            Verdict::InvertSampled
        })
    }
}

/// What one evaluation reads, parsed at most once and only if a policy
/// needs span bytes.
struct Ctx<'t> {
    trace: &'t TraceView<'t>,
    now: Duration,
    attribute_keys: &'t [String],
    spans: OnceCell<Vec<SpanView<'t>>>,
    /// bytes_limiting's estimate of the trace's size ([`crate::size`]).
    size: OnceCell<u64>,
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
        PolicySet {
            nodes,
            sample_on_first_match,
            slots,
            attribute_keys,
        }
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
                        },
                        SlotKind::Composite { subs } => Slot::Composite {
                            second: None,
                            sampled: vec![0; *subs],
                        },
                    })
                })
                .collect(),
        }
    }

    fn state_fits(&self, state: &PolicyState) -> bool {
        state.kinds == self.slots
    }

    /// Decides `trace`. `now` is any monotonic time (the same epoch for every
    /// call with one state); only rate limiting reads it. Threads may share
    /// one state.
    pub fn evaluate(&self, state: &PolicyState, trace: &TraceView<'_>, now: Duration) -> Decision {
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
            spans: OnceCell::new(),
            size: OnceCell::new(),
            attributes: OnceCell::new(),
        };
        // The first policy to cast each kind of vote, as the Collector keeps.
        let mut first_sampled: Option<usize> = None;
        let mut first_invert_sampled: Option<usize> = None;
        let mut first_invert_not_sampled: Option<usize> = None;
        let mut first_dropped: Option<usize> = None;
        let mut any_not_sampled = false;
        let mut min_threshold = u64::MAX;
        for (i, node) in self.nodes.iter().enumerate() {
            let vote = eval(node, &ctx, state);
            match vote.verdict {
                Verdict::Sampled => {
                    first_sampled.get_or_insert(i);
                    min_threshold = min_threshold.min(vote.threshold);
                }
                Verdict::InvertSampled => {
                    first_invert_sampled.get_or_insert(i);
                }
                Verdict::InvertNotSampled => {
                    first_invert_not_sampled.get_or_insert(i);
                }
                Verdict::NotSampled => any_not_sampled = true,
                Verdict::Error => {}
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
        let (outcome, policy) = if let Some(i) = first_dropped {
            (Outcome::Dropped, name(i))
        } else if let Some(i) = first_invert_not_sampled {
            (Outcome::InvertNotSampled, name(i))
        } else if let Some(i) = first_sampled {
            (Outcome::Sampled, name(i))
        } else if let Some(i) = first_invert_sampled.filter(|_| !any_not_sampled) {
            (Outcome::InvertSampled, name(i))
        } else {
            (Outcome::NotSampled, None)
        };
        let threshold =
            (outcome == Outcome::Sampled && min_threshold != 0 && min_threshold != u64::MAX)
                .then(|| Threshold::from_value(min_threshold))
                .flatten();
        Decision {
            sampled: outcome.is_sampled(),
            outcome,
            policy,
            threshold,
        }
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
                // zero. The running duration only grows span by span, so
                // "some prefix reaches the threshold" is "the whole trace
                // does": read from the summary.
                None => Vote::sampled_if(has_spans && summary.duration_nanos() / 1_000_000 >= t),
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
            hash_threshold,
            otel,
            ..
        } => {
            if hash_trace_id(salt.as_bytes(), &ctx.trace.trace_id.0) <= *hash_threshold {
                Vote {
                    verdict: Verdict::Sampled,
                    threshold: otel.map_or(0, |t| t.value()),
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
            if *invert {
                Vote::inverted(matched)
            } else {
                Vote::sampled_if(matched)
            }
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
            if *invert {
                Vote::inverted(matched)
            } else {
                Vote::sampled_if(matched)
            }
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
            if *invert {
                Vote::inverted(matched)
            } else {
                Vote::sampled_if(matched)
            }
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
        } => Vote::sampled_if(take_tokens(
            state,
            *slot,
            ctx.now,
            *per_second,
            *burst,
            summary.span_count(),
        )),
        Rule::BytesLimiting {
            slot,
            per_second,
            burst,
        } => Vote::sampled_if(take_tokens(
            state,
            *slot,
            ctx.now,
            *per_second,
            *burst,
            *ctx.size
                .get_or_init(|| crate::size::trace_size(ctx.trace.spans)),
        )),
        Rule::And(subs) => {
            // and.go: every sub-policy must sample; the first that does not
            // ends the evaluation.
            let mut threshold = 0;
            for sub in subs {
                let v = eval(sub, ctx, state);
                if v.verdict == Verdict::Error {
                    return v;
                }
                if matches!(v.verdict, Verdict::NotSampled | Verdict::InvertNotSampled) {
                    return Vote::of(Verdict::NotSampled);
                }
                if v.verdict == Verdict::Sampled {
                    threshold = threshold.max(v.threshold);
                }
            }
            Vote {
                verdict: Verdict::Sampled,
                threshold,
            }
        }
        Rule::Drop(subs) => {
            // drop.go: dropped when every sub-policy matches.
            for sub in subs {
                let v = eval(sub, ctx, state);
                if v.verdict == Verdict::Error {
                    return v;
                }
                if matches!(v.verdict, Verdict::NotSampled | Verdict::InvertNotSampled) {
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
                _ => v,
            }
        }
        Rule::Composite {
            slot,
            max_total,
            subs,
        } => {
            // composite.go: per-second span budgets, one per sub-policy,
            // reset at each new second.
            // The counters are locked to reset them and to spend from them,
            // not while sub-policies are evaluated.
            let second = ctx.now.as_secs();
            if let Some(mut guard) = state.slot(*slot)
                && let Slot::Composite { second: s, sampled } = &mut *guard
                && *s != Some(second)
            {
                *s = Some(second);
                sampled.iter_mut().for_each(|n| *n = 0);
            }
            let count = summary.span_count() as i64;
            for (i, (sub, allocated)) in subs.iter().enumerate() {
                let v = eval(sub, ctx, state);
                if v.verdict == Verdict::Error {
                    return v;
                }
                if matches!(v.verdict, Verdict::Sampled | Verdict::InvertSampled) {
                    let Some(mut guard) = state.slot(*slot) else {
                        return Vote::of(Verdict::NotSampled);
                    };
                    let Slot::Composite { sampled, .. } = &mut *guard else {
                        return Vote::of(Verdict::NotSampled);
                    };
                    let if_sampled = sampled[i].saturating_add(count);
                    if if_sampled <= *allocated && if_sampled <= *max_total {
                        sampled[i] = if_sampled;
                        return Vote::of(Verdict::Sampled);
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

/// golang.org/x/time/rate `Limiter.AllowN(now, n)` with rate `per_second`
/// and burst `burst`: the bucket starts full, refills continuously, and a
/// request larger than the burst never passes. State changes only when the
/// request passes, as in the Go limiter.
fn take_tokens(
    state: &PolicyState,
    slot: usize,
    now: Duration,
    per_second: i64,
    burst: i64,
    n: u64,
) -> bool {
    let Some(mut guard) = state.slot(slot) else {
        return false;
    };
    let Slot::Bucket { tokens, last } = &mut *guard else {
        return false;
    };
    let (burst, n) = (burst as f64, n as f64);
    if n > burst {
        return false;
    }
    let available = match *last {
        None => burst,
        Some(at) => (*tokens + now.saturating_sub(at).as_secs_f64() * per_second as f64).min(burst),
    };
    if available < n {
        return false;
    }
    *tokens = available - n;
    *last = Some(now);
    true
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
