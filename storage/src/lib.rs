//! The sampler's durable state: a write-ahead log in a directory of segment
//! files. The sampler's receivers append what they accept (span bytes, with
//! their first-seen time), its shards append their decisions, and its
//! exporter what the backend acknowledged; on start the sampler reads the log
//! back to rebuild its buffer and decision cache. Nothing else in tailgate
//! knows about files.
//!
//! A synchronous format core, with time passed in: [`Wal`] is driven by one
//! task (the sampler runs it on a blocking thread), which appends, commits
//! on the group-commit interval and deletes segments that are no longer
//! needed.
//!
//! - [`frame`]: one record on disk, framed with its length and a checksum.
//! - [`record`]: what a record says.
//! - [`wal`]: segments, group commit, what each segment still holds,
//!   recovery.
//! - [`spill`]: the exporter's disk queue for batches the backend cannot
//!   take yet, within a budget shared with the log.

#![forbid(unsafe_code)]

pub mod frame;
pub mod record;
pub mod spill;
pub mod wal;

pub use record::{Record, TraceKey};
pub use spill::{Budget, Spill, SpillConfig, SpillRecovery, Spilled};
pub use wal::{Progress, RecoveryStats, StorageError, Wal, WalConfig, scan};
