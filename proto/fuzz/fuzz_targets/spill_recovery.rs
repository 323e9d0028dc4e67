//! The exporter's disk queue (storage::spill) opened on a damaged segment:
//! arbitrary bytes after the magic number. Opening never fails or panics,
//! and reading back yields exactly the batches opening counted, each with
//! the span count its frame says, then the end.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use storage::spill::MAGIC;
use storage::{Budget, Spill, SpillConfig};

static RUNS: AtomicUsize = AtomicUsize::new(0);

fuzz_target!(|data: &[u8]| {
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tailgate-fuzz-spill-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(data);
    std::fs::write(dir.join("00000000000000000000.spill"), &file).unwrap();
    let config = SpillConfig {
        dir: dir.clone(),
        segment_bytes: 1 << 20,
    };
    let opened = Spill::open(config, Arc::new(Budget::new(1 << 30)));
    let (mut spill, found) = match opened {
        Ok(o) => o,
        Err(e) => panic!("opening damaged bytes is not an error: {e}"),
    };
    let (mut batches, mut spans) = (0u64, 0u64);
    while let Some(batch) = spill.pop().expect("reading back what open checked") {
        batches += 1;
        spans += u64::from(batch.spans);
    }
    assert_eq!((batches, spans), (found.batches, found.spans));
    spill.ack();
    assert_eq!(spill.batches(), 0);
    let _ = std::fs::remove_dir_all(&dir);
});
