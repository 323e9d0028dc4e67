//! The `probabilistic` policy's arithmetic, bit for bit the Collector's
//! (processor/tailsamplingprocessor/internal/sampling/probabilistic.go), and
//! the OTel sampling threshold a kept trace is annotated with
//! (pkg/sampling/probability.go and threshold.go in the same repository).

use std::fmt;

/// The salt the Collector uses when `hash_salt` is empty.
pub(crate) const DEFAULT_HASH_SALT: &str = "default-hash-seed";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over the salt, then the 16 trace-ID bytes (Go's `hash/fnv`
/// `New64a`, written to twice).
pub(crate) fn hash_trace_id(salt: &[u8], trace_id: &[u8; 16]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in salt.iter().chain(trace_id.iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The Collector's `calculateThreshold(percentage / 100)`: `MaxUint64 *
/// ratio` computed with Go's `big.Float` (the product rounded to 64
/// significant bits, to nearest even), then truncated to an integer and
/// clamped to `[0, MaxUint64]`. A trace is kept when its hash is `<=` this.
pub(crate) fn hash_threshold(percentage: f64) -> u64 {
    let ratio = percentage / 100.0;
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio.is_infinite() {
        return u64::MAX;
    }
    // ratio = mantissa * 2^exponent, exactly (mantissa < 2^53).
    let bits = ratio.to_bits();
    let raw_exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exponent) = if raw_exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), raw_exponent - 1075)
    };
    // The exact product fits in 117 bits.
    let mut product = u128::from(u64::MAX) * u128::from(mantissa);
    let mut exponent = exponent;
    // Round to 64 significant bits, ties to even, as big.Float does for a
    // 64-bit precision result.
    let width = 128 - product.leading_zeros() as i32;
    if width > 64 {
        let shift = (width - 64) as u32;
        let kept = product >> shift;
        let rest = product & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        let mut rounded = kept;
        if rest > half || (rest == half && kept & 1 == 1) {
            rounded += 1;
        }
        product = rounded;
        exponent += shift as i32;
        // A carry can make it 65 bits wide; that is still exact.
    }
    // Uint64(): truncate toward zero, saturating.
    if exponent >= 0 {
        if product == 0 {
            return 0;
        }
        let width = 128 - product.leading_zeros() as i32;
        if width + exponent > 64 {
            return u64::MAX;
        }
        (product << exponent) as u64
    } else {
        let shift = -exponent;
        if shift >= 128 {
            return 0;
        }
        let v = product >> shift;
        u64::try_from(v).unwrap_or(u64::MAX)
    }
}

/// An OTel consistent-probability sampling threshold (OTEP 235): the 56-bit
/// rejection threshold, `(1 - p) * 2^56`, written in a span's `tracestate`
/// as `ot=th:<hex>` (14 hex digits, trailing zeros removed) so that a
/// backend can weight a kept span by `2^56 / (2^56 - th)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

/// `2^56`, the number of distinct thresholds.
const MAX_ADJUSTED_COUNT: u64 = 1 << 56;

impl Threshold {
    /// The threshold for keeping `percentage` % of traces, as the Collector's
    /// `ProbabilityToThreshold` computes it: `2^56 - round(p * 2^56)`.
    /// `None` outside `(0, 100]` at 56-bit resolution.
    pub fn from_percentage(percentage: f64) -> Option<Threshold> {
        let probability = percentage / 100.0;
        if !(probability.is_finite()
            && probability >= 1.0 / MAX_ADJUSTED_COUNT as f64
            && probability <= 1.0)
        {
            return None;
        }
        // Go's math.Round: half away from zero; exact here because 2^56 is a
        // power of two and the product is below 2^57.
        let scaled = (probability * MAX_ADJUSTED_COUNT as f64).round() as u64;
        Some(Threshold(
            MAX_ADJUSTED_COUNT - scaled.min(MAX_ADJUSTED_COUNT),
        ))
    }

    /// Parses a `th` value: 1 to 14 hex digits, trailing zeros implied.
    pub fn parse(tvalue: &str) -> Option<Threshold> {
        if tvalue.is_empty() || tvalue.len() > 14 || !tvalue.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        let v = u64::from_str_radix(tvalue, 16).ok()?;
        Some(Threshold(v << (4 * (14 - tvalue.len()))))
    }

    /// A threshold from its raw 56-bit value.
    pub(crate) fn from_value(value: u64) -> Option<Threshold> {
        (value <= MAX_ADJUSTED_COUNT).then_some(Threshold(value))
    }

    /// The raw 56-bit value; 0 keeps everything.
    pub fn value(&self) -> u64 {
        self.0
    }

    /// The probability of keeping a trace, in `(0, 1]`.
    pub fn probability(&self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    /// True when this threshold keeps everything.
    pub fn is_always(&self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Threshold {
    /// The `th` value: 14 hex digits with trailing zeros removed; `0` for
    /// keep-everything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0");
        }
        let digits = format!("{:014x}", self.0);
        f.write_str(digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently of this code, with Python:
    //
    //   def fnv1a64(data):
    //       h = 0xcbf29ce484222325
    //       for b in data:
    //           h ^= b
    //           h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    //       return h
    //   fnv1a64(b"default-hash-seed" + bytes.fromhex(trace_id))
    //
    //   from fractions import Fraction
    //   def go_threshold(pct):          # big.Float, 64-bit precision
    //       exact = Fraction(2**64 - 1) * Fraction(pct / 100.0)
    //       if exact <= 0: return 0
    //       e = 0
    //       while Fraction(2)**e > exact: e -= 1
    //       while Fraction(2)**(e + 1) <= exact: e += 1
    //       scale = Fraction(2)**(e - 63)
    //       m = exact / scale; fl = m.numerator // m.denominator; rem = m - fl
    //       if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2): fl += 1
    //       r = fl * scale
    //       return min(r.numerator // r.denominator, 2**64 - 1)
    //
    //   th(p) = format(2**56 - round_half_up(Fraction(p / 100.0) * 2**56), "014x").rstrip("0")

    #[test]
    fn fnv1a_hash_matches_independent_vectors() {
        let cases: [(&str, &[u8], u64); 6] = [
            (
                "00000000000000000000000000000000",
                b"default-hash-seed",
                0xe19536eed1bbac3d,
            ),
            (
                "0102030405060708090a0b0c0d0e0f10",
                b"default-hash-seed",
                0xdbcf64d5420f4cad,
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                b"default-hash-seed",
                0xa54533ba2e4970b5,
            ),
            (
                "ffffffffffffffffffffffffffffffff",
                b"default-hash-seed",
                0x17bec3739634fe2d,
            ),
            (
                "00000000000000000000000000000000",
                b"my-salt",
                0x6e763c73c5066e46,
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                b"my-salt",
                0xdd37f93efa3ae13a,
            ),
        ];
        for (hex, salt, expected) in cases {
            let mut id = [0u8; 16];
            for (i, byte) in id.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            assert_eq!(hash_trace_id(salt, &id), expected, "{hex}");
        }
    }

    #[test]
    fn hash_threshold_matches_go_big_float_vectors() {
        let cases = [
            (0.0, 0u64),
            (0.1, 18446744073709551),
            (1.0, 184467440737095519),
            (10.0, 1844674407370955263),
            (25.0, 4611686018427387903),
            (33.3, 6142765776545279999),
            (50.0, 9223372036854775807),
            (99.99, 18444899399302178815),
            (100.0, 18446744073709551615),
            (250.0, u64::MAX),
            (-5.0, 0),
        ];
        for (p, expected) in cases {
            assert_eq!(hash_threshold(p), expected, "{p}%");
        }
    }

    #[test]
    fn otel_threshold_matches_independent_vectors() {
        let cases = [
            (10.0, 64851834634135142u64, "e6666666666666"),
            (50.0, 36028797018963968, "8"),
            (1.0, 71337018097548657, "fd70a3d70a3d71"),
            (25.0, 54043195528445952, "c"),
            (33.3, 48062415223297936, "aac083126e979"),
            (0.1, 71985536443890008, "ffbe76c8b43958"),
            (100.0, 0, "0"),
        ];
        for (p, value, tvalue) in cases {
            let th = Threshold::from_percentage(p).unwrap();
            assert_eq!(th.value(), value, "{p}%");
            assert_eq!(th.to_string(), tvalue, "{p}%");
            assert_eq!(Threshold::parse(tvalue), Some(th), "{p}%");
        }
        assert_eq!(Threshold::from_percentage(0.0), None);
        assert_eq!(Threshold::from_percentage(101.0), None);
        assert_eq!(Threshold::parse("123456789abcdef"), None);
        assert_eq!(Threshold::parse("xyz"), None);
    }
}
