//! Component tests: a sampler node on 127.0.0.1 between an OTLP client and
//! a recording backend, judged by what the backend receives and by the
//! node's metrics.

mod support;

use std::time::Duration;

use policy::{PolicyFile, TraceSummary, TraceView};
use proto::view::{RequestView, TraceId};
use sampler::SamplerConfig;
use support::*;

const ERRORS: &str = "\
decision_wait: 3s
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";

fn write_policy(name: &str, policy: &str) -> std::path::PathBuf {
    let path = temp_dir(name).join("policy.yaml");
    std::fs::write(&path, policy).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_trace_is_kept_whole_when_its_error_span_arrives_last_and_late() {
    let backend = Backend::start().await;
    let node = Node::start(config("s1", &write_policy("errors", ERRORS), &backend));
    // Trace 1: four fine spans, one request each, then the error span,
    // later and last. Trace 2: fine throughout.
    for span in 0..4 {
        node.send(&[SpanSpec::new(1, span), SpanSpec::new(2, span)])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.send(&[SpanSpec::new(1, 4).error()]).await.unwrap();

    let m = node
        .metrics_until(400, |m| {
            m.sum("tailgate_traces_decided_total", &[("node", "s1")]) >= 2.0
        })
        .await;
    assert_eq!(
        m.sum(
            "tailgate_traces_decided_total",
            &[("decision", "sampled"), ("policy", "errors")]
        ),
        1.0
    );
    assert!(wait_for(500, || backend.spans_of(trace_id(1)).len() == 5).await);
    assert_eq!(backend.spans_of(trace_id(1)), [0, 1, 2, 3, 4]);
    // Whole: one trace's spans go out together, in one request.
    assert_eq!(backend.requests().len(), 1);
    assert!(backend.spans_of(trace_id(2)).is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_trace_is_kept_and_a_fast_one_is_not() {
    let backend = Backend::start().await;
    let policy = "\
decision_wait: 500ms
policies:
  - name: slow
    type: latency
    latency: {threshold_ms: 500}
";
    let node = Node::start(config("s1", &write_policy("slow", policy), &backend));
    node.send(&[
        SpanSpec::new(1, 0).root().times(1_000, 2_500),
        SpanSpec::new(1, 1).times(1_100, 1_200),
        SpanSpec::new(2, 0).root().times(1_000, 1_100),
        SpanSpec::new(2, 1).times(1_010, 1_050),
    ])
    .await
    .unwrap();
    let m = node
        .metrics_until(400, |m| {
            m.sum("tailgate_traces_decided_total", &[("node", "s1")]) >= 2.0
        })
        .await;
    assert_eq!(
        m.sum("tailgate_traces_decided_total", &[("policy", "slow")]),
        1.0
    );
    assert!(wait_for(500, || backend.spans_of(trace_id(1)).len() == 2).await);
    assert!(backend.spans_of(trace_id(2)).is_empty());
    node.shutdown().await.unwrap();
}

/// A pseudo-random 128-bit trace ID (splitmix64), so the probabilistic
/// policy sees the spread a real fleet sends.
fn random_id(n: u64) -> TraceId {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix(n.wrapping_mul(2) + 1).to_le_bytes());
    id[8..].copy_from_slice(&mix(n.wrapping_mul(2) + 2).to_le_bytes());
    TraceId(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probabilistic_share_holds_and_matches_the_policy_crate() {
    let backend = Backend::start().await;
    let policy = "\
decision_wait: 200ms
policies:
  - name: quarter
    type: probabilistic
    probabilistic: {sampling_percentage: 25}
";
    let path = write_policy("probabilistic", policy);
    let node = Node::start(SamplerConfig {
        use_tracestate: true,
        ..config("s1", &path, &backend)
    });
    const TRACES: u64 = 2000;
    let ids: Vec<TraceId> = (0..TRACES).map(random_id).collect();
    for chunk in ids.chunks(200) {
        let specs: Vec<SpanSpec> = chunk
            .iter()
            .map(|id| SpanSpec::new(0, 0).root().with_trace_id(*id))
            .collect();
        node.send(&specs).await.unwrap();
    }
    let m = node
        .metrics_until(600, |m| {
            m.sum("tailgate_traces_decided_total", &[("node", "s1")]) >= TRACES as f64
        })
        .await;
    let kept = m.sum("tailgate_traces_decided_total", &[("decision", "sampled")]);
    // Binomial(2000, 0.25): mean 500, sd 19.4; ±6 sd.
    assert!((384.0..=616.0).contains(&kept), "kept {kept} of {TRACES}");

    // And exactly the traces the policy crate keeps.
    let file = PolicyFile::load(&path).unwrap();
    let state = file.policies.new_state();
    let expected: Vec<TraceId> = ids
        .iter()
        .copied()
        .filter(|id| {
            let summary = TraceSummary::new();
            let view = TraceView {
                trace_id: *id,
                summary: &summary,
                spans: &[],
            };
            file.policies
                .evaluate(&state, &view, Duration::ZERO)
                .sampled
        })
        .collect();
    assert_eq!(expected.len() as f64, kept);
    assert!(wait_for(500, || backend.spans().len() == expected.len()).await);
    let mut got: Vec<TraceId> = backend.spans().into_iter().map(|(t, _)| t).collect();
    let mut expected = expected;
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
    // Kept by probabilistic sampling, with use_tracestate (the Collector's
    // usetracestate gate): the spans carry the OTel threshold.
    let requests = backend.requests();
    let mut states = Vec::new();
    RequestView::new(&requests[0])
        .for_each_span(|_, _, s| states.push(s.trace_state().to_owned()))
        .unwrap();
    assert!(states.iter().all(|s| s.contains("th:c")), "{states:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_span_after_the_decision_follows_it() {
    let backend = Backend::start().await;
    let policy = "\
decision_wait: 300ms
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";
    let node = Node::start(config("s1", &write_policy("late", policy), &backend));
    node.send(&[SpanSpec::new(1, 0).error(), SpanSpec::new(2, 0)])
        .await
        .unwrap();
    node.metrics_until(400, |m| {
        m.sum("tailgate_traces_decided_total", &[("node", "s1")]) >= 2.0
    })
    .await;
    assert!(wait_for(500, || backend.spans_of(trace_id(1)) == [0]).await);

    // Late spans, fine ones: trace 1's follows "kept", trace 2's "not kept".
    node.send(&[SpanSpec::new(1, 1), SpanSpec::new(2, 1)])
        .await
        .unwrap();
    let m = node
        .metrics_until(400, |m| {
            m.sum("tailgate_late_spans_total", &[("node", "s1")]) >= 2.0
        })
        .await;
    assert_eq!(
        m.sum("tailgate_late_spans_total", &[("decision", "sampled")]),
        1.0
    );
    assert_eq!(
        m.sum("tailgate_late_spans_total", &[("decision", "not_sampled")]),
        1.0
    );
    assert!(wait_for(500, || backend.spans_of(trace_id(1)) == [0, 1]).await);
    assert!(backend.spans_of(trace_id(2)).is_empty());
    // Neither started a new trace.
    assert_eq!(m.sum("tailgate_buffer_traces", &[("node", "s1")]), 0.0);
    assert_eq!(
        m.sum("tailgate_traces_decided_total", &[("node", "s1")]),
        2.0
    );
    node.shutdown().await.unwrap();
}

/// Each span the backend received, as (trace, span, `tailsampling.dry_run.kept`,
/// `tailsampling.policy`), decoded with prost.
fn dry_run_marks(backend: &Backend) -> Vec<(TraceId, u8, Option<bool>, Option<String>)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    let mut out = Vec::new();
    for body in backend.requests() {
        let request = ExportTraceServiceRequest::decode(body).unwrap();
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let attribute = |key: &str| {
                span.attributes
                    .iter()
                    .filter(|kv| kv.key == key)
                    .filter_map(|kv| kv.value.as_ref()?.value.clone())
                    .collect::<Vec<Value>>()
            };
            let kept = match attribute("tailsampling.dry_run.kept").as_slice() {
                [] => None,
                [Value::BoolValue(b)] => Some(*b),
                other => panic!("one bool mark expected, got {other:?}"),
            };
            let policy = match attribute("tailsampling.policy").as_slice() {
                [] => None,
                [Value::StringValue(s)] => Some(s.clone()),
                other => panic!("one policy mark expected, got {other:?}"),
            };
            let id = TraceId(span.trace_id.as_slice().try_into().unwrap());
            out.push((id, span.span_id[0] - 1, kept, policy));
        }
    }
    out.sort_by_key(|(id, span, _, _)| (id.0, *span));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_forwards_every_trace_marked_with_its_decision_and_counts_what_would_be_kept() {
    let backend = Backend::start().await;
    let mut c = config("dry", &write_policy("dry-run", ERRORS), &backend);
    c.dry_run = true;
    let node = Node::start(c);
    // Trace 1 has an error (kept by `errors`); trace 2 has none.
    node.send(&[
        SpanSpec::new(1, 0),
        SpanSpec::new(1, 1).error(),
        SpanSpec::new(2, 0),
        SpanSpec::new(2, 1),
        SpanSpec::new(2, 2),
    ])
    .await
    .unwrap();
    node.metrics_until(400, |m| {
        m.sum("tailgate_traces_decided_total", &[("node", "dry")]) >= 2.0
    })
    .await;
    // A late span of the trace that would not have been kept: forwarded too.
    node.send(&[SpanSpec::new(2, 3)]).await.unwrap();
    assert!(wait_for(500, || backend.spans().len() == 6).await);
    let kept = Some(true);
    let errors = Some("errors".to_string());
    assert_eq!(
        dry_run_marks(&backend),
        [
            (trace_id(1), 0, kept, errors.clone()),
            (trace_id(1), 1, kept, errors),
            (trace_id(2), 0, Some(false), None),
            (trace_id(2), 1, Some(false), None),
            (trace_id(2), 2, Some(false), None),
            (trace_id(2), 3, Some(false), None),
        ]
    );
    let m = node
        .metrics_until(400, |m| {
            m.sum("tailgate_dry_run_spans_total", &[("node", "dry")]) >= 6.0
        })
        .await;
    assert_eq!(
        m.sum(
            "tailgate_traces_decided_total",
            &[
                ("node", "dry"),
                ("decision", "sampled"),
                ("policy", "errors")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "tailgate_traces_decided_total",
            &[("node", "dry"), ("decision", "not_sampled")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "tailgate_dry_run_spans_total",
            &[("node", "dry"), ("kept", "true")]
        ),
        2.0
    );
    assert_eq!(
        m.sum(
            "tailgate_dry_run_spans_total",
            &[("node", "dry"), ("kept", "false")]
        ),
        4.0
    );
    assert_eq!(
        m.sum("tailgate_spans_forwarded_total", &[("node", "dry")]),
        6.0
    );
    assert_eq!(
        m.sum("tailgate_spans_not_sampled_total", &[("node", "dry")]),
        0.0
    );
    assert_eq!(
        m.identity(&[("node", "dry")]).0,
        m.identity(&[("node", "dry")]).1
    );
    node.shutdown().await.unwrap();
}
