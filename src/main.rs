//! `tailgate`: parse the command line and dispatch. No logic lives here.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;

/// Exit code for a bad command line or configuration (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code for a subcommand that is declared but not built yet (EX_UNAVAILABLE).
const EXIT_NOT_BUILT: u8 = 69;

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
    },
    /// Sampler node: buffer traces, decide, forward the kept ones to the backend.
    Sampler {
        /// YAML configuration file.
        #[arg(long, env = "TAILGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// An LB and N samplers in one process on loopback.
    Local {
        /// Number of sampler nodes.
        #[arg(long, default_value_t = 3)]
        samplers: usize,
        /// Policy file (tail_sampling syntax); default: the embedded example.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Where kept traces go: grpc://HOST:PORT, http://HOST:PORT, file:PATH or stdout.
        #[arg(long, default_value = "stdout")]
        export: String,
    },
    /// Check or try out a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print the policies in effect.
    Check { file: PathBuf },
    /// Decide the traces of an OTLP/JSON file with a policy file.
    Test { file: PathBuf, traces: PathBuf },
}

fn not_built(what: &str, issue: u32) -> ExitCode {
    eprintln!("tailgate {what}: not built yet (tracked in issue {issue})");
    ExitCode::from(EXIT_NOT_BUILT)
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
        Command::Lb { .. } => not_built("lb", 5),
        Command::Sampler { .. } => not_built("sampler", 4),
        Command::Local { .. } => not_built("local", 7),
        Command::Policy(PolicyCommand::Check { file }) => report(policy::cli::check(&file)),
        Command::Policy(PolicyCommand::Test { file, traces }) => {
            report(policy::cli::test(&file, &traces))
        }
    }
}
