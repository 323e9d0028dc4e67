//! Component tests of the sampler tier as a cluster, with samplers in this
//! process on 127.0.0.2 and 127.0.0.3 (one gRPC port, as DNS lists them):
//! stray spans reach their owner once, hand-over at shutdown, and
//! redistribution when the member set changes. Metrics are read from the
//! process-wide recorder, so a node's books can be checked after it stopped.

#[path = "../../lb-exporter/tests/support/dns.rs"]
mod dns;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use dns::FakeDns;
use lb_exporter::resolver::{DnsConfig, ResolverConfig, StaticConfig};
use lb_exporter::{ExportConfig, Member, MemberSet};
use proto::exporter::{OtlpClient, OtlpClientConfig};
use proto::view::TraceId;
use sampler::cluster::Ownership;
use sampler::{ClusterConfig, SamplerConfig};
use support::*;

/// Traces with a root span are decided 300 ms after it; others wait 30 s
/// (longer than any test), so they stay buffered until moved. Errors are
/// kept.
const POLICY: &str = "\
decision_wait: 30s
decision_wait_after_root_received: 300ms
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
";

const A: &str = "127.0.0.2";
const B: &str = "127.0.0.3";
/// Listed as a member, never started: an owner that refuses connections.
const DEAD: &str = "127.0.0.4";

fn member(ip: &str, port: u16) -> Member {
    Member::parse(&format!("{ip}:{port}")).unwrap()
}

fn static_resolver(ips: &[&str], port: u16) -> ResolverConfig {
    ResolverConfig::Static(StaticConfig {
        members: ips.iter().map(|ip| format!("{ip}:{port}")).collect(),
    })
}

fn dns_resolver(dns: &FakeDns, port: u16) -> ResolverConfig {
    ResolverConfig::Dns(DnsConfig {
        port,
        interval: Duration::from_millis(100),
        timeout: Some(Duration::from_millis(100)),
        nameservers: vec![dns.addr.to_string()],
        ..DnsConfig::new("samplers.test.")
    })
}

/// A sampler on `ip:port` in a cluster over `resolver`, with test timings.
fn cluster_config(
    name: &str,
    ip: &str,
    port: u16,
    resolver: ResolverConfig,
    policy: &std::path::Path,
    backend: &Backend,
) -> SamplerConfig {
    let mut c = config(name, policy, backend);
    c.receiver.grpc = Some(SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port));
    c.shutdown.grace = Duration::from_millis(100);
    c.cluster = Some(ClusterConfig {
        settle: Duration::from_millis(100),
        retry_interval: Duration::from_millis(500),
        push_timeout: Duration::from_secs(2),
        handover_timeout: Duration::from_secs(3),
        forward: ExportConfig {
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(200),
            probe_interval: Duration::from_millis(100),
            probe_max_interval: Duration::from_millis(500),
            ..ExportConfig::default()
        },
        ..ClusterConfig::new(resolver, format!("{ip}:{port}"))
    });
    c
}

/// Starts one sampler per `(name, ip)`, all on one gRPC port; `make` builds
/// each config from (name, ip, port). Retries with another port if one is
/// taken meanwhile.
fn start_on_one_port(
    nodes: &[(&str, &str)],
    make: impl Fn(&str, &str, u16) -> SamplerConfig,
) -> (Vec<Node>, u16) {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind((nodes[0].1, 0))
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut started = Vec::new();
        for (name, ip) in nodes {
            match Node::try_start(make(name, ip, port)) {
                Ok(node) => started.push(node),
                Err(e) if e.is_retryable() => break,
                Err(e) => panic!("{e}"),
            }
        }
        if started.len() == nodes.len() {
            return (started, port);
        }
        for mut node in started {
            node.trigger_shutdown();
        }
    }
    panic!("no port free on all of {nodes:?}");
}

/// The test policy, written to a file of its own for test `name`.
fn policy_file(name: &str) -> PathBuf {
    let policy = temp_dir(name).join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    policy
}

/// Samplers `(name, ip)` on one port in a cluster whose static ring lists
/// `listed` (some maybe never started), with the test policy; and that
/// ring's members, in `listed` order.
fn start_static_cluster(
    test: &str,
    nodes: &[(&str, &str)],
    listed: [&str; 2],
    backend: &Backend,
) -> (Vec<Node>, [Member; 2]) {
    let policy = policy_file(test);
    let (nodes, port) = start_on_one_port(nodes, |n, ip, port| {
        cluster_config(
            n,
            ip,
            port,
            static_resolver(&listed, port),
            &policy,
            backend,
        )
    });
    (nodes, listed.map(|ip| member(ip, port)))
}

/// `n` trace IDs that `owner` owns on a ring over `members`.
fn owned_by(members: &[Member], owner: &Member, n: usize, salt: u8) -> Vec<TraceId> {
    let set: MemberSet = members.iter().cloned().collect();
    let ownership = Ownership::new(set, owner.clone());
    (0u64..)
        .map(|k| {
            let mut id = [0u8; 16];
            id[0] = 0xcd;
            id[1] = salt;
            id[8..].copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            // SpanSpec::with_trace_id names the trace by the last byte.
            id[15] = (k % 250) as u8 + 1;
            TraceId(id)
        })
        .filter(|id| ownership.owns(id))
        .take(n)
        .collect()
}

fn span(id: TraceId, n: u8) -> SpanSpec {
    SpanSpec::new(0, n).with_trace_id(id)
}

fn global() -> Metrics {
    Metrics::parse(&proto::admin::install_metrics().render())
}

/// Scrapes the recorder until `check` holds, at most `tries` × 50 ms.
async fn global_until(tries: usize, check: impl Fn(&Metrics) -> bool) -> Metrics {
    for _ in 0..tries {
        let m = global();
        if check(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    global()
}

fn count(m: &Metrics, name: &str, node: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("node", node)];
    all.extend_from_slice(labels);
    m.sum(name, &all)
}

/// Waits until the node's books balance, and checks they do.
async fn assert_identity(node: &str) {
    let m = global_until(200, |m| {
        let (received, accounted) = m.identity(&[("node", node)]);
        received > 0.0 && received == accounted
    })
    .await;
    let (received, accounted) = m.identity(&[("node", node)]);
    assert_eq!(received, accounted, "the accounting identity on {node}");
}

async fn send_marked(node: &Node, header: (&str, &str), specs: &[SpanSpec]) {
    let mut config = OtlpClientConfig::new(format!("http://{}", node.grpc));
    config
        .headers
        .insert(header.0.to_owned(), header.1.to_owned());
    OtlpClient::new(&config)
        .unwrap()
        .export(request(specs))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_spans_reach_the_owner_once_and_the_trace_arrives_whole() {
    let backend = Backend::start().await;
    let (nodes, members) = start_static_cluster(
        "cluster-stray",
        &[("stray-a", A), ("stray-b", B)],
        [A, B],
        &backend,
    );
    let ids = owned_by(&members, &members[0], 3, 1);
    for id in &ids {
        // Two spans reach the owner, two (the error root among them) reach
        // the other sampler: another LB, another ring, an agent elsewhere.
        nodes[0].send(&[span(*id, 1), span(*id, 2)]).await.unwrap();
        nodes[1]
            .send(&[span(*id, 0).root().error(), span(*id, 3)])
            .await
            .unwrap();
    }
    let whole = wait_for(300, || {
        ids.iter().all(|id| backend.spans_of(*id).len() >= 4)
    })
    .await;
    assert!(whole, "every trace arrives whole");
    for id in &ids {
        assert_eq!(backend.spans_of(*id), [0, 1, 2, 3], "once each");
    }
    let m = global();
    assert_eq!(
        count(
            &m,
            "tailgate_spans_handed_over_total",
            "stray-b",
            &[("reason", "stray")]
        ),
        6.0
    );
    assert_eq!(
        count(
            &m,
            "tailgate_spans_received_from_peers_total",
            "stray-a",
            &[("mark", "forwarded")]
        ),
        6.0
    );
    assert_eq!(
        count(&m, "tailgate_traces_decided_total", "stray-b", &[]),
        0.0,
        "the stray side decides nothing"
    );
    assert_identity("stray-a").await;
    assert_identity("stray-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_span_is_never_forwarded_again_and_its_trace_is_handed_to_the_owner() {
    let backend = Backend::start().await;
    let (nodes, members) = start_static_cluster(
        "cluster-noloop",
        &[("loop-a", A), ("loop-b", B)],
        [A, B],
        &backend,
    );
    // Owned by A, but forwarded to B by a sampler whose ring said B: B
    // keeps it rather than bounce it back at once (no loops), then its
    // mover hands the whole trace to the owner.
    let id = owned_by(&members, &members[0], 1, 2)[0];
    send_marked(
        &nodes[1],
        ("x-tailgate-forwarded", "1"),
        &[span(id, 1), span(id, 2)],
    )
    .await;
    // B counts the spans handed over once A has taken them, so A's count
    // may show first: wait for both.
    let m = global_until(200, |m| {
        count(
            m,
            "tailgate_spans_received_from_peers_total",
            "loop-a",
            &[("mark", "handed_over")],
        ) == 2.0
            && count(
                m,
                "tailgate_spans_handed_over_total",
                "loop-b",
                &[("reason", "rebalance")],
            ) == 2.0
    })
    .await;
    assert_eq!(
        count(
            &m,
            "tailgate_spans_handed_over_total",
            "loop-b",
            &[("reason", "stray")]
        ),
        0.0,
        "never forwarded as a stray again"
    );
    assert_eq!(
        count(
            &m,
            "tailgate_spans_handed_over_total",
            "loop-b",
            &[("reason", "rebalance")]
        ),
        2.0
    );
    // The root reaches the owner, which holds the rest: decided once, whole.
    nodes[0].send(&[span(id, 0).root().error()]).await.unwrap();
    assert!(wait_for(300, || backend.spans_of(id).len() >= 3).await);
    assert_eq!(backend.spans_of(id), [0, 1, 2]);
    let m = global();
    assert_eq!(
        count(&m, "tailgate_traces_decided_total", "loop-b", &[]),
        0.0
    );
    assert_identity("loop-a").await;
    assert_identity("loop-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_whose_owner_cannot_be_reached_is_kept_and_arrives_whole() {
    let backend = Backend::start().await;
    let (nodes, members) = start_static_cluster(
        "cluster-unreachable",
        &[("alone-a", A)],
        [A, DEAD],
        &backend,
    );
    let ids = owned_by(&members, &members[1], 2, 3);
    // The first: forwarded, refused, marked down, re-routed to the next
    // member on the ring (this node), which keeps it.
    nodes[0]
        .send(&[span(ids[0], 0).root().error(), span(ids[0], 1)])
        .await
        .unwrap();
    let m = global_until(200, |m| {
        count(m, "tailgate_lb_members_down", "alone-a", &[]) == 1.0
    })
    .await;
    assert_eq!(count(&m, "tailgate_lb_members_down", "alone-a", &[]), 1.0);
    // The second: the owner is known down, so it is kept at once.
    nodes[0]
        .send(&[span(ids[1], 0).root().error(), span(ids[1], 1)])
        .await
        .unwrap();
    assert!(
        wait_for(300, || ids
            .iter()
            .all(|id| backend.spans_of(*id).len() >= 2))
        .await
    );
    for id in &ids {
        assert_eq!(backend.spans_of(*id), [0, 1]);
    }
    let m = global();
    assert_eq!(
        count(&m, "tailgate_stray_spans_kept_total", "alone-a", &[]),
        2.0
    );
    assert_identity("alone-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_traces_and_decisions_to_the_owner_without_it() {
    let backend = Backend::start().await;
    let (mut nodes, members) = start_static_cluster(
        "cluster-handover",
        &[("hand-a", A), ("hand-b", B)],
        [A, B],
        &backend,
    );
    let ids = owned_by(&members, &members[0], 12, 4);
    let (kept, dropped, held) = (ids[0], ids[1], &ids[2..]);
    nodes[0]
        .send(&[span(kept, 0).root().error(), span(dropped, 0).root()])
        .await
        .unwrap();
    for id in held {
        nodes[0].send(&[span(*id, 1), span(*id, 2)]).await.unwrap();
    }
    let m = global_until(200, |m| {
        count(m, "tailgate_traces_decided_total", "hand-a", &[]) == 2.0
    })
    .await;
    assert_eq!(
        count(&m, "tailgate_traces_decided_total", "hand-a", &[]),
        2.0
    );

    let a = nodes.remove(0);
    within(20, a.shutdown()).await.unwrap();
    let m = global();
    assert_eq!(
        count(
            &m,
            "tailgate_traces_handed_over_total",
            "hand-a",
            &[("reason", "shutdown")]
        ),
        10.0
    );
    assert_eq!(
        count(
            &m,
            "tailgate_spans_received_from_peers_total",
            "hand-b",
            &[("mark", "handed_over")]
        ),
        20.0
    );
    assert!(count(&m, "tailgate_decisions_handed_over_total", "hand-a", &[]) >= 2.0);
    assert!(count(&m, "tailgate_decisions_received_total", "hand-b", &[]) >= 2.0);
    assert_eq!(
        count(&m, "tailgate_traces_handover_failed_total", "hand-a", &[]),
        0.0
    );

    // Late spans reaching the new owner follow the decisions taken before.
    let b = &nodes[0];
    b.send(&[span(kept, 5), span(dropped, 5)]).await.unwrap();
    // And the rest of a moved trace joins it there.
    b.send(&[span(held[0], 0).root().error()]).await.unwrap();
    assert!(
        wait_for(300, || backend.spans_of(held[0]).len() >= 3
            && backend.spans_of(kept).len() >= 2)
        .await
    );
    assert_eq!(backend.spans_of(held[0]), [0, 1, 2], "whole, decided once");
    assert_eq!(backend.spans_of(kept), [0, 5]);
    assert_eq!(backend.spans_of(dropped), Vec::<u8>::new());
    let m = global();
    assert_eq!(
        count(
            &m,
            "tailgate_late_spans_total",
            "hand-b",
            &[("decision", "not_sampled")]
        ),
        1.0
    );
    assert_identity("hand-a").await;
    assert_identity("hand-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_that_reaches_nobody_decides_here_and_counts_it() {
    let backend = Backend::start().await;
    let (mut nodes, members) = start_static_cluster(
        "cluster-handover-fails",
        &[("lone-a", A)],
        [A, DEAD],
        &backend,
    );
    let ids = owned_by(&members, &members[0], 4, 5);
    for id in &ids {
        nodes[0]
            .send(&[span(*id, 1).error(), span(*id, 2)])
            .await
            .unwrap();
    }
    let a = nodes.remove(0);
    within(20, a.shutdown()).await.unwrap();
    for id in &ids {
        assert_eq!(backend.spans_of(*id), [1, 2], "decided here, kept whole");
    }
    let m = global();
    assert_eq!(
        count(
            &m,
            "tailgate_traces_handover_failed_total",
            "lone-a",
            &[("reason", "shutdown")]
        ),
        4.0
    );
    assert_eq!(
        count(&m, "tailgate_traces_handed_over_total", "lone-a", &[]),
        0.0
    );
    assert_identity("lone-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_moves_held_traces_and_decisions_to_their_new_owner() {
    let backend = Backend::start().await;
    let mut dns = FakeDns::start().await;
    dns.set("samplers.test.", &[A]).await;
    let policy = policy_file("cluster-rebalance");
    let (nodes, port) = start_on_one_port(&[("move-a", A), ("move-b", B)], |n, ip, port| {
        cluster_config(n, ip, port, dns_resolver(&dns, port), &policy, &backend)
    });
    let members = [member(A, port), member(B, port)];
    // A owns everything while alone; these go to B once it joins.
    let ids = owned_by(&members, &members[1], 12, 6);
    let (kept, dropped, held) = (ids[0], ids[1], &ids[2..10]);
    // Log records whose spans have not come (they will come to B).
    let (logged_kept, logged_dropped) = (ids[10], ids[11]);
    let m = global_until(200, |m| {
        count(m, "tailgate_lb_ring_members", "move-a", &[]) == 1.0
            && count(m, "tailgate_lb_ring_members", "move-b", &[]) == 1.0
    })
    .await;
    assert_eq!(count(&m, "tailgate_lb_ring_members", "move-a", &[]), 1.0);
    nodes[0]
        .send(&[span(kept, 0).root().error(), span(dropped, 0).root()])
        .await
        .unwrap();
    for id in held {
        nodes[0].send(&[span(*id, 1), span(*id, 2)]).await.unwrap();
    }
    send_logs(
        &nodes[0],
        None,
        log_records(&[(logged_kept, 1), (logged_kept, 2), (logged_dropped, 3)]),
    )
    .await;
    global_until(200, |m| {
        count(m, "tailgate_traces_decided_total", "move-a", &[]) == 2.0
            && count(m, "tailgate_log_records_buffered", "move-a", &[]) == 3.0
    })
    .await;

    dns.set("samplers.test.", &[A, B]).await;
    let m = global_until(300, |m| {
        count(
            m,
            "tailgate_spans_received_from_peers_total",
            "move-b",
            &[("mark", "handed_over")],
        ) == 16.0
            && count(m, "tailgate_decisions_received_total", "move-b", &[]) >= 2.0
            && count(m, "tailgate_log_records_buffered", "move-b", &[]) == 3.0
            && count(m, "tailgate_log_records_handed_over_total", "move-a", &[]) == 3.0
    })
    .await;
    // The records moved with the traces' ownership, though no span of
    // theirs was here: left on A, they would go out as orphans.
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "move-b", &[]),
        3.0
    );
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "move-a", &[]),
        0.0
    );
    assert_eq!(
        count(
            &m,
            "tailgate_traces_handed_over_total",
            "move-a",
            &[("reason", "rebalance")]
        ),
        8.0
    );
    assert_eq!(
        count(
            &m,
            "tailgate_spans_received_from_peers_total",
            "move-b",
            &[("mark", "handed_over")]
        ),
        16.0
    );
    assert!(count(&m, "tailgate_decisions_received_total", "move-b", &[]) >= 2.0);
    assert!(
        count(
            &m,
            "tailgate_redistributions_total",
            "move-a",
            &[("result", "complete")]
        ) >= 1.0
    );

    // The LBs now route these traces to B: the rest joins what moved, and
    // late spans follow the decisions A took.
    let b = &nodes[1];
    b.send(&[
        span(held[0], 0).root().error(),
        span(kept, 7),
        span(dropped, 7),
    ])
    .await
    .unwrap();
    assert!(
        wait_for(300, || backend.spans_of(held[0]).len() >= 3
            && backend.spans_of(kept).len() >= 2)
        .await
    );
    assert_eq!(backend.spans_of(held[0]), [0, 1, 2]);
    assert_eq!(backend.spans_of(kept), [0, 7]);
    assert_eq!(backend.spans_of(dropped), Vec::<u8>::new());
    // The logged traces' spans come to B: the records leave with them.
    b.send(&[
        span(logged_kept, 0).root().error(),
        span(logged_dropped, 0).root(),
    ])
    .await
    .unwrap();
    assert!(wait_for(300, || backend.log_records().len() >= 2).await);
    let m = global_until(200, |m| {
        count(m, "tailgate_log_records_not_sampled_total", "move-b", &[]) == 1.0
    })
    .await;
    let mut got = backend.log_records();
    got.sort_by_key(|r| r.1);
    assert_eq!(got, vec![(Some(logged_kept), 1), (Some(logged_kept), 2)]);
    for node in ["move-a", "move-b"] {
        assert_eq!(
            count(&m, "tailgate_log_records_orphaned_total", node, &[]),
            0.0
        );
        let (received, accounted) = log_identity(&m, node);
        assert_eq!(received, accounted, "the log identity on {node}");
    }
    assert_identity("move-a").await;
    assert_identity("move-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_sampler_owns_its_share_before_dns_lists_it() {
    // B was just restarted on its address: DNS does not list it again yet,
    // but an LB that kept it on its ring already sends it its traces.
    let backend = Backend::start().await;
    let mut dns = FakeDns::start().await;
    dns.set("samplers.test.", &[A]).await;
    let policy = policy_file("cluster-self-member");
    let (nodes, port) = start_on_one_port(&[("self-a", A), ("self-b", B)], |n, ip, port| {
        cluster_config(n, ip, port, dns_resolver(&dns, port), &policy, &backend)
    });
    let members = [member(A, port), member(B, port)];
    let m = global_until(200, |m| {
        count(m, "tailgate_ownership_members", "self-b", &[]) == 2.0
    })
    .await;
    assert_eq!(
        count(&m, "tailgate_ownership_members", "self-b", &[]),
        2.0,
        "B's ring: A from DNS, and B itself"
    );
    assert_eq!(count(&m, "tailgate_ownership_self", "self-b", &[]), 1.0);
    assert_eq!(count(&m, "tailgate_ownership_self", "self-a", &[]), 1.0);
    let ids = owned_by(&members, &members[1], 5, 9);
    for id in &ids {
        nodes[1]
            .send(&[span(*id, 0).root().error(), span(*id, 1)])
            .await
            .unwrap();
    }
    assert!(
        wait_for(300, || ids
            .iter()
            .all(|id| backend.spans_of(*id).len() >= 2))
        .await
    );
    for id in &ids {
        assert_eq!(backend.spans_of(*id), [0, 1]);
    }
    let m = global();
    assert_eq!(
        count(&m, "tailgate_traces_decided_total", "self-b", &[]),
        5.0,
        "decided where they arrived"
    );
    assert_eq!(
        count(&m, "tailgate_spans_handed_over_total", "self-b", &[]),
        0.0,
        "nothing bounced to A"
    );
    assert_identity("self-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_overs_carry_the_forward_headers_to_samplers_that_require_a_token() {
    let backend = Backend::start().await;
    let policy = policy_file("cluster-token");
    let tokens = policy.with_file_name("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    let (mut nodes, port) = start_on_one_port(&[("token-a", A), ("token-b", B)], |n, ip, port| {
        let mut c = cluster_config(
            n,
            ip,
            port,
            static_resolver(&[A, B], port),
            &policy,
            &backend,
        );
        c.receiver.auth = Some(proto::receiver::AuthConfig {
            tokens_file: Some(tokens.clone()),
            tokens_env: None,
            header: "authorization".into(),
        });
        let forward = &mut c.cluster.as_mut().unwrap().forward;
        forward
            .headers
            .insert("authorization".into(), "Bearer t0ken".into());
        c
    });
    let members = [member(A, port), member(B, port)];
    let ids = owned_by(&members, &members[0], 3, 7);
    for id in &ids {
        send_marked(
            &nodes[0],
            ("authorization", "Bearer t0ken"),
            &[span(*id, 1), span(*id, 2)],
        )
        .await;
    }
    let a = nodes.remove(0);
    within(20, a.shutdown()).await.unwrap();
    let m = global();
    assert_eq!(
        count(
            &m,
            "tailgate_traces_handed_over_total",
            "token-a",
            &[("reason", "shutdown")]
        ),
        3.0,
        "the owner took every trace: the push carried the token"
    );
    assert_eq!(
        count(&m, "tailgate_traces_handover_failed_total", "token-a", &[]),
        0.0
    );
    assert_identity("token-a").await;
    assert_identity("token-b").await;
}

/// A logs request with one record per `(trace, number)`; the number is
/// the record's `time_unix_nano`.
fn log_records(records: &[(TraceId, u64)]) -> bytes::Bytes {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records
                    .iter()
                    .map(|(id, n)| LogRecord {
                        time_unix_nano: *n,
                        trace_id: id.0.to_vec(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_log_records_over_with_their_traces() {
    let backend = Backend::start().await;
    let (mut nodes, members) = start_static_cluster(
        "cluster-handover-logs",
        &[("logs-a", A), ("logs-b", B)],
        [A, B],
        &backend,
    );
    let ids = owned_by(&members, &members[0], 2, 9);
    let (kept, dropped) = (ids[0], ids[1]);
    // Buffered on A (no root yet), each with two log records.
    nodes[0]
        .send(&[span(kept, 1), span(dropped, 1)])
        .await
        .unwrap();
    nodes[0]
        .client()
        .for_signal(proto::receiver::Signal::Logs)
        .export(log_records(&[
            (kept, 1),
            (kept, 2),
            (dropped, 3),
            (dropped, 4),
        ]))
        .await
        .unwrap();
    global_until(200, |m| {
        count(m, "tailgate_log_records_buffered", "logs-a", &[]) == 4.0
    })
    .await;

    let a = nodes.remove(0);
    within(20, a.shutdown()).await.unwrap();
    // A counts the records handed over just after queueing them for B:
    // wait for both counts.
    let m = global_until(200, |m| {
        count(m, "tailgate_log_records_buffered", "logs-b", &[]) == 4.0
            && count(m, "tailgate_log_records_handed_over_total", "logs-a", &[]) == 4.0
    })
    .await;
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "logs-b", &[]),
        4.0
    );
    assert_eq!(
        count(&m, "tailgate_log_records_handed_over_total", "logs-a", &[]),
        4.0
    );
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "logs-a", &[]),
        0.0
    );
    // The traces end on B: their records leave with the decision.
    let b = &nodes[0];
    b.send(&[span(kept, 0).root().error(), span(dropped, 0).root()])
        .await
        .unwrap();
    assert!(wait_for(300, || backend.log_records().len() == 2).await);
    let mut got = backend.log_records();
    got.sort_by_key(|r| r.1);
    assert_eq!(got, vec![(Some(kept), 1), (Some(kept), 2)]);
    let m = global_until(200, |m| {
        count(m, "tailgate_log_records_not_sampled_total", "logs-b", &[]) == 2.0
    })
    .await;
    // The log identity holds on both nodes. (B's static ring still lists
    // A, so B's mover offers the traces to A as well; the records ride the
    // logs forwarder, which finds A down and brings them back to B: counted
    // handed over and received again, never lost or delivered twice.)
    for node in ["logs-a", "logs-b"] {
        let received = count(&m, "tailgate_log_records_received_total", node, &[]);
        let accounted = [
            "tailgate_log_records_forwarded_total",
            "tailgate_log_records_not_sampled_total",
            "tailgate_log_records_dropped_total",
            "tailgate_log_records_handed_over_total",
            "tailgate_log_records_buffered",
        ]
        .iter()
        .map(|name| count(&m, name, node, &[]))
        .sum::<f64>();
        assert!(received >= 4.0);
        assert_eq!(received, accounted, "the log identity on {node}");
    }
    assert_eq!(
        count(&m, "tailgate_log_records_forwarded_total", "logs-b", &[]),
        2.0
    );
}

/// Records held for traces with no span here (the LB sent the spans to
/// another node, or they were still on their way) go to the owner when
/// the node leaves, instead of out as orphans whatever the trace's
/// decision: the records of a dropped trace reached the backend so in
/// the logs rescale scenario (tests/cluster_logs_scale.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_over_log_records_whose_spans_are_not_here() {
    let backend = Backend::start().await;
    let (mut nodes, members) = start_static_cluster(
        "cluster-handover-lone-logs",
        &[("lone-logs-a", A), ("lone-logs-b", B)],
        [A, B],
        &backend,
    );
    let ids = owned_by(&members, &members[0], 2, 13);
    let (kept, dropped) = (ids[0], ids[1]);
    send_logs(
        &nodes[0],
        None,
        log_records(&[(kept, 1), (kept, 2), (dropped, 3), (dropped, 4)]),
    )
    .await;
    global_until(200, |m| {
        count(m, "tailgate_log_records_buffered", "lone-logs-a", &[]) == 4.0
    })
    .await;

    let a = nodes.remove(0);
    within(20, a.shutdown()).await.unwrap();
    let m = global_until(200, |m| {
        count(m, "tailgate_log_records_buffered", "lone-logs-b", &[]) == 4.0
            && count(
                m,
                "tailgate_log_records_handed_over_total",
                "lone-logs-a",
                &[],
            ) == 4.0
    })
    .await;
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "lone-logs-b", &[]),
        4.0
    );
    assert_eq!(
        count(
            &m,
            "tailgate_log_records_orphaned_total",
            "lone-logs-a",
            &[]
        ),
        0.0,
        "nothing left the leaving node as an orphan"
    );
    assert!(backend.log_records().is_empty());
    // The spans come to B: the records follow the decisions.
    let b = &nodes[0];
    b.send(&[span(kept, 0).root().error(), span(dropped, 0).root()])
        .await
        .unwrap();
    assert!(wait_for(300, || backend.log_records().len() >= 2).await);
    let m = global_until(200, |m| {
        count(
            m,
            "tailgate_log_records_not_sampled_total",
            "lone-logs-b",
            &[],
        ) == 2.0
    })
    .await;
    let mut got = backend.log_records();
    got.sort_by_key(|r| r.1);
    assert_eq!(got, vec![(Some(kept), 1), (Some(kept), 2)]);
    let (received, accounted) = log_identity(&m, "lone-logs-a");
    assert_eq!((received, accounted), (4.0, 4.0));
}

/// Issue 15: stray spans queued to the forwarder are not settled in the
/// write-ahead log until the forwarder has passed them on. Their owner
/// here takes connections and never answers, so they wait in the
/// forwarder; the node is killed (its runtime dropped) and restarted on
/// its log, alone on the ring: it recovers them, owns them now, and the
/// error trace arrives whole. Settled when queued (as before), they were
/// lost with the process.
#[test]
fn strays_waiting_in_the_forwarder_when_killed_are_recovered_from_the_log() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = main.block_on(Backend::start());
    let policy = policy_file("cluster-stray-kill");
    let wal = temp_dir("cluster-stray-kill-wal");
    let port = std::net::TcpListener::bind((A, 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    // The owner: accepts, reads, never answers (held until the test ends).
    let silent = main
        .block_on(tokio::net::TcpListener::bind((B, port)))
        .unwrap();
    main.spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let make = |name: &str, listed: &[&str]| {
        let mut c = cluster_config(
            name,
            A,
            port,
            static_resolver(listed, port),
            &policy,
            &backend,
        );
        c.storage = Some(sampler::StorageConfig {
            durable_ack: true,
            commit_interval: Duration::from_millis(20),
            ..sampler::StorageConfig::new(&wal)
        });
        c
    };
    let members = [member(A, port), member(B, port)];
    let id = owned_by(&members, &members[1], 1, 9)[0];

    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let node = first.block_on(async {
        let node = Node::start(make("stray-kill-a", &[A, B]));
        node.send(&[span(id, 0).root().error(), span(id, 1)])
            .await
            .unwrap();
        let m = global_until(100, |m| {
            count(
                m,
                "tailgate_spans_handed_over_total",
                "stray-kill-a",
                &[("reason", "stray")],
            ) == 2.0
        })
        .await;
        assert_eq!(
            count(
                &m,
                "tailgate_spans_handed_over_total",
                "stray-kill-a",
                &[("reason", "stray")]
            ),
            2.0,
            "queued to the forwarder"
        );
        // Several commit intervals: a settlement would be on disk now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        node
    });
    first.shutdown_background();
    drop(node);

    main.block_on(async {
        let mut node = None;
        for _ in 0..50 {
            match Node::try_start(make("stray-kill-b", &[A])) {
                Ok(n) => {
                    node = Some(n);
                    break;
                }
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("{e}"),
            }
        }
        let node = node.expect("the node starts again on its port");
        let m = global_until(100, |m| {
            count(m, "tailgate_spans_recovered_total", "stray-kill-b", &[]) >= 2.0
        })
        .await;
        assert_eq!(
            count(&m, "tailgate_spans_recovered_total", "stray-kill-b", &[]),
            2.0,
            "the strays were in the log, unsettled"
        );
        assert!(wait_for(200, || backend.spans_of(id).len() >= 2).await);
        assert_eq!(backend.spans_of(id), [0, 1]);
        node.shutdown().await.unwrap();
    });
}

/// Sends a logs request to `node`, with `header` if given.
async fn send_logs(node: &Node, header: Option<(&str, &str)>, body: bytes::Bytes) {
    let mut config = OtlpClientConfig::new(format!("http://{}", node.grpc));
    if let Some((name, value)) = header {
        config.headers.insert(name.to_owned(), value.to_owned());
    }
    OtlpClient::new(&config)
        .unwrap()
        .for_signal(proto::receiver::Signal::Logs)
        .export(body)
        .await
        .unwrap();
}

/// The log identity of `node`: (received, accounted for).
fn log_identity(m: &Metrics, node: &str) -> (f64, f64) {
    let received = count(m, "tailgate_log_records_received_total", node, &[]);
    let accounted = [
        "tailgate_log_records_forwarded_total",
        "tailgate_log_records_not_sampled_total",
        "tailgate_log_records_dropped_total",
        "tailgate_log_records_handed_over_total",
        "tailgate_log_records_buffered",
    ]
    .iter()
    .map(|name| count(m, name, node, &[]))
    .sum::<f64>();
    (received, accounted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_log_records_reach_their_traces_owner_once_and_leave_with_its_decision() {
    let backend = Backend::start().await;
    let (nodes, members) = start_static_cluster(
        "cluster-stray-logs",
        &[("slogs-a", A), ("slogs-b", B)],
        [A, B],
        &backend,
    );
    let ids = owned_by(&members, &members[0], 2, 11);
    let (kept, dropped) = (ids[0], ids[1]);
    // The records reach B (another LB, another ring), which has nothing of
    // their traces: they go to the owner, A, and wait there (the traces
    // wait 30 s for a root, longer than this test: held on B, they would
    // never arrive in time).
    send_logs(
        &nodes[1],
        None,
        log_records(&[(kept, 1), (kept, 2), (dropped, 3), (dropped, 4)]),
    )
    .await;
    // B counts the records handed over just after queueing them for A, so
    // on a loaded machine A may hold them before B's count shows: wait for
    // both.
    let m = global_until(200, |m| {
        count(m, "tailgate_log_records_buffered", "slogs-a", &[]) == 4.0
            && count(m, "tailgate_log_records_handed_over_total", "slogs-b", &[]) == 4.0
    })
    .await;
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "slogs-a", &[]),
        4.0
    );
    assert_eq!(
        count(&m, "tailgate_log_records_handed_over_total", "slogs-b", &[]),
        4.0
    );
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "slogs-b", &[]),
        0.0
    );
    // The traces' spans reach their owner: the records leave with the
    // decisions, the kept trace's forwarded, the other's not sampled.
    nodes[0]
        .send(&[span(kept, 0).root().error(), span(dropped, 0).root()])
        .await
        .unwrap();
    assert!(wait_for(300, || backend.log_records().len() == 2).await);
    let mut got = backend.log_records();
    got.sort_by_key(|r| r.1);
    assert_eq!(got, vec![(Some(kept), 1), (Some(kept), 2)]);
    global_until(200, |m| {
        count(m, "tailgate_log_records_not_sampled_total", "slogs-a", &[]) == 2.0
    })
    .await;

    // Records another sampler forwarded are held where they land, even
    // when this node's ring says another owns them: never forwarded again.
    let theirs = owned_by(&members, &members[1], 1, 12)[0];
    send_logs(
        &nodes[0],
        Some(("x-tailgate-forwarded", "1")),
        log_records(&[(theirs, 5)]),
    )
    .await;
    let m = global_until(200, |m| {
        count(m, "tailgate_log_records_buffered", "slogs-a", &[]) == 1.0
    })
    .await;
    assert_eq!(
        count(&m, "tailgate_log_records_buffered", "slogs-a", &[]),
        1.0
    );
    assert_eq!(
        count(&m, "tailgate_log_records_handed_over_total", "slogs-a", &[]),
        0.0,
        "a forwarded record is never forwarded again"
    );
    assert_eq!(
        count(&m, "tailgate_log_records_forwarded_total", "slogs-a", &[]),
        2.0
    );
    for node in ["slogs-a", "slogs-b"] {
        let (received, accounted) = log_identity(&m, node);
        assert!(received >= 1.0);
        assert_eq!(received, accounted, "the log identity on {node}");
    }
}
