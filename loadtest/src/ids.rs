//! Span IDs derived from the trace ID and the span's index in its trace.
//!
//! Deriving them (rather than drawing them at random and listing them in the
//! manifest) keeps the manifest at one short line per trace, and lets
//! [`crate::verify`] turn any received span ID back into its index with
//! [`span_index`], so it knows exactly which span of which trace arrived,
//! without a table of every span ID sent.
//!
//! `span_id(trace, i) = mix(base(trace) + i)` where `mix` is the SplitMix64
//! finalizer (a bijection on `u64`, inverted by `unmix`) and `base` is below
//! 2^63, so `base + i` never wraps to 0 and no span ID is all zeros (the only
//! input `mix` maps to 0 is 0).

use proto::view::{SpanId, TraceId};

/// The SplitMix64 finalizer: a fast bijection on `u64` that scatters bits.
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The inverse of [`mix`].
pub const fn unmix(mut z: u64) -> u64 {
    z = unshift_xor(z, 31);
    z = z.wrapping_mul(inverse(0x94d0_49bb_1331_11eb));
    z = unshift_xor(z, 27);
    z = z.wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9));
    unshift_xor(z, 30)
}

/// Inverts `x ^ (x >> shift)`.
const fn unshift_xor(z: u64, shift: u32) -> u64 {
    let mut x = z;
    let mut done = shift;
    while done < 64 {
        x = z ^ (x >> shift);
        done += shift;
    }
    x
}

/// The multiplicative inverse of an odd `c` modulo 2^64 (Newton's method:
/// each step doubles the number of correct low bits, 3 → 96).
const fn inverse(c: u64) -> u64 {
    let mut x = c;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Per-trace base of the span IDs, below 2^63.
fn base(trace: &TraceId) -> u64 {
    let (hi, lo) = halves(trace);
    mix(hi ^ mix(lo)) >> 1
}

fn halves(trace: &TraceId) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&trace.0[..8]);
    lo.copy_from_slice(&trace.0[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

/// The span ID of span `index` of `trace`. Never all zeros; distinct for
/// distinct indexes of one trace.
pub fn span_id(trace: &TraceId, index: u32) -> SpanId {
    SpanId(mix(base(trace) + u64::from(index)).to_be_bytes())
}

/// The index `span` has in `trace` if it is one of its derived span IDs
/// (check it against the trace's span count), or a large number if not.
pub fn span_index(trace: &TraceId, span: &SpanId) -> u64 {
    unmix(u64::from_be_bytes(span.0)).wrapping_sub(base(trace))
}

/// A trace ID from 128 random bits; an all-zero ID is invalid in OTLP.
pub fn trace_id(random: u128) -> TraceId {
    TraceId(random.max(1).to_be_bytes())
}

/// Parses 32 hex digits.
pub fn parse_trace_id(hex_id: &str) -> Option<TraceId> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut out).ok()?;
    Some(TraceId(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmix_inverts_mix() {
        for x in [0u64, 1, 2, 42, u64::MAX, 0x8000_0000_0000_0000, 0xdead_beef] {
            assert_eq!(unmix(mix(x)), x, "{x:#x}");
            assert_eq!(mix(unmix(x)), x, "{x:#x}");
        }
        let mut x = 7u64;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            assert_eq!(unmix(mix(x)), x);
        }
    }

    #[test]
    fn a_span_id_maps_back_to_its_index() {
        let trace = trace_id(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        for index in [0, 1, 2, 99, 65_535, u32::MAX] {
            let id = span_id(&trace, index);
            assert_ne!(id.0, [0; 8]);
            assert_eq!(span_index(&trace, &id), u64::from(index));
        }
    }

    #[test]
    fn a_span_id_of_another_trace_has_no_small_index() {
        let a = trace_id(1);
        let b = trace_id(2);
        let foreign = span_id(&b, 3);
        assert!(span_index(&a, &foreign) > u64::from(u32::MAX));
    }

    #[test]
    fn span_ids_of_one_trace_are_distinct() {
        let trace = trace_id(99);
        let ids: std::collections::HashSet<_> = (0..10_000).map(|i| span_id(&trace, i)).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn trace_ids_parse_from_hex_and_are_never_zero() {
        let t = trace_id(0);
        assert_ne!(t.0, [0; 16]);
        let parsed = parse_trace_id(&t.to_string()).expect("hex");
        assert_eq!(parsed, t);
        assert_eq!(parse_trace_id("xyz"), None);
        assert_eq!(parse_trace_id("00"), None);
    }
}
