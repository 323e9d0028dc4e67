//! The `Exporter` end to end against a real tonic server on 127.0.0.1:0:
//! batching, retries, drops, the queue bound, shutdown and the metrics that
//! count all of it. Time-driven tests run on paused tokio time, so the
//! delays they check are exact virtual durations, not wall-clock guesses.

mod exporter_support;

use std::time::Duration;

use exporter_support::{Answer, FakeBackend, batch, metric, wait_until};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use proto::exporter::{DropReason, Exporter, ExporterConfig, FailedBatch, SendError, StartOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Code;

const SENT: &str = "tailgate_exporter_spans_sent_total";
const FAILED: &str = "tailgate_exporter_spans_failed_total";
const RETRIED: &str = "tailgate_exporter_spans_retried_total";
const DROPPED: &str = "tailgate_exporter_spans_dropped_total";
const QUEUE: &str = "tailgate_exporter_queue_bytes";
const DURATION_COUNT: &str = "tailgate_exporter_request_duration_seconds_count";

struct Harness {
    backend: FakeBackend,
    exporter: Exporter,
    prometheus: PrometheusHandle,
}

impl Harness {
    async fn start(tune: impl FnOnce(&mut ExporterConfig)) -> Harness {
        Harness::start_with(tune, StartOptions::default()).await
    }

    async fn start_with(tune: impl FnOnce(&mut ExporterConfig), options: StartOptions) -> Harness {
        let backend = FakeBackend::default();
        let mut config = ExporterConfig {
            endpoint: backend.serve().await,
            name: "backend".into(),
            node: "sampler-0".into(),
            // Deterministic backoff unless a test says otherwise.
            randomization_factor: 0.0,
            initial_interval: Duration::from_millis(100),
            ..ExporterConfig::default()
        };
        tune(&mut config);
        // A recorder per test: handles are created inside `start`, so they
        // bind to it whatever else runs in this process.
        let recorder = PrometheusBuilder::new().build_recorder();
        let prometheus = recorder.handle();
        let exporter =
            metrics::with_local_recorder(&recorder, || Exporter::start_with(config, options))
                .unwrap();
        Harness {
            backend,
            exporter,
            prometheus,
        }
    }

    /// A sample of this exporter's metric, with extra labels.
    fn metric(&self, name: &str, extra: &[(&str, &str)]) -> f64 {
        let mut labels = vec![("node", "sampler-0"), ("exporter", "backend")];
        labels.extend_from_slice(extra);
        metric(&self.prometheus.render(), name, &labels)
    }

    fn dropped(&self, reason: DropReason) -> f64 {
        self.metric(DROPPED, &[("reason", reason.as_str())])
    }

    async fn wait_for_spans(&self, n: usize) {
        let backend = self.backend.clone();
        wait_until(10_000, Duration::from_millis(10), move || {
            backend.accepted_span_ids().len() >= n
        })
        .await;
    }

    async fn wait_for_queue_empty(&self) {
        let exporter = self.exporter.clone();
        wait_until(100_000, Duration::from_millis(10), move || {
            exporter.queued_bytes() == 0
        })
        .await;
    }
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[tokio::test(start_paused = true)]
async fn requests_are_cut_at_max_batch_spans_without_splitting_batches() {
    let h = Harness::start(|c| c.max_batch_spans = 10).await;
    for i in 0..5u64 {
        h.exporter.try_send(batch(i * 4..i * 4 + 4, 0)).unwrap();
    }
    h.wait_for_spans(20).await;

    let mut sizes: Vec<usize> = h
        .backend
        .received()
        .iter()
        .map(|r| r.span_ids().len())
        .collect();
    sizes.sort_unstable();
    // 4+4 fill 8; a third batch would make 12 > 10, so it starts the next
    // request; the last 4 go at the batch timeout.
    assert_eq!(sizes, [4, 8, 8]);
    assert_eq!(
        sorted(h.backend.accepted_span_ids()),
        (0..20).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn requests_are_cut_at_max_batch_bytes_and_an_oversize_batch_goes_alone() {
    let one = batch([0], 200).request.len();
    let h = Harness::start(|c| c.max_batch_bytes = one * 5 / 2).await;
    for id in 0..6 {
        h.exporter.try_send(batch([id], 200)).unwrap();
    }
    h.exporter.try_send(batch(100..110, 200)).unwrap();
    h.wait_for_spans(16).await;

    let received = h.backend.received();
    let mut by_size: Vec<Vec<u64>> = received.iter().map(|r| sorted(r.span_ids())).collect();
    by_size.sort();
    assert_eq!(
        by_size,
        [
            vec![0, 1],
            vec![2, 3],
            vec![4, 5],
            (100..110).collect::<Vec<_>>()
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_request_is_sent_at_batch_timeout() {
    let h = Harness::start(|c| c.batch_timeout = Duration::from_millis(200)).await;
    let t0 = Instant::now();
    h.exporter.try_send(batch([1, 2, 3], 0)).unwrap();

    tokio::time::sleep(Duration::from_millis(199)).await;
    assert!(
        h.backend.received().is_empty(),
        "sent before the batch timeout"
    );
    h.wait_for_spans(3).await;

    let received = h.backend.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].at - t0 >= Duration::from_millis(200));
    assert!(received[0].at - t0 < Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn every_span_arrives_exactly_once_after_unavailable() {
    let h = Harness::start(|c| c.max_batch_spans = 50).await;
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(5));
    let mut total = 0;
    for i in 0..100u64 {
        let n = (i % 7) + 1;
        h.exporter.try_send(batch(i * 10..i * 10 + n, 20)).unwrap();
        total += n as usize;
    }
    h.wait_for_spans(total).await;
    h.wait_for_queue_empty().await;

    let ids = h.backend.accepted_span_ids();
    let expected: Vec<u64> = (0..100u64)
        .flat_map(|i| i * 10..i * 10 + (i % 7) + 1)
        .collect();
    assert_eq!(ids.len(), total, "no span twice");
    assert_eq!(sorted(ids), expected);
    let failed: usize = h
        .backend
        .received()
        .iter()
        .filter(|r| !r.accepted())
        .map(|r| r.span_ids().len())
        .sum();
    assert!(failed > 0);
    assert_eq!(h.metric(SENT, &[]), total as f64);
    assert_eq!(h.metric(FAILED, &[]), failed as f64);
    assert_eq!(h.metric(RETRIED, &[]), failed as f64);
    assert_eq!(h.metric(QUEUE, &[]), 0.0);
    assert_eq!(
        h.metric(DURATION_COUNT, &[]),
        h.backend.received().len() as f64
    );
    for reason in DropReason::ALL {
        assert_eq!(h.dropped(reason), 0.0, "{reason:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_between_attempts() {
    let h = Harness::start(|c| {
        c.initial_interval = Duration::from_secs(1);
        c.multiplier = 2.0;
    })
    .await;
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(3));
    h.exporter.try_send(batch([1], 0)).unwrap();
    h.wait_for_spans(1).await;

    let at: Vec<Instant> = h.backend.received().iter().map(|r| r.at).collect();
    let gaps: Vec<u128> = at.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert_eq!(gaps.len(), 3);
    for (gap, expected) in gaps.iter().zip([1000, 2000, 4000]) {
        assert!((expected..expected + 50).contains(gap), "{gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_info_delay_is_honoured_over_a_shorter_backoff() {
    let h = Harness::start(|c| c.initial_interval = Duration::from_millis(100)).await;
    h.backend.script([Answer::Fail(
        Code::ResourceExhausted,
        Some(Duration::from_secs(7)),
    )]);
    h.exporter.try_send(batch([1, 2], 0)).unwrap();
    h.wait_for_spans(2).await;

    let received = h.backend.received();
    assert_eq!(received.len(), 2);
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_secs(7), "{gap:?}");
    assert!(gap < Duration::from_millis(7050), "{gap:?}");
    assert_eq!(h.metric(RETRIED, &[]), 2.0);
    assert_eq!(h.metric(SENT, &[]), 2.0);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_max_elapsed_time_and_the_spans_are_counted() {
    let h = Harness::start(|c| {
        c.initial_interval = Duration::from_secs(1);
        c.multiplier = 2.0;
        c.max_elapsed_time = Duration::from_secs(10);
    })
    .await;
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(100));
    h.exporter.try_send(batch(1..=3, 0)).unwrap();
    h.wait_for_queue_empty().await;

    // Attempts at 0, 1, 3 and 7 s; the next would start at 15 s > 10 s.
    assert_eq!(h.backend.received().len(), 4);
    assert_eq!(h.dropped(DropReason::RetriesExhausted), 3.0);
    assert_eq!(h.metric(FAILED, &[]), 12.0);
    assert_eq!(h.metric(RETRIED, &[]), 9.0);
    assert_eq!(h.metric(SENT, &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_status_drops_the_request_counted() {
    let h = Harness::start(|_| {}).await;
    h.backend
        .script([Answer::Fail(Code::InvalidArgument, None)]);
    h.exporter.try_send(batch(1..=4, 0)).unwrap();
    h.wait_for_queue_empty().await;
    h.exporter.try_send(batch([9], 0)).unwrap();
    h.wait_for_spans(1).await;

    assert_eq!(h.backend.received().len(), 2, "not retried");
    assert_eq!(h.backend.accepted_span_ids(), [9]);
    assert_eq!(h.dropped(DropReason::NotRetryable), 4.0);
    assert_eq!(h.metric(FAILED, &[]), 4.0);
    assert_eq!(h.metric(RETRIED, &[]), 0.0);
    assert_eq!(h.metric(SENT, &[]), 1.0);
}

#[tokio::test(start_paused = true)]
async fn resource_exhausted_without_retry_info_is_not_retried() {
    let h = Harness::start(|_| {}).await;
    h.backend
        .script([Answer::Fail(Code::ResourceExhausted, None)]);
    h.exporter.try_send(batch(1..=2, 0)).unwrap();
    h.wait_for_queue_empty().await;

    assert_eq!(h.backend.received().len(), 1);
    assert_eq!(h.dropped(DropReason::NotRetryable), 2.0);
}

#[tokio::test(start_paused = true)]
async fn rejected_spans_of_a_partial_success_are_counted_not_retried() {
    let h = Harness::start(|_| {}).await;
    h.backend.script([Answer::Reject(2)]);
    h.exporter.try_send(batch(1..=5, 0)).unwrap();
    h.wait_for_queue_empty().await;

    assert_eq!(h.backend.received().len(), 1);
    assert_eq!(h.metric(SENT, &[]), 3.0);
    assert_eq!(h.dropped(DropReason::Rejected), 2.0);
    assert_eq!(h.metric(FAILED, &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_hands_the_batch_back_and_send_waits_for_room() {
    let one = batch([0], 300).request.len();
    let h = Harness::start(|c| {
        c.queue_bytes = one * 3;
        c.max_batch_bytes = one * 3;
        c.initial_interval = Duration::from_secs(1);
    })
    .await;
    // The backend is down for a while: nothing drains.
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(3));
    for id in 0..3 {
        h.exporter.try_send(batch([id], 300)).unwrap();
    }
    assert_eq!(h.exporter.queued_bytes(), one * 3);
    assert_eq!(h.metric(QUEUE, &[]), (one * 3) as f64);

    let refused = batch([3], 300);
    match h.exporter.try_send(refused.clone()) {
        Err(SendError::QueueFull(back)) => assert_eq!(back, refused),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // `send` waits until the first request is delivered and frees room.
    let waiting = {
        let exporter = h.exporter.clone();
        tokio::spawn(async move { exporter.send(batch([4], 300)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "send returned while the queue was full"
    );
    assert!(h.backend.accepted_span_ids().is_empty());

    h.wait_for_spans(4).await;
    waiting.await.unwrap().unwrap();
    h.wait_for_queue_empty().await;
    assert_eq!(sorted(h.backend.accepted_span_ids()), [0, 1, 2, 4]);
    assert_eq!(h.metric(QUEUE, &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_without_waiting_for_the_batch_timeout() {
    let h = Harness::start(|c| c.batch_timeout = Duration::from_secs(60)).await;
    let t0 = Instant::now();
    for id in 0..3 {
        h.exporter.try_send(batch([id, id + 100], 0)).unwrap();
    }

    let report = h.exporter.shutdown(t0 + Duration::from_secs(5)).await;

    assert_eq!(report.sent_spans, 6);
    assert_eq!((report.failed_spans, report.dropped_spans), (0, 0));
    assert_eq!(h.backend.accepted_span_ids().len(), 6);
    assert!(Instant::now() - t0 < Duration::from_secs(1));
    assert!(matches!(
        h.exporter.try_send(batch([9], 0)),
        Err(SendError::Closed(_))
    ));
    assert!(matches!(
        h.exporter.send(batch([9], 0)).await,
        Err(SendError::Closed(_))
    ));
    assert_eq!(h.exporter.queued_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_retries_until_the_deadline_then_drops_the_rest_counted() {
    let h = Harness::start(|c| {
        c.max_batch_spans = 2;
        c.concurrency = 1;
        c.initial_interval = Duration::from_secs(1);
    })
    .await;
    // Down for good: every attempt fails.
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(1000));
    for id in 0..10 {
        h.exporter.try_send(batch([id], 0)).unwrap();
    }
    let t0 = Instant::now();

    let report = h.exporter.shutdown(t0 + Duration::from_secs(3)).await;

    assert!(Instant::now() - t0 >= Duration::from_secs(3));
    assert_eq!(report.sent_spans, 0);
    assert_eq!(report.dropped_spans, 10);
    assert_eq!(h.dropped(DropReason::Shutdown), 10.0);
    assert_eq!(h.exporter.queued_bytes(), 0);
    assert_eq!(h.metric(QUEUE, &[]), 0.0);
    // It kept retrying until the deadline: attempts at 0, 1 and 2.5 s.
    assert_eq!(h.backend.received().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_failed_for_good_goes_to_the_failed_channel_until_it_is_full() {
    let (tx, mut rx) = mpsc::channel::<FailedBatch>(1);
    let h = Harness::start_with(
        |c| {
            c.max_batch_spans = 1;
            c.concurrency = 1;
        },
        StartOptions {
            failed: Some(tx),
            ..StartOptions::default()
        },
    )
    .await;
    h.backend
        .script([Answer::Fail(Code::InvalidArgument, None)].repeat(2));
    h.exporter.try_send(batch([1], 0)).unwrap();
    h.exporter.try_send(batch([2], 0)).unwrap();
    h.wait_for_queue_empty().await;

    let failed = rx.try_recv().unwrap();
    assert_eq!(failed.batch, batch([1], 0));
    assert_eq!(failed.error.code(), Code::InvalidArgument);
    assert_eq!(failed.reason, DropReason::NotRetryable);
    assert!(rx.try_recv().is_err(), "the channel holds one");
    assert_eq!(h.dropped(DropReason::NotRetryable), 0.0);
    assert_eq!(h.dropped(DropReason::FailedHandlerFull), 1.0);
}

#[tokio::test(start_paused = true)]
async fn compressed_requests_from_the_exporter_arrive_decodable() {
    let h = Harness::start(|c| c.compression = proto::exporter::Compression::Zstd).await;
    h.exporter.try_send(batch(1..=20, 50)).unwrap();
    h.wait_for_spans(20).await;

    let received = h.backend.received();
    assert_eq!(received[0].encoding.as_deref(), Some("zstd"));
    assert_eq!(received[0].span_ids(), (1..=20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_batch_bigger_than_the_whole_queue_goes_through_when_the_queue_is_empty() {
    let one = batch([0], 100).request.len();
    let h = Harness::start(|c| {
        c.queue_bytes = one * 2;
        c.max_batch_bytes = one * 2;
    })
    .await;
    h.exporter.try_send(batch([0], 100)).unwrap();
    let huge = batch(1..=10, 100);
    assert!(huge.request.len() > one * 2);
    assert!(matches!(
        h.exporter.try_send(huge.clone()),
        Err(SendError::QueueFull(_))
    ));
    h.wait_for_queue_empty().await;

    h.exporter.try_send(huge).unwrap();
    h.wait_for_spans(11).await;
    h.wait_for_queue_empty().await;
    assert_eq!(h.metric(QUEUE, &[]), 0.0);
    assert_eq!(h.metric(SENT, &[]), 11.0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_stops_the_exporter_and_counts_what_it_held() {
    let h = Harness::start(|_| {}).await;
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(1000));
    h.exporter.try_send(batch(1..=3, 0)).unwrap();
    h.exporter.try_send(batch(4..=5, 0)).unwrap();
    let prometheus = h.prometheus.clone();
    drop(h.exporter);

    wait_until(1000, Duration::from_millis(10), || {
        metric(&prometheus.render(), DROPPED, &[("reason", "shutdown")]) == 5.0
    })
    .await;
    assert_eq!(metric(&prometheus.render(), QUEUE, &[]), 0.0);
    assert!(h.backend.received().len() <= 1);
}

fn disk_queue(dir: &std::path::Path, budget: u64) -> proto::exporter::DiskQueue {
    let budget_share = std::sync::Arc::new(storage::Budget::new(budget));
    let (spill, recovered) = storage::Spill::open(
        storage::SpillConfig {
            dir: dir.to_owned(),
            segment_bytes: 4096,
        },
        budget_share,
    )
    .unwrap();
    proto::exporter::DiskQueue {
        spill,
        recovered,
        budget_bytes: budget,
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A long outage with a memory queue of three batches: everything past it
/// goes to disk, nothing is handed back (without the disk queue the fourth
/// batch is), and once the backend answers every span arrives, the disk
/// queue's batches counted as sent.
#[tokio::test(start_paused = true)]
async fn past_a_full_memory_queue_batches_spill_to_disk_and_all_arrive() {
    let dir = temp_dir("spill-outage");
    let one = batch([0], 300).request.len();
    let h = Harness::start_with(
        |c| {
            c.queue_bytes = one * 3;
            c.max_batch_bytes = one * 3;
            c.initial_interval = Duration::from_secs(1);
            c.max_interval = Duration::from_secs(30);
        },
        StartOptions {
            spill: Some(disk_queue(&dir, 1 << 20)),
            ..StartOptions::default()
        },
    )
    .await;
    // Down for about five minutes of retries.
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(40));
    for id in 0..200 {
        h.exporter
            .try_send(batch([id], 300))
            .expect("the disk queue takes what the memory queue cannot");
    }
    assert!(h.metric("tailgate_exporter_spans_spilled_total", &[]) >= 190.0);
    assert!(h.metric("tailgate_exporter_spill_bytes", &[]) > 0.0);
    assert_eq!(
        h.exporter.settled_spans(),
        h.metric("tailgate_exporter_spans_spilled_total", &[]) as u64
    );
    for _ in 0..1000 {
        if h.backend.accepted_span_ids().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    h.wait_for_queue_empty().await;
    let ids = h.backend.accepted_span_ids();
    assert_eq!(sorted(ids), (0..200).collect::<Vec<_>>(), "each span once");
    assert_eq!(h.metric(SENT, &[]), 200.0);
    assert_eq!(h.exporter.settled_spans(), 200);
    let spilled = h.metric("tailgate_exporter_spill_batches", &[]);
    assert_eq!(spilled, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Batches on disk at shutdown stay there and are sent by the next
/// exporter on the same directory; past the budget the batch is handed
/// back and counted.
#[tokio::test(start_paused = true)]
async fn spilled_batches_survive_a_restart_and_the_budget_hands_back_the_rest() {
    let dir = temp_dir("spill-restart");
    let one = batch([0], 300).request.len();
    let tune = move |c: &mut ExporterConfig| {
        c.queue_bytes = one * 2;
        c.max_batch_bytes = one * 2;
        c.initial_interval = Duration::from_secs(1);
    };
    let h = Harness::start_with(
        tune,
        StartOptions {
            spill: Some(disk_queue(&dir, 8 + 10 * (one as u64 + 16))),
            ..StartOptions::default()
        },
    )
    .await;
    h.backend
        .script([Answer::Fail(Code::Unavailable, None)].repeat(1000));
    let mut handed_back = 0;
    for id in 0..20 {
        if let Err(SendError::QueueFull(_)) = h.exporter.try_send(batch([id], 300)) {
            handed_back += 1;
        }
    }
    assert!(handed_back > 0, "past the budget, batches come back");
    assert_eq!(
        h.metric("tailgate_exporter_spill_full_total", &[]),
        handed_back as f64
    );
    assert!(h.metric("tailgate_exporter_spans_spilled_total", &[]) >= 8.0);
    h.exporter
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
    // What the memory queue held at the deadline went to disk if the
    // budget had room, else was dropped (counted).
    let on_disk = h.metric("tailgate_exporter_spans_spilled_total", &[]) as usize;
    assert_eq!(
        on_disk + handed_back + h.dropped(DropReason::Shutdown) as usize,
        20
    );
    drop(h);

    let h = Harness::start_with(
        tune,
        StartOptions {
            spill: Some(disk_queue(&dir, 1 << 20)),
            ..StartOptions::default()
        },
    )
    .await;
    assert!(h.metric("tailgate_exporter_spill_recovered_spans_total", &[]) >= on_disk as f64);
    h.wait_for_spans(on_disk).await;
    let ids = sorted(h.backend.accepted_span_ids());
    assert_eq!(ids.len(), on_disk, "each once: {ids:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a disk queue that has emptied, shutdown ends as soon as the memory
/// queue is sent, not at the deadline: a sampler with `storage:` stopped
/// only after its whole `drain_timeout` (30 s) before. Paused time: had
/// the drain task waited for the deadline, the clock would have run to it.
#[tokio::test(start_paused = true)]
async fn shutdown_with_an_empty_disk_queue_does_not_wait_for_the_deadline() {
    let dir = temp_dir("spill-shutdown");
    let one = batch([0], 300).request.len();
    let h = Harness::start_with(
        |c| {
            c.queue_bytes = one * 2;
            c.max_batch_bytes = one * 2;
        },
        StartOptions {
            spill: Some(disk_queue(&dir, 1 << 20)),
            ..StartOptions::default()
        },
    )
    .await;
    // Sent (some may pass through the disk queue); the drain task runs
    // whenever there is a disk queue.
    for id in 0..10 {
        h.exporter.try_send(batch([id], 300)).expect("taken");
    }
    h.wait_for_spans(10).await;
    let exporter = h.exporter.clone();
    wait_until(10_000, Duration::from_millis(10), move || {
        exporter.settled_spans() == 10
    })
    .await;
    assert_eq!(h.metric("tailgate_exporter_spill_batches", &[]), 0.0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3600);
    h.exporter.shutdown(deadline).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "shutdown waited {:?} of the hour to the deadline",
        started.elapsed()
    );
    assert_eq!(
        sorted(h.backend.accepted_span_ids()),
        (0..10).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
