//! Fleet-wide budgets over the cluster channel (see `policy::fleet` for the
//! arithmetic): every `cluster.fleet_interval` each sampler takes the demand
//! its budgeted policies saw since the last tick, pushes it to every other
//! member (`x-tailgate-counts: 1`, a few bytes per policy), and sets its
//! share of each budget from its own demand and the latest the others
//! reported. A member that has not reported within three intervals (slow,
//! gone, or just joined) is taken to have the same demand as this node:
//! the ring gives every member about the same traffic, so the share falls
//! back to 1/members, never to the whole budget. Pushes never wait on one
//! another: a member whose last push is still in flight is skipped this
//! tick. Nothing here touches ingest.
//!
//! The same tick publishes the adaptive policies' rates (standalone too).
//!
//! Counts body, protobuf written by hand like the decisions push:
//!
//! ```protobuf
//! message Counts {
//!   string member = 1;       // the sender, as the resolver lists it
//!   fixed64 fingerprint = 2; // policy::fleet::fingerprint of its budgets
//!   repeated double demand = 3; // per budget, in slot order, per second
//! }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lb_exporter::Member;
use policy::fleet;
use proto::receiver::ClusterMark;
use proto::wire::{self, Reader, Value, WireError, put_len_header};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ClusterShared;
use super::peer::Peer;
use crate::active::ActivePolicy;
use crate::config::ClusterConfig;
use crate::metrics::Metrics;

const COUNTS: &str = "Counts";
/// More budgets than this in one message is not a policy file.
const MAX_DEMANDS: usize = 4096;
/// Members remembered at most (a ring is far smaller).
const MAX_REPORTS: usize = 1024;
/// How many of an adaptive policy's keys get their own rate gauge.
pub(crate) const TOP_KEYS: usize = 10;

/// One member's report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Counts {
    pub member: String,
    pub fingerprint: u64,
    pub demand: Vec<f64>,
}

pub(crate) fn encode(counts: &Counts) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + counts.member.len() + 9 * counts.demand.len());
    put_len_header(&mut out, 1, counts.member.len());
    out.extend_from_slice(counts.member.as_bytes());
    out.push((2 << 3) | wire::FIXED64);
    out.extend_from_slice(&counts.fingerprint.to_le_bytes());
    for d in &counts.demand {
        out.push((3 << 3) | wire::FIXED64);
        out.extend_from_slice(&d.to_bits().to_le_bytes());
    }
    out
}

pub(crate) fn decode(body: &[u8]) -> Result<Counts, WireError> {
    let mut counts = Counts {
        member: String::new(),
        fingerprint: 0,
        demand: Vec::new(),
    };
    let mut reader = Reader::new(body);
    while let Some(field) = reader.next_field()? {
        match (field.number, field.value) {
            (1, _) => counts.member = wire::string(&field, COUNTS)?.to_owned(),
            (2, Value::Fixed64(v)) => counts.fingerprint = v,
            (3, Value::Fixed64(v)) if counts.demand.len() < MAX_DEMANDS => {
                counts.demand.push(f64::from_bits(v))
            }
            (2 | 3, _) => wire::expect(&field, COUNTS, wire::FIXED64)?,
            _ => {}
        }
    }
    Ok(counts)
}

/// The latest report of each member, shared by the receiver (which
/// records them) and the exchange (which reads them).
#[derive(Debug, Default)]
pub(crate) struct Board {
    reports: Mutex<HashMap<String, (Instant, Counts)>>,
}

impl Board {
    pub(crate) fn record(&self, counts: Counts, now: Instant) {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if reports.len() >= MAX_REPORTS && !reports.contains_key(&counts.member) {
            // Forget the stalest: members come and go with rescales.
            if let Some(oldest) = reports
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(m, _)| m.clone())
            {
                reports.remove(&oldest);
            }
        }
        reports.insert(counts.member.clone(), (now, counts));
    }

    /// `member`'s latest report.
    #[cfg(test)]
    pub(crate) fn latest(&self, member: &str) -> Option<Counts> {
        self.get(member).map(|(_, c)| c)
    }

    /// `member`'s latest report and when it came.
    fn get(&self, member: &str) -> Option<(Instant, Counts)> {
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports.get(member).cloned()
    }
}

/// The shares this node takes, from its own demand and the others'
/// reports: a member with no fresh report with the same budgets counts as
/// having this node's demand.
pub(crate) fn shares(mine: &[f64], fingerprint: u64, others: &[Option<&Counts>]) -> Vec<f64> {
    mine.iter()
        .enumerate()
        .map(|(i, d)| {
            let theirs: Vec<f64> = others
                .iter()
                .map(|o| {
                    o.filter(|c| c.fingerprint == fingerprint)
                        .and_then(|c| c.demand.get(i).copied())
                        .unwrap_or(*d)
                })
                .collect();
            fleet::share(*d, &theirs)
        })
        .collect()
}

/// The exchange task.
pub(crate) struct Exchange {
    pub shared: Option<Arc<ClusterShared>>,
    pub config: Option<ClusterConfig>,
    pub board: Arc<Board>,
    pub policy: watch::Receiver<Arc<ActivePolicy>>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
}

impl Exchange {
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut last = Instant::now();
        let mut peers: HashMap<Member, Peer> = HashMap::new();
        let in_flight: Arc<Mutex<HashSet<Member>>> = Arc::default();
        let mut published: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
            let now = Instant::now();
            let elapsed = now.duration_since(last).as_secs_f64().max(1e-3);
            last = now;
            let active = self.policy.borrow_and_update().clone();
            self.publish_adaptive(&active, &mut published);
            let budgets = active.file.policies.fleet_budgets();
            let state = active.state();
            let demand: Vec<f64> = budgets
                .iter()
                .map(|b| state.take_demand(b.slot) as f64 / elapsed)
                .collect();
            let fingerprint = fleet::fingerprint(budgets);
            let (Some(shared), Some(config)) = (&self.shared, &self.config) else {
                for (b, d) in budgets.iter().zip(&demand) {
                    self.metrics.fleet(&b.policy, 1.0, *d);
                }
                continue;
            };
            let ownership = shared.ownership.borrow().clone();
            let me = ownership.me().clone();
            let others: Vec<Member> = ownership
                .members()
                .members()
                .iter()
                .filter(|m| **m != me)
                .cloned()
                .collect();
            if budgets.is_empty() {
                // Nothing to share: nothing is exchanged, nothing is stale.
                self.metrics.fleet_exchange(Duration::ZERO, 0);
                continue;
            }
            // Each other member's latest report with the same budgets, and
            // its age (a member never heard from, or running another policy
            // file, counts from the start of the exchange).
            let stale = self.interval * 3;
            let latest: Vec<(Duration, Option<Counts>)> = others
                .iter()
                .map(|m| match self.board.get(&m.to_string()) {
                    Some((at, c)) if c.fingerprint == fingerprint => {
                        (now.duration_since(at), Some(c))
                    }
                    _ => (now.duration_since(started), None),
                })
                .collect();
            let oldest = latest.iter().map(|(age, _)| *age).max().unwrap_or_default();
            let reports: Vec<Option<Counts>> = latest
                .into_iter()
                .map(|(age, c)| c.filter(|_| age <= stale))
                .collect();
            self.metrics
                .fleet_exchange(oldest, reports.iter().flatten().count());
            let refs: Vec<Option<&Counts>> = reports.iter().map(Option::as_ref).collect();
            for ((b, share), d) in budgets
                .iter()
                .zip(shares(&demand, fingerprint, &refs))
                .zip(&demand)
            {
                state.set_share(b.slot, share);
                self.metrics.fleet(&b.policy, share, *d);
            }
            let body = Bytes::from(encode(&Counts {
                member: me.to_string(),
                fingerprint,
                demand,
            }));
            peers.retain(|m, _| others.contains(m));
            for member in others {
                let peer = match peers.get(&member) {
                    Some(p) => p.clone(),
                    None => match Peer::new(&member, &config.forward) {
                        Ok(p) => {
                            peers.insert(member.clone(), p.clone());
                            p
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "fleet counts: no peer");
                            continue;
                        }
                    },
                };
                {
                    let mut busy = in_flight.lock().unwrap_or_else(|e| e.into_inner());
                    if !busy.insert(member.clone()) {
                        self.metrics.fleet_push("skipped");
                        continue;
                    }
                }
                let (body, busy, metrics) = (body.clone(), in_flight.clone(), self.metrics.clone());
                let timeout = self.interval;
                tokio::spawn(async move {
                    let result = peer.push(body, ClusterMark::Counts, timeout).await;
                    metrics.fleet_push(if result.is_ok() { "ok" } else { "failed" });
                    busy.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&member);
                });
            }
        }
    }

    fn publish_adaptive(
        &self,
        active: &ActivePolicy,
        published: &mut HashMap<Arc<str>, Vec<String>>,
    ) {
        for (policy, stats) in active
            .file
            .policies
            .adaptive_stats(active.state(), TOP_KEYS)
        {
            let now: Vec<String> = stats.top.iter().map(|(k, _, _)| k.clone()).collect();
            let before = published.remove(&policy).unwrap_or_default();
            let gone: Vec<String> = before.into_iter().filter(|k| !now.contains(k)).collect();
            self.metrics.adaptive(&policy, &stats, &gone);
            published.insert(policy, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::wire::put_varint;

    use super::*;

    #[test]
    fn counts_round_trip_and_garbage_is_refused() {
        let counts = Counts {
            member: "127.0.0.10:4317".into(),
            fingerprint: 0xdead_beef_0102_0304,
            demand: vec![0.0, 1500.5, 3.25],
        };
        let body = encode(&counts);
        assert_eq!(decode(&body).unwrap(), counts);
        assert!(decode(&body[..body.len() - 3]).is_err());
        // A demand with the wrong wire type.
        let mut bad = Vec::new();
        bad.push(3 << 3);
        put_varint(&mut bad, 7);
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn silent_members_count_as_this_nodes_demand() {
        let fp = 7;
        let peer = Counts {
            member: "b".into(),
            fingerprint: fp,
            demand: vec![300.0, 0.0],
        };
        let other_file = Counts {
            fingerprint: 8,
            ..peer.clone()
        };
        // Two members who both report: shares follow demand.
        let s = shares(&[100.0, 50.0], fp, &[Some(&peer)]);
        assert!((s[0] - (0.9 * 0.25 + 0.05)).abs() < 1e-12, "{s:?}");
        assert!((s[1] - (0.9 + 0.05)).abs() < 1e-12, "{s:?}");
        // A silent member, or one with another policy file, is taken to
        // see what this node sees: an even split.
        for other in [None, Some(&other_file)] {
            let s = shares(&[100.0, 50.0], fp, &[other, other]);
            assert!(s.iter().all(|x| (x - 1.0 / 3.0).abs() < 1e-12), "{s:?}");
        }
    }

    #[test]
    fn the_board_keeps_the_latest_report_of_a_bounded_set_of_members() {
        let board = Board::default();
        let t0 = Instant::now();
        for i in 0..(MAX_REPORTS + 10) {
            board.record(
                Counts {
                    member: format!("m{i}"),
                    fingerprint: 1,
                    demand: vec![i as f64],
                },
                t0 + Duration::from_millis(i as u64),
            );
        }
        let held = board.reports.lock().unwrap().len();
        assert_eq!(held, MAX_REPORTS);
        assert!(board.get("m0").is_none());
        assert_eq!(
            board
                .get(&format!("m{}", MAX_REPORTS + 9))
                .unwrap()
                .1
                .demand,
            [(MAX_REPORTS + 9) as f64]
        );
    }
}
