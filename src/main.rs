//! `tailgate`: parse the command line and dispatch. No logic lives here.
// Denied, not forbidden: `tune_malloc` below is the one exception.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;
mod egress;
mod local;
mod nodes;

/// Exit code for a bad command line or configuration (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "tailgate",
    version,
    about = "Tail-sampling cluster for OpenTelemetry traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load balancer: route every span by trace ID to the sampler that owns it.
    Lb {
        /// YAML configuration file.
        #[arg(long, env = "TAILGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Override one config key: `--set resolver.static.members=[10.0.0.1:4317]`.
        /// Environment variables `TAILGATE__A__B=value` override keys too.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Sampler node: buffer traces, decide, forward the kept ones to the backend.
    Sampler {
        /// YAML configuration file.
        #[arg(long, env = "TAILGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Override one config key: `--set exporter.endpoint=http://tempo:4317`.
        /// Environment variables `TAILGATE__A__B=value` override keys too.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// An LB and N samplers in one process on loopback.
    Local {
        /// Number of sampler nodes.
        #[arg(long, default_value_t = 3)]
        samplers: usize,
        /// Policy file (tail_sampling syntax); default: the embedded example.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Where kept traces go: grpc://HOST:PORT, http://HOST:PORT, file:PATH
        /// (OTLP/JSON lines) or stdout (a line per kept trace).
        #[arg(long, default_value = "stdout")]
        export: egress::Target,
        /// The LB's OTLP/gRPC listen address.
        #[arg(long, default_value = "127.0.0.1:4317")]
        grpc: SocketAddr,
        /// The LB's OTLP/HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:4318")]
        http: SocketAddr,
        /// The admin address (/metrics of every node, /healthz, /readyz).
        #[arg(long, default_value = "127.0.0.1:8888")]
        admin: SocketAddr,
        /// Override a key of every sampler's config (as `tailgate sampler --set`),
        /// e.g. `--set-sampler exporter.queue_bytes=4194304`.
        #[arg(long = "set-sampler", value_name = "KEY=VALUE")]
        set_sampler: Vec<String>,
        /// Override a key of the LB's config (as `tailgate lb --set`).
        #[arg(long = "set-lb", value_name = "KEY=VALUE")]
        set_lb: Vec<String>,
    },
    /// Check a node's config, or print the config in effect.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check or try out a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a node config (and the policy file it names) as the node
    /// would at startup, without binding a port: exit 0, or 64.
    Check {
        /// The node's role.
        #[arg(long, value_enum)]
        role: nodes::Role,
        /// The YAML config (for `lb`, also a whole Collector configuration).
        file: PathBuf,
        /// Override one config key, as the node's `--set`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Print the config in effect after the file, the environment and
    /// `--set`, with every key; secrets (header values) redacted.
    Print {
        /// The node's role.
        #[arg(long, value_enum)]
        role: nodes::Role,
        /// YAML configuration file.
        #[arg(long, env = "TAILGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Override one config key, as the node's `--set`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print the policies in effect.
    Check { file: PathBuf },
    /// Decide the traces of an OTLP/JSON file with a policy file.
    Test { file: PathBuf, traces: PathBuf },
    /// Write a policy file from another sampler's rules.
    #[command(subcommand)]
    Convert(ConvertCommand),
}

#[derive(Subcommand)]
enum ConvertCommand {
    /// From a Honeycomb Refinery rules file (RulesVersion 2); see
    /// docs/migration-refinery.md.
    Refinery {
        /// The Refinery rules file (YAML).
        file: PathBuf,
        /// Write the policy file here instead of printing it.
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<PathBuf>,
        /// Convert only this environment's sampler (e.g. `__default__`).
        #[arg(long, value_name = "NAME")]
        environment: Option<String>,
    },
}

/// A bad command line or configuration: say why, exit 64 before binding anything.
fn usage_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tailgate: {e}");
    ExitCode::from(EXIT_USAGE)
}

/// A node's config from its file, the environment and `--set`, checked,
/// with what reading the file had to say; on any error the message is
/// printed and the exit code (64) returned.
fn node_config<T, E>(
    loaded: Result<config::Loaded<T>, config::ConfigError>,
    validate: fn(&T) -> Result<(), E>,
) -> Result<config::Loaded<T>, ExitCode>
where
    E: std::fmt::Display,
{
    let loaded = loaded.map_err(|e| usage_error(&e))?;
    validate(&loaded.config).map_err(|e| usage_error(&e))?;
    Ok(loaded)
}

/// Runs a node on a multi-threaded runtime until SIGTERM or SIGINT, which
/// start its staged shutdown. The node's error is `(is_config, message)`.
fn serve<F, Fut>(node: F) -> ExitCode
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<(), (bool, String)>>,
{
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tailgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = shutdown_signal();
        match node(Box::pin(shutdown)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err((true, message)) => usage_error(&message),
            Err((false, message)) => {
                eprintln!("tailgate: {message}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Completes on the first SIGTERM or SIGINT. The handlers are installed
/// here, when called, not when the future is first polled: a signal that
/// arrives while the node is still starting must start its shutdown, not
/// kill the process with the default action.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the node can only be killed; run until then.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

/// Logs to stderr; `RUST_LOG` sets the filter (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Prints a command's output and turns its status into the exit code.
fn report((output, code): (String, i32)) -> ExitCode {
    if code == 0 {
        print!("{output}");
    } else {
        eprint!("{output}");
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Keeps freed heap memory mapped instead of handing it back to the kernel
/// at once. With glibc's defaults (blocks over 128 KiB mmap'd, free memory
/// at a heap's top returned past 128 KiB, both thresholds creeping up as
/// blocks are freed), a node returns and refaults the pages of its ~100 KB
/// request bodies and its export batches between requests. Measured
/// (BENCHMARKS.md, eighth pass on issue 19): an LB at 50k spans/s took
/// 20,700-24,100 page faults in 10 s without this and 320 with it, and 13 %
/// less CPU per span (median of five runs); a sampler at 100k spans/s a
/// fifth fewer faults and 2-4 % less CPU per span (side-by-side pairs). A
/// heap keeps at most `M_TRIM_THRESHOLD` (32 MiB) free before returning it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY: mallopt only sets two of the allocator's parameters; it is
    // called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// The glibc tunables a sampler runs with: transparent huge pages for its
/// heap (`hugetlb=1`: glibc marks the heap `MADV_HUGEPAGE`, which THP's
/// usual `madvise` mode waits for) and heaps grown 64 MiB at a time
/// (`top_pad`), so that the grown part holds whole 2 MiB pages to fault in.
/// A sampler's buffer is a hundred megabytes and more, touched at random:
/// with 4 KiB pages nearly every touch also walks the page tables, and in a
/// VM that walk is itself several trips to memory. Measured (BENCHMARKS.md,
/// twelfth pass on issue 19): 86-98 of 100-110 MiB in huge pages instead of
/// 6, and 1.46-1.61x the spans per sampler CPU-second in side-by-side pairs
/// at 100k spans/s; hugetlb alone left the heap in 4 KiB pages (it grew in
/// 128 KiB steps) and gained nothing.
const SAMPLER_TUNABLES: &str = "glibc.malloc.hugetlb=1:glibc.malloc.top_pad=67108864";

/// Runs this process again with [`SAMPLER_TUNABLES`] added to
/// `GLIBC_TUNABLES`, which glibc reads only at start. Not when
/// `GLIBC_TUNABLES` already names `glibc.malloc.hugetlb` (set
/// `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` to run without huge pages), so
/// the run it starts goes on. Returns only if that run could not start, and
/// the node then runs as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rerun_with_sampler_tunables() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "GLIBC_TUNABLES";
    let current = std::env::var_os(VAR).unwrap_or_default();
    if current.to_string_lossy().contains("glibc.malloc.hugetlb") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut tunables = current;
    if !tunables.is_empty() {
        tunables.push(":");
    }
    tunables.push(SAMPLER_TUNABLES);
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command.args(args).env(VAR, tunables).exec();
    eprintln!("tailgate: running without huge pages for the heap: {error}");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rerun_with_sampler_tunables() {}

fn main() -> ExitCode {
    tune_malloc();
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
    // The commands that run a sampler's buffer (`local` runs samplers in
    // this process) run it with huge pages.
    if matches!(cli.command, Command::Sampler { .. } | Command::Local { .. }) {
        rerun_with_sampler_tunables();
    }
    match cli.command {
        Command::Lb { config, set } => {
            let loaded = nodes::load_lb(config.as_deref(), std::env::vars(), &set);
            let loaded = match node_config(loaded, lb_exporter::LbConfig::validate) {
                Ok(l) => l,
                Err(code) => return code,
            };
            serve(|shutdown| async move {
                for note in &loaded.notes {
                    tracing::info!("config: {note}");
                }
                lb_exporter::run(loaded.config, shutdown)
                    .await
                    .map_err(|e| (e.is_config(), e.to_string()))
            })
        }
        Command::Sampler { config, set } => {
            let loaded = nodes::load_sampler(config.as_deref(), std::env::vars(), &set);
            let loaded = match node_config(loaded, sampler::SamplerConfig::validate) {
                Ok(l) => l,
                Err(code) => return code,
            };
            serve(|shutdown| async move {
                sampler::run(loaded.config, shutdown)
                    .await
                    .map_err(|e| (e.is_config(), e.to_string()))
            })
        }
        Command::Local {
            samplers,
            policy,
            export,
            grpc,
            http,
            admin,
            set_sampler,
            set_lb,
        } => serve(|shutdown| {
            local::run(
                local::LocalConfig {
                    samplers,
                    policy,
                    export,
                    grpc,
                    http,
                    admin,
                    set_sampler,
                    set_lb,
                },
                shutdown,
            )
        }),
        Command::Config(ConfigCommand::Check { role, file, set }) => {
            report(nodes::check(role, &file, std::env::vars(), &set))
        }
        Command::Config(ConfigCommand::Print { role, config, set }) => report(nodes::print(
            role,
            config.as_deref(),
            std::env::vars(),
            &set,
        )),
        Command::Policy(PolicyCommand::Check { file }) => report(policy::cli::check(&file)),
        Command::Policy(PolicyCommand::Test { file, traces }) => {
            report(policy::cli::test(&file, &traces))
        }
        Command::Policy(PolicyCommand::Convert(ConvertCommand::Refinery {
            file,
            output,
            environment,
        })) => report(policy::cli::convert_refinery(
            &file,
            output.as_deref(),
            environment.as_deref(),
        )),
    }
}
