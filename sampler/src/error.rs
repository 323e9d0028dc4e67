//! Why a sampler node could not start, or stopped with an error.

use policy::PolicyError;
use proto::admin::AdminError;
use proto::exporter::{ExporterConfigError, StartError};
use proto::receiver::ReceiverError;

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// A config value that cannot work.
    #[error("sampler config: {field} {rule}")]
    Config { field: &'static str, rule: String },
    /// The exporter's block of the config cannot work.
    #[error("sampler config: {0}")]
    Exporter(#[from] ExporterConfigError),
    /// The policy file at startup (a bad file on reload keeps the old one
    /// and is only logged and counted).
    #[error("policy file: {0}")]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("starting the exporter: {0}")]
    ExporterStart(#[from] StartError),
    /// The cluster's resolver or forwarding exporter could not start.
    #[error("sampler node {node:?}: cluster: {message}")]
    Cluster { node: String, message: String },
    /// The write-ahead log (`storage:`) could not be opened or read.
    #[error("sampler node {node:?}: storage: {source}")]
    Storage {
        node: String,
        #[source]
        source: storage::StorageError,
    },
    /// A task of the node ended abnormally.
    #[error("sampler node {node:?}: task {task} failed: {message}")]
    Task {
        node: String,
        task: &'static str,
        message: String,
    },
}

impl SamplerError {
    /// A bad config or policy file: the caller exits with its usage code.
    pub fn is_config(&self) -> bool {
        matches!(self, SamplerError::Admin(e) if e.is_config())
            || matches!(
                self,
                SamplerError::Config { .. }
                    | SamplerError::Exporter(_)
                    | SamplerError::Policy(_)
                    | SamplerError::Receiver(
                        ReceiverError::Config(_) | ReceiverError::Tls(_) | ReceiverError::Auth(_)
                    )
                    | SamplerError::ExporterStart(StartError::Config(_))
            )
    }

    /// Only a port still in use may work on a later try.
    pub fn is_retryable(&self) -> bool {
        match self {
            SamplerError::Receiver(e) => e.is_retryable(),
            SamplerError::Admin(e) => e.is_retryable(),
            _ => false,
        }
    }
}
