//! The log on a real directory: group commit, recovery, torn tails,
//! segment deletion.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use storage::{Record, TraceKey, Wal, WalConfig};

static DIRS: AtomicUsize = AtomicUsize::new(0);

fn dir(name: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!(
        "tailgate-storage-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(dir: PathBuf) -> WalConfig {
    WalConfig {
        dir,
        segment_bytes: 4096,
        commit_interval: Duration::from_millis(10),
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    }
}

fn key(n: u8) -> TraceKey {
    let mut k = [0u8; 16];
    k[0] = n;
    k
}

fn spans(n: u8, bytes: usize) -> Vec<u8> {
    vec![n; bytes]
}

/// A record as recovery handed it over, owned: (kind, trace IDs, request);
/// a kept decision is kind 12.
type Owned = (u8, Vec<TraceKey>, Vec<u8>);

/// Every record recovery hands over.
fn recover(config: &WalConfig) -> (Wal, storage::RecoveryStats, Vec<Owned>) {
    let mut got = Vec::new();
    let (wal, stats) = Wal::open(config.clone(), Duration::ZERO, |r, _| {
        got.push(match r {
            Record::Spans {
                traces, request, ..
            } => (1, traces, request.to_vec()),
            Record::Decision { trace, kept, .. } => (2 + u8::from(kept) * 10, vec![trace], vec![]),
            Record::Delivered { traces } => (3, traces, vec![]),
        });
    })
    .unwrap();
    (wal, stats, got)
}

fn segment_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn committed_records_are_recovered_in_order_and_uncommitted_ones_are_not() {
    let c = config(dir("order"));
    let (mut wal, _) = Wal::open(c.clone(), Duration::ZERO, |_, _| {}).unwrap();
    let now = Duration::ZERO;
    let spans_rec = |n| Record::Spans {
        at_unix_nanos: 5,
        traces: vec![key(n)],
        request: &[7, 7, 7],
    };
    assert_eq!(wal.append(&spans_rec(1), now).unwrap(), 1);
    wal.append(
        &Record::Decision {
            trace: key(1),
            kept: true,
            at_unix_nanos: 6,
        },
        now,
    )
    .unwrap();
    assert_eq!(wal.durable(), 0);
    assert_eq!(wal.commit_due(), Some(Duration::from_millis(10)));
    assert_eq!(wal.commit(now).unwrap(), 2);
    // Appended, never committed: a crash loses it.
    wal.append(&spans_rec(2), now).unwrap();
    drop(wal);
    let (_, stats, got) = recover(&c);
    assert_eq!(
        got,
        vec![(1, vec![key(1)], vec![7, 7, 7]), (12, vec![key(1)], vec![])]
    );
    assert_eq!(stats.records, 2);
    assert_eq!(stats.torn_tails, 0);
}

#[test]
fn a_segment_goes_once_every_trace_in_it_is_decided_not_kept_or_delivered() {
    let c = config(dir("delete"));
    let (mut wal, _) = Wal::open(c.clone(), Duration::ZERO, |_, _| {}).unwrap();
    let now = Duration::ZERO;
    // Three traces over two segments (4 KiB each).
    for n in 1..=3u8 {
        wal.append(
            &Record::Spans {
                at_unix_nanos: 0,
                traces: vec![key(n)],
                request: &spans(n, 3000),
            },
            now,
        )
        .unwrap();
        wal.commit(now).unwrap();
    }
    assert_eq!(segment_files(&c.dir).len(), 2);
    let decide = |wal: &mut Wal, n, kept| {
        wal.append(
            &Record::Decision {
                trace: key(n),
                kept,
                at_unix_nanos: 0,
            },
            now,
        )
        .unwrap();
        wal.commit(now).unwrap();
    };
    decide(&mut wal, 1, false);
    assert_eq!(segment_files(&c.dir).len(), 2, "trace 2 still pending");
    decide(&mut wal, 2, true);
    assert_eq!(segment_files(&c.dir).len(), 2, "kept, not delivered");
    wal.append(
        &Record::Delivered {
            traces: vec![key(2)],
        },
        now,
    )
    .unwrap();
    wal.commit(now).unwrap();
    let files = segment_files(&c.dir);
    assert_eq!(
        files.len(),
        1,
        "the first segment (traces 1 and 2) went; the second holds trace 3"
    );
    assert_eq!(wal.deleted_segments(), (1, 0));
    // After a restart, trace 3 is still there, its segment too.
    drop(wal);
    let (wal, _, got) = recover(&c);
    assert!(got.iter().any(|(k, t, _)| *k == 1 && t == &vec![key(3)]));
    assert!(!got.iter().any(|(k, t, _)| *k == 1 && t == &vec![key(1)]));
    assert_eq!(wal.unsettled_traces(), 1);
}

#[test]
fn a_torn_tail_is_skipped_and_counted_and_new_records_go_to_a_new_segment() {
    let c = config(dir("torn"));
    let (mut wal, _) = Wal::open(c.clone(), Duration::ZERO, |_, _| {}).unwrap();
    for n in 1..=3u8 {
        wal.append(
            &Record::Spans {
                at_unix_nanos: 0,
                traces: vec![key(n)],
                request: &spans(n, 100),
            },
            Duration::ZERO,
        )
        .unwrap();
    }
    wal.commit(Duration::ZERO).unwrap();
    drop(wal);
    let file = &segment_files(&c.dir)[0];
    let len = std::fs::metadata(file).unwrap().len();
    // The last record was cut short by a crash.
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let (mut wal, stats, got) = recover(&c);
    assert_eq!(got.len(), 2);
    assert_eq!(stats.torn_tails, 1);
    assert!(stats.skipped_bytes > 0);
    wal.append(
        &Record::Spans {
            at_unix_nanos: 0,
            traces: vec![key(4)],
            request: &spans(4, 10),
        },
        Duration::ZERO,
    )
    .unwrap();
    wal.commit(Duration::ZERO).unwrap();
    drop(wal);
    let (_, stats, got) = recover(&c);
    assert_eq!(
        got.len(),
        3,
        "the new record is read after the torn segment"
    );
    assert_eq!(stats.torn_tails, 1);
    assert_eq!(segment_files(&c.dir).len(), 2);
}

#[test]
fn a_file_without_the_magic_number_is_left_alone_and_counted() {
    let c = config(dir("magic"));
    std::fs::create_dir_all(&c.dir).unwrap();
    std::fs::write(c.dir.join("00000000000000000007.seg"), b"not a segment").unwrap();
    std::fs::write(c.dir.join("notes.txt"), b"ignored").unwrap();
    let (mut wal, stats, got) = recover(&c);
    assert!(got.is_empty());
    assert_eq!(stats.bad_segments, 1);
    wal.append(&Record::Delivered { traces: vec![] }, Duration::ZERO)
        .unwrap();
    wal.commit(Duration::ZERO).unwrap();
    assert!(
        c.dir.join("00000000000000000008.seg").exists(),
        "numbered after it"
    );
}

#[test]
fn a_segment_past_max_age_goes_even_with_unsettled_traces() {
    let mut c = config(dir("age"));
    c.max_age = Duration::from_secs(60);
    let (mut wal, _) = Wal::open(c.clone(), Duration::ZERO, |_, _| {}).unwrap();
    wal.append(
        &Record::Spans {
            at_unix_nanos: 0,
            traces: vec![key(1)],
            request: &spans(1, 5000),
        },
        Duration::ZERO,
    )
    .unwrap();
    wal.commit(Duration::ZERO).unwrap();
    wal.commit(Duration::from_secs(59)).unwrap();
    assert_eq!(segment_files(&c.dir).len(), 1);
    wal.commit(Duration::from_secs(61)).unwrap();
    assert_eq!(segment_files(&c.dir).len(), 0);
    assert_eq!(wal.deleted_segments(), (0, 1));
    assert_eq!(wal.unsettled_traces(), 0);
}

#[test]
fn the_budget_says_full_past_max_bytes() {
    let mut c = config(dir("budget"));
    c.max_bytes = 1000;
    let (mut wal, _) = Wal::open(c, Duration::ZERO, |_, _| {}).unwrap();
    assert!(!wal.is_full());
    wal.append(
        &Record::Spans {
            at_unix_nanos: 0,
            traces: vec![key(1)],
            request: &spans(1, 1200),
        },
        Duration::ZERO,
    )
    .unwrap();
    assert!(wal.is_full(), "pending bytes count");
    wal.commit(Duration::ZERO).unwrap();
    assert!(wal.is_full());
}

/// Appends a spans record of `bytes` for `k` to `wal`, its frame to
/// `framed` (what the segment must hold) and what recovery must give back
/// to `want`.
fn append_framed(
    wal: &mut Wal,
    k: TraceKey,
    bytes: usize,
    framed: &mut Vec<u8>,
    want: &mut Vec<Owned>,
) {
    let request = spans(k[0], bytes);
    let record = Record::Spans {
        at_unix_nanos: 7,
        traces: vec![k],
        request: &request,
    };
    let mut payload = Vec::new();
    record.encode(&mut payload);
    storage::frame::put(framed, &payload).unwrap();
    wal.append(&record, Duration::ZERO).unwrap();
    want.push((1, vec![k], request.clone()));
}

/// Direct I/O writes whole blocks and carries the last partial one to the
/// next commit: after commits of every size around a block, the segment
/// holds exactly its records (no padding), byte for byte what a framing
/// of them gives, and recovery reads each one back.
#[test]
fn commits_of_any_size_leave_a_segment_of_exactly_its_records() {
    let mut c = config(dir("direct"));
    c.segment_bytes = 1 << 30;
    let (mut wal, _) = Wal::open(c.clone(), Duration::ZERO, |_, _| {}).unwrap();
    let mut expected = storage::wal::MAGIC.to_vec();
    let mut want = Vec::new();
    // Frames of 12 + 1 + 8 + 4 + 16 + n bytes: sizes that cross block
    // boundaries at every offset, some commits of one record, some of many.
    let sizes = [1usize, 4000, 4059, 4096, 10, 8191, 3, 12_000, 4067, 1];
    for (i, &n) in sizes.iter().enumerate() {
        for j in 0..=(i % 3) {
            append_framed(
                &mut wal,
                key((i * 3 + j) as u8),
                n + j,
                &mut expected,
                &mut want,
            );
        }
        wal.commit(Duration::ZERO).unwrap();
        let file = &segment_files(&c.dir)[0];
        assert_eq!(
            std::fs::read(file).unwrap(),
            expected,
            "after commit {i}, the segment is its records"
        );
    }
    drop(wal);
    let (_, stats, got) = recover(&c);
    assert_eq!(stats.torn_tails, 0);
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// The same across segment changes: every segment is the magic number and
/// then exactly the records committed to it, whole blocks or not, the
/// commit buffer grown (and so moved) along the way.
#[test]
fn segments_closed_at_any_offset_each_hold_exactly_their_records() {
    let mut c = config(dir("direct-rotate"));
    c.segment_bytes = 9_000;
    let (mut wal, _) = Wal::open(c.clone(), Duration::ZERO, |_, _| {}).unwrap();
    let magic = storage::wal::MAGIC.to_vec();
    let mut segments: Vec<Vec<u8>> = vec![magic.clone()];
    let mut want = Vec::new();
    let sizes = [5000usize, 1, 4096, 20_000, 3, 8000, 4059, 100, 70_000, 12];
    for (i, &n) in sizes.iter().enumerate() {
        for j in 0..=(i % 2) {
            let current = segments.last_mut().unwrap();
            append_framed(&mut wal, key((i * 2 + j) as u8), n + j, current, &mut want);
        }
        wal.commit(Duration::ZERO).unwrap();
        let files = segment_files(&c.dir);
        assert_eq!(files.len(), segments.len(), "after commit {i}");
        for (file, expected) in files.iter().zip(&segments) {
            assert_eq!(
                &std::fs::read(file).unwrap(),
                expected,
                "after commit {i}, {} is its records",
                file.display()
            );
        }
        if segments.last().unwrap().len() as u64 >= c.segment_bytes {
            segments.push(magic.clone());
        }
    }
    drop(wal);
    let (_, stats, got) = recover(&c);
    assert_eq!(stats.torn_tails, 0);
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&c.dir);
}
