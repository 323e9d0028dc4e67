//! Reading a policy file: YAML into the Collector's configuration shape
//! (`Raw*`, one field per key of `tailsamplingprocessor`'s config.go and
//! config.schema.yaml, unknown keys refused), and places in the source for
//! error messages.
//!
//! serde_yaml_ng gives no spans to values, only a location on its errors, so
//! places are found two ways. A deserialization error carries its own
//! location and the path of the value at fault (`policies[2].latency: ...`),
//! which names the policy. A problem found after deserializing (a duplicate
//! name, a bad regex, a value out of range) is placed by [`locate`], which
//! walks the document again with a visitor that fails on purpose at the
//! policy's node: the error it gets back carries that node's location.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;

use crate::duration;
use crate::error::PolicyError;

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// A path, printed the way serde_yaml_ng prints it in its errors:
/// `processors.tail_sampling.policies[2].latency`.
pub(crate) fn path_string(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where the `tail_sampling` block was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Form {
    /// The file is the block itself.
    Block,
    /// The file is `tail_sampling: {...}` (or `tail_sampling/NAME:`).
    Wrapped(String),
    /// A whole Collector configuration: `processors.<key>`.
    Collector(String),
}

/// A parsed file: the raw configuration and what is needed to point at
/// places in it.
pub(crate) struct Document<'s> {
    pub src: &'s str,
    pub file: &'s str,
    /// Path from the document root to the `tail_sampling` block.
    pub base: Vec<Step>,
    pub form: Form,
    pub raw: RawTailSampling,
}

impl Document<'_> {
    /// The 1-based `(line, column)` of the node at `path` (relative to the
    /// block), or of the block itself when the node is not there.
    pub fn position(&self, path: &[Step]) -> (usize, usize) {
        let mut full = self.base.clone();
        full.extend_from_slice(path);
        locate(self.src, &full)
            .or_else(|| locate(self.src, &self.base))
            .unwrap_or((1, 1))
    }

    pub fn policy_error(&self, path: &[Step], names: &[String], message: String) -> PolicyError {
        let (line, column) = self.position(path);
        PolicyError::Policy {
            file: self.file.to_string(),
            line,
            column,
            policy: names.to_vec(),
            message,
        }
    }

    pub fn setting_error(&self, key: &str, message: String) -> PolicyError {
        let (line, column) = self.position(&[Step::Key(key.to_string())]);
        PolicyError::Setting {
            file: self.file.to_string(),
            line,
            column,
            message,
        }
    }
}

/// Parses `src`, finds the `tail_sampling` block and deserializes it.
pub(crate) fn load<'s>(src: &'s str, file: &'s str) -> Result<Document<'s>, PolicyError> {
    let value: Value = serde_yaml_ng::from_str(src).map_err(|e| yaml_error(file, &e, &[]))?;
    let (base, form) = find_block(&value, file)?;
    let block_value = base
        .iter()
        .try_fold(&value, |v, step| match step {
            Step::Key(k) => v.get(k.as_str()),
            Step::Index(i) => v.get(*i),
        })
        .unwrap_or(&Value::Null);
    let mut policies = Vec::new();
    collect_policy_paths(block_value, &mut Vec::new(), &mut Vec::new(), &mut policies);
    check_policy_types(src, file, &base, block_value, &policies)?;
    let base_str = path_string(&base);
    let policies: Vec<(String, Vec<String>)> = policies
        .into_iter()
        .map(|(path, names)| {
            let p = path_string(&path);
            let full = if base_str.is_empty() {
                p
            } else {
                format!("{base_str}.{p}")
            };
            (full, names)
        })
        .collect();

    let raw = Select::<RawTailSampling> {
        path: &base,
        found: std::marker::PhantomData,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_str(src))
    .map_err(|e| yaml_error(file, &e, &policies).relative_to(&base_str))?;
    let Some(raw) = raw else {
        return Err(PolicyError::Document {
            file: file.to_string(),
            message: "the tail_sampling block is empty".to_string(),
        });
    };
    Ok(Document {
        src,
        file,
        base,
        form,
        raw,
    })
}

/// Refuses a policy whose `type` is not one tailgate knows, before the
/// block is deserialized: the Collector takes any other type as the ID of a
/// policy extension (configured under a key of that name, which would
/// otherwise be refused as an unknown field), and tailgate loads no
/// extensions, so the message says so rather than "unknown field".
fn check_policy_types(
    src: &str,
    file: &str,
    base: &[Step],
    block: &Value,
    policies: &[(Vec<Step>, Vec<String>)],
) -> Result<(), PolicyError> {
    for (path, names) in policies {
        let Some(policy) = path.iter().try_fold(block, |v, step| match step {
            Step::Key(k) => v.get(k.as_str()),
            Step::Index(i) => v.get(*i),
        }) else {
            continue;
        };
        let Some(kind) = policy.get("type").and_then(Value::as_str) else {
            continue;
        };
        if crate::policy::is_known_type(kind) {
            continue;
        }
        let mut full = base.to_vec();
        full.extend(path.iter().cloned());
        full.push(Step::Key("type".into()));
        let (line, column) = locate(src, &full).unwrap_or((1, 1));
        let message = if policy.get(kind).is_some() {
            format!(
                "type {kind:?} is a policy provided by a Collector extension (configured by its `{kind}:` block); tailgate loads no Collector extensions: express the policy with the built-in types ({}), or an ottl_condition",
                crate::policy::known_types().join(", ")
            )
        } else {
            format!(
                "unknown policy type {kind:?}: not a built-in type ({}), and the Collector would look for a policy extension with this ID, which tailgate cannot load",
                crate::policy::known_types().join(", ")
            )
        };
        return Err(PolicyError::Policy {
            file: file.to_string(),
            line,
            column,
            policy: names.clone(),
            message,
        });
    }
    Ok(())
}

/// Decides which part of the file is the `tail_sampling` block.
fn find_block(value: &Value, file: &str) -> Result<(Vec<Step>, Form), PolicyError> {
    let doc_error = |message: String| PolicyError::Document {
        file: file.to_string(),
        message,
    };
    let Value::Mapping(top) = value else {
        return Err(doc_error(
            "expected a mapping: the tail_sampling block (decision_wait, policies, ...) or a whole Collector configuration"
                .to_string(),
        ));
    };
    let is_tail_sampling = |k: &str| k == "tail_sampling" || k.starts_with("tail_sampling/");
    if let Some(processors) = top.get("processors") {
        let Value::Mapping(processors) = processors else {
            return Err(doc_error("`processors` is not a mapping".to_string()));
        };
        let names: Vec<&str> = processors.keys().filter_map(Value::as_str).collect();
        let key = if names.contains(&"tail_sampling") {
            "tail_sampling"
        } else {
            let candidates: Vec<&str> = names
                .iter()
                .copied()
                .filter(|k| is_tail_sampling(k))
                .collect();
            match candidates.as_slice() {
                [only] => *only,
                [] => {
                    return Err(doc_error(format!(
                        "this Collector configuration has no tail_sampling processor (processors: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    )));
                }
                many => {
                    return Err(doc_error(format!(
                        "this Collector configuration has several tail_sampling processors ({}); keep the one to use, or name it plain `tail_sampling`",
                        many.join(", ")
                    )));
                }
            }
        };
        return Ok((
            vec![
                Step::Key("processors".to_string()),
                Step::Key(key.to_string()),
            ],
            Form::Collector(key.to_string()),
        ));
    }
    if top.len() == 1
        && let Some(key) = top.keys().next().and_then(Value::as_str)
        && is_tail_sampling(key)
    {
        return Ok((
            vec![Step::Key(key.to_string())],
            Form::Wrapped(key.to_string()),
        ));
    }
    Ok((Vec::new(), Form::Block))
}

/// Every policy and sub-policy under a block value: its path (relative to
/// the block) and its names, outermost first.
fn collect_policy_paths(
    block: &Value,
    prefix: &mut Vec<Step>,
    names: &mut Vec<String>,
    out: &mut Vec<(Vec<Step>, Vec<String>)>,
) {
    fn visit(
        policy: &Value,
        path: &mut Vec<Step>,
        names: &mut Vec<String>,
        index: usize,
        out: &mut Vec<(Vec<Step>, Vec<String>)>,
    ) {
        names.push(display_name(
            policy.get("name").and_then(Value::as_str),
            index,
        ));
        out.push((path.clone(), names.clone()));
        for (block, list) in [
            ("and", "and_sub_policy"),
            ("drop", "drop_sub_policy"),
            ("composite", "composite_sub_policy"),
        ] {
            if let Some(Value::Sequence(subs)) = policy.get(block).and_then(|b| b.get(list)) {
                for (i, sub) in subs.iter().enumerate() {
                    path.extend([
                        Step::Key(block.into()),
                        Step::Key(list.into()),
                        Step::Index(i),
                    ]);
                    visit(sub, path, names, i, out);
                    path.truncate(path.len() - 3);
                }
            }
        }
        if let Some(sub) = policy.get("not").and_then(|b| b.get("not_sub_policy")) {
            path.extend([Step::Key("not".into()), Step::Key("not_sub_policy".into())]);
            visit(sub, path, names, 0, out);
            path.truncate(path.len() - 2);
        }
        names.pop();
    }
    if let Some(Value::Sequence(policies)) = block.get("policies") {
        for (i, policy) in policies.iter().enumerate() {
            prefix.extend([Step::Key("policies".into()), Step::Index(i)]);
            visit(policy, prefix, names, i, out);
            prefix.truncate(prefix.len() - 2);
        }
    }
}

/// A policy's name for messages: its `name`, or its position when it has none.
pub(crate) fn display_name(name: Option<&str>, index: usize) -> String {
    match name {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("#{}", index + 1),
    }
}

/// Turns a serde_yaml_ng error into a [`PolicyError`], naming the policy
/// whose path prefixes the error's path.
fn yaml_error(
    file: &str,
    err: &serde_yaml_ng::Error,
    policies: &[(String, Vec<String>)],
) -> PolicyError {
    let mut text = err.to_string();
    let Some(location) = err.location() else {
        return PolicyError::Document {
            file: file.to_string(),
            message: text,
        };
    };
    let (line, column) = (location.line(), location.column());
    let suffix = format!(" at line {line} column {column}");
    if let Some(at) = text.find(&suffix) {
        text.replace_range(at..at + suffix.len(), "");
    }
    let owner = policies
        .iter()
        .filter(|(path, _)| {
            text.strip_prefix(path.as_str())
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('.'))
        })
        .max_by_key(|(path, _)| path.len());
    match owner {
        Some((path, names)) => {
            let rest = &text[path.len()..];
            let message = rest
                .strip_prefix(": ")
                .or_else(|| rest.strip_prefix('.'))
                .unwrap_or(rest)
                .to_string();
            PolicyError::Policy {
                file: file.to_string(),
                line,
                column,
                policy: names.clone(),
                message,
            }
        }
        None => PolicyError::Setting {
            file: file.to_string(),
            line,
            column,
            message: text,
        },
    }
}

impl PolicyError {
    /// Drops the block's own path from a setting error's message, so that a
    /// whole Collector configuration and a bare block read the same.
    fn relative_to(self, base: &str) -> PolicyError {
        match self {
            PolicyError::Setting {
                file,
                line,
                column,
                message,
            } if !base.is_empty() => {
                let message = message
                    .strip_prefix(base)
                    .and_then(|m| m.strip_prefix('.'))
                    .map_or(message.clone(), str::to_string);
                PolicyError::Setting {
                    file,
                    line,
                    column,
                    message,
                }
            }
            other => other,
        }
    }
}

/// Deserializes the value at `path`, ignoring everything else; `None` when
/// the path is not in the document.
struct Select<'p, T> {
    path: &'p [Step],
    found: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Select<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        match self.path.split_first() {
            None => Option::<T>::deserialize(d),
            Some(_) => d.deserialize_any(SelectVisitor::<T> {
                path: self.path,
                found: std::marker::PhantomData,
            }),
        }
    }
}

struct SelectVisitor<'p, T> {
    path: &'p [Step],
    found: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SelectVisitor<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let (step, rest) = match self.path.split_first() {
            Some((Step::Key(k), rest)) => (k.as_str(), rest),
            _ => return drain_map(map).map(|()| None),
        };
        let mut out = None;
        while let Some(key) = map.next_key::<Value>()? {
            if key.as_str() == Some(step) && out.is_none() {
                out = map.next_value_seed(Select::<T> {
                    path: rest,
                    found: std::marker::PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The 1-based `(line, column)` where the node at `path` starts, or `None`
/// when there is no such node.
pub(crate) fn locate(src: &str, path: &[Step]) -> Option<(usize, usize)> {
    match (Probe { path }).deserialize(serde_yaml_ng::Deserializer::from_str(src)) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(PROBE) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

/// The message of the deliberate failure (kept unusual so that no real
/// error is mistaken for it).
const PROBE: &str = "tailgate-policy-locate-probe";

struct Probe<'p> {
    path: &'p [Step],
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(ProbeVisitor { path: self.path })
    }
}

struct ProbeVisitor<'p> {
    path: &'p [Step],
}

impl ProbeVisitor<'_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(PROBE))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for ProbeVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match self.path.split_first() {
            None => Err(de::Error::custom(PROBE)),
            Some((Step::Key(k), rest)) => {
                while let Some(key) = map.next_key::<Value>()? {
                    if key.as_str() == Some(k.as_str()) {
                        map.next_value_seed(Probe { path: rest })?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(())
            }
            Some((Step::Index(_), _)) => drain_map(map),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.path.split_first() {
            None => Err(de::Error::custom(PROBE)),
            Some((Step::Index(target), rest)) => {
                let mut index = 0;
                loop {
                    let more = if index == *target {
                        seq.next_element_seed(Probe { path: rest })?.is_some()
                    } else {
                        seq.next_element::<IgnoredAny>()?.is_some()
                    };
                    if !more {
                        return Ok(());
                    }
                    index += 1;
                }
            }
            Some((Step::Key(_), _)) => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(())
            }
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
}

// ---------------------------------------------------------------------------
// The Collector's configuration shape. Field names are the Collector's
// (processor/tailsamplingprocessor/config.go, config.schema.yaml); every
// field is optional here so that defaults and cross-field rules live in one
// place, crate::policy, with the policy's position at hand.

/// The `tail_sampling` block.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTailSampling {
    #[serde(default)]
    pub decision_wait: Option<GoDuration>,
    #[serde(default)]
    pub decision_wait_after_root_received: Option<GoDuration>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub num_traces: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub expected_new_traces_per_sec: Option<u64>,
    #[serde(default)]
    pub decision_cache: Option<RawDecisionCache>,
    #[serde(default)]
    pub sample_on_first_match: Option<bool>,
    #[serde(default)]
    pub block_on_overflow: Option<bool>,
    #[serde(default)]
    pub drop_pending_traces_on_shutdown: Option<bool>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub maximum_trace_size_bytes: Option<u64>,
    #[serde(default)]
    pub sampling_strategy: Option<String>,
    /// v0.160+: the processor's internal shard count (1 to 256).
    #[serde(default, deserialize_with = "opt_u64")]
    pub num_shards: Option<u64>,
    /// v0.150+ (alpha gate `tailstorageextension`): the ID of a tail
    /// storage extension.
    #[serde(default)]
    pub tail_storage: Option<Value>,
    #[serde(default)]
    pub policies: Option<Vec<RawPolicy>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDecisionCache {
    #[serde(default, deserialize_with = "opt_u64")]
    pub sampled_cache_size: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub non_sampled_cache_size: Option<u64>,
}

/// One policy, at any depth (which types a depth allows is checked when
/// compiling).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub latency: Option<RawLatency>,
    #[serde(default)]
    pub numeric_attribute: Option<RawNumericAttribute>,
    #[serde(default)]
    pub probabilistic: Option<RawProbabilistic>,
    #[serde(default)]
    pub status_code: Option<RawStatusCode>,
    #[serde(default)]
    pub string_attribute: Option<RawStringAttribute>,
    #[serde(default)]
    pub rate_limiting: Option<RawRateLimiting>,
    #[serde(default)]
    pub bytes_limiting: Option<RawBytesLimiting>,
    #[serde(default)]
    pub span_count: Option<RawSpanCount>,
    #[serde(default)]
    pub trace_state: Option<RawTraceState>,
    #[serde(default)]
    pub boolean_attribute: Option<RawBooleanAttribute>,
    #[serde(default)]
    pub ottl_condition: Option<RawOttlCondition>,
    #[serde(default)]
    pub and: Option<RawAnd>,
    #[serde(default)]
    pub drop: Option<RawDrop>,
    #[serde(default)]
    pub not: Option<RawNot>,
    #[serde(default)]
    pub composite: Option<RawComposite>,
    /// tailgate extensions (crate::adaptive): Refinery's dynamic samplers.
    #[serde(default)]
    pub ema_dynamic: Option<crate::adaptive::RawEmaDynamic>,
    #[serde(default)]
    pub ema_throughput: Option<crate::adaptive::RawEmaThroughput>,
    #[serde(default)]
    pub windowed_throughput: Option<crate::adaptive::RawWindowedThroughput>,
}

impl RawPolicy {
    /// The names of the type blocks this policy has.
    pub fn blocks(&self) -> Vec<&'static str> {
        let present = [
            ("latency", self.latency.is_some()),
            ("numeric_attribute", self.numeric_attribute.is_some()),
            ("probabilistic", self.probabilistic.is_some()),
            ("status_code", self.status_code.is_some()),
            ("string_attribute", self.string_attribute.is_some()),
            ("rate_limiting", self.rate_limiting.is_some()),
            ("bytes_limiting", self.bytes_limiting.is_some()),
            ("span_count", self.span_count.is_some()),
            ("trace_state", self.trace_state.is_some()),
            ("boolean_attribute", self.boolean_attribute.is_some()),
            ("ottl_condition", self.ottl_condition.is_some()),
            ("and", self.and.is_some()),
            ("drop", self.drop.is_some()),
            ("not", self.not.is_some()),
            ("composite", self.composite.is_some()),
            ("ema_dynamic", self.ema_dynamic.is_some()),
            ("ema_throughput", self.ema_throughput.is_some()),
            ("windowed_throughput", self.windowed_throughput.is_some()),
        ];
        present
            .into_iter()
            .filter_map(|(name, here)| here.then_some(name))
            .collect()
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLatency {
    #[serde(default, deserialize_with = "opt_i64")]
    pub threshold_ms: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub upper_threshold_ms: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNumericAttribute {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub min_value: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub max_value: Option<i64>,
    #[serde(default)]
    pub invert_match: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbabilistic {
    #[serde(default)]
    pub hash_salt: Option<String>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub sampling_percentage: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatusCode {
    #[serde(default)]
    pub status_codes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStringAttribute {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub values: Option<Vec<String>>,
    #[serde(default)]
    pub enabled_regex_matching: Option<bool>,
    /// The Collector's regex-result LRU size; Rust's regex needs no cache,
    /// so it is accepted and unused.
    #[allow(dead_code)]
    #[serde(default, deserialize_with = "opt_i64")]
    pub cache_max_size: Option<i64>,
    #[serde(default)]
    pub invert_match: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimiting {
    #[serde(default, deserialize_with = "opt_i64")]
    pub spans_per_second: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub burst_capacity: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBytesLimiting {
    #[serde(default, deserialize_with = "opt_i64")]
    pub bytes_per_second: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub burst_capacity: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpanCount {
    #[serde(default, deserialize_with = "opt_i64")]
    pub min_spans: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub max_spans: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTraceState {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBooleanAttribute {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<bool>,
    #[serde(default)]
    pub invert_match: Option<bool>,
}

/// `ottl_condition` (the Collector's `OTTLConditionCfg`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOttlCondition {
    #[serde(default)]
    pub error_mode: Option<String>,
    #[serde(default)]
    pub span: Option<Vec<String>>,
    #[serde(default)]
    pub spanevent: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnd {
    #[serde(default)]
    pub and_sub_policy: Option<Vec<RawPolicy>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDrop {
    #[serde(default)]
    pub drop_sub_policy: Option<Vec<RawPolicy>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNot {
    #[serde(default)]
    pub not_sub_policy: Option<Box<RawPolicy>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComposite {
    #[serde(default, deserialize_with = "opt_i64")]
    pub max_total_spans_per_second: Option<i64>,
    #[serde(default)]
    pub policy_order: Option<Vec<String>>,
    #[serde(default)]
    pub composite_sub_policy: Option<Vec<RawPolicy>>,
    #[serde(default)]
    pub rate_allocation: Option<Vec<RawRateAllocation>>,
    /// tailgate extension: a sub-policy past its allocation may use what
    /// the others have not used this second.
    #[serde(default)]
    pub budget_lending: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateAllocation {
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub percent: Option<i64>,
}

/// A duration in Go syntax (see [`crate::duration`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                duration::parse(v).map(GoDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                if v == 0 {
                    return Ok(GoDuration(Duration::ZERO));
                }
                Err(E::custom(format!(
                    "invalid duration {v}: missing unit (write e.g. \"{v}s\"; the Collector would read a bare number as nanoseconds)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "invalid duration {v}: must not be negative"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

// Integers as the Collector's YAML reader (go-yaml v3) takes them: plain
// numbers, and digits grouped with underscores (`100_000`, as in the
// Collector's own README), which serde_yaml_ng reads as strings.

fn int_from_str(v: &str) -> Option<i128> {
    let digits: String = v.trim().chars().filter(|c| *c != '_').collect();
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (
            false,
            digits.strip_prefix('+').unwrap_or(&digits).to_string(),
        ),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i128 = digits.parse().ok()?;
    Some(if negative { -n } else { n })
}

/// An optional integer: null or absent is `None`.
struct OptIntVisitor;

impl Visitor<'_> for OptIntVisitor {
    type Value = Option<i128>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<i128>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i128>, E> {
        Ok(Some(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i128>, E> {
        Ok(Some(i128::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i128>, E> {
        int_from_str(v)
            .map(Some)
            .ok_or_else(|| E::invalid_type(de::Unexpected::Str(v), &self))
    }
}

fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match d.deserialize_any(OptIntVisitor)? {
        None => Ok(None),
        Some(n) => i64::try_from(n)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{n} is out of range for a 64-bit integer"))),
    }
}

fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match d.deserialize_any(OptIntVisitor)? {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{n} is out of range (expected 0 or more)"))),
    }
}

fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<f64>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<f64>, E> {
            let cleaned: String = v.trim().chars().filter(|c| *c != '_').collect();
            cleaned
                .parse::<f64>()
                .map(Some)
                .map_err(|_| E::invalid_type(de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}
