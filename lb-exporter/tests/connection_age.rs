//! Long-lived clients spread over LB replicas: two `tailgate lb` nodes
//! behind a TCP balancer that hands each new connection to the next LB (as
//! a Kubernetes Service does), and one client that keeps its connection
//! as long as the server lets it. With `receiver.max_connection_age`, the
//! LBs ask it to reconnect, so both get its traffic; without, one LB gets
//! everything. Requests in flight when an LB asks are answered.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lb_exporter::resolver::{ResolverConfig, StaticConfig};
use lb_exporter::{Lb, LbConfig};
use proto::exporter::{OtlpClient, OtlpClientConfig};
use proto::receiver::ReceiverConfig;
use support::{FakeSink, Scrape, Traces, node};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An LB serving on a task until its sender is dropped.
struct Replica {
    grpc: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn replica(name: &str, member: &str, max_connection_age: Duration) -> Replica {
    let config = LbConfig {
        node: name.into(),
        receiver: ReceiverConfig {
            grpc: Some("127.0.0.1:0".parse().unwrap()),
            http: None,
            max_connection_age,
            max_connection_age_grace: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            ..ReceiverConfig::default()
        },
        admin: "127.0.0.1:0".parse().unwrap(),
        resolver: ResolverConfig::Static(StaticConfig {
            members: vec![member.into()],
        }),
        ..LbConfig::default()
    };
    let lb = Lb::bind(config).unwrap();
    let grpc = lb.grpc_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(lb.serve(async {
        let _ = stopped.await;
    }));
    Replica { grpc, _stop: stop }
}

/// A TCP balancer on 127.0.0.1: each new connection goes to the next
/// upstream in turn. Returns its address and the connections it opened.
async fn round_robin(upstreams: Vec<SocketAddr>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let count = opened.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let upstream = upstreams[n % upstreams.len()];
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, opened)
}

fn received(scrape: &Scrape, lb: &str) -> f64 {
    scrape.get("tailgate_lb_spans_received_total", &node(lb, &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_client_moves_between_lbs_when_its_connection_ages() {
    let sink = FakeSink::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let age = Duration::from_millis(300);
    let a = replica("lb-age-a", &sink.member(), age).await;
    let b = replica("lb-age-b", &sink.member(), age).await;
    let (balancer, opened) = round_robin(vec![a.grpc, b.grpc]).await;
    let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{balancer}"))).unwrap();
    let mut traces = Traces::new(7);
    let (mut sent, mut failed) = (0, Vec::new());
    // Bounded: at most 400 requests, 25 ms apart; done once both LBs have
    // taken spans over at least three connections.
    for _ in 0..400 {
        let (request, _) = traces.fresh(2, 3);
        match client.export(request).await {
            Ok(_) => sent += 1,
            Err(e) => failed.push(e),
        }
        let scrape = Scrape::now();
        if received(&scrape, "lb-age-a") > 0.0
            && received(&scrape, "lb-age-b") > 0.0
            && opened.load(Ordering::SeqCst) >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let scrape = Scrape::now();
    assert!(
        received(&scrape, "lb-age-a") > 0.0 && received(&scrape, "lb-age-b") > 0.0,
        "one client, {} connections: lb-a took {}, lb-b {} spans",
        opened.load(Ordering::SeqCst),
        received(&scrape, "lb-age-a"),
        received(&scrape, "lb-age-b")
    );
    assert!(opened.load(Ordering::SeqCst) >= 3);
    // Asked to go away, never cut off mid-request: at most a retryable
    // refusal of a request that raced the GOAWAY.
    assert!(
        failed.iter().all(|e| e.is_retryable()),
        "{sent} sent; failures: {failed:?}"
    );
    assert!(sent > 0, "failures: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_connection_age_a_client_stays_on_one_lb() {
    let sink = FakeSink::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let a = replica("lb-stay-a", &sink.member(), Duration::ZERO).await;
    let b = replica("lb-stay-b", &sink.member(), Duration::ZERO).await;
    let (balancer, opened) = round_robin(vec![a.grpc, b.grpc]).await;
    let client = OtlpClient::new(&OtlpClientConfig::new(format!("http://{balancer}"))).unwrap();
    let mut traces = Traces::new(8);
    for _ in 0..20 {
        let (request, _) = traces.fresh(2, 3);
        client.export(request).await.unwrap();
    }
    let scrape = Scrape::now();
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    assert_eq!(received(&scrape, "lb-stay-a"), 120.0);
    assert_eq!(received(&scrape, "lb-stay-b"), 0.0);
}
