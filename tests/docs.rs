//! docs/configuration.md against the code: every config key the code
//! accepts is documented there, and every key documented there exists.
//!
//! The code's keys are not a list kept here. Each config type is asked
//! which keys it knows: a document with one unknown key (`zzz_probe`) at a
//! place makes serde's `deny_unknown_fields` answer "unknown field
//! `zzz_probe`, expected one of `a`, `b`, ..." with the keys of that place;
//! a place that answers otherwise (a scalar, a free map) is a leaf. Keys
//! added to a node config or to the policy file show up here by themselves.
//! `tailgate local`'s keys are its flags, read from its `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_yaml_ng::{Mapping, Value};

const PROBE: &str = "zzz_probe";

/// Parses a whole document of one role; the error's text on failure.
type Parse = dyn Fn(&str) -> Result<(), String>;

/// One step into a document: a key, and whether its value is a list.
#[derive(Clone)]
struct Step {
    key: String,
    list: bool,
}

/// The document with `leaf` at `path`.
fn document(path: &[Step], leaf: Value) -> String {
    let mut value = leaf;
    for step in path.iter().rev() {
        if step.list {
            value = Value::Sequence(vec![value]);
        }
        let mut map = Mapping::new();
        map.insert(Value::String(step.key.clone()), value);
        value = Value::Mapping(map);
    }
    serde_yaml_ng::to_string(&value).expect("a document serializes")
}

/// The keys a place knows, if it is a mapping with fixed keys.
fn keys_at(parse: &Parse, path: &[Step]) -> Option<BTreeSet<String>> {
    let mut probe = Mapping::new();
    probe.insert(Value::String(PROBE.into()), Value::Number(1.into()));
    let err = parse(&document(path, Value::Mapping(probe))).err()?;
    let marker = format!("unknown field `{PROBE}`");
    let at = err.find(&marker)?;
    let rest = &err[at + marker.len()..];
    let rest = rest.lines().next().unwrap_or("");
    let mut keys = BTreeSet::new();
    let mut parts = rest.split('`');
    parts.next();
    while let Some(key) = parts.next() {
        keys.insert(key.to_string());
        parts.next();
    }
    Some(keys)
}

/// Every key path (`a.b.c`) the role accepts, interior ones included. A
/// place whose keys are those of one of its ancestors (a sub-policy is a
/// policy) is not walked again.
fn code_keys(parse: &Parse) -> BTreeSet<String> {
    fn walk(
        parse: &Parse,
        path: &mut Vec<Step>,
        ancestors: &mut Vec<BTreeSet<String>>,
        out: &mut BTreeSet<String>,
    ) {
        let Some(keys) = keys_at(parse, path) else {
            return;
        };
        if ancestors.contains(&keys) || path.len() > 8 {
            return;
        }
        ancestors.push(keys.clone());
        for key in keys {
            let mut step = Step { key, list: false };
            path.push(step.clone());
            let mut probe = Mapping::new();
            probe.insert(Value::String(PROBE.into()), Value::Number(1.into()));
            let wants_list = parse(&document(path, Value::Mapping(probe)))
                .err()
                .is_some_and(|e| e.contains("expected a sequence"));
            if wants_list {
                step.list = true;
                path.pop();
                path.push(step);
            }
            out.insert(
                path.iter()
                    .map(|s| s.key.as_str())
                    .collect::<Vec<_>>()
                    .join("."),
            );
            walk(parse, path, ancestors, out);
            path.pop();
        }
        ancestors.pop();
    }
    let mut out = BTreeSet::new();
    walk(parse, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

/// A row of a key table: the key, and the block its type refers to.
struct Row {
    key: String,
    block: Option<String>,
}

/// The key tables of docs/configuration.md, by the name in their
/// `<!-- keys: NAME -->` mark.
fn doc_tables() -> BTreeMap<String, Vec<Row>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md");
    let mut tables: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("<!-- keys: ")
            .and_then(|r| r.strip_suffix(" -->"))
        {
            assert!(!tables.contains_key(name), "two key tables named {name:?}");
            tables.insert(name.to_string(), Vec::new());
            current = Some(name.to_string());
            continue;
        }
        let Some(name) = &current else { continue };
        if !line.starts_with('|') {
            if !tables[name].is_empty() {
                current = None;
            }
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(first), Some(kind)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(key) = first.strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
            continue; // the header and its rule
        };
        let block = kind
            .split_once('[')
            .and_then(|(_, r)| r.split_once(" block]"))
            .map(|(b, _)| b.to_string());
        tables.get_mut(name).expect("current table").push(Row {
            key: key.to_string(),
            block,
        });
    }
    tables
}

/// The key paths a documented table stands for: its rows, the blocks they
/// refer to under them, and every prefix. A block already being expanded
/// (a policy's sub-policies) is not expanded again.
fn doc_keys(tables: &BTreeMap<String, Vec<Row>>, table: &str) -> BTreeSet<String> {
    fn expand(
        tables: &BTreeMap<String, Vec<Row>>,
        table: &str,
        prefix: &str,
        stack: &mut Vec<String>,
        out: &mut BTreeSet<String>,
    ) {
        let rows = tables
            .get(table)
            .unwrap_or_else(|| panic!("docs/configuration.md has no key table {table:?}"));
        stack.push(table.to_string());
        for row in rows {
            let full = if prefix.is_empty() {
                row.key.clone()
            } else {
                format!("{prefix}.{}", row.key)
            };
            let mut at = 0;
            while let Some(dot) = full[at..].find('.') {
                out.insert(full[..at + dot].to_string());
                at += dot + 1;
            }
            out.insert(full.clone());
            if let Some(block) = &row.block
                && !stack.contains(block)
            {
                expand(tables, block, &full, stack, out);
            }
        }
        stack.pop();
    }
    let mut out = BTreeSet::new();
    expand(tables, table, "", &mut Vec::new(), &mut out);
    out
}

fn assert_same(role: &str, code: &BTreeSet<String>, docs: &BTreeSet<String>) {
    let missing: Vec<_> = code.difference(docs).collect();
    let unknown: Vec<_> = docs.difference(code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md and the code disagree on the keys of {role}:\n  \
         in the code, not documented: {missing:?}\n  \
         documented, not in the code: {unknown:?}"
    );
}

fn serde_parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<(), String> {
    serde_yaml_ng::from_str::<T>(text)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn every_sampler_key_is_documented_and_every_documented_one_exists() {
    let code = code_keys(&serde_parse::<sampler::SamplerConfig>);
    assert!(
        code.contains("limits.max_traces"),
        "the probe found {code:?}"
    );
    assert_same("sampler", &code, &doc_keys(&doc_tables(), "sampler"));
}

#[test]
fn every_lb_key_is_documented_and_every_documented_one_exists() {
    let code = code_keys(&serde_parse::<lb_exporter::LbConfig>);
    assert!(
        code.contains("resolver.dns.hostname"),
        "the probe found {code:?}"
    );
    assert_same("lb", &code, &doc_keys(&doc_tables(), "lb"));
}

#[test]
fn every_policy_file_key_is_documented_and_every_documented_one_exists() {
    let parse = |text: &str| {
        policy::PolicyFile::parse(text, "policy.yaml")
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let code = code_keys(&parse);
    assert!(
        code.contains("policies.latency.threshold_ms")
            && code.contains("policies.and.and_sub_policy"),
        "the probe found {code:?}"
    );
    assert_same(
        "the policy file",
        &code,
        &doc_keys(&doc_tables(), "policy-file"),
    );
}

#[test]
fn every_flag_of_tailgate_local_is_documented_and_every_documented_one_exists() {
    let out = Command::new(env!("CARGO_BIN_EXE_tailgate"))
        .args(["local", "--help"])
        .output()
        .expect("tailgate local --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // Option lines start with the flag: `  -h, --help`, `      --samplers <N>`.
    let code: BTreeSet<String> = help
        .lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .filter_map(|line| {
            let flag = line.split_whitespace().find(|w| w.starts_with("--"))?;
            Some(flag.trim_end_matches(',').to_string())
        })
        .filter(|flag| flag != "--help" && flag != "--version")
        .collect();
    assert!(code.contains("--samplers"), "the help listed {code:?}");
    assert_same("tailgate local", &code, &doc_keys(&doc_tables(), "local"));
}

#[test]
fn every_key_table_is_reached_from_a_role() {
    let tables = doc_tables();
    let mut reached = BTreeSet::new();
    for role in ["sampler", "lb", "local", "policy-file"] {
        reached.insert(role.to_string());
        let mut todo = vec![role.to_string()];
        while let Some(t) = todo.pop() {
            for row in &tables[&t] {
                if let Some(b) = &row.block
                    && reached.insert(b.clone())
                {
                    todo.push(b.clone());
                }
            }
        }
    }
    let orphans: Vec<_> = tables.keys().filter(|t| !reached.contains(*t)).collect();
    assert!(
        orphans.is_empty(),
        "key tables no role refers to: {orphans:?}"
    );
}

#[test]
fn the_probe_reads_serdes_unknown_field_errors() {
    // The mechanism itself, on a type made here: two keys, one nested.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        depth: u32,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        many: Vec<Inner>,
    }
    let keys = code_keys(&serde_parse::<Outer>);
    let expected: BTreeSet<String> = ["name", "inner", "inner.depth", "many", "many.depth"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(keys, expected);
}

#[test]
fn every_policy_file_shown_in_the_docs_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("docs/") {
        let path = entry.expect("a docs entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a docs page");
        for block in text.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap_or("");
            if !block.lines().any(|l| l.starts_with("policies:")) {
                continue;
            }
            if let Err(e) = policy::PolicyFile::parse(block, &path.display().to_string()) {
                panic!(
                    "a policy file in {} does not load: {e}\n{block}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "no policy file found in docs/");
}
