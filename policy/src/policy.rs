//! From the Collector's configuration shape to compiled policies: defaults,
//! ranges and cross-field rules, each error placed in the file and naming
//! its policy.
//!
//! Construction follows the Collector's
//! processor/tailsamplingprocessor/processor.go (`getSharedPolicyEvaluator`,
//! `loadSamplingPolicies`: names required and unique, drop policies
//! evaluated first), and_helper.go, not_helper.go and composite_helper.go
//! (rate allocation). Where the Collector accepts a value that can only be a
//! mistake (a percentage above 100, a rate of zero, a type block that does
//! not match the policy's type), tailgate refuses it and says why.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use crate::adaptive;
use crate::config::{self, Document, Form, RawPolicy, Step};
use crate::duration;
use crate::error::PolicyError;
use crate::evaluate::{PolicySet, SlotKind};
use crate::ottl::{ErrorMode, OttlCondition};
use crate::probabilistic::{self, Threshold};

/// The Collector's defaults (processor/tailsamplingprocessor/factory.go and
/// README.md).
const DEFAULT_DECISION_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_NUM_TRACES: u64 = 50_000;

/// A validated policy file: the timing settings and the compiled policies.
#[derive(Debug)]
pub struct PolicyFile {
    /// How long after a trace's first span to decide. Default 30s.
    pub decision_wait: Duration,
    /// How long after the root span arrives to decide, if sooner than
    /// `decision_wait`; `None` (the default, or `0s`) disables it.
    pub decision_wait_after_root_received: Option<Duration>,
    /// How many traces to keep in memory. Default 50000.
    pub num_traces: u64,
    /// Sizes of the decision caches (trace IDs); 0, the default, disables.
    pub decision_cache: DecisionCacheSizes,
    /// Decide as soon as a policy samples. Default false.
    pub sample_on_first_match: bool,
    /// The compiled policies (regexes compiled once), in evaluation order.
    pub policies: PolicySet,
    /// Where the `tail_sampling` block was found, when the file is more than
    /// the block (`processors.tail_sampling of a Collector configuration`).
    pub origin: Option<String>,
    /// Things accepted but worth a word: keys with no effect in tailgate,
    /// Collector behaviour that may surprise.
    pub notes: Vec<String>,
    /// `sampling_strategy`: when decisions are taken. Default trace-complete.
    pub sampling_strategy: SamplingStrategy,
    /// `maximum_trace_size_bytes`: a trace whose spans pass this many bytes
    /// is dropped at once, before its decision (0, the default: no limit).
    pub maximum_trace_size_bytes: Option<u64>,
    /// `num_shards`: the Collector's shard count, used as the sampler's
    /// `shards` when its own configuration does not set them.
    pub num_shards: Option<u16>,
    /// `block_on_overflow`: with `num_traces` reached, wait for room (true)
    /// rather than evict the oldest trace (false, the Collector's default).
    pub block_on_overflow: bool,
    /// `drop_pending_traces_on_shutdown`: on shutdown, drop the traces not
    /// yet due instead of deciding them.
    pub drop_pending_traces_on_shutdown: bool,
}

/// The Collector's `sampling_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplingStrategy {
    /// `trace-complete`: decide once per trace, after `decision_wait` (or
    /// the root span's wait).
    #[default]
    TraceComplete,
    /// `span-ingest`: evaluate as spans arrive; a trace is kept or dropped
    /// as soon as a policy says so, and one still undecided when its wait
    /// ends is not sampled, without another evaluation. Stateless policies
    /// only.
    SpanIngest,
}

/// `decision_cache` sizes, in trace IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecisionCacheSizes {
    /// Trace IDs remembered as kept. Default 0 (off).
    pub sampled: u64,
    /// Trace IDs remembered as not kept. Default 0 (off).
    pub non_sampled: u64,
}

impl PolicyFile {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<PolicyFile, PolicyError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: file.clone(),
            source,
        })?;
        PolicyFile::parse(&source, &file)
    }

    /// Validates a policy file's text; `file_name` is used in messages.
    pub fn parse(source: &str, file_name: &str) -> Result<PolicyFile, PolicyError> {
        let doc = config::load(source, file_name)?;
        Compiler {
            doc: &doc,
            slots: Vec::new(),
            attribute_keys: Vec::new(),
            notes: Vec::new(),
        }
        .file()
    }
}

/// A compiled policy: its name and what it checks.
#[derive(Debug)]
pub(crate) struct Node {
    pub name: Arc<str>,
    pub rule: Rule,
}

#[derive(Debug)]
pub(crate) enum Rule {
    AlwaysSample,
    Latency {
        threshold_ms: i64,
        upper_threshold_ms: Option<i64>,
    },
    StatusCode {
        codes: Vec<String>,
        /// Bit `1 << code` for each listed code.
        mask: u8,
    },
    Probabilistic {
        percentage: f64,
        salt: String,
        salt_given: bool,
        /// Which randomness the FNV hash of this salt is, to tell votes
        /// drawn from the same hash from independent ones (crate::evaluate,
        /// `and`'s threshold).
        salt_source: u16,
        hash_threshold: u64,
        otel: Option<Threshold>,
    },
    StringAttribute {
        key: String,
        /// Index of `key` in the set's attribute keys.
        attr: usize,
        values: Vec<String>,
        matcher: StringMatcher,
        invert: bool,
    },
    NumericAttribute {
        key: String,
        attr: usize,
        min: Option<i64>,
        max: Option<i64>,
        invert: bool,
    },
    BooleanAttribute {
        key: String,
        attr: usize,
        value: bool,
        invert: bool,
    },
    SpanCount {
        min: i64,
        max: Option<i64>,
    },
    TraceState {
        key: String,
        values: Vec<String>,
        set: HashSet<String>,
    },
    TraceFlags,
    RateLimiting {
        slot: usize,
        per_second: i64,
        burst: i64,
    },
    BytesLimiting {
        slot: usize,
        per_second: i64,
        burst: i64,
    },
    And(Vec<Node>),
    Drop(Vec<Node>),
    Not(Box<Node>),
    Composite {
        slot: usize,
        max_total: i64,
        /// Each sub-policy with its spans-per-second allocation.
        subs: Vec<(Node, i64)>,
        /// `budget_lending` (tailgate extension): unused allocations are lent
        /// to the sub-policies past theirs, within the same second.
        lending: bool,
    },
    OttlCondition(Box<OttlCondition>),
    /// `ema_dynamic`, `ema_throughput`, `windowed_throughput` (tailgate
    /// extensions, see crate::adaptive).
    Adaptive(Box<adaptive::Adaptive>),
}

#[derive(Debug)]
pub(crate) enum StringMatcher {
    Exact(HashSet<String>),
    /// Unanchored, as Go's `regexp.MatchString` is.
    Regex(Vec<Regex>),
}

/// Where a policy sits, which decides the types it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    /// Under `and` or `drop`.
    AndSub,
    Not,
    Composite,
}

/// Whether `kind` is a policy type tailgate knows (at any level).
pub(crate) fn is_known_type(kind: &str) -> bool {
    SHARED_TYPES.contains(&kind)
        || adaptive::TYPES.contains(&kind)
        || matches!(kind, "and" | "drop" | "not" | "composite")
}

/// Every policy type tailgate knows.
pub(crate) fn known_types() -> Vec<&'static str> {
    SHARED_TYPES
        .iter()
        .copied()
        .chain(["and", "drop", "not", "composite"])
        .chain(adaptive::TYPES)
        .collect()
}

const SHARED_TYPES: [&str; 13] = [
    "always_sample",
    "latency",
    "numeric_attribute",
    "probabilistic",
    "status_code",
    "string_attribute",
    "rate_limiting",
    "bytes_limiting",
    "span_count",
    "trace_state",
    "boolean_attribute",
    "trace_flags",
    "ottl_condition",
];

fn allowed(level: Level, kind: &str) -> bool {
    // The adaptive types are stateful like rate_limiting, which the
    // Collector allows at every level.
    SHARED_TYPES.contains(&kind)
        || adaptive::TYPES.contains(&kind)
        || match level {
            Level::Top => matches!(kind, "and" | "drop" | "not" | "composite"),
            // Newer Collectors let `drop` (an AND) hold a `not`.
            Level::AndSub => kind == "not",
            Level::Composite => kind == "and",
            Level::Not => false,
        }
}

struct Compiler<'d, 's> {
    doc: &'d Document<'s>,
    slots: Vec<SlotKind>,
    /// Every attribute key a policy reads, so that one pass over a trace's
    /// attributes serves them all.
    attribute_keys: Vec<String>,
    notes: Vec<String>,
}

impl Compiler<'_, '_> {
    fn file(mut self) -> Result<PolicyFile, PolicyError> {
        let doc = self.doc;
        let raw = &doc.raw;
        let decision_wait = raw.decision_wait.map_or(DEFAULT_DECISION_WAIT, |d| d.0);
        if decision_wait.is_zero() {
            return Err(
                doc.setting_error("decision_wait", "decision_wait must be more than 0s".into())
            );
        }
        let decision_wait_after_root_received = raw
            .decision_wait_after_root_received
            .map(|d| d.0)
            .filter(|d| !d.is_zero());
        let num_traces = raw.num_traces.unwrap_or(DEFAULT_NUM_TRACES);
        if num_traces == 0 {
            return Err(doc.setting_error("num_traces", "num_traces must be at least 1".into()));
        }
        let cache = raw.decision_cache.as_ref();
        let decision_cache = DecisionCacheSizes {
            sampled: cache.and_then(|c| c.sampled_cache_size).unwrap_or(0),
            non_sampled: cache.and_then(|c| c.non_sampled_cache_size).unwrap_or(0),
        };
        let sampling_strategy = match raw.sampling_strategy.as_deref() {
            None | Some("") | Some("trace-complete") => SamplingStrategy::TraceComplete,
            Some("span-ingest") => SamplingStrategy::SpanIngest,
            Some(other) => {
                return Err(doc.setting_error(
                    "sampling_strategy",
                    format!(
                        "unknown sampling_strategy {other:?} (expected trace-complete or span-ingest)"
                    ),
                ));
            }
        };
        let num_shards = match raw.num_shards {
            None | Some(0) => None,
            Some(n @ 1..=256) => Some(n as u16),
            Some(n) => {
                return Err(doc.setting_error(
                    "num_shards",
                    format!("num_shards must be between 1 and 256 (got {n})"),
                ));
            }
        };
        if raw.tail_storage.is_some() {
            if num_shards.is_some_and(|n| n > 1) {
                return Err(doc.setting_error(
                    "tail_storage",
                    "tail_storage cannot be combined with num_shards above 1 (as in the Collector)"
                        .into(),
                ));
            }
            self.notes.push(
                "tail_storage names a Collector tail storage extension, which tailgate does not load: traces are held in the sampler's own buffer (and, with the sampler's `storage.path`, in its write-ahead log)".into(),
            );
        }
        if raw.expected_new_traces_per_sec.is_some() {
            self.notes.push(
                "expected_new_traces_per_sec is accepted and has no effect (an allocation hint; the buffer grows as needed)".into(),
            );
        }
        let block_on_overflow = raw.block_on_overflow.unwrap_or(false);
        if raw.block_on_overflow == Some(false) {
            self.notes.push(
                "block_on_overflow: false asks to evict the oldest trace when num_traces is reached; tailgate never evicts an undecided trace: past num_traces or its memory limit it refuses new spans with a retryable status, which is block_on_overflow: true as clients see it".into(),
            );
        }
        let drop_pending_traces_on_shutdown = raw.drop_pending_traces_on_shutdown.unwrap_or(false);
        let maximum_trace_size_bytes = raw.maximum_trace_size_bytes.filter(|n| *n > 0);

        let Some(raw_policies) = raw.policies.as_ref().filter(|p| !p.is_empty()) else {
            return Err(match raw.policies {
                Some(_) => doc.setting_error(
                    "policies",
                    "policies is empty: at least one policy is needed".into(),
                ),
                None => PolicyError::Document {
                    file: doc.file.to_string(),
                    message: "no policies: the tail_sampling block needs a `policies` list".into(),
                },
            });
        };

        let mut nodes: Vec<(bool, Node)> = Vec::with_capacity(raw_policies.len());
        let mut seen: Vec<(String, Vec<Step>)> = Vec::new();
        for (i, rp) in raw_policies.iter().enumerate() {
            let path = vec![Step::Key("policies".into()), Step::Index(i)];
            let names = vec![config::display_name(rp.name.as_deref(), i)];
            let name = rp.name.clone().unwrap_or_default();
            if name.is_empty() {
                return Err(doc.policy_error(
                    &path,
                    &names,
                    "name is required (and must not be empty)".into(),
                ));
            }
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                let (line, column) = doc.position(first);
                return Err(doc.policy_error(
                    &path,
                    &names,
                    format!("duplicate policy name (first used at line {line} column {column})"),
                ));
            }
            seen.push((name, path.clone()));
            let node = self.policy(rp, &path, &names, Level::Top)?;
            nodes.push((matches!(node.rule, Rule::Drop(_)), node));
        }
        // Drop decisions take precedence, so the Collector evaluates drop
        // policies first (processor.go, loadSamplingPolicies); the order
        // matters with sample_on_first_match.
        let (drops, others): (Vec<_>, Vec<_>) =
            nodes.into_iter().partition(|(is_drop, _)| *is_drop);
        let ordered: Vec<Node> = drops.into_iter().chain(others).map(|(_, n)| n).collect();

        let sample_on_first_match = raw.sample_on_first_match.unwrap_or(false);
        if sampling_strategy == SamplingStrategy::SpanIngest && !self.slots.is_empty() {
            return Err(doc.setting_error(
                "sampling_strategy",
                "sampling_strategy span-ingest does not support stateful policies (rate_limiting, bytes_limiting, composite, and tailgate's ema_dynamic, ema_throughput, windowed_throughput), as in the Collector: use trace-complete, or remove them".into(),
            ));
        }
        Ok(PolicyFile {
            sampling_strategy,
            maximum_trace_size_bytes,
            num_shards,
            block_on_overflow,
            drop_pending_traces_on_shutdown,
            decision_wait,
            decision_wait_after_root_received,
            num_traces,
            decision_cache,
            sample_on_first_match,
            policies: PolicySet::new(
                ordered,
                sample_on_first_match,
                self.slots,
                self.attribute_keys,
            ),
            origin: match &doc.form {
                Form::Block => None,
                Form::Wrapped(key) => Some(key.clone()),
                Form::Collector(key) => {
                    Some(format!("processors.{key} of a Collector configuration"))
                }
            },
            notes: self.notes,
        })
    }

    fn policy(
        &mut self,
        rp: &RawPolicy,
        path: &[Step],
        names: &[String],
        level: Level,
    ) -> Result<Node, PolicyError> {
        let doc = self.doc;
        let err = |message: String| doc.policy_error(path, names, message);
        let Some(kind) = rp.kind.as_deref() else {
            return Err(err("type is required".into()));
        };
        if !is_known_type(kind) {
            return Err(err(format!(
                "unknown policy type {kind:?} (known: {})",
                known_types().join(", ")
            )));
        }
        if !allowed(level, kind) {
            let place = match level {
                Level::Top => "at the top level",
                Level::AndSub => "inside and/drop",
                Level::Not => "inside not",
                Level::Composite => "inside composite",
            };
            return Err(err(format!("type {kind} is not allowed {place}")));
        }
        for block in rp.blocks() {
            if block != kind {
                return Err(err(format!(
                    "has a `{block}` block but its type is {kind}; the Collector would ignore the block: fix the type or remove the block"
                )));
            }
        }
        let name: Arc<str> = Arc::from(rp.name.as_deref().unwrap_or(""));
        let missing = |block: &str| err(format!("type {kind} needs a `{block}:` block"));
        let sub_path = |keys: &[&str]| -> Vec<Step> {
            let mut p = path.to_vec();
            p.extend(keys.iter().map(|k| Step::Key((*k).to_string())));
            p
        };

        let rule = match kind {
            "always_sample" => Rule::AlwaysSample,
            "trace_flags" => Rule::TraceFlags,
            "latency" => {
                let c = rp.latency.as_ref().ok_or_else(|| missing("latency"))?;
                if c.threshold_ms.is_none() && c.upper_threshold_ms.is_none() {
                    return Err(err(
                        "latency needs threshold_ms (and optionally upper_threshold_ms)".into(),
                    ));
                }
                let threshold_ms = c.threshold_ms.unwrap_or(0);
                let upper = c.upper_threshold_ms.unwrap_or(0);
                if threshold_ms < 0 || upper < 0 {
                    return Err(err("latency thresholds must not be negative".into()));
                }
                // As the Collector: 0 means no upper bound.
                let upper_threshold_ms = (upper != 0).then_some(upper);
                if let Some(u) = upper_threshold_ms
                    && u <= threshold_ms
                {
                    return Err(err(format!(
                        "upper_threshold_ms ({u}) must be more than threshold_ms ({threshold_ms}): the range (threshold_ms, upper_threshold_ms] would be empty"
                    )));
                }
                Rule::Latency {
                    threshold_ms,
                    upper_threshold_ms,
                }
            }
            "status_code" => {
                let c = rp
                    .status_code
                    .as_ref()
                    .ok_or_else(|| missing("status_code"))?;
                let codes = c.status_codes.clone().unwrap_or_default();
                if codes.is_empty() {
                    return Err(err(
                        "status_codes must list at least one of OK, ERROR, UNSET".into(),
                    ));
                }
                let mut mask = 0u8;
                for code in &codes {
                    mask |= match code.as_str() {
                        "UNSET" => 1 << proto::view::STATUS_UNSET,
                        "OK" => 1 << proto::view::STATUS_OK,
                        "ERROR" => 1 << proto::view::STATUS_ERROR,
                        other => {
                            return Err(err(format!(
                                "unknown status code {other:?} (supported: OK, ERROR, UNSET)"
                            )));
                        }
                    };
                }
                Rule::StatusCode { codes, mask }
            }
            "probabilistic" => {
                let c = rp
                    .probabilistic
                    .as_ref()
                    .ok_or_else(|| missing("probabilistic"))?;
                let Some(percentage) = c.sampling_percentage else {
                    return Err(err("probabilistic needs sampling_percentage".into()));
                };
                if percentage.is_nan() {
                    return Err(err("sampling_percentage is not a number".into()));
                }
                // probabilistic.go takes any value: below 0 samples nothing,
                // above 100 everything (big.Float's Uint64 saturates).
                if !(0.0..=100.0).contains(&percentage) {
                    self.notes.push(format!(
                        "policy {:?}: sampling_percentage {percentage} is outside 0 to 100; as in the Collector it samples {}",
                        &*names[names.len() - 1],
                        if percentage < 0.0 { "no trace" } else { "every trace" }
                    ));
                }
                let percentage = percentage.clamp(0.0, 100.0);
                let salt_given = c.hash_salt.as_deref().is_some_and(|s| !s.is_empty());
                let salt = match c.hash_salt.as_deref() {
                    Some(s) if !s.is_empty() => s.to_string(),
                    _ => probabilistic::DEFAULT_HASH_SALT.to_string(),
                };
                Rule::Probabilistic {
                    percentage,
                    hash_threshold: probabilistic::hash_threshold(percentage),
                    otel: Threshold::from_percentage(percentage),
                    salt_source: crate::evaluate::salt_source(&salt),
                    salt,
                    salt_given,
                }
            }
            "string_attribute" => {
                let c = rp
                    .string_attribute
                    .as_ref()
                    .ok_or_else(|| missing("string_attribute"))?;
                let key = required_key(c.key.as_deref()).map_err(&err)?;
                // `values: []` is valid in the Collector: nothing matches
                // (and with invert_match, everything does).
                let values = c.values.clone().unwrap_or_default();
                let matcher = if c.enabled_regex_matching.unwrap_or(false) {
                    let mut regexes = Vec::with_capacity(values.len());
                    for (i, v) in values.iter().enumerate() {
                        match Regex::new(v) {
                            Ok(r) => regexes.push(r),
                            Err(e) => {
                                let mut p = sub_path(&["string_attribute", "values"]);
                                p.push(Step::Index(i));
                                return Err(doc.policy_error(
                                    &p,
                                    names,
                                    format!(
                                        "values[{i}] {v:?} is not a valid regex: {}",
                                        one_line(&e.to_string())
                                    ),
                                ));
                            }
                        }
                    }
                    StringMatcher::Regex(regexes)
                } else {
                    // The Collector leaves empty strings out of the exact set.
                    StringMatcher::Exact(values.iter().filter(|v| !v.is_empty()).cloned().collect())
                };
                Rule::StringAttribute {
                    attr: self.attribute_key(&key),
                    key,
                    values,
                    matcher,
                    invert: c.invert_match.unwrap_or(false),
                }
            }
            "numeric_attribute" => {
                let c = rp
                    .numeric_attribute
                    .as_ref()
                    .ok_or_else(|| missing("numeric_attribute"))?;
                let key = required_key(c.key.as_deref()).map_err(&err)?;
                // processor.go: a bound of 0 is no bound.
                let min = c.min_value.filter(|v| *v != 0);
                let max = c.max_value.filter(|v| *v != 0);
                if min.is_none() && max.is_none() {
                    return Err(err(
                        "numeric_attribute needs min_value or max_value (0 means no bound, as in the Collector)".into(),
                    ));
                }
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    return Err(err(format!(
                        "min_value ({lo}) must not be more than max_value ({hi})"
                    )));
                }
                Rule::NumericAttribute {
                    attr: self.attribute_key(&key),
                    key,
                    min,
                    max,
                    invert: c.invert_match.unwrap_or(false),
                }
            }
            "boolean_attribute" => {
                let c = rp
                    .boolean_attribute
                    .as_ref()
                    .ok_or_else(|| missing("boolean_attribute"))?;
                let key = required_key(c.key.as_deref()).map_err(&err)?;
                let Some(value) = c.value else {
                    return Err(err("boolean_attribute needs value (true or false)".into()));
                };
                Rule::BooleanAttribute {
                    attr: self.attribute_key(&key),
                    key,
                    value,
                    invert: c.invert_match.unwrap_or(false),
                }
            }
            "span_count" => {
                let c = rp
                    .span_count
                    .as_ref()
                    .ok_or_else(|| missing("span_count"))?;
                if c.min_spans.is_none() && c.max_spans.is_none() {
                    return Err(err("span_count needs min_spans or max_spans".into()));
                }
                let min = c.min_spans.unwrap_or(0);
                let max = c.max_spans.unwrap_or(0);
                if min < 0 || max < 0 || min > i64::from(i32::MAX) || max > i64::from(i32::MAX) {
                    return Err(err("span counts must be between 0 and 2147483647".into()));
                }
                // As the Collector: max_spans 0 means no upper bound.
                let max = (max != 0).then_some(max);
                if let Some(hi) = max
                    && hi < min
                {
                    return Err(err(format!(
                        "max_spans ({hi}) must not be less than min_spans ({min})"
                    )));
                }
                Rule::SpanCount { min, max }
            }
            "trace_state" => {
                let c = rp
                    .trace_state
                    .as_ref()
                    .ok_or_else(|| missing("trace_state"))?;
                let key = required_key(c.key.as_deref()).map_err(&err)?;
                // `values: []` is valid in the Collector: nothing matches.
                let values = c.values.clone().unwrap_or_default();
                // trace_state_filter.go: a key=value member cannot exceed 256
                // characters, so longer values never match.
                let set = values
                    .iter()
                    .filter(|v| !v.is_empty() && key.len() + v.len() < 256)
                    .cloned()
                    .collect();
                Rule::TraceState { key, values, set }
            }
            "ottl_condition" => {
                let c = rp
                    .ottl_condition
                    .as_ref()
                    .ok_or_else(|| missing("ottl_condition"))?;
                Rule::OttlCondition(Box::new(self.ottl(c, path, names)?))
            }
            "rate_limiting" => {
                let c = rp
                    .rate_limiting
                    .as_ref()
                    .ok_or_else(|| missing("rate_limiting"))?;
                let (per_second, burst) =
                    rate(c.spans_per_second, c.burst_capacity, "spans_per_second").map_err(&err)?;
                Rule::RateLimiting {
                    slot: self.slot(SlotKind::Bucket),
                    per_second,
                    burst,
                }
            }
            "bytes_limiting" => {
                let c = rp
                    .bytes_limiting
                    .as_ref()
                    .ok_or_else(|| missing("bytes_limiting"))?;
                let (per_second, burst) =
                    rate(c.bytes_per_second, c.burst_capacity, "bytes_per_second").map_err(&err)?;
                Rule::BytesLimiting {
                    slot: self.slot(SlotKind::Bucket),
                    per_second,
                    burst,
                }
            }
            "and" => {
                let subs = rp
                    .and
                    .as_ref()
                    .and_then(|c| c.and_sub_policy.as_ref())
                    .ok_or_else(|| missing("and"))?;
                Rule::And(self.subs(
                    subs,
                    &sub_path(&["and", "and_sub_policy"]),
                    names,
                    Level::AndSub,
                    "and_sub_policy",
                )?)
            }
            "drop" => {
                let subs = rp
                    .drop
                    .as_ref()
                    .and_then(|c| c.drop_sub_policy.as_ref())
                    .ok_or_else(|| missing("drop"))?;
                Rule::Drop(self.subs(
                    subs,
                    &sub_path(&["drop", "drop_sub_policy"]),
                    names,
                    Level::AndSub,
                    "drop_sub_policy",
                )?)
            }
            "not" => {
                let sub = rp
                    .not
                    .as_ref()
                    .and_then(|c| c.not_sub_policy.as_ref())
                    .ok_or_else(|| missing("not"))?;
                let p = sub_path(&["not", "not_sub_policy"]);
                let mut sub_names = names.to_vec();
                sub_names.push(config::display_name(sub.name.as_deref(), 0));
                Rule::Not(Box::new(self.policy(sub, &p, &sub_names, Level::Not)?))
            }
            "composite" => self.composite(rp, path, names)?,
            "ema_dynamic" | "ema_throughput" | "windowed_throughput" => {
                let (kind, compiled) = match kind {
                    "ema_dynamic" => (
                        "ema_dynamic",
                        adaptive::ema_dynamic(
                            rp.ema_dynamic
                                .as_ref()
                                .ok_or_else(|| missing("ema_dynamic"))?,
                        ),
                    ),
                    "ema_throughput" => (
                        "ema_throughput",
                        adaptive::ema_throughput(
                            rp.ema_throughput
                                .as_ref()
                                .ok_or_else(|| missing("ema_throughput"))?,
                        ),
                    ),
                    _ => (
                        "windowed_throughput",
                        adaptive::windowed_throughput(
                            rp.windowed_throughput
                                .as_ref()
                                .ok_or_else(|| missing("windowed_throughput"))?,
                        ),
                    ),
                };
                let (params, key) = compiled.map_err(|m| err(format!("{kind}: {m}")))?;
                Rule::Adaptive(Box::new(adaptive::Adaptive {
                    kind,
                    slot: self.slot(SlotKind::Adaptive),
                    params,
                    key,
                }))
            }
            _ => return Err(err(format!("unknown policy type {kind:?}"))),
        };
        Ok(Node { name, rule })
    }

    fn subs(
        &mut self,
        raws: &[RawPolicy],
        list_path: &[Step],
        names: &[String],
        level: Level,
        list: &str,
    ) -> Result<Vec<Node>, PolicyError> {
        if raws.is_empty() {
            return Err(self.doc.policy_error(
                list_path,
                names,
                format!("{list} is empty: at least one policy is needed"),
            ));
        }
        let mut out = Vec::with_capacity(raws.len());
        for (i, raw) in raws.iter().enumerate() {
            let mut p = list_path.to_vec();
            p.push(Step::Index(i));
            let mut sub_names = names.to_vec();
            sub_names.push(config::display_name(raw.name.as_deref(), i));
            out.push(self.policy(raw, &p, &sub_names, level)?);
        }
        Ok(out)
    }

    fn composite(
        &mut self,
        rp: &RawPolicy,
        path: &[Step],
        names: &[String],
    ) -> Result<Rule, PolicyError> {
        let doc = self.doc;
        let err = |message: String| doc.policy_error(path, names, message);
        let Some(c) = rp.composite.as_ref() else {
            return Err(err("type composite needs a `composite:` block".into()));
        };
        let max_total = c.max_total_spans_per_second.unwrap_or(0);
        if max_total <= 0 {
            return Err(err(
                "composite needs max_total_spans_per_second of 1 or more".into(),
            ));
        }
        let raws = c.composite_sub_policy.as_deref().unwrap_or(&[]);
        let mut list_path = path.to_vec();
        list_path.extend([
            Step::Key("composite".into()),
            Step::Key("composite_sub_policy".into()),
        ]);
        let subs = self.subs(
            raws,
            &list_path,
            names,
            Level::Composite,
            "composite_sub_policy",
        )?;
        let sub_names: Vec<&str> = subs.iter().map(|n| &*n.name).collect();

        // composite_helper.go, getRateAllocationMap: a percentage of the
        // total, or the default equal share (total / sub-policies) when the
        // percentage is 0 or, since contrib #49857 (v0.158), when the
        // sub-policy has no rate_allocation at all.
        let total = max_total as f64;
        let default_share = total / subs.len() as f64;
        let mut allocation: Vec<i64> = vec![0; subs.len()];
        let mut allocated = vec![false; subs.len()];
        for (i, ra) in c
            .rate_allocation
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let mut p = path.to_vec();
            p.extend([
                Step::Key("composite".into()),
                Step::Key("rate_allocation".into()),
                Step::Index(i),
            ]);
            let ra_err = |message: String| doc.policy_error(&p, names, message);
            let policy = ra.policy.as_deref().unwrap_or("");
            let Some(index) = sub_names.iter().position(|n| *n == policy) else {
                return Err(ra_err(format!(
                    "rate_allocation[{i}] names {policy:?}, which is not a composite_sub_policy (have: {})",
                    sub_names.join(", ")
                )));
            };
            let percent = ra.percent.unwrap_or(0);
            if !(0..=100).contains(&percent) {
                return Err(ra_err(format!(
                    "rate_allocation[{i}] percent must be between 0 and 100 (got {percent})"
                )));
            }
            allocation[index] = if percent > 0 {
                (percent as f64 / 100.0 * total) as i64
            } else {
                default_share as i64
            };
            allocated[index] = true;
        }
        for (share, done) in allocation.iter_mut().zip(&allocated) {
            if !done {
                *share = default_share as i64;
            }
        }
        if let Some(order) = &c.policy_order {
            for (i, entry) in order.iter().enumerate() {
                if !sub_names.contains(&entry.as_str()) {
                    let mut p = path.to_vec();
                    p.extend([
                        Step::Key("composite".into()),
                        Step::Key("policy_order".into()),
                        Step::Index(i),
                    ]);
                    return Err(doc.policy_error(
                        &p,
                        names,
                        format!(
                            "policy_order[{i}] names {entry:?}, which is not a composite_sub_policy"
                        ),
                    ));
                }
            }
            if order
                .iter()
                .map(String::as_str)
                .ne(sub_names.iter().copied())
            {
                self.notes.push(format!(
                    "composite {:?}: policy_order is not used by the Collector; sub-policies are evaluated in composite_sub_policy order ({})",
                    &*names[0],
                    sub_names.join(", ")
                ));
            }
        }
        Ok(Rule::Composite {
            slot: self.slot(SlotKind::Composite { subs: subs.len() }),
            max_total,
            subs: subs.into_iter().zip(allocation).collect(),
            lending: c.budget_lending.unwrap_or(false),
        })
    }

    /// Compiles an `ottl_condition` block; a bad condition is placed at
    /// its entry in the file, with its line and column in the condition.
    fn ottl(
        &self,
        c: &config::RawOttlCondition,
        path: &[Step],
        names: &[String],
    ) -> Result<OttlCondition, PolicyError> {
        let doc = self.doc;
        let mut at = path.to_vec();
        at.push(Step::Key("ottl_condition".into()));
        let error_mode = match c.error_mode.as_deref() {
            None => ErrorMode::default(),
            Some(m) => ErrorMode::parse(m).map_err(|message| {
                let mut p = at.clone();
                p.push(Step::Key("error_mode".into()));
                doc.policy_error(&p, names, format!("ottl_condition.error_mode: {message}"))
            })?,
        };
        let span = c.span.as_deref().unwrap_or(&[]);
        let spanevent = c.spanevent.as_deref().unwrap_or(&[]);
        OttlCondition::compile(error_mode, span, spanevent).map_err(|e| {
            let texts = if e.list == "span" { span } else { spanevent };
            let mut p = at.clone();
            if texts.is_empty() {
                return doc.policy_error(&p, names, format!("ottl_condition: {}", e.message));
            }
            p.extend([Step::Key(e.list.into()), Step::Index(e.index)]);
            let text = texts.get(e.index).map_or("", String::as_str);
            doc.policy_error(&p, names, format!("ottl_condition.{e} (in {text:?})"))
        })
    }

    fn attribute_key(&mut self, key: &str) -> usize {
        match self.attribute_keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                self.attribute_keys.push(key.to_string());
                self.attribute_keys.len() - 1
            }
        }
    }

    fn slot(&mut self, kind: SlotKind) -> usize {
        self.slots.push(kind);
        self.slots.len() - 1
    }
}

fn required_key(key: Option<&str>) -> Result<String, String> {
    match key {
        Some(k) if !k.is_empty() => Ok(k.to_string()),
        _ => Err("key is required".to_string()),
    }
}

/// A token bucket's rate and burst: the burst defaults to twice the rate
/// (rate_limiting.go, bytes_limiting.go).
fn rate(per_second: Option<i64>, burst: Option<i64>, field: &str) -> Result<(i64, i64), String> {
    let per_second = per_second.unwrap_or(0);
    if per_second <= 0 {
        return Err(format!("{field} must be 1 or more"));
    }
    let burst = match burst.unwrap_or(0) {
        0 => per_second.saturating_mul(2),
        b if b > 0 => b,
        b => return Err(format!("burst_capacity must not be negative (got {b})")),
    };
    Ok((per_second, burst))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One line of `check` output for a policy: its type and parameters.
pub(crate) fn describe(rule: &Rule) -> String {
    fn list(values: &[String]) -> String {
        format!("[{}]", values.join(", "))
    }
    match rule {
        Rule::AlwaysSample => "always_sample".into(),
        Rule::TraceFlags => "trace_flags".into(),
        Rule::Latency {
            threshold_ms,
            upper_threshold_ms,
        } => match upper_threshold_ms {
            Some(u) => format!("latency threshold_ms={threshold_ms} upper_threshold_ms={u}"),
            None => format!("latency threshold_ms={threshold_ms}"),
        },
        Rule::StatusCode { codes, .. } => format!("status_code status_codes={}", list(codes)),
        Rule::Probabilistic {
            percentage,
            salt,
            salt_given,
            ..
        } => {
            let mut s = format!("probabilistic sampling_percentage={percentage}");
            if *salt_given {
                s.push_str(&format!(" hash_salt={salt:?}"));
            }
            s
        }
        Rule::StringAttribute {
            key,
            values,
            matcher,
            invert,
            ..
        } => {
            let mut s = format!("string_attribute key={key} values={}", list(values));
            if matches!(matcher, StringMatcher::Regex(_)) {
                s.push_str(" enabled_regex_matching=true");
            }
            if *invert {
                s.push_str(" invert_match=true");
            }
            s
        }
        Rule::NumericAttribute {
            key,
            min,
            max,
            invert,
            ..
        } => {
            let mut s = format!("numeric_attribute key={key}");
            if let Some(v) = min {
                s.push_str(&format!(" min_value={v}"));
            }
            if let Some(v) = max {
                s.push_str(&format!(" max_value={v}"));
            }
            if *invert {
                s.push_str(" invert_match=true");
            }
            s
        }
        Rule::BooleanAttribute {
            key, value, invert, ..
        } => {
            let mut s = format!("boolean_attribute key={key} value={value}");
            if *invert {
                s.push_str(" invert_match=true");
            }
            s
        }
        Rule::SpanCount { min, max } => match max {
            Some(m) => format!("span_count min_spans={min} max_spans={m}"),
            None => format!("span_count min_spans={min}"),
        },
        Rule::TraceState { key, values, .. } => {
            format!("trace_state key={key} values={}", list(values))
        }
        Rule::RateLimiting {
            per_second, burst, ..
        } => {
            format!("rate_limiting spans_per_second={per_second} burst_capacity={burst}")
        }
        Rule::BytesLimiting {
            per_second, burst, ..
        } => {
            format!("bytes_limiting bytes_per_second={per_second} burst_capacity={burst}")
        }
        Rule::And(_) => "and".into(),
        Rule::Drop(_) => "drop".into(),
        Rule::Not(_) => "not".into(),
        Rule::Composite {
            max_total, lending, ..
        } => {
            let mut s = format!("composite max_total_spans_per_second={max_total}");
            if *lending {
                s.push_str(" budget_lending=true (tailgate extension)");
            }
            s
        }
        Rule::OttlCondition(c) => {
            let quoted = |list: &[crate::ottl::Condition]| {
                list.iter()
                    .map(|c| format!("{:?}", c.text))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut s = format!("ottl_condition error_mode={}", c.error_mode.as_str());
            if !c.span.is_empty() {
                s.push_str(&format!(" span=[{}]", quoted(&c.span)));
            }
            if !c.spanevent.is_empty() {
                s.push_str(&format!(" spanevent=[{}]", quoted(&c.spanevent)));
            }
            s
        }
        Rule::Adaptive(a) => adaptive::describe(a),
    }
}

/// The `check` listing: one line per policy (sub-policies indented under
/// theirs), then the timing settings and notes.
pub(crate) fn listing(file: &PolicyFile) -> String {
    fn node(out: &mut Vec<String>, n: &Node, depth: usize, extra: &str) {
        let name = if n.name.is_empty() {
            "(unnamed)"
        } else {
            &n.name
        };
        out.push(format!(
            "{}{name}: {}{extra}",
            "  ".repeat(depth),
            describe(&n.rule)
        ));
        match &n.rule {
            Rule::And(subs) | Rule::Drop(subs) => {
                subs.iter().for_each(|s| node(out, s, depth + 1, ""))
            }
            Rule::Not(sub) => node(out, sub, depth + 1, ""),
            Rule::Composite { subs, .. } => subs.iter().for_each(|(s, sps)| {
                node(out, s, depth + 1, &format!(" (allocated {sps} spans/s)"))
            }),
            _ => {}
        }
    }
    let mut out = vec![format!(
        "semantics: OpenTelemetry Collector contrib {} tail_sampling",
        crate::COLLECTOR_RELEASE
    )];
    if let Some(origin) = &file.origin {
        out.push(format!("using {origin}"));
    }
    let nodes = file.policies.nodes();
    out.push(format!(
        "{} {}, in evaluation order:",
        nodes.len(),
        if nodes.len() == 1 {
            "policy"
        } else {
            "policies"
        }
    ));
    for n in nodes {
        node(&mut out, n, 1, "");
    }
    out.push(format!(
        "decision_wait: {}",
        duration::format(file.decision_wait)
    ));
    out.push(format!(
        "decision_wait_after_root_received: {}",
        file.decision_wait_after_root_received
            .map_or("off".to_string(), duration::format)
    ));
    out.push(format!("num_traces: {}", file.num_traces));
    out.push(format!(
        "decision_cache: sampled_cache_size={} non_sampled_cache_size={}",
        file.decision_cache.sampled, file.decision_cache.non_sampled
    ));
    out.push(format!(
        "sample_on_first_match: {}",
        file.sample_on_first_match
    ));
    out.push(format!(
        "sampling_strategy: {}",
        match file.sampling_strategy {
            SamplingStrategy::TraceComplete => "trace-complete",
            SamplingStrategy::SpanIngest => "span-ingest",
        }
    ));
    out.push(format!(
        "maximum_trace_size_bytes: {}",
        file.maximum_trace_size_bytes
            .map_or("off".to_string(), |n| n.to_string())
    ));
    if let Some(n) = file.num_shards {
        out.push(format!("num_shards: {n}"));
    }
    if file.drop_pending_traces_on_shutdown {
        out.push("drop_pending_traces_on_shutdown: true".into());
    }
    for note in &file.notes {
        out.push(format!("note: {note}"));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}
