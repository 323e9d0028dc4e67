//! What the cluster tests share: a tailgate cluster made of real processes
//! on loopback, and the means to load it, disturb it and judge it.
//!
//! - samplers: `tailgate sampler` processes on 127.0.0.10, .11, ... (one
//!   OTLP/gRPC port and one admin port for all, as a headless Service lists
//!   pods), found through DNS;
//! - a DNS server in this process (`samplers.test.`), whose answer the test
//!   sets, as the headless Service's endpoints change;
//! - two `tailgate lb` processes on 127.0.0.1 resolving the same name;
//! - the backend: loadtest's recording sink, in this process; the samplers'
//!   `logs_exporter` goes to [`LogsBackend`], a recording receiver beside it;
//! - load: loadtest's generator, its connections split between the LBs;
//! - judgement: loadtest's verifier over the manifest and the sink's record,
//!   and the accounting identity read from each live sampler's `/metrics`.
//!
//! Every child is killed (SIGKILL) when its [`Proc`] drops, so a failing
//! test leaves nothing running.
#![allow(dead_code)] // each scenario uses a different part

#[path = "../../lb-exporter/tests/support/dns.rs"]
mod dns;
#[path = "../../sampler/tests/support/metrics.rs"]
mod metrics;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use dns::FakeDns;
use lb_exporter::{Member, MemberSet};
use loadtest::generate::{GenConfig, GenReport};
use loadtest::manifest::{self, Line};
use loadtest::sink::{RunningSink, SinkConfig};
use loadtest::verify::{Expectations, Verifier, VerifyReport};
use loadtest::{Endpoint, ShapeConfig};
pub use metrics::Metrics;
use proto::view::TraceId;
use sampler::cluster::Ownership;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The policy under test: errors, slow traces and 10% of the rest. Waits
/// longer than the traffic's spread (2 s), so a trace is whole at its
/// decision when the cluster keeps it in one place.
pub const POLICY: &str = "\
decision_wait: 6s
decision_wait_after_root_received: 3s
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: slow
    type: latency
    latency: {threshold_ms: 500}
  - name: sample
    type: probabilistic
    probabilistic: {sampling_percentage: 10}
";

pub fn expectations() -> Expectations {
    Expectations {
        errors: true,
        slow: Some(Duration::from_millis(500)),
        probability: Some(0.10),
    }
}

pub const DNS_NAME: &str = "samplers.test.";
/// How often LBs and samplers resolve the samplers' name.
const RESOLVE_EVERY: &str = "250ms";
/// The samplers' `shutdown.grace`: longer than two resolutions plus the
/// samplers' settle time, so everyone has moved on before a sampler stops
/// taking requests.
const GRACE: &str = "2s";

/// A child process, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &str, args: &[&str], log: &Path) -> Proc {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tailgate"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("tailgate starts");
        Proc {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM (by PID): the staged shutdown.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM to {}", self.name);
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself, at most `limit`; its exit
    /// code, or `None` if it had to be killed.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 GET: (status, body); `None` if nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// A port free on every one of `ips` (bound, then released).
fn common_port(ips: &[IpAddr]) -> u16 {
    for _ in 0..50 {
        let Ok(first) = std::net::TcpListener::bind((ips[0], 0)) else {
            continue;
        };
        let Ok(port) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        let all: Vec<_> = ips[1..]
            .iter()
            .map(|ip| std::net::TcpListener::bind((*ip, port)))
            .collect();
        if all.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// A temporary directory for one scenario's files (configs, logs, the
/// manifest and the record).
fn scenario_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The cluster. Samplers are numbered from 0; sampler `i` runs on
/// 127.0.0.(10 + i).
pub struct Cluster {
    pub dir: PathBuf,
    pub dns: FakeDns,
    pub sink: Option<RunningSink>,
    /// Where the samplers' log records go.
    pub logs: LogsBackend,
    pub lbs: Vec<Proc>,
    pub lb_grpc: Vec<SocketAddr>,
    pub lb_admin: Vec<SocketAddr>,
    pub samplers: BTreeMap<usize, Proc>,
    /// Samplers the DNS answer lists.
    pub listed: Vec<usize>,
    /// The samplers' OTLP/gRPC and admin ports.
    pub port: u16,
    pub admin_port: u16,
    /// mTLS between every node (`None`: plaintext).
    pub tls: Option<ClusterTls>,
    /// Each sampler keeps a write-ahead log (`storage:`, `durable_ack`: a
    /// request is answered once synced) in the scenario's directory,
    /// `sampler-I.wal`, kept across its restarts.
    pub storage: bool,
    /// Each sampler's `exporter.queue_bytes`, with `max_batch_bytes` a
    /// quarter of it (`None`: the defaults).
    pub queue_bytes: Option<u64>,
    /// Times the sink was started again ([`Cluster::restart_sink`]); each
    /// start records to its own file, all read by [`Cluster::verify`].
    sink_starts: usize,
    restarts: usize,
}

/// mTLS for the cluster: every node holds the same certificate (for the
/// samplers' IPs), as docs/security.md's example does, and trusts one CA.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClusterTls {
    /// A client or server `tls:` block, YAML flow style.
    fn client(&self) -> String {
        format!(
            "{{ca_file: {}, cert_file: {}, key_file: {}}}",
            self.ca_file.display(),
            self.cert_file.display(),
            self.key_file.display()
        )
    }

    fn server(&self) -> String {
        format!(
            "{{cert_file: {}, key_file: {}, client_ca_file: {}}}",
            self.cert_file.display(),
            self.key_file.display(),
            self.ca_file.display()
        )
    }
}

pub fn sampler_ip(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 10 + i as u8])
}

impl Cluster {
    /// Starts the sink, the DNS server, `samplers` samplers (listed in DNS
    /// once ready) and two LBs. `max_samplers` bounds the indices used later.
    pub async fn start(name: &str, samplers: usize, max_samplers: usize) -> Cluster {
        Cluster::start_with_tls(name, samplers, max_samplers, |_| None).await
    }

    /// [`Cluster::start`], with mTLS on every hop inside the cluster when
    /// `tls` (given the scenario's directory, for its files) says so.
    pub async fn start_with_tls(
        name: &str,
        samplers: usize,
        max_samplers: usize,
        tls: impl FnOnce(&Path) -> Option<ClusterTls>,
    ) -> Cluster {
        Cluster::start_full(name, samplers, max_samplers, tls, false, None, POLICY).await
    }

    /// [`Cluster::start`], every sampler with a write-ahead log.
    pub async fn start_with_storage(name: &str, samplers: usize, max_samplers: usize) -> Cluster {
        Cluster::start_full(name, samplers, max_samplers, |_| None, true, None, POLICY).await
    }

    /// [`Cluster::start_with_storage`], each sampler's memory export queue
    /// bounded to `queue_bytes` (what does not fit spills to its disk queue).
    pub async fn start_with_storage_and_queue(
        name: &str,
        samplers: usize,
        max_samplers: usize,
        queue_bytes: u64,
    ) -> Cluster {
        Cluster::start_full(
            name,
            samplers,
            max_samplers,
            |_| None,
            true,
            Some(queue_bytes),
            POLICY,
        )
        .await
    }

    /// [`Cluster::start`] with another policy file than [`POLICY`].
    pub async fn start_with_policy(
        name: &str,
        samplers: usize,
        max_samplers: usize,
        policy: &str,
    ) -> Cluster {
        Cluster::start_full(name, samplers, max_samplers, |_| None, false, None, policy).await
    }

    async fn start_full(
        name: &str,
        samplers: usize,
        max_samplers: usize,
        tls: impl FnOnce(&Path) -> Option<ClusterTls>,
        storage: bool,
        queue_bytes: Option<u64>,
        policy: &str,
    ) -> Cluster {
        let dir = scenario_dir(name);
        let tls = tls(&dir);
        std::fs::write(dir.join("policy.yaml"), policy).expect("policy file");
        let ips: Vec<IpAddr> = (0..max_samplers).map(sampler_ip).collect();
        let port = common_port(&ips);
        let admin_port = common_port(&ips);
        let sink = start_sink("127.0.0.1:0".parse().expect("addr"), &record_file(&dir, 0)).await;
        let dns = FakeDns::start().await;
        let logs = LogsBackend::start().await;
        let mut cluster = Cluster {
            dir,
            dns,
            sink: Some(sink),
            logs,
            lbs: Vec::new(),
            lb_grpc: Vec::new(),
            lb_admin: Vec::new(),
            samplers: BTreeMap::new(),
            listed: Vec::new(),
            port,
            admin_port,
            tls,
            storage,
            queue_bytes,
            sink_starts: 0,
            restarts: 0,
        };
        for i in 0..samplers {
            cluster.start_sampler(i).await;
        }
        cluster.list((0..samplers).collect()).await;
        for i in 0..2 {
            cluster.start_lb(i).await;
        }
        cluster
    }

    pub fn sink(&self) -> &RunningSink {
        self.sink.as_ref().expect("sink running")
    }

    pub fn member(&self, i: usize) -> Member {
        Member::from_addr(SocketAddr::new(sampler_ip(i), self.port))
    }

    pub fn admin(&self, i: usize) -> SocketAddr {
        SocketAddr::new(sampler_ip(i), self.admin_port)
    }

    /// The ring the LBs and samplers build over `members`, as sampler `i`
    /// sees it.
    pub fn ownership(&self, members: &[usize], i: usize) -> Ownership {
        let set: MemberSet = members.iter().map(|m| self.member(*m)).collect();
        Ownership::new(set, self.member(i))
    }

    fn sampler_config(&self, i: usize) -> String {
        let ip = sampler_ip(i);
        let sink = self.sink().grpc_addr().expect("sink grpc");
        let (server_tls, client_tls) = match &self.tls {
            Some(tls) => (
                format!("  tls: {}\n", tls.server()),
                format!("    tls: {}\n", tls.client()),
            ),
            None => (String::new(), String::new()),
        };
        let storage = if self.storage {
            format!(
                "storage:\n  path: {}\n  commit_interval: 50ms\n  durable_ack: true\n",
                self.dir.join(format!("sampler-{i}.wal")).display()
            )
        } else {
            String::new()
        };
        let queue = self
            .queue_bytes
            .map(|bytes| format!("  queue_bytes: {bytes}\n  max_batch_bytes: {}\n", bytes / 4))
            .unwrap_or_default();
        format!(
            "{storage}node: sampler-{i}
admin: {ip}:{admin}
policy_file: {policy}
shards: 2
receiver:
  grpc: {ip}:{port}
  http: off
{server_tls}exporter:
  endpoint: http://{sink}
  batch_timeout: 50ms
  initial_interval: 200ms
  max_interval: 1s
  max_elapsed_time: 120s
{queue}logs_exporter:
  endpoint: http://{logs}
  batch_timeout: 50ms
  initial_interval: 200ms
  max_interval: 1s
  max_elapsed_time: 120s
shutdown:
  grace: {GRACE}
  drain_timeout: 10s
cluster:
  resolver:
    dns:
      hostname: {DNS_NAME}
      port: {port}
      interval: {RESOLVE_EVERY}
      timeout: 200ms
      nameservers: [\"{dns}\"]
  self: {ip}
  settle: 300ms
  retry_interval: 1s
  push_timeout: 3s
  handover_timeout: 5s
  forward:
    timeout: 2s
    connect_timeout: 300ms
    probe_interval: 200ms
    probe_max_interval: 1s
{client_tls}",
            admin = self.admin_port,
            port = self.port,
            dns = self.dns.addr,
            logs = self.logs.addr,
            policy = self.dir.join("policy.yaml").display(),
        )
    }

    fn lb_config(&self, i: usize, grpc: SocketAddr, admin: SocketAddr) -> String {
        let tls = match &self.tls {
            Some(tls) => format!("  tls: {}\n", tls.client()),
            None => String::new(),
        };
        format!(
            "node: lb-{i}
admin: {admin}
receiver:
  grpc: {grpc}
  http: off
resolver:
  dns:
    hostname: {DNS_NAME}
    port: {port}
    interval: {RESOLVE_EVERY}
    timeout: 200ms
    nameservers: [\"{dns}\"]
export:
  timeout: 2s
  connect_timeout: 300ms
  probe_interval: 200ms
  probe_max_interval: 1s
{tls}drain_timeout: 5s
",
            port = self.port,
            dns = self.dns.addr,
        )
    }

    /// Starts sampler `i` and waits until its `/readyz` answers 200 (it is
    /// not listed in DNS yet: see [`Cluster::list`]).
    pub async fn start_sampler(&mut self, i: usize) {
        self.restarts += 1;
        let config = self.dir.join(format!("sampler-{i}.yaml"));
        std::fs::write(&config, self.sampler_config(i)).expect("config");
        let log = self.dir.join(format!("sampler-{i}.{}.log", self.restarts));
        let proc = Proc::spawn(
            &format!("sampler-{i}"),
            &["sampler", "--config", &config.to_string_lossy()],
            &log,
        );
        self.samplers.insert(i, proc);
        let admin = self.admin(i);
        assert!(
            wait_ready(admin, Duration::from_secs(20)).await,
            "sampler-{i} gets ready (log: {})",
            log.display()
        );
    }

    async fn start_lb(&mut self, i: usize) {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let grpc = SocketAddr::new(ip, common_port(&[ip]));
        let admin = SocketAddr::new(ip, common_port(&[ip]));
        let config = self.dir.join(format!("lb-{i}.yaml"));
        std::fs::write(&config, self.lb_config(i, grpc, admin)).expect("config");
        let log = self.dir.join(format!("lb-{i}.log"));
        self.lbs.push(Proc::spawn(
            &format!("lb-{i}"),
            &["lb", "--config", &config.to_string_lossy()],
            &log,
        ));
        self.lb_grpc.push(grpc);
        self.lb_admin.push(admin);
        assert!(
            wait_ready(admin, Duration::from_secs(20)).await,
            "lb-{i} gets ready (log: {})",
            log.display()
        );
    }

    /// Sets the DNS answer to these samplers (the headless Service's ready
    /// endpoints).
    pub async fn list(&mut self, mut samplers: Vec<usize>) {
        samplers.sort_unstable();
        let ips: Vec<String> = samplers
            .iter()
            .map(|i| sampler_ip(*i).to_string())
            .collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        self.dns.set(DNS_NAME, &ips).await;
        self.listed = samplers;
    }

    /// What Kubernetes does to a pod it stops: its endpoint leaves the
    /// Service and it gets SIGTERM; then waits for a clean exit.
    pub async fn stop_sampler(&mut self, i: usize) {
        let listed: Vec<usize> = self.listed.iter().copied().filter(|s| *s != i).collect();
        self.list(listed).await;
        let mut proc = self.samplers.remove(&i).expect("sampler running");
        proc.terminate();
        let code = proc.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(code, Some(0), "sampler-{i} exits cleanly after SIGTERM");
    }

    /// Stops samplers together (a scale-down).
    pub async fn stop_samplers(&mut self, which: &[usize]) {
        let listed: Vec<usize> = self
            .listed
            .iter()
            .copied()
            .filter(|s| !which.contains(s))
            .collect();
        self.list(listed).await;
        let mut procs: Vec<Proc> = which
            .iter()
            .map(|i| self.samplers.remove(i).expect("sampler running"))
            .collect();
        for proc in &procs {
            proc.terminate();
        }
        for proc in &mut procs {
            let name = proc.name.clone();
            let code = proc.wait_exit(Duration::from_secs(30)).await;
            assert_eq!(code, Some(0), "{name} exits cleanly after SIGTERM");
        }
    }

    /// Starts a sampler and lists it once ready (a pod becoming ready).
    pub async fn add_sampler(&mut self, i: usize) {
        self.start_sampler(i).await;
        let mut listed = self.listed.clone();
        listed.push(i);
        self.list(listed).await;
    }

    /// Scrapes sampler `i`.
    pub async fn metrics(&self, i: usize) -> Metrics {
        match http_get(self.admin(i), "/metrics").await {
            Some((200, body)) => Metrics::parse(&body),
            other => panic!("sampler-{i} /metrics: {other:?}"),
        }
    }

    pub async fn lb_metrics(&self, i: usize) -> Metrics {
        match http_get(self.lb_admin[i], "/metrics").await {
            Some((200, body)) => Metrics::parse(&body),
            other => panic!("lb-{i} /metrics: {other:?}"),
        }
    }

    /// Runs the generator in the background: `rate` spans/s for `duration`,
    /// four connections split between the two LBs, each trace sent in up
    /// to 3 pieces over 2 s.
    pub fn generate(&self, duration: Duration, rate: f64) -> tokio::task::JoinHandle<GenReport> {
        let mut config = GenConfig::new(self.lb_grpc.iter().map(|a| Endpoint::grpc(*a)).collect());
        config.connections = 4;
        config.rate = rate;
        config.duration = Some(duration);
        config.batch_spans = 256;
        config.manifest = Some(self.dir.join("manifest.jsonl"));
        config.max_retries = 50;
        config.drain_timeout = Duration::from_secs(30);
        config.request_timeout = Duration::from_secs(5);
        config.shape = ShapeConfig {
            error_rate: 0.05,
            slow_rate: 0.05,
            attribute_bytes: 64,
            max_chunks: 3,
            spread: Duration::from_secs(2),
            ..ShapeConfig::default()
        };
        tokio::spawn(async move { loadtest::generate::run(config).await.expect("gen runs") })
    }

    /// Stops the backend (the sink's listener closes: the samplers' exports
    /// fail to connect), waits `down`, and starts it again on the same
    /// address, recording to a new file.
    pub async fn restart_sink(&mut self, down: Duration) {
        let sink = self.sink.take().expect("sink running");
        let addr = sink.grpc_addr().expect("sink grpc");
        let stats = sink.stop().await.expect("sink stops");
        eprintln!("sink stopped for {down:?} after {stats:?}");
        tokio::time::sleep(down).await;
        self.sink_starts += 1;
        self.sink = Some(start_sink(addr, &record_file(&self.dir, self.sink_starts)).await);
    }

    /// Waits until every live sampler holds nothing and has exported
    /// everything (its memory and disk queues), and the sink has been idle
    /// for a second (bounded).
    pub async fn quiesce(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            let mut quiet = self
                .sink()
                .sink()
                .idle()
                .is_some_and(|d| d >= Duration::from_secs(1));
            for i in self.samplers.keys() {
                let m = self.metrics(*i).await;
                quiet &= m.sum("tailgate_buffer_spans", &[]) == 0.0
                    && m.sum("tailgate_log_records_buffered", &[]) == 0.0
                    && m.sum("tailgate_exporter_queue_bytes", &[]) == 0.0
                    && m.sum("tailgate_exporter_spill_batches", &[]) == 0.0;
            }
            if quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the cluster did not settle within {limit:?}");
    }

    /// Checks the accounting identity on every live sampler.
    pub async fn assert_identities(&self) {
        for i in self.samplers.keys() {
            let m = self.metrics(*i).await;
            let (received, accounted) = m.identity(&[]);
            assert_eq!(
                received, accounted,
                "the accounting identity on sampler-{i}"
            );
        }
    }

    /// Stops the sink (flushing its record) and verifies it against the
    /// manifest. Traces for which `exempt` holds are left out of every
    /// check (and their spans out of the duplicate count).
    pub async fn verify(&mut self, exempt: impl Fn(&TraceId) -> bool) -> VerifyReport {
        let sink = self.sink.take().expect("sink running");
        sink.stop().await.expect("sink stops");
        let mut verifier = Verifier::new(expectations());
        manifest::read(&self.dir.join("manifest.jsonl"), |line| match line {
            Line::Trace(entry) if !exempt(&entry.trace_id) => verifier.sent(&entry),
            Line::Unsent { trace_id, spans } if !exempt(&trace_id) => {
                verifier.unsent(&trace_id, spans)
            }
            _ => {}
        })
        .expect("manifest reads");
        for start in 0..=self.sink_starts {
            loadtest::record::read(&record_file(&self.dir, start), |trace, span| {
                if !exempt(&trace) {
                    verifier.received(&trace, &span);
                }
            })
            .expect("record reads");
        }
        verifier.finish()
    }

    /// Spans of error and slow traces for which `which` holds that did not
    /// reach the sink (read once the sink has stopped, after `verify`).
    pub fn lost_kept_spans(&self, which: impl Fn(&TraceId) -> bool) -> u64 {
        let mut expected: std::collections::HashMap<
            TraceId,
            (u32, std::collections::HashSet<u64>),
        > = std::collections::HashMap::new();
        manifest::read(&self.dir.join("manifest.jsonl"), |line| {
            if let Line::Trace(entry) = line
                && which(&entry.trace_id)
                && (entry.class == loadtest::Class::Error || entry.duration_us >= 500_000)
            {
                expected.insert(entry.trace_id, (entry.spans, Default::default()));
            }
        })
        .expect("manifest reads");
        for start in 0..=self.sink_starts {
            loadtest::record::read(&record_file(&self.dir, start), |trace, span| {
                if let Some((_, seen)) = expected.get_mut(&trace) {
                    seen.insert(loadtest::ids::span_index(&trace, &span));
                }
            })
            .expect("record reads");
        }
        expected
            .values()
            .map(|(spans, seen)| u64::from(*spans).saturating_sub(seen.len() as u64))
            .sum()
    }

    /// Stops everything still running, LBs first.
    pub async fn shutdown(mut self) {
        for lb in &self.lbs {
            lb.terminate();
        }
        for lb in &mut self.lbs {
            lb.wait_exit(Duration::from_secs(10)).await;
        }
        for proc in self.samplers.values() {
            proc.terminate();
        }
        for proc in self.samplers.values_mut() {
            proc.wait_exit(Duration::from_secs(20)).await;
        }
        self.dns.stop().await;
        if let Some(sink) = self.sink.take() {
            let _ = sink.stop().await;
        }
        self.logs.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The file the sink's `start`-th run records to.
fn record_file(dir: &Path, start: usize) -> PathBuf {
    match start {
        0 => dir.join("record.bin"),
        n => dir.join(format!("record.{n}.bin")),
    }
}

/// Starts the recording sink on `grpc` (a port just closed by the previous
/// sink binds again: std's listener sets SO_REUSEADDR).
async fn start_sink(grpc: SocketAddr, record: &Path) -> RunningSink {
    loadtest::sink::start(SinkConfig {
        grpc: Some(grpc),
        http: None,
        record: Some(record.to_path_buf()),
        retry_after: Duration::from_millis(500),
        ..SinkConfig::default()
    })
    .await
    .expect("sink starts")
}

/// The samplers' logs backend: proto's OTLP receiver on 127.0.0.1,
/// recording every log record it takes as (body, trace ID in hex).
pub struct LogsBackend {
    pub addr: SocketAddr,
    pub recorder: std::sync::Arc<LogsRecorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), proto::receiver::ReceiverError>>>,
}

#[derive(Default)]
pub struct LogsRecorder {
    pub records: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

impl proto::receiver::Sink for LogsRecorder {
    async fn accept(
        &self,
        _batch: proto::receiver::Batch,
    ) -> Result<proto::receiver::Accepted, proto::receiver::Refusal> {
        Err(proto::receiver::Refusal::Invalid(
            "this backend takes logs only".into(),
        ))
    }

    async fn accept_logs(
        &self,
        batch: proto::receiver::Batch,
    ) -> Result<proto::receiver::Accepted, proto::receiver::Refusal> {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use prost::Message;
        let request = ExportLogsServiceRequest::decode(batch.request.as_ref())
            .map_err(|e| proto::receiver::Refusal::Invalid(e.to_string()))?;
        let mut records = self.records.lock().expect("lock");
        let mut n = 0;
        for record in request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            let trace = (!record.trace_id.iter().all(|b| *b == 0))
                .then(|| record.trace_id.iter().map(|b| format!("{b:02x}")).collect());
            records.push((body, trace));
            n += 1;
        }
        Ok(proto::receiver::Accepted { spans: n })
    }
}

impl LogsBackend {
    async fn start() -> LogsBackend {
        let receiver = proto::receiver::Receiver::bind(proto::receiver::ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().expect("addr")),
            http: None,
            node: "logs-backend".into(),
            ..proto::receiver::ReceiverConfig::default()
        })
        .expect("the logs backend binds");
        let addr = receiver.grpc_addr().expect("grpc");
        let recorder = std::sync::Arc::new(LogsRecorder::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(receiver.serve(recorder.clone(), async move {
            let _ = stopped.await;
        }));
        LogsBackend {
            addr,
            recorder,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Every record received so far.
    pub fn records(&self) -> Vec<(String, Option<String>)> {
        self.recorder.records.lock().expect("lock").clone()
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Polls `/readyz` until 200, at most `limit`.
pub async fn wait_ready(admin: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if http_get(admin, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Fails with the report when verification did not pass, and checks the
/// load was real.
pub fn assert_verified(report: &VerifyReport, load: &GenReport) {
    eprintln!(
        "gen: {} spans sent over {:.1} s, {} retries, {} unsent\n{report}",
        load.spans_sent, load.elapsed_secs, load.retries, load.spans_unsent
    );
    assert!(load.spans_sent > 10_000, "the load was real: {load:?}");
    // Clients saw at most retryable refusals, and gave up on nothing.
    assert_eq!(load.spans_unsent, 0, "{load:?}");
    assert_eq!(load.requests_given_up, 0, "{load:?}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.duplicate_spans, 0, "{report}");
    assert!(
        report.errors.traces > 50 && report.slow.traces > 50,
        "{report}"
    );
}
