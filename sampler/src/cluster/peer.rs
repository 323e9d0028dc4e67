//! One push to another sampler: the OTLP `TraceService/Export` call, the
//! body as encoded bytes, with a [`ClusterMark`] in its metadata.
//!
//! An [`OtlpClient`] made from `cluster.forward` (TLS, client certificate,
//! headers such as a token, compression, connect timeout, as stray
//! forwarding uses them), with each push's own mark and timeout. Not the
//! load-balancing exporter: a push must know its outcome (the traces stay
//! here when it fails) and goes to the member chosen here, never failed
//! over.

use std::time::Duration;

use bytes::Bytes;
use lb_exporter::{ExportConfig, Member};
use proto::exporter::{ExportError, OtlpClient};
use proto::receiver::ClusterMark;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

/// Why a push did not land. The traces it carried stay with the sender.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push to {member}: bad endpoint: {message}")]
    Endpoint { member: Member, message: String },
    #[error("push to {member}: {source}")]
    Export {
        member: Member,
        #[source]
        source: ExportError,
    },
}

/// A connection to one member, dialled at the first push and redialled by
/// the next one after a failure.
#[derive(Debug, Clone)]
pub struct Peer {
    member: Member,
    client: OtlpClient,
}

impl Peer {
    /// Needs a tokio runtime (the channel's worker is spawned there).
    /// `forward` is `cluster.forward`: over TLS when it has a `tls` block,
    /// so a member whose receiver requires mTLS takes pushes too, and with
    /// its headers, so one that requires a token does.
    pub fn new(member: &Member, forward: &ExportConfig) -> Result<Peer, PushError> {
        let client = OtlpClient::new(&forward.client(member.endpoint())).map_err(|e| {
            PushError::Endpoint {
                member: member.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(Peer {
            member: member.clone(),
            client,
        })
    }

    /// One Export call carrying `mark`, bounded by `timeout`.
    pub async fn push(
        &self,
        body: Bytes,
        mark: ClusterMark,
        timeout: Duration,
    ) -> Result<(), PushError> {
        let (name, value) = mark.header();
        // Both are ASCII by construction (a header name and a number).
        let extra = AsciiMetadataValue::try_from(value.as_str())
            .ok()
            .map(|value| (AsciiMetadataKey::from_static(name), value));
        self.client
            .export_with(body, extra, timeout)
            .await
            .map(|_| ())
            .map_err(|source| PushError::Export {
                member: self.member.clone(),
                source,
            })
    }
}
