//! Recovery over a damaged segment: whatever is cut off or flipped,
//! recovery never panics and hands back exactly the records written whole
//! before the damage.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use storage::{Record, Wal, WalConfig};

static DIRS: AtomicUsize = AtomicUsize::new(0);

fn config() -> WalConfig {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tailgate-storage-prop-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    WalConfig {
        dir,
        segment_bytes: 1 << 30,
        commit_interval: Duration::from_millis(10),
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    }
}

/// Writes one spans record per request, committed; returns the segment's
/// path and where each record ends in it.
fn write(config: &WalConfig, requests: &[Vec<u8>]) -> (PathBuf, Vec<u64>) {
    let (mut wal, _) = Wal::open(config.clone(), Duration::ZERO, |_, _| {}).unwrap();
    let mut ends = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        wal.append(
            &Record::Spans {
                at_unix_nanos: i as u64,
                traces: vec![[i as u8; 16]],
                request: r,
            },
            Duration::ZERO,
        )
        .unwrap();
        wal.commit(Duration::ZERO).unwrap();
        ends.push(wal.bytes());
    }
    let path = config.dir.join("00000000000000000000.seg");
    (path, ends)
}

fn recovered(config: &WalConfig) -> (Vec<Vec<u8>>, storage::RecoveryStats) {
    let mut got = Vec::new();
    let (_, stats) = Wal::open(config.clone(), Duration::ZERO, |r, _| {
        if let Record::Spans { request, .. } = r {
            got.push(request.to_vec());
        }
    })
    .unwrap();
    (got, stats)
}

fn requests() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_truncated_segment_yields_every_record_written_whole_before_the_cut(
        requests in requests(),
        cut in any::<prop::sample::Index>(),
    ) {
        let c = config();
        let (path, ends) = write(&c, &requests);
        let len = std::fs::metadata(&path).unwrap().len();
        let at = cut.index(len as usize + 1) as u64;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(at).unwrap();
        let (got, stats) = recovered(&c);
        let whole = ends.iter().filter(|e| **e <= at).count();
        if at < 8 {
            // Not even the magic number: the file is left alone.
            prop_assert!(got.is_empty());
            prop_assert_eq!(stats.bad_segments, 1);
        } else {
            prop_assert_eq!(&got[..], &requests[..whole]);
            prop_assert_eq!(stats.torn_tails, u64::from(!ends.contains(&at) && at > 8));
        }
        let _ = std::fs::remove_dir_all(&c.dir);
    }

    #[test]
    fn a_flipped_bit_loses_its_record_and_what_follows_in_the_segment_only(
        requests in requests(),
        bit in any::<prop::sample::Index>(),
    ) {
        let c = config();
        let (path, ends) = write(&c, &requests);
        let mut data = std::fs::read(&path).unwrap();
        let bit = bit.index(data.len() * 8);
        data[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &data).unwrap();
        let (got, stats) = recovered(&c);
        let byte = (bit / 8) as u64;
        if byte < 8 {
            prop_assert!(got.is_empty());
            prop_assert_eq!(stats.bad_segments, 1);
        } else {
            let before = ends.iter().filter(|e| **e <= byte).count();
            prop_assert_eq!(&got[..], &requests[..before]);
            prop_assert_eq!(stats.torn_tails + stats.undecodable, 1);
        }
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}
