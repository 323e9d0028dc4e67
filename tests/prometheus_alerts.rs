//! End to end: a real Prometheus server (Debian's `prometheus`) scrapes a
//! `tailgate local` cluster (an LB and a sampler in one process, every
//! node's metrics on its admin port) on loopback, with the alert rules of
//! `deploy/prometheus/` loaded, and the test watches the alerts through
//! Prometheus's HTTP API.
//!
//! Traces go to the LB, which routes them to the sampler; the sampler keeps
//! every one and exports to a backend that refuses every connection, so its
//! export queue fills and overflows (it refuses: `export_backlog`) and, as
//! retries run out, spans are dropped. `TailgateSpansDropped` must go
//! pending, then firing. Then the policy file is swapped the way the kubelet
//! updates a ConfigMap volume (a `..data` symlink flipped to a new
//! directory) to a file that does not parse: `TailgatePolicyReloadFailed`
//! must fire. Last, every metric the rules and the dashboard use must be
//! among the series Prometheus scraped from the cluster.
//!
//! The sampler's export queue and retry budget are shrunk with
//! `--set-sampler`, so the first drop comes within seconds.
//!
//! Everything listens on 127.0.0.1. The cluster is stopped with SIGTERM and
//! must exit 0; Prometheus is killed; all by PID, and all are killed when
//! the test fails. Bounded: about 20 s, at most [`DEADLINE`].

mod process_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_yaml_ng::Value;

use process_support::{Process, TempDir, free_port, http_get, status_code};

/// The whole test, Prometheus's start-up included, ends within this.
const DEADLINE: Duration = Duration::from_secs(90);
/// `for:` of TailgateSpansDropped in the rules this test loads (1m in
/// deploy/), so pending and firing both show within seconds; long enough
/// that a busy machine cannot hide the pending state between two polls.
const DROP_ALERT_FOR: &str = "8s";
/// The node names `tailgate local` gives its sampler.
const SAMPLER: &str = "sampler-0";

const GOOD_POLICY: &str = "\
decision_wait: 100ms
num_traces: 10000
policies:
  - name: keep-everything
    type: always_sample
";
const BAD_POLICY: &str = "\
decision_wait: 100ms
policies:
  - name: keep-everything
    type: always_sample
    nonsense: [
";

#[test]
fn drop_alert_goes_pending_then_firing_when_the_backend_refuses() {
    let started = Instant::now();
    let dir = TempDir::new("tailgate-prometheus-alerts");

    // The policy directory, laid out as the kubelet lays out a ConfigMap
    // volume: policy.yaml -> ..data/policy.yaml, ..data -> a versioned dir.
    let policy_dir = dir.path().join("policy");
    configmap_version(&policy_dir, "v1", GOOD_POLICY);

    // A backend that refuses: a port nothing listens on any more.
    let backend = free_port();
    // One `tailgate local` process: an LB and a sampler, every node's
    // metrics on its admin port. Ports are picked free, then bound by the
    // node: another process may take one in between, so a start that fails
    // on a taken port is tried again with new ones.
    let (mut local, admin, lb_http) = (0..3)
        .find_map(|_| {
            let (admin, grpc, http) = (free_port(), free_port(), free_port());
            let mut args = vec!["local".to_owned()];
            args.extend(local_args(admin, grpc, http, backend, &policy_dir));
            let mut local = Process::tailgate(&args, dir.path().join("local.log"));
            local
                .wait_ready(admin, "/readyz")
                .then_some((local, admin, http))
        })
        .expect("tailgate local found free ports within three tries");
    // Every node's metrics are on the one admin port.
    let sampler_admin = admin;
    let prometheus = (0..3)
        .find_map(|_| Prometheus::start(&dir, &[admin]))
        .expect("prometheus found a free port within three tries");

    // Healthy first: the target is up and nothing fires.
    wait_for(started, "Prometheus to scrape the cluster", || {
        prometheus
            .query("sum(up{job=\"tailgate\"})")
            .filter(|up| *up == 1.0)
    });
    wait_for(started, "a rule evaluation after the first scrapes", || {
        prometheus
            .query("count(tailgate_exporter_spans_dropped_total)")
            .filter(|n| *n > 0.0)
            .and_then(|_| prometheus.rules_evaluated().then_some(()))
    });
    assert_eq!(
        prometheus.alert_state("TailgateSpansDropped"),
        None,
        "nothing dropped yet, no alert"
    );

    // Send kept traces through the LB until the sampler's export queue
    // overflows (it refuses: export_backlog) and its exporter, out of
    // retries, has dropped spans.
    let mut trace = 0u64;
    wait_for(
        started,
        "the export queue to overflow and drop spans",
        || {
            for _ in 0..20 {
                trace += 1;
                match post_traces(lb_http, trace) {
                    200 | 429 | 503 => {}
                    other => panic!("the LB answered {other} to a valid request"),
                }
            }
            let refused = scrape(
                sampler_admin,
                "tailgate_spans_refused_total",
                "export_backlog",
            );
            let dropped = scrape(
                sampler_admin,
                "tailgate_exporter_spans_dropped_total",
                "retries_exhausted",
            );
            (refused > 0.0 && dropped > 0.0).then_some(())
        },
    );

    let pending = wait_for(started, "TailgateSpansDropped to go pending", || {
        prometheus
            .alert("TailgateSpansDropped")
            .filter(|a| a.state == "pending")
    });
    assert_eq!(pending.label("node"), SAMPLER);
    assert_eq!(pending.label("reason"), "retries_exhausted");
    assert_eq!(pending.label("exporter"), "backend");
    assert_eq!(pending.label("severity"), "critical");
    let pending_at = Instant::now();
    let firing = wait_for(started, "TailgateSpansDropped to fire", || {
        prometheus
            .alert("TailgateSpansDropped")
            .filter(|a| a.state == "firing")
    });
    assert_eq!(firing.label("reason"), "retries_exhausted");
    assert!(
        pending_at.elapsed() >= Duration::from_secs(4),
        "it fired {:?} after going pending: `for:` was not honoured",
        pending_at.elapsed()
    );

    // A policy file that does not load, swapped in as the kubelet does it.
    configmap_version(&policy_dir, "v2", BAD_POLICY);
    let reload = wait_for(started, "TailgatePolicyReloadFailed to fire", || {
        prometheus
            .alert("TailgatePolicyReloadFailed")
            .filter(|a| a.state == "firing")
    });
    assert_eq!(reload.label("node"), SAMPLER);

    // Every metric the rules and the dashboard use is one these nodes
    // export under that name (kube-state-metrics' and Prometheus's own
    // aside).
    let exported = prometheus.metric_names();
    let missing: Vec<String> = deploy_metric_names()
        .into_iter()
        .filter(|name| {
            // A histogram is exported as its _bucket, _sum and _count.
            ![name.clone(), format!("{name}_count")]
                .iter()
                .any(|n| exported.contains(n))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ uses metrics the running nodes do not export: {missing:?}"
    );

    local.terminate(Duration::from_secs(15));
    drop(prometheus);
    assert!(started.elapsed() < DEADLINE);
}

/// `tailgate local` with one sampler whose exporter gives up fast on the
/// refusing backend (so the queue overflows and drops within seconds), the
/// policy file polled often, and quick shutdowns.
fn local_args(
    admin: SocketAddr,
    grpc: SocketAddr,
    http: SocketAddr,
    backend: SocketAddr,
    policy: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--samplers".into(),
        "1".into(),
        "--policy".into(),
        policy.join("policy.yaml").display().to_string(),
        "--export".into(),
        format!("grpc://{backend}"),
        "--grpc".into(),
        grpc.to_string(),
        "--http".into(),
        http.to_string(),
        "--admin".into(),
        admin.to_string(),
        "--set-lb".into(),
        "drain_timeout=1s".into(),
    ];
    for set in [
        "policy_poll_interval=200ms",
        "shutdown.grace=0s",
        "shutdown.drain_timeout=1s",
        "exporter.connect_timeout=200ms",
        "exporter.timeout=1s",
        "exporter.batch_timeout=10ms",
        "exporter.max_batch_bytes=65536",
        "exporter.queue_bytes=131072",
        "exporter.initial_interval=50ms",
        "exporter.max_interval=100ms",
        "exporter.max_elapsed_time=2s",
    ] {
        args.push("--set-sampler".into());
        args.push(set.into());
    }
    args
}

/// One version of a ConfigMap volume: writes `..<version>/policy.yaml`, then
/// points `..data` at it with an atomic rename, as the kubelet does;
/// `policy.yaml` is a symlink through `..data`.
fn configmap_version(dir: &Path, version: &str, policy: &str) {
    std::fs::create_dir_all(dir.join(format!("..{version}"))).expect("version dir");
    std::fs::write(dir.join(format!("..{version}/policy.yaml")), policy).expect("policy file");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let link = dir.join("policy.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/policy.yaml", &link).expect("policy.yaml symlink");
    }
}

/// Polls `check` every 200 ms until it returns something, or panics at the
/// test's deadline.
fn wait_for<T>(started: Instant, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {:?} waiting for {what}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running Prometheus; killed (by PID) and reaped when dropped.
struct Prometheus {
    _process: Process,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts it and waits until it is ready; None if its port was taken.
    fn start(dir: &TempDir, targets: &[SocketAddr]) -> Option<Prometheus> {
        let rules = dir.path().join("alerts.yaml");
        std::fs::write(&rules, rules_for_the_test()).expect("rules file");
        let config = dir.path().join("prometheus.yaml");
        std::fs::write(
            &config,
            format!(
                "\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: tailgate
    static_configs:
      - targets: [{targets}]
",
                rules = rules.display(),
                targets = targets
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        )
        .expect("prometheus config");
        let addr = free_port();
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        let mut process = Process::spawn("prometheus", command, dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `prometheus` ({e}): install Debian's prometheus package \
                     (deploy/test.sh, run by scripts/test, does)"
                )
            });
        process.wait_ready(addr, "/-/ready").then_some(Prometheus {
            _process: process,
            addr,
        })
    }

    fn api(&self, path: &str) -> Option<Value> {
        let (code, body) = http_get(self.addr, path)?;
        assert_eq!(code, 200, "GET {path}: {body}");
        let v: Value = serde_yaml_ng::from_str(&body).expect("Prometheus answers JSON");
        assert_eq!(v["status"].as_str(), Some("success"), "GET {path}: {body}");
        Some(v["data"].clone())
    }

    /// The value of an instant query that yields one sample.
    fn query(&self, promql: &str) -> Option<f64> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        let result = data["result"].as_sequence()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Whether every rule group has been evaluated at least once.
    fn rules_evaluated(&self) -> bool {
        let Some(data) = self.api("/api/v1/rules") else {
            return false;
        };
        let groups = data["groups"].as_sequence().cloned().unwrap_or_default();
        !groups.is_empty()
            && groups.iter().all(|g| {
                g["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001-"))
            })
    }

    /// The names of every series Prometheus holds.
    fn metric_names(&self) -> Vec<String> {
        let data = self
            .api("/api/v1/label/__name__/values")
            .expect("Prometheus answers");
        data.as_sequence()
            .expect("a list of names")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    fn alert(&self, name: &str) -> Option<Alert> {
        let data = self.api("/api/v1/alerts")?;
        data["alerts"]
            .as_sequence()?
            .iter()
            .find(|a| a["labels"]["alertname"].as_str() == Some(name))
            .map(|a| Alert {
                state: a["state"].as_str().unwrap_or_default().to_owned(),
                labels: a["labels"].clone(),
            })
    }

    fn alert_state(&self, name: &str) -> Option<String> {
        self.alert(name).map(|a| a.state)
    }
}

#[derive(Debug)]
struct Alert {
    state: String,
    labels: Value,
}

impl Alert {
    fn label(&self, name: &str) -> &str {
        self.labels[name].as_str().unwrap_or_default()
    }
}

/// Every `tailgate_` metric name deploy/prometheus/alerts.yaml and
/// deploy/grafana/tailgate.json use.
fn deploy_metric_names() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = Vec::new();
    for file in [
        "deploy/prometheus/alerts.yaml",
        "deploy/grafana/tailgate.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("tailgate_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
}

/// deploy/prometheus/alerts.yaml with TailgateSpansDropped's `for:`
/// shortened to [`DROP_ALERT_FOR`]; every expression as it is.
fn rules_for_the_test() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/prometheus/alerts.yaml");
    let mut rules: Value = serde_yaml_ng::from_str(&text).expect("the rules parse");
    let mut found = false;
    for group in rules["groups"].as_sequence_mut().expect("groups") {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            if rule["alert"].as_str() == Some("TailgateSpansDropped") {
                rule["for"] = Value::String(DROP_ALERT_FOR.into());
                found = true;
            }
        }
    }
    assert!(found, "alerts.yaml has TailgateSpansDropped");
    serde_yaml_ng::to_string(&rules).expect("rules serialize")
}

/// POSTs one trace of 20 spans (about 5 KiB) as OTLP/HTTP protobuf;
/// returns the status.
fn post_traces(addr: SocketAddr, trace: u64) -> u16 {
    let mut trace_id = vec![0xe2; 8];
    trace_id.extend_from_slice(&trace.to_be_bytes());
    let spans = (0..20u8)
        .map(|i| Span {
            trace_id: trace_id.clone(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, i + 1],
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                vec![1, 2, 3, 4, 5, 6, 7, 1]
            },
            name: format!("span-{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: vec![KeyValue {
                key: "padding".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(200))),
                }),
                ..KeyValue::default()
            }],
            ..Span::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("e2e".into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    };
    let body = request.encode_to_vec();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut message = head.into_bytes();
    message.extend_from_slice(&body);
    let mut stream = TcpStream::connect(addr).expect("connect to the sampler");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(&message).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    status_code(&answer).expect("an HTTP answer from the sampler")
}

/// The value of the sample of `metric` whose labels include `label_value`,
/// read from the node's /metrics (0 if absent).
fn scrape(admin: SocketAddr, metric: &str, label_value: &str) -> f64 {
    let Some((200, text)) = http_get(admin, "/metrics") else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(&format!("\"{label_value}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
