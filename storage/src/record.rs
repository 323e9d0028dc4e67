//! What a record says. Payloads start with a kind byte; integers are
//! little-endian; trace IDs are their 16 bytes.
//!
//! - `1` spans: `at: u64` (first seen, Unix nanoseconds), `n: u32`,
//!   `n` trace IDs (the traces the request holds spans of), then the
//!   accepted request's bytes (an `ExportTraceServiceRequest`, as received).
//! - `2` decision: trace ID, `kept: u8` (0 or 1), `at: u64`.
//! - `3` delivered: `n: u32`, `n` trace IDs (their kept spans were
//!   acknowledged by the backend).
//!
//! The log does not read requests: the trace IDs beside them are what it
//! needs to know when a segment may go.

/// A trace ID's 16 bytes.
pub type TraceKey = [u8; 16];

const SPANS: u8 = 1;
const DECISION: u8 = 2;
const DELIVERED: u8 = 3;

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// An accepted request: its spans wait for their traces' decisions.
    Spans {
        /// When the request was accepted, in Unix nanoseconds: the
        /// first-seen time of the traces it starts.
        at_unix_nanos: u64,
        traces: Vec<TraceKey>,
        request: &'a [u8],
    },
    /// A trace was decided.
    Decision {
        trace: TraceKey,
        kept: bool,
        at_unix_nanos: u64,
    },
    /// The kept spans of these traces were delivered to the backend.
    Delivered { traces: Vec<TraceKey> },
}

/// A payload that passed its checksum but does not read as a record (a
/// newer format, or a bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record of kind {kind} does not read: {why}")]
pub struct RecordError {
    pub kind: u8,
    pub why: &'static str,
}

impl Record<'_> {
    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Spans {
                at_unix_nanos,
                traces,
                request,
            } => {
                out.push(SPANS);
                out.extend_from_slice(&at_unix_nanos.to_le_bytes());
                put_keys(out, traces);
                out.extend_from_slice(request);
            }
            Record::Decision {
                trace,
                kept,
                at_unix_nanos,
            } => {
                out.push(DECISION);
                out.extend_from_slice(trace);
                out.push(u8::from(*kept));
                out.extend_from_slice(&at_unix_nanos.to_le_bytes());
            }
            Record::Delivered { traces } => {
                out.push(DELIVERED);
                put_keys(out, traces);
            }
        }
    }

    /// The trace IDs the record names.
    pub fn traces(&self) -> &[TraceKey] {
        match self {
            Record::Spans { traces, .. } | Record::Delivered { traces } => traces,
            Record::Decision { trace, .. } => std::slice::from_ref(trace),
        }
    }
}

fn put_keys(out: &mut Vec<u8>, keys: &[TraceKey]) {
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for k in keys {
        out.extend_from_slice(k);
    }
}

/// Reads a payload.
pub fn decode(payload: &[u8]) -> Result<Record<'_>, RecordError> {
    let Some((&kind, mut rest)) = payload.split_first() else {
        return Err(RecordError {
            kind: 0,
            why: "empty",
        });
    };
    let bad = |why| RecordError { kind, why };
    match kind {
        SPANS => {
            let at_unix_nanos = take_u64(&mut rest).ok_or(bad("no time"))?;
            let traces = take_keys(&mut rest).ok_or(bad("trace IDs cut short"))?;
            Ok(Record::Spans {
                at_unix_nanos,
                traces,
                request: rest,
            })
        }
        DECISION => {
            let trace = take_key(&mut rest).ok_or(bad("no trace ID"))?;
            let kept = match rest.split_first() {
                Some((0, r)) => {
                    rest = r;
                    false
                }
                Some((1, r)) => {
                    rest = r;
                    true
                }
                _ => return Err(bad("kept is not 0 or 1")),
            };
            let at_unix_nanos = take_u64(&mut rest).ok_or(bad("no time"))?;
            if !rest.is_empty() {
                return Err(bad("trailing bytes"));
            }
            Ok(Record::Decision {
                trace,
                kept,
                at_unix_nanos,
            })
        }
        DELIVERED => {
            let traces = take_keys(&mut rest).ok_or(bad("trace IDs cut short"))?;
            if !rest.is_empty() {
                return Err(bad("trailing bytes"));
            }
            Ok(Record::Delivered { traces })
        }
        _ => Err(bad("unknown kind")),
    }
}

fn take_u64(buf: &mut &[u8]) -> Option<u64> {
    let (head, rest) = buf.split_first_chunk::<8>()?;
    *buf = rest;
    Some(u64::from_le_bytes(*head))
}

fn take_key(buf: &mut &[u8]) -> Option<TraceKey> {
    let (head, rest) = buf.split_first_chunk::<16>()?;
    *buf = rest;
    Some(*head)
}

fn take_keys(buf: &mut &[u8]) -> Option<Vec<TraceKey>> {
    let (n, rest) = buf.split_first_chunk::<4>()?;
    let n = u32::from_le_bytes(*n) as usize;
    // The count is checked against what is there before allocating.
    if rest.len() / 16 < n {
        return None;
    }
    *buf = rest;
    (0..n).map(|_| take_key(buf)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = TraceKey> {
        any::<[u8; 16]>()
    }

    fn owned_record() -> impl Strategy<Value = (u8, u64, Vec<TraceKey>, Vec<u8>, bool)> {
        (
            1u8..=3,
            any::<u64>(),
            proptest::collection::vec(key(), 0..5),
            proptest::collection::vec(any::<u8>(), 0..100),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn every_record_decodes_to_itself((kind, at, traces, request, kept) in owned_record()) {
            let record = match kind {
                1 => Record::Spans { at_unix_nanos: at, traces: traces.clone(), request: &request },
                2 => Record::Decision { trace: traces.first().copied().unwrap_or_default(), kept, at_unix_nanos: at },
                _ => Record::Delivered { traces: traces.clone() },
            };
            let mut out = Vec::new();
            record.encode(&mut out);
            prop_assert_eq!(decode(&out), Ok(record));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn malformed_payloads_say_what_is_wrong() {
        assert_eq!(decode(&[]).unwrap_err().why, "empty");
        assert_eq!(decode(&[9]).unwrap_err().why, "unknown kind");
        // Claims a billion trace IDs: refused before allocating.
        let mut huge = vec![3];
        huge.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        assert_eq!(decode(&huge).unwrap_err().why, "trace IDs cut short");
        let mut bad_kept = vec![2];
        bad_kept.extend_from_slice(&[0; 16]);
        bad_kept.push(7);
        assert_eq!(decode(&bad_kept).unwrap_err().why, "kept is not 0 or 1");
    }
}
