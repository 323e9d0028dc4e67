//! What the sampler keeps about a trace besides its span bytes, updated at
//! ingest, so that `latency`, `status_code`, `span_count`, `trace_flags`,
//! `rate_limiting` and `bytes_limiting` decide without reading a span.

use proto::view::SpanView;

/// A running summary of a trace's spans. Adding spans in any order, in any
/// batches merged in any order, gives the same summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceSummary {
    // u32, saturating: a buffered trace is capped far below 4 G spans or
    // 4 GiB, and the sampler keeps one summary per buffered trace (32
    // bytes instead of 40; issue 19's per-trace memory).
    span_count: u32,
    bytes: u32,
    /// `u64::MAX` while there is no span.
    min_start_unix_nano: u64,
    max_end_unix_nano: u64,
    root_seen: bool,
    /// Bit `1 << code` for every status code seen (0 unset, 1 ok, 2 error).
    statuses: u8,
    /// Some span has the W3C `sampled` trace flag (bit 0 of `flags`).
    sampled_flag_seen: bool,
}

impl Default for TraceSummary {
    fn default() -> Self {
        TraceSummary::new()
    }
}

impl TraceSummary {
    pub const fn new() -> Self {
        TraceSummary {
            span_count: 0,
            bytes: 0,
            min_start_unix_nano: u64::MAX,
            max_end_unix_nano: 0,
            root_seen: false,
            statuses: 0,
            sampled_flag_seen: false,
        }
    }

    /// Counts one span whose stored encoding is `encoded_len` bytes.
    pub fn add(&mut self, span: &SpanView<'_>, encoded_len: usize) {
        self.span_count = self.span_count.saturating_add(1);
        self.bytes = self
            .bytes
            .saturating_add(u32::try_from(encoded_len).unwrap_or(u32::MAX));
        self.min_start_unix_nano = self.min_start_unix_nano.min(span.start_time_unix_nano);
        self.max_end_unix_nano = self.max_end_unix_nano.max(span.end_time_unix_nano);
        self.root_seen |= span.is_root();
        if (0..8).contains(&span.status_code) {
            self.statuses |= 1 << span.status_code;
        }
        self.sampled_flag_seen |= span.flags & 1 == 1;
    }

    /// Folds in the summary of more spans of the same trace.
    pub fn merge(&mut self, other: &TraceSummary) {
        self.span_count = self.span_count.saturating_add(other.span_count);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.min_start_unix_nano = self.min_start_unix_nano.min(other.min_start_unix_nano);
        self.max_end_unix_nano = self.max_end_unix_nano.max(other.max_end_unix_nano);
        self.root_seen |= other.root_seen;
        self.statuses |= other.statuses;
        self.sampled_flag_seen |= other.sampled_flag_seen;
    }

    pub fn span_count(&self) -> u64 {
        u64::from(self.span_count)
    }

    /// The sum of the spans' encoded lengths as passed to [`Self::add`].
    pub fn bytes(&self) -> u64 {
        u64::from(self.bytes)
    }

    /// The earliest span start, if any span was added.
    pub fn min_start_unix_nano(&self) -> Option<u64> {
        (self.span_count > 0).then_some(self.min_start_unix_nano)
    }

    /// The latest span end, if any span was added.
    pub fn max_end_unix_nano(&self) -> Option<u64> {
        (self.span_count > 0).then_some(self.max_end_unix_nano)
    }

    /// The trace's duration as the Collector's `latency` policy measures it:
    /// latest end minus earliest start, whatever lies between; negative if
    /// every span ends before the earliest start. 0 with no span.
    pub fn duration_nanos(&self) -> i128 {
        if self.span_count == 0 {
            return 0;
        }
        i128::from(self.max_end_unix_nano) - i128::from(self.min_start_unix_nano)
    }

    /// A span without a parent was added.
    pub fn root_seen(&self) -> bool {
        self.root_seen
    }

    /// A span with status ERROR was added.
    pub fn error_seen(&self) -> bool {
        self.has_status(proto::view::STATUS_ERROR)
    }

    /// A span with this OTLP status code was added.
    pub fn has_status(&self, code: i32) -> bool {
        (0..8).contains(&code) && self.statuses & (1 << code) != 0
    }

    pub(crate) fn status_bits(&self) -> u8 {
        self.statuses
    }

    /// A span with the W3C `sampled` trace flag was added.
    pub fn sampled_flag_seen(&self) -> bool {
        self.sampled_flag_seen
    }
}

// One per buffered trace in the sampler: keep it at 32 bytes.
const _: () = assert!(std::mem::size_of::<TraceSummary>() == 32);
