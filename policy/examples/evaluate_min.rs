//! Evaluation time per trace as the minimum over 300 batches of 200
//! evaluations: the same trace and policy files as benches/evaluate.rs, for
//! a machine shared with other work, where criterion's mean moves with the
//! load but the fastest batch does not.
//!
//! Run: `cargo run --release -p policy --example evaluate_min`
//!
//! `evaluate_min NAME N` instead evaluates only file NAME, N times, and
//! prints nothing: a fixed amount of work to count instructions with
//! (`valgrind --tool=callgrind`), which the load of a shared machine does not
//! change. Subtract a run with N = 0 (parsing the file, building the trace).

use std::hint::black_box;
use std::time::{Duration, Instant};

use policy::{PolicyFile, TraceView};

#[path = "../benches/common/mod.rs"]
mod common;
use common::{OTTL_EQUIVALENT, OTTL_TEN, STRING_ATTRIBUTE, THREE, TWENTY, fixture, span_refs};

fn main() {
    let (id, resources, spans, summary) = fixture();
    let refs = span_refs(&resources, &spans);
    let view = TraceView {
        trace_id: id,
        summary: &summary,
        spans: &refs,
    };
    let all = [
        ("3_policies", THREE),
        ("20_policies", TWENTY),
        ("string_attribute", STRING_ATTRIBUTE),
        ("ottl_string_attribute_equivalent", OTTL_EQUIVALENT),
        ("ottl_10_conditions", OTTL_TEN),
    ];
    let mut args = std::env::args().skip(1);
    if let (Some(only), Some(n)) = (args.next(), args.next()) {
        let n: u64 = n.parse().expect("N is a count");
        let (name, yaml) = all
            .iter()
            .find(|(name, _)| *name == only)
            .expect("NAME is one of the files");
        let file = PolicyFile::parse(yaml, name).expect("bench policy file is valid");
        let state = file.policies.new_state();
        for i in 0..n {
            black_box(
                file.policies
                    .evaluate(&state, black_box(&view), Duration::from_nanos(i)),
            );
        }
        return;
    }
    let files: Vec<(&str, PolicyFile)> = all
        .into_iter()
        // A file this build cannot read (an older build, without OTTL) is
        // left out rather than failing the others.
        .filter_map(|(name, yaml)| PolicyFile::parse(yaml, name).ok().map(|file| (name, file)))
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
            "{name}: {:.1} ns per trace (fastest batch)",
            t.as_secs_f64() * 1e9
        );
    }
}
