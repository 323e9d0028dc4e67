//! `tailgate lb` end to end, in process: an in-process DNS server whose
//! records change while the LB runs, and three recording sinks on
//! 127.0.0.2, 127.0.0.3 and 127.0.0.4 on one port.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use lb_exporter::resolver::{DnsConfig, ResolverConfig, StaticConfig};
use lb_exporter::ring::Ring;
use lb_exporter::{ExportConfig, Lb, LbConfig, LbError, LbExporter, Member, MemberSet, run};
use proto::exporter::{ExportError, OtlpClient, OtlpClientConfig};
use proto::receiver::ReceiverConfig;
use proto::view::TraceId;
use support::{Answer, FakeDns, FakeSink, Scrape, Traces, eventually, node, sinks_on_one_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);
const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const HOST: &str = "samplers.test.";

fn loopback() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

fn config(name: &str, resolver: ResolverConfig) -> LbConfig {
    LbConfig {
        node: name.into(),
        receiver: ReceiverConfig {
            grpc: loopback(),
            http: loopback(),
            ..ReceiverConfig::default()
        },
        admin: "127.0.0.1:0".parse().unwrap(),
        resolver,
        export: ExportConfig {
            timeout: Duration::from_secs(1),
            probe_interval: Duration::from_millis(50),
            probe_max_interval: Duration::from_millis(200),
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(50),
            ..ExportConfig::default()
        },
        drain_timeout: Duration::from_secs(5),
        ..LbConfig::default()
    }
}

fn dns_resolver(server: &FakeDns, port: u16) -> ResolverConfig {
    ResolverConfig::Dns(DnsConfig {
        hostname: HOST.into(),
        port,
        interval: Duration::from_millis(100),
        timeout: Some(Duration::from_millis(100)),
        nameservers: vec![server.addr.to_string()],
    })
}

/// A running LB node, served by `Lb::serve` (what `run` does) on a task.
struct Node {
    http: SocketAddr,
    admin: SocketAddr,
    exporter: LbExporter,
    client: OtlpClient,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), LbError>>,
}

impl Node {
    async fn start(config: LbConfig) -> Node {
        let lb = Lb::bind(config).unwrap();
        let grpc = lb.grpc_addr().unwrap();
        let http = lb.http_addr().unwrap();
        let admin = lb.admin_addr();
        let exporter = lb.exporter().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(lb.serve(async {
            let _ = stopped.await;
        }));
        let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{grpc}"))).unwrap();
        Node {
            http,
            admin,
            exporter,
            client,
            stop: Some(stop),
            task,
        }
    }

    async fn send(&self, request: Bytes) -> Result<(), ExportError> {
        self.client.export(request).await.map(|_| ())
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn members(port: u16, ips: &[&str]) -> MemberSet {
    ips.iter()
        .map(|ip| Member::parse(&format!("{ip}:{port}")).unwrap())
        .collect()
}

fn holders(sinks: &[FakeSink], trace: &[u8; 16]) -> Vec<usize> {
    (0..sinks.len())
        .filter(|&i| sinks[i].traces().contains(trace))
        .collect()
}

fn total(sinks: &[FakeSink]) -> usize {
    sinks.iter().map(FakeSink::span_count).sum()
}

fn sink_of(sinks: &[FakeSink], member: &Member) -> usize {
    sinks
        .iter()
        .position(|s| s.member() == member.as_str())
        .unwrap()
}

async fn dns_with_sinks() -> (FakeDns, Vec<FakeSink>, u16) {
    let sinks = sinks_on_one_port(&IPS).await;
    let port = sinks[0].addr.port();
    let mut dns = FakeDns::start().await;
    dns.set(HOST, &IPS).await;
    (dns, sinks, port)
}

async fn ready(node: &Node, n: usize) {
    assert!(
        eventually(WAIT, || node.exporter.members().len() == n).await,
        "the LB resolved {n} members"
    );
}

/// The spans of `traces` sent in three requests, a third of each trace in
/// each, through `lbs` in turn.
async fn send_in_thirds(lbs: &[&Node], traffic: &mut Traces, traces: &[[u8; 16]]) -> usize {
    let mut sent = 0;
    for i in 0..3 {
        let request = traffic.request(traces, 2);
        lbs[i % lbs.len()].send(request).await.unwrap();
        sent += traces.len() * 2;
    }
    sent
}

/// Sends 60 traces (seeded by `seed`) through `lb` in thirds and checks
/// that every span of each reached exactly its owner on the ring over `IPS`;
/// returns the spans sent.
async fn assert_routed_to_owners(lb: &Node, sinks: &[FakeSink], port: u16, seed: u64) -> usize {
    let ring = Ring::new(members(port, &IPS)).unwrap();
    let mut traffic = Traces::new(seed);
    let traces: Vec<[u8; 16]> = (0..60).map(|_| traffic.trace_id()).collect();
    let sent = send_in_thirds(&[lb], &mut traffic, &traces).await;
    assert!(eventually(WAIT, || total(sinks) == sent).await);
    for t in &traces {
        assert_eq!(
            holders(sinks, t),
            [sink_of(sinks, ring.route(&TraceId(*t)))]
        );
    }
    sent
}

#[tokio::test]
async fn every_span_of_a_trace_reaches_exactly_one_sink_its_owner() {
    let (dns, sinks, port) = dns_with_sinks().await;
    let lb = Node::start(config("lb-one", dns_resolver(&dns, port))).await;
    ready(&lb, 3).await;
    assert_eq!(lb.exporter.members(), members(port, &IPS));
    let mut ready_seen = false;
    for _ in 0..100 {
        if http_get(lb.admin, "/readyz").await == 200 {
            ready_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready_seen, "/readyz once members are known");
    let sent = assert_routed_to_owners(&lb, &sinks, port, 21).await;
    assert!(sinks.iter().all(|s| s.span_count() > 0), "load is spread");
    let m = Scrape::now();
    assert_eq!(
        m.get("tailgate_spans_received_total", &node("lb-one", &[])),
        sent as f64
    );
    assert_eq!(
        m.get(
            "tailgate_lb_resolutions_total",
            &node("lb-one", &[("result", "error")])
        ),
        0.0
    );
    assert!(
        m.get(
            "tailgate_lb_resolutions_total",
            &node("lb-one", &[("result", "ok")])
        ) >= 1.0
    );
    assert_eq!(m.get("tailgate_lb_members", &node("lb-one", &[])), 3.0);
    lb.stop().await;
}

#[tokio::test]
async fn two_lbs_given_the_same_members_send_each_trace_to_the_same_sink() {
    let (dns, sinks, port) = dns_with_sinks().await;
    let by_dns = Node::start(config("lb-dns", dns_resolver(&dns, port))).await;
    // The same set, learnt another way and in another order.
    let listed = ResolverConfig::Static(StaticConfig {
        members: IPS.iter().rev().map(|ip| format!("{ip}:{port}")).collect(),
    });
    let by_list = Node::start(config("lb-static", listed)).await;
    ready(&by_dns, 3).await;
    let mut traffic = Traces::new(22);
    let traces: Vec<[u8; 16]> = (0..90).map(|_| traffic.trace_id()).collect();
    let sent = send_in_thirds(&[&by_dns, &by_list], &mut traffic, &traces).await;
    assert!(eventually(WAIT, || total(&sinks) == sent).await);
    for t in &traces {
        assert_eq!(holders(&sinks, t).len(), 1, "a trace split between sinks");
    }
    by_dns.stop().await;
    by_list.stop().await;
}

#[tokio::test]
async fn a_removed_record_moves_its_traces_and_loses_nothing_queued() {
    let (mut dns, sinks, port) = dns_with_sinks().await;
    let mut config = config("lb-remove", dns_resolver(&dns, port));
    config.export.concurrency = 1;
    config.export.max_batch_spans = 20;
    let lb = Node::start(config).await;
    ready(&lb, 3).await;
    // The sink about to leave takes one request and never answers it, so
    // the rest of its spans wait in the LB's queue.
    let leaving = 2;
    sinks[leaving].then(Answer::Stall);
    let mut traffic = Traces::new(23);
    let mut sent = 0;
    let mut all = Vec::new();
    for _ in 0..10 {
        let (request, t) = traffic.fresh(10, 2);
        lb.send(request).await.unwrap();
        sent += 20;
        all.extend(t);
    }
    assert!(eventually(WAIT, || sinks[leaving].stalled_spans() > 0).await);
    let queued = lb.exporter.held_spans();
    assert!(
        queued > sinks[leaving].stalled_spans(),
        "spans wait in the queue"
    );
    dns.set(HOST, &IPS[..2]).await;
    assert!(eventually(WAIT, || lb.exporter.members().len() == 2).await);
    // Queued spans move at once; the stalled request times out and follows.
    let live = || sinks[0].span_count() + sinks[1].span_count();
    assert!(
        eventually(WAIT, || live() == sent).await,
        "nothing queued is lost"
    );
    let after = Ring::new(members(port, &IPS[..2])).unwrap();
    for t in &all {
        let owner = sink_of(&sinks, after.route(&TraceId(*t)));
        assert!(sinks[owner].traces().contains(t), "at its new owner");
    }
    // New traffic does not go to the removed member.
    let stalled = sinks[leaving].stalled_spans();
    let (request, _) = traffic.fresh(30, 2);
    lb.send(request).await.unwrap();
    assert!(eventually(WAIT, || live() == sent + 60).await);
    assert_eq!(sinks[leaving].stalled_spans(), stalled);
    let m = Scrape::now();
    let l = |extra: &[(&'static str, &'static str)]| node("lb-remove", extra).to_vec();
    assert!(
        m.get(
            "tailgate_lb_spans_rerouted_total",
            &l(&[("reason", "member_left")])
        ) > 0.0
    );
    assert_eq!(m.get("tailgate_lb_spans_dropped_total", &l(&[])), 0.0);
    assert_eq!(m.get("tailgate_lb_ring_changes_total", &l(&[])), 2.0);
    assert_eq!(m.get("tailgate_lb_membership_changes_total", &l(&[])), 2.0);
    assert_eq!(m.get("tailgate_lb_members", &l(&[])), 2.0);
    lb.stop().await;
}

#[tokio::test]
async fn a_failing_dns_keeps_routing_to_the_last_good_set() {
    let (mut dns, sinks, port) = dns_with_sinks().await;
    let lb = Node::start(config("lb-dnsfail", dns_resolver(&dns, port))).await;
    ready(&lb, 3).await;
    dns.stop().await;
    let errors = || {
        Scrape::now().get(
            "tailgate_lb_resolutions_total",
            &node("lb-dnsfail", &[("result", "error")]),
        )
    };
    assert!(
        eventually(WAIT, || errors() >= 2.0).await,
        "failed lookups are counted"
    );
    assert_routed_to_owners(&lb, &sinks, port, 24).await;
    assert_eq!(lb.exporter.members().len(), 3);
    let m = Scrape::now();
    assert_eq!(m.get("tailgate_lb_members", &node("lb-dnsfail", &[])), 3.0);
    assert_eq!(
        m.get("tailgate_lb_ring_changes_total", &node("lb-dnsfail", &[])),
        1.0
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_killed_sinks_traffic_is_rerouted_and_what_was_in_flight_is_counted() {
    let (dns, sinks, port) = dns_with_sinks().await;
    let mut config = config("lb-kill", dns_resolver(&dns, port));
    config.export.concurrency = 2;
    config.export.max_batch_spans = 10;
    config.export.timeout = Duration::from_secs(60);
    let lb = Node::start(config).await;
    ready(&lb, 3).await;
    let victim = 1;
    sinks[victim].then(Answer::Stall);
    let ring = Ring::new(members(port, &IPS)).unwrap();
    let mut traffic = Traces::new(25);
    let mut sent = 0;
    let mut victims = Vec::new();
    for _ in 0..10 {
        let (request, t) = traffic.fresh(10, 2);
        lb.send(request).await.unwrap();
        sent += 20;
        victims.extend(
            t.into_iter()
                .filter(|t| sink_of(&sinks, ring.route(&TraceId(*t))) == victim),
        );
    }
    assert!(
        eventually(WAIT, || sinks[victim].requests() == 2).await,
        "two calls stalled"
    );
    sinks[victim].kill();
    let live = || sinks[0].span_count() + sinks[2].span_count();
    assert!(
        eventually(WAIT, || live() == sent).await,
        "everything reaches a live sink"
    );
    // Its traces now go to the next member on the ring.
    let victim_index = ring
        .members()
        .members()
        .iter()
        .position(|m| m.as_str() == sinks[victim].member())
        .unwrap();
    for t in &victims {
        let next = ring
            .route_where(&TraceId(*t), |i| i != victim_index)
            .unwrap();
        let next = sink_of(&sinks, &ring.members().members()[next]);
        assert!(sinks[next].traces().contains(t));
    }
    let l = |extra: &[(&'static str, &'static str)]| node("lb-kill", extra).to_vec();
    // A sink counts spans as it takes them; the LB counts them forwarded
    // once the sink has answered, a moment later: wait for that too.
    let forwarded = || Scrape::now().get("tailgate_lb_spans_forwarded_total", &l(&[]));
    assert!(
        eventually(WAIT, || forwarded() == sent as f64).await,
        "forwarded {} of {sent}",
        forwarded()
    );
    let m = Scrape::now();
    assert_eq!(
        m.get(
            "tailgate_lb_spans_rerouted_total",
            &l(&[("reason", "in_flight")])
        ),
        sinks[victim].stalled_spans() as f64,
        "what was in flight is counted"
    );
    assert_eq!(m.get("tailgate_lb_spans_dropped_total", &l(&[])), 0.0);
    assert_eq!(m.get("tailgate_lb_members_down", &l(&[])), 1.0);
    let received = m.get("tailgate_lb_spans_received_total", &l(&[]));
    let forwarded = m.get("tailgate_lb_spans_forwarded_total", &l(&[]));
    assert_eq!((received, forwarded), (sent as f64, sent as f64));
    lb.stop().await;
}

/// One HTTP/1.1 request; returns the status code and the raw head.
async fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text[9..12].parse().unwrap();
    (code, text)
}

async fn http_get(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)[9..12].parse().unwrap()
}

#[tokio::test]
async fn full_owner_queues_answer_resource_exhausted_and_429_rather_than_drop() {
    let (dns, sinks, port) = dns_with_sinks().await;
    for s in &sinks {
        s.then(Answer::Stall);
    }
    let mut config = config("lb-full", dns_resolver(&dns, port));
    config.export.queue_bytes = 16 * 1024;
    config.export.max_batch_bytes = 4 * 1024;
    config.export.concurrency = 1;
    config.export.timeout = Duration::from_secs(60);
    config.retry_after = Duration::from_secs(2);
    config.drain_timeout = Duration::from_millis(200);
    let lb = Node::start(config).await;
    ready(&lb, 3).await;
    let mut traffic = Traces::new(26);
    let mut accepted = 0;
    let mut refusal = None;
    for _ in 0..500 {
        let (request, _) = traffic.fresh(20, 2);
        match lb.send(request.clone()).await {
            Ok(()) => accepted += 40,
            Err(e) => {
                refusal = Some((e, request));
                break;
            }
        }
    }
    let (refusal, refused) = refusal.expect("the queues fill up");
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal}");
    assert!(refusal.is_retryable(), "RetryInfo makes it retryable");
    assert_eq!(refusal.retry_after(), Some(Duration::from_secs(2)));
    let (status, head) = http_post(lb.http, "/v1/traces", &refused).await;
    assert_eq!(status, 429, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 2"),
        "{head}"
    );
    // Nothing of a refused request was taken; nothing was dropped.
    assert_eq!(lb.exporter.held_spans(), accepted);
    let m = Scrape::now();
    let l = |extra: &[(&'static str, &'static str)]| node("lb-full", extra).to_vec();
    assert_eq!(
        m.get("tailgate_spans_received_total", &l(&[])),
        accepted as f64
    );
    assert_eq!(
        m.get("tailgate_lb_spans_received_total", &l(&[])),
        accepted as f64
    );
    assert_eq!(
        m.get("tailgate_requests_total", &l(&[("result", "overloaded")])),
        2.0
    );
    assert_eq!(m.get("tailgate_lb_spans_dropped_total", &l(&[])), 0.0);
    assert_eq!(m.get("tailgate_lb_queue_spans", &l(&[])), accepted as f64);
    let per_member: Vec<f64> = sinks
        .iter()
        .map(|s| {
            let member = s.member();
            m.get(
                "tailgate_lb_queue_bytes",
                &node("lb-full", &[("member", &member)]),
            )
        })
        .collect();
    assert!(per_member.iter().all(|b| *b > 0.0), "{per_member:?}");
    // At shutdown the drain deadline passes with every sink stalled: what is
    // left is dropped and counted, and the identity holds.
    lb.stop().await;
    let m = Scrape::now();
    assert_eq!(
        m.get(
            "tailgate_lb_spans_dropped_total",
            &l(&[("reason", "shutdown")])
        ),
        accepted as f64
    );
    assert_eq!(m.get("tailgate_lb_queue_spans", &l(&[])), 0.0);
    assert_eq!(m.get("tailgate_lb_queue_bytes", &l(&[])), 0.0);
}

/// A port free now on 127.0.0.1 (for `run`, which does not report the
/// ports it bound).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn run_serves_until_shutdown_then_drains_what_it_holds() {
    let sink = FakeSink::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (grpc, admin) = (free_port(), free_port());
    let mut config = config(
        "lb-run",
        ResolverConfig::Static(StaticConfig {
            members: vec![sink.member()],
        }),
    );
    config.receiver.grpc = Some(grpc);
    config.receiver.http = None;
    config.admin = admin;
    // Parts wait for the batch timeout: only the drain sends them.
    config.export.batch_timeout = Duration::from_secs(3600);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(config, async {
        let _ = stopped.await;
    }));
    let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{grpc}"))).unwrap();
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(admin).is_ok()).await,
        "admin is up"
    );
    let mut up = false;
    for _ in 0..200 {
        if http_get(admin, "/readyz").await == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up, "ready once a member is known");
    let mut traffic = Traces::new(27);
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        let (request, t) = traffic.fresh(4, 3);
        client.export(request).await.unwrap();
        ids.extend(t);
    }
    assert_eq!(sink.span_count(), 0, "held until the batch timeout");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(sink.span_count(), 60, "drained at shutdown");
    assert_eq!(sink.traces(), ids);
    assert!(
        std::net::TcpStream::connect(grpc).is_err(),
        "receiver closed"
    );
}
