//! The body of a decisions push (`x-tailgate-decisions: 1`): decisions a
//! sampler took for traces that now belong to the receiver, so that late
//! spans reaching the new owner follow them.
//!
//! Protobuf, written and read by hand with [`proto::wire`] (no schema
//! compiler for two small messages):
//!
//! ```protobuf
//! message Decisions {
//!   repeated Decision decision = 1;
//! }
//! message Decision {
//!   bytes trace_id = 1;   // 16 bytes
//!   bool sampled = 2;
//!   string policy = 3;    // the keeping policy, when spans are annotated with it
//!   string threshold = 4; // the OTel sampling threshold (`th`, 14 hex digits)
//! }
//! ```
//!
//! Unknown fields are skipped, so a newer sender can add some.

use std::sync::Arc;

use policy::Threshold;
use proto::view::TraceId;
use proto::wire::{self, Reader, Value, WireError, put_len_header, put_varint};

use crate::cache::{CachedDecision, Kept};

const DECISIONS: &str = "Decisions";
const DECISION: &str = "Decision";

/// Appends one decision (a `Decisions.decision` field).
pub fn put_decision(out: &mut Vec<u8>, id: &TraceId, decision: &CachedDecision) {
    let mut inner = Vec::with_capacity(24);
    put_len_header(&mut inner, 1, id.0.len());
    inner.extend_from_slice(&id.0);
    if let CachedDecision::Sampled(kept) = decision {
        inner.push(2 << 3); // field 2, varint
        put_varint(&mut inner, 1);
        if let Some(policy) = &kept.policy {
            put_len_header(&mut inner, 3, policy.len());
            inner.extend_from_slice(policy.as_bytes());
        }
        if let Some(th) = &kept.threshold {
            let hex = format!("{:014x}", th.value());
            put_len_header(&mut inner, 4, hex.len());
            inner.extend_from_slice(hex.as_bytes());
        }
        if let Some(sub) = &kept.composite_policy {
            put_len_header(&mut inner, 5, sub.len());
            inner.extend_from_slice(sub.as_bytes());
        }
    }
    put_len_header(out, 1, inner.len());
    out.extend_from_slice(&inner);
}

/// Encoded size of one decision, close enough to chunk requests by.
pub fn decision_len(decision: &CachedDecision) -> usize {
    let extra = match decision {
        CachedDecision::Sampled(kept) => {
            2 + kept.policy.as_ref().map_or(0, |p| 2 + p.len())
                + kept.composite_policy.as_ref().map_or(0, |p| 2 + p.len())
                + kept.threshold.map_or(0, |_| 16)
        }
        CachedDecision::NotSampled => 0,
    };
    2 + 18 + extra
}

/// Reads a decisions body. A malformed one is refused whole.
pub fn read_decisions(body: &[u8]) -> Result<Vec<(TraceId, CachedDecision)>, WireError> {
    let mut out = Vec::new();
    let mut reader = Reader::new(body);
    while let Some(field) = reader.next_field()? {
        if field.number != 1 {
            continue;
        }
        let inner = wire::bytes(&field, DECISIONS)?;
        out.push(read_decision(inner, field.value_offset)?);
    }
    Ok(out)
}

fn read_decision(body: &[u8], base: usize) -> Result<(TraceId, CachedDecision), WireError> {
    let mut id = None;
    let mut sampled = false;
    let mut policy: Option<Arc<str>> = None;
    let mut threshold = None;
    let mut composite_policy: Option<Arc<str>> = None;
    let mut reader = Reader::at(body, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => {
                let bytes = wire::bytes(&field, DECISION)?;
                let bytes: [u8; 16] = bytes.try_into().map_err(|_| WireError::BadTraceId {
                    offset: field.value_offset,
                    len: bytes.len(),
                })?;
                id = Some(TraceId(bytes));
            }
            2 => match field.value {
                Value::Varint(v) => sampled = v != 0,
                _ => wire::expect(&field, DECISION, wire::VARINT)?,
            },
            3 => policy = Some(wire::string(&field, DECISION)?.into()),
            // A threshold that does not parse only loses the annotation.
            4 => threshold = Threshold::parse(wire::string(&field, DECISION)?),
            5 => composite_policy = Some(wire::string(&field, DECISION)?.into()),
            _ => {}
        }
    }
    let id = id.ok_or(WireError::BadTraceId {
        offset: base,
        len: 0,
    })?;
    let decision = if sampled {
        CachedDecision::sampled(Kept {
            policy,
            composite_policy,
            threshold,
        })
    } else {
        CachedDecision::NotSampled
    };
    Ok((id, decision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::trace_id;

    #[test]
    fn decisions_round_trip() {
        let decisions = vec![
            (trace_id(1), CachedDecision::NotSampled),
            (
                trace_id(2),
                CachedDecision::sampled(Kept {
                    policy: Some("errors".into()),
                    composite_policy: Some("budget-errors".into()),
                    threshold: None,
                }),
            ),
            (
                trace_id(3),
                CachedDecision::sampled(Kept {
                    policy: None,
                    composite_policy: None,
                    threshold: Threshold::from_percentage(10.0),
                }),
            ),
        ];
        let mut body = Vec::new();
        for (id, d) in &decisions {
            put_decision(&mut body, id, d);
        }
        let estimate: usize = decisions.iter().map(|(_, d)| decision_len(d)).sum();
        assert!(body.len() <= estimate, "{} > {estimate}", body.len());
        assert_eq!(read_decisions(&body).unwrap(), decisions);
        assert_eq!(read_decisions(&[]).unwrap(), []);
    }

    #[test]
    fn a_malformed_body_is_refused() {
        let mut body = Vec::new();
        put_decision(&mut body, &trace_id(1), &CachedDecision::NotSampled);
        assert!(read_decisions(&body[..body.len() - 1]).is_err());
        // A trace ID of the wrong length.
        let mut bad = Vec::new();
        put_len_header(&mut bad, 1, 5);
        put_len_header(&mut bad, 1, 3);
        bad.extend_from_slice(b"abc");
        assert!(read_decisions(&bad).is_err());
    }
}
