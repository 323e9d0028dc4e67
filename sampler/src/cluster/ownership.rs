//! Which traces this node owns: the LBs' ring over the member set, and this
//! node's own name on it. Pure: the same member set gives the same owner
//! here as on every LB ([`Ring`] is order-independent).

use lb_exporter::{Member, MemberSet, Ring};
use proto::view::TraceId;

/// The ring as this node sees it, with itself located on it.
#[derive(Clone)]
pub struct Ownership {
    ring: Option<Ring>,
    me: Member,
    /// This node's index among the ring's members, when it is one.
    me_index: Option<usize>,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("me", &self.me)
            .field("members", &self.members().members())
            .field("member", &self.me_index.is_some())
            .finish()
    }
}

impl Ownership {
    /// Ownership over `members` for the node named `me`. An empty set (no
    /// resolver answer yet) has no ring.
    pub fn new(members: MemberSet, me: Member) -> Ownership {
        let ring = Ring::new(members).ok();
        let me_index = ring
            .as_ref()
            .and_then(|r| r.members().members().binary_search(&me).ok());
        Ownership { ring, me, me_index }
    }

    /// This node's member name.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The members on the ring (empty without one).
    pub fn members(&self) -> MemberSet {
        self.ring
            .as_ref()
            .map(|r| r.members().clone())
            .unwrap_or_default()
    }

    /// Whether this node is on the ring.
    pub fn is_member(&self) -> bool {
        self.me_index.is_some()
    }

    /// Whether this node owns `id`. Without a ring it owns every trace
    /// (there is nobody to give it to); off the ring (starting, or
    /// leaving) it owns none.
    pub fn owns(&self, id: &TraceId) -> bool {
        match (&self.ring, self.me_index) {
            (None, _) => true,
            (Some(ring), Some(me)) => ring.route_index(id) == me,
            (Some(_), None) => false,
        }
    }

    /// The owner of `id`, `None` without a ring.
    pub fn owner(&self, id: &TraceId) -> Option<&Member> {
        self.ring.as_ref().map(|r| r.route(id))
    }

    /// The ownership once this node has left: the ring over every other
    /// member (none when it was alone), on which it owns nothing.
    pub fn without_me(&self) -> Ownership {
        let others: MemberSet = self
            .members()
            .members()
            .iter()
            .filter(|m| **m != self.me)
            .cloned()
            .collect();
        let ring = Ring::new(others).ok();
        Ownership {
            ring,
            me: self.me.clone(),
            me_index: None,
        }
    }

    /// Whether there is anyone to hand traces to.
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Whether the ring has a member other than this node.
    pub fn has_others(&self) -> bool {
        self.ring
            .as_ref()
            .is_some_and(|r| r.members().members().iter().any(|m| *m != self.me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(s: &str) -> Member {
        Member::parse(s).unwrap()
    }

    fn set(names: &[&str]) -> MemberSet {
        names.iter().map(|n| member(n)).collect()
    }

    fn id(n: u32) -> TraceId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&n.to_le_bytes());
        b[12..].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
        TraceId(b)
    }

    const MEMBERS: [&str; 3] = ["127.0.0.2:4317", "127.0.0.3:4317", "127.0.0.4:4317"];

    #[test]
    fn every_member_agrees_with_the_lbs_ring_and_each_trace_has_one_owner() {
        let ring = Ring::new(set(&MEMBERS)).unwrap();
        // Each node learns the set in its own order.
        let views: Vec<Ownership> = MEMBERS
            .iter()
            .enumerate()
            .map(|(i, me)| {
                let mut names = MEMBERS.to_vec();
                names.rotate_left(i);
                Ownership::new(set(&names), member(me))
            })
            .collect();
        for n in 0..3000 {
            let owners: Vec<&Member> = views
                .iter()
                .filter(|v| v.owns(&id(n)))
                .map(Ownership::me)
                .collect();
            assert_eq!(owners, [ring.route(&id(n))], "trace {n}");
            assert!(
                views
                    .iter()
                    .all(|v| v.owner(&id(n)) == Some(ring.route(&id(n))))
            );
        }
    }

    #[test]
    fn a_node_off_the_ring_owns_nothing_and_without_a_ring_owns_everything() {
        let outside = Ownership::new(set(&MEMBERS), member("127.0.0.9:4317"));
        assert!(!outside.is_member());
        assert!((0..100).all(|n| !outside.owns(&id(n))));
        let alone = Ownership::new(MemberSet::default(), member("127.0.0.9:4317"));
        assert!(!alone.has_ring());
        assert!((0..100).all(|n| alone.owns(&id(n))));
        assert_eq!(alone.owner(&id(1)), None);
    }

    #[test]
    fn leaving_gives_each_trace_to_the_owner_the_lbs_will_pick_without_us() {
        let me = member(MEMBERS[0]);
        let now = Ownership::new(set(&MEMBERS), me.clone());
        let after = now.without_me();
        let lbs_after = Ring::new(set(&MEMBERS[1..])).unwrap();
        assert!(!after.is_member());
        for n in 0..2000 {
            assert_eq!(after.owner(&id(n)), Some(lbs_after.route(&id(n))));
            assert!(!after.owns(&id(n)));
            // Traces another member owned stay with it.
            if !now.owns(&id(n)) {
                assert_eq!(after.owner(&id(n)), now.owner(&id(n)));
            }
        }
        let alone = Ownership::new(set(&MEMBERS[..1]), me);
        assert!(!alone.without_me().has_ring());
    }
}
