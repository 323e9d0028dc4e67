//! The per-key sample rates of Refinery's dynamic samplers, as
//! honeycombio/dynsampler-go computes them (emasamplerate.go,
//! emathroughput.go, windowedthroughput.go, keyCalculation.go), driven by
//! the caller's clock: where dynsampler-go runs a ticker goroutine, an
//! [`Estimator`] rolls its intervals over when it is next asked for a rate
//! at or past their end. The counts of an interval are those seen before
//! its end, exactly as with the ticker; only the moment the new rates are
//! computed moves, to the first trace after the boundary.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The largest sample rate: one in 2^56, the finest OTel threshold.
pub(crate) const MAX_RATE: u64 = 1 << 56;

/// How an exponential moving average of per-key counts is kept
/// (EMASampleRate and EMAThroughput share these).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmaSettings {
    /// `adjustment_interval`: how often the averages and rates are updated.
    pub interval: Duration,
    /// `weight`: the share of the newest interval in the average, (0, 1].
    pub weight: f64,
    /// `age_out_value`: a key whose average falls below this is forgotten.
    pub age_out: f64,
    /// `burst_multiple`: an interval whose count reaches this multiple of
    /// the averages' sum ends at once (a burst).
    pub burst_multiple: f64,
    /// `burst_detection_delay`: intervals to wait before detecting bursts.
    pub burst_delay: u64,
}

/// Which of Refinery's samplers, with its validated settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Method {
    /// EMADynamicSampler: rates that average `goal_sample_rate` over all
    /// spans, rare keys kept more.
    EmaDynamic {
        goal_sample_rate: u64,
        ema: EmaSettings,
    },
    /// EMAThroughputSampler: rates that keep about `goal_per_sec` spans per
    /// second, rare keys kept more.
    EmaThroughput {
        goal_per_sec: f64,
        initial_sample_rate: u64,
        ema: EmaSettings,
    },
    /// WindowedThroughputSampler: `goal_per_sec` spans per second shared
    /// equally among the keys seen over the lookback window.
    Windowed {
        goal_per_sec: f64,
        update: Duration,
        lookback_blocks: u64,
    },
}

/// An estimator's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Params {
    pub method: Method,
    /// `max_keys`: distinct keys counted per interval (EMA) or window
    /// (windowed); the averages are held to the same bound.
    pub max_keys: usize,
}

/// The running state of one adaptive policy. Every map is bounded by
/// `max_keys`.
#[derive(Debug, Clone)]
pub(crate) struct Estimator {
    /// Start of the current interval (EMA) or the current block's index
    /// (windowed); `None` before the first trace.
    started: Option<Duration>,
    current_block: Option<u64>,
    /// The first block ever counted (windowed), to know how much of the
    /// window is covered.
    first_block: u64,
    /// Intervals completed (EMA), for `burst_detection_delay`.
    intervals: u64,
    /// Per-key span counts of the current interval or block.
    current: HashMap<Box<str>, f64>,
    current_sum: f64,
    /// Per-key moving averages (EMA).
    averages: HashMap<Box<str>, f64>,
    burst_threshold: f64,
    /// Completed blocks within the lookback window, oldest first (windowed).
    blocks: VecDeque<(u64, HashMap<Box<str>, f64>)>,
    /// The per-key rates in force, and the counts they were computed from.
    rates: HashMap<Box<str>, (u64, f64)>,
    /// Keys counted in the current block that have no rate yet (windowed).
    new_keys: usize,
    have_data: bool,
    /// The share of a throughput goal this node takes (1 standalone).
    goal_share: f64,
    /// Rate updates and bursts so far, for the metrics.
    updates: u64,
    bursts: u64,
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator {
            started: None,
            current_block: None,
            first_block: 0,
            intervals: 0,
            current: HashMap::new(),
            current_sum: 0.0,
            averages: HashMap::new(),
            burst_threshold: 0.0,
            blocks: VecDeque::new(),
            rates: HashMap::new(),
            new_keys: 0,
            have_data: false,
            goal_share: 1.0,
            updates: 0,
            bursts: 0,
        }
    }
}

/// What an estimator is doing, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorStats {
    /// Keys with a rate in force.
    pub keys: usize,
    /// The rate over all keys: counted spans per kept span, as the rates
    /// in force would keep them (1 when nothing is counted yet).
    pub mean_rate: f64,
    /// The keys with the most spans, at most the number asked for, most
    /// first: key, rate, spans counted (average or window sum).
    pub top: Vec<(String, u64, f64)>,
    /// Rate updates (interval ends and bursts) so far.
    pub updates: u64,
    /// Bursts detected so far (EMA).
    pub bursts: u64,
    /// The share of the throughput goal this node takes.
    pub goal_share: f64,
}

impl Estimator {
    /// Counts `count` spans of `key` at `now` (any monotonic time, the same
    /// epoch for every call) and returns the key's sample rate: keep one
    /// trace in that many.
    pub(crate) fn observe(&mut self, params: &Params, key: &str, count: f64, now: Duration) -> u64 {
        match &params.method {
            Method::EmaDynamic {
                goal_sample_rate,
                ema,
            } => self.observe_ema(params, ema, *goal_sample_rate, key, count, now),
            Method::EmaThroughput {
                initial_sample_rate,
                ema,
                ..
            } => self.observe_ema(params, ema, *initial_sample_rate, key, count, now),
            Method::Windowed {
                update,
                lookback_blocks,
                goal_per_sec,
            } => self.observe_windowed(
                params,
                *goal_per_sec,
                *update,
                *lookback_blocks,
                key,
                count,
                now,
            ),
        }
    }

    /// Sets the share of a throughput goal this node takes, in `(0, 1]`
    /// (a fleet-wide goal split among samplers); used from the next rate
    /// update on. Ignored by `ema_dynamic`, whose goal is a rate.
    pub(crate) fn set_goal_share(&mut self, share: f64) {
        if share.is_finite() && share > 0.0 {
            self.goal_share = share.min(1.0);
        }
    }

    /// The rate `key` would get now, without counting anything.
    #[cfg(test)]
    pub(crate) fn rate(&self, key: &str) -> Option<u64> {
        self.rates.get(key).map(|(r, _)| *r)
    }

    /// How many distinct keys the estimator holds in its largest map.
    #[cfg(test)]
    pub(crate) fn held_keys(&self) -> usize {
        let window_keys = self.blocks.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
        self.current
            .len()
            .max(self.averages.len())
            .max(self.rates.len())
            .max(window_keys)
    }

    pub(crate) fn stats(&self, top: usize) -> EstimatorStats {
        let (mut counted, mut kept) = (0.0, 0.0);
        for (rate, count) in self.rates.values() {
            counted += count;
            kept += count / *rate as f64;
        }
        let mut keys: Vec<(&str, u64, f64)> = self
            .rates
            .iter()
            .map(|(k, (r, c))| (&**k, *r, *c))
            .collect();
        keys.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(b.0)));
        EstimatorStats {
            keys: self.rates.len(),
            mean_rate: if kept > 0.0 { counted / kept } else { 1.0 },
            top: keys
                .into_iter()
                .take(top)
                .map(|(k, r, c)| (k.to_string(), r, c))
                .collect(),
            updates: self.updates,
            bursts: self.bursts,
            goal_share: self.goal_share,
        }
    }

    fn count(&mut self, key: &str, count: f64, max_keys: usize) -> bool {
        if let Some(n) = self.current.get_mut(key) {
            *n += count;
        } else if self.current.len() < max_keys {
            self.current.insert(key.into(), count);
        } else {
            return false;
        }
        self.current_sum += count;
        true
    }

    fn observe_ema(
        &mut self,
        params: &Params,
        ema: &EmaSettings,
        initial_rate: u64,
        key: &str,
        count: f64,
        now: Duration,
    ) -> u64 {
        self.tick_ema(params, ema, now);
        self.count(key, count, params.max_keys);
        if self.burst_threshold > 0.0
            && self.current_sum >= self.burst_threshold
            && self.intervals >= ema.burst_delay
        {
            // A burst ends the interval at once and restarts the ticker.
            self.bursts += 1;
            self.update_ema(params, ema);
            self.started = Some(now);
        }
        if !self.have_data {
            return initial_rate;
        }
        self.rates.get(key).map_or(1, |(r, _)| *r)
    }

    /// Ends the intervals (EMA) or blocks (windowed) that ended by `now`,
    /// updating the rates, without counting anything.
    #[cfg(test)]
    pub(crate) fn advance(&mut self, params: &Params, now: Duration) {
        match &params.method {
            Method::EmaDynamic { ema, .. } | Method::EmaThroughput { ema, .. } => {
                self.tick_ema(params, ema, now)
            }
            Method::Windowed {
                goal_per_sec,
                update,
                lookback_blocks,
            } => self.tick_window(*goal_per_sec, *update, *lookback_blocks, now),
        }
    }

    fn tick_ema(&mut self, params: &Params, ema: &EmaSettings, now: Duration) {
        let start = *self.started.get_or_insert(now);
        let interval = ema.interval.as_nanos().max(1);
        let elapsed = now.saturating_sub(start).as_nanos();
        if elapsed >= interval {
            // One ticker tick per interval; ticks with nothing counted
            // change nothing but the interval count, as in dynsampler-go.
            let ticks = elapsed / interval;
            self.update_ema(params, ema);
            self.intervals = self
                .intervals
                .saturating_add(u64::try_from(ticks).unwrap_or(u64::MAX));
            let advance = u64::try_from(ticks * interval).unwrap_or(u64::MAX);
            self.started = Some(start.saturating_add(Duration::from_nanos(advance)));
        }
    }

    /// emasamplerate.go `updateMaps` and `updateEMA` (and emathroughput.go's,
    /// which differs only in the goal).
    fn update_ema(&mut self, params: &Params, ema: &EmaSettings) {
        if self.current.is_empty() {
            return;
        }
        let mut counts = std::mem::take(&mut self.current);
        self.current_sum = 0.0;
        let w = ema.weight;
        let mut next = HashMap::with_capacity(self.averages.len() + counts.len());
        for (key, avg) in self.averages.drain() {
            let value = counts.remove(&key).unwrap_or(0.0);
            let avg = value * w + (1.0 - w) * avg;
            if avg >= ema.age_out {
                next.insert(key, avg);
            }
        }
        for (key, value) in counts {
            let avg = value * w;
            if avg >= ema.age_out {
                next.insert(key, avg);
            }
        }
        if next.len() > params.max_keys {
            // Held to max_keys: the smallest averages go first.
            let mut all: Vec<(Box<str>, f64)> = next.into_iter().collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            all.truncate(params.max_keys);
            next = all.into_iter().collect();
        }
        self.averages = next;

        let sum: f64 = self.averages.values().map(|c| c.max(1.0)).sum();
        self.burst_threshold = sum * ema.burst_multiple;
        let goal_count = match &params.method {
            Method::EmaDynamic {
                goal_sample_rate, ..
            } => sum / *goal_sample_rate as f64,
            Method::EmaThroughput { goal_per_sec, .. } => {
                goal_per_sec * self.goal_share * ema.interval.as_secs_f64()
            }
            Method::Windowed { .. } => return,
        };
        let log_sum: f64 = self.averages.values().map(|c| c.max(1.0).log10()).sum();
        self.rates = log_rates(goal_count / log_sum, &self.averages);
        self.have_data = true;
        self.updates += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_windowed(
        &mut self,
        params: &Params,
        goal_per_sec: f64,
        update: Duration,
        lookback_blocks: u64,
        key: &str,
        count: f64,
        now: Duration,
    ) -> u64 {
        self.tick_window(goal_per_sec, update, lookback_blocks, now);
        // dynsampler-go's bounded block list: a key is counted if the window
        // knows it, or while it holds fewer than max_keys keys.
        let known = self.rates.contains_key(key) || self.current.contains_key(key);
        if known || self.rates.len() + self.new_keys < params.max_keys {
            if !known {
                self.new_keys += 1;
            }
            self.count(key, count, usize::MAX);
        }
        // A key with no rate yet is kept (dynsampler-go answers 0, which
        // Refinery raises to 1).
        self.rates.get(key).map_or(1, |(r, _)| *r)
    }

    fn tick_window(
        &mut self,
        goal_per_sec: f64,
        update: Duration,
        lookback_blocks: u64,
        now: Duration,
    ) {
        let index = u64::try_from(now.as_nanos() / update.as_nanos().max(1)).unwrap_or(u64::MAX);
        let current = *self.current_block.get_or_insert_with(|| {
            self.first_block = index;
            index
        });
        if index > current {
            self.roll_window(goal_per_sec, update, lookback_blocks, current, index);
        }
    }

    /// windowedthroughput.go `updateMaps`, at the first trace of block
    /// `index`: the closed block joins the window and every key gets its
    /// equal share of the goal over the window.
    fn roll_window(
        &mut self,
        goal_per_sec: f64,
        update: Duration,
        lookback_blocks: u64,
        closed: u64,
        index: u64,
    ) {
        let counts = std::mem::take(&mut self.current);
        self.current_sum = 0.0;
        self.new_keys = 0;
        if !counts.is_empty() {
            self.blocks.push_back((closed, counts));
        }
        let oldest = index.saturating_sub(lookback_blocks);
        while self.blocks.front().is_some_and(|(i, _)| *i < oldest) {
            self.blocks.pop_front();
        }
        self.current_block = Some(index);
        let mut sums: HashMap<Box<str>, f64> = HashMap::new();
        for (_, block) in &self.blocks {
            for (k, v) in block {
                *sums.entry(k.clone()).or_insert(0.0) += v;
            }
        }
        self.updates += 1;
        if sums.is_empty() {
            self.rates.clear();
            return;
        }
        // Refinery divides by the whole window from the start, which keeps
        // too much until a full window has passed; the goal here covers the
        // part of the window there are counts for.
        let covered = (index - oldest.max(self.first_block)).clamp(1, lookback_blocks.max(1));
        let goal = goal_per_sec * self.goal_share * update.as_secs_f64() * covered as f64;
        let per_key = goal / sums.len() as f64;
        self.rates = sums
            .into_iter()
            .map(|(k, v)| {
                let rate = (v / per_key).max(1.0);
                (k, (clamp_rate(rate), v))
            })
            .collect();
        self.have_data = true;
    }
}

fn clamp_rate(rate: f64) -> u64 {
    if rate.is_nan() || rate < 1.0 {
        1
    } else if rate >= MAX_RATE as f64 {
        MAX_RATE
    } else {
        rate as u64
    }
}

/// keyCalculation.go `calculateSampleRates`: each key's goal is its log10
/// share of the goal (at least 1); in key order, a key under its goal is
/// kept whole and passes what it does not use on to the keys after it.
pub(crate) fn log_rates(
    goal_ratio: f64,
    buckets: &HashMap<Box<str>, f64>,
) -> HashMap<Box<str>, (u64, f64)> {
    let mut keys: Vec<(&Box<str>, f64)> = buckets.iter().map(|(k, v)| (k, *v)).collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let mut remaining = keys.len() as f64;
    let mut extra = 0.0;
    let mut out = HashMap::with_capacity(keys.len());
    for (key, raw) in keys {
        let count = raw.max(1.0);
        let mut goal = (count.log10() * goal_ratio).max(1.0);
        let extra_for_key = extra / remaining;
        goal += extra_for_key;
        extra -= extra_for_key;
        remaining -= 1.0;
        let rate = if count <= goal {
            extra += goal - count;
            1
        } else {
            let rate = clamp_rate((count / goal).ceil());
            extra += goal - count / rate as f64;
            rate
        };
        out.insert(key.clone(), (rate, raw));
    }
    out
}
