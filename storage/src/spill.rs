//! The exporter's disk queue: request batches that wait for the backend
//! when its memory queue is full, first in first out, in segment files of
//! framed records (the log's [`frame`](crate::frame) format) in their own
//! directory.
//!
//! - [`Spill::push`] appends one batch (`spans: u32 LE | request bytes`) to
//!   the open segment with one `write` (the page cache: a killed process
//!   loses nothing; a segment is synced when it is closed, so a power loss
//!   can lose at most the open segment).
//! - [`Spill::pop`] reads the oldest batch not yet read; [`Spill::ack`]
//!   says every batch popped so far was dealt with (sent, or dropped and
//!   counted), which deletes the segments read to their end. Batches popped
//!   but not acknowledged when the process dies are read again at the next
//!   start: the queue delivers at least once.
//! - [`Spill::open`] finds the segments a previous process left, checks
//!   every frame, and keeps the whole ones; a torn or corrupt frame ends its
//!   segment (the rest of it is skipped and counted), as in the log.
//! - A [`Budget`] is shared with the log: the spill takes a batch only while
//!   the log's bytes and its own stay within `max_bytes`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::frame::{self, Frame};
use crate::wal::StorageError;

/// The first bytes of every spill segment: the format's name and version.
pub const MAGIC: &[u8; 8] = b"TGSPL\0\0\x01";

/// The disk budget the log and the spill share.
#[derive(Debug)]
pub struct Budget {
    max: u64,
    wal: AtomicU64,
    spill: AtomicU64,
}

impl Budget {
    pub fn new(max_bytes: u64) -> Budget {
        Budget {
            max: max_bytes,
            wal: AtomicU64::new(0),
            spill: AtomicU64::new(0),
        }
    }

    /// The log's driver says how many bytes the log takes.
    pub fn set_wal(&self, bytes: u64) {
        self.wal.store(bytes, Ordering::Relaxed);
    }

    pub fn spill_bytes(&self) -> u64 {
        self.spill.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max
    }

    /// Both together are past the budget.
    pub fn is_full(&self) -> bool {
        self.wal.load(Ordering::Relaxed) + self.spill_bytes() >= self.max
    }

    /// `more` bytes would still fit.
    fn fits(&self, more: u64) -> bool {
        self.wal.load(Ordering::Relaxed) + self.spill_bytes() + more <= self.max
    }
}

/// Where the spill lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillConfig {
    pub dir: PathBuf,
    /// A segment is closed (synced) once it holds this many bytes.
    pub segment_bytes: u64,
}

/// What [`Spill::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillRecovery {
    pub segments: u64,
    pub batches: u64,
    pub spans: u64,
    /// Segments whose end was a torn or corrupt frame.
    pub torn: u64,
    /// Bytes after such a frame, or whole files that were not segments.
    pub skipped_bytes: u64,
}

/// One batch read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled {
    pub spans: u32,
    pub request: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    /// Bytes on disk (with the magic number).
    bytes: u64,
    /// Where its whole frames end.
    end: u64,
}

#[derive(Debug)]
struct Open {
    seq: u64,
    file: File,
    bytes: u64,
    batches: u64,
}

/// A segment being read: its frames, and how far the reader got.
#[derive(Debug)]
struct Reading {
    seq: u64,
    data: Vec<u8>,
    at: usize,
    end: usize,
}

/// The disk queue. See the module doc.
#[derive(Debug)]
pub struct Spill {
    config: SpillConfig,
    budget: std::sync::Arc<Budget>,
    /// Closed segments, oldest first (the one being read is the front).
    closed: VecDeque<Segment>,
    open: Option<Open>,
    reading: Option<Reading>,
    next_seq: u64,
    /// Batches on disk not yet popped, and popped but not acknowledged.
    waiting: u64,
    unacked: u64,
    /// Segments read to their end, waiting for the ack to delete them.
    finished: Vec<u64>,
    bytes: u64,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.spill")
}

fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".spill")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks a segment's frames: where the whole ones end, how many batches
/// and spans they hold, and whether a bad frame cut it short.
fn check(data: &[u8]) -> (usize, u64, u64, bool) {
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return (0, 0, 0, true);
    }
    let mut at = MAGIC.len();
    let (mut batches, mut spans) = (0, 0);
    loop {
        match frame::read(&data[at..]) {
            Frame::Record { payload, len } if payload.len() >= 4 => {
                let mut n = [0u8; 4];
                n.copy_from_slice(&payload[..4]);
                spans += u64::from(u32::from_le_bytes(n));
                batches += 1;
                at += len;
            }
            Frame::End => return (at, batches, spans, false),
            Frame::Record { .. } | Frame::Bad(_) => return (at, batches, spans, true),
        }
    }
}

impl Spill {
    /// Opens the spill in `config.dir` (created if missing) with what a
    /// previous process left in it.
    pub fn open(
        config: SpillConfig,
        budget: std::sync::Arc<Budget>,
    ) -> Result<(Spill, SpillRecovery), StorageError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(&dir, "creating the spill directory", e))?;
        let mut seqs = Vec::new();
        for entry in
            fs::read_dir(&dir).map_err(|e| StorageError::io(&dir, "listing the spill", e))?
        {
            let entry = entry.map_err(|e| StorageError::io(&dir, "listing the spill", e))?;
            if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut spill = Spill {
            config,
            budget,
            closed: VecDeque::new(),
            open: None,
            reading: None,
            next_seq: seqs.last().map_or(0, |s| s + 1),
            waiting: 0,
            unacked: 0,
            finished: Vec::new(),
            bytes: 0,
        };
        let mut found = SpillRecovery::default();
        for seq in seqs {
            let path = dir.join(segment_name(seq));
            let data = fs::read(&path).map_err(|e| StorageError::io(&path, "reading", e))?;
            let (end, batches, spans, torn) = check(&data);
            found.torn += u64::from(torn);
            found.skipped_bytes += (data.len() - end) as u64;
            if batches == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            found.segments += 1;
            found.batches += batches;
            found.spans += spans;
            spill.waiting += batches;
            spill.add_bytes(data.len() as u64);
            spill.closed.push_back(Segment {
                seq,
                bytes: data.len() as u64,
                end: end as u64,
            });
        }
        Ok((spill, found))
    }

    fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
        self.budget.spill.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_bytes(&mut self, n: u64) {
        self.bytes -= n;
        self.budget.spill.fetch_sub(n, Ordering::Relaxed);
    }

    /// Appends a batch. `Ok(false)`: the budget has no room for it (nothing
    /// written).
    pub fn push(&mut self, spans: u32, request: &[u8]) -> Result<bool, StorageError> {
        let len = (frame::HEADER_LEN + 4 + request.len()) as u64;
        if request.len() + 4 > frame::MAX_PAYLOAD {
            return Err(StorageError::TooLarge {
                len: request.len() + 4,
                max: frame::MAX_PAYLOAD,
            });
        }
        let new_segment = self.open.is_none();
        let extra = if new_segment { MAGIC.len() as u64 } else { 0 };
        if !self.budget.fits(len + extra) {
            return Ok(false);
        }
        if new_segment {
            self.start_segment()?;
        }
        let mut buf = Vec::with_capacity(len as usize);
        let at = frame::start(&mut buf);
        buf.extend_from_slice(&spans.to_le_bytes());
        buf.extend_from_slice(request);
        frame::finish(&mut buf, at);
        let path = self.config.dir.clone();
        let Some(open) = self.open.as_mut() else {
            return Ok(false);
        };
        if let Err(e) = open.file.write_all(&buf) {
            // A partial write is a torn frame: end this segment before it
            // (a reader stops there) and start afresh on the next push.
            let seq = open.seq;
            let _ = open.file.set_len(open.bytes);
            self.close_segment();
            return Err(StorageError::io(
                &path.join(segment_name(seq)),
                "writing",
                e,
            ));
        }
        open.bytes += len;
        open.batches += 1;
        self.waiting += 1;
        self.add_bytes(len);
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.bytes >= self.config.segment_bytes)
        {
            self.close_segment();
        }
        Ok(true)
    }

    fn start_segment(&mut self) -> Result<(), StorageError> {
        let seq = self.next_seq;
        let path = self.config.dir.join(segment_name(seq));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, "creating", e))?;
        if let Err(e) = file.write_all(MAGIC) {
            let _ = fs::remove_file(&path);
            return Err(StorageError::io(&path, "writing", e));
        }
        self.next_seq += 1;
        self.add_bytes(MAGIC.len() as u64);
        self.open = Some(Open {
            seq,
            file,
            bytes: MAGIC.len() as u64,
            batches: 0,
        });
        Ok(())
    }

    /// Syncs the open segment and makes it readable.
    fn close_segment(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        // A failed sync leaves the data in the page cache: it is still read
        // back by this process, and only a power loss could lose it.
        let _ = open.file.sync_data();
        if open.batches == 0 {
            let _ = fs::remove_file(self.config.dir.join(segment_name(open.seq)));
            self.sub_bytes(open.bytes);
            return;
        }
        self.closed.push_back(Segment {
            seq: open.seq,
            bytes: open.bytes,
            end: open.bytes,
        });
    }

    /// The oldest batch not yet popped, if any. Reading reaches the open
    /// segment by closing it.
    pub fn pop(&mut self) -> Result<Option<Spilled>, StorageError> {
        loop {
            if let Some(r) = self.reading.as_mut() {
                if r.at < r.end
                    && let Frame::Record { payload, len } = frame::read(&r.data[r.at..r.end])
                {
                    r.at += len;
                    let mut n = [0u8; 4];
                    n.copy_from_slice(&payload[..4]);
                    let batch = Spilled {
                        spans: u32::from_le_bytes(n),
                        request: payload[4..].to_vec(),
                    };
                    self.waiting = self.waiting.saturating_sub(1);
                    self.unacked += 1;
                    return Ok(Some(batch));
                }
                // Read to its end (checked at open or written whole here).
                self.finished.push(r.seq);
                self.reading = None;
                continue;
            }
            let unread = |s: &Segment| !self.finished.contains(&s.seq);
            if !self.closed.iter().any(unread) {
                if self.open.as_ref().is_some_and(|o| o.batches > 0) {
                    self.close_segment();
                } else {
                    return Ok(None);
                }
            }
            let unread = |s: &&Segment| !self.finished.contains(&s.seq);
            let Some(segment) = self.closed.iter().find(unread) else {
                return Ok(None);
            };
            let path = self.config.dir.join(segment_name(segment.seq));
            let data = fs::read(&path).map_err(|e| StorageError::io(&path, "reading", e))?;
            let end = (segment.end as usize).min(data.len());
            let seq = segment.seq;
            // The frames were checked when written or at open; a segment
            // changed under us since reads as far as it still holds.
            let (whole, _, _, _) = check(&data[..end]);
            self.reading = Some(Reading {
                seq,
                data,
                at: MAGIC.len().min(whole),
                end: whole,
            });
        }
    }

    /// Every batch popped so far was dealt with: segments read to their
    /// end are deleted.
    pub fn ack(&mut self) {
        self.unacked = 0;
        for seq in std::mem::take(&mut self.finished) {
            if let Some(i) = self.closed.iter().position(|s| s.seq == seq)
                && let Some(segment) = self.closed.remove(i)
            {
                let _ = fs::remove_file(self.config.dir.join(segment_name(seq)));
                self.sub_bytes(segment.bytes);
            }
        }
    }

    /// Batches on disk: not yet read back, or read and not acknowledged.
    pub fn batches(&self) -> u64 {
        self.waiting + self.unacked
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tailgate-spill-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn config(dir: &Path, segment_bytes: u64) -> SpillConfig {
        SpillConfig {
            dir: dir.to_owned(),
            segment_bytes,
        }
    }

    #[test]
    fn batches_come_back_in_order_across_segments_and_a_restart() {
        let dir = temp("order");
        let budget = Arc::new(Budget::new(1 << 20));
        let (mut spill, found) = Spill::open(config(&dir, 100), budget.clone()).unwrap();
        assert_eq!(found, SpillRecovery::default());
        for i in 0..10u32 {
            assert!(spill.push(i, &[i as u8; 40]).unwrap());
        }
        assert_eq!(spill.batches(), 10);
        for i in 0..4u32 {
            let b = spill.pop().unwrap().unwrap();
            assert_eq!((b.spans, b.request), (i, vec![i as u8; 40]));
        }
        spill.ack();
        // Popped but not acknowledged: read again after a restart.
        let b = spill.pop().unwrap().unwrap();
        assert_eq!(b.spans, 4);
        let on_disk = budget.spill_bytes();
        assert_eq!(on_disk, spill.bytes());
        drop(spill);
        let budget = Arc::new(Budget::new(1 << 20));
        let (mut spill, found) = Spill::open(config(&dir, 100), budget.clone()).unwrap();
        assert_eq!(found.torn, 0);
        let mut got = Vec::new();
        while let Some(b) = spill.pop().unwrap() {
            got.push(b.spans);
        }
        spill.ack();
        // The segment holding batch 4 was not deleted, so 4 and any batch
        // before it in that segment come back.
        assert!(got.ends_with(&[4, 5, 6, 7, 8, 9]), "{got:?}");
        assert!(!got.contains(&0), "{got:?}");
        assert_eq!(
            (spill.bytes(), budget.spill_bytes(), spill.batches()),
            (0, 0, 0)
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_budget_shared_with_the_log_bounds_the_spill() {
        let dir = temp("budget");
        let budget = Arc::new(Budget::new(1000));
        budget.set_wal(600);
        let (mut spill, _) = Spill::open(config(&dir, 1 << 20), budget.clone()).unwrap();
        let mut taken = 0;
        while spill.push(1, &[7; 50]).unwrap() {
            taken += 1;
        }
        // 8 bytes of magic, 66 per batch: 392 / 66 = 5.
        assert_eq!(taken, 5);
        assert!(budget.spill_bytes() <= 400);
        budget.set_wal(0);
        assert!(spill.push(1, &[7; 50]).unwrap());
        let _ = fs::remove_dir_all(&dir);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Damage anywhere in a segment: the batches before it come back
        /// whole, nothing after it, and opening never fails or panics.
        #[test]
        fn a_cut_or_flipped_segment_yields_the_batches_before_the_damage(
            sizes in proptest::collection::vec(0usize..80, 1..12),
            cut in any::<usize>(),
            flip in any::<Option<usize>>(),
        ) {
            let dir = temp("damage");
            let budget = Arc::new(Budget::new(1 << 20));
            let (mut spill, _) = Spill::open(config(&dir, 1 << 20), budget).unwrap();
            let mut ends = Vec::new();
            let mut at = MAGIC.len();
            for (i, size) in sizes.iter().enumerate() {
                spill.push(i as u32, &vec![i as u8; *size]).unwrap();
                at += frame::HEADER_LEN + 4 + size;
                ends.push(at);
            }
            drop(spill);
            let path = dir.join(segment_name(0));
            let mut data = fs::read(&path).unwrap();
            let damage = match flip {
                Some(bit) => {
                    let bit = bit % (data.len() * 8);
                    data[bit / 8] ^= 1 << (bit % 8);
                    bit / 8
                }
                None => {
                    let cut = cut % (data.len() + 1);
                    data.truncate(cut);
                    cut
                }
            };
            fs::write(&path, &data).unwrap();
            let (mut spill, found) =
                Spill::open(config(&dir, 1 << 20), Arc::new(Budget::new(1 << 20))).unwrap();
            let whole = ends.iter().filter(|e| **e <= damage).count();
            let mut got = Vec::new();
            while let Some(b) = spill.pop().unwrap() {
                prop_assert_eq!(&b.request, &vec![b.spans as u8; sizes[b.spans as usize]]);
                got.push(b.spans);
            }
            if damage >= MAGIC.len() {
                prop_assert_eq!(got, (0..whole as u32).collect::<Vec<_>>());
            } else {
                prop_assert!(got.is_empty());
            }
            prop_assert!(found.torn <= 1);
            let _ = fs::remove_dir_all(&dir);
        }
    }
}
