//! The DNS resolver against an in-process authoritative server whose
//! records the test changes; the static resolver.

mod support;

use std::time::Duration;

use lb_exporter::resolver::{self, DnsConfig, ResolverConfig};
use lb_exporter::{Member, MemberSet};
use support::{FakeDns, Scrape, eventually, node};

const WAIT: Duration = Duration::from_secs(20);
const HOST: &str = "samplers.test.";

fn config(dns: &FakeDns) -> ResolverConfig {
    ResolverConfig::Dns(DnsConfig {
        hostname: HOST.into(),
        port: 4317,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(50),
        nameservers: vec![dns.addr.to_string()],
    })
}

fn set(names: &[&str]) -> MemberSet {
    names.iter().map(|n| Member::parse(n).unwrap()).collect()
}

fn count(node_name: &str, metric: &str, extra: &[(&str, &str)]) -> f64 {
    Scrape::now().get(metric, &node(node_name, extra))
}

#[tokio::test]
async fn members_are_every_a_and_aaaa_address_with_the_port_sorted() {
    proto::admin::install_metrics();
    let mut dns = FakeDns::start().await;
    dns.set(HOST, &["10.0.0.9", "fd00::2", "10.0.0.1"]).await;
    let membership = resolver::start(&config(&dns), "res-both").unwrap();
    let mut rx = membership.subscribe();
    let got = tokio::time::timeout(WAIT, rx.wait_for(|s| !s.is_empty()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(
        got,
        set(&["10.0.0.1:4317", "10.0.0.9:4317", "[fd00::2]:4317"])
    );
    let spelt: Vec<&str> = got.members().iter().map(Member::as_str).collect();
    assert_eq!(spelt, ["10.0.0.1:4317", "10.0.0.9:4317", "[fd00::2]:4317"]);
    assert_eq!(count("res-both", "tailgate_lb_members", &[]), 3.0);
    assert_eq!(
        count("res-both", "tailgate_lb_membership_changes_total", &[]),
        1.0
    );
    membership.stop().await;
}

#[tokio::test]
async fn a_changed_record_set_is_published_counted_and_an_unchanged_one_is_not() {
    proto::admin::install_metrics();
    let mut dns = FakeDns::start().await;
    dns.set(HOST, &["10.0.0.1", "10.0.0.2"]).await;
    let membership = resolver::start(&config(&dns), "res-change").unwrap();
    let mut rx = membership.subscribe();
    tokio::time::timeout(WAIT, rx.wait_for(|s| s.len() == 2))
        .await
        .unwrap()
        .unwrap();
    // Several more resolutions of the same answer change nothing.
    let ok = || {
        count(
            "res-change",
            "tailgate_lb_resolutions_total",
            &[("result", "ok")],
        )
    };
    assert!(eventually(WAIT, || ok() >= 4.0).await);
    assert_eq!(
        count("res-change", "tailgate_lb_membership_changes_total", &[]),
        1.0
    );
    dns.set(HOST, &["10.0.0.3", "10.0.0.2"]).await;
    let now = tokio::time::timeout(
        WAIT,
        rx.wait_for(|s| s.len() == 2 && s != &set(&["10.0.0.1:4317", "10.0.0.2:4317"])),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(now, set(&["10.0.0.2:4317", "10.0.0.3:4317"]));
    assert_eq!(
        count("res-change", "tailgate_lb_membership_changes_total", &[]),
        2.0
    );
    membership.stop().await;
}

#[tokio::test]
async fn an_empty_answer_keeps_the_last_good_set_and_is_counted() {
    proto::admin::install_metrics();
    let mut dns = FakeDns::start().await;
    dns.set(HOST, &["10.0.0.1"]).await;
    let membership = resolver::start(&config(&dns), "res-empty").unwrap();
    let mut rx = membership.subscribe();
    tokio::time::timeout(WAIT, rx.wait_for(|s| !s.is_empty()))
        .await
        .unwrap()
        .unwrap();
    dns.set(HOST, &[]).await;
    let empty = || {
        count(
            "res-empty",
            "tailgate_lb_resolutions_total",
            &[("result", "empty")],
        )
    };
    assert!(eventually(WAIT, || empty() >= 2.0).await);
    assert_eq!(membership.current(), set(&["10.0.0.1:4317"]));
    assert_eq!(count("res-empty", "tailgate_lb_members", &[]), 1.0);
    membership.stop().await;
}

#[tokio::test]
async fn a_nameserver_that_stops_answering_keeps_the_last_good_set_and_is_counted() {
    proto::admin::install_metrics();
    let mut dns = FakeDns::start().await;
    dns.set(HOST, &["10.0.0.1", "10.0.0.2"]).await;
    let membership = resolver::start(&config(&dns), "res-fail").unwrap();
    let mut rx = membership.subscribe();
    tokio::time::timeout(WAIT, rx.wait_for(|s| s.len() == 2))
        .await
        .unwrap()
        .unwrap();
    dns.stop().await;
    let errors = || {
        count(
            "res-fail",
            "tailgate_lb_resolutions_total",
            &[("result", "error")],
        )
    };
    assert!(eventually(WAIT, || errors() >= 2.0).await);
    assert_eq!(membership.current().len(), 2);
    assert_eq!(
        count("res-fail", "tailgate_lb_membership_changes_total", &[]),
        1.0
    );
    membership.stop().await;
}
