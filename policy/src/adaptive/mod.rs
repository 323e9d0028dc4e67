//! tailgate's adaptive policies, extensions of the Collector's syntax:
//! Honeycomb Refinery's dynamic samplers as policy types.
//!
//! - `ema_dynamic` (Refinery's EMADynamicSampler): per-key sample rates
//!   that average `goal_sample_rate`, rare keys kept more often;
//! - `ema_throughput` (EMAThroughputSampler): the same log-share rates,
//!   aimed at `goal_throughput_per_sec` kept spans;
//! - `windowed_throughput` (WindowedThroughputSampler): the throughput goal
//!   shared equally among the keys seen over a lookback window.
//!
//! A trace's key is built from `field_list` as Refinery builds it
//! (sample/trace_key.go), its rate comes from an [`Estimator`] held in the
//! policy's slot of the `PolicyState`, and the trace is kept when a hash
//! of its trace ID clears the OTel threshold of that rate: the same trace
//! keeps or drops the same way on every node for a given rate, and a kept
//! trace carries the threshold (`ot=th`) so that summing 1/p over kept
//! spans estimates what was sent. Refinery draws a random number instead.

mod estimator;
mod key;

use std::time::Duration;

use serde::Deserialize;

use crate::config::GoDuration;
use crate::probabilistic::{Threshold, hash_trace_id};

pub use estimator::EstimatorStats;
pub(crate) use estimator::{EmaSettings, Estimator, MAX_RATE, Method, Params};
pub(crate) use key::KeySpec;

/// The adaptive policy types, tailgate's own.
pub(crate) const TYPES: [&str; 3] = ["ema_dynamic", "ema_throughput", "windowed_throughput"];

/// Refinery's defaults (config.md of honeycombio/refinery, and
/// dynsampler-go's `Start` methods).
const DEFAULT_GOAL_SAMPLE_RATE: u64 = 10;
const DEFAULT_GOAL_THROUGHPUT: f64 = 100.0;
const DEFAULT_ADJUSTMENT_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_WEIGHT: f64 = 0.5;
const DEFAULT_BURST_MULTIPLE: f64 = 2.0;
const DEFAULT_BURST_DETECTION_DELAY: u64 = 3;
const DEFAULT_MAX_KEYS: u64 = 500;
const DEFAULT_INITIAL_SAMPLE_RATE: u64 = 10;
const DEFAULT_UPDATE_FREQUENCY: Duration = Duration::from_secs(1);
/// Beyond this, `max_keys` is a mistake (each key holds a string).
const MAX_MAX_KEYS: u64 = 100_000;

/// A compiled adaptive policy.
#[derive(Debug)]
pub(crate) struct Adaptive {
    pub kind: &'static str,
    pub slot: usize,
    pub params: Params,
    pub key: KeySpec,
}

/// `ema_dynamic:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmaDynamic {
    /// Average rate to aim for: keep one span in this many. Default 10.
    #[serde(default)]
    pub goal_sample_rate: Option<i64>,
    #[serde(default)]
    pub field_list: Option<Vec<String>>,
    #[serde(default)]
    pub use_trace_length: Option<bool>,
    /// Default 15s.
    #[serde(default)]
    pub adjustment_interval: Option<GoDuration>,
    /// Default 0.5.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Default: the weight.
    #[serde(default)]
    pub age_out_value: Option<f64>,
    /// Default 2.
    #[serde(default)]
    pub burst_multiple: Option<f64>,
    /// Intervals. Default 3.
    #[serde(default)]
    pub burst_detection_delay: Option<i64>,
    /// Default 500.
    #[serde(default)]
    pub max_keys: Option<i64>,
}

/// `ema_throughput:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmaThroughput {
    /// Kept spans per second to aim for. Default 100.
    #[serde(default)]
    pub goal_throughput_per_sec: Option<f64>,
    /// The rate before the first adjustment. Default 10.
    #[serde(default)]
    pub initial_sample_rate: Option<i64>,
    #[serde(default)]
    pub field_list: Option<Vec<String>>,
    #[serde(default)]
    pub use_trace_length: Option<bool>,
    #[serde(default)]
    pub adjustment_interval: Option<GoDuration>,
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub age_out_value: Option<f64>,
    #[serde(default)]
    pub burst_multiple: Option<f64>,
    #[serde(default)]
    pub burst_detection_delay: Option<i64>,
    #[serde(default)]
    pub max_keys: Option<i64>,
}

/// `windowed_throughput:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindowedThroughput {
    /// Kept spans per second to aim for. Default 100.
    #[serde(default)]
    pub goal_throughput_per_sec: Option<f64>,
    #[serde(default)]
    pub field_list: Option<Vec<String>>,
    #[serde(default)]
    pub use_trace_length: Option<bool>,
    /// How often the rates are recomputed. Default 1s.
    #[serde(default)]
    pub update_frequency: Option<GoDuration>,
    /// The window the counts are summed over. Default 30 × update_frequency.
    #[serde(default)]
    pub lookback_frequency: Option<GoDuration>,
    #[serde(default)]
    pub max_keys: Option<i64>,
}

fn positive_count(value: Option<i64>, default: u64, field: &str) -> Result<u64, String> {
    match value {
        None | Some(0) => Ok(default),
        Some(n) if n > 0 => Ok(n as u64),
        Some(n) => Err(format!("{field} must be 1 or more (got {n})")),
    }
}

fn max_keys(value: Option<i64>) -> Result<usize, String> {
    let n = positive_count(value, DEFAULT_MAX_KEYS, "max_keys")?;
    if n > MAX_MAX_KEYS {
        return Err(format!(
            "max_keys must be at most {MAX_MAX_KEYS} (got {n}): each key holds its own counts"
        ));
    }
    Ok(n as usize)
}

fn goal_throughput(value: Option<f64>) -> Result<f64, String> {
    match value {
        None => Ok(DEFAULT_GOAL_THROUGHPUT),
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(format!(
            "goal_throughput_per_sec must be more than 0 (got {v})"
        )),
    }
}

struct RawEma {
    adjustment_interval: Option<GoDuration>,
    weight: Option<f64>,
    age_out_value: Option<f64>,
    burst_multiple: Option<f64>,
    burst_detection_delay: Option<i64>,
}

fn ema_settings(raw: RawEma) -> Result<EmaSettings, String> {
    let interval = match raw.adjustment_interval.map(|d| d.0) {
        None => DEFAULT_ADJUSTMENT_INTERVAL,
        Some(d) if d.is_zero() => DEFAULT_ADJUSTMENT_INTERVAL,
        Some(d) if d < Duration::from_millis(1) => {
            return Err(format!(
                "adjustment_interval must be at least 1ms (got {d:?})"
            ));
        }
        Some(d) => d,
    };
    let weight = match raw.weight {
        None => DEFAULT_WEIGHT,
        Some(0.0) => DEFAULT_WEIGHT,
        Some(w) if w > 0.0 && w <= 1.0 => w,
        Some(w) => return Err(format!("weight must be in (0, 1] (got {w})")),
    };
    let age_out = match raw.age_out_value {
        None => weight,
        Some(0.0) => weight,
        Some(a) if a.is_finite() && a > 0.0 => a,
        Some(a) => return Err(format!("age_out_value must not be negative (got {a})")),
    };
    let burst_multiple = match raw.burst_multiple {
        None => DEFAULT_BURST_MULTIPLE,
        Some(0.0) => DEFAULT_BURST_MULTIPLE,
        Some(b) if b.is_finite() && b > 0.0 => b,
        Some(b) => return Err(format!("burst_multiple must be more than 0 (got {b})")),
    };
    let burst_delay = match raw.burst_detection_delay {
        None | Some(0) => DEFAULT_BURST_DETECTION_DELAY,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            return Err(format!(
                "burst_detection_delay must not be negative (got {n})"
            ));
        }
    };
    Ok(EmaSettings {
        interval,
        weight,
        age_out,
        burst_multiple,
        burst_delay,
    })
}

fn key_spec(fields: Option<&[String]>, use_trace_length: Option<bool>) -> Result<KeySpec, String> {
    let fields = fields.unwrap_or(&[]);
    let use_trace_length = use_trace_length.unwrap_or(false);
    if fields.is_empty() && !use_trace_length {
        return Err(
            "field_list must name at least one field (or set use_trace_length): the key decides the rate".into(),
        );
    }
    if let Some(f) = fields
        .iter()
        .find(|f| f.is_empty() || *f == key::ROOT_PREFIX)
    {
        return Err(format!("field_list has an empty field name ({f:?})"));
    }
    Ok(KeySpec::new(fields, use_trace_length))
}

/// `ema_dynamic` from its block.
pub(crate) fn ema_dynamic(c: &RawEmaDynamic) -> Result<(Params, KeySpec), String> {
    let goal_sample_rate = positive_count(
        c.goal_sample_rate,
        DEFAULT_GOAL_SAMPLE_RATE,
        "goal_sample_rate",
    )?;
    let ema = ema_settings(RawEma {
        adjustment_interval: c.adjustment_interval,
        weight: c.weight,
        age_out_value: c.age_out_value,
        burst_multiple: c.burst_multiple,
        burst_detection_delay: c.burst_detection_delay,
    })?;
    Ok((
        Params {
            method: Method::EmaDynamic {
                goal_sample_rate: goal_sample_rate.min(MAX_RATE),
                ema,
            },
            max_keys: max_keys(c.max_keys)?,
        },
        key_spec(c.field_list.as_deref(), c.use_trace_length)?,
    ))
}

/// `ema_throughput` from its block.
pub(crate) fn ema_throughput(c: &RawEmaThroughput) -> Result<(Params, KeySpec), String> {
    let goal_per_sec = goal_throughput(c.goal_throughput_per_sec)?;
    let initial_sample_rate = positive_count(
        c.initial_sample_rate,
        DEFAULT_INITIAL_SAMPLE_RATE,
        "initial_sample_rate",
    )?;
    let ema = ema_settings(RawEma {
        adjustment_interval: c.adjustment_interval,
        weight: c.weight,
        age_out_value: c.age_out_value,
        burst_multiple: c.burst_multiple,
        burst_detection_delay: c.burst_detection_delay,
    })?;
    Ok((
        Params {
            method: Method::EmaThroughput {
                goal_per_sec,
                initial_sample_rate: initial_sample_rate.min(MAX_RATE),
                ema,
            },
            max_keys: max_keys(c.max_keys)?,
        },
        key_spec(c.field_list.as_deref(), c.use_trace_length)?,
    ))
}

/// `windowed_throughput` from its block.
pub(crate) fn windowed_throughput(c: &RawWindowedThroughput) -> Result<(Params, KeySpec), String> {
    let goal_per_sec = goal_throughput(c.goal_throughput_per_sec)?;
    let update = match c.update_frequency.map(|d| d.0) {
        None => DEFAULT_UPDATE_FREQUENCY,
        Some(d) if d.is_zero() => DEFAULT_UPDATE_FREQUENCY,
        Some(d) if d < Duration::from_millis(1) => {
            return Err(format!("update_frequency must be at least 1ms (got {d:?})"));
        }
        Some(d) => d,
    };
    // windowedthroughput.go: the lookback is a whole number of updates
    // (rounded down), 30 of them by default.
    let lookback_blocks = match c.lookback_frequency.map(|d| d.0) {
        None => 30,
        Some(d) if d.is_zero() => 30,
        Some(d) => {
            let blocks = d.as_nanos() / update.as_nanos();
            if blocks == 0 {
                return Err(format!(
                    "lookback_frequency ({d:?}) must be at least update_frequency ({update:?})"
                ));
            }
            u64::try_from(blocks).unwrap_or(u64::MAX).min(1 << 20)
        }
    };
    Ok((
        Params {
            method: Method::Windowed {
                goal_per_sec,
                update,
                lookback_blocks,
            },
            max_keys: max_keys(c.max_keys)?,
        },
        key_spec(c.field_list.as_deref(), c.use_trace_length)?,
    ))
}

/// The OTel threshold of keeping one trace in `rate` (`None` only for a
/// rate past [`MAX_RATE`], which the estimators never give).
pub(crate) fn threshold(rate: u64) -> Option<Threshold> {
    Threshold::from_percentage(100.0 / rate.clamp(1, MAX_RATE) as f64)
}

const RANDOMNESS_SALT: &[u8] = b"tailgate-adaptive";

/// 56 bits of randomness from the trace ID, the same on every node: the
/// Collector's FNV-1a hash (salted apart from `probabilistic`'s) through
/// a 64-bit finalizer, since FNV's high bits mix short inputs poorly.
pub(crate) fn randomness(trace_id: &[u8; 16]) -> u64 {
    let mut x = hash_trace_id(RANDOMNESS_SALT, trace_id);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x >> 8
}

/// One line of `policy check` output.
pub(crate) fn describe(a: &Adaptive) -> String {
    let mut s = format!("{} (tailgate extension)", a.kind);
    match &a.params.method {
        Method::EmaDynamic {
            goal_sample_rate,
            ema,
        } => {
            s.push_str(&format!(" goal_sample_rate={goal_sample_rate}"));
            push_ema(&mut s, ema);
        }
        Method::EmaThroughput {
            goal_per_sec,
            initial_sample_rate,
            ema,
        } => {
            s.push_str(&format!(
                " goal_throughput_per_sec={goal_per_sec} initial_sample_rate={initial_sample_rate}"
            ));
            push_ema(&mut s, ema);
        }
        Method::Windowed {
            goal_per_sec,
            update,
            lookback_blocks,
        } => {
            s.push_str(&format!(
                " goal_throughput_per_sec={goal_per_sec} update_frequency={} lookback_frequency={}",
                crate::duration::format(*update),
                crate::duration::format(update.saturating_mul(*lookback_blocks as u32)),
            ));
        }
    }
    s.push_str(&format!(
        " field_list=[{}]",
        a.key.fields().collect::<Vec<_>>().join(", ")
    ));
    if a.key.use_trace_length() {
        s.push_str(" use_trace_length=true");
    }
    s.push_str(&format!(" max_keys={}", a.params.max_keys));
    s
}

fn push_ema(s: &mut String, e: &EmaSettings) {
    s.push_str(&format!(
        " adjustment_interval={} weight={} age_out_value={} burst_multiple={} burst_detection_delay={}",
        crate::duration::format(e.interval),
        e.weight,
        e.age_out,
        e.burst_multiple,
        e.burst_delay
    ));
}

#[cfg(test)]
mod tests;
