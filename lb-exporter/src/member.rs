//! Member identity: the `host:port` string a resolver yields, and sets of them.
//!
//! The ring hashes this string, so it must be spelt the same way on every
//! node: the DNS resolver writes `IP:port` (IPv6 in brackets, as `SocketAddr`
//! prints it), the static resolver takes the strings as configured.

use std::fmt;
use std::sync::Arc;

/// One export target, named `host:port`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member(Arc<str>);

impl Member {
    /// Checks that `name` is `host:port` (host non-empty, IPv6 hosts in
    /// brackets, port 1 to 65535).
    pub fn parse(name: &str) -> Result<Member, MemberError> {
        let invalid = |why: &'static str| MemberError {
            member: name.to_owned(),
            why,
        };
        let (host, port) = name
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected host:port"))?;
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(invalid("an IPv6 host must be in brackets, as [::1]:4317"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(invalid("the host has a space or a slash"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Member(name.into())),
            _ => Err(invalid("the port is not a number from 1 to 65535")),
        }
    }

    /// A member from a socket address, spelt as the DNS resolver spells it.
    pub fn from_addr(addr: std::net::SocketAddr) -> Member {
        Member(addr.to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The OTLP/gRPC endpoint of this member.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.0)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Member({})", self.0)
    }
}

/// A member name that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member {member:?}: {why}")]
pub struct MemberError {
    pub member: String,
    pub why: &'static str,
}

/// A set of members, sorted and without duplicates, so two sets with the same
/// members compare equal whatever order they were learnt in. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct MemberSet(Arc<[Member]>);

impl MemberSet {
    pub fn members(&self) -> &[Member] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, member: &Member) -> bool {
        self.0.binary_search(member).is_ok()
    }

    /// Members in `self` but not in `other`.
    pub fn difference<'a>(&'a self, other: &'a MemberSet) -> impl Iterator<Item = &'a Member> {
        self.0.iter().filter(|m| !other.contains(m))
    }
}

impl FromIterator<Member> for MemberSet {
    fn from_iter<I: IntoIterator<Item = Member>>(iter: I) -> Self {
        let mut members: Vec<Member> = iter.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        MemberSet(members.into())
    }
}

impl fmt::Debug for MemberSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(Member::as_str))
            .finish()
    }
}

impl fmt::Display for MemberSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(m.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_names_parse_and_others_do_not() {
        for ok in [
            "sampler-0.samplers:4317",
            "10.0.0.1:4317",
            "[::1]:4317",
            "a:1",
        ] {
            assert_eq!(Member::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "sampler",
            ":4317",
            "host:",
            "host:0",
            "host:70000",
            "::1:4317",
            "a b:1",
            "h/x:1",
        ] {
            assert!(Member::parse(bad).is_err(), "{bad}");
        }
        let e = Member::parse("host:x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "member \"host:x\": the port is not a number from 1 to 65535"
        );
    }

    #[test]
    fn addresses_are_spelt_with_brackets_for_ipv6() {
        let v4 = Member::from_addr("10.1.2.3:4317".parse().unwrap());
        let v6 = Member::from_addr("[fd00::1]:4317".parse().unwrap());
        assert_eq!(v4.as_str(), "10.1.2.3:4317");
        assert_eq!(v6.as_str(), "[fd00::1]:4317");
        assert_eq!(v6.endpoint(), "http://[fd00::1]:4317");
    }

    #[test]
    fn sets_are_sorted_and_deduplicated_whatever_the_input_order() {
        let m = |s| Member::parse(s).unwrap();
        let a: MemberSet = [m("b:1"), m("a:1"), m("b:1")].into_iter().collect();
        let b: MemberSet = [m("a:1"), m("b:1")].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a:1,b:1");
        let c: MemberSet = [m("a:1"), m("c:1")].into_iter().collect();
        assert_eq!(a.difference(&c).collect::<Vec<_>>(), [&m("b:1")]);
    }
}
