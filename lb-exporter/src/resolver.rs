//! Membership: which members the ring is built over, from DNS (a headless
//! Service's A and AAAA records) or from a static list.
//!
//! A resolver publishes a [`MemberSet`] on a `watch` channel; the exporter
//! rebuilds its ring when the set changes. The DNS resolver asks again every
//! `interval`; an answer that fails, times out or holds no address keeps the
//! last good set (a DNS outage must not empty the ring), and is counted. A
//! and AAAA are two questions: one family failing (REFUSED, SERVFAIL, a
//! timeout) while the other answers is a good answer.
//!
//! Metrics (label `node`; `resolver` is `dns` or `static`):
//! `tailgate_lb_resolutions_total{result}` (`ok`, `partial`, `empty`,
//! `error`),
//! `tailgate_lb_membership_changes_total`, and the gauge `tailgate_lb_members`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use metrics::{Counter, Gauge};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::member::{Member, MemberError, MemberSet};

/// Where the member set comes from (the `resolver:` block): exactly one of
/// `dns: {...}` and `static: {...}`.
///
/// Read and written as a map with one of two optional keys rather than as
/// a tagged enum, so YAML needs no `!dns` tag and flag or environment
/// overrides address `resolver.dns.hostname` like any other key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ResolverKeys", into = "ResolverKeys")]
pub enum ResolverConfig {
    Dns(DnsConfig),
    Static(StaticConfig),
}

/// The `resolver:` block as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolverKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dns: Option<DnsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r#static: Option<StaticConfig>,
}

impl TryFrom<ResolverKeys> for ResolverConfig {
    type Error = ResolverError;

    fn try_from(keys: ResolverKeys) -> Result<Self, Self::Error> {
        match (keys.dns, keys.r#static) {
            (Some(d), None) => Ok(ResolverConfig::Dns(d)),
            (None, Some(s)) => Ok(ResolverConfig::Static(s)),
            (None, None) => Err(ResolverError::Source("is required")),
            (Some(_), Some(_)) => Err(ResolverError::Source("has both dns and static")),
        }
    }
}

impl From<ResolverConfig> for ResolverKeys {
    fn from(config: ResolverConfig) -> Self {
        match config {
            ResolverConfig::Dns(d) => ResolverKeys {
                dns: Some(d),
                r#static: None,
            },
            ResolverConfig::Static(s) => ResolverKeys {
                dns: None,
                r#static: Some(s),
            },
        }
    }
}

/// Members from DNS: every A and AAAA address of `hostname`, with `port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The name to resolve, e.g. the samplers' headless Service
    /// `tailgate-sampler.tailgate.svc.cluster.local.` (a trailing dot skips
    /// the search domains). Required.
    pub hostname: String,
    /// The members' OTLP/gRPC port. Default 4317.
    #[serde(default = "default_port")]
    pub port: u16,
    /// How often to resolve. Default 5 s.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The longest one resolution may take (A and AAAA, asked in parallel).
    /// Default: the smaller of 2 s and `interval`, so `interval: 1s` alone
    /// is a whole config.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Nameservers to ask, `IP` or `IP:port` (port 53 by default). Default
    /// none: the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameservers: Vec<String>,
}

fn default_port() -> u16 {
    4317
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

/// The timeout when none is set, unless the interval is shorter.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

impl DnsConfig {
    /// A config for `hostname` with every other field at its default.
    pub fn new(hostname: impl Into<String>) -> Self {
        DnsConfig {
            hostname: hostname.into(),
            port: default_port(),
            interval: default_interval(),
            timeout: None,
            nameservers: Vec::new(),
        }
    }

    /// `timeout`, or the default: the smaller of 2 s and `interval`.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval))
    }
}

/// A fixed member list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// Members as `host:port` (IPv6 in brackets). At least one. The ring
    /// hashes these strings: give every node the same spelling.
    pub members: Vec<String>,
}

/// A resolver config that cannot work, or a resolver that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("resolver {0}: set dns: {{hostname: ...}} or static: {{members: [host:port, ...]}}")]
    Source(&'static str),
    #[error("resolver.static.members: {0}")]
    Member(#[from] MemberError),
    #[error("resolver.static.members is empty: list at least one host:port")]
    NoMembers,
    #[error("resolver.dns.hostname {hostname:?}: {why}")]
    Hostname { hostname: String, why: String },
    #[error("resolver.dns.{field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("resolver.dns.nameservers: {nameserver:?} is not IP or IP:port")]
    Nameserver { nameserver: String },
    #[error("reading the system DNS configuration for {hostname:?}: {source}")]
    System {
        hostname: String,
        #[source]
        source: NetError,
    },
    #[error("the resolver must be started inside a tokio runtime")]
    NoRuntime,
}

impl ResolverError {
    /// Only reading the system configuration may work on a later try.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ResolverError::System { .. })
    }
}

impl ResolverConfig {
    /// Checks everything [`start`] would refuse, without a runtime.
    pub fn validate(&self) -> Result<(), ResolverError> {
        match self {
            ResolverConfig::Static(s) => s.member_set().map(|_| ()),
            ResolverConfig::Dns(d) => d.checked().map(|_| ()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ResolverConfig::Dns(_) => "dns",
            ResolverConfig::Static(_) => "static",
        }
    }
}

impl StaticConfig {
    fn member_set(&self) -> Result<MemberSet, ResolverError> {
        if self.members.is_empty() {
            return Err(ResolverError::NoMembers);
        }
        self.members
            .iter()
            .map(|m| Member::parse(m).map_err(ResolverError::from))
            .collect()
    }
}

impl DnsConfig {
    fn checked(&self) -> Result<(Name, Vec<SocketAddr>), ResolverError> {
        let name = Name::from_utf8(&self.hostname).map_err(|e| ResolverError::Hostname {
            hostname: self.hostname.clone(),
            why: e.to_string(),
        })?;
        if self.hostname.trim_end_matches('.').is_empty() {
            return Err(ResolverError::Hostname {
                hostname: self.hostname.clone(),
                why: "is empty".into(),
            });
        }
        let invalid = |field, why: &str| ResolverError::Invalid {
            field,
            why: why.into(),
        };
        if self.port == 0 {
            return Err(invalid("port", "must be from 1 to 65535"));
        }
        if self.interval.is_zero() {
            return Err(invalid("interval", "must be more than 0"));
        }
        let timeout = self.effective_timeout();
        if timeout.is_zero() || timeout > self.interval {
            return Err(invalid(
                "timeout",
                "must be more than 0 and at most the interval",
            ));
        }
        let nameservers = self
            .nameservers
            .iter()
            .map(|ns| {
                ns.parse::<SocketAddr>()
                    .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| ResolverError::Nameserver {
                        nameserver: ns.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok((name, nameservers))
    }
}

/// The resolver's metric handles, created once.
#[derive(Clone)]
struct Metrics {
    ok: Counter,
    partial: Counter,
    empty: Counter,
    error: Counter,
    changes: Counter,
    members: Gauge,
}

impl Metrics {
    fn new(node: &str, resolver: &'static str) -> Self {
        metrics::describe_counter!(
            "tailgate_lb_resolutions_total",
            "Member set resolutions, by result (ok, partial, empty, error); partial is one address family failing while the other answered; empty and error keep the last good set."
        );
        metrics::describe_counter!(
            "tailgate_lb_membership_changes_total",
            "Times the resolved member set changed."
        );
        metrics::describe_gauge!("tailgate_lb_members", "Members in the current set.");
        let result = |r: &'static str| {
            metrics::counter!("tailgate_lb_resolutions_total",
                "node" => node.to_owned(), "resolver" => resolver, "result" => r)
        };
        Metrics {
            ok: result("ok"),
            partial: result("partial"),
            empty: result("empty"),
            error: result("error"),
            changes: metrics::counter!("tailgate_lb_membership_changes_total",
                "node" => node.to_owned(), "resolver" => resolver),
            members: metrics::gauge!("tailgate_lb_members",
                "node" => node.to_owned(), "resolver" => resolver),
        }
    }
}

/// A running resolver: the member set, kept up to date until [`stop`].
///
/// [`stop`]: Membership::stop
pub struct Membership {
    rx: watch::Receiver<MemberSet>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Membership {
    /// A receiver of the member set; it sees every change.
    pub fn subscribe(&self) -> watch::Receiver<MemberSet> {
        self.rx.clone()
    }

    /// The member set now (empty until the first good answer).
    pub fn current(&self) -> MemberSet {
        self.rx.borrow().clone()
    }

    /// Stops resolving; the last set stays published.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "resolver task failed");
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Starts the resolver `config` describes. A static set is published before
/// this returns; a DNS resolver resolves at once, then every `interval`.
pub fn start(config: &ResolverConfig, node: &str) -> Result<Membership, ResolverError> {
    let metrics = Metrics::new(node, config.kind());
    let (stop, stop_rx) = watch::channel(false);
    match config {
        ResolverConfig::Static(s) => {
            let set = s.member_set()?;
            let mut tracker = Tracker::new(metrics);
            tracker.observe(Answer::Addresses(set.clone()));
            let (_tx, rx) = watch::channel(set);
            Ok(Membership {
                rx,
                stop,
                task: None,
            })
        }
        ResolverConfig::Dns(d) => {
            let (name, nameservers) = d.checked()?;
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| ResolverError::NoRuntime)?;
            let timeout = d.effective_timeout();
            let resolver = build_resolver(d, &nameservers)?;
            let (tx, rx) = watch::channel(MemberSet::default());
            let task = runtime.spawn(resolve_loop(
                DnsLookup {
                    resolver,
                    name,
                    port: d.port,
                    timeout: timeout.mul_f64(0.9),
                },
                d.interval,
                timeout,
                tx,
                Tracker::new(metrics),
                stop_rx,
            ));
            Ok(Membership {
                rx,
                stop,
                task: Some(task),
            })
        }
    }
}

fn build_resolver(
    config: &DnsConfig,
    nameservers: &[SocketAddr],
) -> Result<TokioResolver, ResolverError> {
    let system = |source| ResolverError::System {
        hostname: config.hostname.clone(),
        source,
    };
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(system)?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        Resolver::builder_with_config(
            HickoryConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.timeout = config.effective_timeout().mul_f64(0.9);
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(system)
}

/// An address family: which of the two questions (A, AAAA) an answer is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(member: &Member) -> Option<Family> {
        // DNS members are spelt as `SocketAddr` prints; static ones never
        // reach a partial answer.
        member
            .as_str()
            .parse::<SocketAddr>()
            .ok()
            .map(|a| if a.is_ipv4() { Family::V4 } else { Family::V6 })
    }

    fn record_type(self) -> &'static str {
        match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        }
    }
}

/// The answer to one family's question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyAnswer {
    /// At least one address.
    Addresses(Vec<Member>),
    /// NODATA or NXDOMAIN: this family has no address (a single-stack
    /// Service), which is normal.
    NoRecords,
    /// REFUSED, SERVFAIL, a timeout, an unreachable nameserver.
    Failed(String),
}

/// One resolution's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// At least one address, and both families answered.
    Addresses(MemberSet),
    /// One family answered with addresses, the other failed (dnsmasq and
    /// several corporate resolvers refuse AAAA): a good answer. The failed
    /// family keeps its addresses from the last good set, so a transient
    /// failure of one family of a dual-stack Service cannot halve the ring.
    Partial {
        addresses: MemberSet,
        failed: Family,
        error: String,
    },
    /// The name exists but has no A or AAAA record, or does not exist.
    Empty,
    /// No usable answer: both families failed, or one failed and the other
    /// has no address.
    Failed(String),
}

impl Answer {
    /// The answer to a resolution asked as two questions.
    pub fn combine(v4: FamilyAnswer, v6: FamilyAnswer) -> Answer {
        use FamilyAnswer as F;
        match (v4, v6) {
            (F::Failed(a), F::Failed(b)) => Answer::Failed(format!("A: {a}; AAAA: {b}")),
            (F::Failed(e), F::NoRecords) => Answer::Failed(format!("A: {e}; AAAA: no records")),
            (F::NoRecords, F::Failed(e)) => Answer::Failed(format!("A: no records; AAAA: {e}")),
            (F::Failed(error), F::Addresses(found)) => Answer::Partial {
                addresses: found.into_iter().collect(),
                failed: Family::V4,
                error,
            },
            (F::Addresses(found), F::Failed(error)) => Answer::Partial {
                addresses: found.into_iter().collect(),
                failed: Family::V6,
                error,
            },
            (a, b) => {
                let members: MemberSet = [a, b]
                    .into_iter()
                    .flat_map(|f| match f {
                        F::Addresses(found) => found,
                        _ => Vec::new(),
                    })
                    .collect();
                if members.is_empty() {
                    Answer::Empty
                } else {
                    Answer::Addresses(members)
                }
            }
        }
    }
}

/// The last good set, and what each new answer does to it. Pure except for
/// metrics and logs.
struct Tracker {
    last: MemberSet,
    metrics: Metrics,
    /// Whether a partial answer was logged at warn already: a resolver
    /// that always refuses AAAA would otherwise warn every interval.
    warned_partial: bool,
}

impl Tracker {
    fn new(metrics: Metrics) -> Self {
        Tracker {
            last: MemberSet::default(),
            metrics,
            warned_partial: false,
        }
    }

    /// Returns the new set if the answer changed it.
    fn observe(&mut self, answer: Answer) -> Option<MemberSet> {
        let set = match answer {
            Answer::Addresses(set) => {
                self.metrics.ok.increment(1);
                set
            }
            Answer::Partial {
                addresses,
                failed,
                error,
            } => {
                self.metrics.partial.increment(1);
                let family = failed.record_type();
                if self.warned_partial {
                    tracing::debug!(%error, family, "one address family failed; using the other");
                } else {
                    self.warned_partial = true;
                    tracing::warn!(
                        %error,
                        family,
                        "one address family failed; using the other's addresses (logged once)"
                    );
                }
                let kept = self
                    .last
                    .members()
                    .iter()
                    .filter(|m| Family::of(m) == Some(failed))
                    .cloned();
                addresses.members().iter().cloned().chain(kept).collect()
            }
            Answer::Empty => {
                self.metrics.empty.increment(1);
                tracing::warn!(
                    members = %self.last,
                    "member resolution returned no address; keeping the last good set"
                );
                return None;
            }
            Answer::Failed(error) => {
                self.metrics.error.increment(1);
                tracing::warn!(
                    %error,
                    members = %self.last,
                    "member resolution failed; keeping the last good set"
                );
                return None;
            }
        };
        if set == self.last {
            return None;
        }
        let added: Vec<&str> = set.difference(&self.last).map(Member::as_str).collect();
        let removed: Vec<&str> = self.last.difference(&set).map(Member::as_str).collect();
        tracing::info!(?added, ?removed, members = set.len(), "member set changed");
        self.metrics.changes.increment(1);
        self.metrics.members.set(set.len() as f64);
        self.last = set.clone();
        Some(set)
    }
}

/// One resolution, behind a trait so the loop's timing can be tested with
/// paused time and scripted answers.
trait Lookup: Send + Sync + 'static {
    fn resolve(&self) -> impl std::future::Future<Output = Answer> + Send;
    /// What is being resolved, for messages.
    fn target(&self) -> String;
}

struct DnsLookup {
    resolver: TokioResolver,
    name: Name,
    port: u16,
    /// Per family; a little less than the loop's, so that a family that
    /// never answers fails alone rather than the whole resolution.
    timeout: Duration,
}

impl Lookup for DnsLookup {
    async fn resolve(&self) -> Answer {
        DnsLookup::resolve(self).await
    }

    fn target(&self) -> String {
        self.name.to_string()
    }
}

impl DnsLookup {
    /// A and AAAA, asked as two questions in parallel, each within
    /// `timeout`; see [`Answer::combine`] for what one failing family means.
    async fn resolve(&self) -> Answer {
        // Ask the nameserver every time: `interval` is the refresh period,
        // not the records' TTL.
        self.resolver.clear_cache();
        let (a, aaaa) = tokio::join!(self.family(RecordType::A), self.family(RecordType::AAAA));
        Answer::combine(a, aaaa)
    }

    async fn family(&self, kind: RecordType) -> FamilyAnswer {
        let lookup = self.resolver.lookup(self.name.clone(), kind);
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(lookup)) => {
                let found: Vec<Member> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .map(|ip| Member::from_addr(SocketAddr::new(ip, self.port)))
                    .collect();
                if found.is_empty() {
                    FamilyAnswer::NoRecords
                } else {
                    FamilyAnswer::Addresses(found)
                }
            }
            Ok(Err(e)) if e.is_no_records_found() => FamilyAnswer::NoRecords,
            Ok(Err(e)) => FamilyAnswer::Failed(e.to_string()),
            Err(_) => FamilyAnswer::Failed(format!("no {kind} answer within {:?}", self.timeout)),
        }
    }
}

async fn resolve_loop<L: Lookup>(
    lookup: L,
    interval: Duration,
    timeout: Duration,
    tx: watch::Sender<MemberSet>,
    mut tracker: Tracker,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let answer = match tokio::time::timeout(timeout, lookup.resolve()).await {
            Ok(answer) => answer,
            Err(_) => Answer::Failed(format!(
                "no answer for {} within {timeout:?}",
                lookup.target()
            )),
        };
        if let Some(set) = tracker.observe(answer) {
            tx.send_replace(set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> MemberSet {
        names.iter().map(|n| Member::parse(n).unwrap()).collect()
    }

    #[test]
    fn failed_and_empty_answers_keep_the_last_good_set() {
        let mut t = Tracker::new(Metrics::new("t", "dns"));
        assert_eq!(t.observe(Answer::Empty), None);
        let a = set(&["10.0.0.1:4317", "10.0.0.2:4317"]);
        assert_eq!(t.observe(Answer::Addresses(a.clone())), Some(a.clone()));
        assert_eq!(t.observe(Answer::Failed("SERVFAIL".into())), None);
        assert_eq!(t.observe(Answer::Empty), None);
        assert_eq!(t.last, a);
        // The same set again is not a change.
        assert_eq!(t.observe(Answer::Addresses(a.clone())), None);
        let b = set(&["10.0.0.2:4317"]);
        assert_eq!(t.observe(Answer::Addresses(b.clone())), Some(b));
    }

    #[test]
    fn one_family_failing_while_the_other_answers_is_a_good_answer() {
        use FamilyAnswer as F;
        let m = |s: &str| Member::parse(s).unwrap();
        let refused = || F::Failed("REFUSED".into());
        // dnsmasq: A answers, AAAA refused.
        let a_only = Answer::combine(F::Addresses(vec![m("10.0.0.1:4317")]), refused());
        assert!(
            matches!(
                &a_only,
                Answer::Partial {
                    failed: Family::V6,
                    ..
                }
            ),
            "{a_only:?}"
        );
        let mut t = Tracker::new(Metrics::new("partial", "dns"));
        assert_eq!(t.observe(a_only), Some(set(&["10.0.0.1:4317"])));
        // NODATA on one family is a plain good answer.
        assert_eq!(
            Answer::combine(F::NoRecords, F::Addresses(vec![m("[fd00::1]:4317")])),
            Answer::Addresses(set(&["[fd00::1]:4317"]))
        );
        // Both failing, or a failure beside no address, keeps the last set.
        for (a, b) in [
            (refused(), F::Failed("SERVFAIL".into())),
            (refused(), F::NoRecords),
            (F::NoRecords, refused()),
        ] {
            let answer = Answer::combine(a, b);
            assert!(matches!(answer, Answer::Failed(_)), "{answer:?}");
            assert_eq!(t.observe(answer), None);
        }
        assert_eq!(Answer::combine(F::NoRecords, F::NoRecords), Answer::Empty);
        // Dual stack, AAAA failing for a while: its last good addresses
        // stay, the A answer is taken as it is.
        let dual = set(&["10.0.0.1:4317", "[fd00::1]:4317"]);
        assert_eq!(
            t.observe(Answer::Addresses(dual.clone())),
            Some(dual.clone())
        );
        let changed_a = Answer::combine(F::Addresses(vec![m("10.0.0.2:4317")]), refused());
        assert_eq!(
            t.observe(changed_a),
            Some(set(&["10.0.0.2:4317", "[fd00::1]:4317"]))
        );
    }

    #[test]
    fn the_default_timeout_is_the_smaller_of_two_seconds_and_the_interval() {
        let one: ResolverConfig =
            serde_json::from_str(r#"{"dns": {"hostname": "s.", "interval": "1s"}}"#).unwrap();
        assert!(
            one.validate().is_ok(),
            "interval 1s alone is a whole config"
        );
        let ResolverConfig::Dns(d) = &one else {
            unreachable!()
        };
        assert_eq!(d.effective_timeout(), Duration::from_secs(1));
        let mut d = DnsConfig::new("s.");
        d.interval = Duration::from_secs(30);
        assert_eq!(d.effective_timeout(), Duration::from_secs(2));
        d.timeout = Some(Duration::from_millis(300));
        assert_eq!(d.effective_timeout(), Duration::from_millis(300));
        // An explicit timeout longer than the interval is still refused.
        d.interval = Duration::from_millis(200);
        assert!(ResolverConfig::Dns(d).validate().is_err());
    }

    #[test]
    fn config_reads_both_kinds_with_defaults_and_refuses_unknown_keys() {
        let dns: ResolverConfig =
            serde_json::from_str(r#"{"dns": {"hostname": "samplers.test."}}"#).unwrap();
        assert_eq!(dns, ResolverConfig::Dns(DnsConfig::new("samplers.test.")));
        let ResolverConfig::Dns(d) = &dns else {
            unreachable!()
        };
        assert_eq!(
            (d.port, d.interval, d.effective_timeout()),
            (4317, Duration::from_secs(5), Duration::from_secs(2))
        );
        let full: ResolverConfig = serde_json::from_str(
            r#"{"dns": {"hostname": "s", "port": 9, "interval": "1s", "timeout": "500ms",
                "nameservers": ["127.0.0.1:5353", "::1"]}}"#,
        )
        .unwrap();
        assert!(full.validate().is_ok());
        let st: ResolverConfig =
            serde_json::from_str(r#"{"static": {"members": ["a:1", "b:2"]}}"#).unwrap();
        assert!(st.validate().is_ok());
        for bad in [
            r#"{"dns": {"hostname": "s", "intervall": "1s"}}"#,
            r#"{"static": {"members": [], "x": 1}}"#,
            r#"{"consul": {}}"#,
            r#"{"dns": {"hostname": "s"}, "static": {"members": ["a:1"]}, "x": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<ResolverConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let msg = |c: ResolverConfig| c.validate().unwrap_err().to_string();
        assert_eq!(
            msg(ResolverConfig::Static(StaticConfig { members: vec![] })),
            "resolver.static.members is empty: list at least one host:port"
        );
        assert!(
            msg(ResolverConfig::Static(StaticConfig {
                members: vec!["nohost".into()]
            }))
            .contains("expected host:port")
        );
        let dns = |f: fn(&mut DnsConfig)| {
            let mut d = DnsConfig::new("s.test.");
            f(&mut d);
            msg(ResolverConfig::Dns(d))
        };
        assert!(dns(|d| d.timeout = Some(Duration::from_secs(9))).contains("resolver.dns.timeout"));
        assert!(dns(|d| d.port = 0).contains("resolver.dns.port"));
        assert!(dns(|d| d.hostname = String::new()).contains("hostname"));
        assert!(dns(|d| d.nameservers = vec!["ns1".into()]).contains("\"ns1\""));
        let parse = |json| {
            serde_json::from_str::<ResolverConfig>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(parse("{}").starts_with("resolver is required"));
        assert!(
            parse(r#"{"dns": {"hostname": "s"}, "static": {"members": ["a:1"]}}"#)
                .starts_with("resolver has both")
        );
        // And back: the same keys.
        let json = serde_json::to_string(&ResolverConfig::Dns(DnsConfig::new("s."))).unwrap();
        assert!(json.starts_with(r#"{"dns":{"hostname":"s.""#), "{json}");
    }

    /// Answers from a script (then the last answer again), each after
    /// `delay`; counts calls.
    struct FakeLookup {
        script: std::sync::Mutex<Vec<Answer>>,
        delay: Duration,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Lookup for FakeLookup {
        async fn resolve(&self) -> Answer {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let mut script = self.script.lock().unwrap();
            if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            }
        }

        fn target(&self) -> String {
            "fake.".into()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_resolves_at_once_then_every_interval_and_a_slow_answer_is_a_failure() {
        let a = set(&["10.0.0.1:4317"]);
        let b = set(&["10.0.0.2:4317"]);
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lookup = FakeLookup {
            script: std::sync::Mutex::new(vec![
                Answer::Addresses(a.clone()),
                Answer::Addresses(b.clone()),
            ]),
            delay: Duration::from_millis(100),
            calls: calls.clone(),
        };
        let (tx, mut rx) = watch::channel(MemberSet::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(resolve_loop(
            lookup,
            Duration::from_secs(5),
            Duration::from_secs(1),
            tx,
            Tracker::new(Metrics::new("loop", "dns")),
            stop_rx,
        ));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), a, "resolved at once");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), b);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Ten more intervals: ten more calls, no change.
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 12);
        assert!(!rx.has_changed().unwrap());
        stop.send_replace(true);
        task.await.unwrap();

        // An answer slower than the timeout keeps the last good set.
        let mut tracker = Tracker::new(Metrics::new("loop-slow", "dns"));
        tracker.observe(Answer::Addresses(a.clone()));
        let slow = FakeLookup {
            script: std::sync::Mutex::new(vec![Answer::Addresses(b.clone())]),
            delay: Duration::from_secs(3),
            calls: std::sync::Arc::default(),
        };
        let (tx, rx) = watch::channel(a.clone());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(resolve_loop(
            slow,
            Duration::from_secs(5),
            Duration::from_secs(1),
            tx,
            tracker,
            stop_rx,
        ));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(*rx.borrow(), a, "timed-out answers never replaced the set");
        stop.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_static_set_is_published_before_start_returns() {
        let config = ResolverConfig::Static(StaticConfig {
            members: vec!["b:1".into(), "a:1".into(), "b:1".into()],
        });
        let m = start(&config, "static-test").unwrap();
        assert_eq!(m.current(), set(&["a:1", "b:1"]));
        m.stop().await;
    }
}
