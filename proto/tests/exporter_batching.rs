//! Property tests for the exporter's batcher: whatever the batch sizes and
//! limits, requests hold the input batches whole, in order, exactly once,
//! and stay within the limits unless a single batch alone exceeds them.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proto::exporter::{BatchLimits, Batcher, OtlpBatch, Request};
use tokio::time::Instant;

proptest! {
    #[test]
    fn requests_hold_every_batch_whole_in_order_within_the_limits(
        sizes in prop::collection::vec((1usize..300, 0usize..40), 0..60),
        max_bytes in 1usize..1000,
        max_spans in 1usize..100,
    ) {
        let limits = BatchLimits { max_spans, max_bytes, timeout: Duration::from_millis(200) };
        let mut batcher = Batcher::new(limits);
        let now = Instant::now();
        let mut input = Vec::new();
        let mut requests: Vec<Request> = Vec::new();
        for (i, (bytes, spans)) in sizes.iter().copied().enumerate() {
            let body = Bytes::from(vec![i as u8; bytes]);
            input.extend_from_slice(&body);
            requests.extend(batcher.push(OtlpBatch { request: body, spans }, now));
        }
        requests.extend(batcher.flush());

        let output: Vec<u8> = requests.iter().flat_map(|r| r.body.iter().copied()).collect();
        prop_assert_eq!(output, input);
        prop_assert_eq!(
            requests.iter().map(|r| r.batches).sum::<usize>(),
            sizes.len()
        );
        prop_assert_eq!(
            requests.iter().map(|r| r.spans).sum::<usize>(),
            sizes.iter().map(|s| s.1).sum::<usize>()
        );
        for r in &requests {
            prop_assert!(r.batches >= 1);
            if r.batches > 1 {
                prop_assert!(r.body.len() <= max_bytes && r.spans <= max_spans);
            }
        }
        // No request was sent smaller than needed: each one, together with
        // the first batch of the next, would have broken a limit, or it was
        // full already.
        let mut first = 0;
        let firsts: Vec<(usize, usize)> = requests.iter().map(|r| {
            let f = sizes[first];
            first += r.batches;
            f
        }).collect();
        for (r, (bytes, spans)) in requests.iter().zip(firsts.iter().skip(1)) {
            let full = r.body.len() >= max_bytes || r.spans >= max_spans;
            let no_room = r.body.len() + bytes > max_bytes || r.spans + spans > max_spans;
            prop_assert!(full || no_room);
        }
    }
}
