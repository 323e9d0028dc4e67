//! `gen`: offers traces at a target span rate over K connections, writes the
//! manifest of what it sent, and stops by itself (after `count` spans and/or
//! `duration`).
//!
//! ```text
//! generator thread (paced, shape::Generator) ── bounded queue per connection ──▶ worker task
//!     └─ manifest (one line per trace)                          send, retry, count ─┘
//! ```
//!
//! The generator runs on a blocking thread: it paces itself with
//! `std::thread::sleep` (finer than tokio's millisecond timer) and, when
//! every connection's queue is full, waits on one, so a slow endpoint lowers
//! the offered rate instead of growing memory. It never bursts more than
//! 100 ms of traffic to catch up after such a stall: the offered rate is what
//! was really offered, and the report shows it next to the target.
//!
//! Workers retry retryable failures (UNAVAILABLE, RESOURCE_EXHAUSTED with
//! RetryInfo, HTTP 429/502/503/504, lost connections) up to `max_retries`
//! times, waiting what the server asked or an exponential backoff. A request
//! given up on, or still queued when `drain_timeout` after the last trace
//! runs out, is counted unsent and written to the manifest as such.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::view::TraceId;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::manifest::{Class, Header, ManifestError, ManifestWriter};
use crate::procfs;
use crate::shape::{Generator, OutRequest, ShapeConfig, ShapeError};
use crate::stats::{Histogram, LatencySummary, thousands};
use crate::transport::{Connection, Endpoint, EndpointError, SendError, Timeouts};

/// A `gen` run.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Where to send; connections are spread over them in turn. Required.
    pub endpoints: Vec<Endpoint>,
    /// Connections, in total. Default 4.
    pub connections: usize,
    /// Target spans per second. Default 10,000.
    pub rate: f64,
    /// Stop starting traces after this many spans. At least one of `count`
    /// and `duration` is required.
    pub count: Option<u64>,
    /// Stop starting traces after this long; the last traces' remaining
    /// pieces are still sent, up to `shape.spread` later.
    pub duration: Option<Duration>,
    /// Spans per request (a trace's piece is never split, so a request may
    /// hold up to one piece more). Default 512.
    pub batch_spans: u32,
    /// A request that is not full is sent this long after its first span.
    /// Default 50 ms.
    pub batch_timeout: Duration,
    pub shape: ShapeConfig,
    /// Random seed; the same seed makes the same traces. Default: random.
    pub seed: Option<u64>,
    /// Where to write the manifest. Default: none.
    pub manifest: Option<std::path::PathBuf>,
    /// Retries of one request before giving up on it. Default 10.
    pub max_retries: u32,
    /// The longest to wait, once the last piece is queued, for queued
    /// requests and retries to finish. Default 30 s.
    pub drain_timeout: Duration,
    /// Per request. Default 10 s.
    pub request_timeout: Duration,
    /// Print a progress line to stderr every second once the run is past
    /// 3 s. Default off (the binary turns it on).
    pub progress: bool,
}

impl GenConfig {
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        GenConfig {
            endpoints,
            connections: 4,
            rate: 10_000.0,
            count: None,
            duration: None,
            batch_spans: 512,
            batch_timeout: Duration::from_millis(50),
            shape: ShapeConfig::default(),
            seed: None,
            manifest: None,
            max_retries: 10,
            drain_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            progress: false,
        }
    }

    pub fn validate(&self) -> Result<(), GenError> {
        let fail = |m: &str| Err(GenError::Config(m.to_owned()));
        if self.endpoints.is_empty() {
            return fail("at least one endpoint is required");
        }
        if !(1..=4096).contains(&self.connections) {
            return fail("connections must be 1 to 4096");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return fail("the rate must be a positive number of spans per second");
        }
        match (self.count, self.duration) {
            (None, None) => return fail("a run needs a count and/or a duration, to end by itself"),
            (Some(0), _) => return fail("the count must be at least 1"),
            (_, Some(d)) if d.is_zero() => return fail("the duration must be more than 0"),
            _ => {}
        }
        if self.batch_spans == 0 {
            return fail("spans per request must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return fail("the request timeout must be more than 0");
        }
        self.shape.validate()?;
        Ok(())
    }
}

/// A run that could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("gen: {0}")]
    Config(String),
    #[error("gen: {0}")]
    Shape(#[from] ShapeError),
    #[error("gen: {0}")]
    Endpoint(#[from] EndpointError),
    #[error("gen: {0}")]
    Manifest(#[from] ManifestError),
    #[error("gen: the generator thread failed: {0}")]
    Thread(String),
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct GenReport {
    pub endpoints: Vec<String>,
    pub connections: usize,
    pub target_rate: f64,
    /// From the start until traces stopped being started.
    pub starting_secs: f64,
    /// Time from a trace's first piece to its last (the tail after
    /// `starting_secs`).
    pub spread_secs: f64,
    /// From the start to the last piece handed to a connection.
    pub generating_secs: f64,
    /// From the start to the last answer (or the drain deadline).
    pub elapsed_secs: f64,
    pub traces: u64,
    pub error_traces: u64,
    pub slow_traces: u64,
    pub normal_traces: u64,
    /// Spans handed to connections.
    pub spans_offered: u64,
    /// Spans the endpoints accepted.
    pub spans_sent: u64,
    /// Spans accepted in a request but rejected (OTLP partial success).
    pub spans_rejected: u64,
    /// Spans of requests given up on (or cut off at the drain deadline).
    pub spans_unsent: u64,
    pub requests: u64,
    /// Failed attempts, retried or not.
    pub errors: u64,
    pub retries: u64,
    pub requests_given_up: u64,
    pub last_error: Option<String>,
    /// Successful export calls, send to answer.
    pub latency: LatencySummary,
    #[serde(skip)]
    pub latency_histogram: Histogram,
    /// CPU time this process used during the run (all its threads).
    pub cpu_secs: Option<f64>,
}

impl GenReport {
    /// Spans per second offered while traces were being started. The
    /// pieces of a trace go out over `spread`, so the first `spread` of a
    /// run ramps up and the `spread` after it tails off; the two cancel out,
    /// and every span counts against the time traces were started in.
    pub fn offered_rate(&self) -> f64 {
        self.spans_offered as f64 / self.starting_secs.max(1e-9)
    }

    /// Spans per second accepted, over the same time as [`Self::offered_rate`],
    /// or longer when the endpoints fell behind (the time to the last answer
    /// less the spread tail).
    pub fn achieved_rate(&self) -> f64 {
        let window = self.starting_secs.max(self.elapsed_secs - self.spread_secs);
        self.spans_sent as f64 / window.max(1e-9)
    }

    /// Spans sent per CPU second of this process.
    pub fn spans_per_cpu_second(&self) -> Option<f64> {
        self.cpu_secs
            .filter(|c| *c > 0.0)
            .map(|c| self.spans_sent as f64 / c)
    }
}

impl std::fmt::Display for GenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "gen: {} traces ({} error, {} slow, {} normal), {} spans to {} over {} connections",
            thousands(self.traces),
            thousands(self.error_traces),
            thousands(self.slow_traces),
            thousands(self.normal_traces),
            thousands(self.spans_offered),
            self.endpoints.join(", "),
            self.connections
        )?;
        writeln!(
            f,
            "  offered   {:>12} spans/s (target {}) over {:.1}s",
            thousands(self.offered_rate() as u64),
            thousands(self.target_rate as u64),
            self.starting_secs
        )?;
        writeln!(
            f,
            "  achieved  {:>12} spans/s ({} sent; last answer at {:.1}s)",
            thousands(self.achieved_rate() as u64),
            thousands(self.spans_sent),
            self.elapsed_secs
        )?;
        if let Some(per_core) = self.spans_per_cpu_second() {
            writeln!(
                f,
                "  gen CPU   {:.2}s = {} spans per CPU second",
                self.cpu_secs.unwrap_or(0.0),
                thousands(per_core as u64)
            )?;
        }
        writeln!(
            f,
            "  requests  {} (latency p50 {} p99 {} max {})",
            thousands(self.requests),
            crate::stats::ms(self.latency.p50_us),
            crate::stats::ms(self.latency.p99_us),
            crate::stats::ms(self.latency.max_us)
        )?;
        write!(
            f,
            "  errors    {} ({} retries, {} requests given up, {} spans unsent, {} rejected)",
            thousands(self.errors),
            thousands(self.retries),
            thousands(self.requests_given_up),
            thousands(self.spans_unsent),
            thousands(self.spans_rejected)
        )?;
        if let Some(e) = &self.last_error {
            write!(f, "\n  last error: {e}")?;
        }
        Ok(())
    }
}

/// Shared between the generator, the workers and the progress line.
#[derive(Default)]
struct Counters {
    offered: AtomicU64,
    sent: AtomicU64,
    rejected: AtomicU64,
    unsent: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    given_up: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Spans of each trace piece given up on, for the manifest.
    unsent_traces: Mutex<Vec<(TraceId, u32)>>,
}

impl Counters {
    fn give_up(&self, request: &OutRequest) {
        self.unsent.fetch_add(u64::from(request.spans), Relaxed);
        if let Ok(mut unsent) = self.unsent_traces.lock() {
            unsent.extend_from_slice(&request.traces);
        }
    }

    fn error(&self, e: &SendError) {
        self.errors.fetch_add(1, Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.message.clone());
        }
    }
}

/// What the generator thread made.
struct Generated {
    manifest: Option<ManifestWriter>,
    classes: [u64; 3],
    starting: Duration,
    generating: Duration,
}

/// Runs `gen` to the end. Call inside a multi-threaded tokio runtime (the
/// generator takes a blocking thread).
pub async fn run(config: GenConfig) -> Result<GenReport, GenError> {
    config.validate()?;
    let seed = config.seed.unwrap_or_else(rand::random);
    let generator = Generator::new(config.shape.clone(), seed)?;
    let manifest = match &config.manifest {
        Some(path) => Some(ManifestWriter::create(
            path,
            &Header {
                seed,
                slow_threshold_ms: config.shape.slow_threshold.as_millis() as u64,
            },
        )?),
        None => None,
    };
    let cpu_before = procfs::sample_self().ok();
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let cancel = CancellationToken::new();
    let timeouts = Timeouts {
        request: config.request_timeout,
        connect: config.request_timeout.min(Duration::from_secs(5)),
    };

    let mut senders = Vec::with_capacity(config.connections);
    let mut workers = Vec::with_capacity(config.connections);
    for k in 0..config.connections {
        let endpoint = &config.endpoints[k % config.endpoints.len()];
        let connection = Connection::new(endpoint, timeouts)?;
        // Two requests queued per connection: enough to keep it busy, little
        // enough that a stall shows as backpressure at once.
        let (tx, rx) = mpsc::channel(2);
        senders.push(tx);
        workers.push(tokio::spawn(worker(
            connection,
            rx,
            counters.clone(),
            cancel.clone(),
            config.max_retries,
        )));
    }

    let done = CancellationToken::new();
    let progress = config
        .progress
        .then(|| tokio::spawn(progress(counters.clone(), started, done.clone())));

    let pacing = Pacing {
        rate: config.rate,
        count: config.count,
        duration: config.duration,
        batch_spans: config.batch_spans,
        batch_timeout: config.batch_timeout,
        deadline: config
            .duration
            .map(|d| started + d + config.shape.spread + config.drain_timeout),
    };
    let generator_counters = counters.clone();
    let generated = tokio::task::spawn_blocking(move || {
        generate(generator, manifest, senders, pacing, &generator_counters)
    })
    .await
    .map_err(|e| GenError::Thread(e.to_string()))??;

    // Queued requests and retries get `drain_timeout`, then are cut off.
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    let mut latency = Histogram::default();
    for mut worker in workers {
        let finished = match tokio::time::timeout_at(deadline, &mut worker).await {
            Ok(finished) => finished,
            Err(_) => {
                cancel.cancel();
                worker.await
            }
        };
        if let Ok(h) = finished {
            latency.merge(&h);
        }
    }
    let elapsed = started.elapsed();
    done.cancel();
    if let Some(progress) = progress {
        let _ = progress.await;
    }

    if let Some(mut manifest) = generated.manifest {
        let unsent = std::mem::take(
            &mut *counters
                .unsent_traces
                .lock()
                .map_err(|_| GenError::Thread("a worker panicked".into()))?,
        );
        tokio::task::spawn_blocking(move || {
            for (trace, spans) in unsent {
                manifest.unsent(&trace, spans)?;
            }
            manifest.finish()
        })
        .await
        .map_err(|e| GenError::Thread(e.to_string()))??;
    }
    let cpu_secs = match (cpu_before, procfs::sample_self().ok()) {
        (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu).as_secs_f64()),
        _ => None,
    };
    let load = |c: &AtomicU64| c.load(Relaxed);
    let [error_traces, slow_traces, normal_traces] = generated.classes;
    Ok(GenReport {
        endpoints: config.endpoints.iter().map(|e| e.to_string()).collect(),
        connections: config.connections,
        target_rate: config.rate,
        starting_secs: generated.starting.as_secs_f64(),
        spread_secs: config.shape.spread.as_secs_f64(),
        generating_secs: generated.generating.as_secs_f64(),
        elapsed_secs: elapsed.as_secs_f64(),
        traces: error_traces + slow_traces + normal_traces,
        error_traces,
        slow_traces,
        normal_traces,
        spans_offered: load(&counters.offered),
        spans_sent: load(&counters.sent),
        spans_rejected: load(&counters.rejected),
        spans_unsent: load(&counters.unsent),
        requests: load(&counters.requests),
        errors: load(&counters.errors),
        retries: load(&counters.retries),
        requests_given_up: load(&counters.given_up),
        last_error: counters.last_error.lock().ok().and_then(|e| e.clone()),
        latency: latency.summary(),
        latency_histogram: latency,
        cpu_secs,
    })
}

struct Pacing {
    rate: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    batch_spans: u32,
    batch_timeout: Duration,
    /// Past this, pieces no connection has room for are given up on.
    deadline: Option<Instant>,
}

/// The generator thread: starts traces at the target rate, hands due
/// pieces to connections, writes the manifest.
fn generate(
    mut generator: Generator,
    mut manifest: Option<ManifestWriter>,
    senders: Vec<mpsc::Sender<OutRequest>>,
    pacing: Pacing,
    counters: &Counters,
) -> Result<Generated, GenError> {
    let started = Instant::now();
    let wall_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let per_us = pacing.rate / 1e6;
    // The most spans started at once after a stall: 100 ms worth.
    let max_burst = ((pacing.rate * 0.1) as u64).max(1);
    let duration_us = pacing.duration.map(|d| d.as_micros() as u64);
    let timeout_us = pacing.batch_timeout.as_micros() as u64;
    let mut classes = [0u64; 3];
    let mut started_spans = 0u64;
    let mut skipped = 0u64;
    let mut starting = true;
    let mut starting_ended = None;
    let mut next_sender = 0;
    let mut dispatch = |mut request: OutRequest| {
        counters
            .offered
            .fetch_add(u64::from(request.spans), Relaxed);
        // The first connection with room, in turn; if none has room, poll
        // until one has (a stalled endpoint slows the generator down), or
        // until the deadline, when nothing will send it any more.
        let n = senders.len();
        loop {
            for i in 0..n {
                let k = (next_sender + i) % n;
                match senders[k].try_send(request) {
                    Ok(()) => {
                        next_sender = (k + 1) % n;
                        return;
                    }
                    Err(mpsc::error::TrySendError::Full(r))
                    | Err(mpsc::error::TrySendError::Closed(r)) => request = r,
                }
            }
            if pacing.deadline.is_some_and(|d| Instant::now() >= d) {
                counters.given_up.fetch_add(1, Relaxed);
                counters.give_up(&request);
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    loop {
        let now_us = started.elapsed().as_micros() as u64;
        if starting {
            let out_of_time = duration_us.is_some_and(|d| now_us >= d);
            let out_of_spans = pacing.count.is_some_and(|c| started_spans >= c);
            if out_of_time || out_of_spans {
                starting = false;
                starting_ended = Some(started.elapsed());
            } else {
                let due = (now_us as f64 * per_us) as u64;
                if due > started_spans + skipped + max_burst {
                    skipped = due - started_spans - max_burst;
                }
                while started_spans + skipped < due {
                    let cap = match pacing.count {
                        Some(c) if started_spans >= c => break,
                        Some(c) => u32::try_from(c - started_spans).unwrap_or(u32::MAX),
                        None => u32::MAX,
                    };
                    let entry = generator.start_trace(now_us, wall_start + now_us * 1000, cap);
                    started_spans += u64::from(entry.spans);
                    classes[match entry.class {
                        Class::Error => 0,
                        Class::Slow => 1,
                        Class::Normal => 2,
                    }] += 1;
                    if let Some(manifest) = &mut manifest {
                        manifest.trace(&entry)?;
                    }
                }
            }
        }
        generator.emit_due(now_us, pacing.batch_spans, &mut dispatch);
        let drained = !starting && generator.pending_chunks() == 0;
        if let Some(since) = generator.buffered_since()
            && (drained || now_us.saturating_sub(since) >= timeout_us)
            && let Some(request) = generator.flush()
        {
            dispatch(request);
        }
        if drained && generator.buffered_spans() == 0 {
            break;
        }
        // Sleep to the next thing to do: a piece due, a batch timing out, or
        // (while starting traces) the next millisecond.
        let mut next = u64::MAX;
        if let Some(due) = generator.next_due() {
            next = next.min(due);
        }
        if let Some(since) = generator.buffered_since() {
            next = next.min(since + timeout_us);
        }
        if starting {
            next = next.min(now_us + 1000);
        }
        let now_us = started.elapsed().as_micros() as u64;
        if next > now_us {
            std::thread::sleep(Duration::from_micros((next - now_us).min(100_000)));
        }
    }
    Ok(Generated {
        manifest,
        classes,
        starting: starting_ended.unwrap_or_else(|| started.elapsed()),
        generating: started.elapsed(),
    })
}

/// Sends the requests of one connection, retrying, until its queue closes or
/// the run is cut off. Returns the latencies of successful calls.
async fn worker(
    mut connection: Connection,
    mut queue: mpsc::Receiver<OutRequest>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    max_retries: u32,
) -> Histogram {
    let mut latency = Histogram::default();
    'requests: loop {
        let request = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            request = queue.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let mut attempt = 0;
        loop {
            let sent_at = Instant::now();
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    counters.give_up(&request);
                    break 'requests;
                }
                result = connection.send(request.bytes.clone()) => result,
            };
            match result {
                Ok(rejected) => {
                    latency.record(sent_at.elapsed());
                    counters.requests.fetch_add(1, Relaxed);
                    let rejected = rejected.min(u64::from(request.spans));
                    counters.rejected.fetch_add(rejected, Relaxed);
                    counters
                        .sent
                        .fetch_add(u64::from(request.spans) - rejected, Relaxed);
                    break;
                }
                Err(e) => {
                    counters.error(&e);
                    if !e.retryable || attempt >= max_retries {
                        counters.given_up.fetch_add(1, Relaxed);
                        counters.give_up(&request);
                        break;
                    }
                    attempt += 1;
                    counters.retries.fetch_add(1, Relaxed);
                    let delay = e.retry_after.unwrap_or_else(|| backoff(attempt));
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => {
                            counters.give_up(&request);
                            break 'requests;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
    // Cut off: what is still queued will not be sent.
    queue.close();
    while let Ok(request) = queue.try_recv() {
        counters.give_up(&request);
    }
    latency
}

/// 100 ms, doubling, at most 5 s, each ±25 %.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(16).saturating_sub(1));
    let base = base.min(5_000) as f64;
    let jitter: f64 = rand::random_range(0.75..1.25);
    Duration::from_millis((base * jitter) as u64)
}

async fn progress(counters: Arc<Counters>, started: Instant, done: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut last_offered, mut last_sent) = (0, 0);
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tick.tick() => {}
        }
        let offered = counters.offered.load(Relaxed);
        let sent = counters.sent.load(Relaxed);
        let elapsed = started.elapsed();
        if elapsed >= Duration::from_secs(3) {
            eprintln!(
                "gen {:>4}s  offered {:>9} spans/s  sent {:>9} spans/s  total {}  errors {}  retries {}  unsent {}",
                elapsed.as_secs(),
                thousands(offered - last_offered),
                thousands(sent - last_sent),
                thousands(sent),
                thousands(counters.errors.load(Relaxed)),
                thousands(counters.retries.load(Relaxed)),
                thousands(counters.unsent.load(Relaxed)),
            );
        }
        (last_offered, last_sent) = (offered, sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_an_end_is_refused() {
        let config = GenConfig::new(vec![Endpoint::grpc("127.0.0.1:1".parse().expect("addr"))]);
        let err = config.validate().expect_err("unbounded");
        assert!(err.to_string().contains("count and/or a duration"), "{err}");
        let bounded = GenConfig {
            count: Some(10),
            ..config.clone()
        };
        assert!(bounded.validate().is_ok());
        let no_endpoint = GenConfig {
            endpoints: vec![],
            ..bounded.clone()
        };
        assert!(no_endpoint.validate().is_err());
        let zero_rate = GenConfig {
            rate: 0.0,
            ..bounded
        };
        assert!(zero_rate.validate().is_err());
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        assert!((75..=125).contains(&backoff(1).as_millis()));
        assert!((150..=250).contains(&backoff(2).as_millis()));
        assert!((3750..=6250).contains(&backoff(30).as_millis()));
    }
}
