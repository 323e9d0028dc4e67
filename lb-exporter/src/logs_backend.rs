//! The LB's optional logs backend (`logs_backend:`): log records without a
//! trace ID have no owner on the ring, so instead of spreading them over the
//! members (who would forward them at once anyway) the LB can send them
//! straight to a logs backend. A logs request is split on the wire, as the
//! logs exporter splits it by owner: the trace-less records go to a
//! [`proto::exporter::Exporter`] calling the backend's `LogsService` (batched
//! and retried like any exporter), the others by ring.
//!
//! Order within one request: the backend's part is queued first (waiting at
//! most `export.queue_wait` for room), so a backend that cannot keep up
//! refuses the whole request before anything is routed, and the client's
//! retry sends no record twice. If the backend took its part and the ring
//! then refuses the rest, the request is refused and a retry sends those
//! trace-less records again (duplicates, never a loss).

use std::time::Duration;

use bytes::Bytes;
use metrics::Counter;
use proto::exporter::{
    Exporter, ExporterConfig, OtlpBatch, SendError as ExportSendError, ShutdownReport,
    StartError as ExportStartError, StartOptions,
};
use proto::receiver::{Refusal, Signal};
use proto::wire::WireError;
use tokio::time::Instant;

/// The `exporter` label of the backend's metrics unless the config names it.
pub const DEFAULT_NAME: &str = "logs_backend";

/// A request split by whether its records carry a trace ID.
#[derive(Debug, Default)]
pub struct Split {
    /// Records with a trace ID (the whole request if all have one), for the
    /// ring; `None` when there are none.
    pub traced: Option<Bytes>,
    /// Records without a trace ID, and how many, for the backend.
    pub traceless: Option<OtlpBatch>,
}

/// Splits an encoded `ExportLogsServiceRequest` by trace ID presence on the
/// wire. A request with no trace-less record is returned whole (not
/// re-encoded); a request without records goes to the ring, which answers
/// it as it answers any.
pub fn split(request: &Bytes) -> Result<Split, WireError> {
    let parts = proto::logs::split(request, |id| id.is_some())?;
    if parts.iter().all(|p| p.key) {
        return Ok(Split {
            traced: Some(request.clone()),
            traceless: None,
        });
    }
    let mut split = Split::default();
    for part in parts {
        if part.key {
            split.traced = Some(part.request);
        } else {
            split.traceless = Some(OtlpBatch {
                request: part.request,
                spans: part.spans,
            });
        }
    }
    Ok(split)
}

/// The running logs backend exporter.
#[derive(Clone)]
pub struct LogsBackend {
    exporter: Exporter,
    /// How long a request may wait for room in its queue.
    wait: Duration,
    retry_after: Duration,
    sent: Counter,
}

impl LogsBackend {
    /// Starts the exporter for `config` (its `node` label set to `node`,
    /// its `name` to [`DEFAULT_NAME`] unless one was given).
    pub fn start(
        mut config: ExporterConfig,
        node: &str,
        wait: Duration,
        retry_after: Duration,
    ) -> Result<LogsBackend, ExportStartError> {
        config.node = node.to_owned();
        if config.name == ExporterConfig::default().name {
            config.name = DEFAULT_NAME.into();
        }
        let exporter = Exporter::start_with(
            config,
            StartOptions {
                signal: Signal::Logs,
                ..StartOptions::default()
            },
        )?;
        let sent = metrics::counter!(
            "tailgate_lb_log_records_to_logs_backend_total",
            "node" => node.to_owned()
        );
        Ok(LogsBackend {
            exporter,
            wait,
            retry_after,
            sent,
        })
    }

    /// Queues trace-less records for the backend, waiting at most the
    /// queue wait for room; refuses (retryably) if there is none.
    pub async fn send(&self, batch: OtlpBatch) -> Result<(), Refusal> {
        let records = batch.spans;
        // Err(true): the exporter is closed; Err(false): no room in time.
        let queued = match self.exporter.try_send(batch) {
            Err(ExportSendError::QueueFull(batch)) => {
                match tokio::time::timeout(self.wait, self.exporter.send(batch)).await {
                    Ok(sent) => sent.map_err(|e| matches!(e, ExportSendError::Closed(_))),
                    Err(_) => Err(false),
                }
            }
            other => other.map_err(|e| matches!(e, ExportSendError::Closed(_))),
        };
        match queued {
            Ok(()) => {
                self.sent.increment(records as u64);
                Ok(())
            }
            Err(false) => {
                tracing::debug!("logs backend queue full, refusing (backpressure)");
                Err(Refusal::Overloaded {
                    retry_after: self.retry_after,
                })
            }
            Err(true) => Err(Refusal::Unavailable {
                retry_after: self.retry_after,
            }),
        }
    }

    /// Sends what it holds until `deadline`, then drops the rest (counted).
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.exporter.shutdown(deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    fn request(traces: &[Option<u8>]) -> Bytes {
        let records = traces
            .iter()
            .map(|t| LogRecord {
                trace_id: t.map(|b| vec![b; 16]).unwrap_or_default(),
                ..LogRecord::default()
            })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
        .encode_to_vec()
        .into()
    }

    fn trace_ids(request: &[u8]) -> Vec<Vec<u8>> {
        ExportLogsServiceRequest::decode(request)
            .expect("a logs request")
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(|r| r.trace_id.clone())
            .collect()
    }

    #[test]
    fn a_request_with_a_trace_id_on_every_record_passes_whole() {
        let all = request(&[Some(1), Some(2)]);
        let parts = split(&all).expect("valid");
        assert_eq!(parts.traced.as_ref(), Some(&all));
        assert!(parts.traceless.is_none());
    }

    #[test]
    fn trace_less_records_are_split_off_and_counted() {
        let parts = split(&request(&[None, Some(1), None, Some(2)])).expect("valid");
        let traced = parts.traced.expect("traced part");
        assert_eq!(trace_ids(&traced), vec![vec![1; 16], vec![2; 16]]);
        let traceless = parts.traceless.expect("trace-less part");
        assert_eq!(traceless.spans, 2);
        assert_eq!(trace_ids(&traceless.request), vec![Vec::<u8>::new(); 2]);
        let only = split(&request(&[None])).expect("valid");
        assert!(only.traced.is_none());
        assert_eq!(only.traceless.map(|b| b.spans), Some(1));
    }

    #[test]
    fn a_malformed_request_is_an_error() {
        let mut bad = request(&[Some(1)]).to_vec();
        bad.truncate(bad.len() - 1);
        assert!(split(&Bytes::from(bad)).is_err());
    }
}
