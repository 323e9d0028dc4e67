//! One push to another sampler: the OTLP `TraceService/Export` call, the
//! body as encoded bytes, with a [`ClusterMark`] in its metadata.
//!
//! Not [`proto::exporter::OtlpClient`], whose metadata is fixed per client:
//! a hand-over carries each request's own age. Not the load-balancing
//! exporter either: a push must know its outcome (the traces stay here
//! when it fails) and goes to the member chosen here, never failed over.

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use lb_exporter::Member;
use proto::codec::{ClientCodec, EXPORT_PATH};
use proto::receiver::ClusterMark;
use tonic::client::Grpc;
use tonic::metadata::{AsciiMetadataValue, MetadataKey};
use tonic::transport::{Channel, Endpoint};

/// Why a push did not land. The traces it carried stay with the sender.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push to {member}: bad endpoint: {message}")]
    Endpoint { member: Member, message: String },
    #[error("push to {member}: {code:?}: {message}")]
    Status {
        member: Member,
        code: tonic::Code,
        message: String,
    },
    #[error("push to {member}: no answer within {timeout:?}")]
    Timeout { member: Member, timeout: Duration },
}

/// A connection to one member, dialled at the first push and redialled by
/// the next one after a failure.
#[derive(Debug, Clone)]
pub struct Peer {
    member: Member,
    grpc: Grpc<Channel>,
}

impl Peer {
    /// Needs a tokio runtime (the channel's worker is spawned there). Over
    /// TLS when `tls` is set (`cluster.forward.tls`: the same CA and client
    /// certificate as stray forwarding, so a member whose receiver requires
    /// mTLS takes pushes too).
    pub fn with_tls(
        member: &Member,
        connect_timeout: Duration,
        tls: Option<&proto::tls::ClientTlsConfig>,
    ) -> Result<Peer, PushError> {
        let bad = |message: String| PushError::Endpoint {
            member: member.clone(),
            message,
        };
        let endpoint = Endpoint::from_shared(member.endpoint())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        let channel = match tls {
            None => endpoint.connect_lazy(),
            Some(config) => {
                let tls = proto::tls::ClientTls::new(config).map_err(|e| bad(e.to_string()))?;
                let host = endpoint.uri().host().unwrap_or_default().to_owned();
                let connector =
                    proto::tls::TlsConnector::new(std::sync::Arc::new(tls), &host, true)
                        .map_err(|e| bad(e.to_string()))?;
                endpoint.connect_with_connector_lazy(connector)
            }
        };
        Ok(Peer {
            member: member.clone(),
            grpc: Grpc::new(channel),
        })
    }

    /// One Export call carrying `mark`, bounded by `timeout`.
    pub async fn push(
        &self,
        body: Bytes,
        mark: ClusterMark,
        timeout: Duration,
    ) -> Result<(), PushError> {
        let mut call = tonic::Request::new(body);
        let (name, value) = mark.header();
        // Both are ASCII by construction (a header name and a number).
        if let Ok(value) = AsciiMetadataValue::try_from(value.as_str()) {
            call.metadata_mut()
                .insert(MetadataKey::from_static(name), value);
        }
        let mut grpc = self.grpc.clone();
        let attempt = async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
            grpc.unary(
                call,
                PathAndQuery::from_static(EXPORT_PATH),
                ClientCodec::default(),
            )
            .await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Err(PushError::Timeout {
                member: self.member.clone(),
                timeout,
            }),
            Ok(Err(status)) => Err(PushError::Status {
                member: self.member.clone(),
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }
}
