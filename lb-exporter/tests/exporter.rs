//! The load-balancing exporter against real OTLP/gRPC sinks on loopback:
//! routing by owner, all-or-nothing backpressure, failover when a member is
//! down, re-routing when it leaves, retries, and shutdown.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use lb_exporter::exporter::ShutdownReport;
use lb_exporter::ring::Ring;
use lb_exporter::{ExportConfig, LbExporter, Member, MemberSet, SendError};
use proto::view::TraceId;
use support::{Answer, FakeSink, Scrape, Traces, eventually, node};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn set(sinks: &[&FakeSink]) -> MemberSet {
    sinks
        .iter()
        .map(|s| Member::parse(&s.member()).unwrap())
        .collect()
}

/// Starts an exporter; the metrics recorder first, so its handles bind.
fn start(config: &ExportConfig, node: &str, members: watch::Receiver<MemberSet>) -> LbExporter {
    proto::admin::install_metrics();
    LbExporter::start(config, node, members).unwrap()
}

fn config() -> ExportConfig {
    ExportConfig {
        timeout: Duration::from_secs(2),
        probe_interval: Duration::from_millis(20),
        probe_max_interval: Duration::from_millis(100),
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        ..ExportConfig::default()
    }
}

async fn sinks(n: usize) -> Vec<FakeSink> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(
            FakeSink::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    v
}

/// A port nobody listens on.
fn dead_member() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

/// `n` trace IDs owned by `member` on `ring`.
fn owned_by(traces: &mut Traces, ring: &Ring, member: &str, n: usize) -> Vec<[u8; 16]> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let id = traces.trace_id();
        if ring.route(&TraceId(id)).as_str() == member {
            out.push(id);
            if out.len() == n {
                return out;
            }
        }
    }
    panic!("no traces owned by {member}");
}

fn sink_of(sinks: &[FakeSink], member: &Member) -> usize {
    sinks
        .iter()
        .position(|s| s.member() == member.as_str())
        .unwrap()
}

fn all_spans(sinks: &[FakeSink]) -> usize {
    sinks.iter().map(FakeSink::span_count).sum()
}

#[tokio::test]
async fn every_span_of_a_trace_reaches_its_owner_and_only_it() {
    let sinks = sinks(3).await;
    let members = set(&sinks.iter().collect::<Vec<_>>());
    let ring = Ring::new(members.clone()).unwrap();
    let (_tx, rx) = watch::channel(members);
    let exporter = start(&config(), "owner", rx);
    let mut traces = Traces::new(1);
    let mut sent = 0;
    let mut ids = Vec::new();
    for _ in 0..40 {
        let (request, t) = traces.fresh(10, 3);
        sent += exporter.send(&request).unwrap();
        ids.extend(t);
    }
    assert_eq!(sent, 40 * 10 * 3);
    // The sinks record a request before the exporter hears their answer.
    let forwarded = || Scrape::now().get("tailgate_lb_spans_forwarded_total", &node("owner", &[]));
    assert!(eventually(WAIT, || forwarded() == sent as f64).await);
    assert_eq!(all_spans(&sinks), sent);
    for id in ids {
        let holders: Vec<usize> = (0..3)
            .filter(|&i| sinks[i].traces().contains(&id))
            .collect();
        assert_eq!(
            holders,
            [sink_of(&sinks, ring.route(&TraceId(id)))],
            "one sink, the owner"
        );
    }
    let m = Scrape::now();
    assert_eq!(
        m.get("tailgate_lb_spans_received_total", &node("owner", &[])),
        sent as f64
    );
    for s in &sinks {
        let forwarded = m.get(
            "tailgate_lb_spans_forwarded_total",
            &node("owner", &[("member", &s.member())]),
        );
        assert_eq!(forwarded, s.span_count() as f64);
    }
    assert_eq!(m.get("tailgate_lb_ring_members", &node("owner", &[])), 3.0);
    assert_eq!(
        m.get("tailgate_lb_ring_changes_total", &node("owner", &[])),
        1.0
    );
    assert!(
        m.get(
            "tailgate_lb_export_duration_seconds_count",
            &node("owner", &[])
        ) > 0.0
    );
    assert_eq!(
        exporter.shutdown(Instant::now() + WAIT).await,
        ShutdownReport::default()
    );
}

#[tokio::test]
async fn a_request_a_full_member_cannot_take_is_refused_whole_and_nothing_of_it_is_queued() {
    let sinks = sinks(2).await;
    let members = set(&[&sinks[0], &sinks[1]]);
    let ring = Ring::new(members.clone()).unwrap();
    let (a, b) = (sinks[0].member(), sinks[1].member());
    // A never answers, so what is sent to it stays held.
    sinks[0].then(Answer::Stall);
    let (_tx, rx) = watch::channel(members);
    let config = ExportConfig {
        queue_bytes: 4096,
        max_batch_bytes: 1024,
        concurrency: 1,
        timeout: Duration::from_secs(60),
        ..config()
    };
    let exporter = start(&config, "full", rx);
    let mut traces = Traces::new(2);
    let a_ids = owned_by(&mut traces, &ring, &a, 8);
    let b_ids = owned_by(&mut traces, &ring, &b, 8);
    // Fill A's lane (each request ≈ 1 KiB for A).
    let mut accepted = 0;
    let refused = loop {
        let request = traces.request(&a_ids, 4);
        match exporter.send(&request) {
            Ok(n) => accepted += n,
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "never full");
    };
    assert_eq!(
        refused,
        SendError::Full {
            member: Member::parse(&a).unwrap(),
            // Nothing sent to A ever ended: how soon it has room is unknown.
            retry_after: None,
        }
    );
    assert!(refused.is_retryable());
    let held = exporter.held_spans();
    assert_eq!(held, accepted);
    // A request with parts for both: refused, and B gets nothing of it.
    let mut both = a_ids.clone();
    both.extend(&b_ids[..2]);
    let mixed = traces.request(&both, 4);
    assert!(matches!(exporter.send(&mixed), Err(SendError::Full { .. })));
    assert_eq!(
        exporter.held_spans(),
        held,
        "no part of a refused request is held"
    );
    // B alone still has room.
    let only_b = traces.request(&b_ids, 2);
    assert_eq!(exporter.send(&only_b).unwrap(), 16);
    assert!(eventually(WAIT, || sinks[1].span_count() == 16).await);
    let b_spans: BTreeSet<[u8; 16]> = sinks[1].traces();
    assert_eq!(b_spans, b_ids.iter().copied().collect());
    let m = Scrape::now();
    assert_eq!(
        m.get("tailgate_lb_spans_received_total", &node("full", &[])),
        (accepted + 16) as f64
    );
    let queued = m.get("tailgate_lb_queue_spans", &node("full", &[("member", &a)]));
    assert_eq!(queued, accepted as f64);
    let report = exporter
        .shutdown(Instant::now() + Duration::from_millis(200))
        .await;
    assert_eq!(report.dropped_spans, accepted as u64);
    let m = Scrape::now();
    assert_eq!(
        m.get(
            "tailgate_lb_spans_dropped_total",
            &node("full", &[("reason", "shutdown")])
        ),
        accepted as f64
    );
}

#[tokio::test]
async fn a_member_that_refuses_connections_is_marked_down_and_its_traces_go_to_the_next_member() {
    let sinks = sinks(2).await;
    let dead = dead_member();
    let members: MemberSet = [sinks[0].member(), sinks[1].member(), dead.clone()]
        .iter()
        .map(|m| Member::parse(m).unwrap())
        .collect();
    let ring = Ring::new(members.clone()).unwrap();
    let (_tx, rx) = watch::channel(members);
    let exporter = start(&config(), "refused", rx);
    let mut traces = Traces::new(3);
    let mut ids = Vec::new();
    let mut sent = 0;
    for _ in 0..30 {
        let (request, t) = traces.fresh(10, 2);
        // Once every member but one is down the exporter still takes them.
        sent += exporter.send(&request).unwrap();
        ids.extend(t);
    }
    assert!(
        eventually(WAIT, || all_spans(&sinks) == sent).await,
        "everything arrives: {} of {sent} spans at the sinks, members down {:?}",
        all_spans(&sinks),
        exporter.members_down()
    );
    assert_eq!(exporter.members_down(), [Member::parse(&dead).unwrap()]);
    let dead_index = ring
        .members()
        .members()
        .iter()
        .position(|m| m.as_str() == dead)
        .unwrap();
    for id in &ids {
        let id = TraceId(*id);
        let expected = ring.route_where(&id, |i| i != dead_index).unwrap();
        let expected = &ring.members().members()[expected];
        let at = sink_of(&sinks, expected);
        assert!(
            sinks[at].traces().contains(&id.0),
            "trace at the next member on the ring"
        );
    }
    let m = Scrape::now();
    let labels = |r| node("refused", &[("reason", r)]);
    assert!(m.get("tailgate_lb_spans_rerouted_total", &labels("member_down")) > 0.0);
    assert_eq!(
        m.get("tailgate_lb_spans_dropped_total", &node("refused", &[])),
        0.0
    );
    assert_eq!(
        m.get("tailgate_lb_members_down", &node("refused", &[])),
        1.0
    );
    let forwarded =
        || Scrape::now().get("tailgate_lb_spans_forwarded_total", &node("refused", &[]));
    assert!(eventually(WAIT, || forwarded() == sent as f64).await);
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test]
async fn a_member_answering_unavailable_is_marked_down_then_probed_back() {
    let sinks = sinks(2).await;
    let members = set(&[&sinks[0], &sinks[1]]);
    let ring = Ring::new(members.clone()).unwrap();
    let a = sinks[0].member();
    // The first export and the first two probes fail.
    sinks[0].script([
        Answer::Fail(Code::Unavailable, None),
        Answer::Fail(Code::Unavailable, None),
        Answer::Fail(Code::Unavailable, None),
    ]);
    let (_tx, rx) = watch::channel(members);
    let exporter = start(&config(), "probe", rx);
    let mut traces = Traces::new(4);
    let a_ids = owned_by(&mut traces, &ring, &a, 5);
    let first = traces.request(&a_ids, 2);
    exporter.send(&first).unwrap();
    // Failed over to B, then A comes back after its probes.
    assert!(eventually(WAIT, || sinks[1].span_count() == 10).await);
    assert!(
        eventually(WAIT, || exporter.members_down().is_empty()).await,
        "probed back"
    );
    assert!(sinks[0].requests() >= 4, "one export and three probes");
    let second = traces.request(&a_ids, 2);
    exporter.send(&second).unwrap();
    assert!(
        eventually(WAIT, || sinks[0].span_count() == 10).await,
        "A owns its traces again"
    );
    let m = Scrape::now();
    assert_eq!(
        m.get(
            "tailgate_lb_spans_rerouted_total",
            &node("probe", &[("reason", "in_flight")])
        ),
        10.0
    );
    assert_eq!(m.get("tailgate_lb_members_down", &node("probe", &[])), 0.0);
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test]
async fn a_member_that_leaves_hands_what_is_queued_for_it_to_the_new_owners() {
    let sinks = sinks(3).await;
    let members = set(&[&sinks[0], &sinks[1], &sinks[2]]);
    let ring = Ring::new(members.clone()).unwrap();
    let a = sinks[0].member();
    // A takes the first request and never answers: the rest stay queued.
    sinks[0].then(Answer::Stall);
    let (tx, rx) = watch::channel(members);
    let config = ExportConfig {
        concurrency: 1,
        max_batch_spans: 10,
        timeout: Duration::from_secs(3),
        ..config()
    };
    let exporter = start(&config, "leave", rx);
    let mut traces = Traces::new(5);
    let a_ids = owned_by(&mut traces, &ring, &a, 50);
    let mut sent = 0;
    for chunk in a_ids.chunks(5) {
        sent += exporter.send(&traces.request(chunk, 2)).unwrap();
    }
    assert!(eventually(WAIT, || sinks[0].stalled_spans() == 10).await);
    assert_eq!(exporter.held_spans(), sent);
    tx.send_replace(set(&[&sinks[1], &sinks[2]]));
    let survivors = || sinks[1].span_count() + sinks[2].span_count();
    // The queued spans move at once; the stalled request times out and
    // follows.
    assert!(
        eventually(WAIT, || survivors() == sent).await,
        "nothing queued is lost"
    );
    let after = Ring::new(set(&[&sinks[1], &sinks[2]])).unwrap();
    for id in &a_ids {
        let at = sink_of(&sinks, after.route(&TraceId(*id)));
        assert!(sinks[at].traces().contains(id), "at its new owner");
    }
    let m = Scrape::now();
    let rerouted = |r| {
        m.get(
            "tailgate_lb_spans_rerouted_total",
            &node("leave", &[("reason", r)]),
        )
    };
    assert_eq!(rerouted("member_left") + rerouted("in_flight"), sent as f64);
    assert!(rerouted("member_left") >= (sent - 10) as f64);
    assert_eq!(
        m.get("tailgate_lb_spans_dropped_total", &node("leave", &[])),
        0.0
    );
    assert_eq!(
        m.get("tailgate_lb_ring_changes_total", &node("leave", &[])),
        2.0
    );
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test]
async fn requests_in_flight_to_a_killed_member_are_rerouted_and_counted() {
    let sinks = sinks(3).await;
    let members = set(&[&sinks[0], &sinks[1], &sinks[2]]);
    let ring = Ring::new(members.clone()).unwrap();
    let a = sinks[0].member();
    sinks[0].then(Answer::Stall);
    let (_tx, rx) = watch::channel(members);
    let config = ExportConfig {
        concurrency: 2,
        max_batch_spans: 6,
        timeout: Duration::from_secs(60),
        ..config()
    };
    let exporter = start(&config, "killed", rx);
    let mut traces = Traces::new(6);
    let a_ids = owned_by(&mut traces, &ring, &a, 12);
    let mut sent = 0;
    for chunk in a_ids.chunks(3) {
        sent += exporter.send(&traces.request(chunk, 2)).unwrap();
    }
    // Two requests of 6 spans in flight, stalled; 12 spans queued.
    assert!(eventually(WAIT, || sinks[0].stalled_spans() == 12).await);
    sinks[0].kill();
    let survivors = || sinks[1].span_count() + sinks[2].span_count();
    let ok = eventually(WAIT, || survivors() == sent).await;
    if !ok {
        eprintln!(
            "survivors {} of {sent}; held {}; down {:?}",
            survivors(),
            exporter.held_spans(),
            exporter.members_down()
        );
        let m = Scrape::now();
        for r in ["in_flight", "member_down", "member_left"] {
            eprintln!(
                "rerouted {r}: {}",
                m.get(
                    "tailgate_lb_spans_rerouted_total",
                    &node("killed", &[("reason", r)])
                )
            );
        }
        for r in ["not_retryable", "retries_exhausted"] {
            eprintln!(
                "dropped {r}: {}",
                m.get(
                    "tailgate_lb_spans_dropped_total",
                    &node("killed", &[("reason", r)])
                )
            );
        }
    }
    assert!(ok, "every span reaches a live sink");
    let m = Scrape::now();
    let rerouted = |r| {
        m.get(
            "tailgate_lb_spans_rerouted_total",
            &node("killed", &[("reason", r)]),
        )
    };
    assert_eq!(rerouted("in_flight"), 12.0, "what was in flight is counted");
    assert_eq!(rerouted("member_down"), 12.0, "what was queued moved too");
    assert_eq!(
        m.get("tailgate_lb_spans_dropped_total", &node("killed", &[])),
        0.0
    );
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test]
async fn retryable_answers_are_retried_on_the_same_member_and_final_ones_dropped_counted() {
    let sinks = sinks(1).await;
    let members = set(&[&sinks[0]]);
    sinks[0].script([
        Answer::Fail(Code::ResourceExhausted, Some(Duration::from_millis(5))),
        Answer::Fail(Code::Aborted, None),
        Answer::Ok,
        Answer::Fail(Code::InvalidArgument, None),
    ]);
    let (_tx, rx) = watch::channel(members);
    let config = ExportConfig {
        concurrency: 1,
        ..config()
    };
    let exporter = start(&config, "retry", rx);
    let mut traces = Traces::new(7);
    let (first, _) = traces.fresh(2, 2);
    exporter.send(&first).unwrap();
    assert!(eventually(WAIT, || sinks[0].span_count() == 4).await);
    assert!(
        exporter.members_down().is_empty(),
        "not a member-down answer"
    );
    let (second, _) = traces.fresh(1, 3);
    exporter.send(&second).unwrap();
    let m = || Scrape::now();
    let dropped = |r| {
        m().get(
            "tailgate_lb_spans_dropped_total",
            &node("retry", &[("reason", r)]),
        )
    };
    assert!(eventually(WAIT, || dropped("not_retryable") == 3.0).await);
    assert_eq!(exporter.held_spans(), 0);
    assert_eq!(
        m().get("tailgate_lb_spans_forwarded_total", &node("retry", &[])),
        4.0
    );
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test]
async fn with_every_member_down_requests_are_refused_until_one_is_back() {
    let sinks = sinks(1).await;
    let members = set(&[&sinks[0]]);
    sinks[0].kill();
    let (_tx, rx) = watch::channel(members);
    let exporter = start(&config(), "alldown", rx);
    let mut traces = Traces::new(8);
    let (request, _) = traces.fresh(3, 2);
    // The first request is taken, fails at connect, and is held: there is
    // nowhere else to send it.
    assert_eq!(exporter.send(&request).unwrap(), 6);
    assert!(eventually(WAIT, || !exporter.members_down().is_empty()).await);
    let refused = exporter.send(&request).unwrap_err();
    assert_eq!(refused, SendError::AllMembersDown { members: 1 });
    assert!(refused.is_retryable());
    assert!(!exporter.is_ready());
    assert_eq!(exporter.held_spans(), 6);
    sinks[0].restart().await.unwrap();
    assert!(
        eventually(WAIT, || sinks[0].span_count() == 6).await,
        "held spans delivered"
    );
    assert!(exporter.is_ready());
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test]
async fn no_member_yet_and_malformed_requests_are_refused() {
    let (tx, rx) = watch::channel(MemberSet::default());
    let exporter = start(&config(), "empty", rx);
    let mut traces = Traces::new(9);
    let (request, _) = traces.fresh(1, 1);
    assert_eq!(exporter.send(&request), Err(SendError::NoMembers));
    assert!(!exporter.is_ready());
    let sinks = sinks(1).await;
    tx.send_replace(set(&[&sinks[0]]));
    assert!(eventually(WAIT, || exporter.is_ready()).await);
    let bad = exporter
        .send(&bytes::Bytes::from_static(&[0x0a, 0x05, 0x01]))
        .unwrap_err();
    assert!(matches!(bad, SendError::Invalid(_)) && !bad.is_retryable());
    assert_eq!(exporter.send(&bytes::Bytes::new()).unwrap(), 0);
    exporter.shutdown(Instant::now() + WAIT).await;
    assert_eq!(exporter.send(&request), Err(SendError::Closed));
}

#[tokio::test]
async fn shutdown_sends_what_is_queued_without_waiting_for_the_batch_timeout() {
    let sinks = sinks(2).await;
    let members = set(&[&sinks[0], &sinks[1]]);
    let (_tx, rx) = watch::channel(members);
    let config = ExportConfig {
        batch_timeout: Duration::from_secs(3600),
        ..config()
    };
    let exporter = start(&config, "drain", rx);
    let mut traces = Traces::new(10);
    let mut sent = 0;
    for _ in 0..5 {
        sent += exporter.send(&traces.fresh(4, 2).0).unwrap();
    }
    assert_eq!(all_spans(&sinks), 0, "waiting for the batch timeout");
    let report = exporter.shutdown(Instant::now() + WAIT).await;
    assert_eq!(report.dropped_spans, 0);
    assert_eq!(all_spans(&sinks), sent);
    assert_eq!(
        exporter.shutdown(Instant::now()).await,
        ShutdownReport::default()
    );
}

/// Requests that arrive while an export is in flight, sent with adaptive
/// batching on (the default) and off: one member, spans in `batches`.
async fn exports_for_requests_behind_a_slow_export(adaptive: bool, node_name: &str) -> usize {
    let sinks = sinks(1).await;
    // The first export takes 300 ms; the others are answered at once.
    sinks[0].script([Answer::Slow(Duration::from_millis(300))]);
    let (_tx, rx) = watch::channel(set(&[&sinks[0]]));
    let config = ExportConfig {
        adaptive_batching: adaptive,
        ..config()
    };
    let exporter = start(&config, node_name, rx);
    let mut traces = Traces::new(11);
    let (first, _) = traces.fresh(4, 2);
    assert_eq!(exporter.send(&first).unwrap(), 8);
    assert!(eventually(WAIT, || sinks[0].requests() == 1).await);
    for _ in 0..4 {
        // Time for the lane to send each on its own if it would.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (request, _) = traces.fresh(4, 2);
        assert_eq!(exporter.send(&request).unwrap(), 8);
    }
    assert!(eventually(WAIT, || sinks[0].span_count() == 40).await);
    let report = exporter
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(report.dropped_spans, 0);
    sinks[0].requests()
}

#[tokio::test]
async fn requests_arriving_while_an_export_is_in_flight_are_merged_into_one_export() {
    // Adaptive: the four requests wait for the slow export, then go as one.
    assert_eq!(
        exports_for_requests_behind_a_slow_export(true, "adaptive").await,
        2
    );
    // Without it, each takes a free export slot of its own (concurrency 4).
    assert_eq!(
        exports_for_requests_behind_a_slow_export(false, "eager").await,
        5
    );
}

/// One member answering every export after `delay`, one export at a time,
/// a 4 KiB queue; the exporter, the member and a trace generator.
async fn slow_member_with_a_small_queue(
    delay: Duration,
    queue_wait: Duration,
    node_name: &str,
) -> (LbExporter, Vec<FakeSink>, Traces) {
    let sinks = sinks(1).await;
    sinks[0].then(Answer::Slow(delay));
    // The exporter keeps the set once its publisher is gone.
    let (_, rx) = watch::channel(set(&[&sinks[0]]));
    let config = ExportConfig {
        queue_bytes: 4096,
        max_batch_bytes: 1024,
        concurrency: 1,
        queue_wait,
        ..config()
    };
    (start(&config, node_name, rx), sinks, Traces::new(12))
}

#[tokio::test]
async fn a_request_finding_the_queue_full_is_taken_when_room_frees_within_the_wait() {
    let (exporter, sinks, mut traces) =
        slow_member_with_a_small_queue(Duration::from_millis(100), Duration::from_secs(1), "waits")
            .await;
    let mut accepted = 0;
    let full = loop {
        let (request, _) = traces.fresh(2, 2);
        match exporter.send(&request) {
            Ok(n) => accepted += n,
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "never full");
    };
    assert!(matches!(full, SendError::Full { .. }), "{full:?}");
    // The same request, waiting: the export in flight ends within 100 ms
    // and gives its room back.
    let (request, _) = traces.fresh(2, 2);
    assert_eq!(exporter.send_waiting(&request).await.unwrap(), 4);
    let m = Scrape::now();
    assert_eq!(
        m.get(
            "tailgate_lb_queue_waits_total",
            &node("waits", &[("outcome", "admitted")])
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "tailgate_lb_queue_waits_total",
            &node("waits", &[("outcome", "refused")])
        ),
        0.0
    );
    assert!(eventually(WAIT, || sinks[0].span_count() == accepted + 4).await);
}

#[tokio::test]
async fn a_request_still_without_room_after_the_wait_is_refused_with_how_soon_room_is_expected() {
    // Exports of at most 1 KiB every 100 ms: about 10 KB/s. A 4 KiB queue
    // takes about 200 ms to drain to half: the delay the refusal should give.
    let (exporter, _sinks, mut traces) = slow_member_with_a_small_queue(
        Duration::from_millis(100),
        Duration::from_millis(2),
        "refuses",
    )
    .await;
    let started = Instant::now();
    let retry_after = loop {
        assert!(started.elapsed() < WAIT, "never refused with a delay");
        let (request, _) = traces.fresh(2, 2);
        match exporter.send_waiting(&request).await {
            Ok(_) => continue,
            // The member's rate is not known before a few exports ended.
            Err(SendError::Full {
                retry_after: None, ..
            }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(SendError::Full {
                retry_after: Some(d),
                ..
            }) => break d,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        retry_after >= Duration::from_millis(50) && retry_after <= Duration::from_millis(800),
        "{retry_after:?}"
    );
    let refused = Scrape::now().get(
        "tailgate_lb_queue_waits_total",
        &node("refuses", &[("outcome", "refused")]),
    );
    assert!(refused >= 1.0, "{refused}");
}
