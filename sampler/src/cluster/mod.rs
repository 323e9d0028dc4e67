//! The sampler tier as a cluster: samplers resolve the same member set as
//! the LBs and build the same ring ([`Ownership`]), so they agree on who
//! owns each trace, and converge on it themselves. Agents reach different
//! LB replicas, so an LB-side memory of where traces went cannot keep them
//! whole; the samplers can:
//!
//! - **Stray spans** (a client sent spans of a trace this node neither
//!   holds, nor owns, nor has a decision for) go to the owner through the
//!   load-balancing exporter, marked `x-tailgate-forwarded: 1`; a forwarded
//!   span is never forwarded again. When the owner cannot be reached the
//!   node keeps the trace (see `Shard::forward_strays`).
//!   Stray log records (a client's records of such a trace) go the same
//!   way, through the logs twin of the forwarder, with the same mark.
//! - **Redistribution**: when the member set changes, the [`mover`] pushes
//!   the traces this node holds but no longer owns to their new owners,
//!   marked `x-tailgate-handover: <age-ms>` (ages, not instants: the nodes'
//!   clocks are not comparable), then its remembered decisions for traces
//!   that now belong elsewhere (`x-tailgate-decisions: 1`, body in
//!   [`wire`]). In the background, paced to a byte rate, never holding a
//!   shard for more than one bounded take.
//! - **Hand-over at shutdown**: the same pushes, to the owners under the
//!   ring without this node, bounded by a deadline instead of a rate; what
//!   is not handed over in time is decided here.
//!
//! Every span passed on leaves this node's books as
//! `tailgate_spans_handed_over_total{reason}` (`stray`, `rebalance`,
//! `shutdown`), and enters the receiver's as received.

pub(crate) mod fleet;
pub(crate) mod mover;
pub mod ownership;
pub(crate) mod peer;
pub(crate) mod wire;

use std::sync::Arc;

use lb_exporter::resolver::{self, Membership};
use lb_exporter::{LbExporter, Member, MemberSet};
use proto::receiver::{ClusterMark, FORWARDED_HEADER};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::ownership::Ownership;
use crate::config::ClusterConfig;
use crate::error::SamplerError;

/// What the receivers' sink, the shards and the mover share.
pub(crate) struct ClusterShared {
    /// The ring as this node sees it, replaced on every membership change.
    pub ownership: watch::Receiver<Arc<Ownership>>,
    /// Forwards stray spans to their owners (marked as forwarded).
    pub forwarder: LbExporter,
    /// Sends log records to their traces' owners (marked as forwarded):
    /// stray records, and those of traces handed over (the logs twin of
    /// `forwarder`, on the same member set).
    pub logs_forwarder: LbExporter,
    /// Signalled when a shard kept spans of a trace it does not own (the
    /// owner was unreachable), so the mover offers them again.
    pub kept_unowned: Notify,
}

/// The cluster's running parts: the resolver, the ownership it feeds, the
/// forwarding exporter.
pub(crate) struct ClusterRuntime {
    pub shared: Arc<ClusterShared>,
    pub config: ClusterConfig,
    membership: Option<Membership>,
    /// Whether this node is ready: while it is, it is on its own ring
    /// whatever DNS says yet.
    ready: watch::Sender<bool>,
    follow: JoinHandle<()>,
}

impl ClusterRuntime {
    /// Starts the resolver and the forwarding exporter. Needs a runtime.
    pub fn start(config: &ClusterConfig, node: &str) -> Result<ClusterRuntime, SamplerError> {
        let me = config.self_member()?;
        let membership =
            resolver::start(&config.resolver, node).map_err(|e| SamplerError::Cluster {
                node: node.to_owned(),
                message: format!("starting the resolver: {e}"),
            })?;
        let mut forward = config.forward.clone();
        let (name, value) = ClusterMark::Forwarded.header();
        debug_assert_eq!(name, FORWARDED_HEADER);
        forward.headers.insert(name.to_owned(), value);
        let forwarder = LbExporter::start(&forward, node, membership.subscribe()).map_err(|e| {
            SamplerError::Cluster {
                node: node.to_owned(),
                message: format!("starting the forwarding exporter: {e}"),
            }
        })?;
        // Marked like stray spans: a sampler holds the records it is sent,
        // never forwards them again (no loops, whatever the rings say).
        let logs_forwarder = LbExporter::start_logs(&forward, node, membership.subscribe())
            .map_err(|e| SamplerError::Cluster {
                node: node.to_owned(),
                message: format!("starting the logs forwarding exporter: {e}"),
            })?;
        let members = membership.subscribe();
        let initial = Ownership::new(members.borrow().clone(), me.clone());
        tracing::info!(node, me = %me, members = ?initial.members().members(), "cluster membership");
        let (tx, rx) = watch::channel(Arc::new(initial));
        let (ready, ready_rx) = watch::channel(false);
        let follow = tokio::spawn(follow(members, ready_rx, me, tx, node.to_owned()));
        Ok(ClusterRuntime {
            shared: Arc::new(ClusterShared {
                ownership: rx,
                forwarder,
                logs_forwarder,
                kept_unowned: Notify::new(),
            }),
            config: config.clone(),
            membership: Some(membership),
            ready,
            follow,
        })
    }

    /// Tells the ownership whether this node is ready (serving, not
    /// shutting down). A ready node counts itself as a member: a sampler
    /// restarted on the same address owns its share at once, instead of
    /// bouncing its traces to others until DNS lists it again.
    pub fn set_ready(&self, ready: bool) {
        self.ready.send_replace(ready);
    }

    /// Delivers the strays still queued by `deadline`, stops resolving.
    pub async fn stop(mut self, deadline: Instant) {
        let (report, logs) = tokio::join!(
            self.shared.forwarder.shutdown(deadline),
            self.shared.logs_forwarder.shutdown(deadline)
        );
        if logs.dropped_spans > 0 {
            tracing::warn!(
                records = logs.dropped_spans,
                "log records of handed-over traces not sent by the deadline, dropped"
            );
        }
        if report.dropped_spans > 0 {
            tracing::warn!(
                spans = report.dropped_spans,
                "stray spans not forwarded by the deadline, dropped"
            );
        }
        if let Some(membership) = self.membership.take() {
            membership.stop().await;
        }
        self.follow.abort();
    }
}

/// Rebuilds the ownership for every member set the resolver publishes, and
/// whenever this node's readiness changes: the ring is over the resolved
/// set, plus this node while it is ready.
async fn follow(
    mut members: watch::Receiver<MemberSet>,
    mut ready: watch::Receiver<bool>,
    me: Member,
    tx: watch::Sender<Arc<Ownership>>,
    node: String,
) {
    let ring_members = metrics::gauge!("tailgate_ownership_members", "node" => node.clone());
    let on_ring = metrics::gauge!("tailgate_ownership_self", "node" => node.clone());
    metrics::describe_gauge!(
        "tailgate_ownership_members",
        "Members on the ring this sampler decides ownership by: the resolved set, plus itself while ready."
    );
    metrics::describe_gauge!(
        "tailgate_ownership_self",
        "1 while this sampler is on its own ring, else 0."
    );
    let mut resolved = members.borrow_and_update().clone();
    let mut is_ready = *ready.borrow_and_update();
    let mut current = tx.borrow().members();
    loop {
        let set = with_self(&resolved, &me, is_ready);
        if set != current {
            current = set.clone();
            let ownership = Ownership::new(set, me.clone());
            tracing::info!(
                node,
                members = ?ownership.members().members(),
                member = ownership.is_member(),
                ready = is_ready,
                "ring changed"
            );
            ring_members.set(ownership.members().len() as f64);
            on_ring.set(if ownership.is_member() { 1.0 } else { 0.0 });
            tx.send_replace(Arc::new(ownership));
        }
        tokio::select! {
            changed = members.changed() => {
                if changed.is_err() {
                    return;
                }
                let set = members.borrow_and_update().clone();
                // Resolvers never publish an empty set after a good answer.
                if !set.is_empty() {
                    resolved = set;
                }
            }
            changed = ready.changed() => {
                if changed.is_err() {
                    return;
                }
                is_ready = *ready.borrow_and_update();
            }
        }
    }
}

/// The set this node builds its ring over: the resolved set, and itself
/// while ready. Not ready and nothing resolved: empty (no ring, which owns
/// every trace).
fn with_self(resolved: &MemberSet, me: &Member, ready: bool) -> MemberSet {
    if ready {
        resolved
            .members()
            .iter()
            .cloned()
            .chain(std::iter::once(me.clone()))
            .collect()
    } else {
        resolved.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> MemberSet {
        names.iter().map(|n| Member::parse(n).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_ready_node_is_on_its_own_ring_whatever_dns_says_yet() {
        let me = Member::parse("10.0.0.2:4317").unwrap();
        let (members_tx, members) = watch::channel(MemberSet::default());
        let (ready_tx, ready) = watch::channel(false);
        let (tx, mut rx) =
            watch::channel(Arc::new(Ownership::new(MemberSet::default(), me.clone())));
        let task = tokio::spawn(follow(members, ready, me.clone(), tx, "follow".into()));
        // DNS does not list this node yet (it was just restarted).
        members_tx.send_replace(set(&["10.0.0.1:4317"]));
        rx.changed().await.unwrap();
        assert!(!rx.borrow_and_update().is_member(), "not ready: DNS's view");
        ready_tx.send_replace(true);
        rx.changed().await.unwrap();
        let now = rx.borrow_and_update().clone();
        assert!(now.is_member());
        assert_eq!(now.members(), set(&["10.0.0.1:4317", "10.0.0.2:4317"]));
        // DNS catching up changes nothing.
        members_tx.send_replace(set(&["10.0.0.1:4317", "10.0.0.2:4317"]));
        // Shutting down: no longer ready; DNS still lists it, so it stays
        // on the ring until DNS drops it, as before.
        ready_tx.send_replace(false);
        members_tx.send_replace(set(&["10.0.0.1:4317"]));
        rx.changed().await.unwrap();
        let after = rx.borrow_and_update().clone();
        assert!(!after.is_member());
        assert_eq!(after.members(), set(&["10.0.0.1:4317"]));
        task.abort();
    }
}
