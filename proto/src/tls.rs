//! TLS for the OTLP receivers and exporters, with rustls (the ring
//! provider).
//!
//! Certificates and keys are PEM files, and are re-read when a file changes:
//! every new connection (at most once per [`RELOAD_CHECK`]) compares the
//! files' modification times and sizes with those last loaded, so a
//! certificate rotated by cert-manager or a Kubernetes Secret update is used
//! without a restart. A file that fails to load is logged and the previous
//! configuration stays in force; only the first load is fatal, before any
//! port is bound.
//!
//! - [`ServerTls`]: a listener's certificate, and for mTLS the CA that client
//!   certificates must chain to (a client without one is refused in the
//!   handshake).
//! - [`ClientTls`] and [`TlsConnector`]: an exporter's trusted roots (a CA
//!   file, or the system's), its client certificate for mTLS, and the name
//!   the server's certificate must carry.
//!
//! The connector does the handshake itself and hands tonic a stream it
//! speaks HTTP/2 over, rather than using tonic's TLS, whose configuration
//! is fixed when the channel is built and so cannot follow a rotated file.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// How often, at most, the files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A listener's TLS settings (the `tls:` block of `receiver:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// mTLS: clients must present a certificate that chains to a CA in
    /// this PEM file. Default none: no client certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// An exporter's TLS settings (the `tls:` block of an exporter). TLS is on
/// when this block is present or the endpoint is `https://`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// The CAs the server's certificate must chain to, PEM. Default: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// mTLS: the client certificate chain to present, PEM. Needs
    /// `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key, PEM.
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry. Default: the
    /// endpoint's host.
    pub server_name: Option<String>,
}

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("{}: no certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: {what}: {source}", path.display())]
    Rejected {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("client CA {}: {message}", path.display())]
    ClientVerifier { path: PathBuf, message: String },
    #[error("tls: cert_file and key_file go together (one is set without the other)")]
    HalfIdentity,
    #[error("tls: {name:?} is not a valid server name")]
    ServerName { name: String },
    #[error("tls: no usable system root certificates ({message}); set ca_file")]
    NoRoots { message: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    // Never put the key's bytes in a message: only what kind of failure.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable private key ({})", key_error_kind(&e)),
    })
}

fn key_error_kind(e: &rustls::pki_types::pem::Error) -> &'static str {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key block",
        _ => "malformed PEM",
    }
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|source| TlsError::Rejected {
            path: path.to_owned(),
            what: "not a usable CA certificate",
            source,
        })?;
    }
    Ok(store)
}

/// Modification time and size of each file, `None` for one that cannot be
/// read: a change in any of them means reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

impl Stamp {
    fn of(paths: &[PathBuf]) -> Stamp {
        Stamp(
            paths
                .iter()
                .map(|p| {
                    let meta = std::fs::metadata(p).ok()?;
                    Some((meta.modified().ok()?, meta.len()))
                })
                .collect(),
        )
    }
}

/// A value built from files, rebuilt when they change.
struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    state: Mutex<ReloadState<T>>,
}

struct ReloadState<T> {
    stamp: Stamp,
    value: Arc<T>,
    checked: Instant,
}

impl<T> Reloading<T> {
    fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        // Stamp first: a file replaced between the stamp and the build is
        // then seen as changed at the next check, not missed.
        let stamp = Stamp::of(&paths);
        let value = Arc::new(build()?);
        Ok(Reloading {
            what,
            paths,
            build: Box::new(build),
            state: Mutex::new(ReloadState {
                stamp,
                value,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<T> {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            // A panic while holding the lock left a complete value behind.
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamp = Stamp::of(&self.paths);
            if stamp != state.stamp {
                // Remember the stamp even on failure, so a broken file is
                // reported once, not on every connection; its next change
                // is tried again.
                state.stamp = stamp;
                match (self.build)() {
                    Ok(value) => {
                        state.value = Arc::new(value);
                        tracing::info!(tls = self.what, "TLS certificates reloaded");
                    }
                    Err(error) => tracing::warn!(
                        tls = self.what,
                        %error,
                        "TLS files changed but do not load; keeping the previous ones"
                    ),
                }
            }
        }
        state.value.clone()
    }
}

/// A listener's TLS, reloaded when its files change.
pub struct ServerTls {
    config: Reloading<ServerConfig>,
    mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.config.paths)
            .field("mutual", &self.mutual)
            .finish()
    }
}

impl ServerTls {
    /// Loads the files once (failing if they cannot be used); `alpn` is
    /// what the listener speaks, most preferred first (`h2` for gRPC; `h2`
    /// and `http/1.1` for OTLP/HTTP).
    pub fn new(config: &ServerTlsConfig, alpn: &[&[u8]]) -> Result<ServerTls, TlsError> {
        let mut paths = vec![config.cert_file.clone(), config.key_file.clone()];
        paths.extend(config.client_ca_file.clone());
        let files = config.clone();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let build = move || server_config(&files, &alpn);
        Ok(ServerTls {
            config: Reloading::new("server", paths, build)?,
            mutual: config.client_ca_file.is_some(),
        })
    }

    /// Whether client certificates are required.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.current())
    }
}

fn server_config(files: &ServerTlsConfig, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let certs = certificates(&files.cert_file)?;
    let key = private_key(&files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rejected {
            path: files.cert_file.clone(),
            what: "protocol versions",
            source,
        })?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(path)?), provider())
                    .build()
                    .map_err(|e| TlsError::ClientVerifier {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rejected {
            path: files.key_file.clone(),
            what: "certificate and key do not make a usable pair",
            source,
        })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// An exporter's TLS, reloaded when its files change.
pub struct ClientTls {
    config: Reloading<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.config.paths)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Loads the files once, failing if they cannot be used.
    pub fn new(config: &ClientTlsConfig) -> Result<ClientTls, TlsError> {
        let server_name = config
            .server_name
            .as_ref()
            .map(|name| {
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::ServerName { name: name.clone() })
            })
            .transpose()?;
        if config.cert_file.is_some() != config.key_file.is_some() {
            return Err(TlsError::HalfIdentity);
        }
        let paths: Vec<PathBuf> = [&config.ca_file, &config.cert_file, &config.key_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let files = config.clone();
        Ok(ClientTls {
            config: Reloading::new("client", paths, move || client_config(&files))?,
            server_name,
        })
    }

    /// The name to check the server's certificate against: the configured
    /// one, or `host` (the endpoint's).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        // An IPv6 literal comes from a URI in brackets.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName {
            name: host.to_owned(),
        })
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.current())
    }
}

fn client_config(files: &ClientTlsConfig) -> Result<ClientConfig, TlsError> {
    let roots = match &files.ca_file {
        Some(path) => roots(path)?,
        None => {
            let native = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                let message = native
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(TlsError::NoRoots { message });
            }
            store
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rejected {
            path: files.ca_file.clone().unwrap_or_default(),
            what: "protocol versions",
            source,
        })?
        .with_root_certificates(roots);
    let mut config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|source| TlsError::Rejected {
                path: key.clone(),
                what: "client certificate and key do not make a usable pair",
                source,
            })?,
        _ => builder.with_no_client_auth(),
    };
    // OTLP/gRPC is HTTP/2; a server that cannot agree on it fails the
    // handshake rather than a later call.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Dials `host:port` from the URI and runs the TLS handshake, with the
/// configuration in force at that moment. A tower service, as tonic's
/// `Endpoint::connect_with_connector_lazy` takes it.
#[derive(Clone)]
pub struct TlsConnector {
    tls: Arc<ClientTls>,
    server_name: ServerName<'static>,
    nodelay: bool,
}

impl TlsConnector {
    /// `host` is the endpoint's, for the certificate check unless the
    /// config names another.
    pub fn new(tls: Arc<ClientTls>, host: &str, nodelay: bool) -> Result<Self, TlsError> {
        let server_name = tls.server_name(host)?;
        Ok(TlsConnector {
            tls,
            server_name,
            nodelay,
        })
    }
}

/// A failed dial or handshake.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("endpoint {0} has no host and port")]
    Address(String),
    #[error("connecting: {0}")]
    Tcp(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    Handshake(#[source] std::io::Error),
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream>, ConnectError>> + Send + 'static>>;

/// A client's TLS connection.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream>;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.tls.connector();
        let server_name = self.server_name.clone();
        let nodelay = self.nodelay;
        Box::pin(async move {
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(ConnectError::Address(uri.to_string()));
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((host, port))
                .await
                .map_err(ConnectError::Tcp)?;
            if nodelay {
                // Best effort: a socket without TCP_NODELAY still works.
                let _ = tcp.set_nodelay(true);
            }
            let tls = connector
                .connect(server_name, tcp)
                .await
                .map_err(ConnectError::Handshake)?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_needs_both_halves_of_an_identity() {
        let config = ClientTlsConfig {
            cert_file: Some("cert.pem".into()),
            ..ClientTlsConfig::default()
        };
        assert!(matches!(
            ClientTls::new(&config),
            Err(TlsError::HalfIdentity)
        ));
    }

    #[test]
    fn missing_files_name_the_file() {
        let config = ServerTlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        };
        let err = ServerTls::new(&config, &[b"h2"]).expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn server_config_refuses_unknown_keys() {
        let err = serde_json::from_str::<ServerTlsConfig>(
            r#"{"cert_file":"c","key_file":"k","ca_file":"x"}"#,
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
