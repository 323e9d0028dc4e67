//! The sampler node, in the middle of the data path: it receives the spans
//! the LBs route to it by trace ID, buffers each trace until it can be
//! judged, decides with the policy file in force, and forwards kept traces,
//! whole, to the backend.
//!
//! ```text
//! receiver (gRPC, HTTP) ─▶ Sink: one checked walk, split by shard
//!     ─▶ bounded queue per shard ─▶ shard task: TraceBuffer (insert / expire)
//!     ─▶ decide (policy, live-reloaded) ─▶ exporter ─▶ backend
//! ```
//!
//! - [`ingest`]: a request's spans, walked once and grouped by shard.
//! - [`buffer`]: the trace buffer of one shard, a synchronous state machine
//!   with time as an argument; [`cache`]: the decisions late spans follow.
//! - `shard`: the task that drives a buffer and hands kept traces over;
//!   `state`: the node-wide load the shards and the receivers' sink share.
//! - [`run`] / [`Sampler`]: the node, its backpressure, policy reload and
//!   staged shutdown; [`SamplerConfig`]: its configuration.
//! - [`cluster`]: the sampler tier as a cluster: ownership on the LBs'
//!   ring, stray spans forwarded to their owner, traces and decisions
//!   moved on a membership change and handed over at shutdown.
//!
//! Every span received is counted exactly once more: forwarded, not
//! sampled, dropped (by reason), handed over to another sampler (by
//! reason) or still buffered (see the metrics module for the identity).
#![forbid(unsafe_code)]

mod active;
pub mod buffer;
pub mod cache;
pub mod cluster;
mod config;
mod durable;
mod error;
mod holds;
pub mod ingest;
mod logs;
mod metrics;
mod node;
mod reload;
mod shard;
mod state;
#[cfg(test)]
mod testutil;

pub use config::{
    ClusterConfig, DecisionCacheConfig, LimitsConfig, SamplerConfig, ShutdownConfig, StorageConfig,
};
pub use error::SamplerError;
pub use node::{Sampler, run};
pub use reload::ReloadHandle;
