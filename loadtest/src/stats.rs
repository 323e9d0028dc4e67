//! A fixed-size latency histogram (log-linear buckets, ≤ 1/32 relative
//! error), so recording every request of a long run costs no memory growth.

use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values up to 2^40 µs (12 days).
const MAX_POW: usize = 40;

/// Microsecond latencies.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("summary", &self.summary())
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (MAX_POW + 1) * SUB],
            total: 0,
            max_us: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let pow = 63 - us.leading_zeros(); // ≥ SUB_BITS
    let sub = (us >> (pow - SUB_BITS)) as usize & (SUB - 1);
    let index = (pow - SUB_BITS + 1) as usize * SUB + sub;
    index.min((MAX_POW + 1) * SUB - 1)
}

/// The largest value that falls in `index`.
fn upper(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let pow = (index / SUB) as u32 + SUB_BITS - 1;
    let sub = (index % SUB) as u64;
    ((SUB as u64 + sub + 1) << (pow - SUB_BITS)) - 1
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0 to 1), rounded up to its bucket's top.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_micros(upper(index).min(self.max_us)));
            }
        }
        Some(Duration::from_micros(self.max_us))
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.total,
            p50_us: self.quantile(0.5).map(|d| d.as_micros() as u64),
            p99_us: self.quantile(0.99).map(|d| d.as_micros() as u64),
            max_us: (self.total > 0).then_some(self.max_us),
        }
    }
}

/// Percentiles of a [`Histogram`], in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `1234567` → `"1,234,567"`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as milliseconds with two decimals, or `-`.
pub fn ms(us: Option<u64>) -> String {
    match us {
        Some(us) => format!("{:.2} ms", us as f64 / 1000.0),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).expect("data").as_micros() as f64;
        let p99 = h.quantile(0.99).expect("data").as_micros() as f64;
        assert!((p50 / 5000.0 - 1.0).abs() < 1.0 / 16.0, "{p50}");
        assert!((p99 / 9900.0 - 1.0).abs() < 1.0 / 16.0, "{p99}");
        assert_eq!(h.quantile(1.0), Some(Duration::from_micros(10_000)));
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for us in (0..1_000_000u64).step_by(7).chain([u64::MAX]) {
            let b = bucket(us);
            assert!(b >= last);
            assert!(upper(b) >= us || b == (MAX_POW + 1) * SUB - 1, "{us}");
            last = b;
        }
    }

    #[test]
    fn an_empty_histogram_has_no_quantiles_and_merging_adds_counts() {
        let mut a = Histogram::default();
        assert_eq!(a.quantile(0.5), None);
        assert_eq!(a.summary().p99_us, None);
        let mut b = Histogram::default();
        b.record(Duration::from_millis(3));
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.summary().max_us, Some(3000));
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
