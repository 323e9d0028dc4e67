//! Configuration loading for every node: a YAML file, then environment
//! variables, then `--set` flags, each overriding the one before, deserialized
//! into the node's config struct (which denies unknown keys).
//!
//! Any key can be overridden, as with the OTel Collector's `--set`:
//! `--set receiver.grpc=127.0.0.1:4317`, or the environment variable
//! `TAILGATE__RECEIVER__GRPC=127.0.0.1:4317` (prefix `TAILGATE__`, `__`
//! between path segments, case-insensitive). Values are YAML scalars or flow
//! collections (`[a, b]`).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

/// Environment variables with this prefix override config keys.
pub const ENV_PREFIX: &str = "TAILGATE__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{origin}: `{key}` is not a key path (expected a.b.c=value)")]
    BadOverride { origin: String, key: String },
}

/// Loads `T` from an optional YAML file, then `env` (only the variables that
/// start with [`ENV_PREFIX`]), then `sets` (`a.b.c=value`).
#[cfg(test)]
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<T, ConfigError> {
    load_with(file, env, sets, None).map(|loaded| loaded.config)
}

/// A file in another tool's format, turned into the role's own keys (the
/// LB takes a whole Collector configuration): `Ok(None)` when the file is
/// in the role's own format; otherwise the keys, and notes to show.
pub type Convert =
    fn(&Value, &dyn Fn(&str) -> Option<String>) -> Result<Option<(Value, Vec<String>)>, String>;

/// A config as loaded, with what the conversion of its file had to say.
#[derive(Debug)]
pub struct Loaded<T> {
    pub config: T,
    pub notes: Vec<String>,
}

/// [`load`], where the file may also be in the format `convert` reads
/// (its environment references resolved from `env`).
pub fn load_with<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
    convert: Option<Convert>,
) -> Result<Loaded<T>, ConfigError> {
    let (source, origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            path.display().to_string(),
        ),
        None => (String::new(), "configuration".to_owned()),
    };
    let mut root: Value = if source.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        serde_yaml_ng::from_str(&source).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            message: e.to_string(),
        })?
    };
    let all_env: Vec<(String, String)> = env.into_iter().collect();
    let mut notes = Vec::new();
    let mut converted = false;
    if let Some(convert) = convert {
        let lookup = |name: &str| {
            all_env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match convert(&root, &lookup) {
            Ok(Some((value, said))) => {
                root = value;
                notes = said;
                converted = true;
            }
            Ok(None) => {}
            Err(message) => {
                return Err(ConfigError::Invalid { origin, message });
            }
        }
    }
    let mut overridden = false;
    let mut env: Vec<(String, String)> = all_env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .cloned()
        .collect();
    env.sort();
    for (key, value) in env {
        let path: Vec<String> = key[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        set(&mut root, &path, &value, &key)?;
        overridden = true;
    }
    for item in sets {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ConfigError::BadOverride {
                origin: "--set".into(),
                key: item.clone(),
            });
        };
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        set(&mut root, &path, value, &format!("--set {key}"))?;
        overridden = true;
    }
    if !overridden && !converted && !source.trim().is_empty() {
        // Straight from the text, so an error carries its line and column.
        return serde_yaml_ng::from_str(&source)
            .map(|config| Loaded {
                config,
                notes: Vec::new(),
            })
            .map_err(|e| ConfigError::Invalid {
                origin,
                message: e.to_string(),
            });
    }
    let origin = match (converted, overridden) {
        (true, true) => format!("{origin} (converted) with overrides"),
        (true, false) => format!("{origin} (converted)"),
        (false, true) => format!("{origin} with overrides"),
        (false, false) => origin,
    };
    serde_yaml_ng::from_value(root)
        .map(|config| Loaded { config, notes })
        .map_err(|e| ConfigError::Invalid {
            origin,
            message: e.to_string(),
        })
}

/// `base` with `sets` (`a.b.c=value`) applied, for a config built in code
/// (`tailgate local`'s nodes); `origin` names the flag in errors.
pub fn with_overrides<T: Serialize + DeserializeOwned + Clone>(
    base: &T,
    sets: &[String],
    origin: &str,
) -> Result<T, ConfigError> {
    if sets.is_empty() {
        return Ok(base.clone());
    }
    let mut root = serde_yaml_ng::to_value(base).map_err(|e| ConfigError::Invalid {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    for item in sets {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ConfigError::BadOverride {
                origin: origin.to_owned(),
                key: item.clone(),
            });
        };
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        set(&mut root, &path, value, origin)?;
    }
    serde_yaml_ng::from_value(root).map_err(|e| ConfigError::Invalid {
        origin: origin.to_owned(),
        message: e.to_string(),
    })
}

fn set(root: &mut Value, path: &[String], raw: &str, origin: &str) -> Result<(), ConfigError> {
    if path.is_empty() || path.iter().any(String::is_empty) {
        return Err(ConfigError::BadOverride {
            origin: origin.to_owned(),
            key: path.join("."),
        });
    }
    let value: Value = serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.into()));
    let mut node = root;
    for segment in path {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            unreachable!("made a mapping above")
        };
        node = map
            .entry(Value::String(segment.clone()))
            .or_insert(Value::Null);
    }
    *node = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Receiver {
        grpc: String,
        #[serde(default)]
        max: u64,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Node {
        node: String,
        receiver: Receiver,
        #[serde(default)]
        members: Vec<String>,
    }

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    mod tempdir {
        use std::path::{Path, PathBuf};
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "tailgate-config-test-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn flags_override_env_which_overrides_the_file() {
        let (_dir, path) = write("node: a\nreceiver:\n  grpc: 0.0.0.0:4317\n  max: 1\n");
        let env = vec![
            ("TAILGATE__RECEIVER__MAX".to_owned(), "7".to_owned()),
            ("TAILGATE__NODE".to_owned(), "from-env".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let sets = vec!["node=from-flag".to_owned(), "members=[a:1, b:2]".to_owned()];
        let node: Node = load(Some(&path), env, &sets).unwrap();
        assert_eq!(
            node,
            Node {
                node: "from-flag".into(),
                receiver: Receiver {
                    grpc: "0.0.0.0:4317".into(),
                    max: 7
                },
                members: vec!["a:1".into(), "b:2".into()],
            }
        );
    }

    #[test]
    fn every_key_can_be_given_without_a_file() {
        let sets = vec!["node=n".to_owned(), "receiver.grpc=127.0.0.1:1".to_owned()];
        let node: Node = load(None, vec![], &sets).unwrap();
        assert_eq!(node.receiver.grpc, "127.0.0.1:1");
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let (_dir, path) = write("node: a\nreceiver:\n  grpc: x\n  grcp: y\n");
        let err = load::<Node>(Some(&path), vec![], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `grcp`"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("config.yaml"), "{err}");
    }

    #[test]
    fn an_unknown_key_set_by_flag_is_an_error() {
        let sets = vec![
            "node=n".to_owned(),
            "receiver.grpc=x".to_owned(),
            "nope=1".to_owned(),
        ];
        let err = load::<Node>(None, vec![], &sets).unwrap_err().to_string();
        assert!(err.contains("unknown field `nope`"), "{err}");
    }

    #[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Small {
        a: u32,
        inner: Inner,
    }

    #[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        b: String,
    }

    #[test]
    fn overrides_apply_to_a_config_built_in_code() {
        let base = Small {
            a: 1,
            inner: Inner { b: "x".into() },
        };
        let got =
            with_overrides(&base, &["inner.b=y".into(), "a=7".into()], "--set-sampler").unwrap();
        assert_eq!(
            got,
            Small {
                a: 7,
                inner: Inner { b: "y".into() }
            }
        );
        let err = with_overrides(&base, &["inner.c=1".into()], "--set-sampler").unwrap_err();
        assert!(
            err.to_string().contains("--set-sampler")
                && err.to_string().contains("unknown field `c`"),
            "{err}"
        );
    }

    #[test]
    fn a_set_without_equals_is_refused() {
        let err = load::<Node>(None, vec![], &["node".to_owned()]).unwrap_err();
        assert!(matches!(err, ConfigError::BadOverride { .. }), "{err}");
    }
}
