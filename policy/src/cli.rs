//! `tailgate policy check FILE` and `tailgate policy test FILE TRACES.json`,
//! as functions that return what to print and the exit code, so that
//! `main` only prints.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use proto::view::{RequestView, TraceId};
use proto::write::SpanRef;

use crate::evaluate::{Outcome, TraceView};
use crate::policy::{PolicyFile, listing};
use crate::summary::TraceSummary;

/// Validates a policy file. Returns the listing of the policies in effect
/// and the timing settings, exit code 0; or `error: <file>:<line>:<col>:
/// ...`, exit code 1.
pub fn check(path: &Path) -> (String, i32) {
    match PolicyFile::load(path) {
        Ok(file) => (listing(&file), 0),
        Err(e) => (format!("error: {e}\n"), 1),
    }
}

/// [`check`] of a policy file's text; `file_name` is used in messages.
pub fn check_source(source: &str, file_name: &str) -> (String, i32) {
    match PolicyFile::parse(source, file_name) {
        Ok(file) => (listing(&file), 0),
        Err(e) => (format!("error: {e}\n"), 1),
    }
}

/// Decides every trace of an OTLP/JSON file (what `/v1/traces` accepts)
/// with a policy file: one line per trace, in order of first appearance,
/// with its ID, span count, decision and deciding policy, then a total.
/// All traces are decided at the same instant, so rate limits apply as to
/// one burst. Exit code 0, or 1 with `error: ...` when a file is unusable.
pub fn test(policy: &Path, traces: &Path) -> (String, i32) {
    match run_test(policy, traces) {
        Ok(out) => (out, 0),
        Err(message) => (format!("error: {message}\n"), 1),
    }
}

struct Trace {
    id: TraceId,
    summary: TraceSummary,
    /// (resource header, scope header, span) as indexes and bytes.
    spans: Vec<(usize, usize, std::ops::Range<usize>)>,
}

fn run_test(policy: &Path, traces: &Path) -> Result<String, String> {
    let file = PolicyFile::load(policy).map_err(|e| e.to_string())?;
    let name = traces.display();
    let json = std::fs::read(traces).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let request = proto::json::to_protobuf(&json).map_err(|e| format!("{name}: {e}"))?;

    let mut headers: Vec<Cow<'_, [u8]>> = Vec::new();
    let mut list: Vec<Trace> = Vec::new();
    let (mut resource_seen, mut scope_seen) = (usize::MAX, usize::MAX);
    let (mut resource_slot, mut scope_slot) = (0, 0);
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    RequestView::new(&request)
        .for_each_span(|resource, scope, span| {
            if resource.index != resource_seen {
                resource_seen = resource.index;
                resource_slot = headers.len();
                headers.push(resource.header.clone());
            }
            if scope.index != scope_seen {
                scope_seen = scope.index;
                scope_slot = headers.len();
                headers.push(scope.header.clone());
            }
            let bytes = span.bytes();
            let start = span.offset();
            let at = *index.entry(span.trace_id).or_insert_with(|| {
                list.push(Trace {
                    id: span.trace_id,
                    summary: TraceSummary::new(),
                    spans: Vec::new(),
                });
                list.len() - 1
            });
            let trace = &mut list[at];
            trace.summary.add(&span, bytes.len());
            trace
                .spans
                .push((resource_slot, scope_slot, start..start + bytes.len()));
        })
        .map_err(|e| format!("{name}: {e}"))?;

    let state = file.policies.new_state();
    let mut rows: Vec<[String; 4]> = Vec::with_capacity(list.len());
    let (mut sampled, mut dropped, mut not_sampled) = (0, 0, 0);
    for trace in &list {
        let spans: Vec<SpanRef<'_>> = trace
            .spans
            .iter()
            .map(|(r, s, range)| SpanRef {
                resource: &headers[*r],
                scope: &headers[*s],
                span: &request[range.clone()],
            })
            .collect();
        let view = TraceView {
            trace_id: trace.id,
            summary: &trace.summary,
            spans: &spans,
        };
        let decision = file.policies.evaluate(&state, &view, Duration::ZERO);
        match decision.outcome {
            o if o.is_sampled() => sampled += 1,
            Outcome::Dropped => dropped += 1,
            _ => not_sampled += 1,
        }
        let mut policy = decision.policy.as_deref().unwrap_or("-").to_string();
        // Which OTTL condition matched, when an ottl_condition decided.
        if let Some(name) = decision.policy.as_deref() {
            let matched = crate::ottl::explain(&file.policies, name, &view);
            if !matched.is_empty() {
                policy.push_str(&format!(" ({})", matched.join("; ")));
            }
        }
        rows.push([
            trace.id.to_string(),
            trace.summary.span_count().to_string(),
            decision.outcome.to_string(),
            policy,
        ]);
    }

    let header = ["TRACE ID", "SPANS", "DECISION", "POLICY"];
    let width = |col: usize| {
        rows.iter()
            .map(|r| r[col].len())
            .chain(std::iter::once(header[col].len()))
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = String::new();
    let mut line = |cells: [&str; 4]| {
        out.push_str(&format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}\n",
            cells[0], cells[1], cells[2], cells[3]
        ));
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
    let mut total = format!(
        "{} {}: {sampled} sampled, {not_sampled} not sampled",
        list.len(),
        if list.len() == 1 { "trace" } else { "traces" }
    );
    if dropped > 0 {
        total.push_str(&format!(", {dropped} dropped"));
    }
    out.push_str(&total);
    out.push('\n');
    Ok(out)
}

/// `tailgate policy convert refinery RULES.yaml [-o OUT] [--environment
/// NAME]`: converts a Refinery rules file, checks the result as `policy
/// check` would, and prints it (or writes it to `out` and prints what was
/// written and the notes). Exit code 0, or 1 with `error: ...` when the
/// rules cannot be converted (the file names the rule and the reason).
pub fn convert_refinery(
    rules: &Path,
    out: Option<&Path>,
    environment: Option<&str>,
) -> (String, i32) {
    let name = rules.display().to_string();
    let source = match std::fs::read_to_string(rules) {
        Ok(s) => s,
        Err(e) => return (format!("error: {name}: cannot read: {e}\n"), 1),
    };
    let conversion = match crate::refinery::convert(&source, &name, environment) {
        Ok(c) => c,
        Err(e) => return (format!("error: {e}\n"), 1),
    };
    // The converter's output must be a policy file tailgate loads.
    let out_name = out.map_or_else(|| "(converted)".to_string(), |p| p.display().to_string());
    if let Err(e) = PolicyFile::parse(&conversion.yaml, &out_name) {
        return (
            format!(
                "error: the conversion of {name} is not a valid policy file ({e}); please report this with the rules file\n"
            ),
            1,
        );
    }
    let Some(out) = out else {
        return (conversion.yaml, 0);
    };
    if let Err(e) = std::fs::write(out, &conversion.yaml) {
        return (format!("error: {out_name}: cannot write: {e}\n"), 1);
    }
    let mut report = format!(
        "wrote {out_name}: {} {} from {name}\n",
        conversion.policies,
        if conversion.policies == 1 {
            "policy"
        } else {
            "policies"
        }
    );
    for note in &conversion.notes {
        report.push_str(&format!("note: {note}\n"));
    }
    report.push_str(&format!(
        "check it with: tailgate policy check {out_name}\n"
    ));
    (report, 0)
}
