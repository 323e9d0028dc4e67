//! What the node's parts share: the node-wide load (memory accounting,
//! export backlog, closing), read by the receivers' sink on every request
//! to decide whether to push back, and updated by the shards and the
//! policy reloader. Its own module so that `node` (which starts the parts)
//! and the parts themselves (`shard`, `reload`) all depend on it, and none
//! of them on `node`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::config::SamplerConfig;
use crate::metrics::Refused;

/// What the receivers' sink and the shards share: the node-wide load, read
/// on every request to decide whether to push back.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// Set when the receivers stop: requests still arriving are refused
    /// as unavailable.
    pub(crate) closing: AtomicBool,
    /// Shards waiting for room in the export queue.
    export_blocked: AtomicUsize,
    /// Bytes of accepted requests not yet copied into the buffer.
    pub(crate) inflight_bytes: AtomicUsize,
    buffered_traces: AtomicUsize,
    buffered_bytes: AtomicUsize,
    /// The high watermarks: above them, refuse.
    high_traces: AtomicUsize,
    high_bytes: usize,
    watermark: f64,
    /// One per shard: rung by a receiver whose batch left the shard's
    /// queue half full, to end the shard's gather gap early (see
    /// [`crate::shard`]).
    nudges: Box<[Notify]>,
}

impl NodeState {
    pub(crate) fn new(config: &SamplerConfig, max_traces: usize) -> NodeState {
        let watermark = config.limits.high_watermark;
        NodeState {
            closing: AtomicBool::new(false),
            export_blocked: AtomicUsize::new(0),
            inflight_bytes: AtomicUsize::new(0),
            buffered_traces: AtomicUsize::new(0),
            buffered_bytes: AtomicUsize::new(0),
            high_traces: AtomicUsize::new(scale(max_traces, watermark)),
            high_bytes: scale(config.limits.max_buffer_bytes, watermark),
            watermark,
            nudges: (0..config.shards.max(1)).map(|_| Notify::new()).collect(),
        }
    }

    /// Wakes shard `shard` from its gather gap (a permit is kept if it is
    /// not waiting, so a nudge during a round ends the next gap at once).
    pub fn nudge(&self, shard: usize) {
        if let Some(n) = self.nudges.get(shard) {
            n.notify_one();
        }
    }

    /// What shard `shard` waits on during its gather gap.
    pub fn nudged(&self, shard: usize) -> Option<&Notify> {
        self.nudges.get(shard)
    }

    /// `max_traces` follows the policy file when the config leaves it unset.
    pub fn set_max_traces(&self, max_traces: usize) {
        self.high_traces
            .store(scale(max_traces, self.watermark), Ordering::Relaxed);
    }

    pub fn release_inflight(&self, bytes: usize) {
        self.inflight_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Marks a shard as waiting for the exporter until the guard drops.
    pub fn export_blocked(self: &Arc<Self>) -> BlockedGuard {
        self.export_blocked.fetch_add(1, Ordering::Relaxed);
        BlockedGuard { node: self.clone() }
    }

    /// A shard's change in what it holds: `(before, now)` pairs.
    pub fn buffered(&self, traces: (usize, usize), bytes: (usize, usize)) {
        move_by(&self.buffered_traces, traces);
        move_by(&self.buffered_bytes, bytes);
    }

    /// Why a request must be refused now, if it must.
    pub(crate) fn refusal(&self) -> Option<Refused> {
        if self.closing.load(Ordering::Acquire) {
            return Some(Refused::ShuttingDown);
        }
        if self.export_blocked.load(Ordering::Relaxed) > 0 {
            return Some(Refused::ExportBacklog);
        }
        let bytes = self.buffered_bytes.load(Ordering::Relaxed)
            + self.inflight_bytes.load(Ordering::Relaxed);
        if bytes >= self.high_bytes
            || self.buffered_traces.load(Ordering::Relaxed)
                >= self.high_traces.load(Ordering::Relaxed)
        {
            return Some(Refused::BufferFull);
        }
        None
    }
}

fn scale(n: usize, by: f64) -> usize {
    ((n as f64 * by) as usize).max(1)
}

fn move_by(counter: &AtomicUsize, (before, now): (usize, usize)) {
    if now > before {
        counter.fetch_add(now - before, Ordering::Relaxed);
    } else if before > now {
        counter.fetch_sub(before - now, Ordering::Relaxed);
    }
}

pub(crate) struct BlockedGuard {
    node: Arc<NodeState>,
}

impl Drop for BlockedGuard {
    fn drop(&mut self) {
        self.node.export_blocked.fetch_sub(1, Ordering::Relaxed);
    }
}
