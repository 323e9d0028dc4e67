//! Logs through a rescale of the sampler tier (issue 17, point 8): the real
//! OpenTelemetry Python SDK (scripts/otel_sdk_logs.py: TracerProvider +
//! BatchSpanProcessor, LoggerProvider + BatchLogRecordProcessor, OTLP/gRPC)
//! sends, through each of the two LBs, traces with an error (kept by the
//! errors-only policy) and traces without (dropped), log records inside
//! their spans and outside any span, while the sampler tier scales 3 → 5
//! and back to 3. The log records of every kept trace arrive, none of a
//! dropped trace, every record without a trace ID, each once; every live
//! sampler's log books balance.
//!
//! Needs a Python with the SDK (scripts/requirements-test.txt), from
//! `TAILGATE_TEST_PYTHON` or `<workspace>/.venv/bin/python`; fails without.

mod cluster_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster_support::*;
use serde_json::Value as Json;

/// Errors only: the SDK's error traces are kept, the others are not.
const ERRORS_ONLY: &str = "\
decision_wait: 5s
decision_wait_after_root_received: 2s
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";

/// Rounds of the SDK script per LB (two traces, six records each), and the
/// pause between them: about 12 s of traffic.
const ROUNDS: &str = "40";
const PAUSE: &str = "0.3";

fn python() -> PathBuf {
    let python = std::env::var_os("TAILGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with the OpenTelemetry SDK at {}: see scripts/requirements-test.txt",
        python.display()
    );
    python
}

/// What one SDK run emitted.
struct Emitted {
    kept: BTreeSet<String>,
    dropped: BTreeSet<String>,
    records: Vec<(String, Option<String>)>,
}

/// Runs the SDK script against `lb` (bounded: 120 s) in the background.
fn run_sdk(lb: SocketAddr, tag: usize) -> tokio::task::JoinHandle<Emitted> {
    let mut command = Command::new(python());
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/otel_sdk_logs.py"))
        .args(["--endpoint", &format!("http://{lb}"), "--protocol", "grpc"])
        .args(["--rounds", ROUNDS, "--pause", PAUSE])
        .arg(format!("--tag=-lb{tag}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "200")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS");
    tokio::spawn(async move {
        let output = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::task::spawn_blocking(move || command.output()),
        )
        .await
        .expect("the SDK script ends within 120 s")
        .expect("the blocking task")
        .expect("python starts");
        assert!(
            output.status.success(),
            "the SDK failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: Json = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
        let ids = |key: &str| -> BTreeSet<String> {
            json[key]
                .as_array()
                .expect("a list of trace IDs")
                .iter()
                .map(|t| t.as_str().expect("hex").to_owned())
                .collect()
        };
        Emitted {
            kept: ids("kept_traces"),
            dropped: ids("dropped_traces"),
            records: json["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|r| {
                    (
                        r["body"].as_str().expect("body").to_owned(),
                        r["trace_id"].as_str().map(str::to_owned),
                    )
                })
                .collect(),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_logs_follow_their_traces_through_a_rescale_from_three_samplers_to_five_and_back() {
    let mut cluster = Cluster::start_with_policy("logs-scale", 3, 5, ERRORS_ONLY).await;
    let runs: Vec<_> = cluster
        .lb_grpc
        .iter()
        .enumerate()
        .map(|(i, lb)| run_sdk(*lb, i))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.add_sampler(3).await;
    cluster.add_sampler(4).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The newcomers took log records (from the LBs, or moved to them with
    // their traces) before they leave again.
    let mut joined = 0.0;
    for i in [3, 4] {
        joined += cluster
            .metrics(i)
            .await
            .sum("tailgate_log_records_received_total", &[]);
    }
    assert!(joined > 0.0, "the new samplers received log records");
    cluster.stop_samplers(&[3, 4]).await;
    let mut kept = BTreeSet::new();
    let mut dropped = BTreeSet::new();
    let mut emitted = Vec::new();
    for run in runs {
        let run = run.await.expect("the SDK run");
        kept.extend(run.kept);
        dropped.extend(run.dropped);
        emitted.extend(run.records);
    }
    cluster.quiesce(Duration::from_secs(40)).await;

    let want: BTreeSet<(String, Option<String>)> = emitted
        .iter()
        .filter(|(_, trace)| trace.as_ref().is_none_or(|t| kept.contains(t)))
        .cloned()
        .collect();
    assert_eq!(kept.len(), 80, "40 kept traces per LB");
    assert_eq!(
        want.len(),
        80 * 4,
        "two records in each kept trace, two outside"
    );
    // Delivered records settle within the quiesce; wait a little for the
    // last export calls anyway (bounded).
    for _ in 0..40 {
        let got: BTreeSet<_> = cluster.logs.records().into_iter().collect();
        if want.is_subset(&got) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let received = cluster.logs.records();
    let mut counts: BTreeMap<&(String, Option<String>), usize> = BTreeMap::new();
    for record in &received {
        *counts.entry(record).or_default() += 1;
    }
    let missing: Vec<_> = want.iter().filter(|r| !counts.contains_key(r)).collect();
    let of_dropped: Vec<_> = counts
        .keys()
        .filter(|(_, trace)| trace.as_ref().is_some_and(|t| dropped.contains(t)))
        .collect();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let mut books = String::new();
    for i in cluster.samplers.keys() {
        let m = cluster.metrics(*i).await;
        let n = |name: &str| m.sum(name, &[]);
        let received = n("tailgate_log_records_received_total");
        let accounted = n("tailgate_log_records_forwarded_total")
            + n("tailgate_log_records_not_sampled_total")
            + n("tailgate_log_records_dropped_total")
            + n("tailgate_log_records_handed_over_total")
            + n("tailgate_log_records_buffered");
        books.push_str(&format!(
            "sampler-{i}: received {received}, accounted {accounted}, orphaned {}\n",
            n("tailgate_log_records_orphaned_total")
        ));
        assert_eq!(received, accounted, "the log identity on sampler-{i}");
    }
    eprintln!(
        "{} records emitted, {} wanted, {} received; {joined} received by the two that joined and left\n{books}",
        emitted.len(),
        want.len(),
        received.len()
    );
    assert!(
        missing.is_empty(),
        "records of kept traces or without a trace ID lost: {missing:?}\n{books}"
    );
    assert!(
        of_dropped.is_empty(),
        "records of dropped traces arrived: {of_dropped:?}\n{books}"
    );
    assert!(twice.is_empty(), "records arrived twice: {twice:?}");
    cluster.shutdown().await;
}
