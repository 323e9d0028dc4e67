//! The log's own cost: appending and committing, and recovering a 1 GiB
//! log (read, checksum, decode every record).
//!
//! cargo bench -p storage --bench wal            # both
//! cargo bench -p storage --bench wal -- append
//! cargo bench -p storage --bench wal -- recover

use std::time::{Duration, Instant};

use storage::{Record, Wal, WalConfig};

fn config(name: &str) -> WalConfig {
    let dir =
        std::env::temp_dir().join(format!("tailgate-wal-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    WalConfig {
        dir,
        segment_bytes: 64 << 20,
        commit_interval: Duration::from_millis(50),
        max_bytes: 8 << 30,
        max_age: Duration::from_secs(3600),
    }
}

/// A 1,000-span request's worth of bytes (≈ 330 B a span) and its 100
/// trace IDs.
fn request(n: u64) -> (Vec<u8>, Vec<[u8; 16]>) {
    let bytes: Vec<u8> = (0..330_000u64).map(|i| (i ^ n) as u8).collect();
    let traces = (0..100u64)
        .map(|t| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&n.to_le_bytes());
            k[8..].copy_from_slice(&t.to_le_bytes());
            k
        })
        .collect();
    (bytes, traces)
}

/// Writes about `bytes` of spans records, committing every 10 requests
/// (a 50 ms group commit at 200,000 spans/s); returns the seconds taken.
fn fill(config: &WalConfig, bytes: u64) -> (f64, u64) {
    let (mut wal, _) = Wal::open(config.clone(), Duration::ZERO, |_, _| {}).expect("opens");
    let started = Instant::now();
    let mut n = 0;
    while wal.bytes() < bytes {
        let (request, traces) = request(n);
        wal.append(
            &Record::Spans {
                at_unix_nanos: n,
                traces,
                request: &request,
            },
            Duration::ZERO,
        )
        .expect("appends");
        n += 1;
        if n % 10 == 0 {
            wal.commit(Duration::ZERO).expect("commits");
        }
    }
    wal.commit(Duration::ZERO).expect("commits");
    (started.elapsed().as_secs_f64(), n)
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("append") {
        let c = config("append");
        let (secs, n) = fill(&c, 256 << 20);
        println!(
            "append: {n} requests of 1,000 spans (256 MiB) with a commit per 10 in {secs:.2} s: {:.0} MiB/s, {:.0} spans/s",
            256.0 / secs,
            n as f64 * 1000.0 / secs
        );
        let _ = std::fs::remove_dir_all(&c.dir);
    }
    if want("recover") {
        let c = config("recover");
        let (_, n) = fill(&c, 1 << 30);
        // Read back from the page cache and from disk alike: drop nothing,
        // but time the read of every byte and every checksum.
        let started = Instant::now();
        let mut records = 0u64;
        let (wal, stats) =
            Wal::open(c.clone(), Duration::ZERO, |_, _| records += 1).expect("recovers");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "recover: {} bytes in {} segments, {records} records ({n} written) in {secs:.2} s: {:.0} MiB/s; {} unsettled traces tracked",
            stats.bytes,
            stats.segments,
            stats.bytes as f64 / (1 << 20) as f64 / secs,
            wal.unsettled_traces()
        );
        drop(wal);
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}
