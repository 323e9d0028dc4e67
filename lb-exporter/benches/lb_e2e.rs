//! `tailgate lb` end to end over loopback gRPC: agents → LB → 3 sinks.
//!
//! cargo bench -p lb-exporter --bench lb_e2e            (about 20 s)
//!
//! Three runtimes in one process, one thread each: the clients, the LB and
//! the sinks. The LB's share is measured as the CPU time of its own thread
//! (from /proc), so "spans per LB CPU-second" is its throughput per core
//! whatever the other two threads cost on this shared machine.
//!
//! 1. Peak: 8 clients send 1,000-span requests (50 traces) back to back for
//!    3 s; spans/s at the sinks, and spans per LB CPU-second.
//! 2. Latency at 150,000 spans/s (half the 300,000 target) and at half the
//!    measured peak, open loop for 3 s each: each span carries
//!    its send time; a sink takes (arrival − earliest send time) of each
//!    part it receives. The same load sent straight to one sink gives the
//!    baseline; p99 through the LB minus p99 direct is the added latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lb_exporter::resolver::{ResolverConfig, StaticConfig};
use lb_exporter::{ExportConfig, Lb, LbConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use proto::exporter::{OtlpClient, OtlpClientConfig};
use proto::receiver::{Accepted, Batch, Receiver, ReceiverConfig, Refusal, Sink};
use proto::view::RequestView;
use tokio::runtime::Runtime;
use tokio::sync::watch;

const SPANS: usize = 1000;
const TRACES: usize = 50;
const CLIENTS: usize = 8;
const PEAK: Duration = Duration::from_secs(3);
const OPEN_LOOP: Duration = Duration::from_secs(3);

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// CPU seconds used so far by the threads whose name starts with `prefix`.
fn cpu_seconds(prefix: &str) -> f64 {
    // utime and stime are fields 14 and 15 of /proc/<pid>/task/<tid>/stat,
    // in clock ticks (100 per second on Linux).
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The command name is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields
            .get(11)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
        ticks += fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// Counts spans and, when recording, each part's latency.
#[derive(Default)]
struct CountingSink {
    spans: AtomicU64,
    recording: AtomicBool,
    latencies_us: Mutex<Vec<u64>>,
}

impl Sink for CountingSink {
    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let arrived = now_nanos();
        let mut spans = 0usize;
        let mut earliest = u64::MAX;
        RequestView::new(&batch.request).for_each_span(|_, _, span| {
            spans += 1;
            earliest = earliest.min(span.start_time_unix_nano);
        })?;
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) && earliest != u64::MAX {
            let us = arrived.saturating_sub(earliest) / 1000;
            self.latencies_us
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(us);
        }
        Ok(Accepted { spans })
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An agent's batch: 2 services, 50 traces, HTTP attributes.
fn request(seed: u64) -> ExportTraceServiceRequest {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let traces: Vec<Vec<u8>> = (0..TRACES)
        .map(|_| {
            let mut id = next().to_le_bytes().to_vec();
            id.extend(next().to_le_bytes());
            id
        })
        .collect();
    let resource_spans = (0..2)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", &format!("service-{r}")),
                    kv("k8s.pod.name", &format!("service-{r}-7d9f8-x2v{r}q")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "2.1.0".into(),
                    ..Default::default()
                }),
                spans: (0..SPANS / 2)
                    .map(|i| Span {
                        trace_id: traces[(next() % TRACES as u64) as usize].clone(),
                        span_id: next().to_le_bytes().to_vec(),
                        parent_span_id: next().to_le_bytes().to_vec(),
                        name: format!("GET /api/v1/items/{}", i % 20),
                        start_time_unix_nano: 0,
                        end_time_unix_nano: 0,
                        attributes: vec![
                            kv("http.request.method", "GET"),
                            kv("url.path", "/api/v1/items"),
                            kv("server.address", "items.internal"),
                        ],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// The start time every template span carries until it is stamped.
const SENTINEL: u64 = 0x0123_4567_89ab_cdef;

/// An encoded request and where its spans' start times sit, so stamping it
/// with the send time is a copy and a few writes, not an encode: the client
/// thread must not be what the latency measures.
struct Template {
    bytes: Vec<u8>,
    stamps: Vec<usize>,
}

impl Template {
    fn new(request: &ExportTraceServiceRequest) -> Template {
        let mut r = request.clone();
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    span.start_time_unix_nano = SENTINEL;
                    span.end_time_unix_nano = SENTINEL;
                }
            }
        }
        let bytes = r.encode_to_vec();
        let needle = SENTINEL.to_le_bytes();
        let stamps = (0..bytes.len().saturating_sub(8))
            .filter(|&i| bytes[i..i + 8] == needle)
            .collect();
        Template { bytes, stamps }
    }

    fn stamped(&self) -> Bytes {
        let mut out = self.bytes.clone();
        let t = now_nanos().to_le_bytes();
        for &at in &self.stamps {
            out[at..at + 8].copy_from_slice(&t);
        }
        out.into()
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn client(addr: SocketAddr) -> OtlpClient {
    OtlpClient::new(&OtlpClientConfig::new(format!("http://{addr}"))).expect("client")
}

/// Sends `templates` at `spans_per_sec` for `duration`, open loop; returns
/// the sorted part latencies (µs) the sinks saw.
fn open_loop(
    clients: &Runtime,
    target: SocketAddr,
    templates: &[Template],
    spans_per_sec: f64,
    sinks: &[Arc<CountingSink>],
) -> Vec<u64> {
    for s in sinks {
        s.latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        s.recording.store(true, Ordering::Relaxed);
    }
    let period = Duration::from_secs_f64(SPANS as f64 / spans_per_sec);
    clients.block_on(async {
        let client = client(target);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end = tokio::time::Instant::now() + OPEN_LOOP;
        let mut sends = tokio::task::JoinSet::new();
        let mut i = 0usize;
        while tokio::time::Instant::now() < end {
            tick.tick().await;
            let body = templates[i % templates.len()].stamped();
            i += 1;
            let client = client.clone();
            sends.spawn(async move {
                let _ = client.export(body).await;
            });
            while sends.try_join_next().is_some() {}
        }
        while sends.join_next().await.is_some() {}
    });
    // Let the last parts arrive.
    std::thread::sleep(Duration::from_millis(300));
    let mut all = Vec::new();
    for s in sinks {
        s.recording.store(false, Ordering::Relaxed);
        all.extend(
            s.latencies_us
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..),
        );
    }
    all.sort_unstable();
    all
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too:
    // keep that a smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sinks_rt = runtime("bench-sinks");
    let clients = runtime("bench-clients");
    let lb_rt = runtime("lb-under-test");

    // Three sinks.
    let sinks: Vec<Arc<CountingSink>> = (0..3).map(|_| Arc::default()).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sink_addrs = Vec::new();
    for sink in &sinks {
        let receiver = sinks_rt.block_on(async {
            Receiver::bind(ReceiverConfig {
                grpc: Some("127.0.0.1:0".parse().expect("addr")),
                http: None,
                node: "bench-sink".into(),
                ..ReceiverConfig::default()
            })
            .expect("sink binds")
        });
        sink_addrs.push(receiver.grpc_addr().expect("grpc"));
        let mut stop = stop_rx.clone();
        let sink = sink.clone();
        sinks_rt.spawn(async move {
            let _ = receiver
                .serve(sink, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
    }

    // The LB.
    let config = LbConfig {
        node: "bench-lb".into(),
        receiver: ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().expect("addr")),
            http: None,
            ..ReceiverConfig::default()
        },
        admin: "127.0.0.1:0".parse().expect("addr"),
        resolver: ResolverConfig::Static(StaticConfig {
            members: sink_addrs.iter().map(|a| a.to_string()).collect(),
        }),
        export: ExportConfig::default(),
        ..LbConfig::default()
    };
    let lb = lb_rt.block_on(async { Lb::bind(config).expect("lb binds") });
    let lb_addr = lb.grpc_addr().expect("grpc");
    let mut lb_stop = stop_rx.clone();
    let lb_task = lb_rt.spawn(lb.serve(async move {
        let _ = lb_stop.wait_for(|s| *s).await;
    }));

    let templates: Vec<Template> = (0..16).map(|i| Template::new(&request(i))).collect();
    let encoded: Vec<Bytes> = templates.iter().map(Template::stamped).collect();
    let bytes_per_request = encoded[0].len();
    let delivered = || {
        sinks
            .iter()
            .map(|s| s.spans.load(Ordering::Relaxed))
            .sum::<u64>()
    };

    // 1. Peak, closed loop.
    let run_closed = |duration: Duration| {
        clients.block_on(async {
            let end = tokio::time::Instant::now() + duration;
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..CLIENTS {
                let client = client(lb_addr);
                let encoded = encoded.clone();
                tasks.spawn(async move {
                    let mut i = c;
                    let mut refused = 0u64;
                    while tokio::time::Instant::now() < end {
                        if client
                            .export(encoded[i % encoded.len()].clone())
                            .await
                            .is_err()
                        {
                            refused += 1;
                        }
                        i += 1;
                    }
                    refused
                });
            }
            let mut refused = 0;
            while let Some(r) = tasks.join_next().await {
                refused += r.unwrap_or(0);
            }
            refused
        })
    };
    run_closed(if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    });
    let (d0, cpu0, t0) = (
        delivered(),
        cpu_seconds("lb-under-test"),
        std::time::Instant::now(),
    );
    let refused = run_closed(if quick {
        Duration::from_millis(300)
    } else {
        PEAK
    });
    std::thread::sleep(Duration::from_millis(200));
    let (d1, cpu1, wall) = (delivered(), cpu_seconds("lb-under-test"), t0.elapsed());
    let spans = (d1 - d0) as f64;
    let peak = spans / wall.as_secs_f64();
    let per_core = spans / (cpu1 - cpu0);
    println!("request: {SPANS} spans, {TRACES} traces, {bytes_per_request} bytes; 3 members");
    println!(
        "peak (closed loop, {CLIENTS} clients): {peak:.0} spans/s delivered; LB thread CPU {:.2} s for {:.0} spans = {per_core:.0} spans per LB CPU-second; {refused} requests refused",
        cpu1 - cpu0,
        spans
    );

    if quick {
        stop_tx.send_replace(true);
        return;
    }

    // 2. Latency at half the target (300,000 spans/s per core) and at half
    //    the measured peak: through the LB, then straight to a sink.
    for rate in [150_000.0, peak / 2.0] {
        let through = open_loop(&clients, lb_addr, &templates, rate, &sinks);
        let direct = open_loop(&clients, sink_addrs[0], &templates, rate, &sinks);
        println!(
            "latency at {rate:.0} spans/s (open loop), send → sink, ms: through LB p50 {:.2} p99 {:.2} max {:.2} ({} parts); direct p50 {:.2} p99 {:.2} ({} requests); added p99 {:.2}",
            percentile(&through, 0.5),
            percentile(&through, 0.99),
            percentile(&through, 1.0),
            through.len(),
            percentile(&direct, 0.5),
            percentile(&direct, 0.99),
            direct.len(),
            percentile(&through, 0.99) - percentile(&direct, 0.99),
        );
    }

    stop_tx.send_replace(true);
    let _ = lb_rt.block_on(lb_task);
}
