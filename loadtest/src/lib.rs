//! `tailgate-loadtest`: proves throughput and correctness end to end, from
//! outside the data path. [`generate`] (`gen`) offers realistic OTLP traffic (shaped by
//! [`shape`]) to the LB tier and writes a [`manifest`] of what it sent;
//! [`sink`] stands in for the backend and keeps a [`record`] of what
//! arrived; [`verify`] holds one against the other under the policy's keep
//! rules; [`bench`] runs the three against a cluster and reads its CPU and
//! memory from [`procfs`]; [`figures`] runs the benches behind one figure of
//! BENCHMARKS.md.
//!
//! The binary (`src/main.rs`) is a thin command line over these; cluster
//! tests use them as a library.
#![forbid(unsafe_code)]

pub mod bench;
pub mod figures;
pub mod forward;
pub mod generate;
pub mod ids;
pub mod manifest;
pub mod procfs;
pub mod record;
pub mod shape;
pub mod sink;
pub mod stats;
pub mod transport;
pub mod verify;

pub use generate::{GenConfig, GenReport};
pub use manifest::Class;
pub use shape::ShapeConfig;
pub use sink::{RunningSink, SinkConfig, SinkStats};
pub use transport::Endpoint;
pub use verify::{Expectations, VerifyReport};
