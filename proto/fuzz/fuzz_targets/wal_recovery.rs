//! The sampler's write-ahead log (storage) recovering from a damaged
//! segment: arbitrary bytes after the magic number, or a log of whole
//! records then truncated and bit-flipped. Recovery never panics, and
//! from a damaged log it returns exactly the records written whole before
//! the first damaged byte.
#![no_main]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use storage::wal::MAGIC;
use storage::{Record, Wal, WalConfig};

static RUNS: AtomicUsize = AtomicUsize::new(0);

fn config() -> WalConfig {
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tailgate-fuzz-wal-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    WalConfig {
        dir,
        segment_bytes: 1 << 30,
        commit_interval: Duration::from_millis(10),
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    }
}

fn recover(config: &WalConfig) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let opened = Wal::open(config.clone(), Duration::ZERO, |r, _| {
        if let Record::Spans { request, .. } = r {
            got.push(request.to_vec());
        }
    });
    assert!(opened.is_ok(), "recovery from bad bytes is not an error: {opened:?}");
    got
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let c = config();
    let segment = c.dir.join("00000000000000000000.seg");
    if mode % 2 == 0 {
        // Anything after the magic number.
        std::fs::create_dir_all(&c.dir).unwrap();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(rest);
        std::fs::write(&segment, &file).unwrap();
        let _ = recover(&c);
    } else if rest.len() >= 4 {
        // Records made of the input, then damage: a cut and a flipped bit.
        let (damage, body) = rest.split_at(4);
        let requests: Vec<&[u8]> = body.chunks(17).collect();
        let (mut wal, _) = Wal::open(c.clone(), Duration::ZERO, |_, _| {}).unwrap();
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
            ends.push(wal.bytes() as usize);
        }
        drop(wal);
        if let Ok(mut file) = std::fs::read(&segment) {
            let cut = usize::from(u16::from_le_bytes([damage[0], damage[1]])) % (file.len() + 1);
            file.truncate(cut.max(MAGIC.len()));
            let bit = usize::from(u16::from_le_bytes([damage[2], damage[3]]));
            let mut first_bad = file.len();
            if bit / 8 < file.len() && bit / 8 >= MAGIC.len() {
                file[bit / 8] ^= 1 << (bit % 8);
                first_bad = bit / 8;
            }
            std::fs::write(&segment, &file).unwrap();
            let got = recover(&c);
            let whole = ends.iter().filter(|e| **e <= first_bad).count();
            assert_eq!(got.len(), whole);
            for (g, r) in got.iter().zip(&requests) {
                assert_eq!(&g[..], *r);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&c.dir);
});
