//! Merging queued batches into export requests: a pure state machine, with
//! time passed in, driven by the exporter's dispatch task.
//!
//! Batches are concatenated whole, never split: two encoded
//! `ExportTraceServiceRequest`s laid end to end are one request holding both
//! (protobuf merges repeated fields), and splitting would mean walking spans
//! the data path otherwise never looks at. So a request stays within the
//! limits unless a single batch already exceeds them; that batch goes alone.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

/// Encoded spans handed to the exporter: one or more whole
/// `ExportTraceServiceRequest`s, concatenated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpBatch {
    /// The encoded request.
    pub request: Bytes,
    /// How many spans it holds (for metrics; the exporter does not count them).
    pub spans: usize,
}

/// When a request is full, and how long a partial one may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// A request is sent once it holds this many spans.
    pub max_spans: usize,
    /// A request is sent once it holds this many bytes.
    pub max_bytes: usize,
    /// A partial request is sent this long after its first batch arrived.
    pub timeout: Duration,
}

/// One export request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The encoded request: the batches it holds, concatenated.
    pub body: Bytes,
    /// The spans it holds.
    pub spans: usize,
    /// How many batches went into it.
    pub batches: usize,
}

/// The partial request being filled.
#[derive(Debug)]
pub struct Batcher {
    limits: BatchLimits,
    parts: Vec<Bytes>,
    spans: usize,
    bytes: usize,
    opened: Option<Instant>,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits,
            parts: Vec::new(),
            spans: 0,
            bytes: 0,
            opened: None,
        }
    }

    /// Adds a batch; returns the requests that became ready (at most two: the
    /// partial one the batch did not fit in, and the one it filled).
    pub fn push(&mut self, batch: OtlpBatch, now: Instant) -> Vec<Request> {
        let mut ready = Vec::new();
        let len = batch.request.len();
        if !self.parts.is_empty()
            && (self.bytes + len > self.limits.max_bytes
                || self.spans + batch.spans > self.limits.max_spans)
        {
            ready.extend(self.flush());
        }
        if self.parts.is_empty() {
            self.opened = Some(now);
        }
        self.parts.push(batch.request);
        self.spans += batch.spans;
        self.bytes += len;
        if self.bytes >= self.limits.max_bytes || self.spans >= self.limits.max_spans {
            ready.extend(self.flush());
        }
        ready
    }

    /// When the partial request is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.limits.timeout)
    }

    /// The partial request, if it is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Request> {
        match self.deadline() {
            Some(due) if due <= now => self.flush(),
            _ => None,
        }
    }

    /// The partial request, due or not.
    pub fn flush(&mut self) -> Option<Request> {
        self.opened = None;
        let batches = self.parts.len();
        let body = match batches {
            0 => return None,
            // One batch: hand its buffer on, no copy.
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(self.bytes);
                for part in self.parts.drain(..) {
                    out.extend_from_slice(&part);
                }
                out.freeze()
            }
        };
        let spans = std::mem::take(&mut self.spans);
        self.bytes = 0;
        Some(Request {
            body,
            spans,
            batches,
        })
    }

    /// Bytes in the partial request.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether there is no partial request.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_spans: 10,
        max_bytes: 100,
        timeout: Duration::from_millis(200),
    };

    fn batch(fill: u8, bytes: usize, spans: usize) -> OtlpBatch {
        OtlpBatch {
            request: Bytes::from(vec![fill; bytes]),
            spans,
        }
    }

    fn sizes(requests: &[Request]) -> Vec<(usize, usize)> {
        requests.iter().map(|r| (r.body.len(), r.spans)).collect()
    }

    #[test]
    fn batches_are_concatenated_in_arrival_order() {
        let now = Instant::now();
        let mut b = Batcher::new(LIMITS);
        assert!(b.push(batch(1, 3, 1), now).is_empty());
        assert!(b.push(batch(2, 2, 1), now).is_empty());
        let r = b.flush().unwrap();
        assert_eq!(&r.body[..], &[1, 1, 1, 2, 2]);
        assert_eq!((r.spans, r.batches), (2, 2));
        assert!(b.is_empty() && b.flush().is_none());
    }

    #[test]
    fn reaching_max_spans_sends_the_request() {
        let now = Instant::now();
        let mut b = Batcher::new(LIMITS);
        assert!(b.push(batch(0, 1, 6), now).is_empty());
        assert_eq!(sizes(&b.push(batch(0, 1, 4), now)), [(2, 10)]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_that_does_not_fit_starts_the_next_request() {
        let now = Instant::now();
        let mut b = Batcher::new(LIMITS);
        assert!(b.push(batch(0, 60, 1), now).is_empty());
        // 60 + 50 > 100 bytes: the first goes out alone, the second waits.
        assert_eq!(sizes(&b.push(batch(0, 50, 1), now)), [(60, 1)]);
        assert_eq!(b.bytes(), 50);
        // Spans likewise: 1 + 9 fits, 10 + 1 does not.
        assert_eq!(sizes(&b.push(batch(0, 1, 9), now)), [(51, 10)]);
    }

    #[test]
    fn an_oversize_batch_goes_alone_and_whole() {
        let now = Instant::now();
        let mut b = Batcher::new(LIMITS);
        assert!(b.push(batch(0, 10, 1), now).is_empty());
        let out = b.push(batch(0, 500, 50), now);
        assert_eq!(sizes(&out), [(10, 1), (500, 50)]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_partial_request_is_due_batch_timeout_after_its_first_batch() {
        let t0 = Instant::now();
        let mut b = Batcher::new(LIMITS);
        assert_eq!(b.deadline(), None);
        b.push(batch(0, 1, 1), t0);
        b.push(batch(0, 1, 1), t0 + Duration::from_millis(150));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(200)));
        assert!(b.poll(t0 + Duration::from_millis(199)).is_none());
        let r = b.poll(t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(r.spans, 2);
        assert_eq!(b.deadline(), None);
        // The next request's clock starts at its own first batch.
        b.push(batch(0, 1, 1), t0 + Duration::from_millis(300));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn a_single_batch_is_passed_on_without_a_copy() {
        let now = Instant::now();
        let mut b = Batcher::new(LIMITS);
        let input = batch(7, 5, 1);
        let ptr = input.request.as_ptr();
        b.push(input, now);
        assert_eq!(b.flush().unwrap().body.as_ptr(), ptr);
    }
}
