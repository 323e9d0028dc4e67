//! Framing: `len: u32 LE | checksum: u64 LE | payload[len]`, the checksum
//! being xxh3-64 of the payload seeded with its length, so a torn length is
//! caught as surely as a torn payload.
//!
//! Why xxh3-64 rather than CRC-32C: what a log must catch is a torn tail (a
//! write cut short: zeros, or the previous contents of the block) and the
//! odd flipped bit. Either checksum catches those; a 64-bit hash misses a
//! random corruption with probability 2^-64 where a 32-bit CRC misses one in
//! 2^32, and CRC's extra guarantee (every burst up to 32 bits) matters on a
//! wire, not on a page that is either written or not. xxh3 runs near memory
//! speed on any CPU without a special instruction, and is already in the
//! workspace (the ring hashes with it), where CRC-32C at that speed needs
//! SSE4.2 or a new dependency. The sampler pays it once per accepted
//! request, on bytes it has just touched.

/// Bytes before a record's payload.
pub const HEADER_LEN: usize = 12;
/// The longest payload a record may have (a request is capped far below).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// The checksum of `payload`.
pub fn checksum(payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(payload, payload.len() as u64)
}

/// Starts a frame in `out`: reserves its header; [`finish`] fills it once
/// the payload is written after it. Returns where the frame starts.
pub fn start(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    at
}

/// Fills the header of the frame started at `at`, whose payload is the
/// rest of `out`. Returns the payload's length, or `None` (and removes the
/// frame) when it is longer than [`MAX_PAYLOAD`].
pub fn finish(out: &mut Vec<u8>, at: usize) -> Option<usize> {
    let len = out.len() - at - HEADER_LEN;
    if len > MAX_PAYLOAD {
        out.truncate(at);
        return None;
    }
    let sum = checksum(&out[at + HEADER_LEN..]);
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[at + 4..at + HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Some(len)
}

/// Appends one whole frame.
pub fn put(out: &mut Vec<u8>, payload: &[u8]) -> Option<usize> {
    let at = start(out);
    out.extend_from_slice(payload);
    finish(out, at)
}

/// What is at some offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record whose checksum holds, and the bytes it took.
    Record { payload: &'a [u8], len: usize },
    /// Nothing: the segment ends here, cleanly.
    End,
    /// A frame that cannot be read: cut short (a torn write) or failing its
    /// checksum. Nothing after it in this segment can be trusted.
    Bad(BadFrame),
}

/// Why a frame cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    /// Fewer bytes left than a header, or than the header's length says.
    Truncated,
    /// A length past [`MAX_PAYLOAD`].
    TooLong,
    /// The checksum does not match.
    Checksum,
}

/// Reads the frame at the start of `buf`.
pub fn read(buf: &[u8]) -> Frame<'_> {
    if buf.is_empty() {
        return Frame::End;
    }
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Frame::Bad(BadFrame::Truncated);
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[..4]);
    let len = u32::from_le_bytes(len) as usize;
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&header[4..]);
    let sum = u64::from_le_bytes(sum);
    if len > MAX_PAYLOAD {
        return Frame::Bad(BadFrame::TooLong);
    }
    let Some(payload) = rest.get(..len) else {
        return Frame::Bad(BadFrame::Truncated);
    };
    if checksum(payload) != sum {
        return Frame::Bad(BadFrame::Checksum);
    }
    Frame::Record {
        payload,
        len: HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_reads_back_and_a_cut_or_flipped_one_does_not() {
        let mut out = Vec::new();
        put(&mut out, b"hello").unwrap();
        put(&mut out, b"").unwrap();
        let Frame::Record { payload, len } = read(&out) else {
            panic!("{:?}", read(&out))
        };
        assert_eq!((payload, len), (&b"hello"[..], HEADER_LEN + 5));
        assert_eq!(
            read(&out[len..]),
            Frame::Record {
                payload: b"",
                len: HEADER_LEN
            }
        );
        assert_eq!(read(&out[len + HEADER_LEN..]), Frame::End);
        assert_eq!(read(&out[..len - 1]), Frame::Bad(BadFrame::Truncated));
        assert_eq!(read(&out[..3]), Frame::Bad(BadFrame::Truncated));
        let mut flipped = out.clone();
        flipped[HEADER_LEN + 1] ^= 0x10;
        assert_eq!(read(&flipped), Frame::Bad(BadFrame::Checksum));
        // A torn length: the checksum, seeded with the length, catches it.
        let mut zeroed = out.clone();
        zeroed[0] = 4;
        assert_eq!(read(&zeroed), Frame::Bad(BadFrame::Checksum));
        let mut long = out.clone();
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&long), Frame::Bad(BadFrame::TooLong));
    }

    proptest! {
        #[test]
        fn any_payloads_frame_and_read_back_in_order(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)
        ) {
            let mut out = Vec::new();
            for p in &payloads {
                put(&mut out, p).unwrap();
            }
            let mut at = 0;
            for p in &payloads {
                match read(&out[at..]) {
                    Frame::Record { payload, len } => {
                        prop_assert_eq!(payload, &p[..]);
                        at += len;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
            prop_assert_eq!(read(&out[at..]), Frame::End);
        }

        #[test]
        fn a_single_flipped_bit_is_never_read_as_the_original(
            payload in proptest::collection::vec(any::<u8>(), 1..200),
            bit in any::<usize>(),
        ) {
            let mut out = Vec::new();
            put(&mut out, &payload).unwrap();
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            match read(&out) {
                Frame::Record { payload: got, .. } => prop_assert_ne!(got, &payload[..]),
                Frame::End => prop_assert!(false, "a non-empty buffer read as the end"),
                Frame::Bad(_) => {}
            }
        }
    }
}
