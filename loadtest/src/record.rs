//! The sink's record: every span it accepted, in arrival order, as fixed
//! 24-byte entries after an 8-byte magic.
//!
//! ```text
//! "TGREC001"                      8 bytes, once
//! trace ID (16 bytes) span ID (8)  24 bytes, per accepted span
//! ```
//!
//! Binary rather than JSON lines: the sink writes one entry per span at the
//! full rate of the cluster under test (hundreds of thousands a second), and
//! `verify` reads tens of millions. A file whose length is not the magic plus
//! a whole number of entries was cut short (the sink was killed) and is
//! refused.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use proto::view::{SpanId, TraceId};

pub const MAGIC: &[u8; 8] = b"TGREC001";
pub const ENTRY_BYTES: usize = 24;

/// One entry's bytes.
pub fn entry(trace: &TraceId, span: &SpanId) -> [u8; ENTRY_BYTES] {
    let mut out = [0u8; ENTRY_BYTES];
    out[..16].copy_from_slice(&trace.0);
    out[16..].copy_from_slice(&span.0);
    out
}

/// A record that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("record {}: not a tailgate-loadtest sink record (no TGREC001 magic)", path.display())]
    NotARecord { path: PathBuf },
    #[error(
        "record {}: ends inside an entry ({trailing} stray bytes): the sink did not finish writing",
        path.display()
    )]
    Truncated { path: PathBuf, trailing: usize },
}

impl RecordError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> RecordError + '_ {
        move |source| RecordError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes a record file.
pub struct RecordWriter {
    path: PathBuf,
    out: BufWriter<File>,
    entries: u64,
}

impl RecordWriter {
    pub fn create(path: &Path) -> Result<Self, RecordError> {
        let file = File::create(path).map_err(RecordError::io(path))?;
        let mut out = BufWriter::with_capacity(1024 * 1024, file);
        out.write_all(MAGIC).map_err(RecordError::io(path))?;
        Ok(RecordWriter {
            path: path.to_owned(),
            out,
            entries: 0,
        })
    }

    pub fn push(&mut self, trace: &TraceId, span: &SpanId) -> Result<(), RecordError> {
        self.push_entries(&entry(trace, span))
    }

    /// Appends whole entries already laid out as in the file.
    pub fn push_entries(&mut self, entries: &[u8]) -> Result<(), RecordError> {
        debug_assert_eq!(entries.len() % ENTRY_BYTES, 0);
        self.entries += (entries.len() / ENTRY_BYTES) as u64;
        self.out
            .write_all(entries)
            .map_err(RecordError::io(&self.path))
    }

    /// Flushes and returns the number of entries written.
    pub fn finish(mut self) -> Result<u64, RecordError> {
        self.out.flush().map_err(RecordError::io(&self.path))?;
        Ok(self.entries)
    }
}

/// Reads a whole record, calling `f` for each entry in file order.
pub fn read(path: &Path, mut f: impl FnMut(TraceId, SpanId)) -> Result<u64, RecordError> {
    let file = File::open(path).map_err(RecordError::io(path))?;
    let mut input = BufReader::with_capacity(1024 * 1024, file);
    let mut magic = [0u8; 8];
    match input.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => {}
        Ok(()) => return Err(RecordError::NotARecord { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(RecordError::NotARecord { path: path.into() });
        }
        Err(e) => return Err(RecordError::io(path)(e)),
    }
    let mut buf = vec![0u8; 4096 * ENTRY_BYTES];
    let mut filled = 0;
    let mut entries = 0u64;
    loop {
        let n = input
            .read(&mut buf[filled..])
            .map_err(RecordError::io(path))?;
        if n == 0 {
            break;
        }
        filled += n;
        let whole = filled - filled % ENTRY_BYTES;
        for chunk in buf[..whole].chunks_exact(ENTRY_BYTES) {
            let mut trace = [0u8; 16];
            let mut span = [0u8; 8];
            trace.copy_from_slice(&chunk[..16]);
            span.copy_from_slice(&chunk[16..]);
            f(TraceId(trace), SpanId(span));
            entries += 1;
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    if filled != 0 {
        return Err(RecordError::Truncated {
            path: path.into(),
            trailing: filled,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{span_id, trace_id};

    #[test]
    fn a_written_record_reads_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.bin");
        let mut w = RecordWriter::create(&path).expect("create");
        let mut sent = Vec::new();
        for t in 0..50u128 {
            for s in 0..200 {
                let pair = (trace_id(t + 1), span_id(&trace_id(t + 1), s));
                w.push(&pair.0, &pair.1).expect("push");
                sent.push(pair);
            }
        }
        assert_eq!(w.finish().expect("finish"), 10_000);
        let mut back = Vec::new();
        let n = read(&path, |t, s| back.push((t, s))).expect("reads");
        assert_eq!(n, 10_000);
        assert_eq!(back, sent);
    }

    #[test]
    fn a_record_cut_inside_an_entry_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.bin");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1u8; ENTRY_BYTES + 5]);
        std::fs::write(&path, &bytes).expect("write");
        let err = read(&path, |_, _| {}).expect_err("truncated");
        assert!(
            matches!(err, RecordError::Truncated { trailing: 5, .. }),
            "{err}"
        );
        std::fs::write(&path, b"{\"trace\"").expect("write");
        let err = read(&path, |_, _| {}).expect_err("not a record");
        assert!(matches!(err, RecordError::NotARecord { .. }), "{err}");
    }
}
