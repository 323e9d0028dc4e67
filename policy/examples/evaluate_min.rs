//! Evaluation time per trace as the minimum over 300 batches of 200
//! evaluations: the same trace and policy files as benches/evaluate.rs, for
//! a machine shared with other work, where criterion's mean moves with the
//! load but the fastest batch does not.
//!
//! Run: `cargo run --release -p policy --example evaluate_min`

use std::hint::black_box;
use std::time::{Duration, Instant};

use policy::{PolicyFile, TraceView};
use proto::write::SpanRef;

#[path = "../benches/common/mod.rs"]
mod common;
use common::{OTTL_EQUIVALENT, OTTL_TEN, STRING_ATTRIBUTE, THREE, TWENTY, fixture};

fn main() {
    let (id, resources, spans, summary) = fixture();
    let refs: Vec<SpanRef<'_>> = spans
        .iter()
        .map(|(r, span)| SpanRef {
            resource: &resources[*r],
            scope: &[],
            span,
        })
        .collect();
    let view = TraceView {
        trace_id: id,
        summary: &summary,
        spans: &refs,
    };
    let files: Vec<(&str, PolicyFile)> = [
        ("3_policies", THREE),
        ("20_policies", TWENTY),
        ("string_attribute", STRING_ATTRIBUTE),
        ("ottl_string_attribute_equivalent", OTTL_EQUIVALENT),
        ("ottl_10_conditions", OTTL_TEN),
    ]
    .into_iter()
    .map(|(name, yaml)| {
        let file = PolicyFile::parse(yaml, name).expect("bench policy file is valid");
        (name, file)
    })
    .collect();
    let mut best = vec![Duration::MAX; files.len()];
    for _ in 0..300 {
        // Interleaved, so that a burst of load hits every file alike.
        for (i, (_, file)) in files.iter().enumerate() {
            let state = file.policies.new_state();
            let start = Instant::now();
            for n in 0..200u64 {
                black_box(file.policies.evaluate(
                    &state,
                    black_box(&view),
                    Duration::from_nanos(n),
                ));
            }
            best[i] = best[i].min(start.elapsed() / 200);
        }
    }
    for ((name, _), t) in files.iter().zip(best) {
        println!(
            "{name}: {:.2} µs per trace (fastest batch)",
            t.as_secs_f64() * 1e6
        );
    }
}
