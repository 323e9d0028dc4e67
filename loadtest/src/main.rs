//! `tailgate-loadtest`: parse the command line, call the library, print the
//! report, exit. Exit codes: 0 done (verify: passed), 1 verify failed (or
//! gen sent nothing), 64 a bad command line, 65 a malformed manifest or
//! record, 74 an I/O or network failure (including a `tailgate local` the
//! bench could not start).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loadtest::bench::{self, BenchConfig};
use loadtest::generate::{self, GenConfig};
use loadtest::shape::ShapeConfig;
use loadtest::sink::{self, Bounds, Outage, SinkConfig};
use loadtest::transport::Endpoint;
use loadtest::verify::{self, Expectations, VerifyError};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 64;
const EXIT_DATA: u8 = 65;
const EXIT_IO: u8 = 74;

#[derive(Parser)]
#[command(
    name = "tailgate-loadtest",
    version,
    about = "Load generator, recording sink, verifier and bench runner for tailgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send traces at a target span rate; write a manifest of what was sent.
    Gen(GenArgs),
    /// Receive OTLP (gRPC and HTTP), count it, record it, refuse it for a while.
    Sink(SinkArgs),
    /// Check a sink's record against gen's manifest under the policy's keep rules.
    Verify(VerifyArgs),
    /// gen → cluster → sink for a fixed time, then a report.
    Bench(Box<BenchArgs>),
    /// Copy TCP connections to an upstream unread: the floor of an LB's
    /// cost on this host (`bench --figure lb-cpu` runs it beside the LB).
    Forward(ForwardArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 30s, 500ms, 2m)"))
}

/// A listen address or `off` (a newtype: clap reads a bare `Option` field
/// as "flag may be absent").
#[derive(Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|addr| Listen(Some(addr)))
        .map_err(|e| format!("{s:?}: {e} (expected IP:PORT or off)"))
}

/// The traffic: where, how much, what shape.
#[derive(Args, Clone)]
struct TrafficArgs {
    /// Where to send: grpc://HOST:PORT or http://HOST:PORT[/PATH], comma-separated
    /// or repeated; connections are spread over them.
    #[arg(long = "endpoints", alias = "endpoint", value_delimiter = ',')]
    endpoints: Vec<Endpoint>,
    /// Connections, in total.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Target spans per second.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Stop after this many spans.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Spans per request.
    #[arg(long, default_value_t = 512)]
    batch_spans: u32,
    /// Send a request that is not full this long after its first span.
    #[arg(long, value_parser = duration, default_value = "50ms")]
    batch_timeout: Duration,
    /// Services (OTLP resources) per trace.
    #[arg(long, default_value_t = 5)]
    services: u32,
    /// Mean spans per trace (geometric distribution).
    #[arg(long, default_value_t = 8.0)]
    mean_spans: f64,
    /// Most spans per trace.
    #[arg(long, default_value_t = 64)]
    max_spans: u32,
    /// Share of traces with an error span.
    #[arg(long, default_value_t = 0.01)]
    error_rate: f64,
    /// Share of traces slower than --slow-ms.
    #[arg(long, default_value_t = 0.01)]
    slow_rate: f64,
    /// The latency threshold of the policy: slow traces last 1.2–2× this,
    /// the others at most a fifth of it.
    #[arg(long, default_value_t = 500)]
    slow_ms: u64,
    /// Encoded attribute bytes per span.
    #[arg(long, default_value_t = 128)]
    attribute_bytes: usize,
    /// Most requests one trace is sent in.
    #[arg(long, default_value_t = 3)]
    chunks: u32,
    /// Time from a trace's first request to its last.
    #[arg(long, value_parser = duration, default_value = "1s")]
    spread: Duration,
    /// Random seed (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Retries of one refused request before giving up on it.
    #[arg(long, default_value_t = 10)]
    max_retries: u32,
    /// After the last trace, how long queued requests and retries may take.
    #[arg(long, value_parser = duration, default_value = "30s")]
    drain_timeout: Duration,
    /// Per request.
    #[arg(long, value_parser = duration, default_value = "10s")]
    timeout: Duration,
    /// Runtime worker threads (the generator takes one more, blocking).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl TrafficArgs {
    fn config(&self) -> GenConfig {
        GenConfig {
            endpoints: self.endpoints.clone(),
            connections: self.connections,
            rate: self.rate,
            count: self.count,
            duration: self.duration,
            batch_spans: self.batch_spans,
            batch_timeout: self.batch_timeout,
            shape: ShapeConfig {
                services: self.services,
                mean_spans: self.mean_spans,
                max_spans: self.max_spans,
                error_rate: self.error_rate,
                slow_rate: self.slow_rate,
                slow_threshold: Duration::from_millis(self.slow_ms),
                attribute_bytes: self.attribute_bytes,
                max_chunks: self.chunks,
                spread: self.spread,
            },
            seed: self.seed,
            manifest: None,
            max_retries: self.max_retries,
            drain_timeout: self.drain_timeout,
            request_timeout: self.timeout,
            progress: true,
        }
    }
}

#[derive(Args)]
struct GenArgs {
    #[command(flatten)]
    traffic: TrafficArgs,
    /// Write the manifest (JSON lines) here.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ForwardArgs {
    /// Listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// Where each connection is copied to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Each direction's buffer, per connection, in KiB.
    #[arg(long, default_value_t = loadtest::forward::DEFAULT_BUFFER >> 10)]
    buffer_kib: usize,
    /// Stop after this long.
    #[arg(long, value_parser = duration)]
    duration: Duration,
}

#[derive(Args)]
struct SinkArgs {
    /// OTLP/gRPC listen address, or off.
    #[arg(long, value_parser = listen, default_value = "127.0.0.1:14317")]
    grpc: Listen,
    /// OTLP/HTTP listen address, or off.
    #[arg(long, value_parser = listen, default_value = "127.0.0.1:14318")]
    http: Listen,
    /// Record every accepted span here (binary, see the docs).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Stop after this long.
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Stop once this many spans were accepted.
    #[arg(long)]
    count: Option<u64>,
    /// Stop once spans arrived and then none for this long.
    #[arg(long, value_parser = duration)]
    idle_exit: Option<Duration>,
    /// Start refusing (UNAVAILABLE / 503) this long after the start…
    #[arg(long, value_parser = duration, requires = "outage_for")]
    outage_after: Option<Duration>,
    /// …for this long.
    #[arg(long, value_parser = duration)]
    outage_for: Option<Duration>,
    /// The retry delay sent with a refusal.
    #[arg(long, value_parser = duration, default_value = "1s")]
    retry_after: Duration,
    #[arg(long)]
    quiet: bool,
    /// Print the counts as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct ExpectArgs {
    /// Every error trace must arrive whole.
    #[arg(long)]
    expect_errors: bool,
    /// Every trace lasting at least this many ms must arrive whole.
    #[arg(long)]
    expect_slow_ms: Option<u64>,
    /// The share of the other traces that arrives (whole) is this, within 4σ.
    #[arg(long)]
    expect_probability: Option<f64>,
}

impl ExpectArgs {
    fn expectations(&self) -> Result<Expectations, String> {
        if let Some(p) = self.expect_probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("--expect-probability {p}: must be 0 to 1"));
        }
        Ok(Expectations {
            errors: self.expect_errors,
            slow: self.expect_slow_ms.map(Duration::from_millis),
            probability: self.expect_probability,
        })
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// gen's manifest; repeat for several gens.
    #[arg(long, required = true)]
    manifest: Vec<PathBuf>,
    /// The sink's record; repeat for several sinks.
    #[arg(long, required = true)]
    record: Vec<PathBuf>,
    #[command(flatten)]
    expect: ExpectArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    traffic: TrafficArgs,
    /// A process of the cluster to measure, PID or PID=NAME; repeat.
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// A node's admin metrics URL (http://HOST:8888/metrics); repeat.
    #[arg(long)]
    metrics: Vec<String>,
    /// The sink's (backend's) OTLP/gRPC address, or off.
    #[arg(long, value_parser = listen, default_value = "127.0.0.1:14317")]
    sink_grpc: Listen,
    /// The sink's OTLP/HTTP address, or off.
    #[arg(long, value_parser = listen, default_value = "127.0.0.1:14318")]
    sink_http: Listen,
    /// How long gen runs straight into a local sink first (latency baseline); 0s skips it.
    #[arg(long, value_parser = duration, default_value = "2s")]
    baseline: Duration,
    /// The least wait after gen for the cluster to decide and export.
    #[arg(long, value_parser = duration, default_value = "12s")]
    settle: Duration,
    /// Where the manifest and record go (default: a new directory under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Do not require error traces whole.
    #[arg(long)]
    no_expect_errors: bool,
    /// Traces at least this long must arrive whole; 0 turns the check off.
    #[arg(long, default_value_t = 500)]
    expect_slow_ms: u64,
    /// Share of the other traces expected; a negative value turns the check off.
    #[arg(long, default_value_t = 0.10, allow_negative_numbers = true)]
    expect_probability: f64,
    #[arg(long)]
    quiet: bool,
    #[arg(long)]
    json: bool,
    /// Without --endpoints: the `tailgate` binary to start `tailgate local` with
    /// (default: the one beside this executable).
    #[arg(long)]
    tailgate: Option<PathBuf>,
    /// Without --endpoints: sampler nodes of the local cluster.
    #[arg(long, default_value_t = 3)]
    samplers: usize,
    /// Without --endpoints: start `tailgate lb` with the sink as its one
    /// member instead of `tailgate local` (the LB alone; use
    /// --expect-probability 1 --expect-slow-ms 0).
    #[arg(long)]
    lb_only: bool,
    /// Without --endpoints: override a key of the LB's config; repeat.
    #[arg(long = "set-lb", value_name = "KEY=VALUE")]
    set_lb: Vec<String>,
    /// Reproduce a figure of BENCHMARKS.md instead of one run: its scenarios
    /// (rate, connections) run each for --duration (default 10s) on the
    /// `tailgate` binary, and on every --against binary in turn; repeat.
    #[arg(long, value_enum)]
    figure: Vec<loadtest::figures::Figure>,
    /// With --figure: another `tailgate` binary (LABEL=PATH, e.g. an older
    /// build) to run every scenario on too; repeat.
    #[arg(long, value_name = "LABEL=PATH")]
    against: Vec<String>,
    /// With --figure: run the whole figure this many times, the binaries
    /// taking turns to go first; ratios are then given per repetition and
    /// as their median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    repeat: u16,
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn usage(message: &str) -> ExitCode {
    eprintln!("tailgate-loadtest: {message}");
    ExitCode::from(EXIT_USAGE)
}

fn failure(e: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("tailgate-loadtest: {e:#}");
    ExitCode::from(code)
}

async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn forward_command(args: ForwardArgs) -> ExitCode {
    if args.buffer_kib == 0 {
        return usage("--buffer-kib must be at least 1");
    }
    let run = || -> anyhow::Result<()> {
        // Like the LB's runtime: one worker per core, or TOKIO_WORKER_THREADS.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            eprintln!("forward: {} → {}", args.listen, args.upstream);
            let stop = tokio_util::sync::CancellationToken::new();
            let timer = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(args.duration) => {}
                    () = interrupted() => {}
                }
                timer.cancel();
            });
            loadtest::forward::run(listener, args.upstream, args.buffer_kib << 10, stop)
                .await
                .context("accepting")
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure(&e, EXIT_IO),
    }
}

fn gen_command(args: GenArgs) -> ExitCode {
    let mut config = args.traffic.config();
    config.manifest = args.manifest;
    config.progress = !args.quiet;
    if let Err(e) = config.validate() {
        return usage(&e.to_string());
    }
    let run = || -> anyhow::Result<ExitCode> {
        let report = runtime(args.traffic.threads)?.block_on(generate::run(config))?;
        if args.json {
            print_json(&report)?;
        } else {
            println!("{report}");
        }
        Ok(if report.spans_sent == 0 {
            ExitCode::from(EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        })
    };
    run().unwrap_or_else(|e| failure(&e, EXIT_IO))
}

fn sink_command(args: SinkArgs) -> ExitCode {
    if args.duration.is_none() && args.count.is_none() && args.idle_exit.is_none() {
        return usage("a sink needs --duration, --count and/or --idle-exit, to end by itself");
    }
    if args.grpc.0.is_none() && args.http.0.is_none() {
        return usage("--grpc and --http are both off");
    }
    let config = SinkConfig {
        grpc: args.grpc.0,
        http: args.http.0,
        record: args.record,
        outage: args.outage_for.map(|length| Outage {
            after: args.outage_after.unwrap_or_default(),
            length,
        }),
        retry_after: args.retry_after,
        ..SinkConfig::default()
    };
    let bounds = Bounds {
        duration: args.duration,
        count: args.count,
        idle: args.idle_exit,
    };
    let run = || -> anyhow::Result<()> {
        let stats = runtime(2)?.block_on(async {
            let running = sink::start(config).await?;
            let addrs = [
                running.grpc_addr().map(|a| format!("grpc://{a}")),
                running.http_addr().map(|a| format!("http://{a}")),
            ];
            eprintln!(
                "sink: listening on {}",
                addrs.into_iter().flatten().collect::<Vec<_>>().join(", ")
            );
            sink::run_started(running, bounds, !args.quiet, interrupted()).await
        })?;
        if args.json {
            print_json(&stats)?;
        } else {
            println!(
                "sink: {} spans in {} requests accepted, {} recorded, {} refused, {} invalid",
                stats.spans, stats.requests, stats.recorded, stats.refused, stats.invalid
            );
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure(&e, EXIT_IO),
    }
}

fn verify_command(args: VerifyArgs) -> ExitCode {
    let expect = match args.expect.expectations() {
        Ok(e) => e,
        Err(e) => return usage(&e),
    };
    let show = |report: &verify::VerifyReport| -> anyhow::Result<()> {
        if args.json {
            print_json(report)
        } else {
            println!("{report}");
            Ok(())
        }
    };
    match verify::verify_files(&args.manifest, &args.record, expect) {
        Ok(report) => match show(&report) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failure(&e, EXIT_IO),
        },
        Err(VerifyError::Failed(report)) => {
            let _ = show(&report);
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            let io = matches!(
                &e,
                VerifyError::Manifest(loadtest::manifest::ManifestError::Io { .. })
                    | VerifyError::Record(loadtest::record::RecordError::Io { .. })
            );
            failure(&e.into(), if io { EXIT_IO } else { EXIT_DATA })
        }
    }
}

fn bench_command(args: BenchArgs) -> ExitCode {
    let mut traffic = args.traffic.config();
    let figure_duration = traffic.duration.unwrap_or(Duration::from_secs(10));
    traffic.duration = traffic.duration.or(Some(Duration::from_secs(30)));
    traffic.progress = !args.quiet;
    // Without endpoints the bench starts `tailgate local` and fills them in;
    // check the rest of the traffic settings now, against a placeholder.
    let mut check = traffic.clone();
    if check.endpoints.is_empty() {
        check.endpoints = vec![loadtest::transport::Endpoint::grpc(SocketAddr::from((
            [127, 0, 0, 1],
            4317,
        )))];
    }
    if let Err(e) = check.validate() {
        return usage(&e.to_string());
    }
    let mut pids = Vec::new();
    for spec in &args.pids {
        let (pid, name) = spec.split_once('=').unwrap_or((spec, ""));
        match pid.parse::<u32>() {
            Ok(pid) if name.is_empty() => pids.push((pid, format!("pid {pid}"))),
            Ok(pid) => pids.push((pid, name.to_owned())),
            Err(_) => return usage(&format!("--pid {spec:?}: expected PID or PID=NAME")),
        }
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        std::env::temp_dir().join(format!("tailgate-bench-{stamp}-{}", std::process::id()))
    });
    let config = BenchConfig {
        traffic,
        sink: SinkConfig {
            grpc: args.sink_grpc.0,
            http: args.sink_http.0,
            ..SinkConfig::default()
        },
        pids,
        metrics: args.metrics.clone(),
        baseline: args.baseline,
        settle: args.settle,
        expect: Expectations {
            errors: !args.no_expect_errors,
            slow: (args.expect_slow_ms > 0).then(|| Duration::from_millis(args.expect_slow_ms)),
            probability: (args.expect_probability >= 0.0).then_some(args.expect_probability),
        },
        dir: dir.clone(),
        local: bench::LocalSpec {
            tailgate: args.tailgate.clone(),
            samplers: args.samplers,
            role: if args.lb_only {
                bench::LocalRole::Lb
            } else {
                bench::LocalRole::Local
            },
            set_lb: args.set_lb.clone(),
            // `forward` is a subcommand of this binary.
            loadtest: None,
        },
    };
    if !args.figure.is_empty() {
        return figures_command(&args, config, figure_duration, &dir);
    }
    let run = || -> anyhow::Result<ExitCode> {
        let report = runtime(args.traffic.threads)?.block_on(bench::run(config))?;
        if args.json {
            print_json(&report)?;
        } else {
            println!("{report}");
            println!("manifest and record in {}", dir.display());
        }
        Ok(if report.verify.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        })
    };
    run().unwrap_or_else(|e| failure(&e, EXIT_IO))
}

/// `bench --figure`: every scenario of every figure named, on each binary.
fn figures_command(
    args: &BenchArgs,
    base: BenchConfig,
    duration: Duration,
    dir: &std::path::Path,
) -> ExitCode {
    if !base.traffic.endpoints.is_empty() {
        return usage("--figure starts its own clusters: leave out --endpoints");
    }
    let mut tailgates = vec![("this".to_owned(), args.tailgate.clone())];
    for spec in &args.against {
        match spec.split_once('=') {
            Some((label, path)) if !label.is_empty() && !path.is_empty() => {
                tailgates.push((label.to_owned(), Some(PathBuf::from(path))));
            }
            _ => return usage(&format!("--against {spec:?}: expected LABEL=PATH")),
        }
    }
    let run = || -> anyhow::Result<ExitCode> {
        let runtime = runtime(args.traffic.threads)?;
        let mut passed = true;
        let mut reports = Vec::new();
        for figure in &args.figure {
            let mut base = base.clone();
            base.dir = dir.join(format!("{figure:?}").to_lowercase());
            let report =
                runtime.block_on(loadtest::figures::run(loadtest::figures::FigureConfig {
                    figure: *figure,
                    base,
                    tailgates: tailgates.clone(),
                    duration,
                    repeat: usize::from(args.repeat),
                }))?;
            passed &= report.passed();
            if !args.json {
                println!(
                    "figure {figure:?}, {} s per run\n{report}",
                    duration.as_secs_f64()
                );
            }
            reports.push(report);
        }
        if args.json {
            print_json(&reports)?;
        } else {
            println!("manifests and records in {}", dir.display());
        }
        Ok(if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        })
    };
    run().unwrap_or_else(|e| failure(&e, EXIT_IO))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Command::Gen(args) => gen_command(args),
        Command::Sink(args) => sink_command(args),
        Command::Verify(args) => verify_command(args),
        Command::Bench(args) => bench_command(*args),
        Command::Forward(args) => forward_command(args),
    }
}
