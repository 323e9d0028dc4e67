//! The `tailgate-loadtest` binary: bounded runs, exit codes, and a whole
//! sink → gen → verify round through the command line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailgate-loadtest"))
}

#[test]
fn gen_without_a_count_or_duration_is_a_usage_error() {
    let out = binary()
        .args(["gen", "--endpoints", "grpc://127.0.0.1:9"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("count and/or a duration"));
}

#[test]
fn a_forwarder_without_a_bound_is_a_usage_error() {
    let out = binary()
        .args([
            "forward",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
}

#[test]
fn a_sink_without_a_bound_is_a_usage_error() {
    let out = binary().args(["sink"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration, --count"));
}

#[test]
fn bench_without_endpoints_and_without_a_tailgate_binary_says_what_it_tried() {
    let out = binary()
        .args(["bench", "--duration", "1s", "--baseline", "0s"])
        .args(["--sink-grpc", "127.0.0.1:0", "--sink-http", "off"])
        .args(["--tailgate", "/nonexistent/tailgate"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&out.stderr).contains("starting /nonexistent/tailgate"));
}

#[test]
fn a_bad_endpoint_is_a_usage_error() {
    let out = binary()
        .args(["gen", "--endpoints", "localhost:4317", "--count", "1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn sink_gen_and_verify_round_trip_through_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record.bin");
    let manifest = dir.path().join("manifest.jsonl");
    // Bounded by --duration; the test ends it sooner with SIGINT.
    let mut sink = binary()
        .args([
            "sink",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "off",
            "--duration",
            "120s",
        ])
        .arg("--record")
        .arg(&record)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sink starts");
    let mut first = String::new();
    BufReader::new(sink.stderr.take().expect("stderr"))
        .read_line(&mut first)
        .expect("the sink says where it listens");
    let endpoint = first
        .trim()
        .strip_prefix("sink: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    let gen_out = binary()
        .args([
            "gen",
            "--endpoints",
            &endpoint,
            "--count",
            "1000",
            "--rate",
            "20000",
        ])
        .args([
            "--spread",
            "100ms",
            "--error-rate",
            "0.1",
            "--slow-rate",
            "0.1",
            "--quiet",
        ])
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .expect("gen runs");
    assert_eq!(gen_out.status.code(), Some(0), "{gen_out:?}");
    assert!(String::from_utf8_lossy(&gen_out.stdout).contains("1,000 sent"));

    let interrupted = Command::new("kill")
        .args(["-INT", &sink.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let sink_out = sink.wait_with_output().expect("sink exits");
    assert_eq!(sink_out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&sink_out.stdout).contains("1000 spans in"),
        "{sink_out:?}"
    );

    let verify = binary()
        .arg("verify")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--record")
        .arg(&record)
        .args([
            "--expect-errors",
            "--expect-slow-ms",
            "500",
            "--expect-probability",
            "1",
        ])
        .output()
        .expect("verify runs");
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
}
