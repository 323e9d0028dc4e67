//! The trace buffer of one shard: a synchronous state machine, driven by the
//! shard's task, with time passed in (`now` is any monotonic clock's
//! reading as a [`Duration`]; the node uses time since it started).
//!
//! - [`TraceBuffer::insert`] adds the spans of a batch to their traces (or,
//!   for a trace already decided, reports them as late, with the cached
//!   decision), starting a trace's clock at its first span.
//! - [`TraceBuffer::expire`] takes out every trace that is due and, if the
//!   buffer is past a hard limit, the traces closest to their decision, and
//!   says when to come back.
//! - The driver decides what `expire` returns and records the decision with
//!   [`TraceBuffer::record_decision`], so late spans follow it.
//!
//! For the cluster: [`TraceBuffer::insert_with_first_seen`] merges spans
//! handed over by another node without restarting their trace's clock,
//! [`TraceBuffer::take_where`] hands whole traces out, and
//! [`TraceBuffer::record_decision`] takes decisions made elsewhere.
//!
//! # Memory
//!
//! Each trace copies its spans, at insert, into one buffer of its own as
//! records `varint(header id) varint(len) span-bytes`, and the resource and
//! scope headers the records point at are interned once per shard (and
//! freed by generation, see [`Generations`], not counted span by span).
//! The alternative, keeping `Bytes::slice`
//! handles on the requests, keeps a whole request alive until its last
//! trace is decided: with agents that batch many traces per request, one
//! slow trace pins the bytes of hundreds of decided ones (see the
//! `buffer_memory` benchmark). A copy costs one `memcpy` per span, and
//! makes a span cost its encoded size plus 2 to 4 bytes. An insert first
//! adds up what the batch brings each trace and grows each trace's buffer
//! once, by exactly that (or by an eighth of its data, if more, so a trace
//! fed a span at a time reallocates O(log n) times). Buffers over 256 B are
//! sized to a class, eight per doubling, and a decided trace's buffer is
//! kept for the next trace of its class ([`Spares`]): slack under 12.5%,
//! none for smaller traces that arrive in batches. Per trace: the [`Trace`] in a chunked slab
//! (no allocation of its own), a 4-byte map slot naming it, and a 4-byte deadline entry (the
//! traces of one batch share their deadline, kept once).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use policy::TraceSummary;
use proto::view::TraceId;
use proto::wire::{put_varint, varint_len};
use proto::write::SpanRef;
use smallvec::SmallVec;

use crate::cache::{CachedDecision, DecisionCache, Kept};
use crate::ingest::{GroupHeader, IngestBatch};

/// What the buffer of one shard is allowed, and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferSettings {
    /// Decide this long after a trace's first span.
    pub decision_wait: Duration,
    /// Decide this long after the root span arrived, if that is sooner.
    pub decision_wait_after_root: Option<Duration>,
    /// Decide at once when a trace holds this many spans.
    pub max_spans_per_trace: u64,
    /// Decide at once when a trace's spans add up to this many encoded bytes.
    pub max_bytes_per_trace: u64,
    /// Past this many traces, the traces closest to their decision are
    /// decided early.
    pub max_traces: usize,
    /// Past this many bytes held ([`TraceBuffer::held_bytes`]), likewise.
    pub max_bytes: usize,
    /// Decisions remembered, by kind (0 disables).
    pub sampled_cache: usize,
    pub not_sampled_cache: usize,
    /// The policy file's `maximum_trace_size_bytes`: a trace whose spans
    /// pass this many encoded bytes is taken out at once as
    /// [`Due::TooLarge`], to be dropped. `None`: no limit.
    pub max_trace_size: Option<u64>,
}

impl Default for BufferSettings {
    fn default() -> Self {
        BufferSettings {
            decision_wait: Duration::from_secs(30),
            decision_wait_after_root: None,
            max_spans_per_trace: 10_000,
            max_bytes_per_trace: 8 * 1024 * 1024,
            max_traces: 50_000,
            max_bytes: 512 * 1024 * 1024,
            sampled_cache: 100_000,
            not_sampled_cache: 100_000,
            max_trace_size: None,
        }
    }
}

/// Why a trace came out of the buffer when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Due {
    /// `decision_wait` after its first span.
    Wait,
    /// `decision_wait_after_root_received` after its root span.
    RootWait,
    /// It reached the span cap.
    SpanCap,
    /// It reached the byte cap.
    ByteCap,
    /// The buffer held more than `max_traces`.
    MaxTraces,
    /// The buffer held more than `max_bytes`.
    MaxBytes,
    /// The node is shutting down ([`TraceBuffer::drain`]).
    Shutdown,
    /// It passed `maximum_trace_size_bytes`: dropped, not decided.
    TooLarge,
    /// Taken out by [`TraceBuffer::take_where`], undecided.
    Taken,
}

impl Due {
    /// Every reason a trace can be decided early, with its metric label.
    pub const EARLY: [Due; 5] = [
        Due::SpanCap,
        Due::ByteCap,
        Due::MaxTraces,
        Due::MaxBytes,
        Due::Shutdown,
    ];

    /// The `reason` label of `tailgate_traces_decided_early_total`, for a
    /// trace decided before its wait was over.
    pub fn early_reason(self) -> Option<&'static str> {
        match self {
            Due::SpanCap => Some("span_cap"),
            Due::ByteCap => Some("byte_cap"),
            Due::MaxTraces => Some("max_traces"),
            Due::MaxBytes => Some("max_buffer_bytes"),
            Due::Shutdown => Some("shutdown"),
            Due::Wait | Due::RootWait | Due::Taken | Due::TooLarge => None,
        }
    }

    /// The `reason` label of `tailgate_traces_decision_reason_total`.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Due::Wait => Some("timeout"),
            Due::RootWait => Some("root"),
            Due::TooLarge => Some("too_large"),
            Due::Taken => None,
            early => early.early_reason(),
        }
    }

    fn is_cap(self) -> bool {
        matches!(self, Due::SpanCap | Due::ByteCap | Due::TooLarge)
    }
}

/// One buffered trace.
#[derive(Debug)]
struct Trace {
    id: TraceId,
    /// Nanoseconds on the driver's clock.
    first_seen: u64,
    deadline: u64,
    summary: TraceSummary,
    /// Records `varint(header id) varint(len) span` (see the module doc).
    data: Vec<u8>,
    /// During an insert: the bytes the batch brings this trace, not yet
    /// reserved. Zero between inserts.
    pending: u32,
    due: Due,
    /// The generation ([`Generations`]) it was started in, as its low 16
    /// bits (in the padding: `Trace` stays 96 bytes).
    generation: u16,
}

/// A deadline entry: the deadline and the slab slot of its trace. Stale
/// once the slot holds no trace or one with another deadline; an entry
/// whose slot now holds another trace with that very deadline is due for
/// that trace anyway, so slots need no generation.
type Deadline = (u64, u32);

/// The buffered traces' deadlines, nearest first. Nearly every deadline is
/// a new trace's `first_seen + decision_wait`, and the clock only moves
/// forward: those come in order and go to a FIFO (push and pop O(1)), as
/// runs of slots sharing one deadline (the new traces of one batch). The
/// rest (root waits, caps, holds, handed-over traces older than the last
/// one) go to a heap beside it. Entries go stale when their trace leaves or
/// gets another deadline, and are skipped when met.
#[derive(Debug, Default)]
struct Deadlines {
    /// `(deadline, how many of the next slots have it)`, oldest first.
    runs: VecDeque<(u64, u32)>,
    slots: VecDeque<u32>,
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl Deadlines {
    fn push(&mut self, deadline: u64, slot: u32) {
        match self.runs.back_mut() {
            Some((last, n)) if *last == deadline && *n < u32::MAX => *n += 1,
            Some((last, _)) if *last > deadline => {
                self.heap.push(Reverse((deadline, slot)));
                return;
            }
            _ => self.runs.push_back((deadline, 1)),
        }
        self.slots.push_back(slot);
    }

    fn fifo_front(&self) -> Option<Deadline> {
        Some((self.runs.front()?.0, *self.slots.front()?))
    }

    /// Whether the nearest is in the FIFO (rather than the heap).
    fn nearest_in_fifo(&self) -> Option<bool> {
        match (self.fifo_front(), self.heap.peek()) {
            (Some(f), Some(Reverse(h))) => Some(f <= *h),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    }

    fn peek(&self) -> Option<Deadline> {
        match self.nearest_in_fifo()? {
            true => self.fifo_front(),
            false => self.heap.peek().map(|Reverse(d)| *d),
        }
    }

    fn pop(&mut self) -> Option<Deadline> {
        match self.nearest_in_fifo()? {
            true => {
                let front = self.fifo_front();
                self.slots.pop_front();
                if let Some((_, n)) = self.runs.front_mut() {
                    *n -= 1;
                    if *n == 0 {
                        self.runs.pop_front();
                    }
                }
                front
            }
            false => self.heap.pop().map(|Reverse(d)| d),
        }
    }

    fn len(&self) -> usize {
        self.slots.len() + self.heap.len()
    }

    fn clear(&mut self) {
        *self = Deadlines::default();
    }

    /// Replaces every entry with `live` (sorted into the FIFO).
    fn rebuild(&mut self, live: impl Iterator<Item = Deadline>) {
        let mut all: Vec<Deadline> = live.collect();
        all.sort_unstable();
        *self = Deadlines::default();
        for (deadline, slot) in all {
            self.push(deadline, slot);
        }
    }
}

/// Traces by slot, in chunks of [`CHUNK`] allocated as needed: a trace
/// costs its size and no allocation of its own (a boxed one cost a malloc
/// and a free, and its chunk header and rounding), and a slot never moves,
/// so the map and the deadlines name traces by a `u32`. Not the `slab`
/// crate: it keeps one `Vec`, which doubles (up to twice the memory of the
/// traces it holds, and a copy of them all at each growth).
#[derive(Debug, Default)]
struct Slab {
    chunks: Vec<Box<[Option<Trace>]>>,
    /// Vacated slots, reused last-in first-out.
    free: Vec<u32>,
    /// Slots ever used: `chunks` cover them.
    used: u32,
    len: usize,
}

const CHUNK: usize = 1024;

impl Slab {
    fn insert(&mut self, trace: Trace) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.used;
                self.used += 1;
                if slot as usize / CHUNK == self.chunks.len() {
                    self.chunks
                        .push(std::iter::repeat_with(|| None).take(CHUNK).collect());
                }
                slot
            }
        };
        self.chunks[slot as usize / CHUNK][slot as usize % CHUNK] = Some(trace);
        self.len += 1;
        slot
    }

    fn get(&self, slot: u32) -> Option<&Trace> {
        self.chunks.get(slot as usize / CHUNK)?[slot as usize % CHUNK].as_ref()
    }

    fn get_mut(&mut self, slot: u32) -> Option<&mut Trace> {
        self.chunks.get_mut(slot as usize / CHUNK)?[slot as usize % CHUNK].as_mut()
    }

    /// The trace in an occupied slot (the map only names occupied ones).
    fn at(&self, slot: u32) -> &Trace {
        self.get(slot).expect("the map names occupied slots")
    }

    fn remove(&mut self, slot: u32) -> Option<Trace> {
        let trace = self.chunks.get_mut(slot as usize / CHUNK)?[slot as usize % CHUNK].take()?;
        self.len -= 1;
        if self.len == 0 {
            // Empty: give the chunks back.
            *self = Slab::default();
        } else {
            self.free.push(slot);
        }
        Some(trace)
    }
}

/// Estimated bytes a trace costs besides its data buffer's capacity: the
/// [`Trace`] in its slab slot, the data buffer's allocator header (and
/// rounding), its map slot (a slot number and a control byte), one deadline
/// FIFO entry (a slot number) and one free-list entry once it leaves.
const TRACE_OVERHEAD: usize = size_of::<Trace>() + 16 + 3 * size_of::<u32>() + 1;

// Issue 19: at most 128 bytes per buffered trace beyond its spans.
const _: () = assert!(size_of::<Trace>() <= 96);
// Moved by value a few times per decided trace: small enough to be moved
// in registers rather than by a `memcpy` call.
const _: () = assert!(size_of::<TakenTrace>() <= 128);
/// Likewise for an interned header, besides its bytes.
const HEADER_OVERHEAD: usize = 2 * 32 + 3 * 16 + 8;

/// A trace taken out of the buffer: due for a decision, drained at shutdown
/// or handed over. Holds its spans and shared handles on its headers.
#[derive(Debug)]
pub struct TakenTrace {
    pub id: TraceId,
    /// On the driver's clock, when its first span arrived.
    pub first_seen: Duration,
    pub summary: TraceSummary,
    pub due: Due,
    data: Vec<u8>,
    /// The headers its records name, in order of first use. Empty while
    /// `lent`; only kept traces are resolved, so this is one allocation per
    /// kept trace. Not inline: a `TakenTrace` is moved several times on its
    /// way from the buffer to its decision, and six headers inline made it
    /// 200 bytes, each move a `memcpy` (and a stall reading it back just
    /// after), about 2 % of a sampler at 100k spans/s (BENCHMARKS.md, tenth
    /// pass).
    headers: Vec<(u32, Arc<GroupHeader>)>,
    /// Handed out by [`TraceBuffer::expire_into`] without its headers: its
    /// records name headers by their ids in the buffer, which frees none
    /// until the trace is given back ([`TraceBuffer::resolve`] or
    /// [`TraceBuffer::recycle`]).
    lent: bool,
}

impl Drop for TakenTrace {
    fn drop(&mut self) {
        // A lent trace dropped without going back keeps its buffer from
        // ever freeing a header again (memory, not correctness).
        debug_assert!(
            !self.lent || std::thread::panicking(),
            "a lent trace must be resolved or recycled"
        );
    }
}

impl TakenTrace {
    /// Spans held.
    pub fn span_count(&self) -> usize {
        usize::try_from(self.summary.span_count()).unwrap_or(usize::MAX)
    }

    /// The spans with their headers, grouped by header (in order of first
    /// use, spans in arrival order within a group) so that written out they
    /// make one `ResourceSpans` per resource.
    pub fn span_refs(&self) -> Vec<SpanRef<'_>> {
        debug_assert!(!self.lent, "resolve a lent trace before reading its spans");
        grouped_refs(&self.data, self.span_count(), |header| {
            self.headers
                .iter()
                .find(|(id, _)| *id == header)
                .map(|(_, group)| &**group)
        })
    }

    /// The trace as one encoded `ExportTraceServiceRequest`.
    pub fn to_request(&self) -> Bytes {
        proto::write::request(&self.span_refs())
    }
}

/// A trace's stored records as spans with their headers, grouped by header
/// in order of first use (spans in arrival order within a group), so that
/// written out they make one `ResourceSpans` per resource. A record whose
/// header `group` does not know is left out. `spans`: how many records
/// `data` holds (room for them is made once).
fn grouped_refs<'a>(
    data: &'a [u8],
    spans: usize,
    group: impl Fn(u32) -> Option<&'a GroupHeader>,
) -> Vec<SpanRef<'a>> {
    // Most traces name one header: then arrival order is the answer, and
    // the group of each span is only noted once a second header shows up.
    let mut order: SmallVec<[u32; 8]> = SmallVec::new();
    let mut refs: Vec<SpanRef<'a>> = Vec::with_capacity(spans);
    let mut ats: SmallVec<[u8; 64]> = SmallVec::new();
    for (header, span) in Records::new(data) {
        let Some(g) = group(header) else {
            continue;
        };
        let at = match order.iter().position(|h| *h == header) {
            Some(at) => at,
            None => {
                order.push(header);
                order.len() - 1
            }
        };
        if at > 0 && ats.is_empty() {
            ats.resize(refs.len(), 0);
        }
        if !ats.is_empty() {
            // Past 255 headers in one trace the rest share the last group
            // (still written under their own header: only the grouping of
            // ResourceSpans is coarser).
            ats.push(u8::try_from(at).unwrap_or(u8::MAX));
        }
        refs.push(SpanRef {
            resource: &g.resource,
            scope: &g.scope,
            span,
        });
    }
    if ats.is_empty() {
        return refs;
    }
    // Group by group, arrival order within a group: a pass per group, as a
    // trace names a handful (no sort, no second list of pairs).
    let mut grouped = Vec::with_capacity(refs.len());
    for g in 0..=ats.iter().copied().max().unwrap_or(0) {
        grouped.extend(
            refs.iter()
                .zip(&ats)
                .filter(|&(_, &at)| at == g)
                .map(|(r, _)| *r),
        );
    }
    grouped
}

/// What [`TraceBuffer::insert`] did with a batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InsertReport {
    /// Spans added to buffered traces.
    pub buffered: usize,
    /// Traces started.
    pub new_traces: usize,
    /// Spans of traces decided as kept: index in the batch, and the
    /// decision. The driver forwards them at once.
    pub late_sampled: Vec<(usize, Arc<Kept>)>,
    /// Spans of traces decided as not kept, by index in the batch: dropped
    /// (the driver asks whether they would have changed the decision).
    pub late_not_sampled: Vec<usize>,
    /// For each late span (kept or not), how long after its trace's
    /// decision it arrived.
    pub late_ages: Vec<Duration>,
}

/// The resource and scope headers of one shard, each stored once and shared
/// by every span that came under it.
#[derive(Debug, Default)]
struct Interner {
    slots: Vec<Option<HeaderSlot>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    bytes: usize,
}

#[derive(Debug)]
struct HeaderSlot {
    header: Arc<GroupHeader>,
    /// The generation of the last batch with a span under this header.
    last_used: u32,
    hash: u64,
}

impl Interner {
    /// The id of `header`, copying it in if it is new, and marked used in
    /// `generation`.
    fn intern(&mut self, header: &GroupHeader, generation: u32) -> u32 {
        let hash = self
            .hasher
            .hash_one((&header.resource[..], &header.scope[..]));
        let slots = &self.slots;
        let found = self.index.find(hash, |&id| {
            slots[id as usize].as_ref().is_some_and(|s| {
                s.header.resource == header.resource && s.header.scope == header.scope
            })
        });
        if let Some(&id) = found {
            if let Some(Some(slot)) = self.slots.get_mut(id as usize) {
                slot.last_used = generation;
            }
            return id;
        }
        // Copied: a handle on the request would keep the whole request alive.
        let header = Arc::new(GroupHeader {
            resource: Bytes::copy_from_slice(&header.resource),
            scope: Bytes::copy_from_slice(&header.scope),
        });
        self.bytes += header.resource.len() + header.scope.len() + HEADER_OVERHEAD;
        let slot = Some(HeaderSlot {
            header,
            last_used: generation,
            hash,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, id, |&id| {
            slots[id as usize].as_ref().map_or(0, |s| s.hash)
        });
        id
    }

    fn get(&self, id: u32) -> Option<&Arc<GroupHeader>> {
        self.slots.get(id as usize)?.as_ref().map(|s| &s.header)
    }

    /// Frees every header last used before generation `before` (all of
    /// them with `None`).
    fn free_unused(&mut self, before: Option<u32>) {
        for id in 0..self.slots.len() {
            let Some(slot) = &self.slots[id] else {
                continue;
            };
            if before.is_some_and(|before| slot.last_used >= before) {
                continue;
            }
            let hash = slot.hash;
            self.bytes -= slot.header.resource.len() + slot.header.scope.len() + HEADER_OVERHEAD;
            let id = id as u32;
            if let Ok(entry) = self.index.find_entry(hash, |&x| x == id) {
                entry.remove();
            }
            self.slots[id as usize] = None;
            self.free.push(id);
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }
}

/// The records of a trace's data buffer.
struct Records<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Records<'a> {
    fn new(data: &'a [u8]) -> Self {
        Records { data, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.data.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Written by `put_record` only; a record that does not read ends the walk.
        let header = u32::try_from(self.varint()?).ok()?;
        let len = usize::try_from(self.varint()?).ok()?;
        let span = self.data.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some((header, span))
    }
}

/// Makes room for `need` more bytes of records: exactly that when the
/// trace is small beside it (a batch's worth, reserved once), else an
/// eighth of the data, so a trace that grows a span at a time still
/// reallocates O(log n) times and its slack stays under 12.5%. Between
/// [`SPARE_MIN`] and [`SPARE_MAX`] bytes the buffer is a class's size,
/// taken from `spares` when one is there.
fn reserve(data: &mut Vec<u8>, need: usize, spares: &mut Spares) {
    if data.capacity() - data.len() >= need {
        return;
    }
    let want = data.len() + need.max(data.len() / 8);
    let Some(class) = Spares::class_of(want) else {
        data.reserve_exact(want - data.len());
        return;
    };
    let mut grown = spares.take(class);
    grown.extend_from_slice(data);
    spares.put(std::mem::replace(data, grown));
}

/// Smallest buffer kept in [`Spares`]. Not 1 KiB, although glibc serves
/// allocations up to 1,032 bytes from a per-thread cache: a trace's first
/// batch is mostly under 1 KiB, and those buffers missed that cache (it
/// holds seven of each size) and were reallocated at the trace's next
/// batch; classes from 256 B made the sampler 4 % cheaper per span at 100k
/// spans/s (BENCHMARKS.md, seventh pass) for 2 B more per trace.
const SPARE_MIN: usize = 256;
/// Largest: a trace of a few hundred spans; longer ones are rare and
/// allocated exactly.
const SPARE_MAX: usize = 64 * 1024;
/// What glibc adds to an allocation (its chunks are the request plus a
/// size word, in 16-byte steps): a class holds its round size less this,
/// so its chunk is exactly the round size.
const CHUNK_HEADER: usize = size_of::<usize>();
/// Classes per doubling: a class is at most 12.5% over what it holds.
const CLASS_STEPS: usize = 8;
/// Classes from just over [`SPARE_MIN`] to [`SPARE_MAX`].
const CLASSES: usize = CLASS_STEPS * (SPARE_MAX / SPARE_MIN).trailing_zeros() as usize;
/// Bytes of spare buffers a shard keeps, at least: more than a round's worth
/// of decided traces at 100k spans/s (a round every 50 ms decides ~300
/// traces of ~2 KiB per shard), 10 B per trace of a 100,000-trace buffer.
const SPARES_BYTES: usize = 1024 * 1024;
/// Or, if more, one part in this many of the span data buffered
/// ([`Spares::follow`]).
const SPARES_SHARE: usize = 8;

/// Spare trace buffers of 256 B to 64 KiB, by size class, for the next traces
/// to grow into.
///
/// Why not the allocator alone: glibc serves buffers over 1 KiB, and
/// smaller ones past the seven of a size its per-thread cache holds, from
/// its bins (a search, splits, consolidation), and a trace growing piece by
/// piece reallocates; in issue 19's profile, malloc, realloc and free of
/// trace buffers were a tenth of a sampler's CPU at 100k spans/s. Here a
/// decided trace's buffer goes back to its class ([`TraceBuffer::recycle`])
/// and a growing trace takes one: a pop instead of a malloc, into memory
/// the decision just read (warm in cache). jemalloc and mimalloc were
/// measured in glibc's place and not kept (BENCHMARKS.md): more memory per
/// trace, or slower. Bounded ([`Spares::follow`]); past the bound,
/// buffers are freed.
#[derive(Debug)]
struct Spares {
    free: [Vec<Vec<u8>>; CLASSES],
    bytes: usize,
    /// Past this many bytes, buffers are freed ([`Spares::follow`]).
    limit: usize,
}

impl Default for Spares {
    fn default() -> Self {
        Spares {
            free: std::array::from_fn(|_| Vec::new()),
            bytes: 0,
            limit: SPARES_BYTES,
        }
    }
}

impl Spares {
    /// Keeps at most [`SPARES_BYTES`] or an eighth of `data_bytes` (the
    /// span data buffered), whichever is more; what is kept past a lower
    /// limit goes as buffers are taken.
    ///
    /// A fixed 1 MiB was too little at 100k spans/s: a decided trace's
    /// buffer is of the class of the whole trace and a new trace's of its
    /// first piece, so the spares filled up with the larger classes while
    /// the smaller ones were allocated and freed by glibc (`free` from
    /// `Shard::finish` alone was 4 % of a sampler). Up to an eighth of the
    /// data buffered (the bound of growth slack, and about 3 MiB a shard
    /// at 100k spans/s) was 3–12 % cheaper per span in pairs, 8 % in the
    /// issue's figure (BENCHMARKS.md, eleventh pass). Memory freed to glibc
    /// stays in the process either way, in its bins, unless it is at the
    /// top of the heap.
    fn follow(&mut self, data_bytes: usize) {
        self.limit = SPARES_BYTES.max(data_bytes / SPARES_SHARE);
    }

    /// The class of a buffer for `len` bytes, if it is one kept here.
    fn class_of(len: usize) -> Option<usize> {
        if len <= SPARE_MIN || len > Self::size(CLASSES - 1) {
            return None;
        }
        // In chunk sizes: the power of two below (exclusive), and steps of
        // an eighth of it above that.
        let len = len + CHUNK_HEADER;
        let bits = usize::BITS - 1 - (len - 1).leading_zeros();
        let base = 1usize << bits;
        let step = base / CLASS_STEPS;
        let k = (len - base).div_ceil(step); // 1..=CLASS_STEPS
        let doublings = (base / SPARE_MIN).trailing_zeros() as usize;
        Some(doublings * CLASS_STEPS + k - 1)
    }

    /// A class's buffer size: what a glibc chunk of a round size holds.
    fn size(class: usize) -> usize {
        let base = SPARE_MIN << (class / CLASS_STEPS);
        base + (class % CLASS_STEPS + 1) * (base / CLASS_STEPS) - CHUNK_HEADER
    }

    /// An empty buffer of the class's size: a spare one if there is one.
    fn take(&mut self, class: usize) -> Vec<u8> {
        match self.free[class].pop() {
            Some(buf) => {
                self.bytes -= buf.capacity();
                buf
            }
            None => Vec::with_capacity(Self::size(class)),
        }
    }

    /// Keeps `buf` for reuse if it is a class's size and there is room;
    /// else frees it.
    fn put(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        let Some(class) = Self::class_of(cap) else {
            return;
        };
        if Self::size(class) != cap || self.bytes + cap > self.limit {
            return;
        }
        buf.clear();
        self.bytes += cap;
        self.free[class].push(buf);
    }
}

/// Appends a record (room made by [`reserve`]; a missing reservation only
/// costs a reallocation).
fn put_record(data: &mut Vec<u8>, header: u32, span: &[u8]) {
    put_varint(data, u64::from(header));
    put_varint(data, span.len() as u64);
    data.extend_from_slice(span);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The traces of one shard, their deadlines, and its decision cache.
#[derive(Debug)]
pub struct TraceBuffer {
    settings: BufferSettings,
    /// Slots of `slab`, found by trace ID.
    traces: HashTable<u32>,
    slab: Slab,
    hasher: DefaultHashBuilder,
    deadlines: Deadlines,
    headers: Interner,
    cache: DecisionCache,
    spans: usize,
    /// Sum of the traces' data buffer capacities.
    data_bytes: usize,
    /// Per insert: the batch's group index → interned header id.
    scratch: Vec<u32>,
    /// Per insert: each span's trace, as a slot of `slab` (or [`LATE`]).
    slot_scratch: Vec<u32>,
    /// The latest `now` given to [`TraceBuffer::insert`] or
    /// [`TraceBuffer::expire`] (nanoseconds): when a decision is recorded.
    clock: u64,
    /// Buffers of decided traces, for new ones to grow into.
    spares: Spares,
    /// The generations traces start in, for freeing headers.
    generations: Generations,
    /// Traces handed out by [`TraceBuffer::expire_into`] and not given
    /// back: no header is freed while there are any.
    lent: usize,
}

/// How long a generation lasts ([`Generations`]), nanoseconds.
const GENERATION: u64 = 1_000_000_000;

/// Which interned headers no buffered trace names any more, known without
/// counting references span by span (which cost a walk over every decided
/// trace's records, cold by then: about 4 % of a sampler at 100k spans/s,
/// BENCHMARKS.md, ninth and tenth passes).
///
/// Time is cut into generations of a second. A trace notes the generation
/// it started in, and a header the generation of the last batch that had a
/// span under it. A buffered trace started in generation `g` got each of
/// its spans in a batch of generation `g` or later, so every header it
/// names was last used in `g` or later: a header last used before the
/// oldest generation that still has a buffered trace is named by none of
/// them, and is freed. Traces outside the buffer hold their headers
/// themselves (shared handles), except lent ones, which hold ids and stop
/// any freeing until they are back.
#[derive(Debug)]
struct Generations {
    /// Buffered traces started in each generation, oldest first; never
    /// empty (the last is the current generation), at most `u16::MAX`
    /// long, so a trace's low 16 bits name its generation.
    live: VecDeque<u32>,
    /// The generation of `live[0]`.
    oldest: u32,
    /// When the current generation started (nanoseconds).
    started: u64,
    /// `oldest` when headers were last freed: nothing more to free until
    /// it moves.
    swept: Option<u32>,
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            live: VecDeque::from([0]),
            oldest: 0,
            started: 0,
            swept: None,
        }
    }
}

impl Generations {
    fn current(&self) -> u32 {
        self.oldest + (self.live.len() as u32 - 1)
    }

    /// Starts a new generation if the current one is a second old. With
    /// `u16::MAX` generations holding traces (a trace held for 18 hours),
    /// the current one goes on: headers are then freed later, not wrongly.
    fn advance(&mut self, now: u64) {
        if now >= self.started.saturating_add(GENERATION) && self.live.len() < u16::MAX as usize {
            self.live.push_back(0);
            self.started = now;
            self.trim();
        }
    }

    /// A trace starts: its generation's low bits.
    fn start(&mut self) -> u16 {
        if let Some(n) = self.live.back_mut() {
            *n += 1;
        }
        self.current() as u16
    }

    /// A trace started in `generation` leaves the buffer.
    fn end(&mut self, generation: u16) {
        let at = usize::from(generation.wrapping_sub(self.oldest as u16));
        debug_assert!(
            at < self.live.len() && self.live[at] > 0,
            "a live trace's generation"
        );
        if let Some(n) = self.live.get_mut(at) {
            *n = n.saturating_sub(1);
        }
        self.trim();
    }

    /// Drops the oldest generations while they hold no trace.
    fn trim(&mut self) {
        while self.live.len() > 1 && self.live[0] == 0 {
            self.live.pop_front();
            self.oldest += 1;
        }
    }
}

const NO_HEADER: u32 = u32::MAX;
/// A span of an already decided trace, in `slot_scratch`.
const LATE: u32 = u32::MAX;

impl TraceBuffer {
    pub fn new(settings: BufferSettings) -> Self {
        TraceBuffer {
            cache: DecisionCache::new(settings.sampled_cache, settings.not_sampled_cache),
            settings,
            traces: HashTable::new(),
            slab: Slab::default(),
            hasher: DefaultHashBuilder::default(),
            deadlines: Deadlines::default(),
            headers: Interner::default(),
            clock: 0,
            spans: 0,
            data_bytes: 0,
            scratch: Vec::new(),
            slot_scratch: Vec::new(),
            spares: Spares::default(),
            generations: Generations::default(),
            lent: 0,
        }
    }

    pub fn settings(&self) -> &BufferSettings {
        &self.settings
    }

    /// New timing applies to traces started from now on; buffered traces
    /// keep their deadlines. New limits apply at the next `expire`.
    pub fn set_settings(&mut self, settings: BufferSettings) {
        self.cache
            .resize(settings.sampled_cache, settings.not_sampled_cache);
        self.settings = settings;
    }

    /// Traces buffered.
    pub fn traces(&self) -> usize {
        self.traces.len()
    }

    /// Spans buffered.
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// Memory held for buffered traces: their span data (as allocated), a
    /// fixed estimate per trace, and the interned headers.
    pub fn held_bytes(&self) -> usize {
        self.data_bytes + self.traces.len() * TRACE_OVERHEAD + self.headers.bytes
    }

    /// Bytes allocated for span data (records), growth slack included.
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// Bytes of decided traces' buffers kept for reuse: at most 1 MiB per
    /// shard or an eighth of its span data, whichever is more. Not in
    /// [`TraceBuffer::held_bytes`]: they are memory the next traces take
    /// before any new allocation, not traces to make room for.
    pub fn spare_bytes(&self) -> usize {
        self.spares.bytes
    }

    /// Gives a decided trace's buffer back, for a later trace to grow into
    /// (dropping a [`TakenTrace`] instead frees it).
    pub fn recycle(&mut self, mut trace: TakenTrace) {
        if trace.lent {
            trace.lent = false;
            self.lent -= 1;
        }
        self.spares.put(std::mem::take(&mut trace.data));
    }

    /// Gives a trace lent by [`TraceBuffer::expire_into`] the headers its
    /// records name, before its spans are read (nothing for any other).
    pub fn resolve(&mut self, trace: &mut TakenTrace) {
        if !trace.lent {
            return;
        }
        // The records are cold by now (buffered for the decision wait), and
        // the walk below reads each record's header at an offset the one
        // before gives, so each cache miss waits for the last. One read per
        // cache line first, none depending on another, lets the misses
        // overlap.
        let mut touch = 0u8;
        for byte in trace.data.iter().step_by(64) {
            touch ^= *byte;
        }
        std::hint::black_box(touch);
        for (header, _) in Records::new(&trace.data) {
            if trace.headers.iter().any(|(h, _)| *h == header) {
                continue;
            }
            if let Some(h) = self.headers.get(header) {
                trace.headers.push((header, h.clone()));
            }
        }
        trace.lent = false;
        self.lent -= 1;
    }

    /// Frees the headers no buffered trace names (see [`Generations`]),
    /// unless a lent trace is out.
    fn sweep_headers(&mut self) {
        if self.lent > 0 || self.headers.len() == 0 {
            return;
        }
        if self.traces.is_empty() {
            self.headers.free_unused(None);
            return;
        }
        let oldest = self.generations.oldest;
        if self.generations.swept != Some(oldest) {
            self.headers.free_unused(Some(oldest));
            self.generations.swept = Some(oldest);
        }
    }

    /// Distinct resource/scope headers held.
    pub fn headers(&self) -> usize {
        self.headers.len()
    }

    /// Adds a batch's spans to their traces; a trace's clock starts at its
    /// first span, `now`.
    pub fn insert(&mut self, batch: &IngestBatch, now: Duration) -> InsertReport {
        self.insert_inner(batch, now, None)
    }

    /// Adds spans handed over by another node, whose trace was first seen
    /// at `first_seen` (on this buffer's clock): a trace started here gets
    /// that first-seen time, and one already here keeps the earlier of the
    /// two, so the decision wait does not restart on a move.
    pub fn insert_with_first_seen(
        &mut self,
        batch: &IngestBatch,
        first_seen: Duration,
        now: Duration,
    ) -> InsertReport {
        self.insert_inner(batch, now, Some(first_seen.min(now)))
    }

    fn insert_inner(
        &mut self,
        batch: &IngestBatch,
        now: Duration,
        first_seen: Option<Duration>,
    ) -> InsertReport {
        let now = nanos(now);
        let first_seen = first_seen.map_or(now, nanos);
        let mut report = InsertReport::default();
        let TraceBuffer {
            settings,
            traces,
            slab,
            hasher,
            deadlines,
            headers,
            cache,
            spans,
            data_bytes,
            scratch,
            slot_scratch: slots,
            clock,
            spares,
            generations,
            lent: _,
        } = self;
        *clock = now;
        generations.advance(now);
        spares.follow(*data_bytes);
        let generation = generations.current();
        let wait = nanos(settings.decision_wait);
        scratch.clear();
        scratch.resize(batch.groups(), NO_HEADER);
        // Pass 1: find or start each span's trace and add up what the batch
        // brings each one, so that pass 2 grows a trace's data once per
        // batch (not once per span: a realloc copies the whole trace).
        traces.reserve(batch.spans.len(), |&t| hasher.hash_one(slab.at(t).id));
        slots.clear();
        // A trace's spans mostly come side by side (an SDK batches a
        // service's spans of a trace together; the loadtest gen sends a
        // trace in up to three pieces): a span of the same trace as the
        // one before it skips the table, whose lookup misses the cache.
        let mut last: Option<(TraceId, u32)> = None;
        for (i, span) in batch.spans.iter().enumerate() {
            let id = span.trace_id;
            let slot = if let Some((last_id, slot)) = last
                && last_id == id
            {
                slot
            } else {
                match traces.entry(
                    hasher.hash_one(id),
                    |&t| slab.at(t).id == id,
                    |&t| hasher.hash_one(slab.at(t).id),
                ) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(e) => {
                        match cache.get_with_time(&id) {
                            Some((CachedDecision::Sampled(kept), at)) => {
                                report.late_sampled.push((i, kept.clone()));
                                report
                                    .late_ages
                                    .push(Duration::from_nanos(now.saturating_sub(at)));
                                slots.push(LATE);
                                continue;
                            }
                            Some((CachedDecision::NotSampled, at)) => {
                                report.late_not_sampled.push(i);
                                report
                                    .late_ages
                                    .push(Duration::from_nanos(now.saturating_sub(at)));
                                slots.push(LATE);
                                continue;
                            }
                            None => {}
                        }
                        let deadline = first_seen.saturating_add(wait);
                        report.new_traces += 1;
                        let slot = slab.insert(Trace {
                            id,
                            first_seen,
                            deadline,
                            summary: TraceSummary::new(),
                            data: Vec::new(),
                            pending: 0,
                            due: Due::Wait,
                            generation: generations.start(),
                        });
                        deadlines.push(deadline, slot);
                        e.insert(slot);
                        slot
                    }
                }
            };
            last = Some((id, slot));
            slots.push(slot);
            let header = &mut scratch[span.group as usize];
            if *header == NO_HEADER {
                *header = headers.intern(batch.group(span.group), generation);
            }
            let len = span.range.len();
            let need = varint_len(u64::from(*header)) + varint_len(len as u64) + len;
            let Some(trace) = slab.get_mut(slot) else {
                continue;
            };
            trace.pending = trace
                .pending
                .saturating_add(u32::try_from(need).unwrap_or(u32::MAX));
        }
        // Pass 2: copy the spans in.
        for (span, &slot) in batch.spans.iter().zip(slots.iter()) {
            if slot == LATE {
                continue;
            }
            let Some(trace) = slab.get_mut(slot) else {
                continue;
            };
            if first_seen < trace.first_seen {
                // Merging a handed-over part that is older than ours.
                trace.first_seen = first_seen;
                let deadline = first_seen.saturating_add(wait);
                if deadline < trace.deadline {
                    trace.deadline = deadline;
                    trace.due = Due::Wait;
                    deadlines.push(deadline, slot);
                }
            }
            let header = scratch[span.group as usize];
            let before = trace.data.capacity();
            if trace.pending > 0 {
                reserve(&mut trace.data, trace.pending as usize, spares);
                trace.pending = 0;
            }
            put_record(&mut trace.data, header, batch.span_bytes(span));
            *data_bytes += trace.data.capacity() - before;
            let had_root = trace.summary.root_seen();
            trace.summary.merge(&span.summary);
            *spans += 1;
            report.buffered += 1;

            let mut due = None;
            if let Some(after_root) = settings.decision_wait_after_root
                && !had_root
                && span.summary.root_seen()
            {
                due = Some((now.saturating_add(nanos(after_root)), Due::RootWait));
            }
            if !trace.due.is_cap() {
                if settings
                    .max_trace_size
                    .is_some_and(|max| trace.summary.bytes() > max)
                {
                    due = Some((now, Due::TooLarge));
                } else if trace.summary.span_count() >= settings.max_spans_per_trace {
                    due = Some((now, Due::SpanCap));
                } else if trace.summary.bytes() >= settings.max_bytes_per_trace {
                    due = Some((now, Due::ByteCap));
                }
            }
            if let Some((deadline, why)) = due
                && deadline < trace.deadline
            {
                trace.deadline = deadline;
                trace.due = why;
                deadlines.push(deadline, slot);
            }
        }
        report
    }

    /// Takes out every trace due at `now`, then, while the buffer is past
    /// `max_traces` or `max_bytes`, the traces with the nearest deadlines
    /// (the oldest, as deadlines follow first-seen times). Returns them with
    /// the time of the next deadline, if any (it may be a stale one: waking
    /// early is harmless).
    pub fn expire(&mut self, now: Duration) -> (Vec<TakenTrace>, Option<Duration>) {
        let mut ready = Vec::new();
        let next = self.expire_into(now, &mut ready);
        for trace in &mut ready {
            self.resolve(trace);
        }
        self.sweep_headers();
        (ready, next)
    }

    /// [`expire`](TraceBuffer::expire) into `ready` (appended to), so that
    /// the driver reuses one list across its wake-ups instead of growing a
    /// new one each time (2–3 % of a sampler's CPU, issue 19). The traces
    /// are lent: each must be given back, by [`TraceBuffer::resolve`]
    /// before its spans are read or by [`TraceBuffer::recycle`], and no
    /// header is freed until all are.
    pub fn expire_into(&mut self, now: Duration, ready: &mut Vec<TakenTrace>) -> Option<Duration> {
        self.sweep_headers();
        self.spares.follow(self.data_bytes);
        let now = nanos(now);
        self.clock = self.clock.max(now);
        while let Some((deadline, slot)) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(trace) = self.remove_if(slot, |t| t.deadline == deadline) {
                let due = trace.due;
                ready.push(self.take(trace, due, true));
            }
        }
        loop {
            let due = if self.traces.len() > self.settings.max_traces {
                Due::MaxTraces
            } else if self.held_bytes() > self.settings.max_bytes {
                Due::MaxBytes
            } else {
                break;
            };
            // Every buffered trace has an entry for its current deadline.
            let Some((deadline, slot)) = self.deadlines.pop() else {
                break;
            };
            if let Some(trace) = self.remove_if(slot, |t| t.deadline == deadline) {
                ready.push(self.take(trace, due, true));
            }
        }
        self.compact_deadlines();
        self.deadlines.peek().map(|(d, _)| Duration::from_nanos(d))
    }

    /// Takes out every trace (at shutdown), due as [`Due::Shutdown`].
    pub fn drain(&mut self) -> Vec<TakenTrace> {
        let slots: Vec<u32> = self.traces.drain().collect();
        self.deadlines.clear();
        let out = self.take_slots(slots, Due::Shutdown);
        self.sweep_headers();
        out
    }

    /// Takes out, undecided, every trace whose ID satisfies `pred` (to hand
    /// them over to another node); each keeps its first-seen time.
    pub fn take_where(&mut self, mut pred: impl FnMut(&TraceId) -> bool) -> Vec<TakenTrace> {
        let slab = &self.slab;
        let slots: Vec<u32> = self
            .traces
            .extract_if(|&mut t| pred(&slab.at(t).id))
            .collect();
        let out = self.take_slots(slots, Due::Taken);
        self.compact_deadlines();
        self.sweep_headers();
        out
    }

    /// Takes out, undecided, one trace if it is buffered (a decision for it
    /// arrived from the node that decided it).
    pub fn take_trace(&mut self, id: &TraceId) -> Option<TakenTrace> {
        let slot = self.slot_of(id)?;
        let trace = self.remove_if(slot, |_| true)?;
        let taken = self.take(trace, Due::Taken, false);
        self.compact_deadlines();
        Some(taken)
    }

    /// Postpones a buffered trace's decision to `until` at the earliest
    /// (spans of it were refused and their retry is awaited). A trace at
    /// its span or byte cap is not held. Returns whether the trace is
    /// buffered and now waits longer.
    pub fn hold(&mut self, id: &TraceId, until: Duration) -> bool {
        let until = nanos(until);
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        let Some(trace) = self.slab.get_mut(slot) else {
            return false;
        };
        if trace.due.is_cap() || trace.deadline >= until {
            return false;
        }
        trace.deadline = until;
        trace.due = Due::Wait;
        self.deadlines.push(until, slot);
        true
    }

    /// Whether a trace is buffered (undecided) here.
    pub fn holds(&self, id: &TraceId) -> bool {
        self.slot_of(id).is_some()
    }

    /// The remembered decisions whose trace ID satisfies `pred` (copies;
    /// they stay remembered here too).
    pub fn decisions_where(
        &self,
        mut pred: impl FnMut(&TraceId) -> bool,
    ) -> Vec<(TraceId, CachedDecision)> {
        self.cache
            .iter()
            .filter(|(id, _)| pred(id))
            .map(|(id, d)| (*id, d.clone()))
            .collect()
    }

    /// Remembers a decision, so later spans of the trace follow it.
    pub fn record_decision(&mut self, id: TraceId, decision: CachedDecision) {
        self.cache.insert_at(id, decision, self.clock);
    }

    /// [`TraceBuffer::record_decision`] for each of `decisions`, in order,
    /// emptying it; cheaper than one by one for a round's decisions (their
    /// lookups overlap: [`DecisionCache::insert_all_at`]).
    pub fn record_decisions(&mut self, decisions: &mut Vec<(TraceId, CachedDecision)>) {
        self.cache.insert_all_at(decisions, self.clock);
    }

    /// Calls `f` with a buffered trace's summary and spans (grouped as
    /// [`TakenTrace::span_refs`] groups them), leaving it buffered.
    pub fn peek<R>(
        &self,
        id: &TraceId,
        f: impl FnOnce(&TraceSummary, &[SpanRef<'_>]) -> R,
    ) -> Option<R> {
        let trace = self.slab.at(self.slot_of(id)?);
        let spans = usize::try_from(trace.summary.span_count()).unwrap_or(0);
        let refs = grouped_refs(&trace.data, spans, |header| {
            self.headers.get(header).map(|group| &**group)
        });
        Some(f(&trace.summary, &refs))
    }

    /// The remembered decision for a trace, if any.
    pub fn cached_decision(&self, id: &TraceId) -> Option<&CachedDecision> {
        self.cache.peek(id)
    }

    /// Decisions remembered.
    pub fn cached_decisions(&self) -> usize {
        self.cache.len()
    }

    /// The slab slot of a buffered trace.
    fn slot_of(&self, id: &TraceId) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.traces
            .find(hash, |&t| self.slab.at(t).id == *id)
            .copied()
    }

    /// Takes the traces in `slots`, already out of the map, out of the
    /// slab, due as `due`.
    fn take_slots(&mut self, slots: Vec<u32>, due: Due) -> Vec<TakenTrace> {
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if let Some(trace) = self.slab.remove(slot) {
                out.push(self.take(trace, due, false));
            }
        }
        out
    }

    /// Takes the trace in `slot` out of the map and the slab, if there is
    /// one and `keep` says so.
    fn remove_if(&mut self, slot: u32, keep: impl Fn(&Trace) -> bool) -> Option<Trace> {
        let trace = self.slab.get(slot)?;
        if !keep(trace) {
            return None;
        }
        let hash = self.hasher.hash_one(trace.id);
        let entry = self.traces.find_entry(hash, |&t| t == slot).ok()?;
        entry.remove();
        self.slab.remove(slot)
    }

    /// Takes a removed trace's accounting out of the buffer and hands the
    /// trace out: lent (its headers left to [`TraceBuffer::resolve`], as
    /// most decided traces are dropped unread) or with its headers.
    fn take(&mut self, trace: Trace, due: Due, lend: bool) -> TakenTrace {
        let Trace {
            id,
            first_seen,
            summary,
            data,
            generation,
            ..
        } = trace;
        self.spans -= usize::try_from(summary.span_count()).unwrap_or(0);
        self.data_bytes -= data.capacity();
        self.generations.end(generation);
        self.lent += 1;
        let mut taken = TakenTrace {
            id,
            first_seen: Duration::from_nanos(first_seen),
            summary,
            due,
            data,
            headers: Vec::new(),
            lent: true,
        };
        if !lend {
            self.resolve(&mut taken);
        }
        taken
    }

    /// Drops stale deadline entries once they outnumber the live ones, so
    /// the heap stays O(traces) however traces leave.
    fn compact_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.traces.len() + 1024 {
            return;
        }
        let slab = &self.slab;
        self.deadlines
            .rebuild(self.traces.iter().map(|&t| (slab.at(t).deadline, t)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{SpanSpec, request, span_ids, trace_id};
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn settings() -> BufferSettings {
        BufferSettings {
            decision_wait: 10 * S,
            decision_wait_after_root: Some(2 * S),
            ..BufferSettings::default()
        }
    }

    fn batch(specs: &[SpanSpec]) -> IngestBatch {
        IngestBatch::parse(request(specs)).unwrap()
    }

    fn ids(ready: &[TakenTrace]) -> Vec<u8> {
        let mut v: Vec<u8> = ready.iter().map(|t| t.id.0[15]).collect();
        v.sort_unstable();
        v
    }

    /// Encoded bytes of a batch's spans.
    fn encoded(b: &IngestBatch) -> usize {
        b.spans.iter().map(|s| s.range.len()).sum()
    }

    /// The buffer's span data is `records` bytes and less than an eighth more.
    fn assert_slack_under_an_eighth(buf: &TraceBuffer, records: usize) {
        assert!(buf.data_bytes() >= records);
        assert!(
            buf.data_bytes() as f64 <= 1.125 * records as f64,
            "{} for {records}",
            buf.data_bytes()
        );
    }

    #[test]
    fn span_data_costs_its_encoded_size_plus_a_record_header_and_bounded_slack() {
        // As agents batch: 50 traces of `2 * per` spans of `pad` bytes of
        // attributes, `per` of each per request. Returns the buffer and the
        // spans' encoded bytes.
        let batched = |per: u8, pad: usize| {
            let mut buf = TraceBuffer::new(settings());
            let mut bytes = 0;
            for half in 0..2u8 {
                let specs: Vec<SpanSpec> = (0..50u8)
                    .flat_map(|t| {
                        (0..per).map(move |s| SpanSpec::new(t, half * per + s).padded(pad))
                    })
                    .collect();
                let b = batch(&specs);
                bytes += encoded(&b);
                buf.insert(&b, Duration::ZERO);
            }
            (buf, bytes)
        };
        let (buf, bytes) = batched(5, 300);
        // One reservation per trace per batch, of a class's size (traces of
        // ~3 KiB): the records, whose headers are 3 bytes (header id, and a
        // 2-byte length), and under an eighth more.
        let records = bytes + 500 * 3;
        assert_slack_under_an_eighth(&buf, records);
        assert!(buf.data_bytes() as f64 <= 1.1 * bytes as f64 + 32.0 * 500.0);

        // Traces under 256 B that arrive in batches: exactly the records.
        let (buf, bytes) = batched(1, 10);
        // (Spans under 128 bytes: a record's header is 2 bytes.)
        assert!(bytes / 50 + 2 * 2 < SPARE_MIN, "{} per trace", bytes / 50);
        assert_eq!(buf.data_bytes(), bytes + 100 * 2);

        // A span at a time: slack stays under an eighth.
        let mut buf = TraceBuffer::new(settings());
        let mut bytes = 0;
        for s in 0..200u8 {
            let b = batch(&[SpanSpec::new(1, s).padded(300)]);
            bytes += encoded(&b);
            buf.insert(&b, Duration::ZERO);
        }
        let records = bytes + 200 * 3;
        assert_slack_under_an_eighth(&buf, records);
    }

    #[test]
    fn size_classes_hold_what_they_are_for_with_under_an_eighth_more() {
        let largest = SPARE_MAX - CHUNK_HEADER;
        assert_eq!(Spares::size(CLASSES - 1), largest);
        assert_eq!(Spares::class_of(SPARE_MIN), None);
        assert_eq!(Spares::class_of(largest + 1), None);
        assert_eq!(Spares::class_of(SPARE_MIN + 1), Some(0));
        assert_eq!(Spares::class_of(largest), Some(CLASSES - 1));
        let mut last = 0;
        for len in SPARE_MIN + 1..=largest {
            let class = Spares::class_of(len).expect("kept");
            let size = Spares::size(class);
            assert!(size >= len && size * 8 < len * 9, "{len} in {size}");
            assert_eq!((size + CHUNK_HEADER) % 16, 0, "a whole glibc chunk");
            assert!(class == last || class == last + 1 || len == SPARE_MIN + 1);
            assert_eq!(Spares::class_of(size), Some(class), "{size}");
            last = class;
        }
    }

    #[test]
    fn spares_keep_up_to_an_eighth_of_the_span_data_buffered() {
        let mut buf = TraceBuffer::new(settings());
        // Trace `t`: 8 spans of ~5 KB, one buffer of a class (~40 KiB).
        let trace = |t: u32| {
            let mut id = [1u8; 16];
            id[..4].copy_from_slice(&t.to_be_bytes());
            let specs: Vec<SpanSpec> = (0..8u8)
                .map(|s| SpanSpec::new(0, s).with_trace_id(TraceId(id)).padded(5000))
                .collect();
            batch(&specs)
        };
        for t in 0..320 {
            buf.insert(&trace(t), Duration::ZERO);
        }
        let data = buf.data_bytes();
        assert!(data / SPARES_SHARE > SPARES_BYTES + SPARE_MAX, "{data}");
        let (ready, _) = buf.expire(Duration::from_secs(3600));
        assert_eq!(ready.len(), 320);
        for taken in ready {
            buf.recycle(taken);
        }
        // More than the 1 MiB floor, and at most an eighth of what was
        // buffered when the round began.
        let spare = buf.spare_bytes();
        assert!(
            spare > SPARES_BYTES && spare <= data / SPARES_SHARE,
            "{spare}"
        );

        // With little buffered, the limit is the floor again: a trace's
        // buffer taken from the spares and given back is freed, not kept.
        buf.insert(&trace(1000), Duration::from_secs(7200));
        let taken = spare - buf.spare_bytes();
        assert!(taken > 0, "the new trace's buffer is a spare");
        let (ready, _) = buf.expire(Duration::from_secs(3 * 3600));
        for taken in ready {
            buf.recycle(taken);
        }
        assert_eq!(buf.spare_bytes(), spare - taken);
    }

    #[test]
    fn a_decided_traces_buffer_is_reused_by_the_next_trace_of_its_class() {
        let mut buf = TraceBuffer::new(settings());
        // A trace of ~3 KiB in two parts: its buffer is a class's size.
        let part = |t: u8, half: u8| {
            let specs: Vec<SpanSpec> = (0..5u8)
                .map(|s| SpanSpec::new(t, half * 5 + s).padded(300))
                .collect();
            batch(&specs)
        };
        buf.insert(&part(1, 0), Duration::ZERO);
        buf.insert(&part(1, 1), Duration::ZERO);
        let (mut ready, _) = buf.expire(Duration::from_secs(3600));
        let first = ready.pop().expect("due");
        let (ptr, cap) = (first.data.as_ptr(), first.data.capacity());
        assert_eq!(Spares::class_of(cap).map(Spares::size), Some(cap));
        // Its first part's buffer, outgrown by the second, is a spare.
        let outgrown = buf.spare_bytes();
        assert!(outgrown > SPARE_MIN && outgrown < cap, "{outgrown}");
        buf.recycle(first);
        assert_eq!(buf.spare_bytes(), outgrown + cap);
        // The next trace of that size starts in the outgrown buffer and
        // grows into the decided trace's.
        buf.insert(&part(2, 0), Duration::from_secs(3600));
        assert_eq!(buf.spare_bytes(), cap);
        buf.insert(&part(2, 1), Duration::from_secs(3600));
        assert_eq!(buf.spare_bytes(), outgrown);
        let (mut ready, _) = buf.expire(Duration::from_secs(7200));
        let second = ready.pop().expect("due");
        assert_eq!(second.data.as_ptr(), ptr, "the same allocation");
        assert_eq!(second.span_count(), 10);
        assert_eq!(second.span_refs().len(), 10);
        // Spares are bounded: past SPARES_BYTES, buffers are freed.
        let mut spares = Spares::default();
        let size = Spares::size(CLASSES - 1);
        for _ in 0..SPARES_BYTES / size + 5 {
            spares.put(Vec::with_capacity(size));
        }
        assert!(spares.bytes <= SPARES_BYTES && spares.bytes + size > SPARES_BYTES);
        // A buffer not of a class's size is not kept.
        let mut spares = Spares::default();
        spares.put(Vec::with_capacity(SPARE_MIN + 3));
        assert_eq!(spares.bytes, 0);
    }

    #[test]
    fn a_trace_is_due_decision_wait_after_its_first_span() {
        let mut buf = TraceBuffer::new(settings());
        buf.insert(&batch(&[SpanSpec::new(1, 1)]), Duration::ZERO);
        buf.insert(&batch(&[SpanSpec::new(1, 2)]), 9 * S);
        let (ready, next) = buf.expire(9 * S);
        assert!(ready.is_empty());
        assert_eq!(next, Some(10 * S));
        let (ready, next) = buf.expire(10 * S);
        assert_eq!(ids(&ready), [1]);
        assert_eq!(ready[0].due, Due::Wait);
        assert_eq!(ready[0].span_count(), 2);
        assert_eq!(next, None);
        assert_eq!((buf.traces(), buf.spans()), (0, 0));
    }

    #[test]
    fn the_root_span_brings_the_decision_forward() {
        let mut buf = TraceBuffer::new(settings());
        buf.insert(&batch(&[SpanSpec::new(1, 1)]), Duration::ZERO);
        buf.insert(&batch(&[SpanSpec::new(1, 0).root()]), 3 * S);
        assert!(buf.expire(4 * S).0.is_empty());
        let (ready, _) = buf.expire(5 * S);
        assert_eq!(ids(&ready), [1]);
        assert_eq!(ready[0].due, Due::RootWait);
    }

    #[test]
    fn a_late_root_does_not_push_the_decision_back() {
        let mut buf = TraceBuffer::new(settings());
        buf.insert(&batch(&[SpanSpec::new(1, 1)]), Duration::ZERO);
        buf.insert(&batch(&[SpanSpec::new(1, 0).root()]), 9 * S);
        let (ready, _) = buf.expire(10 * S);
        assert_eq!(ready[0].due, Due::Wait);
    }

    #[test]
    fn a_trace_at_the_span_cap_is_decided_at_once() {
        let mut buf = TraceBuffer::new(BufferSettings {
            max_spans_per_trace: 3,
            ..settings()
        });
        buf.insert(
            &batch(&[
                SpanSpec::new(1, 1),
                SpanSpec::new(2, 1),
                SpanSpec::new(1, 2),
            ]),
            Duration::ZERO,
        );
        assert!(buf.expire(Duration::ZERO).0.is_empty());
        buf.insert(&batch(&[SpanSpec::new(1, 3)]), S);
        let (ready, _) = buf.expire(S);
        assert_eq!(ids(&ready), [1]);
        assert_eq!(ready[0].due, Due::SpanCap);
        assert_eq!(buf.traces(), 1, "the small trace still waits");
    }

    #[test]
    fn a_trace_at_the_byte_cap_is_decided_at_once() {
        let mut buf = TraceBuffer::new(BufferSettings {
            max_bytes_per_trace: 2000,
            ..settings()
        });
        buf.insert(&batch(&[SpanSpec::new(1, 1).padded(1200)]), Duration::ZERO);
        assert!(buf.expire(Duration::ZERO).0.is_empty());
        buf.insert(&batch(&[SpanSpec::new(1, 2).padded(1200)]), S);
        let (ready, _) = buf.expire(S);
        assert_eq!(ready[0].due, Due::ByteCap);
    }

    #[test]
    fn past_max_traces_the_oldest_are_decided_early() {
        let mut buf = TraceBuffer::new(BufferSettings {
            max_traces: 2,
            ..settings()
        });
        for (n, at) in [(1u8, 0u32), (2, 1), (3, 2), (4, 3)] {
            buf.insert(&batch(&[SpanSpec::new(n, 1)]), at * S);
        }
        let (ready, _) = buf.expire(3 * S);
        assert_eq!(ids(&ready), [1, 2]);
        assert!(ready.iter().all(|t| t.due == Due::MaxTraces));
        assert_eq!(buf.traces(), 2);
    }

    #[test]
    fn past_max_bytes_the_oldest_are_decided_early_and_memory_comes_back() {
        let mut buf = TraceBuffer::new(BufferSettings {
            max_bytes: 6000,
            ..settings()
        });
        for n in 0..8u8 {
            buf.insert(
                &batch(&[SpanSpec::new(n, 1).padded(1000)]),
                u32::from(n) * S / 10,
            );
        }
        let (ready, _) = buf.expire(S);
        assert!(!ready.is_empty());
        assert!(ready.iter().all(|t| t.due == Due::MaxBytes));
        assert!(buf.held_bytes() <= 6000, "{}", buf.held_bytes());
        assert!(ids(&ready).contains(&0), "the oldest goes first");
        let rest = buf.drain();
        assert_eq!(buf.held_bytes(), 0, "every byte is accounted back");
        assert_eq!(ready.len() + rest.len(), 8);
        assert_eq!(buf.headers(), 0);
    }

    #[test]
    fn late_span_follows_cached_decision() {
        let mut buf = TraceBuffer::new(settings());
        buf.insert(
            &batch(&[SpanSpec::new(1, 1), SpanSpec::new(2, 1)]),
            Duration::ZERO,
        );
        let (ready, _) = buf.expire(10 * S);
        assert_eq!(ready.len(), 2);
        buf.record_decision(
            trace_id(1),
            CachedDecision::sampled(Kept {
                policy: Some("p".into()),
                ..Kept::default()
            }),
        );
        buf.record_decision(trace_id(2), CachedDecision::NotSampled);
        let report = buf.insert(
            &batch(&[
                SpanSpec::new(1, 2),
                SpanSpec::new(2, 2),
                SpanSpec::new(3, 1),
            ]),
            11 * S,
        );
        assert_eq!(report.late_sampled.len(), 1);
        assert_eq!(report.late_sampled[0].0, 0);
        assert_eq!(report.late_not_sampled, [1]);
        assert_eq!(report.buffered, 1);
        assert_eq!(buf.traces(), 1, "only trace 3 is buffered");
    }

    #[test]
    fn spans_of_a_trace_side_by_side_or_apart_land_in_it_alike() {
        // A span of the same trace as the one before it skips the trace
        // table; every span must still land in its own trace, in order,
        // and a late trace's spans must each be reported, side by side too.
        let mut buf = TraceBuffer::new(settings());
        let specs = |pairs: &[(u8, u8)]| -> Vec<SpanSpec> {
            pairs.iter().map(|&(t, s)| SpanSpec::new(t, s)).collect()
        };
        let report = buf.insert(
            &batch(&specs(&[(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (3, 2)])),
            Duration::ZERO,
        );
        assert_eq!((report.new_traces, report.buffered), (3, 6));
        buf.record_decision(trace_id(4), CachedDecision::NotSampled);
        let report = buf.insert(
            &batch(&specs(&[(4, 1), (4, 2), (2, 2), (2, 3), (4, 3), (1, 4)])),
            S,
        );
        assert_eq!(report.late_not_sampled, [0, 1, 4]);
        assert_eq!((report.new_traces, report.buffered), (0, 3));
        let (ready, _) = buf.expire(20 * S);
        let mut got: Vec<Vec<(u8, u8)>> = ready.iter().map(|t| span_ids(&t.to_request())).collect();
        got.sort();
        assert_eq!(
            got,
            [
                vec![(1, 1), (1, 2), (1, 3), (1, 4)],
                vec![(2, 1), (2, 2), (2, 3)],
                vec![(3, 1), (3, 2)],
            ]
        );
        assert_eq!(buf.spans(), 0);
    }

    #[test]
    fn a_span_after_the_cache_forgot_its_trace_starts_a_new_trace() {
        let mut buf = TraceBuffer::new(BufferSettings {
            sampled_cache: 1,
            not_sampled_cache: 1,
            ..settings()
        });
        buf.insert(&batch(&[SpanSpec::new(1, 1)]), Duration::ZERO);
        let _ = buf.expire(10 * S);
        buf.record_decision(trace_id(1), CachedDecision::NotSampled);
        buf.record_decision(trace_id(2), CachedDecision::NotSampled);
        let report = buf.insert(&batch(&[SpanSpec::new(1, 2)]), 11 * S);
        assert_eq!((report.new_traces, report.buffered), (1, 1));
        let (ready, _) = buf.expire(21 * S);
        assert_eq!(ready[0].first_seen, 11 * S);
    }

    #[test]
    fn handed_over_spans_keep_their_first_seen_time() {
        let mut buf = TraceBuffer::new(settings());
        buf.insert(&batch(&[SpanSpec::new(1, 1)]), 5 * S);
        // Another node saw the trace first, at 1 s: due at 11 s, not 15 s.
        buf.insert_with_first_seen(&batch(&[SpanSpec::new(1, 2)]), S, 6 * S);
        buf.insert_with_first_seen(&batch(&[SpanSpec::new(2, 1)]), 2 * S, 6 * S);
        let (ready, _) = buf.expire(11 * S);
        assert_eq!(ids(&ready), [1]);
        assert_eq!(ready[0].first_seen, S);
        assert_eq!(ready[0].span_count(), 2);
        let (ready, _) = buf.expire(12 * S);
        assert_eq!(ids(&ready), [2]);
    }

    #[test]
    fn take_where_hands_out_whole_traces_as_requests() {
        let mut buf = TraceBuffer::new(settings());
        buf.insert(
            &batch(&[
                SpanSpec::new(1, 1).service("a"),
                SpanSpec::new(2, 1).service("a"),
                SpanSpec::new(1, 2).service("b"),
            ]),
            Duration::ZERO,
        );
        buf.insert(&batch(&[SpanSpec::new(1, 3).service("a")]), S);
        let taken = buf.take_where(|id| *id == trace_id(1));
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].due, Due::Taken);
        let mut spans = span_ids(&taken[0].to_request());
        // Grouped by resource: a's spans first, then b's.
        assert_eq!(spans, [(1, 1), (1, 3), (1, 2)]);
        spans.sort_unstable();
        assert_eq!(buf.traces(), 1);
        assert_eq!(buf.spans(), 1);
        let (ready, _) = buf.expire(10 * S);
        assert_eq!(ids(&ready), [2]);
    }

    #[test]
    fn one_trace_can_be_taken_out_and_decisions_listed() {
        let mut buf = TraceBuffer::new(settings());
        buf.insert(
            &batch(&[
                SpanSpec::new(1, 1),
                SpanSpec::new(2, 1),
                SpanSpec::new(1, 2),
            ]),
            Duration::ZERO,
        );
        assert!(buf.holds(&trace_id(1)));
        let taken = buf.take_trace(&trace_id(1)).unwrap();
        assert_eq!(taken.span_count(), 2);
        assert!(!buf.holds(&trace_id(1)));
        assert!(buf.take_trace(&trace_id(1)).is_none());
        assert_eq!((buf.traces(), buf.spans()), (1, 1));
        buf.record_decision(trace_id(3), CachedDecision::NotSampled);
        buf.record_decision(trace_id(4), CachedDecision::NotSampled);
        let listed = buf.decisions_where(|id| *id == trace_id(4));
        assert_eq!(listed, [(trace_id(4), CachedDecision::NotSampled)]);
        assert_eq!(buf.cached_decisions(), 2, "listing does not forget");
    }

    #[test]
    fn headers_are_stored_once_per_shard() {
        let mut buf = TraceBuffer::new(settings());
        for n in 0..50u8 {
            buf.insert(
                &batch(&[
                    SpanSpec::new(n, 1).service("a"),
                    SpanSpec::new(n, 2).service("b"),
                ]),
                Duration::ZERO,
            );
        }
        assert_eq!(buf.headers(), 2);
        let _ = buf.expire(10 * S);
        assert_eq!(buf.headers(), 0);
    }

    /// Whether each span of `trace` came under the resource of the service
    /// `services` says it was sent with (by span ID's first byte).
    fn assert_resources(trace: &TakenTrace, services: &std::collections::HashMap<u8, String>) {
        let refs = trace.span_refs();
        assert_eq!(refs.len(), trace.span_count(), "every span has its header");
        for r in refs {
            let span = proto::view::SpanView::parse(r.span, 0).expect("a stored span parses");
            let service = &services[&span.span_id.0[0]];
            assert!(
                r.resource
                    .windows(service.len())
                    .any(|w| w == service.as_bytes()),
                "span {:?} under another resource than {service}",
                span.span_id
            );
        }
    }

    #[test]
    fn a_header_is_freed_once_no_buffered_or_lent_trace_can_name_it() {
        let mut buf = TraceBuffer::new(settings());
        let mut services = std::collections::HashMap::new();
        let mut send = |buf: &mut TraceBuffer, trace: u8, span: u8, service: &str, at: Duration| {
            services.insert(span + 1, service.to_string());
            buf.insert(&batch(&[SpanSpec::new(trace, span).service(service)]), at);
        };
        send(&mut buf, 1, 1, "svc-old", Duration::ZERO);
        send(&mut buf, 2, 2, "svc-new", 2 * S);
        assert_eq!(buf.headers(), 2);
        // Trace 1 is due and lent: while it is out, nothing is freed.
        let mut ready = Vec::new();
        buf.expire_into(10 * S, &mut ready);
        assert_eq!(ids(&ready), [1]);
        buf.expire_into(10 * S, &mut Vec::new());
        assert_eq!(buf.headers(), 2, "a lent trace holds every header");
        // Back unread: "svc-old" was last used before trace 2 began, so no
        // buffered trace can name it; "svc-new" stays for trace 2.
        buf.recycle(ready.pop().expect("trace 1"));
        buf.expire_into(10 * S, &mut ready);
        assert_eq!(buf.headers(), 1);
        // A new header takes the freed id; trace 2, given a span under the
        // old service again, still comes out under the right resources.
        send(&mut buf, 3, 3, "svc-other", 11 * S);
        send(&mut buf, 2, 4, "svc-old", 11 * S);
        assert_eq!(buf.headers(), 3);
        buf.expire_into(12 * S, &mut ready);
        assert_eq!(ids(&ready), [2]);
        let mut trace = ready.pop().expect("trace 2");
        buf.resolve(&mut trace);
        assert_resources(&trace, &services);
        buf.recycle(trace);
        // Resolved traces hold their headers themselves.
        let rest = buf.drain();
        assert_eq!(buf.headers(), 0);
        assert_resources(&rest[0], &services);
    }

    /// One operation of the property test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Spans: trace, root, and which of two services (two headers).
        Insert(Vec<(u8, bool, bool)>),
        Expire,
        Decide,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec((0u8..12, any::<bool>(), prop::bool::weighted(0.2)), 1..8)
                .prop_map(Op::Insert),
            2 => Just(Op::Expire),
            1 => Just(Op::Decide),
        ]
    }

    /// One operation of the timing property test.
    #[derive(Debug, Clone)]
    enum TimedOp {
        Insert(u8, bool),
        Hold(u8, u8),
        Take(u8),
        Expire,
    }

    /// An operation and how long before it (milliseconds).
    /// One operation of the header property test.
    #[derive(Debug, Clone)]
    enum HeaderOp {
        /// A span of a trace under one of four services.
        Insert(u8, u8),
        /// Time passes (ms).
        Advance(u64),
        /// Due traces are lent out.
        Expire,
        /// The oldest lent trace comes back: read first, or not.
        GiveBack(bool),
        /// A trace is taken out with its headers.
        Take(u8),
    }

    fn header_op() -> impl Strategy<Value = HeaderOp> {
        prop_oneof![
            5 => (0u8..8, 0u8..4).prop_map(|(t, s)| HeaderOp::Insert(t, s)),
            3 => (0u64..4000).prop_map(HeaderOp::Advance),
            2 => Just(HeaderOp::Expire),
            2 => any::<bool>().prop_map(HeaderOp::GiveBack),
            1 => (0u8..8).prop_map(HeaderOp::Take),
        ]
    }

    fn timed_op() -> impl Strategy<Value = (u64, TimedOp)> {
        let op = prop_oneof![
            5 => (0u8..10, any::<bool>()).prop_map(|(t, r)| TimedOp::Insert(t, r)),
            1 => (0u8..10, 1u8..20).prop_map(|(t, s)| TimedOp::Hold(t, s)),
            1 => (0u8..10).prop_map(TimedOp::Take),
            3 => Just(TimedOp::Expire),
        ];
        (prop_oneof![0u64..10, 0u64..4000], op)
    }

    proptest! {
        /// Every span inserted is, at any time, in exactly one place:
        /// buffered, in a trace taken out, or reported late.
        #[test]
        fn every_span_is_accounted_for_exactly_once(
            ops in prop::collection::vec(op(), 1..60),
            max_traces in 1usize..8,
            max_spans in 2u64..6,
        ) {
            let mut buf = TraceBuffer::new(BufferSettings {
                max_traces,
                max_spans_per_trace: max_spans,
                sampled_cache: 3,
                not_sampled_cache: 3,
                ..settings()
            });
            let (mut inserted, mut out, mut late) = (0usize, 0usize, 0usize);
            let mut now = Duration::ZERO;
            let mut span_no = 0u8;
            let mut pending: Vec<TakenTrace> = Vec::new();
            for op in ops {
                now += S;
                match op {
                    Op::Insert(spans) => {
                        let specs: Vec<SpanSpec> = spans.iter().map(|(t, root, other)| {
                            span_no = span_no.wrapping_add(1);
                            let s = SpanSpec::new(*t, span_no);
                            let s = if *other { s.service("other") } else { s };
                            if *root { s.root() } else { s }
                        }).collect();
                        let r = buf.insert(&batch(&specs), now);
                        inserted += specs.len();
                        late += r.late_sampled.len() + r.late_not_sampled.len();
                        prop_assert_eq!(r.buffered + r.late_sampled.len() + r.late_not_sampled.len(), specs.len());
                    }
                    Op::Expire => {
                        let (ready, next) = buf.expire(now);
                        if let Some(next) = next { prop_assert!(next > now); }
                        for t in &ready {
                            prop_assert_eq!(t.span_refs().len(), t.span_count());
                            if t.due == Due::Wait { prop_assert!(t.first_seen + 10 * S <= now); }
                        }
                        out += ready.iter().map(TakenTrace::span_count).sum::<usize>();
                        pending.extend(ready);
                        prop_assert!(buf.traces() <= max_traces);
                    }
                    Op::Decide => {
                        for (i, t) in pending.drain(..).enumerate() {
                            let d = if i % 2 == 0 { CachedDecision::NotSampled } else {
                                CachedDecision::sampled(Kept::default())
                            };
                            buf.record_decision(t.id, d);
                        }
                    }
                }
                prop_assert_eq!(inserted, out + late + buf.spans());
            }
            out += buf.drain().iter().map(TakenTrace::span_count).sum::<usize>();
            prop_assert_eq!(inserted, out + late);
            // Every header reference released.
            prop_assert_eq!(buf.headers(), 0);
            prop_assert_eq!(buf.held_bytes(), 0);
        }

        /// Headers are freed by generation, and ids reused, while traces
        /// come and go, are lent and given back: every span a trace hands
        /// out is still under the resource it was sent with.
        #[test]
        fn every_span_comes_out_under_the_resource_it_came_with(
            ops in prop::collection::vec(header_op(), 1..150),
        ) {
            const SERVICES: [&str; 4] = ["svc-a", "svc-b", "svc-c", "svc-d"];
            let mut buf = TraceBuffer::new(settings());
            let mut services = std::collections::HashMap::new();
            let mut lent: VecDeque<TakenTrace> = VecDeque::new();
            let mut now = Duration::ZERO;
            let mut span_no = 0u8;
            for op in ops {
                match op {
                    HeaderOp::Insert(t, s) => {
                        span_no = (span_no + 1) % 200;
                        services.insert(span_no + 1, SERVICES[s as usize].to_string());
                        let spec = SpanSpec::new(t, span_no).service(SERVICES[s as usize]);
                        buf.insert(&batch(&[spec]), now);
                    }
                    HeaderOp::Advance(ms) => now += Duration::from_millis(ms),
                    HeaderOp::Expire => {
                        let mut ready = Vec::new();
                        buf.expire_into(now, &mut ready);
                        lent.extend(ready);
                    }
                    HeaderOp::GiveBack(read) => {
                        if let Some(mut trace) = lent.pop_front() {
                            if read {
                                buf.resolve(&mut trace);
                                assert_resources(&trace, &services);
                            }
                            buf.recycle(trace);
                        }
                    }
                    HeaderOp::Take(t) => {
                        if let Some(trace) = buf.take_trace(&trace_id(t)) {
                            assert_resources(&trace, &services);
                        }
                    }
                }
            }
            for mut trace in lent {
                buf.resolve(&mut trace);
                assert_resources(&trace, &services);
                buf.recycle(trace);
            }
            for trace in buf.drain() {
                assert_resources(&trace, &services);
            }
            prop_assert_eq!(buf.headers(), 0);
        }

        /// Every trace comes out exactly when it is due, not before and not
        /// after, whatever came and went in its slab slot before it: slots
        /// are reused and stale deadline entries name them (issue 19's slab).
        #[test]
        fn every_trace_comes_out_exactly_when_due_through_slot_reuse(
            ops in prop::collection::vec(timed_op(), 1..80),
        ) {
            use std::collections::HashMap;
            let mut buf = TraceBuffer::new(BufferSettings {
                sampled_cache: 0,
                not_sampled_cache: 0,
                ..settings()
            });
            // trace → (deadline, whether a root arrived)
            let mut model: HashMap<u8, (Duration, bool)> = HashMap::new();
            let mut now = Duration::ZERO;
            let mut span_no = 0u8;
            for (step, op) in ops {
                now += Duration::from_millis(step);
                match op {
                    TimedOp::Insert(t, root) => {
                        span_no = span_no.wrapping_add(1);
                        let spec = SpanSpec::new(t, span_no);
                        let spec = if root { spec.root() } else { spec };
                        buf.insert(&batch(&[spec]), now);
                        let (deadline, had_root) = model.entry(t).or_insert((now + 10 * S, false));
                        if root && !*had_root {
                            *deadline = (*deadline).min(now + 2 * S);
                            *had_root = true;
                        }
                    }
                    TimedOp::Hold(t, secs) => {
                        let until = now + Duration::from_secs(secs.into());
                        let held = buf.hold(&trace_id(t), until);
                        match model.get_mut(&t) {
                            Some((deadline, _)) if *deadline < until => {
                                prop_assert!(held);
                                *deadline = until;
                            }
                            _ => prop_assert!(!held),
                        }
                    }
                    TimedOp::Take(t) => {
                        let taken = buf.take_trace(&trace_id(t));
                        prop_assert_eq!(taken.is_some(), model.remove(&t).is_some());
                    }
                    TimedOp::Expire => {
                        let (ready, next) = buf.expire(now);
                        let mut got = ids(&ready);
                        got.dedup();
                        prop_assert_eq!(got.len(), ready.len(), "a trace came out twice");
                        let mut due: Vec<u8> = model
                            .iter()
                            .filter(|(_, (d, _))| *d <= now)
                            .map(|(t, _)| *t)
                            .collect();
                        due.sort_unstable();
                        prop_assert_eq!(&got, &due);
                        for t in &due {
                            model.remove(t);
                        }
                        // The next wake-up is no later than the nearest
                        // deadline (earlier is allowed: a stale entry).
                        prop_assert!(next.is_none_or(|next| next > now));
                        if let Some(nearest) = model.values().map(|(d, _)| *d).min() {
                            prop_assert!(next.is_some_and(|next| next <= nearest));
                        }
                    }
                }
                prop_assert_eq!(buf.traces(), model.len());
            }
        }
    }
}
