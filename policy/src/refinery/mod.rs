//! `tailgate policy convert refinery RULES.yaml`: a policy file from a
//! Honeycomb Refinery rules file (format v2, config/sampler_config.go and
//! rules.md in honeycombio/refinery).
//!
//! Refinery picks one sampler per environment; a `RulesBasedSampler` tries
//! its rules in order and the first whose conditions match decides (keep
//! one in `SampleRate`, `Drop`, or hand the trace to a downstream sampler);
//! a trace no rule matches is kept. tailgate evaluates every policy and a
//! drop wins, so each rule becomes an `and` of its conditions, of `not`s of
//! the earlier rules that would have decided first, and of what it does
//! (`probabilistic` for `SampleRate`, an adaptive policy for a downstream
//! sampler); a `Drop` rule becomes a `drop` of the same. An earlier rule is
//! left out of that list where it cannot change the outcome (an earlier
//! `Drop` wins anyway; an earlier rule that keeps all it matches makes a
//! later keep harmless), which keeps the output readable.
//!
//! Conditions become `ottl_condition`s ([`condition`]). What has no
//! equivalent is refused, naming the environment, the rule and the reason;
//! nothing is guessed.

mod condition;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_yaml_ng::{Mapping, Value};

use condition::{Condition, Converted};

/// The resource attributes an environment's traces are recognised by:
/// Refinery takes the environment from the Honeycomb API key, which OTLP
/// without Honeycomb does not carry.
pub const ENVIRONMENT_ATTRIBUTES: [&str; 2] =
    ["deployment.environment.name", "deployment.environment"];

const DEFAULT_ENVIRONMENT: &str = "__default__";

/// A converted rules file.
#[derive(Debug)]
pub struct Conversion {
    /// The policy file, with the notes as comments at its top.
    pub yaml: String,
    /// What the reader should know: approximations and choices made.
    pub notes: Vec<String>,
    /// Top-level policies written.
    pub policies: usize,
}

/// Converts a Refinery rules file's text. `environment`: convert only that
/// section (for a sampler tier per environment); `None`: all of them, each
/// environment's policies applying to its own traces.
pub fn convert(
    source: &str,
    file_name: &str,
    environment: Option<&str>,
) -> Result<Conversion, String> {
    let doc: Value = serde_yaml_ng::from_str(source).map_err(|e| {
        format!("{file_name}: not a YAML rules file ({e}); Refinery v1 TOML rules must first be converted to v2 with Refinery's `convert rules` tool (tools/convert in honeycombio/refinery)")
    })?;
    let Value::Mapping(top) = doc else {
        return Err(format!(
            "{file_name}: not a Refinery v2 rules file (a mapping with RulesVersion: 2 and Samplers); v1 TOML rules must first be converted to v2 with Refinery's `convert rules` tool (tools/convert in honeycombio/refinery)"
        ));
    };
    match top.get("RulesVersion") {
        Some(v) if v.as_i64() == Some(2) => {}
        Some(v) => {
            return Err(format!(
                "{file_name}: RulesVersion {} is not supported: this converter reads Refinery's v2 rules (RulesVersion: 2); convert v1 rules with Refinery's `convert rules` tool (tools/convert) first",
                condition_plain(v)
            ));
        }
        None => {
            return Err(format!(
                "{file_name}: no RulesVersion: this looks like Refinery v1 rules; convert them to v2 with Refinery's `convert rules` tool (tools/convert in honeycombio/refinery), then run this again"
            ));
        }
    }
    for key in top.keys() {
        let k = key.as_str().unwrap_or("");
        if k != "RulesVersion" && k != "Samplers" {
            return Err(format!(
                "{file_name}: unknown top-level key {k:?} (expected RulesVersion, Samplers)"
            ));
        }
    }
    let Some(Value::Mapping(samplers)) = top.get("Samplers") else {
        return Err(format!(
            "{file_name}: Samplers must map environment names to a sampler"
        ));
    };

    let mut envs: Vec<(String, &Value)> = samplers
        .iter()
        .map(|(k, v)| (condition_plain(k), v))
        .collect();
    if let Some(only) = environment {
        envs.retain(|(name, _)| name == only);
        if envs.is_empty() {
            return Err(format!(
                "{file_name}: no sampler for environment {only:?} (Samplers has {})",
                samplers
                    .keys()
                    .map(condition_plain)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    } else if !envs.iter().any(|(n, _)| n == DEFAULT_ENVIRONMENT) {
        return Err(format!(
            "{file_name}: Samplers has no {DEFAULT_ENVIRONMENT} sampler (Refinery requires one)"
        ));
    }
    // The default comes last: it applies to the traces of no named environment.
    envs.sort_by_key(|(name, _)| name == DEFAULT_ENVIRONMENT);
    let named: Vec<String> = envs
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n != DEFAULT_ENVIRONMENT)
        .collect();
    let several = envs.len() > 1;

    let mut out = Builder {
        names: HashSet::new(),
        notes: Vec::new(),
    };
    let mut policies = Vec::new();
    for (env, sampler) in &envs {
        let place = format!("sampler {env:?}");
        let guard: Vec<Policy> = if !several {
            Vec::new()
        } else if env == DEFAULT_ENVIRONMENT {
            named
                .iter()
                .map(|n| Policy::Not {
                    name: format!("{env}/not environment {n}"),
                    sub: Box::new(environment_policy(n, format!("{env}/environment {n}"))),
                })
                .collect()
        } else {
            vec![environment_policy(env, format!("{env}/environment"))]
        };
        let label = if several {
            format!("{env}/")
        } else {
            String::new()
        };
        let rules = out.sampler_rules(sampler, &place, &label).map_err(|e| {
            if several {
                format!(
                    "{file_name}: {e} (the other environments convert alone with --environment NAME)"
                )
            } else {
                format!("{file_name}: {e}")
            }
        })?;
        out.rules(&rules, &guard, &mut policies)
            .map_err(|e| format!("{file_name}: {e}"))?;
    }
    if several {
        out.notes.push(format!(
            "each environment's policies apply to traces whose resource has {} set to its name (Refinery takes the environment from the API key); __default__'s to the others. Use --environment NAME to convert one section for a sampler tier of its own",
            ENVIRONMENT_ATTRIBUTES.join(" or ")
        ));
    }

    let mut yaml = String::new();
    let _ = writeln!(
        yaml,
        "# Converted from the Refinery rules file {file_name} by `tailgate policy convert refinery`."
    );
    for note in &out.notes {
        let _ = writeln!(yaml, "# Note: {note}");
    }
    yaml.push_str("policies:\n");
    for p in &policies {
        p.write(&mut yaml, 1);
    }
    Ok(Conversion {
        yaml,
        notes: out.notes,
        policies: policies.len(),
    })
}

fn condition_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn environment_policy(env: &str, name: String) -> Policy {
    let lit = condition::ottl_string(env);
    Policy::Ottl {
        name,
        conditions: vec![
            ENVIRONMENT_ATTRIBUTES
                .iter()
                .map(|a| {
                    format!(
                        "resource.attributes[{}] == {lit}",
                        condition::ottl_string(a)
                    )
                })
                .collect::<Vec<_>>()
                .join(" or "),
        ],
    }
}

/// A policy to write.
#[derive(Debug, Clone)]
enum Policy {
    Always {
        name: String,
    },
    Probabilistic {
        name: String,
        percentage: f64,
    },
    Ottl {
        name: String,
        conditions: Vec<String>,
    },
    SpanCount {
        name: String,
        min: i64,
        max: i64,
    },
    Adaptive {
        name: String,
        kind: &'static str,
        options: Vec<(String, Value)>,
    },
    And {
        name: String,
        subs: Vec<Policy>,
    },
    Not {
        name: String,
        sub: Box<Policy>,
    },
    Drop {
        name: String,
        subs: Vec<Policy>,
    },
}

impl Policy {
    fn name_mut(&mut self) -> &mut String {
        match self {
            Policy::Always { name }
            | Policy::Probabilistic { name, .. }
            | Policy::Ottl { name, .. }
            | Policy::SpanCount { name, .. }
            | Policy::Adaptive { name, .. }
            | Policy::And { name, .. }
            | Policy::Not { name, .. }
            | Policy::Drop { name, .. } => name,
        }
    }

    /// Writes the policy as a list item at `depth` (two spaces each).
    fn write(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        let inner = "  ".repeat(depth + 1);
        let mut clone = self.clone();
        let name = std::mem::take(clone.name_mut());
        let _ = writeln!(out, "{pad}- name: {}", quote(&name));
        let kind = match self {
            Policy::Always { .. } => "always_sample",
            Policy::Probabilistic { .. } => "probabilistic",
            Policy::Ottl { .. } => "ottl_condition",
            Policy::SpanCount { .. } => "span_count",
            Policy::Adaptive { kind, .. } => kind,
            Policy::And { .. } => "and",
            Policy::Not { .. } => "not",
            Policy::Drop { .. } => "drop",
        };
        let _ = writeln!(out, "{pad}  type: {kind}");
        match self {
            Policy::Always { .. } => {}
            Policy::Probabilistic { percentage, .. } => {
                let _ = writeln!(
                    out,
                    "{inner}probabilistic: {{sampling_percentage: {percentage}}}"
                );
            }
            Policy::Ottl { conditions, .. } => {
                let _ = writeln!(out, "{inner}ottl_condition:");
                // Refinery's evaluation counts a condition it cannot apply as
                // not matching; `ignore` does the same.
                let _ = writeln!(out, "{inner}  error_mode: ignore");
                let _ = writeln!(out, "{inner}  span:");
                for c in conditions {
                    let _ = writeln!(out, "{inner}    - {}", quote(c));
                }
            }
            Policy::SpanCount { min, max, .. } => {
                let _ = writeln!(
                    out,
                    "{inner}span_count: {{min_spans: {min}, max_spans: {max}}}"
                );
            }
            Policy::Adaptive { kind, options, .. } => {
                let _ = writeln!(out, "{inner}{kind}:");
                for (k, v) in options {
                    let _ = writeln!(out, "{inner}  {k}: {}", yaml_value(v));
                }
            }
            Policy::And { subs, .. } => {
                let _ = writeln!(out, "{inner}and:");
                let _ = writeln!(out, "{inner}  and_sub_policy:");
                subs.iter().for_each(|s| s.write(out, depth + 3));
            }
            Policy::Drop { subs, .. } => {
                let _ = writeln!(out, "{inner}drop:");
                let _ = writeln!(out, "{inner}  drop_sub_policy:");
                subs.iter().for_each(|s| s.write(out, depth + 3));
            }
            Policy::Not { sub, .. } => {
                let _ = writeln!(out, "{inner}not:");
                let _ = writeln!(out, "{inner}  not_sub_policy:");
                let mut text = String::new();
                sub.write(&mut text, 0);
                // A single mapping, not a list item.
                for (i, line) in text.lines().enumerate() {
                    let line = if i == 0 {
                        line.replacen("- ", "  ", 1)
                    } else {
                        line.to_string()
                    };
                    let _ = writeln!(out, "{inner}  {line}");
                }
            }
        }
    }
}

/// A YAML double-quoted scalar: an OTTL string literal's escapes are
/// YAML's too.
fn quote(s: &str) -> String {
    condition::ottl_string(s)
}

fn yaml_value(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(yaml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "null".into(),
    }
}

/// What a rule does when it is the first to match.
#[derive(Debug, Clone)]
enum Action {
    /// Keep one trace in N (1: all).
    Keep(u64),
    /// Matched, kept nothing (a rule with no `SampleRate`, no `Sampler`).
    KeepNone,
    Drop,
    /// A downstream sampler, with its own state.
    Sampler(Policy),
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    /// The rule's conditions as policies (all must vote keep); empty: always.
    matcher: Vec<Policy>,
    action: Action,
}

struct Builder {
    names: HashSet<String>,
    notes: Vec<String>,
}

const SAMPLERS: [&str; 7] = [
    "DeterministicSampler",
    "RulesBasedSampler",
    "DynamicSampler",
    "EMADynamicSampler",
    "EMAThroughputSampler",
    "WindowedThroughputSampler",
    "TotalThroughputSampler",
];

fn single_sampler<'v>(v: &'v Value, place: &str) -> Result<(&'v str, &'v Value), String> {
    let Value::Mapping(m) = v else {
        return Err(format!(
            "{place}: expected a mapping with one sampler ({})",
            SAMPLERS.join(", ")
        ));
    };
    let mut found = None;
    for (k, body) in m {
        let k = k.as_str().unwrap_or("");
        if !SAMPLERS.contains(&k) {
            return Err(format!(
                "{place}: unknown sampler {k:?} (expected one of {})",
                SAMPLERS.join(", ")
            ));
        }
        if found.is_some() {
            return Err(format!(
                "{place}: more than one sampler; Refinery takes one"
            ));
        }
        found = Some((k, body));
    }
    found.ok_or_else(|| format!("{place}: no sampler"))
}

fn fields_of<'v>(v: &'v Value, place: &str, allowed: &[&str]) -> Result<&'v Mapping, String> {
    static EMPTY: std::sync::OnceLock<Mapping> = std::sync::OnceLock::new();
    let m = match v {
        Value::Mapping(m) => m,
        Value::Null => EMPTY.get_or_init(Mapping::new),
        _ => return Err(format!("{place}: expected a mapping")),
    };
    for k in m.keys() {
        let k = k.as_str().unwrap_or("");
        if !allowed.contains(&k) {
            return Err(format!(
                "{place}: unknown key {k:?} (expected one of {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(m)
}

fn int_of(m: &Mapping, key: &str, place: &str) -> Result<Option<i64>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{place}: {key} must be an integer")),
    }
}

/// PascalCase option → snake_case, as the adaptive policies name them.
fn snake(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl Builder {
    fn unique(&mut self, name: String) -> String {
        if self.names.insert(name.clone()) {
            return name;
        }
        (2..)
            .map(|n| format!("{name} ({n})"))
            .find(|n| self.names.insert(n.clone()))
            .unwrap_or(name)
    }

    /// A downstream or environment sampler as a policy (not the rules-based one).
    fn sampler_policy(
        &mut self,
        kind: &str,
        body: &Value,
        place: &str,
        name: String,
    ) -> Result<Action, String> {
        let place = format!("{place} {kind}");
        match kind {
            "DeterministicSampler" => {
                let m = fields_of(body, &place, &["SampleRate"])?;
                let rate = int_of(m, "SampleRate", &place)?.unwrap_or(1);
                Ok(Action::Keep(rate.max(1) as u64))
            }
            "EMADynamicSampler" | "EMAThroughputSampler" | "WindowedThroughputSampler" => {
                // The EMA samplers' shared options, then each one's own.
                const EMA: [&str; 8] = [
                    "AdjustmentInterval",
                    "Weight",
                    "AgeOutValue",
                    "BurstMultiple",
                    "BurstDetectionDelay",
                    "FieldList",
                    "MaxKeys",
                    "UseTraceLength",
                ];
                let (policy_kind, own): (&'static str, &[&str]) = match kind {
                    "EMADynamicSampler" => ("ema_dynamic", &["GoalSampleRate"]),
                    "EMAThroughputSampler" => (
                        "ema_throughput",
                        &[
                            "GoalThroughputPerSec",
                            "UseClusterSize",
                            "InitialSampleRate",
                        ],
                    ),
                    _ => ("windowed_throughput", &[]),
                };
                let allowed: Vec<&str> = if policy_kind == "windowed_throughput" {
                    vec![
                        "UpdateFrequency",
                        "LookbackFrequency",
                        "GoalThroughputPerSec",
                        "UseClusterSize",
                        "FieldList",
                        "MaxKeys",
                        "UseTraceLength",
                    ]
                } else {
                    own.iter().chain(EMA.iter()).copied().collect()
                };
                let m = fields_of(body, &place, &allowed)?;
                let mut options = Vec::new();
                let mut cluster_size = false;
                for (k, v) in m {
                    let k = k.as_str().unwrap_or("");
                    if k == "UseClusterSize" {
                        cluster_size = v.as_bool().unwrap_or(false);
                        continue;
                    }
                    let v = match (k, v) {
                        ("FieldList", Value::Sequence(_)) => v.clone(),
                        ("FieldList", Value::String(s)) => {
                            Value::Sequence(vec![Value::String(s.clone())])
                        }
                        ("FieldList", _) => {
                            return Err(format!(
                                "{place}: FieldList must be a list of field names"
                            ));
                        }
                        (_, Value::String(s))
                            if k.ends_with("Interval") || k.ends_with("Frequency") =>
                        {
                            crate::duration::parse(s).map_err(|e| format!("{place}: {k}: {e}"))?;
                            v.clone()
                        }
                        (_, Value::Number(_) | Value::Bool(_)) => v.clone(),
                        _ => return Err(format!("{place}: {k} has a value of the wrong type")),
                    };
                    options.push((snake(k), v));
                }
                if kind != "EMADynamicSampler" && !cluster_size {
                    self.notes.push(format!(
                        "{place}: GoalThroughputPerSec is per Refinery node (UseClusterSize is false); in a tailgate cluster the goal of {policy_kind} holds for the whole sampler tier: multiply it by the number of samplers to keep the same total"
                    ));
                }
                Ok(Action::Sampler(Policy::Adaptive {
                    name,
                    kind: policy_kind,
                    options,
                }))
            }
            "DynamicSampler" => Err(format!(
                "{place}: no equivalent: tailgate has the EMA dynamic sampler only; use EMADynamicSampler in Refinery (GoalSampleRate for SampleRate, AdjustmentInterval for ClearFrequency), or convert it by hand to an ema_dynamic policy"
            )),
            "TotalThroughputSampler" => Err(format!(
                "{place}: no equivalent: tailgate has no TotalThroughputSampler; the closest is WindowedThroughputSampler (windowed_throughput) with UpdateFrequency and LookbackFrequency both set to ClearFrequency"
            )),
            "RulesBasedSampler" => Err(format!(
                "{place}: a rules-based sampler cannot be a rule's downstream Sampler"
            )),
            other => Err(format!("{place}: unknown sampler {other}")),
        }
    }

    /// The rules of one environment's sampler, the implicit last rule included.
    /// `env` prefixes every name: `""`, or `"production/"` when the file
    /// has several environments.
    fn sampler_rules(
        &mut self,
        sampler: &Value,
        place: &str,
        env: &str,
    ) -> Result<Vec<Rule>, String> {
        let (kind, body) = single_sampler(sampler, place)?;
        if kind != "RulesBasedSampler" {
            let name = format!("{env}{kind}");
            let action = self.sampler_policy(kind, body, place, format!("{name}: sampler"))?;
            return Ok(vec![Rule {
                name,
                matcher: Vec::new(),
                action,
            }]);
        }
        let place = format!("{place} RulesBasedSampler");
        let m = fields_of(body, &place, &["Rules", "CheckNestedFields"])?;
        if m.get("CheckNestedFields").and_then(Value::as_bool) == Some(true) {
            return Err(format!(
                "{place}: CheckNestedFields has no equivalent: OTLP attributes are flat; name the attribute keys in the conditions"
            ));
        }
        let rules = match m.get("Rules") {
            Some(Value::Sequence(rules)) => rules.as_slice(),
            None | Some(Value::Null) => &[],
            Some(_) => return Err(format!("{place}: Rules must be a list")),
        };
        let mut out = Vec::with_capacity(rules.len() + 1);
        let mut catch_all: Option<String> = None;
        for (i, raw) in rules.iter().enumerate() {
            let m = fields_of(
                raw,
                &format!("{place} rule {}", i + 1),
                &[
                    "Name",
                    "SampleRate",
                    "Drop",
                    "Scope",
                    "Conditions",
                    "Sampler",
                ],
            )?;
            let rule_name = match m.get("Name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => format!("rule {}", i + 1),
            };
            let place = format!("{place} rule {rule_name:?}");
            if let Some(first) = &catch_all {
                self.notes.push(format!(
                    "{place} is never reached in Refinery (rule {first:?} before it has no conditions); not converted"
                ));
                continue;
            }
            let name = format!("{env}{rule_name}");
            let action = if m.get("Drop").and_then(Value::as_bool) == Some(true) {
                Action::Drop
            } else if let Some(s) = m.get("Sampler") {
                let (kind, body) = single_sampler(s, &format!("{place} Sampler"))?;
                self.sampler_policy(
                    kind,
                    body,
                    &format!("{place} Sampler"),
                    format!("{name}: sampler"),
                )?
            } else {
                match int_of(m, "SampleRate", &place)? {
                    Some(n) if n >= 1 => Action::Keep(n as u64),
                    _ => {
                        self.notes.push(format!(
                            "{place} has no SampleRate, Sampler or Drop: Refinery keeps none of the traces it matches, and so does the conversion"
                        ));
                        Action::KeepNone
                    }
                }
            };
            let scope = match m.get("Scope").and_then(Value::as_str) {
                None | Some("trace") | Some("") => "trace",
                Some("span") => "span",
                Some(other) => {
                    return Err(format!("{place}: Scope {other:?} is not span or trace"));
                }
            };
            let conditions = match m.get("Conditions") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Sequence(c)) => c
                    .iter()
                    .enumerate()
                    .map(|(j, c)| read_condition(c, &format!("{place} condition {}", j + 1)))
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err(format!("{place}: Conditions must be a list")),
            };
            if conditions.is_empty() {
                catch_all = Some(rule_name.clone());
            }
            let matcher = self.matcher(&conditions, scope, &name, &place)?;
            out.push(Rule {
                name,
                matcher,
                action,
            });
        }
        if catch_all.is_none() {
            out.push(Rule {
                name: format!("{env}no rule matched"),
                matcher: Vec::new(),
                action: Action::Keep(1),
            });
        }
        Ok(out)
    }

    /// A rule's conditions as policies that all vote keep when it matches.
    fn matcher(
        &mut self,
        conditions: &[Condition],
        scope: &str,
        name: &str,
        place: &str,
    ) -> Result<Vec<Policy>, String> {
        let mut out = Vec::new();
        let mut span_level: Vec<(String, String)> = Vec::new();
        for (j, c) in conditions.iter().enumerate() {
            let converted = condition::convert(c)
                .map_err(|e| format!("{place} condition {} ({}): {e}", j + 1, c.label()))?;
            let cname = format!("{name}: {}", c.label());
            match converted {
                Converted::Span { ottl, .. } if scope == "span" => {
                    span_level.push((c.label(), ottl))
                }
                Converted::Span { ottl, .. } => out.push(Policy::Ottl {
                    name: cname,
                    conditions: vec![ottl],
                }),
                Converted::SpanCount { min, max } => out.push(Policy::SpanCount {
                    name: cname,
                    min,
                    max,
                }),
                Converted::HasRoot(_) if scope == "span" => {
                    return Err(format!(
                        "{place} condition {}: has-root-span in a Scope: span rule never matches in Refinery; move it to a trace-scoped rule",
                        j + 1
                    ));
                }
                Converted::HasRoot(has) => {
                    let root = Policy::Ottl {
                        name: cname.clone(),
                        conditions: vec!["IsRootSpan()".into()],
                    };
                    out.push(if has {
                        root
                    } else {
                        Policy::Not {
                            name: cname,
                            sub: Box::new(root),
                        }
                    });
                }
            }
        }
        if !span_level.is_empty() {
            if span_level
                .iter()
                .any(|(_, o)| o.starts_with("IsRootSpan() and"))
                && span_level
                    .iter()
                    .any(|(_, o)| !o.starts_with("IsRootSpan() and"))
            {
                return Err(format!(
                    "{place}: Scope: span with root. fields and other fields: one span condition cannot read the root span's fields from another span"
                ));
            }
            let label = span_level
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(" and ");
            let ottl = span_level
                .iter()
                .map(|(_, o)| {
                    if span_level.len() > 1 {
                        format!("({o})")
                    } else {
                        o.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" and ");
            out.insert(
                0,
                Policy::Ottl {
                    name: format!("{name}: one span with {label}"),
                    conditions: vec![ottl],
                },
            );
        }
        Ok(out)
    }

    /// Writes one environment's rules as policies.
    ///
    /// A rule decides only when no earlier rule matched. The Collector's
    /// `not` holds one plain policy, so "rule j did not match" is "one of
    /// its conditions fails": a rule after an earlier multi-condition rule
    /// becomes one policy per way the earlier rules can fail (tailgate
    /// keeps a trace when any policy keeps it, and a `drop` of any of them
    /// drops it).
    fn rules(
        &mut self,
        rules: &[Rule],
        guard: &[Policy],
        out: &mut Vec<Policy>,
    ) -> Result<(), String> {
        for (i, rule) in rules.iter().enumerate() {
            let stateful = matches!(rule.action, Action::Sampler(_));
            let mut exclusions: Vec<Vec<Policy>> = Vec::new();
            // Earlier rules whose traces a downstream sampler counts anyway.
            let mut seen_anyway: Vec<String> = Vec::new();
            for earlier in &rules[..i] {
                let needed = match earlier.action {
                    // A drop wins whatever this rule votes.
                    Action::Drop => false,
                    // The trace is kept whatever a later keep votes.
                    Action::Keep(1) => matches!(rule.action, Action::Drop),
                    _ => true,
                };
                if !needed {
                    if stateful && !earlier.matcher.is_empty() {
                        seen_anyway.push(format!("{:?}", earlier.name));
                    }
                    continue;
                }
                if stateful && earlier.matcher.len() > 1 {
                    return Err(format!(
                        "rule {:?}: its downstream sampler must not see the traces rule {:?} before it decides, and excluding a rule of several conditions needs an `or` that one tailgate policy cannot hold; give rule {:?} a single condition (an OTTL condition can join several with and), or move the sampler rule before it",
                        rule.name, earlier.name, earlier.name
                    ));
                }
                exclusions.push(
                    earlier
                        .matcher
                        .iter()
                        .map(|c| negate(c, &format!("{}: not {}", rule.name, earlier.name)))
                        .collect(),
                );
            }
            if !seen_anyway.is_empty() {
                self.notes.push(format!(
                    "rule {:?}: its downstream sampler also counts the traces that rule(s) {} before it keep or drop: the decisions are Refinery's, its rates see that traffic too",
                    rule.name,
                    seen_anyway.join(", ")
                ));
            }
            let cases: usize = exclusions.iter().map(Vec::len).product();
            if cases > MAX_CASES {
                return Err(format!(
                    "rule {:?}: excluding the {} earlier rules takes {cases} policies (more than {MAX_CASES}); give the earlier rules fewer conditions",
                    rule.name,
                    exclusions.len()
                ));
            }
            for case in 0..cases {
                let mut parts: Vec<Policy> = guard.to_vec();
                parts.extend(rule.matcher.iter().cloned());
                let mut at = case;
                for options in &exclusions {
                    parts.push(options[at % options.len()].clone());
                    at /= options.len();
                }
                let top = if cases > 1 {
                    format!("{} (case {} of {cases})", rule.name, case + 1)
                } else {
                    rule.name.clone()
                };
                let policy = match &rule.action {
                    Action::KeepNone => break,
                    Action::Drop => {
                        if parts.is_empty() {
                            parts.push(Policy::Always {
                                name: format!("{}: every trace", rule.name),
                            });
                        }
                        Policy::Drop {
                            name: top,
                            subs: parts,
                        }
                    }
                    Action::Keep(n) => {
                        if *n > 1 {
                            parts.push(Policy::Probabilistic {
                                name: format!("{}: 1 in {n}", rule.name),
                                percentage: 100.0 / *n as f64,
                            });
                        }
                        finish(top, parts)
                    }
                    Action::Sampler(p) => {
                        parts.push(p.clone());
                        finish(top, parts)
                    }
                };
                out.push(self.rename_all(policy));
            }
        }
        Ok(())
    }

    /// Makes every name in the tree unique in the file.
    fn rename_all(&mut self, mut p: Policy) -> Policy {
        let n = std::mem::take(p.name_mut());
        *p.name_mut() = self.unique(n);
        match p {
            Policy::And { name, subs } => Policy::And {
                name,
                subs: subs.into_iter().map(|s| self.rename_all(s)).collect(),
            },
            Policy::Drop { name, subs } => Policy::Drop {
                name,
                subs: subs.into_iter().map(|s| self.rename_all(s)).collect(),
            },
            Policy::Not { name, sub } => Policy::Not {
                name,
                sub: Box::new(self.rename_all(*sub)),
            },
            other => other,
        }
    }
}

/// Beyond this many policies for one rule, the rules want rewriting.
const MAX_CASES: usize = 64;

/// "This condition does not hold" as a policy `not` may hold.
fn negate(p: &Policy, name: &str) -> Policy {
    match p {
        Policy::Not { sub, .. } => {
            let mut inner = (**sub).clone();
            *inner.name_mut() = name.to_string();
            inner
        }
        other => Policy::Not {
            name: name.to_string(),
            sub: Box::new(other.clone()),
        },
    }
}

/// One policy for the parts of a keep: the part itself when alone, named
/// as the rule; an `and` of them otherwise; `always_sample` when there are
/// none.
fn finish(name: String, mut parts: Vec<Policy>) -> Policy {
    match parts.len() {
        0 => Policy::Always { name },
        1 => {
            let mut p = parts.remove(0);
            *p.name_mut() = name;
            p
        }
        _ => Policy::And { name, subs: parts },
    }
}

fn read_condition(v: &Value, place: &str) -> Result<Condition, String> {
    let m = fields_of(
        v,
        place,
        &["Field", "Fields", "Operator", "Value", "Datatype"],
    )?;
    let mut fields = Vec::new();
    match m.get("Field") {
        Some(Value::String(f)) if !f.is_empty() => fields.push(f.clone()),
        None | Some(Value::Null) => {}
        Some(Value::String(_)) => {}
        Some(_) => return Err(format!("{place}: Field must be a string")),
    }
    match m.get("Fields") {
        Some(Value::Sequence(list)) => {
            if !fields.is_empty() && !list.is_empty() {
                return Err(format!(
                    "{place}: both Field and Fields are set; Refinery takes one"
                ));
            }
            for f in list {
                fields.push(
                    f.as_str()
                        .ok_or_else(|| format!("{place}: Fields must be strings"))?
                        .to_string(),
                );
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(format!("{place}: Fields must be a list")),
    }
    let operator = m
        .get("Operator")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{place}: no Operator"))?
        .to_string();
    Ok(Condition {
        fields,
        operator,
        value: m.get("Value").cloned().unwrap_or(Value::Null),
        datatype: m
            .get("Datatype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}
