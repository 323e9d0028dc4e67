//! The policy file and sampling decisions, in the middle of the data path.
//!
//! A sampler node buffers each trace as encoded span bytes plus a
//! [`TraceSummary`] kept up to date at ingest. When a trace is due it asks
//! [`PolicySet::evaluate`] whether to keep it; the answer, a [`Decision`],
//! names the policy that decided and, for a trace kept by a `probabilistic`
//! policy, the OTel sampling threshold that [`annotate_span`] writes into each
//! kept span's `tracestate` on the way out.
//!
//! The policy file is the `tail_sampling` block of an OpenTelemetry Collector
//! configuration (processor `tailsamplingprocessor` in
//! opentelemetry-collector-contrib), or a whole Collector configuration that
//! holds one; where the syntax is shared, decisions are the Collector's. Each
//! module cites the Collector file it follows.
//!
//! This crate is pure: no I/O but [`PolicyFile::load`] and [`cli`], no clock
//! (time is an argument), no randomness (the probabilistic policy hashes the
//! trace ID).
#![forbid(unsafe_code)]

mod adaptive;
mod annotate;
pub mod cli;
mod config;
mod duration;
mod error;
mod evaluate;
pub mod fleet;
pub mod ottl;
mod policy;
mod probabilistic;
pub mod refinery;
mod summary;
#[cfg(test)]
mod testutil;
mod tracestate;

pub use adaptive::EstimatorStats;
pub use annotate::{Annotations, annotate_span, annotate_span_with};
pub use error::PolicyError;
pub use evaluate::{Decision, Outcome, PolicySet, PolicyState, PolicyTimer, TraceView, Votes};
pub use policy::{DecisionCacheSizes, PolicyFile, SamplingStrategy};
pub use probabilistic::Threshold;
pub use summary::TraceSummary;

/// The span attribute that names the policy that kept a trace, as the
/// Collector's `processor.tailsamplingprocessor.recordpolicy` feature gate
/// writes it.
pub const POLICY_ATTRIBUTE: &str = "tailsampling.policy";

/// The span attribute that names the `composite` sub-policy that kept a
/// trace (the Collector's `recordpolicy` gate).
pub const COMPOSITE_POLICY_ATTRIBUTE: &str = "tailsampling.composite_policy";

/// The span attribute, `true`, on a span that followed a decision taken
/// before it arrived (the Collector's `recordpolicy` gate).
pub const CACHED_DECISION_ATTRIBUTE: &str = "tailsampling.cached_decision";

/// The Collector contrib release whose `tail_sampling` semantics tailgate
/// follows.
pub const COLLECTOR_RELEASE: &str = "v0.165";
