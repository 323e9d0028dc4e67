//! Where `tailgate local` sends kept traces when the target is not an OTLP/gRPC
//! backend: the samplers export to this in-process OTLP receiver, which
//! writes each request out as OTLP/JSON lines, a one-line-per-trace summary,
//! or an OTLP/HTTP POST. A failure to write is a retryable refusal, so the
//! samplers' exporter retries and counts, as with any backend. Log records
//! (the samplers' `logs_exporter`, which defaults to the same endpoint) go
//! the same way: `POST {base}/v1/logs`, OTLP/JSON lines, or one line per
//! record on standard output.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use proto::receiver::{Accepted, Batch, Refusal, Sink};
use proto::view::{RequestView, TraceId, resource_attributes};

/// Where kept traces go (`--export`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An OTLP/gRPC backend: the samplers export to it directly.
    Grpc(String),
    /// An OTLP/HTTP backend (`POST {base}/v1/traces`, protobuf).
    Http(String),
    /// OTLP/JSON, one `ExportTraceServiceRequest` per line, appended.
    File(PathBuf),
    /// One line per kept trace on standard output.
    Stdout,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("grpc://") {
            Ok(Target::Grpc(format!("http://{}", host_port(rest, s)?)))
        } else if let Some(rest) = s.strip_prefix("http://") {
            Ok(Target::Http(format!("http://{}", host_port(rest, s)?)))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path, e.g. file:kept.jsonl".into());
            }
            Ok(Target::File(PathBuf::from(path)))
        } else if s == "stdout" {
            Ok(Target::Stdout)
        } else {
            Err(format!(
                "export target `{s}`: expected grpc://HOST:PORT, http://HOST:PORT, file:PATH or stdout"
            ))
        }
    }
}

fn host_port<'a>(rest: &'a str, whole: &str) -> Result<&'a str, String> {
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(rest),
        _ => Err(format!(
            "export target `{whole}`: expected HOST:PORT after the scheme"
        )),
    }
}

/// The in-process backend for the non-gRPC targets.
pub enum Egress {
    Http {
        /// `{base}/v1/traces`; logs go to `{base}/v1/logs`.
        url: String,
        // Boxed: the client is ten times the size of the other variants.
        client: Box<Client<HttpConnector, Full<Bytes>>>,
    },
    File(Mutex<std::fs::File>),
    Stdout,
}

/// A retryable refusal: the samplers' exporter will try again.
fn unavailable(what: impl std::fmt::Display) -> Refusal {
    tracing::warn!("export target: {what}");
    Refusal::Unavailable {
        retry_after: Duration::from_secs(1),
    }
}

impl Egress {
    /// `None` for a gRPC target, which needs no egress.
    pub fn new(target: &Target) -> std::io::Result<Option<Egress>> {
        Ok(Some(match target {
            Target::Grpc(_) => return Ok(None),
            Target::Http(base) => Egress::Http {
                url: format!("{base}/v1/traces"),
                client: Box::new(Client::builder(TokioExecutor::new()).build_http()),
            },
            Target::File(path) => Egress::File(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            Target::Stdout => Egress::Stdout,
        }))
    }
}

impl Sink for Egress {
    async fn accept_logs(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let records = proto::logs::LogsView::new(&batch.request).validate()?;
        self.deliver::<proto::ExportLogsServiceRequest>(
            batch.request,
            |url| format!("{}/v1/logs", url.trim_end_matches("/v1/traces")),
            log_summary,
        )
        .await?;
        Ok(Accepted { spans: records })
    }

    async fn accept(&self, batch: Batch) -> Result<Accepted, Refusal> {
        let spans = RequestView::new(&batch.request).validate()?;
        self.deliver::<proto::ExportTraceServiceRequest>(batch.request, str::to_owned, summary)
            .await?;
        Ok(Accepted { spans })
    }
}

impl Egress {
    /// Delivers one validated request of type `M`: POSTed to `http_url(url)`
    /// of an HTTP target, written as one OTLP/JSON line to a file, or shown
    /// as `summary`'s lines on stdout.
    async fn deliver<M>(
        &self,
        request: Bytes,
        http_url: impl FnOnce(&str) -> String,
        summary: fn(&[u8]) -> Result<String, Refusal>,
    ) -> Result<(), Refusal>
    where
        M: Message + Default + serde::Serialize,
    {
        match self {
            Egress::Http { url, client } => post(client, &http_url(url), request).await,
            Egress::File(file) => {
                let decoded =
                    M::decode(request.as_ref()).map_err(|e| Refusal::Invalid(e.to_string()))?;
                let mut line = serde_json::to_vec(&decoded).map_err(unavailable)?;
                line.push(b'\n');
                let mut file = file.lock().map_err(|_| unavailable("file lock poisoned"))?;
                file.write_all(&line).map_err(unavailable)
            }
            Egress::Stdout => {
                let text = summary(&request)?;
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).map_err(unavailable)?;
                out.flush().map_err(unavailable)
            }
        }
    }
}

/// One OTLP/HTTP protobuf POST; anything but a 2xx is a retryable refusal.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
) -> Result<(), Refusal> {
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(unavailable)?;
    let response = client.request(request).await.map_err(unavailable)?;
    let status = response.status();
    // Drain the body so the connection can be reused.
    let _ = response.into_body().collect().await;
    if !status.is_success() {
        return Err(unavailable(format!("{url} answered {status}")));
    }
    Ok(())
}

/// One line per log record: `kept log trace=<id or none> severity=S body="B"`.
pub fn log_summary(request: &[u8]) -> Result<String, Refusal> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let decoded = proto::ExportLogsServiceRequest::decode(request)
        .map_err(|e| Refusal::Invalid(e.to_string()))?;
    let mut out = String::new();
    for record in decoded
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
    {
        let trace = match <[u8; 16]>::try_from(record.trace_id.as_slice()) {
            Ok(id) if id != [0; 16] => TraceId(id).to_string(),
            _ => "none".to_owned(),
        };
        let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let severity = if record.severity_text.is_empty() {
            record.severity_number.to_string()
        } else {
            record.severity_text.clone()
        };
        out.push_str(&format!(
            "kept log trace={trace} severity={severity} body={body:?}\n"
        ));
    }
    Ok(out)
}

/// One line per trace in the request, in order of first appearance:
/// `kept trace <id> spans=N service=S root="NAME" duration=D status=ok|error`.
pub fn summary(request: &[u8]) -> Result<String, Refusal> {
    struct Line {
        id: TraceId,
        spans: usize,
        service: String,
        root: Option<String>,
        start: u64,
        end: u64,
        error: bool,
    }
    let mut lines: Vec<Line> = Vec::new();
    RequestView::new(request).for_each_span(|resource, _, span| {
        let i = match lines.iter().position(|l| l.id == span.trace_id) {
            Some(i) => i,
            None => {
                let service = resource_attributes(&resource.header)
                    .get("service.name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                lines.push(Line {
                    id: span.trace_id,
                    spans: 0,
                    service,
                    root: None,
                    start: u64::MAX,
                    end: 0,
                    error: false,
                });
                lines.len() - 1
            }
        };
        let line = &mut lines[i];
        line.spans += 1;
        line.start = line.start.min(span.start_time_unix_nano);
        line.end = line.end.max(span.end_time_unix_nano);
        line.error |= span.is_error();
        if span.is_root() {
            line.root = Some(span.name().to_owned());
        }
    })?;
    let mut out = String::new();
    for l in lines {
        let duration = Duration::from_nanos(l.end.saturating_sub(l.start));
        out.push_str(&format!(
            "kept trace {} spans={} service={} root={:?} duration={:?} status={}\n",
            l.id,
            l.spans,
            l.service,
            l.root.as_deref().unwrap_or("(not seen)"),
            duration,
            if l.error { "error" } else { "ok" },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_the_contract_says() {
        assert_eq!(
            "grpc://127.0.0.1:4317".parse(),
            Ok(Target::Grpc("http://127.0.0.1:4317".into()))
        );
        assert_eq!(
            "http://tempo:4318/".parse(),
            Ok(Target::Http("http://tempo:4318".into()))
        );
        assert_eq!(
            "file:kept.jsonl".parse(),
            Ok(Target::File("kept.jsonl".into()))
        );
        assert_eq!("stdout".parse(), Ok(Target::Stdout));
        for bad in [
            "grpc://nohost",
            "ftp://x:1",
            "file:",
            "http://:80",
            "grpc://h:port",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn summary_has_one_line_per_trace_with_root_service_and_status() {
        let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
          "scopeSpans":[{"spans":[
            {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"GET /cart",
             "startTimeUnixNano":"1000000000","endTimeUnixNano":"1600000000"},
            {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"1102030405060708","parentSpanId":"0102030405060708",
             "name":"db","startTimeUnixNano":"1100000000","endTimeUnixNano":"1200000000","status":{"code":2}},
            {"traceId":"ff02030405060708090a0b0c0d0e0f10","spanId":"2102030405060708","parentSpanId":"0102030405060708",
             "name":"child","startTimeUnixNano":"5","endTimeUnixNano":"10"}]}]}]}"#;
        let request = proto::json::to_protobuf(json).unwrap();
        assert_eq!(
            summary(&request).unwrap(),
            "kept trace 0102030405060708090a0b0c0d0e0f10 spans=2 service=checkout root=\"GET /cart\" duration=600ms status=error\n\
             kept trace ff02030405060708090a0b0c0d0e0f10 spans=1 service=checkout root=\"(not seen)\" duration=5ns status=ok\n"
        );
    }
}
