//! mTLS inside the cluster, as processes: `tailgate lb` and `tailgate
//! sampler` on loopback with the "TLS" configuration of docs/security.md. Every
//! sampler serves OTLP only over TLS and only to holders of a certificate
//! from the cluster's CA (`receiver.tls.client_ca_file`); the LBs export to
//! them with that certificate (`export.tls`), and the samplers move traces
//! among themselves with it (`cluster.forward.tls`). Certificates are made
//! in the test (rcgen), one for every node, naming the samplers' IPs.
//!
//! Traffic flows through the LBs while the tier scales from three samplers
//! to two (hand-over over mTLS): every kept trace must reach the backend
//! whole, exactly once. Then a client without a certificate, and one that
//! speaks plaintext, must be refused by a sampler and counted.
//!
//! Bounded like the other cluster tests: the load runs 10 s, every wait has
//! a limit, and every process is stopped by PID.

mod cluster_support;
#[path = "../proto/tests/tls_support/mod.rs"]
mod tls_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cluster_support::*;
use proto::exporter::{OtlpClient, OtlpClientConfig};
use proto::tls::ClientTlsConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_and_samplers_speak_only_mtls_and_keep_every_trace_whole_across_a_scale_down() {
    let mut cluster = Cluster::start_with_tls("mtls", 3, 3, |dir| {
        let ca = tls_support::Ca::new(dir, "cluster");
        let ips: Vec<String> = (0..3).map(|i| sampler_ip(i).to_string()).collect();
        let names: Vec<&str> = ips.iter().map(String::as_str).collect();
        let (cert_file, key_file) = ca.issue(dir, "node", &names);
        Some(ClusterTls {
            ca_file: ca.cert_file,
            cert_file,
            key_file,
        })
    })
    .await;
    let tls = cluster.tls.clone().expect("tls on");

    let load = cluster.generate(Duration::from_secs(10), 1500.0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Scale down: sampler 2 hands its traces to the others over mTLS.
    cluster.stop_samplers(&[2]).await;
    let report = load.await.expect("gen finishes");
    cluster.quiesce(Duration::from_secs(40)).await;
    cluster.assert_identities().await;

    let handed_over: f64 = {
        let mut sum = 0.0;
        for i in [0, 1] {
            sum += cluster.metrics(i).await.sum(
                "tailgate_spans_received_from_peers_total",
                &[("mark", "handed_over")],
            );
        }
        sum
    };
    assert!(
        handed_over > 0.0,
        "sampler 2 handed its traces over (over mTLS) before it stopped"
    );
    let lb_received: f64 = {
        let mut sum = 0.0;
        for i in 0..cluster.lbs.len() {
            sum += cluster
                .lb_metrics(i)
                .await
                .sum("tailgate_spans_received_total", &[]);
        }
        sum
    };
    assert!(lb_received > 0.0, "the LBs took the load");

    // Refused: a TLS client without a certificate, and plaintext.
    let sampler = SocketAddr::new(sampler_ip(0), cluster.port);
    let refused_before = tls_refusals(&cluster).await;
    let no_certificate = client(
        format!("https://{sampler}"),
        Some(ClientTlsConfig {
            ca_file: Some(tls.ca_file.clone()),
            ..ClientTlsConfig::default()
        }),
    );
    let plaintext = client(format!("http://{sampler}"), None);
    let valid = Bytes::from(valid_request());
    let without = no_certificate.export(valid.clone()).await;
    let plain = plaintext.export(valid.clone()).await;
    // The same request with the certificate goes through: the refusals
    // above are about who sent it, not what.
    let with_certificate = client(
        format!("https://{sampler}"),
        Some(ClientTlsConfig {
            ca_file: Some(tls.ca_file.clone()),
            cert_file: Some(tls.cert_file.clone()),
            key_file: Some(tls.key_file.clone()),
            server_name: None,
        }),
    )
    .export(valid)
    .await;
    let refused = tls_refusals(&cluster).await - refused_before;

    // The request sent by hand is in no manifest: the verifier skips it.
    let verified = cluster.verify(|trace| trace.0 == MTLS_TRACE).await;
    cluster.shutdown().await;

    assert!(without.is_err(), "no client certificate: {without:?}");
    assert!(plain.is_err(), "plaintext: {plain:?}");
    assert!(with_certificate.is_ok(), "{with_certificate:?}");
    assert!(
        refused >= 2.0,
        "both refusals counted as tls_handshake ({refused})"
    );
    assert_verified(&verified, &report);
}

/// Sampler 0's `tailgate_connections_refused_total{reason="tls_handshake"}`.
async fn tls_refusals(cluster: &Cluster) -> f64 {
    cluster.metrics(0).await.sum(
        "tailgate_connections_refused_total",
        &[("reason", "tls_handshake")],
    )
}

fn client(endpoint: String, tls: Option<ClientTlsConfig>) -> OtlpClient {
    let mut config = OtlpClientConfig::new(endpoint);
    config.tls = tls;
    config.timeout = Duration::from_secs(5);
    OtlpClient::new(&config).expect("client config")
}

/// The trace of the request sent by hand (the generator draws random
/// 128-bit IDs: this small one never collides with theirs).
const MTLS_TRACE: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

/// A valid one-span request of [`MTLS_TRACE`].
fn valid_request() -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: MTLS_TRACE.to_vec(),
                    span_id: vec![7; 8],
                    name: "mtls".into(),
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}
