//! W3C `tracestate` (https://www.w3.org/TR/trace-context/#tracestate-header)
//! and OpenTelemetry's `ot` member in it
//! (https://opentelemetry.io/docs/specs/otel/trace/tracestate-handling/).
//!
//! Validation follows the rules the Collector relies on: go.opentelemetry.io
//! `trace.ParseTraceState` for the `trace_state` policy (key and value
//! grammar, at most 32 members, no duplicate keys) and
//! pkg/sampling/w3ctracestate.go and oteltracestate.go for the `ot` member.

use crate::probabilistic::Threshold;

const MAX_MEMBERS: usize = 32;
const MAX_OT_VALUE_LEN: usize = 256;

/// The members of a valid tracestate, in order; `None` if it is not valid.
pub(crate) fn parse(input: &str) -> Option<Vec<(&str, &str)>> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in input.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(value) {
            return None;
        }
        if members.iter().any(|(k, _)| *k == key) || members.len() == MAX_MEMBERS {
            return None;
        }
        members.push((key, value));
    }
    Some(members)
}

/// The value of `key` in a valid tracestate; `None` when absent or when the
/// tracestate is not valid (as the Collector's `trace_state` policy treats it).
pub(crate) fn get<'a>(input: &'a str, key: &str) -> Option<&'a str> {
    parse(input)?
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    match key.split_once('@') {
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t[1..].iter().all(|&c| is_key_char(c))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s[1..].iter().all(|&c| is_key_char(c))
        }
        None => {
            !b.is_empty()
                && b.len() <= 256
                && b[0].is_ascii_lowercase()
                && b[1..].iter().all(|&c| is_key_char(c))
        }
    }
}

fn is_nonblank_value_char(c: u8) -> bool {
    matches!(c, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e)
}

fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    match b.split_last() {
        Some((&last, rest)) => {
            b.len() <= 256
                && is_nonblank_value_char(last)
                && rest.iter().all(|&c| c == b' ' || is_nonblank_value_char(c))
        }
        None => false,
    }
}

/// The sub-members of an `ot` value (`rv:...;th:...;k:v`), or `None` if it
/// is not valid OTel syntax.
fn parse_ot(value: &str) -> Option<Vec<(&str, &str)>> {
    if value.len() > MAX_OT_VALUE_LEN {
        return None;
    }
    value
        .split(';')
        .map(|member| {
            let (k, v) = member.split_once(':')?;
            let kb = k.as_bytes();
            let key_ok = kb.first().is_some_and(u8::is_ascii_lowercase)
                && kb[1..]
                    .iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            let value_ok = v
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
            (key_ok && value_ok).then_some((k, v))
        })
        .collect()
}

/// The OTel randomness value (`ot=rv:<14 hex digits>`, OTEP 235) of a
/// tracestate, or `None` when there is none or the tracestate (or its `ot`
/// member) is not valid, as pkg/sampling reads it.
pub(crate) fn ot_randomness(input: &str) -> Option<u64> {
    if input.is_empty() {
        return None;
    }
    let ot = get(input, "ot")?;
    let rv = parse_ot(ot)?.into_iter().find(|(k, _)| *k == "rv")?.1;
    if rv.len() != 14
        || !rv
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(rv, 16).ok()
}

/// `input` with the OTel threshold `th` recorded, or `None` when nothing
/// needs to change or the tracestate is not valid (a span's vendor data is
/// never rewritten on a guess).
///
/// As the Collector's tail sampler does
/// (internal/sampling/tracestate_manager.go), a threshold already there
/// that is more restrictive than `th` is kept: the span went through a
/// stricter sampler before, and its weight must say so. The `ot` member is
/// written `rv`, `th`, then the other sub-keys (pkg/sampling's order) and,
/// being modified, moves to the front of the list as W3C requires.
pub(crate) fn with_threshold(input: &str, th: Threshold) -> Option<String> {
    let members = parse(input)?;
    let ot = members.iter().find(|(k, _)| *k == "ot").map(|(_, v)| *v);
    let sub = match ot {
        Some(v) => parse_ot(v)?,
        None => Vec::new(),
    };
    if let Some(existing) = sub
        .iter()
        .find(|(k, _)| *k == "th")
        .and_then(|(_, v)| Threshold::parse(v))
        && existing >= th
    {
        return None;
    }
    let mut ot_value = String::new();
    let th_text = th.to_string();
    let ordered = sub
        .iter()
        .filter(|(k, _)| *k == "rv")
        .copied()
        .chain(std::iter::once(("th", th_text.as_str())))
        .chain(
            sub.iter()
                .filter(|(k, _)| *k != "rv" && *k != "th")
                .copied(),
        );
    for (i, (k, v)) in ordered.enumerate() {
        if i > 0 {
            ot_value.push(';');
        }
        ot_value.push_str(k);
        ot_value.push(':');
        ot_value.push_str(v);
    }
    if ot_value.len() > MAX_OT_VALUE_LEN {
        return None;
    }
    let mut out = format!("ot={ot_value}");
    let others: Vec<&(&str, &str)> = members.iter().filter(|(k, _)| *k != "ot").collect();
    // Adding a member to a full list drops the rightmost, as W3C says.
    let keep = if ot.is_none() && others.len() == MAX_MEMBERS {
        MAX_MEMBERS - 1
    } else {
        others.len()
    };
    for (k, v) in others.into_iter().take(keep) {
        out.push(',');
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(p: f64) -> Threshold {
        Threshold::from_percentage(p).unwrap()
    }

    #[test]
    fn randomness_is_read_from_a_valid_ot_member_only() {
        assert_eq!(ot_randomness("ot=rv:ffffffffffffff"), Some((1 << 56) - 1));
        assert_eq!(ot_randomness("ot=th:8;rv:00000000000001,a=b"), Some(1));
        assert_eq!(ot_randomness("ot=th:8"), None);
        assert_eq!(ot_randomness("ot=rv:zzzzzzzzzzzzzz"), None);
        assert_eq!(ot_randomness("ot=rv:fffffffffffff"), None);
        assert_eq!(ot_randomness("ot=not_a_valid_key$"), None);
        assert_eq!(ot_randomness(""), None);
    }

    #[test]
    fn valid_tracestates_parse_and_invalid_ones_do_not() {
        assert_eq!(
            parse("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
            Some(vec![("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")])
        );
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(parse("a=1,,b=2"), Some(vec![("a", "1"), ("b", "2")]));
        assert_eq!(parse("tenant@sys=v"), Some(vec![("tenant@sys", "v")]));
        for bad in [
            "Upper=1",
            "a",
            "a=",
            "a=1,a=2",
            "a=x=y,b",
            "1a=1",
            "a=b\tc",
            "a=b,c=\u{7f}",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let full: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse(&full.join(",")), None);
    }

    #[test]
    fn get_finds_a_member_of_a_valid_tracestate_only() {
        assert_eq!(get("a=1,b=2", "b"), Some("2"));
        assert_eq!(get("a=1,b=2", "c"), None);
        assert_eq!(get("a=1,B=2", "a"), None);
    }

    #[test]
    fn threshold_is_added_to_an_empty_tracestate() {
        assert_eq!(
            with_threshold("", th(10.0)).as_deref(),
            Some("ot=th:e6666666666666")
        );
    }

    #[test]
    fn threshold_joins_an_existing_ot_member_and_moves_it_first() {
        assert_eq!(
            with_threshold("vendor=x,ot=rv:0123456789abcd;foo:bar", th(50.0)).as_deref(),
            Some("ot=rv:0123456789abcd;th:8;foo:bar,vendor=x")
        );
        assert_eq!(
            with_threshold("vendor=x", th(50.0)).as_deref(),
            Some("ot=th:8,vendor=x")
        );
    }

    #[test]
    fn a_less_restrictive_existing_threshold_is_replaced() {
        // th:8 is 50%; 10% is more restrictive.
        assert_eq!(
            with_threshold("ot=th:8", th(10.0)).as_deref(),
            Some("ot=th:e6666666666666")
        );
    }

    #[test]
    fn a_more_restrictive_existing_threshold_is_kept() {
        // th:fd70a3d70a3d71 is 1%, stricter than 10%.
        assert_eq!(with_threshold("ot=th:fd70a3d70a3d71", th(10.0)), None);
        assert_eq!(with_threshold("ot=th:e6666666666666", th(10.0)), None);
    }

    #[test]
    fn invalid_tracestates_are_left_alone() {
        assert_eq!(with_threshold("NotValid", th(10.0)), None);
        assert_eq!(with_threshold("ot=th:zz!", th(10.0)), None);
    }

    #[test]
    fn a_full_list_drops_its_rightmost_member_for_the_ot_member() {
        let full: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let out = with_threshold(&full.join(","), th(50.0)).unwrap();
        let members = parse(&out).unwrap();
        assert_eq!(members.len(), 32);
        assert_eq!(members[0], ("ot", "th:8"));
        assert_eq!(members[31], ("k30", "v"));
    }
}
