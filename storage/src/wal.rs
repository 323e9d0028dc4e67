//! The log: numbered segment files in one directory, each starting with a
//! magic number, then framed records ([`crate::frame`]).
//!
//! - **Appending** buffers the record in memory; [`Wal::commit`] writes the
//!   buffer to the active segment and syncs it (`fdatasync`): one write and
//!   one sync per commit interval whatever the number of records (group
//!   commit). What a crash loses is what was appended since the last
//!   commit: at most `commit_interval` of records. A caller that must not
//!   acknowledge anything a crash could lose waits for
//!   [`Wal::durable`] to pass the record's number.
//! - **Direct I/O**: on Linux a segment is opened with `O_DIRECT`, and a
//!   commit writes whole 4 KiB blocks from an aligned buffer (the last
//!   one padded, then the file cut back to its records with `ftruncate`,
//!   so a segment holds the same bytes either way). The log never reads
//!   back what it writes, and filling fresh page-cache pages was most of
//!   what the log cost the sampler (see BENCHMARKS.md). Where the file
//!   system refuses `O_DIRECT` (tmpfs) or an aligned write, the segment
//!   is written through the page cache as before. Either way the commit
//!   ends with `fdatasync`: the durability contract is the same.
//! - **Segments** close once past `segment_bytes`; the next commit starts a
//!   new one. A segment is deleted once every trace with spans in it is
//!   settled: decided not kept, or kept and delivered. A segment older than
//!   `max_age` is deleted anyway, and counted: a trace nobody settled (its
//!   late spans followed a decision already taken, it moved to another
//!   node) must not pin the disk.
//! - **Recovery** ([`Wal::open`]) reads every segment in order and hands
//!   each record to the caller. A frame cut short or failing its checksum
//!   ends its segment: the rest of it is skipped and counted, never
//!   trusted; a record that passes its checksum but does not read is
//!   skipped and counted. Nothing read from disk can make it panic. New
//!   records go to a new segment, never after a torn tail.
//! - **Disk full**: a commit that fails keeps its records in memory and
//!   returns [`StorageError::DiskFull`]; the next commit writes them again
//!   at the same offset. The caller pushes back meanwhile.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hashbrown::HashMap;

use crate::frame::{self, Frame};
use crate::record::{self, Record, TraceKey};

/// The first bytes of every segment: the format's name and version.
pub const MAGIC: &[u8; 8] = b"TGWAL\0\0\x01";

/// Where the log lives and how it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Records are written and synced at most this long after they are
    /// appended (the driver calls [`Wal::commit`] by then).
    pub commit_interval: Duration,
    /// The log's budget: [`Wal::is_full`] past it.
    pub max_bytes: u64,
    /// A segment older than this is deleted even if a trace in it never
    /// settled.
    pub max_age: Duration,
}

/// The log cannot do what was asked; nothing was lost from memory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("storage {path}: the disk is full ({op}): {source}")]
    DiskFull {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("storage: a record of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

impl StorageError {
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> StorageError {
        let path = path.to_owned();
        if source.kind() == io::ErrorKind::StorageFull {
            StorageError::DiskFull { path, op, source }
        } else {
            StorageError::Io { path, op, source }
        }
    }

    /// The disk (or its quota) is full: push back until a commit succeeds.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }

    /// Trying again may succeed (space freed, a transient I/O error); a
    /// record too large never will.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StorageError::TooLarge { .. })
    }
}

/// What recovery read and what it had to skip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    /// Segments whose end was cut short or corrupt (the rest skipped).
    pub torn_tails: u64,
    /// Bytes skipped after a torn or corrupt frame.
    pub skipped_bytes: u64,
    /// Records whose checksum held but which did not read.
    pub undecodable: u64,
    /// Files named as segments that could not be read or lacked the magic
    /// number: left in place, not read.
    pub bad_segments: u64,
}

/// How far recovery is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// The block size direct writes are aligned to (offset, length, memory).
const BLOCK: usize = 4096;

#[derive(Debug)]
struct Active {
    seq: u64,
    file: File,
    path: PathBuf,
    len: u64,
    /// Opened with `O_DIRECT`: writes go in whole aligned blocks.
    direct: bool,
}

/// Opens a new segment for writing, with `O_DIRECT` where the file system
/// takes it. Returns the file and whether it is direct.
fn create_segment(path: &Path) -> io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct = options.clone();
        direct.custom_flags(libc::O_DIRECT);
        if let Ok(file) = direct.open(path) {
            return Ok((file, true));
        }
    }
    options.open(path).map(|file| (file, false))
}

/// What the next commit writes, laid out for a direct write: `buf[base..]`
/// starts with the active segment's last partial block, already on disk
/// (or the magic number of the segment the commit will create: the
/// `tail`), and the records appended since the last commit follow it. A
/// commit writes `buf[base..]` padded to whole blocks straight from here,
/// `base` moved to a block-aligned address first if the buffer grew
/// elsewhere: records are copied once, by `append`, rather than again into
/// a staging buffer per commit.
#[derive(Debug)]
struct Pending {
    buf: Vec<u8>,
    base: usize,
    tail: usize,
}

impl Pending {
    /// Before the first commit: the segment it creates starts with the
    /// magic number.
    fn new() -> Self {
        Pending {
            buf: MAGIC.to_vec(),
            base: 0,
            tail: MAGIC.len(),
        }
    }

    /// Appended records' bytes, not yet committed.
    fn len(&self) -> usize {
        self.buf.len() - self.base - self.tail
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tail and the records, padded with zeros to whole blocks, from
    /// a block-aligned address. [`unpad`](Self::unpad) takes the padding
    /// off again.
    fn blocks(&mut self) -> &[u8] {
        let used = self.buf.len() - self.base;
        let padded = used.next_multiple_of(BLOCK);
        // Room to move to an aligned start and pad, so nothing below
        // reallocates (which would lose the alignment).
        self.buf
            .reserve((BLOCK + padded).saturating_sub(self.buf.len()));
        // Pointer to integer only, to find the aligned offset: no unsafe.
        let aligned = (BLOCK - self.buf.as_ptr() as usize % BLOCK) % BLOCK;
        if aligned > self.base {
            self.buf.resize(aligned + used, 0);
            self.buf.copy_within(self.base..self.base + used, aligned);
        } else if aligned < self.base {
            self.buf.copy_within(self.base..self.base + used, aligned);
            self.buf.truncate(aligned + used);
        }
        self.base = aligned;
        self.buf.resize(self.base + padded, 0);
        &self.buf[self.base..]
    }

    /// Back to the tail and the records, after [`blocks`](Self::blocks).
    fn unpad(&mut self, used: usize) {
        self.buf.truncate(self.base + used);
    }

    /// The tail and the records, unpadded (the page-cache path).
    fn bytes(&self) -> &[u8] {
        &self.buf[self.base..]
    }

    /// The records are written: the last `keep` bytes of the tail and
    /// records become the next tail.
    fn written(&mut self, keep: usize) {
        let end = self.buf.len();
        self.buf.copy_within(end - keep..end, self.base);
        self.buf.truncate(self.base + keep);
        self.tail = keep;
    }

    /// The segment closed: the next commit starts a new one.
    fn new_segment(&mut self) {
        self.buf.truncate(self.base);
        self.buf.extend_from_slice(MAGIC);
        self.tail = MAGIC.len();
    }
}

#[derive(Debug)]
struct Segment {
    bytes: u64,
    /// Traces with spans here not yet settled.
    unsettled: usize,
    created: Duration,
}

/// The segments holding spans of one unsettled trace: nearly always one,
/// so the first is inline and the rest boxed (16 bytes with no allocation
/// per trace: the map of unsettled traces is the log's largest cost, a
/// cache miss per settled trace, and a smaller entry misses less).
#[derive(Debug)]
struct Tracked {
    first: u64,
    #[expect(
        clippy::box_collection,
        reason = "a thin pointer keeps the entry at 16 bytes; the rare second segment pays the extra allocation"
    )]
    more: Option<Box<Vec<u64>>>,
}

const _: () = assert!(std::mem::size_of::<Tracked>() == 16);

impl Tracked {
    fn new(seq: u64) -> Self {
        Tracked {
            first: seq,
            more: None,
        }
    }

    /// Adds `seq`; false if it was there.
    fn add(&mut self, seq: u64) -> bool {
        if self.first == seq {
            return false;
        }
        let more = self.more.get_or_insert_with(Box::default);
        if more.contains(&seq) {
            return false;
        }
        more.push(seq);
        true
    }

    fn segments(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.first).chain(self.more.iter().flat_map(|m| m.iter().copied()))
    }

    /// Removes `seq`; false once none is left.
    fn remove(&mut self, seq: u64) -> bool {
        let more = self.more.as_mut();
        if self.first == seq {
            match more.and_then(|m| m.pop()) {
                Some(other) => self.first = other,
                None => return false,
            }
        } else if let Some(m) = more {
            m.retain(|s| *s != seq);
        }
        true
    }
}

/// The write-ahead log. See the module doc.
#[derive(Debug)]
pub struct Wal {
    config: WalConfig,
    active: Option<Active>,
    next_seq: u64,
    pending: Pending,
    /// Records appended so far, and made durable so far.
    appended: u64,
    durable: u64,
    last_commit: Duration,
    segments: BTreeMap<u64, Segment>,
    /// Unsettled traces (hashbrown's seeded hasher: trace IDs come from
    /// clients, and SipHash cost the sampler more than the map's work).
    /// Keyed by the ID as one integer: hashed in one step, not as a slice.
    traces: HashMap<u128, Tracked>,
    on_disk: u64,
    deleted: u64,
    expired: u64,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Wal {
    /// Opens the log in `config.dir` (created if missing), handing every
    /// record found to `each`, in order, with the progress so far. `now` is
    /// the driver's clock.
    pub fn open(
        config: WalConfig,
        now: Duration,
        mut each: impl FnMut(Record<'_>, Progress),
    ) -> Result<(Wal, RecoveryStats), StorageError> {
        fs::create_dir_all(&config.dir)
            .map_err(|e| StorageError::io(&config.dir, "creating the directory", e))?;
        let mut wal = Wal {
            next_seq: 0,
            config,
            active: None,
            pending: Pending::new(),
            appended: 0,
            durable: 0,
            last_commit: now,
            segments: BTreeMap::new(),
            traces: HashMap::new(),
            on_disk: 0,
            deleted: 0,
            expired: 0,
        };
        let dir = wal.config.dir.clone();
        let stats = read(&dir, |event| match event {
            Event::Segment { seq, bytes } => {
                wal.next_seq = wal.next_seq.max(seq + 1);
                wal.on_disk += bytes;
                wal.segments.insert(
                    seq,
                    Segment {
                        bytes,
                        unsettled: 0,
                        created: now,
                    },
                );
            }
            Event::Skipped { seq } => wal.next_seq = wal.next_seq.max(seq + 1),
            Event::Record {
                seq,
                record,
                progress,
            } => {
                wal.track(&record, seq, now);
                each(record, progress);
            }
        })?;
        // Segments whose every trace settled go now.
        wal.collect(now);
        Ok((wal, stats))
    }

    /// Appends a record (in memory until the next [`commit`](Self::commit)).
    /// Returns its number: it is durable once [`durable`](Self::durable)
    /// reaches it.
    pub fn append(&mut self, record: &Record<'_>, now: Duration) -> Result<u64, StorageError> {
        let out = &mut self.pending.buf;
        let at = frame::start(out);
        record.encode(out);
        if frame::finish(out, at).is_none() {
            let len = out.len().saturating_sub(at + frame::HEADER_LEN);
            return Err(StorageError::TooLarge {
                len,
                max: frame::MAX_PAYLOAD,
            });
        }
        let seq = self.current_seq();
        self.track(record, seq, now);
        self.appended += 1;
        Ok(self.appended)
    }

    /// The segment appended records go to.
    fn current_seq(&self) -> u64 {
        self.active.as_ref().map_or(self.next_seq, |a| a.seq)
    }

    /// Follows what each record does to the traces' settlement.
    fn track(&mut self, record: &Record<'_>, seq: u64, now: Duration) {
        match record {
            Record::Spans { traces, .. } => {
                let segment = self.segments.entry(seq).or_insert(Segment {
                    bytes: 0,
                    unsettled: 0,
                    created: now,
                });
                for key in traces {
                    let added = match self.traces.entry(u128::from_ne_bytes(*key)) {
                        hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().add(seq),
                        hashbrown::hash_map::Entry::Vacant(e) => {
                            e.insert(Tracked::new(seq));
                            true
                        }
                    };
                    if added {
                        segment.unsettled += 1;
                    }
                }
            }
            Record::Decision {
                trace, kept: false, ..
            } => self.settle(trace),
            // Kept: settled once delivered.
            Record::Decision { kept: true, .. } => {}
            Record::Delivered { traces } => {
                for key in traces {
                    self.settle(key);
                }
            }
        }
    }

    fn settle(&mut self, key: &TraceKey) {
        let Some(tracked) = self.traces.remove(&u128::from_ne_bytes(*key)) else {
            return;
        };
        for seq in tracked.segments() {
            if let Some(segment) = self.segments.get_mut(&seq) {
                segment.unsettled = segment.unsettled.saturating_sub(1);
            }
        }
    }

    /// When the records appended since the last commit must be committed,
    /// if any were.
    pub fn commit_due(&self) -> Option<Duration> {
        (!self.pending.is_empty()).then(|| self.last_commit + self.config.commit_interval)
    }

    /// Writes and syncs what was appended, then deletes the segments no
    /// longer needed. Returns the number of the last durable record. On an
    /// error the records stay in memory for the next try.
    pub fn commit(&mut self, now: Duration) -> Result<u64, StorageError> {
        if !self.pending.is_empty() {
            self.write_pending()?;
            self.durable = self.appended;
        }
        self.last_commit = now;
        self.collect(now);
        Ok(self.durable)
    }

    fn write_pending(&mut self) -> Result<(), StorageError> {
        if self.active.is_none() {
            let seq = self.next_seq;
            let path = self.config.dir.join(segment_name(seq));
            let (file, direct) = create_segment(&path)
                .map_err(|e| StorageError::io(&path, "creating a segment", e))?;
            // The new name must survive a crash too.
            File::open(&self.config.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io(&self.config.dir, "syncing the directory", e))?;
            self.next_seq = seq + 1;
            self.on_disk += MAGIC.len() as u64;
            self.segments
                .entry(seq)
                .or_insert(Segment {
                    bytes: 0,
                    unsettled: 0,
                    created: self.last_commit,
                })
                .bytes += MAGIC.len() as u64;
            // The magic number is the pending tail (see `Pending`): it is
            // written with the first records, in the same block.
            self.active = Some(Active {
                seq,
                file,
                path,
                len: MAGIC.len() as u64,
                direct,
            });
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let pending = &mut self.pending;
        let records = pending.len();
        let used = pending.tail + records;
        // Positional, from the start of the tail's block: after a failed
        // write the next try overwrites whatever part of it reached the
        // disk.
        let start = active.len - pending.tail as u64;
        let end = active.len + records as u64;
        let written = if active.direct {
            let blocks = pending.blocks();
            let written = active.file.write_all_at(blocks, start).and_then(|()| {
                if !end.is_multiple_of(BLOCK as u64) {
                    // The padding goes: the segment holds its records only.
                    active.file.set_len(end)?;
                }
                Ok(())
            });
            pending.unpad(used);
            match written {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    // The file system takes O_DIRECT but not these writes:
                    // through the page cache from here on.
                    active.file = OpenOptions::new()
                        .write(true)
                        .open(&active.path)
                        .map_err(|e| StorageError::io(&active.path, "reopening a segment", e))?;
                    active.direct = false;
                    active.file.write_all_at(pending.bytes(), start)
                }
                other => other,
            }
        } else {
            active.file.write_all_at(pending.bytes(), start)
        };
        written.map_err(|e| StorageError::io(&active.path, "writing a segment", e))?;
        active
            .file
            .sync_data()
            .map_err(|e| StorageError::io(&active.path, "writing a segment", e))?;
        // The new last partial block, written again with the next records.
        pending.written((end % BLOCK as u64) as usize);
        let n = records as u64;
        active.len += n;
        self.on_disk += n;
        if let Some(segment) = self.segments.get_mut(&active.seq) {
            segment.bytes += n;
        }
        if active.len >= self.config.segment_bytes {
            self.active = None;
            pending.new_segment();
        }
        Ok(())
    }

    /// Deletes closed segments whose traces all settled, or that are older
    /// than `max_age`.
    fn collect(&mut self, now: Duration) {
        let current = self.current_seq();
        let done: Vec<(u64, bool)> = self
            .segments
            .iter()
            .filter(|(seq, _)| **seq != current)
            .filter_map(|(seq, s)| {
                if s.unsettled == 0 {
                    Some((*seq, false))
                } else if now.saturating_sub(s.created) >= self.config.max_age {
                    Some((*seq, true))
                } else {
                    None
                }
            })
            .collect();
        for (seq, expired) in done {
            let path = self.config.dir.join(segment_name(seq));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Tried again at the next commit.
                Err(_) => continue,
            }
            if let Some(segment) = self.segments.remove(&seq) {
                self.on_disk = self.on_disk.saturating_sub(segment.bytes);
            }
            if expired {
                self.expired += 1;
                self.traces.retain(|_, t| t.remove(seq));
            } else {
                self.deleted += 1;
            }
        }
    }

    /// The number of the last record appended.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// The number of the last record a crash cannot lose.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Bytes in segments on disk plus bytes waiting for a commit.
    pub fn bytes(&self) -> u64 {
        self.on_disk + self.pending.len() as u64
    }

    /// Whether the log is at its budget (`max_bytes`): push back.
    pub fn is_full(&self) -> bool {
        self.bytes() >= self.config.max_bytes
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Segments deleted once settled, and deleted past `max_age`.
    pub fn deleted_segments(&self) -> (u64, u64) {
        (self.deleted, self.expired)
    }

    /// Traces with spans in the log, not settled yet.
    pub fn unsettled_traces(&self) -> usize {
        self.traces.len()
    }

    pub fn config(&self) -> &WalConfig {
        &self.config
    }
}

/// Reads every record of the log in `dir` without opening it for writing
/// (nothing is deleted): what a caller needs to know before it replays the
/// log with [`Wal::open`], such as which traces were settled.
pub fn scan(
    dir: &Path,
    mut each: impl FnMut(Record<'_>, Progress),
) -> Result<RecoveryStats, StorageError> {
    if !dir.exists() {
        return Ok(RecoveryStats::default());
    }
    read(dir, |event| {
        if let Event::Record {
            record, progress, ..
        } = event
        {
            each(record, progress);
        }
    })
}

/// What reading the log meets, in order.
enum Event<'a> {
    /// A segment about to be read.
    Segment { seq: u64, bytes: u64 },
    /// A file named as a segment that cannot be read.
    Skipped { seq: u64 },
    Record {
        seq: u64,
        record: Record<'a>,
        progress: Progress,
    },
}

fn read(dir: &Path, mut each: impl FnMut(Event<'_>)) -> Result<RecoveryStats, StorageError> {
    let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(|e| StorageError::io(dir, "listing the directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, "listing the directory", e))?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(segment_seq) else {
            continue;
        };
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        found.push((seq, entry.path(), len));
    }
    found.sort_unstable_by_key(|(seq, _, _)| *seq);
    let mut stats = RecoveryStats::default();
    let mut progress = Progress {
        done_bytes: 0,
        total_bytes: found.iter().map(|(_, _, len)| len).sum(),
    };
    for (seq, path, len) in found {
        let data = match fs::read(&path) {
            Ok(data) if data.starts_with(MAGIC) => data,
            _ => {
                stats.bad_segments += 1;
                progress.done_bytes += len;
                each(Event::Skipped { seq });
                continue;
            }
        };
        stats.segments += 1;
        stats.bytes += data.len() as u64;
        each(Event::Segment {
            seq,
            bytes: data.len() as u64,
        });
        let segment_start = progress.done_bytes;
        let mut at = MAGIC.len();
        loop {
            match frame::read(&data[at..]) {
                Frame::Record { payload, len } => {
                    at += len;
                    progress.done_bytes = segment_start + at as u64;
                    match record::decode(payload) {
                        Ok(record) => {
                            stats.records += 1;
                            each(Event::Record {
                                seq,
                                record,
                                progress,
                            });
                        }
                        Err(_) => stats.undecodable += 1,
                    }
                }
                Frame::End => break,
                Frame::Bad(_) => {
                    stats.torn_tails += 1;
                    stats.skipped_bytes += (data.len() - at) as u64;
                    break;
                }
            }
        }
        progress.done_bytes = segment_start + data.len() as u64;
    }
    Ok(stats)
}
