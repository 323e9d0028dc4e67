//! The node configs as the binary reads them: `tailgate lb` and `tailgate
//! sampler` at startup, and `tailgate config check` / `config print`,
//! which load them the same way without starting a node.

use std::path::Path;

use lb_exporter::LbConfig;
use sampler::SamplerConfig;
use serde_yaml_ng::Value;

use crate::config::{self, ConfigError, Loaded};

/// A node role, as `--role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Lb,
    Sampler,
}

/// Exit code for a bad configuration (sysexits' EX_USAGE).
const EXIT_USAGE: i32 = 64;

/// Printed in place of a secret.
const REDACTED: &str = "<redacted>";

/// The LB's config: its own keys, or a whole Collector configuration whose
/// `exporters.loadbalancing` block is used.
pub fn load_lb(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Loaded<LbConfig>, ConfigError> {
    config::load_with(file, env, sets, Some(from_collector))
}

/// The sampler's config.
pub fn load_sampler(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Loaded<SamplerConfig>, ConfigError> {
    config::load_with(file, env, sets, None)
}

fn from_collector(
    root: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Value, Vec<String>)>, String> {
    match lb_exporter::collector::from_collector(root, env) {
        Ok(None) => Ok(None),
        Ok(Some(found)) => {
            let mut notes = vec![format!(
                "using exporters.{} of a Collector configuration",
                found.exporter
            )];
            notes.extend(found.notes);
            Ok(Some((found.config, notes)))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `tailgate config check`: loads the config as the node would and runs
/// every check it runs before binding a port (a sampler's policy file
/// included). The output, and 0 or 64.
pub fn check(
    role: Role,
    file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> (String, i32) {
    let fail = |message: String| (format!("tailgate: {message}\n"), EXIT_USAGE);
    let notes = match role {
        Role::Lb => {
            let loaded = match load_lb(Some(file), env, sets) {
                Ok(l) => l,
                Err(e) => return fail(e.to_string()),
            };
            if let Err(e) = lb_exporter::Lb::check(&loaded.config) {
                return fail(e.to_string());
            }
            loaded.notes
        }
        Role::Sampler => {
            let loaded = match load_sampler(Some(file), env, sets) {
                Ok(l) => l,
                Err(e) => return fail(e.to_string()),
            };
            match sampler::Sampler::check(&loaded.config) {
                Ok(policy_notes) => policy_notes
                    .into_iter()
                    .map(|n| format!("policy file {}: {n}", loaded.config.policy_file.display()))
                    .collect(),
                Err(e) => return fail(e.to_string()),
            }
        }
    };
    let mut out = format!("{}: ok\n", file.display());
    for note in notes {
        out.push_str(&format!("note: {note}\n"));
    }
    (out, 0)
}

/// `tailgate config print`: the config after the file, the environment and
/// `--set`, every key with its value, secrets redacted. The output, and 0
/// or 64.
pub fn print(
    role: Role,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> (String, i32) {
    let value = match role {
        Role::Lb => load_lb(file, env, sets).map(|l| serde_yaml_ng::to_value(l.config)),
        Role::Sampler => load_sampler(file, env, sets).map(|l| serde_yaml_ng::to_value(l.config)),
    };
    let mut value = match value {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return (format!("tailgate: {e}\n"), 1),
        Err(e) => return (format!("tailgate: {e}\n"), EXIT_USAGE),
    };
    redact(&mut value);
    match serde_yaml_ng::to_string(&value) {
        Ok(text) => (text, 0),
        Err(e) => (format!("tailgate: {e}\n"), 1),
    }
}

/// Replaces the values of every `headers` map (API keys, bearer tokens go
/// there) with [`REDACTED`]. Tokens themselves are never in a config:
/// `receiver.auth` names the file or variable that holds them.
fn redact(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                if k.as_str() == Some("headers")
                    && let Value::Mapping(headers) = v
                {
                    for (_, secret) in headers.iter_mut() {
                        *secret = Value::String(REDACTED.into());
                    }
                } else {
                    redact(v);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_redacted_at_any_depth_and_nothing_else() {
        let mut v: Value = serde_yaml_ng::from_str(
            "node: n\nexport:\n  headers:\n    x-api-key: s3cret\ncluster:\n  forward:\n    headers: {authorization: Bearer t0ken}\n",
        )
        .unwrap();
        redact(&mut v);
        let text = serde_yaml_ng::to_string(&v).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("t0ken"),
            "{text}"
        );
        assert!(text.contains("x-api-key: <redacted>"), "{text}");
        assert!(text.contains("node: n"), "{text}");
    }
}
