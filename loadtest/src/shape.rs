//! What the generated traffic looks like, and its encoding: pure, no I/O, no
//! clock (time is an argument), so it can be tested and benchmarked alone.
//!
//! A trace has a span count drawn from a geometric distribution (most traces
//! small, a long tail), spans spread over several services (one OTLP
//! resource each), a class (error, slow or normal, by the configured rates)
//! and is sent in up to `max_chunks` pieces spread over `spread`: each piece
//! goes into whichever request is being filled when it is due, so one trace's
//! spans travel in several requests, over several connections, at different
//! times. Spans are sent children first, then the root; the error span of an
//! error trace is always the very last span sent, so a sampler that decides
//! before the trace is complete misses it.
//!
//! Speed: each span is written by concatenating pre-encoded pieces (name,
//! kind and attributes per operation; resource and scope per service) around
//! the few fields that vary (IDs and times), with span IDs derived, not
//! drawn ([`crate::ids`]). No prost message is built per span.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use proto::view::TraceId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::ids::{self, mix, span_id};
use crate::manifest::{Class, TraceEntry};

/// The shape of the traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeConfig {
    /// Services (OTLP resources) a trace's spans are spread over. Default 5.
    pub services: u32,
    /// Mean spans per trace (geometric distribution, capped at `max_spans`).
    /// Default 8.
    pub mean_spans: f64,
    /// The most spans one trace has. Default 64.
    pub max_spans: u32,
    /// Share of traces with an error span, 0 to 1. Default 0.01.
    pub error_rate: f64,
    /// Share of traces whose root span lasts 1.2 to 2 × `slow_threshold`.
    /// The others last 1/100 to 1/5 of it. Default 0.01.
    pub slow_rate: f64,
    /// The latency threshold of the policy under test. Default 500 ms.
    pub slow_threshold: Duration,
    /// Encoded bytes of attributes per span (a few realistic ones, padded
    /// with `loadtest.payload`). Default 128.
    pub attribute_bytes: usize,
    /// A trace is sent in 1 to `max_chunks` pieces (never more than its
    /// spans). Default 3.
    pub max_chunks: u32,
    /// Time from a trace's first piece to its last. Keep it under the
    /// policy's `decision_wait_after_root_received` (2 s in the default
    /// policy), or late spans of kept traces arrive after their decision.
    /// Default 1 s.
    pub spread: Duration,
}

impl Default for ShapeConfig {
    fn default() -> Self {
        ShapeConfig {
            services: 5,
            mean_spans: 8.0,
            max_spans: 64,
            error_rate: 0.01,
            slow_rate: 0.01,
            slow_threshold: Duration::from_millis(500),
            attribute_bytes: 128,
            max_chunks: 3,
            spread: Duration::from_secs(1),
        }
    }
}

/// A shape that cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("traffic shape: {0}")]
pub struct ShapeError(pub String);

impl ShapeConfig {
    pub fn validate(&self) -> Result<(), ShapeError> {
        let fail = |m: &str| Err(ShapeError(m.to_owned()));
        if !(1..=1000).contains(&self.services) {
            return fail("services must be 1 to 1000");
        }
        if !(1..=10_000).contains(&self.max_spans) {
            return fail("max spans per trace must be 1 to 10000");
        }
        if !(self.mean_spans >= 1.0 && self.mean_spans <= f64::from(self.max_spans)) {
            return fail("mean spans per trace must be at least 1 and at most the max");
        }
        let rate = |r: f64| (0.0..=1.0).contains(&r);
        if !rate(self.error_rate) || !rate(self.slow_rate) || self.error_rate + self.slow_rate > 1.0
        {
            return fail("error and slow rates must be 0 to 1, and add up to at most 1");
        }
        if self.slow_threshold < Duration::from_millis(10)
            || self.slow_threshold > Duration::from_secs(3600)
        {
            return fail("slow threshold must be 10ms to 1h");
        }
        if self.attribute_bytes > 64 * 1024 {
            return fail("attribute bytes must be at most 65536");
        }
        if self.max_chunks == 0 {
            return fail("chunks per trace must be at least 1");
        }
        if self.spread > Duration::from_secs(3600) {
            return fail("spread must be at most 1h");
        }
        Ok(())
    }
}

// Span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
const INTERNAL: u64 = 1;
const SERVER: u64 = 2;
const CLIENT: u64 = 3;

/// A span's parent: a tree with this fan-out, by index.
const FANOUT: u32 = 3;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_len_field(buf: &mut Vec<u8>, tag: u8, body: &[u8]) {
    buf.push(tag);
    put_varint(buf, body.len() as u64);
    buf.extend_from_slice(body);
}

enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

/// A `KeyValue` as field `tag` of its parent (span attributes: 0x4A;
/// resource attributes: 0x0A).
fn put_attribute(buf: &mut Vec<u8>, tag: u8, key: &str, value: Value<'_>) {
    let mut any = Vec::new();
    match value {
        Value::Str(s) => put_len_field(&mut any, 0x0A, s.as_bytes()),
        Value::Int(i) => {
            any.push(0x18);
            put_varint(&mut any, i as u64);
        }
    }
    let mut kv = Vec::new();
    put_len_field(&mut kv, 0x0A, key.as_bytes());
    put_len_field(&mut kv, 0x12, &any);
    put_len_field(buf, tag, &kv);
}

/// The pre-encoded parts of one operation's spans.
struct OpTemplate {
    /// `name` (5) and `kind` (6).
    name_kind: Vec<u8>,
    /// Every `attributes` (9) entry.
    attributes: Vec<u8>,
}

struct ServiceTemplate {
    /// `ResourceSpans.resource` (1), tag included.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (1), tag included.
    scope: Vec<u8>,
    /// Op 0 is the entry point (a SERVER span), used for roots.
    ops: Vec<OpTemplate>,
}

const SERVICE_NAMES: [&str; 8] = [
    "frontend",
    "checkout",
    "payment",
    "inventory",
    "shipping",
    "email",
    "auth",
    "search",
];
const PAYLOAD_KEY: &str = "loadtest.payload";

fn service_name(i: u32) -> String {
    let base = SERVICE_NAMES[i as usize % SERVICE_NAMES.len()];
    match i as usize / SERVICE_NAMES.len() {
        0 => base.to_owned(),
        n => format!("{base}-{n}"),
    }
}

fn op_template(
    name: &str,
    kind: u64,
    attrs: &[(&str, Value<'_>)],
    attribute_bytes: usize,
) -> OpTemplate {
    let mut name_kind = Vec::new();
    put_len_field(&mut name_kind, 0x2A, name.as_bytes());
    name_kind.push(0x30);
    put_varint(&mut name_kind, kind);
    let mut attributes = Vec::new();
    for (key, value) in attrs {
        let value = match value {
            Value::Str(s) => Value::Str(s),
            Value::Int(i) => Value::Int(*i),
        };
        put_attribute(&mut attributes, 0x4A, key, value);
    }
    // Pad to the configured size with the longest payload that fits.
    let room = attribute_bytes.saturating_sub(attributes.len());
    let encoded = |n: usize| {
        let mut probe = Vec::new();
        put_attribute(&mut probe, 0x4A, PAYLOAD_KEY, Value::Str(&"x".repeat(n)));
        probe.len()
    };
    if encoded(0) <= room {
        let mut n = room - encoded(0);
        while n > 0 && encoded(n) > room {
            n -= 1;
        }
        let payload: String = (0..n)
            .map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36]))
            .collect();
        put_attribute(&mut attributes, 0x4A, PAYLOAD_KEY, Value::Str(&payload));
    }
    OpTemplate {
        name_kind,
        attributes,
    }
}

fn service_template(index: u32, attribute_bytes: usize) -> ServiceTemplate {
    let name = service_name(index);
    let mut resource_body = Vec::new();
    let instance = format!("{name}-{index}");
    let host = format!("loadtest-host-{index}");
    for (key, value) in [
        ("service.name", name.as_str()),
        ("service.instance.id", &instance),
        ("host.name", &host),
        ("telemetry.sdk.name", "tailgate-loadtest"),
        ("telemetry.sdk.language", "rust"),
    ] {
        put_attribute(&mut resource_body, 0x0A, key, Value::Str(value));
    }
    let mut resource = Vec::new();
    put_len_field(&mut resource, 0x0A, &resource_body);
    let mut scope_body = Vec::new();
    put_len_field(&mut scope_body, 0x0A, b"tailgate-loadtest");
    put_len_field(&mut scope_body, 0x12, env!("CARGO_PKG_VERSION").as_bytes());
    let mut scope = Vec::new();
    put_len_field(&mut scope, 0x0A, &scope_body);

    let route = format!("/{name}/items/{{id}}");
    let get = format!("GET {route}");
    let select = format!("SELECT {name}");
    let process = format!("{name}.process");
    let ops = vec![
        op_template(
            &get,
            SERVER,
            &[
                ("http.request.method", Value::Str("GET")),
                ("http.route", Value::Str(&route)),
                ("http.response.status_code", Value::Int(200)),
            ],
            attribute_bytes,
        ),
        op_template(
            &select,
            CLIENT,
            &[
                ("db.system.name", Value::Str("postgresql")),
                ("db.operation.name", Value::Str("SELECT")),
            ],
            attribute_bytes,
        ),
        op_template(
            "cache.get",
            CLIENT,
            &[("db.system.name", Value::Str("redis"))],
            attribute_bytes,
        ),
        op_template(
            &process,
            INTERNAL,
            &[("code.function.name", Value::Str("process"))],
            attribute_bytes,
        ),
    ];
    ServiceTemplate {
        resource,
        scope,
        ops,
    }
}

/// `Span.status` (15) with code ERROR and a message.
fn error_status() -> Vec<u8> {
    let mut status = Vec::new();
    put_len_field(&mut status, 0x12, b"loadtest: injected error");
    status.extend_from_slice(&[0x18, 0x02]);
    let mut field = Vec::new();
    put_len_field(&mut field, 0x7A, &status);
    field
}

/// Everything needed to write any span of one trace.
#[derive(Debug, Clone, Copy)]
struct TracePlan {
    trace_id: TraceId,
    /// Drives the per-span choices (times, service, operation).
    seed: u64,
    spans: u32,
    class: Class,
    start_unix_nano: u64,
    duration_nanos: u64,
    /// The root span's service.
    service: u32,
}

impl TracePlan {
    /// The span index sent at position `pos` of the trace's send order:
    /// children in index order, then the root, then (error traces) the
    /// error span, which is the last index.
    fn index_at(&self, pos: u32) -> u32 {
        let n = self.spans;
        if n == 1 {
            return 0;
        }
        if self.class == Class::Error {
            match pos {
                p if p + 2 < n => p + 1,
                p if p + 2 == n => 0,
                _ => n - 1,
            }
        } else if pos + 1 < n {
            pos + 1
        } else {
            0
        }
    }

    fn is_error_span(&self, index: u32) -> bool {
        self.class == Class::Error && index == self.spans - 1
    }
}

/// A piece of a trace, due at `due_us`.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    due_us: u64,
    /// Ties broken in creation order.
    seq: u64,
    plan: TracePlan,
    first_pos: u32,
    end_pos: u32,
}

impl PartialEq for Chunk {
    fn eq(&self, other: &Self) -> bool {
        (self.due_us, self.seq) == (other.due_us, other.seq)
    }
}
impl Eq for Chunk {}
impl PartialOrd for Chunk {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Chunk {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due_us, self.seq).cmp(&(other.due_us, other.seq))
    }
}

/// One encoded export request and what is in it.
#[derive(Debug, Clone)]
pub struct OutRequest {
    /// An encoded `ExportTraceServiceRequest`.
    pub bytes: Bytes,
    pub spans: u32,
    /// Spans per trace in this request (one entry per piece), so a request
    /// given up on can be written to the manifest as unsent.
    pub traces: Vec<(TraceId, u32)>,
}

/// Makes traces and turns their due pieces into requests.
pub struct Generator {
    shape: ShapeConfig,
    services: Vec<ServiceTemplate>,
    error_status: Vec<u8>,
    rng: SmallRng,
    /// `ln(1 - 1/mean)` of the span-count distribution; 0 when every trace
    /// has one span.
    geometric_ln: f64,
    pending: BinaryHeap<Reverse<Chunk>>,
    seq: u64,
    /// The request being filled: span fields per service.
    per_service: Vec<Vec<u8>>,
    spans: u32,
    traces: Vec<(TraceId, u32)>,
    /// When the request being filled got its first span.
    first_us: Option<u64>,
}

impl Generator {
    pub fn new(shape: ShapeConfig, seed: u64) -> Result<Self, ShapeError> {
        shape.validate()?;
        let services: Vec<_> = (0..shape.services)
            .map(|i| service_template(i, shape.attribute_bytes))
            .collect();
        let geometric_ln = if shape.mean_spans > 1.0 {
            (1.0 - 1.0 / shape.mean_spans).ln()
        } else {
            0.0
        };
        Ok(Generator {
            per_service: vec![Vec::new(); services.len()],
            services,
            error_status: error_status(),
            rng: SmallRng::seed_from_u64(seed),
            geometric_ln,
            pending: BinaryHeap::new(),
            seq: 0,
            spans: 0,
            traces: Vec::new(),
            first_us: None,
            shape,
        })
    }

    /// Starts a trace at `now_us` (microseconds since the run started; its
    /// root starts at `unix_nanos`) with at most `cap` spans, and queues its
    /// pieces. Returns its manifest entry.
    pub fn start_trace(&mut self, now_us: u64, unix_nanos: u64, cap: u32) -> TraceEntry {
        let trace_id = ids::trace_id(self.rng.random());
        let spans = self.span_count().min(cap.max(1));
        let roll: f64 = self.rng.random();
        let class = if roll < self.shape.error_rate {
            Class::Error
        } else if roll < self.shape.error_rate + self.shape.slow_rate {
            Class::Slow
        } else {
            Class::Normal
        };
        let threshold = self.shape.slow_threshold.as_nanos() as u64;
        let duration_nanos = match class {
            // Well over the threshold, so a slow trace is slow by any clock.
            Class::Slow => self.rng.random_range(threshold * 6 / 5..=threshold * 2),
            // Well under it: at most a fifth.
            Class::Error | Class::Normal => self.rng.random_range(threshold / 100..=threshold / 5),
        };
        let plan = TracePlan {
            trace_id,
            seed: mix(self.rng.random()),
            spans,
            class,
            start_unix_nano: unix_nanos,
            duration_nanos,
            service: self.rng.random_range(0..self.shape.services),
        };
        let chunks = self.rng.random_range(1..=self.shape.max_chunks).min(spans);
        let spread_us = self.shape.spread.as_micros() as u64;
        for k in 0..chunks {
            let due_us = match chunks {
                1 => now_us,
                c => now_us + spread_us * u64::from(k) / u64::from(c - 1),
            };
            self.seq += 1;
            self.pending.push(Reverse(Chunk {
                due_us,
                seq: self.seq,
                plan,
                first_pos: spans * k / chunks,
                end_pos: spans * (k + 1) / chunks,
            }));
        }
        TraceEntry {
            trace_id,
            spans,
            class,
            duration_us: duration_nanos / 1000,
        }
    }

    fn span_count(&mut self) -> u32 {
        if self.geometric_ln == 0.0 {
            return 1;
        }
        // Inverse CDF of the geometric distribution on 1, 2, …
        let u: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]
        let k = 1.0 + (u.ln() / self.geometric_ln).floor();
        if k >= f64::from(self.shape.max_spans) {
            self.shape.max_spans
        } else {
            k as u32
        }
    }

    /// When the next piece is due, if any is queued.
    pub fn next_due(&self) -> Option<u64> {
        self.pending.peek().map(|Reverse(c)| c.due_us)
    }

    /// Pieces queued, not yet written into a request.
    pub fn pending_chunks(&self) -> usize {
        self.pending.len()
    }

    /// Spans in the request being filled.
    pub fn buffered_spans(&self) -> u32 {
        self.spans
    }

    /// When the request being filled got its first span.
    pub fn buffered_since(&self) -> Option<u64> {
        self.first_us
    }

    /// Writes every piece due by `now_us` into the request being filled,
    /// handing `out` each request that reaches `batch_spans` spans (a piece
    /// is never split, so a request may exceed it by less than one piece).
    pub fn emit_due(&mut self, now_us: u64, batch_spans: u32, out: &mut impl FnMut(OutRequest)) {
        while let Some(Reverse(chunk)) = self.pending.peek() {
            if chunk.due_us > now_us {
                break;
            }
            let chunk = *chunk;
            self.pending.pop();
            self.write_chunk(&chunk, now_us);
            if self.spans >= batch_spans
                && let Some(request) = self.flush()
            {
                out(request);
            }
        }
    }

    fn write_chunk(&mut self, chunk: &Chunk, now_us: u64) {
        let plan = &chunk.plan;
        for pos in chunk.first_pos..chunk.end_pos {
            let index = plan.index_at(pos);
            self.write_span(plan, index);
        }
        let n = chunk.end_pos - chunk.first_pos;
        self.spans += n;
        self.traces.push((plan.trace_id, n));
        self.first_us.get_or_insert(now_us);
    }

    fn write_span(&mut self, plan: &TracePlan, index: u32) {
        let root_end = plan.start_unix_nano + plan.duration_nanos;
        let (service, op, start, end) = if index == 0 {
            (plan.service, 0, plan.start_unix_nano, root_end)
        } else {
            let h = mix(plan.seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // Nested in the root: start in its first 90 %, end before it does.
            let a = (h & 0xffff) as u128;
            let b = ((h >> 16) & 0xffff) as u128;
            let d = u128::from(plan.duration_nanos);
            let start = plan.start_unix_nano + (d * a * 9 / (10 * 65_536)) as u64;
            let left = u128::from(root_end - start);
            let end = start + (left * (3_277 + b * 62_259 / 65_536) / 65_536) as u64;
            let service =
                (plan.service + (h >> 32) as u32 % self.shape.services) % self.shape.services;
            let ops = self.services[service as usize].ops.len();
            (service, (h >> 48) as usize % ops, start, end)
        };
        let error = plan.is_error_span(index);
        let template = &self.services[service as usize].ops[op];
        let parent = (index > 0).then(|| span_id(&plan.trace_id, (index - 1) / FANOUT));
        let len = 18
            + 10
            + if parent.is_some() { 10 } else { 0 }
            + template.name_kind.len()
            + 18
            + template.attributes.len()
            + if error { self.error_status.len() } else { 0 };
        let buf = &mut self.per_service[service as usize];
        buf.reserve(len + 4);
        buf.push(0x12); // ScopeSpans.spans
        put_varint(buf, len as u64);
        buf.extend_from_slice(&[0x0A, 16]);
        buf.extend_from_slice(&plan.trace_id.0);
        buf.extend_from_slice(&[0x12, 8]);
        buf.extend_from_slice(&span_id(&plan.trace_id, index).0);
        if let Some(parent) = parent {
            buf.extend_from_slice(&[0x22, 8]);
            buf.extend_from_slice(&parent.0);
        }
        buf.extend_from_slice(&template.name_kind);
        buf.push(0x39);
        buf.extend_from_slice(&start.to_le_bytes());
        buf.push(0x41);
        buf.extend_from_slice(&end.to_le_bytes());
        buf.extend_from_slice(&template.attributes);
        if error {
            buf.extend_from_slice(&self.error_status);
        }
    }

    /// Hands over the request being filled, if it has any span.
    pub fn flush(&mut self) -> Option<OutRequest> {
        if self.spans == 0 {
            return None;
        }
        let mut size = 0;
        let mut lens = Vec::with_capacity(self.services.len());
        for (service, spans) in self.services.iter().zip(&self.per_service) {
            if spans.is_empty() {
                lens.push((0, 0));
                continue;
            }
            let scope_spans = service.scope.len() + spans.len();
            let resource_spans =
                service.resource.len() + 1 + varint_len(scope_spans as u64) + scope_spans;
            size += 1 + varint_len(resource_spans as u64) + resource_spans;
            lens.push((resource_spans, scope_spans));
        }
        let mut out = BytesMut::with_capacity(size);
        let mut head = Vec::with_capacity(10);
        for ((service, spans), (resource_spans, scope_spans)) in
            self.services.iter().zip(&mut self.per_service).zip(lens)
        {
            if spans.is_empty() {
                continue;
            }
            head.clear();
            head.push(0x0A); // ExportTraceServiceRequest.resource_spans
            put_varint(&mut head, resource_spans as u64);
            out.put_slice(&head);
            out.put_slice(&service.resource);
            head.clear();
            head.push(0x12); // ResourceSpans.scope_spans
            put_varint(&mut head, scope_spans as u64);
            out.put_slice(&head);
            out.put_slice(&service.scope);
            out.put_slice(spans);
            spans.clear();
        }
        let spans = std::mem::take(&mut self.spans);
        self.first_us = None;
        Some(OutRequest {
            bytes: out.freeze(),
            spans,
            traces: std::mem::take(&mut self.traces),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;
    use proto::ExportTraceServiceRequest;
    use proto::view::RequestView;

    use super::*;
    use crate::ids::span_index;

    fn run(shape: ShapeConfig, traces: usize) -> (Vec<TraceEntry>, Vec<OutRequest>) {
        let mut generator = Generator::new(shape, 1).expect("valid shape");
        let mut entries = Vec::new();
        let mut requests = Vec::new();
        for i in 0..traces as u64 {
            entries.push(generator.start_trace(i * 100, 1_700_000_000_000_000_000, u32::MAX));
            generator.emit_due(i * 100, 64, &mut |r| requests.push(r));
        }
        generator.emit_due(u64::MAX, 64, &mut |r| requests.push(r));
        requests.extend(generator.flush());
        assert_eq!(generator.pending_chunks(), 0);
        (entries, requests)
    }

    #[test]
    fn requests_decode_with_prost_and_pass_the_wire_view() {
        let (entries, requests) = run(ShapeConfig::default(), 300);
        let mut spans = 0;
        for request in &requests {
            let decoded =
                ExportTraceServiceRequest::decode(request.bytes.clone()).expect("prost decodes");
            let n: usize = decoded
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            assert_eq!(n, request.spans as usize);
            let viewed = RequestView::new(&request.bytes).validate().expect("valid");
            assert_eq!(viewed, n);
            spans += n;
        }
        assert_eq!(
            spans as u64,
            entries.iter().map(|e| u64::from(e.spans)).sum::<u64>()
        );
    }

    #[test]
    fn every_span_is_sent_once_with_its_derived_id() {
        let (entries, requests) = run(ShapeConfig::default(), 200);
        let expected: HashMap<_, _> = entries.iter().map(|e| (e.trace_id, e)).collect();
        let mut seen: HashMap<TraceId, Vec<bool>> = HashMap::new();
        for request in &requests {
            RequestView::new(&request.bytes)
                .for_each_span(|_, _, span| {
                    let entry = expected[&span.trace_id];
                    let index = span_index(&span.trace_id, &span.span_id) as usize;
                    assert!(index < entry.spans as usize);
                    let bits = seen
                        .entry(span.trace_id)
                        .or_insert_with(|| vec![false; entry.spans as usize]);
                    assert!(!bits[index], "span {index} sent twice");
                    bits[index] = true;
                    assert_eq!(span.is_root(), index == 0);
                })
                .expect("valid");
        }
        assert_eq!(seen.len(), entries.len());
        assert!(seen.values().all(|bits| bits.iter().all(|b| *b)));
    }

    #[test]
    fn classes_show_in_status_and_root_duration() {
        let shape = ShapeConfig {
            error_rate: 0.2,
            slow_rate: 0.2,
            ..ShapeConfig::default()
        };
        let threshold = shape.slow_threshold.as_nanos() as u64;
        let (entries, requests) = run(shape, 500);
        let class: HashMap<_, _> = entries.iter().map(|e| (e.trace_id, e.class)).collect();
        let mut errors: HashMap<TraceId, usize> = HashMap::new();
        let mut extent: HashMap<TraceId, (u64, u64)> = HashMap::new();
        for request in &requests {
            RequestView::new(&request.bytes)
                .for_each_span(|_, _, span| {
                    if span.is_error() {
                        *errors.entry(span.trace_id).or_default() += 1;
                    }
                    let e = extent.entry(span.trace_id).or_insert((u64::MAX, 0));
                    e.0 = e.0.min(span.start_time_unix_nano);
                    e.1 = e.1.max(span.end_time_unix_nano);
                    if span.is_root() {
                        let d = span.duration_nanos();
                        match class[&span.trace_id] {
                            Class::Slow => assert!(d > threshold, "{d}"),
                            _ => assert!(d <= threshold / 5, "{d}"),
                        }
                    }
                })
                .expect("valid");
        }
        for entry in &entries {
            let expected = usize::from(entry.class == Class::Error);
            assert_eq!(errors.get(&entry.trace_id).copied().unwrap_or(0), expected);
            // Children are nested in the root: the trace lasts as long as it.
            let (start, end) = extent[&entry.trace_id];
            assert_eq!((end - start) / 1000, entry.duration_us);
        }
        let count = |c| entries.iter().filter(|e| e.class == c).count();
        assert!(
            count(Class::Error) > 50 && count(Class::Slow) > 50,
            "rates apply"
        );
    }

    #[test]
    fn the_error_span_travels_in_its_traces_last_request() {
        let shape = ShapeConfig {
            error_rate: 1.0,
            slow_rate: 0.0,
            ..ShapeConfig::default()
        };
        let (entries, requests) = run(shape, 100);
        let mut last_request: HashMap<TraceId, usize> = HashMap::new();
        let mut error_request: HashMap<TraceId, usize> = HashMap::new();
        for (n, request) in requests.iter().enumerate() {
            RequestView::new(&request.bytes)
                .for_each_span(|_, _, span| {
                    last_request.insert(span.trace_id, n);
                    if span.is_error() {
                        error_request.insert(span.trace_id, n);
                    }
                })
                .expect("valid");
        }
        assert_eq!(error_request.len(), entries.len());
        assert_eq!(error_request, last_request);
        let spread = entries
            .iter()
            .filter(|e| {
                requests
                    .iter()
                    .filter(|r| r.traces.iter().any(|t| t.0 == e.trace_id))
                    .count()
                    > 1
            })
            .count();
        assert!(spread > 10, "many traces span several requests: {spread}");
    }

    #[test]
    fn a_trace_is_spread_over_requests_and_time() {
        let shape = ShapeConfig {
            mean_spans: 20.0,
            max_chunks: 3,
            spread: Duration::from_millis(10),
            ..ShapeConfig::default()
        };
        let mut generator = Generator::new(shape, 3).expect("valid");
        let entry = generator.start_trace(0, 1, 1000);
        let mut requests = Vec::new();
        let mut at = 0;
        while generator.pending_chunks() > 0 {
            at = generator.next_due().expect("due");
            generator.emit_due(at, 1, &mut |r| requests.push(r));
        }
        assert!(entry.spans >= 1);
        let pieces: u32 = requests.iter().map(|r| r.spans).sum();
        assert_eq!(pieces, entry.spans);
        if requests.len() > 1 {
            assert_eq!(at, 10_000, "the last piece is due after the spread");
        }
    }

    #[test]
    fn span_counts_follow_the_configured_mean_and_cap() {
        let shape = ShapeConfig {
            mean_spans: 8.0,
            max_spans: 40,
            ..ShapeConfig::default()
        };
        let mut generator = Generator::new(shape, 9).expect("valid");
        let counts: Vec<u32> = (0..20_000)
            .map(|_| generator.start_trace(0, 0, u32::MAX).spans)
            .collect();
        let mean = counts.iter().map(|&c| f64::from(c)).sum::<f64>() / counts.len() as f64;
        assert!((6.5..8.5).contains(&mean), "{mean}");
        assert!(counts.iter().all(|&c| (1..=40).contains(&c)));
        assert!(counts.contains(&1) && counts.contains(&40));
        assert_eq!(generator.start_trace(0, 0, 1).spans, 1, "the cap applies");
    }

    #[test]
    fn attributes_are_padded_to_the_configured_size() {
        let ops = |bytes| {
            let shape = ShapeConfig {
                attribute_bytes: bytes,
                ..ShapeConfig::default()
            };
            Generator::new(shape, 0).expect("valid").services[0]
                .ops
                .iter()
                .map(|op| op.attributes.clone())
                .collect::<Vec<_>>()
        };
        for attributes in ops(1000) {
            let len = attributes.len();
            // A varint length may step by a byte around the target.
            assert!(len <= 1000 && len + 2 >= 1000, "{len}");
        }
        let payload = PAYLOAD_KEY.as_bytes();
        for attributes in ops(0) {
            assert!(!attributes.windows(payload.len()).any(|w| w == payload));
        }
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let bad = [
            ShapeConfig {
                services: 0,
                ..ShapeConfig::default()
            },
            ShapeConfig {
                mean_spans: 100.0,
                max_spans: 10,
                ..ShapeConfig::default()
            },
            ShapeConfig {
                error_rate: 0.7,
                slow_rate: 0.7,
                ..ShapeConfig::default()
            },
            ShapeConfig {
                slow_threshold: Duration::from_millis(1),
                ..ShapeConfig::default()
            },
        ];
        for shape in bad {
            assert!(Generator::new(shape, 0).is_err());
        }
    }
}
