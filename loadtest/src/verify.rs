//! `verify`: compares what `gen` sent (the manifest) with what reached the
//! backend (the sink's record), under the keep rules the policy promises:
//!
//! - every trace a rule must keep (an error trace with `errors`, a trace
//!   lasting at least `slow` with `slow`) arrived whole;
//! - every other trace arrived whole or not at all (no partial trace);
//! - the share of those others that arrived is within 4σ of `probability`
//!   (binomial: σ = √(n·p·(1−p)) traces);
//! - no span arrived twice, and none arrived that was never sent.
//!
//! A trace with spans `gen` gave up on (an `unsent` line) cannot be expected
//! whole, so it is left out of the first three checks, and counted.
//!
//! [`Verifier`] is the pure part (feed it traces and received spans);
//! [`verify_files`] reads the files into it.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use proto::view::{SpanId, TraceId};
use serde::Serialize;

use crate::ids::span_index;
use crate::manifest::{self, Class, Line, ManifestError, TraceEntry};
use crate::record::{self, RecordError};
use crate::stats::thousands;

/// Deviations beyond this many σ fail the share check.
pub const SIGMAS: f64 = 4.0;
/// Trace IDs named per failure.
const SAMPLES: usize = 5;

/// What the policy under test promises to keep.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Expectations {
    /// Every trace with an error span arrives whole.
    pub errors: bool,
    /// Every trace lasting at least this long arrives whole.
    pub slow: Option<Duration>,
    /// The share of the other traces that arrives is this, within 4σ.
    pub probability: Option<f64>,
}

impl Expectations {
    /// Everything sent arrives: what a sink straight behind `gen` sees.
    pub fn keep_all() -> Self {
        Expectations {
            errors: true,
            slow: None,
            probability: Some(1.0),
        }
    }

    /// `examples/policy.yaml`: errors, 500 ms or more, 10 % of the rest.
    pub fn default_policy() -> Self {
        Expectations {
            errors: true,
            slow: Some(Duration::from_millis(500)),
            probability: Some(0.10),
        }
    }
}

/// Traces a rule must keep whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct KeepCheck {
    pub traces: u64,
    pub whole: u64,
    pub partial: u64,
    pub missing: u64,
}

/// The other traces: whole or absent, in the expected share.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct SampleCheck {
    pub traces: u64,
    pub whole: u64,
    pub absent: u64,
    pub partial: u64,
    pub expected_share: Option<f64>,
    /// `whole / (whole + absent)`.
    pub share: Option<f64>,
    /// How far `whole` is from its expectation, in σ (0 when σ is 0 and it
    /// is exact, infinite when σ is 0 and it is not).
    pub deviation_sigmas: Option<f64>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub expectations: Expectations,
    pub traces: u64,
    pub spans_expected: u64,
    pub spans_received: u64,
    pub errors: KeepCheck,
    pub slow: KeepCheck,
    pub sampled: SampleCheck,
    /// Traces left out of the checks because `gen` gave up on some spans.
    pub traces_with_unsent_spans: u64,
    pub duplicate_spans: u64,
    /// Spans of a trace not in the manifest, or with an ID the trace does not have.
    pub unknown_spans: u64,
    /// One line per failed check; empty when verification passed.
    pub failures: Vec<String>,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// `Err(VerifyError::Failed)` unless every check passed.
    pub fn into_result(self) -> Result<VerifyReport, VerifyError> {
        if self.passed() {
            Ok(self)
        } else {
            Err(VerifyError::Failed(Box::new(self)))
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.expectations;
        writeln!(
            f,
            "verify: {} traces, {} spans sent, {} received",
            thousands(self.traces),
            thousands(self.spans_expected),
            thousands(self.spans_received)
        )?;
        let keep = |f: &mut fmt::Formatter<'_>, name: &str, c: &KeepCheck| {
            writeln!(
                f,
                "  {name:<8} {} traces: {} whole, {} partial, {} missing",
                thousands(c.traces),
                thousands(c.whole),
                thousands(c.partial),
                thousands(c.missing)
            )
        };
        if e.errors {
            keep(f, "errors", &self.errors)?;
        }
        if let Some(slow) = e.slow {
            keep(f, &format!("≥{}ms", slow.as_millis()), &self.slow)?;
        }
        let s = &self.sampled;
        write!(
            f,
            "  others   {} traces: {} whole, {} absent, {} partial",
            thousands(s.traces),
            thousands(s.whole),
            thousands(s.absent),
            thousands(s.partial)
        )?;
        if let (Some(p), Some(share)) = (s.expected_share, s.share) {
            write!(
                f,
                "; share {:.4} (expected {p}, {:.2}σ off)",
                share,
                s.deviation_sigmas.unwrap_or(0.0)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  duplicate spans {}, unknown spans {}, traces with unsent spans (not checked) {}",
            thousands(self.duplicate_spans),
            thousands(self.unknown_spans),
            thousands(self.traces_with_unsent_spans)
        )?;
        if self.passed() {
            write!(f, "PASS")
        } else {
            write!(f, "FAIL")?;
            for failure in &self.failures {
                write!(f, "\n  {failure}")?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("{0}")]
    Failed(Box<VerifyReport>),
}

struct Expected {
    spans: u32,
    error: bool,
    duration_us: u64,
    unsent: u32,
    received: u32,
    /// One bit per span index, allocated on the first received span.
    seen: Option<Box<[u64]>>,
}

/// Collects the manifest and the received spans, then judges.
pub struct Verifier {
    expect: Expectations,
    traces: HashMap<TraceId, Expected>,
    spans_received: u64,
    duplicates: u64,
    duplicate_samples: Vec<String>,
    unknown: u64,
    unknown_samples: Vec<String>,
}

impl Verifier {
    pub fn new(expect: Expectations) -> Self {
        Verifier {
            expect,
            traces: HashMap::new(),
            spans_received: 0,
            duplicates: 0,
            duplicate_samples: Vec::new(),
            unknown: 0,
            unknown_samples: Vec::new(),
        }
    }

    /// A trace `gen` sent (a manifest `trace` line).
    pub fn sent(&mut self, entry: &TraceEntry) {
        self.traces.insert(
            entry.trace_id,
            Expected {
                spans: entry.spans,
                error: entry.class == Class::Error,
                duration_us: entry.duration_us,
                unsent: 0,
                received: 0,
                seen: None,
            },
        );
    }

    /// `spans` of `trace` never reached the endpoint (a manifest `unsent` line).
    pub fn unsent(&mut self, trace: &TraceId, spans: u32) {
        if let Some(t) = self.traces.get_mut(trace) {
            t.unsent = t.unsent.saturating_add(spans);
        }
    }

    /// A span the sink accepted (a record entry).
    pub fn received(&mut self, trace: &TraceId, span: &SpanId) {
        self.spans_received += 1;
        let Some(t) = self.traces.get_mut(trace) else {
            self.unknown += 1;
            sample(&mut self.unknown_samples, || format!("{trace}/{span}"));
            return;
        };
        let index = span_index(trace, span);
        if index >= u64::from(t.spans) {
            self.unknown += 1;
            sample(&mut self.unknown_samples, || format!("{trace}/{span}"));
            return;
        }
        let words = (t.spans as usize).div_ceil(64);
        let seen = t
            .seen
            .get_or_insert_with(|| vec![0u64; words].into_boxed_slice());
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if seen[word] & bit != 0 {
            self.duplicates += 1;
            sample(&mut self.duplicate_samples, || format!("{trace}/{span}"));
        } else {
            seen[word] |= bit;
            t.received += 1;
        }
    }

    pub fn finish(self) -> VerifyReport {
        let expect = self.expect;
        let slow_us = expect.slow.map(|d| d.as_micros() as u64);
        let mut report = VerifyReport {
            expectations: expect,
            traces: self.traces.len() as u64,
            spans_expected: 0,
            spans_received: self.spans_received,
            errors: KeepCheck::default(),
            slow: KeepCheck::default(),
            sampled: SampleCheck::default(),
            traces_with_unsent_spans: 0,
            duplicate_spans: self.duplicates,
            unknown_spans: self.unknown,
            failures: Vec::new(),
        };
        // Per rule: errors, slow.
        let mut missing_samples = [Vec::new(), Vec::new()];
        let mut partial_samples = Vec::new();
        for (trace, t) in &self.traces {
            report.spans_expected += u64::from(t.spans);
            if t.unsent > 0 {
                report.traces_with_unsent_spans += 1;
                continue;
            }
            let whole = t.received == t.spans;
            let absent = t.received == 0;
            let must_keep = if expect.errors && t.error {
                Some((&mut report.errors, &mut missing_samples[0]))
            } else if slow_us.is_some_and(|s| t.duration_us >= s) {
                Some((&mut report.slow, &mut missing_samples[1]))
            } else {
                None
            };
            match must_keep {
                Some((check, samples)) => {
                    check.traces += 1;
                    if whole {
                        check.whole += 1;
                    } else if absent {
                        check.missing += 1;
                        sample(samples, || trace.to_string());
                    } else {
                        check.partial += 1;
                        sample(samples, || {
                            format!("{trace} ({} of {} spans)", t.received, t.spans)
                        });
                    }
                }
                None => {
                    let s = &mut report.sampled;
                    s.traces += 1;
                    if whole {
                        s.whole += 1;
                    } else if absent {
                        s.absent += 1;
                    } else {
                        s.partial += 1;
                        sample(&mut partial_samples, || {
                            format!("{trace} ({} of {} spans)", t.received, t.spans)
                        });
                    }
                }
            }
        }
        let failures = &mut report.failures;
        for ((name, check), samples) in [("error", &report.errors), ("slow", &report.slow)]
            .into_iter()
            .zip(&missing_samples)
        {
            if check.partial + check.missing > 0 {
                failures.push(format!(
                    "{} of {} {name} traces did not arrive whole ({} partial, {} missing), e.g. {}",
                    check.partial + check.missing,
                    check.traces,
                    check.partial,
                    check.missing,
                    samples.join(", ")
                ));
            }
        }
        let s = &mut report.sampled;
        if s.partial > 0 {
            failures.push(format!(
                "{} traces arrived in part (a kept trace must be whole, a dropped one absent), e.g. {}",
                s.partial,
                partial_samples.join(", ")
            ));
        }
        if let Some(p) = expect.probability {
            s.expected_share = Some(p);
            let n = (s.whole + s.absent) as f64;
            if n > 0.0 {
                let k = s.whole as f64;
                s.share = Some(k / n);
                let sigma = (n * p * (1.0 - p)).sqrt();
                let off = (k - n * p).abs();
                let deviation = if off < 1e-9 {
                    0.0
                } else if sigma == 0.0 {
                    f64::INFINITY
                } else {
                    off / sigma
                };
                s.deviation_sigmas = Some(deviation);
                if deviation > SIGMAS {
                    failures.push(format!(
                        "{} of {} other traces arrived (share {:.4}), expected {:.1} ± {:.1} (4σ at p = {p})",
                        s.whole,
                        s.whole + s.absent,
                        k / n,
                        n * p,
                        SIGMAS * sigma
                    ));
                }
            }
        }
        if self.duplicates > 0 {
            failures.push(format!(
                "{} spans arrived more than once, e.g. {}",
                self.duplicates,
                self.duplicate_samples.join(", ")
            ));
        }
        if self.unknown > 0 {
            failures.push(format!(
                "{} spans arrived that were never sent (trace/span), e.g. {}",
                self.unknown,
                self.unknown_samples.join(", ")
            ));
        }
        report
    }
}

fn sample(samples: &mut Vec<String>, describe: impl FnOnce() -> String) {
    if samples.len() < SAMPLES {
        samples.push(describe());
    }
}

/// Reads every manifest, then every record, and judges. `Err(Failed)` when a
/// check fails; other errors when a file cannot be read.
pub fn verify_files(
    manifests: &[PathBuf],
    records: &[PathBuf],
    expect: Expectations,
) -> Result<VerifyReport, VerifyError> {
    let mut verifier = Verifier::new(expect);
    for path in manifests {
        manifest::read(path, |line| match line {
            Line::Trace(entry) => verifier.sent(&entry),
            Line::Unsent { trace_id, spans } => verifier.unsent(&trace_id, spans),
        })?;
    }
    for path in records {
        record::read(path, |trace, span| verifier.received(&trace, &span))?;
    }
    verifier.finish().into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{span_id, trace_id};

    fn entry(n: u128, spans: u32, class: Class, duration_ms: u64) -> TraceEntry {
        TraceEntry {
            trace_id: trace_id(n),
            spans,
            class,
            duration_us: duration_ms * 1000,
        }
    }

    fn deliver(v: &mut Verifier, e: &TraceEntry, indexes: impl IntoIterator<Item = u32>) {
        for i in indexes {
            v.received(&e.trace_id, &span_id(&e.trace_id, i));
        }
    }

    #[test]
    fn everything_whole_passes_keep_all() {
        let mut v = Verifier::new(Expectations::keep_all());
        let traces = [
            entry(1, 3, Class::Error, 10),
            entry(2, 1, Class::Slow, 900),
            entry(3, 5, Class::Normal, 20),
        ];
        for t in &traces {
            v.sent(t);
            deliver(&mut v, t, 0..t.spans);
        }
        let report = v.finish();
        assert!(report.passed(), "{report}");
        assert_eq!(report.spans_received, 9);
        assert_eq!(report.errors.whole, 1);
        assert_eq!(report.sampled.whole, 2);
        assert_eq!(report.sampled.deviation_sigmas, Some(0.0));
    }

    #[test]
    fn a_trace_with_unsent_spans_is_not_judged() {
        let mut v = Verifier::new(Expectations::keep_all());
        let t = entry(1, 4, Class::Error, 10);
        v.sent(&t);
        v.unsent(&t.trace_id, 2);
        deliver(&mut v, &t, 0..2);
        let report = v.finish();
        assert!(report.passed(), "{report}");
        assert_eq!(report.traces_with_unsent_spans, 1);
    }

    #[test]
    fn slow_traces_are_judged_by_duration_not_class() {
        let expect = Expectations {
            errors: false,
            slow: Some(Duration::from_millis(500)),
            probability: Some(0.0),
        };
        let mut v = Verifier::new(expect);
        let slow = entry(1, 2, Class::Normal, 500);
        let fast = entry(2, 2, Class::Slow, 499);
        v.sent(&slow);
        v.sent(&fast);
        deliver(&mut v, &slow, 0..2);
        let report = v.finish();
        assert!(report.passed(), "{report}");
        assert_eq!(report.slow.whole, 1);
        assert_eq!(report.sampled.absent, 1);
    }
}
