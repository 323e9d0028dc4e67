//! `bench`: gen → cluster → sink for a fixed time, then a report.
//!
//! With `endpoints` it uses a cluster already running (it spawns nothing):
//! the cluster must export to this sink (`sink.grpc` / `sink.http`). It reads
//! the CPU time and RSS of the processes given as `pids` from `/proc`, and,
//! when given their admin `/metrics` URLs, the change in every `tailgate_`
//! counter about decisions and drops. Without `endpoints` it starts
//! `tailgate local` itself (the `tailgate` binary beside this one, or
//! `local.tailgate`) on free loopback ports, exporting to the sink, measures
//! that process, and stops it with SIGTERM at the end; or, with
//! `local.role` [`LocalRole::Lb`], a `tailgate lb` whose one member is the
//! sink (the LB alone: everything it takes reaches the sink), or
//! [`LocalRole::Sampler`], one `tailgate sampler` with the default policy
//! exporting to the sink (the sampler alone), or [`LocalRole::Forwarder`],
//! `tailgate-loadtest forward` to the sink (a bare TCP forwarder: the floor
//! of an LB's cost on the host).
//!
//! Order of a run:
//! 1. start the sink (the backend of the cluster), recording;
//! 2. baseline: `gen` straight to a second, counting sink for `baseline`,
//!    for the latency of an export with no cluster in between;
//! 3. read /proc and /metrics; `gen` to the endpoints for the run (RSS is
//!    sampled every second meanwhile);
//! 4. settle: wait `settle` (the cluster's decision wait and export), then
//!    until the sink has been idle 2 s (at most 4 × `settle`);
//! 5. read /proc and /metrics again, stop the sink, verify.
//!
//! "LB added latency" is the export latency through the endpoints minus the
//! baseline's, percentile by percentile: an estimate, since the difference
//! of two percentiles is not the percentile of the differences.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::generate::{self, GenConfig, GenError, GenReport};
use crate::procfs::{self, ProcError};
use crate::sink::{self, SinkConfig, SinkError, SinkStats};
use crate::stats::{LatencySummary, ms, thousands};
use crate::transport::Endpoint;
use crate::verify::{self, Expectations, VerifyError, VerifyReport};

/// A bench run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The traffic; its `endpoints` are the cluster's (required until
    /// `tailgate local` exists), its `manifest` is set by the bench.
    pub traffic: GenConfig,
    /// The backend the cluster exports to; its `record` is set by the bench.
    pub sink: SinkConfig,
    /// Processes of the cluster, with a name for the report.
    pub pids: Vec<(u32, String)>,
    /// Admin `/metrics` URLs of the cluster's nodes (`http://HOST:PORT/metrics`).
    pub metrics: Vec<String>,
    /// How long the baseline runs; zero skips it. Default 2 s.
    pub baseline: Duration,
    /// The least time to wait after `gen` for the cluster to decide and
    /// export. Default 12 s (the default policy's decision wait is 10 s).
    pub settle: Duration,
    pub expect: Expectations,
    /// Where the manifest and record go.
    pub dir: PathBuf,
    /// The cluster to start when `traffic.endpoints` is empty.
    pub local: LocalSpec,
}

/// What the bench starts when it is given no endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalRole {
    /// `tailgate local`: an LB and `samplers` samplers exporting to the sink.
    #[default]
    Local,
    /// `tailgate lb` with the sink as its one member: the LB alone, every
    /// span it takes forwarded (verify with [`Expectations::keep_all`]).
    Lb,
    /// One `tailgate sampler` exporting to the sink, with the default
    /// policy (`examples/policy.yaml`, the one `tailgate local` embeds;
    /// verify with [`Expectations::default_policy`]): the sampler alone.
    Sampler,
    /// `tailgate-loadtest forward` to the sink: bytes copied unread, the
    /// least any LB can do ([`crate::forward`]); verify with
    /// [`Expectations::keep_all`].
    Forwarder,
}

/// The default policy, as `tailgate local` embeds it.
const DEFAULT_POLICY: &str = include_str!("../../examples/policy.yaml");

/// How the bench starts `tailgate local` (or `tailgate lb`).
#[derive(Debug, Clone)]
pub struct LocalSpec {
    /// The `tailgate` binary; default: beside the running executable.
    pub tailgate: Option<PathBuf>,
    /// Sampler nodes. Default 3.
    pub samplers: usize,
    pub role: LocalRole,
    /// `KEY=VALUE` overrides of the LB's config (`tailgate local --set-lb`,
    /// `tailgate lb --set`).
    pub set_lb: Vec<String>,
    /// The `tailgate-loadtest` binary that runs [`LocalRole::Forwarder`];
    /// default: the running executable.
    pub loadtest: Option<PathBuf>,
}

impl Default for LocalSpec {
    fn default() -> Self {
        LocalSpec {
            tailgate: None,
            samplers: 3,
            role: LocalRole::Local,
            set_lb: Vec::new(),
            loadtest: None,
        }
    }
}

/// A `tailgate local` process the bench started; SIGTERM (then SIGKILL
/// after 60 s) when dropped, so a failed run leaves nothing behind.
struct LocalCluster {
    child: std::process::Child,
}

impl LocalCluster {
    async fn start(
        spec: &LocalSpec,
        export: std::net::SocketAddr,
        dir: &std::path::Path,
    ) -> Result<(LocalCluster, Endpoint, Option<String>), BenchError> {
        let current = || {
            std::env::current_exe()
                .map_err(|e| BenchError::Config(format!("locating the executable: {e}")))
        };
        let tailgate = match (&spec.role, &spec.tailgate, &spec.loadtest) {
            (LocalRole::Forwarder, _, Some(path)) => path.clone(),
            (LocalRole::Forwarder, _, None) => current()?,
            (_, Some(path), _) => path.clone(),
            (_, None, _) => current()?.with_file_name("tailgate"),
        };
        let port = || -> Result<u16, BenchError> {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| BenchError::Config(format!("finding a free port: {e}")))
        };
        let (grpc, http, admin) = (port()?, port()?, port()?);
        let mut command = std::process::Command::new(&tailgate);
        match spec.role {
            LocalRole::Local => {
                command
                    .arg("local")
                    .args(["--samplers", &spec.samplers.to_string()])
                    .args(["--export", &format!("grpc://{export}")])
                    .args(["--grpc", &format!("127.0.0.1:{grpc}")])
                    .args(["--http", &format!("127.0.0.1:{http}")])
                    .args(["--admin", &format!("127.0.0.1:{admin}")]);
                for set in &spec.set_lb {
                    command.args(["--set-lb", set]);
                }
            }
            LocalRole::Lb => {
                command.arg("lb");
                for set in [
                    "node=bench-lb".to_owned(),
                    format!("receiver.grpc=127.0.0.1:{grpc}"),
                    format!("receiver.http=127.0.0.1:{http}"),
                    format!("admin=127.0.0.1:{admin}"),
                    format!("resolver.static.members=[{export}]"),
                ]
                .iter()
                .chain(&spec.set_lb)
                {
                    command.args(["--set", set]);
                }
            }
            LocalRole::Forwarder => {
                command
                    .arg("forward")
                    .args(["--listen", &format!("127.0.0.1:{grpc}")])
                    .args(["--upstream", &export.to_string()])
                    // Bounded; the bench stops it long before.
                    .args(["--duration", "1h"]);
            }
            LocalRole::Sampler => {
                let policy = dir.join("policy.yaml");
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&policy, DEFAULT_POLICY))
                    .map_err(|e| {
                        BenchError::Config(format!("writing {}: {e}", policy.display()))
                    })?;
                command.arg("sampler");
                for set in [
                    "node=bench-sampler".to_owned(),
                    format!("receiver.grpc=127.0.0.1:{grpc}"),
                    format!("receiver.http=127.0.0.1:{http}"),
                    format!("admin=127.0.0.1:{admin}"),
                    format!("policy_file={}", policy.display()),
                    format!("exporter.endpoint=http://{export}"),
                ]
                .iter()
                .chain(&spec.set_lb)
                {
                    command.args(["--set", set]);
                }
            }
        }
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Config(format!("starting {}: {e}", tailgate.display())))?;
        let cluster = LocalCluster { child };
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], grpc));
        // The forwarder has no admin port: it is ready once it accepts.
        let forwarder = spec.role == LocalRole::Forwarder;
        let metrics = (!forwarder).then(|| format!("http://127.0.0.1:{admin}/metrics"));
        let ready = format!("http://127.0.0.1:{admin}/readyz");
        // Ready once the LB answers /readyz 200; bounded.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // fetch() is Ok only on a 2xx answer.
            let up = if forwarder {
                tokio::net::TcpStream::connect(listen).await.is_ok()
            } else {
                fetch(&ready).await.is_ok()
            };
            if up {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Config(format!(
                    "{} {} did not become ready within 30 s",
                    tailgate.display(),
                    spec.role.command()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((cluster, Endpoint::grpc(listen), metrics))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (bounded) for the staged shutdown.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalRole {
    /// The `tailgate` subcommand.
    pub fn command(self) -> &'static str {
        match self {
            LocalRole::Local => "local",
            LocalRole::Lb => "lb",
            LocalRole::Sampler => "sampler",
            LocalRole::Forwarder => "forward",
        }
    }

    /// The process, as the report names it.
    pub fn process(self) -> String {
        match self {
            LocalRole::Forwarder => "tailgate-loadtest forward".to_owned(),
            role => format!("tailgate {}", role.command()),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {0}")]
    Config(String),
    #[error("{0}")]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Gen(#[from] GenError),
    #[error("bench: {0}")]
    Proc(#[from] ProcError),
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("bench: metrics from {url}: {message}")]
    Metrics { url: String, message: String },
}

/// One process of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ProcReport {
    pub pid: u32,
    pub name: String,
    /// From the start of `gen` to the end of the settle time.
    pub cpu_secs: f64,
    pub rss_peak_bytes: u64,
    pub rss_end_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub traffic: GenReport,
    pub baseline: Option<LatencySummary>,
    pub processes: Vec<ProcReport>,
    /// Wall time the CPU was measured over (gen + settle).
    pub measured_secs: f64,
    pub settle_secs: f64,
    /// Change of each decision/drop counter, summed over nodes.
    pub metrics: BTreeMap<String, f64>,
    pub sink: SinkStats,
    pub verify: VerifyReport,
}

impl BenchReport {
    pub fn cluster_cpu_secs(&self) -> f64 {
        self.processes.iter().map(|p| p.cpu_secs).sum()
    }

    /// Spans the cluster took, per CPU second it used.
    pub fn spans_per_core(&self) -> Option<f64> {
        let cpu = self.cluster_cpu_secs();
        (cpu > 0.0).then(|| self.traffic.spans_sent as f64 / cpu)
    }

    /// Endpoint latency minus baseline, at p50 and p99 (µs).
    pub fn added_latency(&self) -> Option<(u64, u64)> {
        let b = self.baseline?;
        let g = self.traffic.latency;
        Some((
            g.p50_us?.saturating_sub(b.p50_us?),
            g.p99_us?.saturating_sub(b.p99_us?),
        ))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.traffic;
        writeln!(
            f,
            "bench: {:.1}s of traffic to {} over {} connections",
            g.starting_secs,
            g.endpoints.join(", "),
            g.connections
        )?;
        writeln!(
            f,
            "  offered      {:>10} spans/s (target {})",
            thousands(g.offered_rate() as u64),
            thousands(g.target_rate as u64)
        )?;
        writeln!(
            f,
            "  achieved     {:>10} spans/s ({} spans accepted; {} errors, {} retries, {} unsent)",
            thousands(g.achieved_rate() as u64),
            thousands(g.spans_sent),
            thousands(g.errors),
            thousands(g.retries),
            thousands(g.spans_unsent)
        )?;
        if self.processes.is_empty() {
            writeln!(f, "  cluster CPU  - (no --pid given)")?;
        } else {
            writeln!(
                f,
                "  cluster CPU  {:.2} cores over {:.1}s → {} spans/s per core",
                self.cluster_cpu_secs() / self.measured_secs.max(1e-9),
                self.measured_secs,
                self.spans_per_core()
                    .map_or("-".into(), |s| thousands(s as u64))
            )?;
            for p in &self.processes {
                writeln!(
                    f,
                    "    {:<12} pid {:<7} CPU {:>7.2}s  RSS peak {:>10}  end {:>10}",
                    p.name,
                    p.pid,
                    p.cpu_secs,
                    mib(p.rss_peak_bytes),
                    mib(p.rss_end_bytes)
                )?;
            }
        }
        if let Some(cpu) = g.cpu_secs {
            writeln!(
                f,
                "  gen CPU      {:.2} cores",
                cpu / g.elapsed_secs.max(1e-9)
            )?;
        }
        write!(
            f,
            "  latency      through the endpoints p50 {} p99 {}",
            ms(g.latency.p50_us),
            ms(g.latency.p99_us)
        )?;
        match (self.baseline, self.added_latency()) {
            (Some(b), Some((p50, p99))) => writeln!(
                f,
                "; baseline p50 {} p99 {}; LB added p50 {} p99 {}",
                ms(b.p50_us),
                ms(b.p99_us),
                ms(Some(p50)),
                ms(Some(p99))
            )?,
            _ => writeln!(f, "; no baseline")?,
        }
        if self.metrics.is_empty() {
            writeln!(
                f,
                "  decisions, drops: - (no --metrics given, or none found)"
            )?;
        } else {
            for (series, delta) in &self.metrics {
                writeln!(f, "  {series} {delta}")?;
            }
        }
        writeln!(
            f,
            "  sink         {} spans in {} requests ({} refused, {} invalid); settled {:.1}s",
            thousands(self.sink.spans),
            thousands(self.sink.requests),
            thousands(self.sink.refused),
            thousands(self.sink.invalid),
            self.settle_secs
        )?;
        write!(f, "{}", self.verify)
    }
}

/// Runs the bench. Verification failing is not an error here: it is in the
/// report (`verify.passed()`).
pub async fn run(mut config: BenchConfig) -> Result<BenchReport, BenchError> {
    if config.traffic.duration.is_none() {
        return Err(BenchError::Config("a bench runs for a --duration".into()));
    }
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| BenchError::Config(format!("creating {}: {e}", config.dir.display())))?;
    let manifest = config.dir.join("manifest.jsonl");
    let record = config.dir.join("record.bin");
    config.traffic.manifest = Some(manifest.clone());
    config.sink.record = Some(record.clone());
    let backend = sink::start(config.sink.clone()).await?;

    let mut local = None;
    if config.traffic.endpoints.is_empty() {
        let export = backend.grpc_addr().ok_or_else(|| {
            BenchError::Config(
                "a local cluster exports over gRPC: the sink needs --sink-grpc".into(),
            )
        })?;
        let (cluster, endpoint, metrics) =
            LocalCluster::start(&config.local, export, &config.dir).await?;
        config.traffic.endpoints = vec![endpoint];
        config
            .pids
            .push((cluster.pid(), config.local.role.process()));
        config.metrics.extend(metrics);
        local = Some(cluster);
    }

    let baseline = if config.baseline.is_zero() {
        None
    } else {
        Some(baseline(&config.traffic, config.baseline).await?)
    };

    let before: Vec<_> = config
        .pids
        .iter()
        .map(|(pid, _)| procfs::sample(*pid))
        .collect::<Result<_, _>>()?;
    let metrics_before = scrape_all(&config.metrics).await?;
    let stop_sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample_rss(
        config.pids.iter().map(|(pid, _)| *pid).collect(),
        stop_sampling.clone(),
    ));
    let measured = Instant::now();
    let gen_report = generate::run(config.traffic.clone()).await?;

    // Settle: the cluster decides and exports after its decision wait.
    let settle_started = Instant::now();
    tokio::time::sleep(config.settle).await;
    let cap = config.settle * 4;
    while settle_started.elapsed() < cap
        && backend
            .sink()
            .idle()
            .is_some_and(|idle| idle < Duration::from_secs(2))
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let measured_secs = measured.elapsed().as_secs_f64();
    stop_sampling.cancel();
    let peaks = sampler.await.unwrap_or_default();
    let mut processes = Vec::new();
    for (i, ((pid, name), start)) in config.pids.iter().zip(&before).enumerate() {
        let end = procfs::sample(*pid)?;
        processes.push(ProcReport {
            pid: *pid,
            name: name.clone(),
            cpu_secs: end.cpu.saturating_sub(start.cpu).as_secs_f64(),
            rss_peak_bytes: peaks.get(i).copied().unwrap_or(0).max(end.rss_bytes),
            rss_end_bytes: end.rss_bytes,
        });
    }
    let metrics_after = scrape_all(&config.metrics).await?;
    if let Some(mut cluster) = local {
        // Decide and flush what is pending before the record is read.
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .map_err(|e| BenchError::Config(format!("stopping tailgate local: {e}")))?;
    }
    let metrics = metrics_after
        .iter()
        .map(|(k, v)| (k.clone(), v - metrics_before.get(k).copied().unwrap_or(0.0)))
        .collect();
    let sink = backend.stop().await?;
    let verify = match verify::verify_files(&[manifest], &[record], config.expect) {
        Ok(report) => report,
        Err(VerifyError::Failed(report)) => *report,
        Err(e) => return Err(e.into()),
    };
    Ok(BenchReport {
        traffic: gen_report,
        baseline,
        processes,
        measured_secs,
        settle_secs,
        metrics,
        sink,
        verify,
    })
}

/// `gen` straight into a counting sink on loopback, same protocol, same
/// shape and rate: the export latency without a cluster.
async fn baseline(traffic: &GenConfig, length: Duration) -> Result<LatencySummary, BenchError> {
    let grpc = matches!(traffic.endpoints.first(), Some(Endpoint::Grpc { .. }));
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let counting = sink::start(SinkConfig {
        grpc: grpc.then_some(any),
        http: (!grpc).then_some(any),
        ..SinkConfig::default()
    })
    .await?;
    let endpoint = match (counting.grpc_addr(), counting.http_addr()) {
        (Some(addr), _) => Endpoint::grpc(addr),
        (None, Some(addr)) => Endpoint::http(addr),
        (None, None) => {
            return Err(BenchError::Config(
                "the baseline sink has no address".into(),
            ));
        }
    };
    let report = generate::run(GenConfig {
        endpoints: vec![endpoint],
        duration: Some(length),
        count: None,
        manifest: None,
        progress: false,
        ..traffic.clone()
    })
    .await?;
    counting.stop().await?;
    Ok(report.latency)
}

/// Peak RSS of each pid, sampled every second until stopped.
async fn sample_rss(pids: Vec<u32>, stop: CancellationToken) -> Vec<u64> {
    let mut peaks = vec![0u64; pids.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        for (pid, peak) in pids.iter().zip(&mut peaks) {
            if let Ok(sample) = procfs::sample(*pid) {
                *peak = (*peak).max(sample.rss_bytes);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return peaks,
            _ = tick.tick() => {}
        }
    }
}

async fn scrape_all(urls: &[String]) -> Result<BTreeMap<String, f64>, BenchError> {
    let mut total = BTreeMap::new();
    for url in urls {
        let text = fetch(url).await.map_err(|message| BenchError::Metrics {
            url: url.clone(),
            message,
        })?;
        for (series, value) in decision_and_drop_counters(&text) {
            *total.entry(series).or_insert(0.0) += value;
        }
    }
    Ok(total)
}

/// GET over one HTTP/1.1 connection.
async fn fetch(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("expected http://HOST:PORT/PATH")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let get = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::get(path)
            .header(http::header::HOST, authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .map_err(|_| "no answer within 10s".to_string())?
}

/// The `tailgate_` series of a Prometheus text exposition whose name speaks
/// of decisions or drops, with the `node` label removed (so they sum over
/// nodes). Names are matched loosely: the sampler's metrics are still being
/// named, and a report that lists them all is what an operator wants.
pub fn decision_and_drop_counters(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => match line.split_once(' ') {
                Some((name, value)) => (name, value.trim()),
                None => continue,
            },
        };
        let name = series.split('{').next().unwrap_or(series);
        if !name.starts_with("tailgate_")
            || !(name.contains("decision") || name.contains("drop"))
            || name.ends_with("_bucket")
        {
            continue;
        }
        let Some(value) = value
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push((without_node_label(series), value));
    }
    out
}

fn without_node_label(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_owned();
    };
    let labels = labels.trim_end_matches('}');
    let kept: Vec<&str> = split_labels(labels)
        .into_iter()
        .filter(|l| !l.starts_with("node="))
        .collect();
    if kept.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", kept.join(","))
    }
}

/// Splits `a="x",b="y,z"` at the commas between labels.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_and_drop_counters_are_picked_and_summed_over_nodes() {
        let text = "# HELP tailgate_decisions_total Decisions.\n\
            # TYPE tailgate_decisions_total counter\n\
            tailgate_decisions_total{node=\"s0\",decision=\"sampled\"} 10\n\
            tailgate_decisions_total{decision=\"not_sampled\",node=\"s0\"} 90\n\
            tailgate_spans_dropped_total{node=\"s0\",reason=\"a,b\"} 3 1700000000\n\
            tailgate_spans_received_total{node=\"s0\"} 1000\n\
            tailgate_decision_seconds_bucket{node=\"s0\",le=\"1\"} 4\n\
            other_dropped_total 5\n\
            tailgate_traces_dropped_total 2\n";
        let got = decision_and_drop_counters(text);
        assert_eq!(
            got,
            vec![
                (
                    "tailgate_decisions_total{decision=\"sampled\"}".to_string(),
                    10.0
                ),
                (
                    "tailgate_decisions_total{decision=\"not_sampled\"}".to_string(),
                    90.0
                ),
                (
                    "tailgate_spans_dropped_total{reason=\"a,b\"}".to_string(),
                    3.0
                ),
                ("tailgate_traces_dropped_total".to_string(), 2.0),
            ]
        );
    }
}
