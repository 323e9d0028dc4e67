//! verify against hand-made manifests and records: each broken promise is a
//! failure, through the library (`Err(Failed)`) and the binary (exit 1).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::files;
use loadtest::ids::{span_id, trace_id};
use loadtest::manifest::{Class, Header, ManifestWriter, TraceEntry};
use loadtest::record::RecordWriter;
use loadtest::verify::{Expectations, VerifyError, VerifyReport, verify_files};

struct Case {
    traces: Vec<TraceEntry>,
    /// (trace number in `traces`, span index) per received span.
    received: Vec<(usize, u32)>,
}

fn trace(n: u128, spans: u32, class: Class) -> TraceEntry {
    TraceEntry {
        trace_id: trace_id(n),
        spans,
        class,
        duration_us: if class == Class::Slow {
            800_000
        } else {
            20_000
        },
    }
}

/// Every span of every trace, once.
fn all(traces: &[TraceEntry]) -> Vec<(usize, u32)> {
    traces
        .iter()
        .enumerate()
        .flat_map(|(t, e)| (0..e.spans).map(move |i| (t, i)))
        .collect()
}

fn write(case: &Case, manifest: &Path, record: &Path) {
    let mut m = ManifestWriter::create(manifest, &Header::default()).expect("manifest");
    for t in &case.traces {
        m.trace(t).expect("write");
    }
    m.finish().expect("finish");
    let mut r = RecordWriter::create(record).expect("record");
    for &(t, i) in &case.received {
        let id = case.traces[t].trace_id;
        r.push(&id, &span_id(&id, i)).expect("push");
    }
    r.finish().expect("finish");
}

fn check(case: &Case, expect: Expectations) -> Result<VerifyReport, VerifyError> {
    let f = files();
    write(case, &f.manifest, &f.record);
    verify_files(&[f.manifest], &[f.record], expect)
}

fn failed(result: Result<VerifyReport, VerifyError>) -> VerifyReport {
    match result {
        Err(VerifyError::Failed(report)) => *report,
        other => panic!("expected a failed verification, got {other:?}"),
    }
}

fn mixed() -> Vec<TraceEntry> {
    vec![
        trace(1, 4, Class::Error),
        trace(2, 3, Class::Slow),
        trace(3, 5, Class::Normal),
        trace(4, 2, Class::Normal),
    ]
}

#[test]
fn a_whole_delivery_passes() {
    let traces = mixed();
    let case = Case {
        received: all(&traces),
        traces,
    };
    let report = check(&case, Expectations::keep_all()).expect("passes");
    assert!(report.passed());
    assert_eq!(report.spans_received, 14);
}

#[test]
fn a_missing_span_of_an_error_trace_fails() {
    let traces = mixed();
    let mut received = all(&traces);
    received.retain(|&(t, i)| !(t == 0 && i == 3)); // the error span itself
    let case = Case { traces, received };
    let expect = Expectations {
        errors: true,
        slow: None,
        probability: None,
    };
    let report = failed(check(&case, expect));
    assert_eq!(report.errors.partial, 1);
    assert!(
        report.failures[0].contains("error traces did not arrive whole"),
        "{report}"
    );
    assert!(
        report.failures[0].contains(&trace_id(1).to_string()),
        "names the trace"
    );
}

#[test]
fn a_missing_slow_trace_fails() {
    let traces = mixed();
    let mut received = all(&traces);
    received.retain(|&(t, _)| t != 1);
    let case = Case { traces, received };
    let expect = Expectations {
        errors: true,
        slow: Some(Duration::from_millis(500)),
        probability: None,
    };
    let report = failed(check(&case, expect));
    assert_eq!(report.slow.missing, 1);
}

#[test]
fn a_duplicate_span_fails() {
    let traces = mixed();
    let mut received = all(&traces);
    received.push((2, 1));
    let case = Case { traces, received };
    let report = failed(check(&case, Expectations::keep_all()));
    assert_eq!(report.duplicate_spans, 1);
    assert_eq!(report.failures.len(), 1, "{report}");
    assert!(report.failures[0].contains("more than once"));
}

#[test]
fn a_partial_normal_trace_fails() {
    let traces = mixed();
    let mut received = all(&traces);
    // Trace 4 was dropped (fine); trace 3 arrived without two of its spans.
    received.retain(|&(t, i)| t != 3 && !(t == 2 && i >= 3));
    let case = Case { traces, received };
    let expect = Expectations {
        errors: true,
        slow: Some(Duration::from_millis(500)),
        probability: None,
    };
    let report = failed(check(&case, expect));
    assert_eq!(report.sampled.partial, 1);
    assert_eq!(report.sampled.absent, 1);
    assert!(report.failures[0].contains("(3 of 5 spans)"), "{report}");
}

#[test]
fn a_span_never_sent_fails() {
    let traces = mixed();
    let mut received = all(&traces);
    received.push((0, 999)); // an index trace 1 does not have
    let case = Case { traces, received };
    let report = failed(check(&case, Expectations::keep_all()));
    assert_eq!(report.unknown_spans, 1);
}

/// 1,000 normal traces, the first `kept` of them delivered whole.
fn sampled(kept: usize) -> Case {
    let traces: Vec<_> = (0..1_000)
        .map(|n| trace(n + 10, 2, Class::Normal))
        .collect();
    let received = all(&traces[..kept]);
    Case { traces, received }
}

#[test]
fn a_probabilistic_share_within_four_sigma_passes() {
    let expect = Expectations {
        errors: true,
        slow: None,
        probability: Some(0.10),
    };
    // σ = √(1000 · 0.1 · 0.9) ≈ 9.5 traces: 130 is 3.2σ off.
    let report = check(&sampled(130), expect).expect("within 4σ");
    let deviation = report.sampled.deviation_sigmas.expect("computed");
    assert!((3.0..4.0).contains(&deviation), "{deviation}");
}

#[test]
fn a_probabilistic_share_outside_four_sigma_fails() {
    let expect = Expectations {
        errors: true,
        slow: None,
        probability: Some(0.10),
    };
    for kept in [50, 150] {
        // 5.3σ under, 5.3σ over.
        let report = failed(check(&sampled(kept), expect));
        assert!(report.sampled.deviation_sigmas.expect("computed") > 4.0);
        assert!(report.failures[0].contains("4σ at p = 0.1"), "{report}");
    }
}

#[test]
fn keep_all_fails_when_one_trace_is_dropped_whole() {
    let traces = mixed();
    let mut received = all(&traces);
    received.retain(|&(t, _)| t != 3);
    let case = Case { traces, received };
    let report = failed(check(&case, Expectations::keep_all()));
    assert_eq!(report.sampled.deviation_sigmas, Some(f64::INFINITY));
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailgate-loadtest"))
}

#[test]
fn the_binary_exits_1_on_a_failed_verification_and_0_on_a_pass() {
    let traces = mixed();
    let mut received = all(&traces);
    let f = files();
    write(
        &Case {
            traces: traces.clone(),
            received: received.clone(),
        },
        &f.manifest,
        &f.record,
    );
    let run = |extra: &[&str]| {
        binary()
            .arg("verify")
            .arg("--manifest")
            .arg(&f.manifest)
            .arg("--record")
            .arg(&f.record)
            .args(extra)
            .output()
            .expect("runs")
    };
    let ok = run(&["--expect-errors", "--expect-probability", "1.0"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("PASS"));

    received.push((0, 0));
    write(&Case { traces, received }, &f.manifest, &f.record);
    let bad = run(&["--expect-errors", "--expect-probability", "1.0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("FAIL"));
}

#[test]
fn the_binary_refuses_a_truncated_record_as_bad_data() {
    let f = files();
    let traces = mixed();
    write(
        &Case {
            received: all(&traces),
            traces,
        },
        &f.manifest,
        &f.record,
    );
    let mut bytes = std::fs::read(&f.record).expect("read");
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&f.record, bytes).expect("write");
    let out = binary()
        .arg("verify")
        .arg("--manifest")
        .arg(&f.manifest)
        .arg("--record")
        .arg(&f.record)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends inside an entry"));
}
