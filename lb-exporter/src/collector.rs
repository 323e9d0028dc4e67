//! A whole OpenTelemetry Collector configuration as an LB's config: its
//! `exporters.loadbalancing` block (or its only `loadbalancing/NAME` one)
//! becomes the `resolver:` and `export:` keys of [`LbConfig`](crate::LbConfig),
//! the way the policy file takes a Collector's `tail_sampling` block.
//!
//! Every key of the block is mapped, noted as accepted without effect (with
//! why), or refused with what to use instead; nothing is silently ignored.
//! Everything else in the Collector configuration (receivers, processors,
//! pipelines) is ignored. Keys follow the loadbalancingexporter's
//! `config.go` (`routing_key`, `resolver.{static,dns,k8s,aws_cloud_map}`,
//! `protocol.otlp`, `timeout`, `retry_on_failure`, `sending_queue`) and the
//! OTLP exporter's client settings under `protocol.otlp`.
//!
//! Pure: a YAML value in, a YAML value of the LB's keys out, so the usual
//! environment and `--set` overrides apply on top of it.

use serde_yaml_ng::{Mapping, Value};

/// Top-level keys that only a Collector configuration has.
const COLLECTOR_KEYS: [&str; 6] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];

/// The LB's keys taken from a Collector configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FromCollector {
    /// The exporter used: `loadbalancing` or `loadbalancing/NAME`.
    pub exporter: String,
    /// A mapping with the LB config's keys (`resolver`, `export`).
    pub config: Value,
    /// Keys accepted without effect, and defaults that differ from ours,
    /// each with why: printed by `config check`, logged at startup.
    pub notes: Vec<String>,
}

/// A key of the `loadbalancing` block that tailgate cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct CollectorError {
    /// Where, e.g. `exporters.loadbalancing.routing_key`.
    pub key: String,
    pub why: String,
}

/// `Ok(None)` when `root` is not a Collector configuration (an LB config
/// as tailgate writes it).
pub fn from_collector(
    root: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<FromCollector>, CollectorError> {
    let Some(top) = root.as_mapping() else {
        return Ok(None);
    };
    if !COLLECTOR_KEYS.iter().any(|k| top.contains_key(*k)) {
        return Ok(None);
    }
    let refuse = |key: &str, why: String| CollectorError {
        key: key.to_string(),
        why,
    };
    let exporters = match top.get("exporters") {
        Some(Value::Mapping(m)) => m,
        _ => {
            return Err(refuse(
                "exporters",
                "this Collector configuration has no exporters: tailgate lb uses its `loadbalancing` exporter".into(),
            ));
        }
    };
    let names: Vec<&str> = exporters.keys().filter_map(Value::as_str).collect();
    let name = if names.contains(&"loadbalancing") {
        "loadbalancing"
    } else {
        let found: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.starts_with("loadbalancing/"))
            .collect();
        match found.as_slice() {
            [only] => *only,
            [] => {
                return Err(refuse(
                    "exporters",
                    format!(
                        "this Collector configuration has no loadbalancing exporter (exporters: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
            }
            many => {
                return Err(refuse(
                    "exporters",
                    format!(
                        "this Collector configuration has several loadbalancing exporters ({}); keep the one to use, or name it plain `loadbalancing`",
                        many.join(", ")
                    ),
                ));
            }
        }
    };
    let mut m = Mapper {
        base: format!("exporters.{name}"),
        env,
        resolver: Mapping::new(),
        export: Mapping::new(),
        notes: Vec::new(),
        tls_seen: false,
        insecure: false,
    };
    let block = match exporters.get(name) {
        Some(Value::Mapping(b)) => b.clone(),
        Some(Value::Null) | None => Mapping::new(),
        Some(_) => return Err(refuse(&m.base, "must be a mapping".into())),
    };
    m.block(&block)?;
    if m.resolver.is_empty() {
        return Err(refuse(
            &format!("{}.resolver", m.base),
            "is required: static (hostnames) or dns (hostname)".into(),
        ));
    }
    if !m.insecure {
        // The Collector's OTLP exporter speaks TLS unless told
        // `tls.insecure: true`; so does a pasted configuration.
        if !m.tls_seen {
            m.export.insert(key("tls"), Value::Mapping(Mapping::new()));
        }
        m.notes.push(format!(
            "{}.protocol.otlp.tls: TLS to the samplers, as in the Collector (tls.insecure is not true); set tls.insecure: true for plaintext",
            m.base
        ));
    }
    let mut config = Mapping::new();
    config.insert(key("resolver"), Value::Mapping(m.resolver));
    if !m.export.is_empty() {
        config.insert(key("export"), Value::Mapping(m.export));
    }
    Ok(Some(FromCollector {
        exporter: name.to_string(),
        config: Value::Mapping(config),
        notes: m.notes,
    }))
}

fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

struct Mapper<'e> {
    base: String,
    env: &'e dyn Fn(&str) -> Option<String>,
    resolver: Mapping,
    export: Mapping,
    notes: Vec<String>,
    tls_seen: bool,
    insecure: bool,
}

impl Mapper<'_> {
    fn path(&self, rel: &str) -> String {
        format!("{}.{rel}", self.base)
    }

    fn refuse<T>(&self, rel: &str, why: impl Into<String>) -> Result<T, CollectorError> {
        Err(CollectorError {
            key: self.path(rel),
            why: why.into(),
        })
    }

    fn note(&mut self, rel: &str, why: &str) {
        self.notes.push(format!("{}: {why}", self.path(rel)));
    }

    /// Each key's value as a mapping (null is an empty one).
    fn mapping(&self, rel: &str, v: &Value) -> Result<Mapping, CollectorError> {
        match v {
            Value::Mapping(m) => Ok(m.clone()),
            Value::Null => Ok(Mapping::new()),
            _ => self.refuse(rel, "must be a mapping"),
        }
    }

    /// A scalar, with the Collector's `${env:NAME}` / `${NAME}` references
    /// expanded.
    fn scalar(&self, rel: &str, v: &Value) -> Result<Value, CollectorError> {
        match v {
            Value::String(s) => Ok(Value::String(self.expand(rel, s)?)),
            Value::Number(_) | Value::Bool(_) => Ok(v.clone()),
            _ => self.refuse(rel, "must be a single value"),
        }
    }

    fn string(&self, rel: &str, v: &Value) -> Result<String, CollectorError> {
        match self.scalar(rel, v)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => self.refuse(rel, "must be a single value"),
        }
    }

    fn boolean(&self, rel: &str, v: &Value) -> Result<bool, CollectorError> {
        match self.scalar(rel, v)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            _ => self.refuse(rel, "must be true or false"),
        }
    }

    fn expand(&self, rel: &str, s: &str) -> Result<String, CollectorError> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let Some(end) = rest[at..].find('}') else {
                return self.refuse(rel, format!("unterminated ${{ in {s:?}"));
            };
            let reference = &rest[at + 2..at + end];
            let name = reference.strip_prefix("env:").unwrap_or(reference);
            let (name, default) = match name.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (name, None),
            };
            match ((self.env)(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return self.refuse(
                        rel,
                        format!("refers to the environment variable {name}, which is not set"),
                    );
                }
            }
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn set_export(&mut self, k: &str, v: Value) {
        self.export.insert(key(k), v);
    }

    fn block(&mut self, block: &Mapping) -> Result<(), CollectorError> {
        // protocol.otlp first: the block's own timeout, retry and queue
        // settings are the exporter's and win over the per-backend ones.
        if let Some(protocol) = block.get("protocol") {
            self.protocol(protocol)?;
        }
        for (k, v) in block {
            let Some(k) = k.as_str() else {
                return self.refuse("", "has a key that is not a string");
            };
            match k {
                "protocol" => {}
                "routing_key" => self.routing_key(v)?,
                "resolver" => self.resolver(v)?,
                "timeout" => {
                    let t = self.scalar(k, v)?;
                    self.set_export("timeout", t);
                }
                "retry_on_failure" => self.retry(k, v)?,
                "sending_queue" => self.queue(k, v)?,
                other => {
                    return self.refuse(
                        other,
                        "is not a key of the loadbalancing exporter that tailgate knows",
                    );
                }
            }
        }
        Ok(())
    }

    fn routing_key(&mut self, v: &Value) -> Result<(), CollectorError> {
        match self.string("routing_key", v)?.as_str() {
            "" | "traceID" => Ok(()),
            "service" => self.refuse(
                "routing_key",
                "`service` is not supported: tailgate routes by trace ID, so that one sampler sees every span of a trace (what tail sampling needs); remove routing_key, and decide per service in the policy file (a string_attribute policy on service.name, inside an `and` with a rate_limiting or probabilistic one)",
            ),
            "metric" | "resource" | "streamID" => self.refuse(
                "routing_key",
                "routes metrics; tailgate is for traces, routed by trace ID: keep a Collector loadbalancing exporter for metrics, and remove routing_key here",
            ),
            other => self.refuse(
                "routing_key",
                format!("{other:?} is not a routing key: tailgate routes by traceID"),
            ),
        }
    }

    fn resolver(&mut self, v: &Value) -> Result<(), CollectorError> {
        let resolver = self.mapping("resolver", v)?;
        if resolver.len() > 1 {
            let names: Vec<&str> = resolver.keys().filter_map(Value::as_str).collect();
            return self.refuse(
                "resolver",
                format!("has several resolvers ({}): keep one", names.join(", ")),
            );
        }
        for (k, v) in &resolver {
            match k.as_str().unwrap_or("") {
                "static" => self.static_resolver(v)?,
                "dns" => self.dns_resolver(v)?,
                "k8s" => {
                    return self.refuse(
                        "resolver.k8s",
                        "the k8s resolver (watching EndpointSlices through the Kubernetes API) is not supported: give the samplers a headless Service (clusterIP: None) and use resolver.dns with its name, e.g. hostname: tailgate-sampler.tailgate.svc.cluster.local.",
                    );
                }
                "aws_cloud_map" => {
                    return self.refuse(
                        "resolver.aws_cloud_map",
                        "the aws_cloud_map resolver is not supported: use resolver.dns with the Cloud Map service's DNS name (a DNS namespace), or resolver.static",
                    );
                }
                other => {
                    return self.refuse(
                        &format!("resolver.{other}"),
                        "is not a resolver tailgate has: use dns (a headless Service) or static",
                    );
                }
            }
        }
        Ok(())
    }

    fn static_resolver(&mut self, v: &Value) -> Result<(), CollectorError> {
        let block = self.mapping("resolver.static", v)?;
        let mut members = Vec::new();
        for (k, v) in &block {
            match k.as_str().unwrap_or("") {
                "hostnames" => {
                    let Value::Sequence(hosts) = v else {
                        return self.refuse("resolver.static.hostnames", "must be a list");
                    };
                    for h in hosts {
                        let h = self.string("resolver.static.hostnames", h)?;
                        members.push(Value::String(with_default_port(&h)));
                    }
                }
                other => {
                    return self.refuse(
                        &format!("resolver.static.{other}"),
                        "is not a key of the static resolver (hostnames)",
                    );
                }
            }
        }
        if members.is_empty() {
            return self.refuse(
                "resolver.static.hostnames",
                "is required, with at least one",
            );
        }
        let mut s = Mapping::new();
        s.insert(key("members"), Value::Sequence(members));
        self.resolver.insert(key("static"), Value::Mapping(s));
        Ok(())
    }

    fn dns_resolver(&mut self, v: &Value) -> Result<(), CollectorError> {
        let block = self.mapping("resolver.dns", v)?;
        let mut dns = Mapping::new();
        for (k, v) in &block {
            let k = k.as_str().unwrap_or("");
            let rel = format!("resolver.dns.{k}");
            match k {
                "hostname" => {
                    let h = self.string(&rel, v)?;
                    dns.insert(key("hostname"), Value::String(h));
                }
                "port" => {
                    let p = self.string(&rel, v)?;
                    let Ok(port) = p.parse::<u16>() else {
                        return self.refuse(&rel, format!("{p:?} is not a port"));
                    };
                    dns.insert(key("port"), Value::Number(port.into()));
                }
                "interval" | "timeout" => {
                    let d = self.scalar(&rel, v)?;
                    dns.insert(key(k), d);
                }
                _ => {
                    return self.refuse(
                        &rel,
                        "is not a key of the dns resolver tailgate knows (hostname, port, interval, timeout)",
                    );
                }
            }
        }
        if !dns.contains_key("hostname") {
            return self.refuse("resolver.dns.hostname", "is required");
        }
        if !dns.contains_key("timeout") {
            // The Collector's default (tailgate's own is 2s).
            dns.insert(key("timeout"), Value::String("1s".into()));
        }
        self.resolver.insert(key("dns"), Value::Mapping(dns));
        Ok(())
    }

    fn protocol(&mut self, v: &Value) -> Result<(), CollectorError> {
        let protocol = self.mapping("protocol", v)?;
        for (k, v) in &protocol {
            match k.as_str().unwrap_or("") {
                "otlp" => self.otlp(v)?,
                other => {
                    return self.refuse(
                        &format!("protocol.{other}"),
                        "tailgate sends OTLP/gRPC only (protocol.otlp)",
                    );
                }
            }
        }
        Ok(())
    }

    fn otlp(&mut self, v: &Value) -> Result<(), CollectorError> {
        let otlp = self.mapping("protocol.otlp", v)?;
        for (k, v) in &otlp {
            let k = k.as_str().unwrap_or("");
            let rel = format!("protocol.otlp.{k}");
            match k {
                "endpoint" => self.note(
                    &rel,
                    "ignored, as in the Collector: the resolver gives the endpoints",
                ),
                "timeout" => {
                    let t = self.scalar(&rel, v)?;
                    self.set_export("timeout", t);
                }
                "compression" => {
                    let c = self.string(&rel, v)?;
                    let c = match c.as_str() {
                        "" | "none" => "none",
                        "gzip" => "gzip",
                        "zstd" => "zstd",
                        other => {
                            return self.refuse(
                                &rel,
                                format!("{other:?} is not supported: use gzip, zstd or none"),
                            );
                        }
                    };
                    self.set_export("compression", Value::String(c.into()));
                }
                "headers" => {
                    let headers = self.mapping(&rel, v)?;
                    let mut out = Mapping::new();
                    for (h, value) in &headers {
                        let h = self.string(&rel, h)?;
                        let value = self.string(&format!("{rel}.{h}"), value)?;
                        out.insert(Value::String(h), Value::String(value));
                    }
                    self.set_export("headers", Value::Mapping(out));
                }
                "tls" => self.tls(v)?,
                "retry_on_failure" => self.retry(&rel, v)?,
                "sending_queue" => self.queue(&rel, v)?,
                "balancer_name" | "keepalive" | "read_buffer_size" | "write_buffer_size"
                | "wait_for_ready" => self.note(
                    &rel,
                    "accepted, no effect: tailgate keeps one HTTP/2 connection per sampler with its own settings",
                ),
                "auth" => {
                    return self.refuse(
                        &rel,
                        "authenticator extensions are not supported: put the token in protocol.otlp.headers (e.g. authorization: \"Bearer ${env:TOKEN}\")",
                    );
                }
                _ => {
                    return self.refuse(
                        &rel,
                        "is not an OTLP exporter setting tailgate knows",
                    );
                }
            }
        }
        Ok(())
    }

    fn tls(&mut self, v: &Value) -> Result<(), CollectorError> {
        let tls = self.mapping("protocol.otlp.tls", v)?;
        let mut out = Mapping::new();
        for (k, v) in &tls {
            let k = k.as_str().unwrap_or("");
            let rel = format!("protocol.otlp.tls.{k}");
            match k {
                "insecure" => self.insecure = self.boolean(&rel, v)?,
                "ca_file" | "cert_file" | "key_file" => {
                    let f = self.string(&rel, v)?;
                    out.insert(key(k), Value::String(f));
                }
                "server_name_override" => {
                    let n = self.string(&rel, v)?;
                    out.insert(key("server_name"), Value::String(n));
                }
                "insecure_skip_verify" => {
                    if self.boolean(&rel, v)? {
                        return self.refuse(
                            &rel,
                            "skipping certificate verification is not supported: give ca_file (the CA of the samplers' certificates), or tls.insecure: true for plaintext",
                        );
                    }
                }
                "ca_pem" | "cert_pem" | "key_pem" => {
                    return self.refuse(
                        &rel,
                        "certificates inline are not supported: give files (ca_file, cert_file, key_file)",
                    );
                }
                "reload_interval" => self.note(
                    &rel,
                    "accepted, no effect: tailgate re-reads its TLS files when they change",
                ),
                "min_version" | "max_version" | "cipher_suites" | "include_system_ca_certs_pool" => {
                    self.note(
                        &rel,
                        "accepted, no effect: tailgate speaks TLS 1.2 and 1.3 with rustls' defaults, and uses the system's roots only without ca_file",
                    )
                }
                _ => {
                    return self.refuse(&rel, "is not a TLS setting tailgate knows");
                }
            }
        }
        self.tls_seen = true;
        if self.insecure {
            if !out.is_empty() {
                return self.refuse(
                    "protocol.otlp.tls.insecure",
                    "is true, but certificate files are given: remove one or the other",
                );
            }
        } else {
            self.set_export("tls", Value::Mapping(out));
        }
        Ok(())
    }

    fn retry(&mut self, rel: &str, v: &Value) -> Result<(), CollectorError> {
        let retry = self.mapping(rel, v)?;
        for (k, v) in &retry {
            let k = k.as_str().unwrap_or("");
            let path = format!("{rel}.{k}");
            match k {
                "enabled" => {
                    if !self.boolean(&path, v)? {
                        return self.refuse(
                            &path,
                            "tailgate always retries retryable answers, and fails over to the next sampler when one is down; remove enabled: false (max_elapsed_time bounds the retries)",
                        );
                    }
                }
                "initial_interval" | "max_interval" | "max_elapsed_time" => {
                    let d = self.scalar(&path, v)?;
                    self.set_export(k, d);
                }
                "multiplier" | "randomization_factor" => self.note(
                    &path,
                    "accepted, no effect: the LB's retries grow ×1.5 with ±50 % jitter (the Collector's defaults)",
                ),
                _ => return self.refuse(&path, "is not a retry_on_failure setting"),
            }
        }
        Ok(())
    }

    fn queue(&mut self, rel: &str, v: &Value) -> Result<(), CollectorError> {
        let queue = self.mapping(rel, v)?;
        let sizer = match queue.get("sizer") {
            Some(s) => self.string(&format!("{rel}.sizer"), s)?,
            None => "requests".to_string(),
        };
        for (k, v) in &queue {
            let k = k.as_str().unwrap_or("");
            let path = format!("{rel}.{k}");
            match k {
                "enabled" => {
                    if !self.boolean(&path, v)? {
                        self.note(
                            &path,
                            "tailgate always queues per sampler, bounded by export.queue_bytes, and refuses upstream with a retryable status when full",
                        );
                    }
                }
                "num_consumers" => {
                    let n = self.scalar(&path, v)?;
                    self.set_export("concurrency", n);
                }
                "queue_size" => {
                    if sizer == "bytes" {
                        let n = self.scalar(&path, v)?;
                        self.set_export("queue_bytes", n);
                    } else {
                        self.note(
                            &path,
                            &format!(
                                "counts {sizer} in the Collector; tailgate bounds each sampler's queue in bytes: export.queue_bytes (32 MiB unless set, e.g. --set export.queue_bytes=67108864), or sizer: bytes"
                            ),
                        );
                    }
                }
                "sizer" => {
                    if !matches!(sizer.as_str(), "requests" | "items" | "bytes") {
                        return self.refuse(&path, format!("{sizer:?} is not a sizer"));
                    }
                }
                "blocking" | "block_on_overflow" => self.note(
                    &path,
                    "accepted, no effect: a full queue refuses the request upstream with a retryable status (backpressure)",
                ),
                "batch" | "wait_for_result" => self.note(
                    &path,
                    "accepted, no effect: parts for one sampler are merged up to export.max_batch_spans and max_batch_bytes",
                ),
                "storage" => {
                    return self.refuse(
                        &path,
                        "a persistent queue (storage extension) is not supported on the LB tier: the LB holds only what is in flight, and refuses upstream when a queue is full",
                    );
                }
                _ => return self.refuse(&path, "is not a sending_queue setting"),
            }
        }
        Ok(())
    }
}

/// The Collector adds the OTLP/gRPC port to an endpoint without one.
fn with_default_port(host: &str) -> String {
    let has_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':'))
    } else {
        host.matches(':').count() == 1
    };
    if has_port {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:4317")
    } else {
        format!("{host}:4317")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LbConfig;
    use crate::resolver::ResolverConfig;
    use std::time::Duration;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn convert(text: &str) -> Result<Option<FromCollector>, CollectorError> {
        let root: Value = serde_yaml_ng::from_str(text).unwrap();
        from_collector(&root, &no_env)
    }

    /// The LB config a Collector configuration maps to, not validated.
    fn parse(text: &str) -> (LbConfig, Vec<String>) {
        let got = convert(text).unwrap().expect("a Collector configuration");
        (serde_yaml_ng::from_value(got.config).unwrap(), got.notes)
    }

    /// The same, valid as an LB config.
    fn lb(text: &str) -> (LbConfig, Vec<String>) {
        let (config, notes) = parse(text);
        config.validate().unwrap();
        (config, notes)
    }

    #[test]
    fn an_lb_config_of_ours_is_not_a_collector_configuration() {
        assert_eq!(
            convert("resolver:\n  static:\n    members: [a:1]\n").unwrap(),
            None
        );
    }

    #[test]
    fn the_collectors_readme_example_maps_to_a_dns_ring_over_tls() {
        let (config, notes) = lb("
receivers:
  otlp:
    protocols:
      grpc:
processors:
exporters:
  loadbalancing:
    routing_key: traceID
    timeout: 10s
    retry_on_failure:
      enabled: true
      initial_interval: 1s
      max_interval: 10s
      max_elapsed_time: 2m
    sending_queue:
      enabled: true
      num_consumers: 2
      queue_size: 1000
    protocol:
      otlp:
        timeout: 1s
        compression: gzip
        headers:
          x-scope: tenant-a
    resolver:
      dns:
        hostname: otelcol-sampler.observability.svc.cluster.local
        port: 4317
        interval: 10s
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [loadbalancing]
");
        let ResolverConfig::Dns(dns) = &config.resolver else {
            panic!("{:?}", config.resolver)
        };
        assert_eq!(
            dns.hostname,
            "otelcol-sampler.observability.svc.cluster.local"
        );
        assert_eq!(dns.port, 4317);
        assert_eq!(dns.interval, Duration::from_secs(10));
        assert_eq!(
            dns.timeout,
            Some(Duration::from_secs(1)),
            "the Collector's default"
        );
        let e = &config.export;
        assert_eq!(
            e.timeout,
            Duration::from_secs(10),
            "the block's timeout wins"
        );
        assert_eq!(e.initial_interval, Duration::from_secs(1));
        assert_eq!(e.max_interval, Duration::from_secs(10));
        assert_eq!(e.max_elapsed_time, Duration::from_secs(120));
        assert_eq!(e.concurrency, 2);
        assert_eq!(e.compression, proto::exporter::Compression::Gzip);
        assert_eq!(
            e.headers.get("x-scope").map(String::as_str),
            Some("tenant-a")
        );
        assert!(e.tls.is_some(), "the Collector speaks TLS unless insecure");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("queue_size") && n.contains("export.queue_bytes")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("TLS to the samplers")),
            "{notes:?}"
        );
    }

    #[test]
    fn static_hostnames_get_the_default_port_and_insecure_means_plaintext() {
        let (config, _) = lb("
exporters:
  loadbalancing/tail:
    protocol:
      otlp:
        tls:
          insecure: true
    resolver:
      static:
        hostnames: [sampler-0, 'sampler-1:5317', '10.0.0.3', 'fd00::1', '[fd00::2]:4317']
");
        let ResolverConfig::Static(s) = &config.resolver else {
            panic!("{:?}", config.resolver)
        };
        assert_eq!(
            s.members,
            [
                "sampler-0:4317",
                "sampler-1:5317",
                "10.0.0.3:4317",
                "[fd00::1]:4317",
                "[fd00::2]:4317"
            ]
        );
        assert!(config.export.tls.is_none());
    }

    #[test]
    fn tls_files_and_bytes_sized_queues_map_to_our_keys() {
        // Not validated: the CA file is not there.
        let (config, _) = parse(
            "
exporters:
  loadbalancing:
    sending_queue:
      sizer: bytes
      queue_size: 8388608
    protocol:
      otlp:
        tls:
          ca_file: /etc/ca.crt
          server_name_override: samplers.internal
    resolver:
      dns: {hostname: s.local, port: '5317', timeout: 3s}
",
        );
        let tls = config.export.tls.unwrap();
        assert_eq!(tls.ca_file.unwrap().to_str(), Some("/etc/ca.crt"));
        assert_eq!(tls.server_name.as_deref(), Some("samplers.internal"));
        assert_eq!(config.export.queue_bytes, 8 * 1024 * 1024);
        let ResolverConfig::Dns(dns) = &config.resolver else {
            panic!()
        };
        assert_eq!(
            (dns.port, dns.timeout),
            (5317, Some(Duration::from_secs(3)))
        );
    }

    #[test]
    fn environment_references_are_expanded_as_the_collector_does() {
        let root: Value = serde_yaml_ng::from_str(
            "exporters:\n  loadbalancing:\n    protocol:\n      otlp:\n        headers:\n          authorization: \"Bearer ${env:TOKEN}\"\n          x-tenant: \"${TENANT:-main}\"\n    resolver:\n      static:\n        hostnames: [a]\n",
        )
        .unwrap();
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        let got = from_collector(&root, &env).unwrap().unwrap();
        let config: LbConfig = serde_yaml_ng::from_value(got.config).unwrap();
        assert_eq!(config.export.headers["authorization"], "Bearer s3cret");
        assert_eq!(config.export.headers["x-tenant"], "main");
        let err = from_collector(&root, &no_env).unwrap_err();
        assert!(err.why.contains("TOKEN"), "{err}");
    }

    #[test]
    fn what_tailgate_cannot_do_is_refused_with_what_to_use_instead() {
        let refused = |block: &str| {
            let text = format!("exporters:\n  loadbalancing:\n{block}");
            convert(&text).unwrap_err()
        };
        let e = refused("    routing_key: service\n    resolver: {static: {hostnames: [a]}}\n");
        assert_eq!(e.key, "exporters.loadbalancing.routing_key");
        assert!(
            e.why.contains("trace ID") && e.why.contains("service.name"),
            "{e}"
        );
        let e = refused("    routing_key: metric\n");
        assert!(e.why.contains("metrics"), "{e}");
        let e = refused("    resolver:\n      k8s:\n        service: sampler.obs\n");
        assert_eq!(e.key, "exporters.loadbalancing.resolver.k8s");
        assert!(
            e.why.contains("headless Service") && e.why.contains("resolver.dns"),
            "{e}"
        );
        let e = refused("    resolver:\n      aws_cloud_map:\n        namespace: n\n");
        assert!(e.why.contains("resolver.dns"), "{e}");
        let e =
            refused("    resolver:\n      static: {hostnames: [a]}\n      dns: {hostname: b}\n");
        assert!(e.why.contains("keep one"), "{e}");
        let e = refused(
            "    resolver: {static: {hostnames: [a]}}\n    sending_queue:\n      storage: file_storage\n",
        );
        assert!(e.key.ends_with("sending_queue.storage"), "{e}");
        let e = refused(
            "    resolver: {static: {hostnames: [a]}}\n    protocol:\n      otlp:\n        auth:\n          authenticator: oauth2client\n",
        );
        assert!(e.why.contains("headers"), "{e}");
        let e = refused(
            "    resolver: {static: {hostnames: [a]}}\n    protocol:\n      otlp:\n        tls:\n          insecure_skip_verify: true\n",
        );
        assert!(e.why.contains("ca_file"), "{e}");
        let e = refused(
            "    resolver: {static: {hostnames: [a]}}\n    retry_on_failure:\n      enabled: false\n",
        );
        assert!(e.why.contains("fails over"), "{e}");
        let e = refused(
            "    resolver: {static: {hostnames: [a]}}\n    protocol:\n      otlp:\n        compression: snappy\n",
        );
        assert!(e.why.contains("gzip"), "{e}");
        let e = refused("    resolver: {static: {hostnames: [a]}}\n    unknown_key: 1\n");
        assert_eq!(e.key, "exporters.loadbalancing.unknown_key");
        let e = refused("    routing_key: traceID\n");
        assert!(e.key.ends_with("resolver"), "{e}");
    }

    #[test]
    fn a_configuration_without_one_loadbalancing_exporter_is_refused() {
        let e = convert("exporters:\n  otlp:\n    endpoint: x:4317\n").unwrap_err();
        assert!(
            e.why.contains("no loadbalancing exporter") && e.why.contains("otlp"),
            "{e}"
        );
        let e = convert("exporters:\n  loadbalancing/a: {}\n  loadbalancing/b: {}\n").unwrap_err();
        assert!(e.why.contains("several"), "{e}");
        let e = convert("service:\n  pipelines: {}\n").unwrap_err();
        assert!(e.why.contains("no exporters"), "{e}");
    }
}
