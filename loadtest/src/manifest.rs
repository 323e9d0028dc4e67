//! The manifest: what `gen` sent, one JSON object per line.
//!
//! ```text
//! {"manifest":"tailgate-loadtest","version":1,"seed":42,"slow_threshold_ms":500}
//! {"trace":"5b8efff798038103d269b633813fc60c","spans":12,"class":"normal","duration_us":41230}
//! {"trace":"0af7651916cd43dd8448eb211c80319c","spans":3,"class":"error","duration_us":8120}
//! {"unsent":"0af7651916cd43dd8448eb211c80319c","spans":2}
//! {"end":{"traces":2,"spans":15,"unsent_spans":2}}
//! ```
//!
//! - The first line names the format and the generator's settings.
//! - One `trace` line per trace: its ID (32 hex digits), its span count, its
//!   class as generated (`error`: one span has status ERROR; `slow`: the
//!   root span lasts longer than the slow threshold; `normal`: neither) and
//!   its duration (root span start to end, microseconds). The span IDs are
//!   not listed: span `i` of the trace has ID [`crate::ids::span_id`]`(trace,
//!   i)`, for `i` in `0..spans`; span 0 is the root.
//! - An `unsent` line for each trace with spans in a request `gen` gave up on
//!   (retries exhausted, refused for good, or cut off at the drain deadline):
//!   those spans never reached the endpoint, so the trace cannot be expected
//!   whole. There may be several per trace; their counts add up.
//! - The last line, `end`, says the manifest is complete: a manifest without
//!   it (a killed run) is refused by `verify`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use proto::view::TraceId;
use serde::{Deserialize, Serialize};

use crate::ids::parse_trace_id;

/// The `manifest` value of the first line.
pub const FORMAT: &str = "tailgate-loadtest";
pub const VERSION: u32 = 1;

/// What kind of trace the generator made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// One span (the last one sent) has status ERROR.
    Error,
    /// The root span lasts longer than the slow threshold.
    Slow,
    /// Neither: well under the slow threshold, no error.
    Normal,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Error, Class::Slow, Class::Normal];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Error => "error",
            Class::Slow => "slow",
            Class::Normal => "normal",
        }
    }
}

/// One `trace` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry {
    pub trace_id: TraceId,
    pub spans: u32,
    pub class: Class,
    /// Root span start to end, in microseconds.
    pub duration_us: u64,
}

/// The generator settings recorded on the first line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    pub seed: u64,
    pub slow_threshold_ms: u64,
}

/// A manifest that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifest {}:{line}: {message}", path.display())]
    Format {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error(
        "manifest {}: no `end` line: the generator did not finish (killed?), so what it sent is unknown",
        path.display()
    )]
    Incomplete { path: PathBuf },
}

impl ManifestError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ManifestError + '_ {
        move |source| ManifestError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes a manifest. Buffered: `gen` writes a line per trace from its
/// generator thread, tens of thousands a second.
pub struct ManifestWriter {
    path: PathBuf,
    out: BufWriter<File>,
    traces: u64,
    spans: u64,
    unsent_spans: u64,
}

impl ManifestWriter {
    /// Creates (or truncates) `path` and writes the header line.
    pub fn create(path: &Path, header: &Header) -> Result<Self, ManifestError> {
        let file = File::create(path).map_err(ManifestError::io(path))?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        writeln!(
            out,
            r#"{{"manifest":"{FORMAT}","version":{VERSION},"seed":{},"slow_threshold_ms":{}}}"#,
            header.seed, header.slow_threshold_ms
        )
        .map_err(ManifestError::io(path))?;
        Ok(ManifestWriter {
            path: path.to_owned(),
            out,
            traces: 0,
            spans: 0,
            unsent_spans: 0,
        })
    }

    pub fn trace(&mut self, entry: &TraceEntry) -> Result<(), ManifestError> {
        self.traces += 1;
        self.spans += u64::from(entry.spans);
        // Formatted by hand: serde_json's per-line overhead shows at 30k+ lines/s.
        writeln!(
            self.out,
            r#"{{"trace":"{}","spans":{},"class":"{}","duration_us":{}}}"#,
            entry.trace_id,
            entry.spans,
            entry.class.as_str(),
            entry.duration_us
        )
        .map_err(ManifestError::io(&self.path))
    }

    pub fn unsent(&mut self, trace_id: &TraceId, spans: u32) -> Result<(), ManifestError> {
        self.unsent_spans += u64::from(spans);
        writeln!(self.out, r#"{{"unsent":"{trace_id}","spans":{spans}}}"#)
            .map_err(ManifestError::io(&self.path))
    }

    /// Writes the `end` line and flushes.
    pub fn finish(mut self) -> Result<(), ManifestError> {
        writeln!(
            self.out,
            r#"{{"end":{{"traces":{},"spans":{},"unsent_spans":{}}}}}"#,
            self.traces, self.spans, self.unsent_spans
        )
        .map_err(ManifestError::io(&self.path))?;
        self.out.flush().map_err(ManifestError::io(&self.path))
    }
}

/// One line of a manifest, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Trace(TraceEntry),
    Unsent { trace_id: TraceId, spans: u32 },
}

/// Every field any line may have; which are present says which line it is.
/// (An untagged enum would buffer each line twice.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    manifest: Option<String>,
    version: Option<u32>,
    seed: Option<u64>,
    slow_threshold_ms: Option<u64>,
    trace: Option<String>,
    unsent: Option<String>,
    spans: Option<u32>,
    class: Option<Class>,
    duration_us: Option<u64>,
    end: Option<serde_json::Value>,
}

/// Reads a whole manifest, calling `f` for each trace and unsent line.
/// Fails on a malformed line and on a manifest without its `end` line.
pub fn read(path: &Path, mut f: impl FnMut(Line)) -> Result<Header, ManifestError> {
    let file = File::open(path).map_err(ManifestError::io(path))?;
    let reader = BufReader::with_capacity(256 * 1024, file);
    let format = |line: u64, message: String| ManifestError::Format {
        path: path.to_owned(),
        line,
        message,
    };
    let mut header = None;
    let mut ended = false;
    for (number, text) in (1u64..).zip(reader.lines()) {
        let text = text.map_err(ManifestError::io(path))?;
        if text.trim().is_empty() {
            continue;
        }
        if ended {
            return Err(format(number, "a line after the `end` line".into()));
        }
        let raw: RawLine =
            serde_json::from_str(&text).map_err(|e| format(number, e.to_string()))?;
        let id = |hex_id: &str| {
            parse_trace_id(hex_id)
                .ok_or_else(|| format(number, format!("{hex_id:?} is not 32 hex digits")))
        };
        let spans = || raw.spans.ok_or_else(|| format(number, "no `spans`".into()));
        if let Some(name) = &raw.manifest {
            if number != 1 || name != FORMAT || raw.version != Some(VERSION) {
                return Err(format(
                    number,
                    format!("expected a first line naming {FORMAT} version {VERSION}"),
                ));
            }
            header = Some(Header {
                seed: raw.seed.unwrap_or(0),
                slow_threshold_ms: raw.slow_threshold_ms.unwrap_or(0),
            });
        } else if header.is_none() {
            return Err(format(number, format!("not a {FORMAT} manifest")));
        } else if let Some(trace) = &raw.trace {
            f(Line::Trace(TraceEntry {
                trace_id: id(trace)?,
                spans: spans()?,
                class: raw
                    .class
                    .ok_or_else(|| format(number, "no `class`".into()))?,
                duration_us: raw.duration_us.unwrap_or(0),
            }));
        } else if let Some(trace) = &raw.unsent {
            f(Line::Unsent {
                trace_id: id(trace)?,
                spans: spans()?,
            });
        } else if raw.end.is_some() {
            ended = true;
        } else {
            return Err(format(
                number,
                "neither a trace, unsent nor end line".into(),
            ));
        }
    }
    match header {
        Some(header) if ended => Ok(header),
        _ => Err(ManifestError::Incomplete {
            path: path.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::trace_id;

    #[test]
    fn a_written_manifest_reads_back_line_for_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.jsonl");
        let header = Header {
            seed: 7,
            slow_threshold_ms: 500,
        };
        let a = TraceEntry {
            trace_id: trace_id(1),
            spans: 3,
            class: Class::Error,
            duration_us: 1200,
        };
        let b = TraceEntry {
            trace_id: trace_id(2),
            spans: 1,
            class: Class::Slow,
            duration_us: 700_000,
        };
        let mut w = ManifestWriter::create(&path, &header).expect("create");
        w.trace(&a).expect("write");
        w.trace(&b).expect("write");
        w.unsent(&a.trace_id, 2).expect("write");
        w.finish().expect("finish");

        let mut lines = Vec::new();
        let back = read(&path, |l| lines.push(l)).expect("reads");
        assert_eq!(back, header);
        assert_eq!(
            lines,
            vec![
                Line::Trace(a),
                Line::Trace(b),
                Line::Unsent {
                    trace_id: a.trace_id,
                    spans: 2
                }
            ]
        );
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(
            text.ends_with("{\"end\":{\"traces\":2,\"spans\":4,\"unsent_spans\":2}}\n"),
            "{text}"
        );
    }

    #[test]
    fn a_manifest_without_its_end_line_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.jsonl");
        std::fs::write(
            &path,
            "{\"manifest\":\"tailgate-loadtest\",\"version\":1}\n\
             {\"trace\":\"000102030405060708090a0b0c0d0e0f\",\"spans\":2,\"class\":\"normal\"}\n",
        )
        .expect("write");
        let err = read(&path, |_| {}).expect_err("incomplete");
        assert!(matches!(err, ManifestError::Incomplete { .. }), "{err}");
    }

    #[test]
    fn a_malformed_line_is_refused_with_its_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.jsonl");
        std::fs::write(
            &path,
            "{\"manifest\":\"tailgate-loadtest\",\"version\":1}\n{\"trace\":\"zz\",\"spans\":1,\"class\":\"normal\"}\n",
        )
        .expect("write");
        let err = read(&path, |_| {}).expect_err("bad id");
        assert!(err.to_string().contains("m.jsonl:2:"), "{err}");
        std::fs::write(&path, "{\"trace\":\"00\"}\n").expect("write");
        let err = read(&path, |_| {}).expect_err("no header");
        assert!(
            err.to_string().contains("not a tailgate-loadtest manifest"),
            "{err}"
        );
    }
}
