//! Evaluation time per trace: the default three-policy file (errors,
//! latency 500 ms, 10% probabilistic) and a twenty-policy file where most
//! policies read attributes, on a 10-span trace with typical attributes that
//! no policy keeps, so that every policy runs. Also the cost of re-parsing
//! the stored spans (`SpanView::parse` validates again) on its own, and of
//! annotating one span, and each of tailgate's adaptive policies alone.
//!
//! OTTL: an `ottl_condition` equivalent to a `string_attribute` policy
//! (the resource's or the span's attribute), next to that policy, and a
//! ten-condition `ottl_condition` that reads names, kinds, times, status,
//! resource and span attributes with converters; none matches, so every
//! condition runs on every span.
//!
//! Run: `cargo bench -p policy --bench evaluate -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use policy::{PolicyFile, Threshold, TraceView, annotate_span};
use proto::view::SpanView;

mod common;
use common::{OTTL_EQUIVALENT, OTTL_TEN, STRING_ATTRIBUTE, THREE, TWENTY, fixture, span_refs};

/// tailgate's adaptive policies, one at a time, keyed on two fields (one
/// on the resources, one on the spans) of the 10-span trace.
const EMA_DYNAMIC: &str = "
policies:
  - {name: dyn, type: ema_dynamic, ema_dynamic: {goal_sample_rate: 20, field_list: [service.name, http.route]}}
";
const EMA_THROUGHPUT: &str = "
policies:
  - {name: tp, type: ema_throughput, ema_throughput: {goal_throughput_per_sec: 100, field_list: [service.name, http.route]}}
";
const WINDOWED_THROUGHPUT: &str = "
policies:
  - {name: win, type: windowed_throughput, windowed_throughput: {goal_throughput_per_sec: 100, field_list: [service.name, http.route]}}
";

fn evaluate(c: &mut Criterion) {
    let (id, resources, spans, summary) = fixture();
    let refs = span_refs(&resources, &spans);
    let view = TraceView {
        trace_id: id,
        summary: &summary,
        spans: &refs,
    };
    for (name, yaml) in [
        ("3_policies", THREE),
        ("20_policies", TWENTY),
        ("string_attribute", STRING_ATTRIBUTE),
        ("ottl_string_attribute_equivalent", OTTL_EQUIVALENT),
        ("ottl_10_conditions", OTTL_TEN),
    ] {
        let file = PolicyFile::parse(yaml, name).expect("bench policy file is valid");
        let state = file.policies.new_state();
        // Keep the decision the same on every iteration: a fresh bucket
        // each second, and the rate limiter never has room for 10 spans.
        let decision = file.policies.evaluate(&state, &view, Duration::ZERO);
        assert!(
            !decision.sampled,
            "{name}: the bench trace must run every policy"
        );
        let mut now = Duration::ZERO;
        c.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| {
                now += Duration::from_nanos(1);
                black_box(file.policies.evaluate(&state, black_box(&view), now))
            })
        });
    }
    // The adaptive policies: key built from the spans, counted, rate read,
    // trace-ID hash compared. The trace's vote varies with its rate, so no
    // decision is asserted; time moves by 1 ns an iteration, within one
    // adjustment interval.
    for (name, yaml) in [
        ("ema_dynamic", EMA_DYNAMIC),
        ("ema_throughput", EMA_THROUGHPUT),
        ("windowed_throughput", WINDOWED_THROUGHPUT),
    ] {
        let file = PolicyFile::parse(yaml, name).expect("bench policy file is valid");
        let state = file.policies.new_state();
        let mut now = Duration::ZERO;
        c.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| {
                now += Duration::from_nanos(1);
                black_box(file.policies.evaluate(&state, black_box(&view), now))
            })
        });
    }
    c.bench_function("parse_10_stored_spans", |b| {
        b.iter(|| {
            for s in &refs {
                black_box(SpanView::parse(black_box(s.span), 0).ok());
            }
        })
    });
    let threshold = Threshold::from_percentage(10.0);
    c.bench_function("annotate_span", |b| {
        b.iter(|| {
            black_box(annotate_span(
                black_box(&spans[0].1),
                Some("sample-10pct"),
                threshold,
            ))
        })
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
