//! The load-balancing exporter, between the receiver and the samplers.
//!
//! In `tailgate lb` every accepted request is split by trace owner and each
//! part is queued for, and exported to, the sampler that owns those traces;
//! samplers reuse the same exporter to forward spans of traces they do not
//! own. [`resolver`] keeps the member set (DNS or static), [`ring`] maps a
//! trace ID to its owner, [`exporter`] queues per member and fails over.
//! [`collector`] reads a Collector configuration's `loadbalancing` exporter
//! as an LB config. [`logs_backend`] sends log records without a trace ID
//! to a logs backend when one is configured.
#![forbid(unsafe_code)]

pub mod collector;
pub mod exporter;
pub mod logs_backend;
pub mod member;
pub mod node;
pub mod resolver;
pub mod ring;

pub use exporter::{ExportConfig, LbExporter, SendError};
pub use member::{Member, MemberSet};
pub use node::{Lb, LbConfig, LbConfigError, LbError, run};
pub use ring::Ring;
