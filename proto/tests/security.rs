//! TLS, mTLS and tokens between the OTLP exporter and a real receiver on
//! 127.0.0.1, with certificates made in the test (rcgen): a CA, a server
//! certificate for 127.0.0.1 and `localhost`, client certificates.

mod receiver_support;
mod tls_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use proto::admin::{Admin, Readiness, install_metrics};
use proto::exporter::{ExportError, OtlpClient, OtlpClientConfig};
use proto::receiver::{AuthConfig, ReceiverConfig};
use proto::tls::{ClientTlsConfig, ServerTlsConfig};
use receiver_support::{Running, loopback_config, sample_request, start};
use tls_support::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("tailgate-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_receiver(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Running {
    start(ReceiverConfig {
        tls: Some(ServerTlsConfig {
            cert_file: cert.to_owned(),
            key_file: key.to_owned(),
            client_ca_file: client_ca.map(Path::to_owned),
        }),
        ..loopback_config("tls")
    })
}

fn client(endpoint: String, tls: Option<ClientTlsConfig>) -> OtlpClient {
    let mut config = OtlpClientConfig::new(endpoint);
    config.tls = tls;
    config.timeout = Duration::from_secs(10);
    OtlpClient::new(&config).expect("client config")
}

fn request() -> Bytes {
    Bytes::from(sample_request(3, 1).encode_to_vec())
}

#[tokio::test]
async fn exporter_sends_over_tls_and_checks_the_server_certificate() {
    let dir = Dir::new("tls");
    let ca = Ca::new(&dir.0, "main");
    let (cert, key) = ca.issue(&dir.0, "server", &["localhost", "127.0.0.1"]);
    let mut running = tls_receiver(&cert, &key, None);

    let trusted = ClientTlsConfig {
        ca_file: Some(ca.cert_file.clone()),
        ..ClientTlsConfig::default()
    };
    let tls_client = client(format!("https://{}", running.grpc), Some(trusted.clone()));
    tls_client.export(request()).await.expect("export over TLS");
    assert_eq!(running.sink.batches().len(), 1);

    // By name: the certificate carries `localhost` too.
    let by_name = client(
        format!("https://localhost:{}", running.grpc.port()),
        Some(trusted.clone()),
    );
    by_name
        .export(request())
        .await
        .expect("export to localhost");

    // A CA the server's certificate does not chain to: no connection.
    let other = Ca::new(&dir.0, "other");
    let untrusted = client(
        format!("https://{}", running.grpc),
        Some(ClientTlsConfig {
            ca_file: Some(other.cert_file.clone()),
            ..ClientTlsConfig::default()
        }),
    );
    let err = untrusted
        .export(request())
        .await
        .expect_err("untrusted server");
    assert!(matches!(err, ExportError::Connect { .. }), "{err}");

    // A name the certificate does not carry.
    let wrong_name = client(
        format!("https://{}", running.grpc),
        Some(ClientTlsConfig {
            server_name: Some("tempo.example".into()),
            ..trusted
        }),
    );
    let err = wrong_name.export(request()).await.expect_err("wrong name");
    assert!(matches!(err, ExportError::Connect { .. }), "{err}");

    // Plain HTTP/2 to a TLS listener fails too: nothing is accepted.
    let plain = client(format!("http://{}", running.grpc), None);
    assert!(plain.export(request()).await.is_err());
    assert_eq!(running.sink.batches().len(), 2);
    running.stop();
}

#[tokio::test]
async fn otlp_http_is_served_over_tls() {
    let dir = Dir::new("tls-http");
    let ca = Ca::new(&dir.0, "main");
    let (cert, key) = ca.issue(&dir.0, "server", &["127.0.0.1"]);
    let mut running = tls_receiver(&cert, &key, None);

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca.cert_file).expect("CA");
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(running.http)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let body = sample_request(2, 2).encode_to_vec();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(&body).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(running.sink.batches().len(), 1);
    running.stop();
}

use rustls_pki_types::pem::PemObject;

#[tokio::test]
async fn mtls_accepts_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = Dir::new("mtls");
    let ca = Ca::new(&dir.0, "main");
    let clients = Ca::new(&dir.0, "clients");
    let (cert, key) = ca.issue(&dir.0, "server", &["127.0.0.1"]);
    let mut running = tls_receiver(&cert, &key, Some(&clients.cert_file));
    let endpoint = format!("https://{}", running.grpc);
    let trust = ClientTlsConfig {
        ca_file: Some(ca.cert_file.clone()),
        ..ClientTlsConfig::default()
    };

    let anonymous = client(endpoint.clone(), Some(trust.clone()));
    assert!(
        anonymous.export(request()).await.is_err(),
        "no client certificate"
    );

    // Signed by the server's CA, not the client CA.
    let (stranger_cert, stranger_key) = ca.issue(&dir.0, "stranger", &["lb-0"]);
    let stranger = client(
        endpoint.clone(),
        Some(ClientTlsConfig {
            cert_file: Some(stranger_cert),
            key_file: Some(stranger_key),
            ..trust.clone()
        }),
    );
    assert!(stranger.export(request()).await.is_err(), "wrong client CA");
    assert!(running.sink.batches().is_empty());

    let (lb_cert, lb_key) = clients.issue(&dir.0, "lb", &["lb-0"]);
    let lb = client(
        endpoint,
        Some(ClientTlsConfig {
            cert_file: Some(lb_cert),
            key_file: Some(lb_key),
            ..trust
        }),
    );
    lb.export(request())
        .await
        .expect("a client certificate from the client CA");
    assert_eq!(running.sink.batches().len(), 1);
    let refused = running.metric(
        "tailgate_connections_refused_total",
        &[("protocol", "grpc"), ("reason", "tls_handshake")],
    );
    assert!(refused >= 2.0, "handshakes refused: {refused}");
    running.stop();
}

#[tokio::test]
async fn a_rotated_server_certificate_is_used_without_a_restart() {
    let dir = Dir::new("rotate");
    let old_ca = Ca::new(&dir.0, "old");
    let (cert, key) = old_ca.issue(&dir.0, "server", &["127.0.0.1"]);
    let mut running = tls_receiver(&cert, &key, None);
    let endpoint = format!("https://{}", running.grpc);
    let trusting = |ca: &Ca| {
        Some(ClientTlsConfig {
            ca_file: Some(ca.cert_file.clone()),
            ..ClientTlsConfig::default()
        })
    };
    client(endpoint.clone(), trusting(&old_ca))
        .export(request())
        .await
        .expect("the first certificate");

    // The files are replaced by ones from a new CA (same paths).
    let new_ca = Ca::new(&dir.0, "new");
    new_ca.issue(&dir.0, "server", &["127.0.0.1"]);
    // Each client dials anew; the receiver checks its files at most once a
    // second, so the new certificate shows within a few tries.
    let mut rotated = false;
    for _ in 0..50 {
        let fresh = client(endpoint.clone(), trusting(&new_ca));
        if fresh.export(request()).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new certificate was never served");
    let old = client(endpoint, trusting(&old_ca));
    assert!(
        old.export(request()).await.is_err(),
        "the old certificate is gone"
    );
    running.stop();
}

#[tokio::test]
async fn a_rotated_client_certificate_is_presented_without_a_restart() {
    let dir = Dir::new("rotate-client");
    let ca = Ca::new(&dir.0, "main");
    let clients = Ca::new(&dir.0, "clients");
    let (cert, key) = ca.issue(&dir.0, "server", &["127.0.0.1"]);
    let mut running = tls_receiver(&cert, &key, Some(&clients.cert_file));
    // The exporter's identity starts out from the wrong CA.
    let (client_cert, client_key) = ca.issue(&dir.0, "lb", &["lb-0"]);
    let exporter = client(
        format!("https://{}", running.grpc),
        Some(ClientTlsConfig {
            ca_file: Some(ca.cert_file.clone()),
            cert_file: Some(client_cert),
            key_file: Some(client_key),
            server_name: None,
        }),
    );
    assert!(
        exporter.export(request()).await.is_err(),
        "a certificate the receiver does not trust"
    );

    // cert-manager renews it in place, from the right CA. The same exporter
    // (no restart) presents it on its next connection: it checks its files
    // at most once a second.
    clients.issue(&dir.0, "lb", &["lb-0"]);
    let mut accepted = false;
    for _ in 0..50 {
        if exporter.export(request()).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        accepted,
        "the renewed client certificate was never presented"
    );
    assert_eq!(running.sink.batches().len(), 1);
    running.stop();
}

#[tokio::test]
async fn requests_without_an_accepted_token_are_unauthenticated_and_counted() {
    let dir = Dir::new("auth");
    let tokens = dir.0.join("tokens");
    std::fs::write(&tokens, "# receiver tokens\ns3cret-one\ns3cret-two\n").expect("tokens");
    let mut running = start(ReceiverConfig {
        auth: Some(AuthConfig {
            tokens_file: Some(tokens.clone()),
            tokens_env: None,
            header: "authorization".into(),
        }),
        ..loopback_config("auth")
    });
    let with_header = |value: Option<&str>| {
        let mut config = OtlpClientConfig::new(format!("http://{}", running.grpc));
        if let Some(value) = value {
            config.headers.insert("authorization".into(), value.into());
        }
        OtlpClient::new(&config).expect("client")
    };
    for value in [None, Some("Bearer wrong"), Some("s3cret-one")] {
        let err = with_header(value)
            .export(request())
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{value:?}: {err}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    with_header(Some("Bearer s3cret-two"))
        .export(request())
        .await
        .expect("an accepted token");
    assert_eq!(running.requests("grpc", "unauthenticated"), 3.0);
    assert_eq!(running.requests("grpc", "accepted"), 1.0);

    // OTLP/HTTP: 401 without reading the body.
    let mut tcp = tokio::net::TcpStream::connect(running.http)
        .await
        .expect("connect");
    tcp.write_all(
        b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 3\r\nauthorization: Bearer nope\r\n\r\nabc",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{answer}"
    );
    assert_eq!(running.requests("http", "unauthenticated"), 1.0);
    assert_eq!(running.sink.batches().len(), 1);

    // The file is rotated: the old tokens stop working, the new one works.
    std::fs::write(&tokens, "s3cret-three\n").expect("tokens");
    let mut rotated = false;
    for _ in 0..50 {
        if with_header(Some("Bearer s3cret-three"))
            .export(request())
            .await
            .is_ok()
        {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new token was never accepted");
    let err = with_header(Some("Bearer s3cret-two"))
        .export(request())
        .await
        .expect_err("old token");
    assert_eq!(err.code(), Code::Unauthenticated);
    running.stop();
}

#[tokio::test]
async fn a_request_over_the_span_limit_is_refused_whole_and_counted() {
    let mut running = start(ReceiverConfig {
        max_spans_per_request: 10,
        ..loopback_config("limits")
    });
    let client = client(format!("http://{}", running.grpc), None);
    let err = client
        .export(Bytes::from(sample_request(11, 3).encode_to_vec()))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        !err.is_retryable(),
        "no RetryInfo: the same request fails again"
    );
    client
        .export(Bytes::from(sample_request(10, 3).encode_to_vec()))
        .await
        .expect("at the limit");
    assert_eq!(running.requests("grpc", "too_many_spans"), 1.0);
    assert_eq!(running.sink.batches().len(), 1);
    running.stop();
}

#[tokio::test]
async fn an_attribute_value_over_the_limit_is_refused_whole_with_its_key_and_counted() {
    let mut running = start(ReceiverConfig {
        max_attribute_value_bytes: 4096,
        ..loopback_config("attribute-limit")
    });
    let with_statement = |len: usize| {
        let mut request = sample_request(3, 5);
        let span = &mut request.resource_spans[0].scope_spans[0].spans[1];
        span.attributes.push(receiver_support::kv(
            "db.statement",
            any_value::Value::StringValue("s".repeat(len)),
        ));
        request
    };
    let client = client(format!("http://{}", running.grpc), None);
    let err = client
        .export(Bytes::from(with_statement(5000).encode_to_vec()))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(!err.is_retryable(), "the same request fails again");
    assert!(
        err.to_string().contains(
            "span attribute \"db.statement\" has a value of 5003 bytes, over the limit of 4096"
        ),
        "{err}"
    );
    // At the limit: the encoded value (tag, 2-byte length, string) is 4096 bytes.
    client
        .export(Bytes::from(with_statement(4093).encode_to_vec()))
        .await
        .expect("at the limit");

    // OTLP/JSON reaches the same check after conversion.
    let json = serde_json::to_vec(&with_statement(5000)).expect("json");
    let reply = receiver_support::post(
        &receiver_support::http1_client(),
        running.http,
        "/v1/traces",
        &[("content-type", "application/json")],
        json,
    )
    .await;
    assert_eq!(reply.status, 413);
    assert!(String::from_utf8_lossy(&reply.body).contains("db.statement"));

    assert_eq!(running.requests("grpc", "attribute_too_long"), 1.0);
    assert_eq!(running.requests("http", "attribute_too_long"), 1.0);
    assert_eq!(
        running.sink.batches().len(),
        1,
        "only the request at the limit"
    );
    running.stop();
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_counted() {
    let mut running = start(ReceiverConfig {
        max_connections: 2,
        ..loopback_config("conns")
    });
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(running.http)
                .await
                .expect("connect"),
        );
    }
    // The third is accepted and closed at once: reading it ends.
    let mut third = tokio::net::TcpStream::connect(running.http)
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert_eq!(
        running.metric(
            "tailgate_connections_refused_total",
            &[("protocol", "http"), ("reason", "limit")]
        ),
        1.0
    );
    drop(held);
    running.stop();
}

/// `GET path` over TLS, trusting `ca` and presenting `identity` (a
/// certificate and key file) if given; the whole answer, or why not.
async fn https_get(
    addr: std::net::SocketAddr,
    path: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("a usable CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("cert file")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certificates"),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("a usable identity"),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut tls = connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        tls.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

#[tokio::test]
async fn the_admin_server_over_mtls_answers_only_scrapers_with_a_certificate() {
    let dir = Dir::new("admin-tls");
    let ca = Ca::new(&dir.0, "main");
    let (cert, key) = ca.issue(&dir.0, "admin", &["127.0.0.1"]);
    let (scraper_cert, scraper_key) = ca.issue(&dir.0, "prometheus", &["prometheus"]);
    let tls = ServerTlsConfig {
        cert_file: cert,
        key_file: key,
        client_ca_file: Some(ca.cert_file.clone()),
    };
    let admin = Admin::bind_tls(
        "127.0.0.1:0".parse().expect("addr"),
        Some(&tls),
        "admin-tls",
    )
    .expect("binds");
    let addr = admin.local_addr();
    let readiness = Readiness::new();
    readiness.set_ready(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin.serve(install_metrics(), readiness, async {
        let _ = stopped.await;
    }));

    let scraper = Some((scraper_cert.as_path(), scraper_key.as_path()));
    let ready = https_get(addr, "/readyz", &ca.cert_file, scraper).await;
    assert!(
        ready.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "{ready:?}"
    );
    let anonymous = https_get(addr, "/metrics", &ca.cert_file, None).await;
    assert!(
        anonymous.as_ref().is_err() || anonymous.as_ref().is_ok_and(String::is_empty),
        "no client certificate, no metrics: {anonymous:?}"
    );
    let plain = tokio::time::timeout(Duration::from_secs(10), plain_get(addr, "/metrics"))
        .await
        .expect("answered or closed within 10 s");
    assert!(!plain.contains("HTTP/1.1 200"), "plaintext: {plain:?}");

    let metrics = https_get(addr, "/metrics", &ca.cert_file, scraper)
        .await
        .expect("metrics over mTLS");
    let refused = receiver_support::metric(
        metrics.split_once("\r\n\r\n").map_or("", |(_, body)| body),
        "tailgate_connections_refused_total",
        &[
            ("node", "admin-tls"),
            ("protocol", "admin"),
            ("reason", "tls_handshake"),
        ],
    );
    assert!(
        refused >= 2.0,
        "both refusals counted: {refused}\n{metrics}"
    );
    let _ = stop.send(());
    server.await.expect("joins").expect("served");

    // A key that does not load is an error before the port is bound.
    let broken = ServerTlsConfig {
        key_file: dir.0.join("missing.key"),
        ..tls
    };
    let err = Admin::bind_tls("127.0.0.1:0".parse().expect("addr"), Some(&broken), "x")
        .expect_err("missing key");
    assert!(err.is_config(), "{err}");
}

/// A plaintext `GET` to a TLS port: whatever comes back before it closes.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}
