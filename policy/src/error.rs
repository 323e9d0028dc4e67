//! Why a policy file was refused. Every message starts with the file name
//! and, where the problem has a place, `line:column`; problems inside a
//! policy also name it (`policy "outer" > "inner"` for a sub-policy).

use std::fmt;

/// A policy file that cannot be used. Never retryable: the same file fails
/// the same way.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or a setting outside any policy is wrong.
    #[error("{file}:{line}:{column}: {message}")]
    Setting {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A policy is wrong: unknown key, wrong type, value out of range,
    /// duplicate name, bad regex, unsupported type.
    #[error("{file}:{line}:{column}: policy {}: {message}", PolicyName(policy))]
    Policy {
        file: String,
        line: usize,
        column: usize,
        /// The policy's name; a sub-policy's is its path, outermost first.
        policy: Vec<String>,
        message: String,
    },
    /// The file has no usable `tail_sampling` block (no place to point at).
    #[error("{file}: {message}")]
    Document { file: String, message: String },
}

impl PolicyError {
    /// `(line, column)`, 1-based, when the problem has a place.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            PolicyError::Setting { line, column, .. }
            | PolicyError::Policy { line, column, .. } => Some((*line, *column)),
            PolicyError::Read { .. } | PolicyError::Document { .. } => None,
        }
    }

    /// The name of the (innermost) policy at fault, if any.
    pub fn policy(&self) -> Option<&str> {
        match self {
            PolicyError::Policy { policy, .. } => policy.last().map(String::as_str),
            _ => None,
        }
    }
}

/// `"outer" > "inner"`.
struct PolicyName<'a>(&'a [String]);

impl fmt::Display for PolicyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" > ")?;
            }
            write!(f, "{name:?}")?;
        }
        Ok(())
    }
}
