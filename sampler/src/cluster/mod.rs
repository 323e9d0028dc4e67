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
        let members = membership.subscribe();
        let initial = Ownership::new(members.borrow().clone(), me.clone());
        tracing::info!(node, me = %me, members = ?initial.members().members(), "cluster membership");
        let (tx, rx) = watch::channel(Arc::new(initial));
        let follow = tokio::spawn(follow(members, me, tx, node.to_owned()));
        Ok(ClusterRuntime {
            shared: Arc::new(ClusterShared {
                ownership: rx,
                forwarder,
                kept_unowned: Notify::new(),
            }),
            config: config.clone(),
            membership: Some(membership),
            follow,
        })
    }

    /// Delivers the strays still queued by `deadline`, stops resolving.
    pub async fn stop(mut self, deadline: Instant) {
        let report = self.shared.forwarder.shutdown(deadline).await;
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

/// Rebuilds the ownership for every member set the resolver publishes.
async fn follow(
    mut members: watch::Receiver<MemberSet>,
    me: Member,
    tx: watch::Sender<Arc<Ownership>>,
    node: String,
) {
    while members.changed().await.is_ok() {
        let set = members.borrow_and_update().clone();
        if set.is_empty() {
            // Resolvers never publish an empty set after a good answer.
            continue;
        }
        let ownership = Ownership::new(set, me.clone());
        tracing::info!(
            node,
            members = ?ownership.members().members(),
            member = ownership.is_member(),
            "ring changed"
        );
        tx.send_replace(Arc::new(ownership));
    }
}
