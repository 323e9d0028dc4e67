//! Sampler benchmarks, each a short run printing its figures (not
//! criterion: they measure whole pipelines, CPU time by thread and RSS).
//!
//! ```sh
//! cargo bench -p sampler --bench sampler -- e2e       # over loopback gRPC
//! cargo bench -p sampler --bench sampler -- e2e-steady  # the same at a steady 100k spans/s
//! cargo bench -p sampler --bench sampler -- e2e-storage  # the same with storage off and on
//! cargo bench -p sampler --bench sampler -- e2e-logs  # the same with a log record per span, and without
//! cargo bench -p sampler --bench sampler -- pipeline  # the same work, no network
//! cargo bench -p sampler --bench sampler -- memory    # RSS per buffered span
//! cargo bench -p sampler --bench sampler -- slices    # the alternative, for comparison
//! ```
//!
//! Workload: requests of 1,000 spans as an agent batches them: 5 spans of
//! each of 200 traces, under 5 services; each trace has 10 spans (root
//! first) split over two consecutive requests; ~1% of traces have an
//! error. Policy: keep errors, keep 10% of the rest (`e2e-all`: keep
//! everything, the forwarding path's worst case).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use proto::exporter::{OtlpClient, OtlpClientConfig};
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, Refusal, Signal, Sink};
use proto::view::RequestView;
use sampler::buffer::{BufferSettings, TraceBuffer};
use sampler::ingest::IngestBatch;
use sampler::{Sampler, SamplerConfig};

const POLICY: &str = "\
decision_wait: 1s
decision_wait_after_root_received: 300ms
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: some
    type: probabilistic
    probabilistic: {sampling_percentage: 10}
";

const KEEP_ALL: &str = "\
decision_wait: 1s
decision_wait_after_root_received: 300ms
policies:
  - name: all
    type: always_sample
";

const TRACES_PER_REQUEST: u64 = 100;
const SPANS_PER_TRACE: u64 = 10;
const SERVICES: u64 = 5;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn trace_id(t: u64) -> Vec<u8> {
    let mut id = mix(t).to_le_bytes().to_vec();
    id.extend(mix(t ^ 0xdead_beef).to_le_bytes());
    id
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

fn span(t: u64, s: u64) -> Span {
    let start = 1_700_000_000_000_000_000 + t * 1_000_000;
    Span {
        trace_id: trace_id(t),
        span_id: mix(t * 16 + s).to_le_bytes().to_vec(),
        parent_span_id: if s == 0 {
            Vec::new()
        } else {
            mix(t * 16).to_le_bytes().to_vec()
        },
        name: "GET /api/v1/items/{id}".into(),
        kind: 2,
        start_time_unix_nano: start + s * 1000,
        end_time_unix_nano: start + s * 1000 + 50_000_000,
        attributes: vec![
            kv("http.request.method", "GET"),
            kv("http.route", "/api/v1/items/{id}"),
            kv(
                "url.full",
                &format!("https://shop.example.com/api/v1/items/{}", mix(t) % 100_000),
            ),
            kv("server.address", "items.shop.svc.cluster.local"),
            kv(
                "user_agent.original",
                "Mozilla/5.0 (X11; Linux x86_64) tailgate-bench",
            ),
        ],
        status: (s == 3 && t.is_multiple_of(100)).then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "upstream reset".into(),
        }),
        ..Default::default()
    }
}

fn resource(service: u64) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", &format!("service-{service}")),
            kv("service.version", "1.4.2"),
            kv("k8s.namespace.name", "shop"),
            kv(
                "k8s.pod.name",
                &format!("service-{service}-7d9f8b6c5-x2k4q"),
            ),
            kv("k8s.node.name", "ip-10-0-12-34.eu-west-1.compute.internal"),
            kv("telemetry.sdk.language", "go"),
        ],
        ..Default::default()
    }
}

/// Request `r`: the first half of traces `r*100..`, the second half of
/// traces `(r-1)*100..`.
fn make_request(r: u64) -> Bytes {
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES as usize];
    let halves = [
        (r, 0..SPANS_PER_TRACE / 2),
        (r.wrapping_sub(1), SPANS_PER_TRACE / 2..SPANS_PER_TRACE),
    ];
    for (block, spans) in halves {
        if block == u64::MAX {
            continue;
        }
        for t in block * TRACES_PER_REQUEST..(block + 1) * TRACES_PER_REQUEST {
            for s in spans.clone() {
                by_service[(s % SERVICES) as usize].push(span(t, s));
            }
        }
    }
    let resource_spans = by_service
        .into_iter()
        .enumerate()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(resource(service as u64)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp".into(),
                    version: "0.49.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
        })
        .collect();
    Bytes::from(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
}

/// The log records of request `r`'s spans: one per span, in the span (its
/// trace and span IDs), under the same services, as an SDK's logs
/// pipeline batches them beside its spans.
fn make_logs(r: u64) -> Bytes {
    let mut by_service: Vec<Vec<LogRecord>> = vec![Vec::new(); SERVICES as usize];
    let halves = [
        (r, 0..SPANS_PER_TRACE / 2),
        (r.wrapping_sub(1), SPANS_PER_TRACE / 2..SPANS_PER_TRACE),
    ];
    for (block, spans) in halves {
        if block == u64::MAX {
            continue;
        }
        for t in block * TRACES_PER_REQUEST..(block + 1) * TRACES_PER_REQUEST {
            for s in spans.clone() {
                let span = span(t, s);
                by_service[(s % SERVICES) as usize].push(LogRecord {
                    time_unix_nano: span.start_time_unix_nano + 10_000,
                    observed_time_unix_nano: span.start_time_unix_nano + 20_000,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!(
                            "served item {} in 12 ms (cache miss)",
                            mix(t) % 100_000
                        ))),
                    }),
                    attributes: vec![kv("code.function", "items.Handler.ServeHTTP")],
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    flags: 1,
                    ..Default::default()
                });
            }
        }
    }
    let resource_logs = by_service
        .into_iter()
        .enumerate()
        .map(|(service, log_records)| ResourceLogs {
            resource: Some(resource(service as u64)),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "go.opentelemetry.io/contrib/bridges/otelslog".into(),
                    version: "0.4.0".into(),
                    ..Default::default()
                }),
                log_records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    Bytes::from(ExportLogsServiceRequest { resource_logs }.encode_to_vec())
}

/// Sum of the encoded `Span` messages' lengths in a request.
fn span_bytes(request: &[u8]) -> (usize, usize) {
    let (mut spans, mut bytes) = (0, 0);
    RequestView::new(request)
        .for_each_span(|_, _, s| {
            spans += 1;
            bytes += s.bytes().len();
        })
        .expect("valid");
    (spans, bytes)
}

/// User + system CPU time of this process's threads whose name starts with
/// `prefix`, from /proc/self/task/*/{comm,stat}.
fn thread_cpu(prefix: &str) -> Duration {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
            let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
            ticks += utime + stime;
        }
    }
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The backend: counts the spans and log records it receives.
#[derive(Default)]
struct CountingSink {
    spans: AtomicU64,
    records: AtomicU64,
}

impl Sink for CountingSink {
    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let spans = RequestView::new(&batch.request).validate()?;
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Accepted { spans })
    }

    async fn accept_logs(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let records = proto::logs::LogsView::new(&batch.request).validate()?;
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        Ok(Accepted { spans: records })
    }
}

/// What one `e2e` run measured.
struct E2e {
    /// Sampler thread CPU time, seconds.
    cpu: f64,
    spans: u64,
    /// Log records sent (0 without logs).
    records: u64,
}

fn policy_file(policy: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-sampler-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, policy).expect("policy file");
    path
}

/// `rate`: spans per second offered in total, requests spread evenly in
/// time (`None`: as fast as the sampler takes them). `logs`: after each
/// spans request, the same client sends its spans' log records.
fn e2e(
    requests: u64,
    clients: usize,
    policy: &str,
    storage: Option<PathBuf>,
    rate: Option<f64>,
    logs: bool,
) -> E2e {
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tg-load")
        .enable_all()
        .build()
        .expect("runtime");
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tg-sampler")
        .enable_all()
        .build()
        .expect("runtime");

    let prepared: Vec<Bytes> = (0..requests).map(make_request).collect();
    let prepared_logs: Vec<Bytes> = if logs {
        (0..requests).map(make_logs).collect()
    } else {
        Vec::new()
    };
    let (total_spans, total_bytes) = prepared
        .iter()
        .map(|r| span_bytes(r))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let request_bytes: usize = prepared.iter().map(Bytes::len).sum();

    let sink = Arc::new(CountingSink::default());
    let backend = Receiver::bind(ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        http: None,
        node: "backend".into(),
        ..ReceiverConfig::default()
    })
    .expect("backend binds");
    let backend_addr = backend.grpc_addr().expect("grpc");
    load.spawn(backend.serve(sink.clone(), std::future::pending()));

    let mut config: SamplerConfig = serde_json::from_value(serde_json::json!({
        "node": "bench",
        "admin": "127.0.0.1:0",
        "policy_file": policy_file(policy),
        "shards": 1,
        "receiver": {"grpc": "127.0.0.1:0", "http": "off"},
        "exporter": {"endpoint": format!("http://{backend_addr}")},
        "shutdown": {"grace": "0s", "drain_timeout": "30s"},
    }))
    .expect("config");
    config.limits.max_buffer_bytes = 2 << 30;
    config.limits.max_traces = Some(10_000_000);
    if let Some(dir) = &storage {
        let _ = std::fs::remove_dir_all(dir);
        config.storage = Some(sampler::StorageConfig::new(dir));
    }
    let node = Sampler::bind(config).expect("binds");
    let addr = node.grpc_addr().expect("grpc");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = node_rt.spawn(node.serve(async move {
        let _ = stopped.await;
    }));

    let cpu_before = thread_cpu("tg-sampler");
    let started = Instant::now();
    let prepared = Arc::new(prepared);
    let prepared_logs = Arc::new(prepared_logs);
    let refused = Arc::new(AtomicU64::new(0));
    load.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let prepared = prepared.clone();
            let prepared_logs = prepared_logs.clone();
            let refused = refused.clone();
            tasks.push(tokio::spawn(async move {
                let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{addr}")))
                    .expect("client");
                let logs_client = client.clone().for_signal(Signal::Logs);
                // Client c sends requests c, c + clients, ...: traces' two
                // halves arrive close together, from different clients.
                for r in (c..prepared.len()).step_by(clients) {
                    if let Some(rate) = rate {
                        let at = started + Duration::from_secs_f64(r as f64 * 1000.0 / rate);
                        tokio::time::sleep_until(at.into()).await;
                    }
                    for _attempt in 0..1000 {
                        match client.export(prepared[r].clone()).await {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("export failed: {e}"),
                        }
                    }
                    let Some(logs) = prepared_logs.get(r) else {
                        continue;
                    };
                    for _attempt in 0..1000 {
                        match logs_client.export(logs.clone()).await {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("logs export failed: {e}"),
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
    });
    let sent_at = started.elapsed();
    let _ = stop.send(());
    node_rt
        .block_on(serving)
        .expect("serve task")
        .expect("serve");
    let elapsed = started.elapsed();
    let cpu = thread_cpu("tg-sampler").saturating_sub(cpu_before);
    let kept = sink.spans.load(Ordering::Relaxed);
    let kept_records = sink.records.load(Ordering::Relaxed);
    let total_records = if logs { total_spans as u64 } else { 0 };

    println!(
        "e2e: {requests} requests of 1,000 spans{}, {clients} gRPC clients, {}, 1 sampler thread, 1 shard, storage {}",
        if logs {
            " (each followed by their 1,000 log records)"
        } else {
            ""
        },
        rate.map_or("as fast as taken".to_owned(), |r| format!(
            "{r:.0} spans/s offered"
        )),
        storage
            .as_ref()
            .map_or("off".to_owned(), |d| format!("on ({})", d.display()))
    );
    println!(
        "  spans {total_spans}, {:.0} B/span encoded (span message), {:.0} B/span on the wire",
        total_bytes as f64 / total_spans as f64,
        request_bytes as f64 / total_spans as f64
    );
    println!(
        "  all sent in {:.2} s, node stopped at {:.2} s; kept {kept} spans ({:.1}%); {} retried refusals",
        sent_at.as_secs_f64(),
        elapsed.as_secs_f64(),
        100.0 * kept as f64 / total_spans as f64,
        refused.load(Ordering::Relaxed)
    );
    println!(
        "  sampler CPU {:.2} s -> {:.0} spans/s per core (target >= 200,000); wall {:.0} spans/s",
        cpu.as_secs_f64(),
        total_spans as f64 / cpu.as_secs_f64(),
        total_spans as f64 / elapsed.as_secs_f64()
    );
    if logs {
        println!(
            "  log records {total_records}, kept {kept_records} ({:.1}%)",
            100.0 * kept_records as f64 / total_records as f64
        );
    }
    if let Some(dir) = &storage {
        let _ = std::fs::remove_dir_all(dir);
    }
    E2e {
        cpu: cpu.as_secs_f64(),
        spans: total_spans as u64,
        records: total_records,
    }
}

/// The node's per-span work without the network: split, insert, expire,
/// decide, write the kept traces.
fn pipeline(requests: u64) {
    let prepared: Vec<Bytes> = (0..requests).map(make_request).collect();
    let file = policy::PolicyFile::parse(POLICY, "policy.yaml").expect("policy");
    let state = file.policies.new_state();
    let mut buffer = TraceBuffer::new(BufferSettings {
        decision_wait: Duration::from_millis(1),
        decision_wait_after_root: None,
        max_traces: 10_000_000,
        max_bytes: 4 << 30,
        ..BufferSettings::default()
    });
    let mut out = bytes::BytesMut::new();
    let (mut spans, mut kept) = (0usize, 0usize);
    let started = Instant::now();
    for (i, request) in prepared.iter().enumerate() {
        let batch = IngestBatch::parse(request.clone()).expect("valid");
        spans += batch.len();
        // Each request is 1 ms on the buffer's clock: traces are due one
        // request after their second half.
        let now = Duration::from_millis(i as u64);
        buffer.insert(&batch, now);
        let (ready, _) = buffer.expire(now);
        for trace in ready {
            // As the shard does: the spans are gathered for evaluation only
            // if a policy reads them, and for a kept trace.
            let reads_spans = file.policies.reads_spans();
            let refs = if reads_spans {
                trace.span_refs()
            } else {
                Vec::new()
            };
            let view = policy::TraceView {
                trace_id: trace.id,
                summary: &trace.summary,
                spans: &refs,
            };
            let decision = file.policies.evaluate(&state, &view, now);
            if decision.sampled {
                let refs = if reads_spans { refs } else { trace.span_refs() };
                let annotated: Vec<_> = refs
                    .iter()
                    .map(|r| decision.annotate(r.span, false))
                    .collect();
                let refs: Vec<_> = refs
                    .iter()
                    .zip(&annotated)
                    .map(|(r, span)| proto::write::SpanRef { span, ..*r })
                    .collect();
                proto::write::write_request(&refs, &mut out);
                kept += refs.len();
            }
        }
        out.clear();
    }
    for trace in buffer.drain() {
        std::hint::black_box(trace.span_refs());
    }
    let elapsed = started.elapsed();
    println!("pipeline: {requests} requests, one thread, no network");
    println!(
        "  {spans} spans in {:.2} s: {:.0} spans/s; kept {kept}",
        elapsed.as_secs_f64(),
        spans as f64 / elapsed.as_secs_f64()
    );
}

/// RSS per buffered span, against the span's encoded size.
fn memory(requests: u64) {
    let mut buffer = TraceBuffer::new(BufferSettings {
        decision_wait: Duration::from_secs(3600),
        max_traces: 10_000_000,
        max_bytes: 8 << 30,
        ..BufferSettings::default()
    });
    // Warm the allocator with one request's worth, then measure from here.
    let warm = make_request(requests + 10);
    drop(IngestBatch::parse(warm).expect("valid"));
    let before = rss_bytes();
    let (mut spans, mut bytes) = (0usize, 0usize);
    for r in 0..requests {
        let request = make_request(r);
        let (n, b) = span_bytes(&request);
        spans += n;
        bytes += b;
        let batch = IngestBatch::parse(request).expect("valid");
        // One millisecond per request, as a steady stream: each batch's new
        // traces share a deadline, later than the last batch's.
        buffer.insert(&batch, Duration::from_millis(r));
    }
    let grown = rss_bytes().saturating_sub(before) as f64;
    let per_span = grown / spans as f64;
    let encoded = bytes as f64 / spans as f64;
    println!(
        "memory: {spans} spans in {} traces buffered (copy into per-trace buffers)",
        buffer.traces()
    );
    println!(
        "  RSS +{:.1} MiB: {per_span:.0} B/span for {encoded:.0} B encoded = {:.3}x; budget 1.1x + 32 = {:.0} B",
        grown / (1 << 20) as f64,
        per_span / encoded,
        1.1 * encoded + 32.0
    );
    println!(
        "  span data as allocated: {:.0} B/span (records + growth slack); the rest per trace: {:.0} B (budget 128)",
        buffer.data_bytes() as f64 / spans as f64,
        (grown - buffer.data_bytes() as f64) / buffer.traces() as f64
    );
    println!(
        "  buffer's own estimate (held_bytes): {:.0} B/span; headers interned: {}; spare buffers: {} KiB",
        buffer.held_bytes() as f64 / spans as f64,
        buffer.headers(),
        buffer.spare_bytes() / 1024
    );
}

/// The alternative to copying: `Bytes::slice` handles into the requests.
/// Holding 1% of the traces (say, the slow ones still waiting) keeps
/// nearly every request alive. Run alone, so RSS is not memory freed by
/// another run.
fn slices(requests: u64) {
    let before = rss_bytes();
    let mut held: Vec<Bytes> = Vec::new();
    let mut retained = 0usize;
    for r in 0..requests {
        let request = make_request(r);
        let held_before = held.len();
        RequestView::new(&request)
            .for_each_span(|_, _, s| {
                if s.trace_id.0[0] < 3 {
                    held.push(request.slice_ref(s.bytes()));
                }
            })
            .expect("valid");
        if held.len() > held_before {
            retained += request.len();
        }
    }
    let grown = rss_bytes().saturating_sub(before) as f64;
    println!(
        "slices: holding {} spans (~1% of traces) as Bytes slices of {requests} requests",
        held.len()
    );
    println!(
        "  requests kept alive: {:.1} MiB; RSS +{:.1} MiB = {:.0} B per held span",
        retained as f64 / (1 << 20) as f64,
        grown / (1 << 20) as f64,
        grown / held.len().max(1) as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument picks the run.
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = which.is_empty();
    let want = |name: &str| all || which.iter().any(|w| w == name);
    if want("pipeline") {
        pipeline(2000);
    }
    if want("memory") {
        memory(1000);
    }
    if which.iter().any(|w| w == "slices") {
        slices(1000);
    }
    if want("e2e") {
        e2e(2000, 4, POLICY, None, None, false);
    }
    if which.iter().any(|w| w == "e2e-steady") {
        // The issue's figure: a steady 100k spans/s, 20 s.
        e2e(2000, 4, POLICY, None, Some(100_000.0), false);
    }
    if which.iter().any(|w| w == "e2e-all") {
        e2e(2000, 4, KEEP_ALL, None, None, false);
    }
    if which.iter().any(|w| w == "e2e-storage-on") {
        // One storage-on run alone, to profile (perf record -- BENCH e2e-storage-on).
        let dir = wal_dir();
        e2e(2000, 4, POLICY, Some(dir), None, false);
    }
    if which.iter().any(|w| w == "e2e-storage-steady") {
        // The same comparison at the issue's steady 100k spans/s (20 s a
        // run, 3 pairs): storage-on runs vary by a few percent here,
        // storage-off runs still by up to 40 %.
        let pairs = storage_pairs(3, Some(100_000.0));
        for (a, b) in &pairs {
            println!(
                "  pair: {:.0} ns off, {:.0} ns on: {:+.1}%",
                a * 1e9,
                b * 1e9,
                100.0 * (b / a - 1.0)
            );
        }
        let off: f64 = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len() as f64;
        let on: f64 = pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len() as f64;
        println!(
            "e2e-storage-steady: 100k spans/s, sampler CPU per span (mean of 3 pairs) {:.0} ns off, \
             {:.0} ns on: {:+.1}% (target <= +25%); {:.0} spans per CPU-second with storage on",
            off * 1e9,
            on * 1e9,
            100.0 * (on / off - 1.0),
            1.0 / on
        );
    }
    if which.iter().any(|w| w == "e2e-storage") {
        // Same run, same machine: off, on, off, on, ... 7 pairs (one run of
        // 2 s varies by up to 30 % on a shared 2-core machine, where the
        // load generator competes with the sampler): CPU per span compared
        // by the median of the pairs' ratios, the medians and the bests.
        let pairs = storage_pairs(7, None);
        let mut off: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let mut on: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let mut ratios: Vec<f64> = pairs.iter().map(|(a, b)| b / a).collect();
        for v in [&mut off, &mut on, &mut ratios] {
            v.sort_by(f64::total_cmp);
        }
        let mid = |v: &[f64]| v[v.len() / 2];
        println!(
            "e2e-storage: sampler CPU per span, storage on vs off over 7 pairs: median pair {:+.1}% \
             (pairs {:+.1}% .. {:+.1}%); medians {:.0} ns off, {:.0} ns on ({:+.1}%); \
             bests {:.0} ns off, {:.0} ns on ({:+.1}%) (target <= +25%)",
            100.0 * (mid(&ratios) - 1.0),
            100.0 * (ratios[0] - 1.0),
            100.0 * (ratios[ratios.len() - 1] - 1.0),
            mid(&off) * 1e9,
            mid(&on) * 1e9,
            100.0 * (mid(&on) / mid(&off) - 1.0),
            off[0] * 1e9,
            on[0] * 1e9,
            100.0 * (on[0] / off[0] - 1.0)
        );
    }
    if which.iter().any(|w| w == "e2e-logs") {
        // Same run: without logs, with a record per span, twice each,
        // interleaved. A record's cost is the CPU the logs run spent more
        // than the spans-only run, per record.
        let mut spans_only = Vec::new();
        let mut with_logs = Vec::new();
        for _ in 0..2 {
            spans_only.push(e2e(2000, 4, POLICY, None, None, false));
            with_logs.push(e2e(2000, 4, POLICY, None, None, true));
        }
        let best = |v: &[E2e]| v.iter().map(|r| r.cpu).fold(f64::INFINITY, f64::min);
        let (base, both) = (best(&spans_only), best(&with_logs));
        let spans = spans_only[0].spans as f64;
        let records = with_logs[0].records as f64;
        let per_span = base / spans;
        let per_record = (both - base) / records;
        println!(
            "e2e-logs: sampler CPU {base:.2} s spans only, {both:.2} s with logs; \
             {:.0} spans per CPU-second, {:.0} log records per CPU-second (the extra CPU), \
             records/spans {:.2}",
            1.0 / per_span,
            1.0 / per_record,
            per_span / per_record
        );
    }
}

/// The write-ahead log's directory for the storage-on runs.
fn wal_dir() -> PathBuf {
    std::env::temp_dir().join(format!("tailgate-bench-wal-{}", std::process::id()))
}

/// `n` pairs of e2e runs, storage off then on, at `rate` (or as fast as
/// taken): sampler CPU seconds per span, (off, on).
fn storage_pairs(n: usize, rate: Option<f64>) -> Vec<(f64, f64)> {
    let dir = wal_dir();
    (0..n)
        .map(|_| {
            let off = e2e(2000, 4, POLICY, None, rate, false).per_span();
            let on = e2e(2000, 4, POLICY, Some(dir.clone()), rate, false).per_span();
            (off, on)
        })
        .collect()
}

impl E2e {
    fn per_span(&self) -> f64 {
        self.cpu / self.spans as f64
    }
}
