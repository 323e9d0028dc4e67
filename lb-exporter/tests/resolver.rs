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
        timeout: Some(Duration::from_millis(50)),
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

#[tokio::test]
async fn a_nameserver_that_refuses_aaaa_still_yields_the_a_members() {
    use support::dns::{RecordType, ResponseCode};
    proto::admin::install_metrics();
    let mut dns = FakeDns::start().await;
    dns.set(HOST, &["10.0.0.1", "10.0.0.2"]).await;
    // dnsmasq's default, and several corporate resolvers'.
    dns.answer_with(RecordType::AAAA, Some(ResponseCode::Refused));
    let membership = resolver::start(&config(&dns), "res-refuse-aaaa").unwrap();
    let mut rx = membership.subscribe();
    let got = tokio::time::timeout(WAIT, rx.wait_for(|s| !s.is_empty()))
        .await
        .expect("members found although AAAA is refused")
        .unwrap()
        .clone();
    assert_eq!(got, set(&["10.0.0.1:4317", "10.0.0.2:4317"]));
    let result = |r| {
        count(
            "res-refuse-aaaa",
            "tailgate_lb_resolutions_total",
            &[("result", r)],
        )
    };
    assert!(result("partial") >= 1.0);
    assert_eq!(result("error"), 0.0);

    // SERVFAIL on A with AAAA records: the AAAA members.
    dns.answer_with(RecordType::AAAA, None);
    dns.answer_with(RecordType::A, Some(ResponseCode::ServFail));
    dns.set(HOST, &["fd00::7"]).await;
    let v6 = tokio::time::timeout(
        WAIT,
        rx.wait_for(|s| s.members().iter().any(|m| m.as_str().starts_with('['))),
    )
    .await
    .expect("the AAAA answer is taken while A fails")
    .unwrap()
    .clone();
    // The A family failed: its last good addresses stay beside the AAAA one.
    assert_eq!(
        v6,
        set(&["10.0.0.1:4317", "10.0.0.2:4317", "[fd00::7]:4317"])
    );

    // Both refused: the last good set stays, counted as an error.
    dns.answer_with(RecordType::AAAA, Some(ResponseCode::Refused));
    let errors_before = result("error");
    assert!(eventually(WAIT, || result("error") >= errors_before + 2.0).await);
    assert_eq!(membership.current(), v6);
    membership.stop().await;
}
