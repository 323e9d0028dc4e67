//! `sink`: an OTLP/gRPC and OTLP/HTTP receiver (the shared
//! [`proto::receiver`]) that counts what arrives, records every accepted
//! span's trace and span ID ([`crate::record`]), and can refuse everything
//! for a while, as a backend outage: UNAVAILABLE / 503 with a retry delay.
//!
//! Each request is walked with [`RequestView`] (no decoding); a malformed
//! one is refused as invalid and not recorded. Recorded entries go through
//! a bounded queue to a writer thread, so a slow disk slows the sink's
//! answers down rather than growing memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, ReceiverError, Refusal};
use proto::view::RequestView;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::record::{self, RecordError, RecordWriter};
use crate::stats::thousands;

pub const DEFAULT_GRPC: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 14317);
pub const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 14318);

/// A refusal window, from `after` the start, lasting `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outage {
    pub after: Duration,
    pub length: Duration,
}

/// A sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// OTLP/gRPC listen address; `None` disables it. Default 127.0.0.1:14317
    /// (not 4317, so it can be the backend of a cluster on the same host).
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address; `None` disables it. Default 127.0.0.1:14318.
    pub http: Option<SocketAddr>,
    /// Where to write the record of accepted spans. Default: none (count
    /// only).
    pub record: Option<PathBuf>,
    /// Refuse every request during this window. Default: none.
    pub outage: Option<Outage>,
    /// The retry delay sent with a refusal. Default 1 s.
    pub retry_after: Duration,
    /// Largest request accepted, bytes. Default 64 MiB.
    pub max_request_bytes: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            grpc: Some(DEFAULT_GRPC),
            http: Some(DEFAULT_HTTP),
            record: None,
            outage: None,
            retry_after: Duration::from_secs(1),
            max_request_bytes: 64 * 1024 * 1024,
        }
    }
}

impl SinkConfig {
    /// Both protocols on 127.0.0.1, on ports the OS picks (for tests).
    pub fn loopback() -> Self {
        let any = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
        SinkConfig {
            grpc: Some(any),
            http: Some(any),
            ..SinkConfig::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink: {0}")]
    Receiver(#[from] ReceiverError),
    #[error("sink: {0}")]
    Record(#[from] RecordError),
    #[error("sink: the {0} task failed")]
    Task(&'static str),
}

/// What a sink has taken so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SinkStats {
    pub requests: u64,
    pub spans: u64,
    /// Requests refused because of the outage.
    pub refused: u64,
    /// Malformed requests.
    pub invalid: u64,
    /// Spans written to the record (once the sink has stopped).
    pub recorded: u64,
}

/// The receiver's node: counts, records, refuses during an outage.
pub struct RecordingSink {
    started: Instant,
    retry_after: Duration,
    /// Refuse while `from <= now < until`, microseconds since `started`.
    refuse: Mutex<(u64, u64)>,
    /// Taken (closed) on stop, so the writer thread sees the end.
    record: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    requests: AtomicU64,
    spans: AtomicU64,
    refused: AtomicU64,
    invalid: AtomicU64,
    /// Microseconds since `started` of the last accepted request.
    last_accept_us: AtomicU64,
}

impl RecordingSink {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Refuses every request from now on, for `length`.
    pub fn refuse_for(&self, length: Duration) {
        let now = self.now_us();
        if let Ok(mut window) = self.refuse.lock() {
            *window = (now, now + length.as_micros() as u64);
        }
    }

    /// Ends a refusal window now (a configured outage or [`Self::refuse_for`]).
    pub fn end_refusal(&self) {
        if let Ok(mut window) = self.refuse.lock() {
            *window = (0, 0);
        }
    }

    /// Whether a request arriving now would be refused.
    pub fn refusing(&self) -> bool {
        let now = self.now_us();
        self.refuse
            .lock()
            .map(|w| in_window(*w, now))
            .unwrap_or(false)
    }

    pub fn stats(&self) -> SinkStats {
        SinkStats {
            requests: self.requests.load(Relaxed),
            spans: self.spans.load(Relaxed),
            refused: self.refused.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
            recorded: 0,
        }
    }

    /// How long since the last accepted request, if any was.
    pub fn idle(&self) -> Option<Duration> {
        if self.requests.load(Relaxed) == 0 {
            return None;
        }
        let last = self.last_accept_us.load(Relaxed);
        Some(Duration::from_micros(self.now_us().saturating_sub(last)))
    }
}

impl proto::receiver::Sink for RecordingSink {
    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        if self.refusing() {
            self.refused.fetch_add(1, Relaxed);
            return Err(Refusal::Unavailable {
                retry_after: self.retry_after,
            });
        }
        let record = self.record.lock().ok().and_then(|r| r.clone());
        let mut entries = Vec::new();
        let mut spans = 0usize;
        let walked = RequestView::new(&batch.request).for_each_span(|_, _, span| {
            spans += 1;
            if record.is_some() {
                entries.extend_from_slice(&record::entry(&span.trace_id, &span.span_id));
            }
        });
        if let Err(e) = walked {
            self.invalid.fetch_add(1, Relaxed);
            return Err(Refusal::from(e));
        }
        if let Some(record) = record
            && !entries.is_empty()
            && record.send(entries).await.is_err()
        {
            // The writer failed (its error is returned on stop): refuse
            // rather than accept spans the record would miss.
            return Err(Refusal::Unavailable {
                retry_after: self.retry_after,
            });
        }
        self.requests.fetch_add(1, Relaxed);
        self.spans.fetch_add(spans as u64, Relaxed);
        self.last_accept_us.store(self.now_us(), Relaxed);
        Ok(Accepted { spans })
    }
}

/// Whether `now` falls in the half-open window `[from, until)`.
fn in_window((from, until): (u64, u64), now: u64) -> bool {
    from <= now && now < until
}

/// A started sink.
pub struct RunningSink {
    sink: Arc<RecordingSink>,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), ReceiverError>>,
    writer: Option<std::thread::JoinHandle<Result<u64, RecordError>>>,
}

/// Binds and starts serving. Call inside a tokio runtime.
pub async fn start(config: SinkConfig) -> Result<RunningSink, SinkError> {
    let receiver = Receiver::bind(ReceiverConfig {
        grpc: config.grpc,
        http: config.http,
        max_request_bytes: config.max_request_bytes,
        node: "loadtest-sink".into(),
        // A stand-in backend takes requests of any span count.
        max_spans_per_request: 0,
        ..ReceiverConfig::default()
    })?;
    let (record, writer) = match &config.record {
        Some(path) => {
            let mut out = RecordWriter::create(path)?;
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
            let writer = std::thread::Builder::new()
                .name("sink-record".into())
                .spawn(move || {
                    while let Some(entries) = rx.blocking_recv() {
                        out.push_entries(&entries)?;
                    }
                    out.finish()
                })
                .map_err(|_| SinkError::Task("record writer"))?;
            (Some(tx), Some(writer))
        }
        None => (None, None),
    };
    let micros = |d: Duration| d.as_micros() as u64;
    let refuse = config.outage.map_or((0, 0), |o| {
        (micros(o.after), micros(o.after) + micros(o.length))
    });
    let sink = Arc::new(RecordingSink {
        started: Instant::now(),
        retry_after: config.retry_after,
        refuse: Mutex::new(refuse),
        record: Mutex::new(record),
        requests: AtomicU64::new(0),
        spans: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        invalid: AtomicU64::new(0),
        last_accept_us: AtomicU64::new(0),
    });
    let grpc_addr = receiver.grpc_addr();
    let http_addr = receiver.http_addr();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(receiver.serve(sink.clone(), async {
        let _ = stop.await;
    }));
    Ok(RunningSink {
        sink,
        grpc_addr,
        http_addr,
        shutdown: Some(shutdown),
        server,
        writer,
    })
}

impl RunningSink {
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn sink(&self) -> &RecordingSink {
        &self.sink
    }

    pub fn stats(&self) -> SinkStats {
        self.sink.stats()
    }

    /// Stops serving (answering requests in flight), flushes the record, and
    /// returns the final counts.
    pub async fn stop(mut self) -> Result<SinkStats, SinkError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = (&mut self.server)
            .await
            .map_err(|_| SinkError::Task("receiver"))?;
        // Close the record queue: the writer drains it and finishes.
        if let Ok(mut record) = self.sink.record.lock() {
            record.take();
        }
        let mut stats = self.sink.stats();
        if let Some(writer) = self.writer.take() {
            stats.recorded = tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|_| SinkError::Task("record writer"))?
                .map_err(|_| SinkError::Task("record writer"))??;
        }
        served?;
        Ok(stats)
    }
}

/// When a sink run ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// After this long.
    pub duration: Option<Duration>,
    /// Once this many spans were accepted.
    pub count: Option<u64>,
    /// Once spans arrived and then none for this long.
    pub idle: Option<Duration>,
}

/// Runs a sink until one of `bounds` (or `interrupt`) ends it, printing a
/// progress line every second past 3 s when `progress` is set.
pub async fn run(
    config: SinkConfig,
    bounds: Bounds,
    progress: bool,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<SinkStats, SinkError> {
    run_started(start(config).await?, bounds, progress, interrupt).await
}

/// [`run`], for a sink already started (e.g. to print its addresses first).
pub async fn run_started(
    running: RunningSink,
    bounds: Bounds,
    progress: bool,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<SinkStats, SinkError> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(interrupt);
    let mut last_print = (Duration::ZERO, 0u64);
    loop {
        tokio::select! {
            _ = &mut interrupt => break,
            _ = tick.tick() => {}
        }
        let stats = running.stats();
        let elapsed = started.elapsed();
        if bounds.duration.is_some_and(|d| elapsed >= d)
            || bounds.count.is_some_and(|c| stats.spans >= c)
            || bounds
                .idle
                .zip(running.sink.idle())
                .is_some_and(|(limit, idle)| idle >= limit)
        {
            break;
        }
        if progress
            && elapsed >= Duration::from_secs(3)
            && elapsed - last_print.0 >= Duration::from_secs(1)
        {
            let rate = (stats.spans - last_print.1) as f64 / (elapsed - last_print.0).as_secs_f64();
            eprintln!(
                "sink {:>4}s  received {:>9} spans/s  total {}  requests {}  refused {}  invalid {}",
                elapsed.as_secs(),
                thousands(rate as u64),
                thousands(stats.spans),
                thousands(stats.requests),
                thousands(stats.refused),
                thousands(stats.invalid),
            );
            last_print = (elapsed, stats.spans);
        }
    }
    running.stop().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_window_is_half_open() {
        assert!(!in_window((100, 200), 99));
        assert!(in_window((100, 200), 100));
        assert!(in_window((100, 200), 199));
        assert!(!in_window((100, 200), 200));
        assert!(!in_window((0, 0), 0), "an empty window refuses nothing");
    }
}
