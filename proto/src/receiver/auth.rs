//! Receiver authentication: a bearer token (`Authorization: Bearer <t>`) or
//! a key in a header of the operator's choosing (`x-api-key: <t>`), checked
//! on every export request, gRPC metadata and HTTP headers alike.
//!
//! Tokens are never in the config file: it names a file (one token per
//! line, re-read when it changes, so a Secret can be rotated without a
//! restart; several lines let an old and a new token overlap) or an
//! environment variable (read once at start). Tokens are never logged or
//! printed: `Debug` shows how many there are, nothing else, and a refusal
//! says only that the token is missing or wrong.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// How often, at most, the tokens file is checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The `auth:` block of `receiver:`. Exactly one of `tokens_file` and
/// `tokens_env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file with the accepted tokens, one per line (blank lines and lines
    /// starting with `#` are ignored). Re-read when it changes.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// An environment variable holding the accepted token (or several,
    /// comma-separated). Read once at start.
    #[serde(default)]
    pub tokens_env: Option<String>,
    /// The header that carries the token. Default `authorization`, whose
    /// value must be `Bearer <token>`; any other header (e.g. `x-api-key`)
    /// carries the token as its whole value.
    #[serde(default = "default_header")]
    pub header: String,
}

fn default_header() -> String {
    "authorization".into()
}

/// Why the auth settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("receiver auth: set exactly one of tokens_file and tokens_env")]
    Source,
    #[error("receiver auth: header {0:?} is not a valid lower-case header name")]
    Header(String),
    #[error("receiver auth: reading tokens_file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("receiver auth: environment variable {0} is not set or not UTF-8")]
    Env(String),
    #[error("receiver auth: {0} holds no token")]
    Empty(String),
}

/// A set of accepted tokens; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
struct Tokens(Vec<Vec<u8>>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    fn parse(text: &str, separator: char) -> Tokens {
        Tokens(
            text.split(separator)
                .map(str::trim)
                .filter(|t| !t.is_empty() && !t.starts_with('#'))
                .map(|t| t.as_bytes().to_vec())
                .collect(),
        )
    }

    /// Compares against every token, in time that depends on the lengths
    /// only, not on where the first differing byte is.
    fn accepts(&self, presented: &[u8]) -> bool {
        self.0.iter().fold(false, |found, token| {
            found | constant_time_eq(token, presented)
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

enum Source {
    Fixed(Tokens),
    File {
        path: PathBuf,
        state: Mutex<FileState>,
    },
}

struct FileState {
    tokens: Tokens,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

/// The receiver's token check.
pub struct Auth {
    header: http::HeaderName,
    bearer: bool,
    source: Source,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Fixed(tokens) => format!("env ({tokens:?})"),
            Source::File { path, .. } => format!("file {}", path.display()),
        };
        f.debug_struct("Auth")
            .field("header", &self.header)
            .field("source", &source)
            .finish()
    }
}

/// What was wrong with a request's credentials (never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Wrong,
}

impl Denied {
    pub fn message(self, header: &str) -> String {
        match self {
            Denied::Missing => format!("missing credentials: send the {header} header"),
            Denied::Wrong => format!("the {header} header does not carry an accepted token"),
        }
    }
}

impl Auth {
    /// Loads the tokens (failing if there are none); `env` looks up an
    /// environment variable (the process's, or a test's).
    pub fn new(
        config: &AuthConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Auth, AuthError> {
        let header = http::HeaderName::from_bytes(config.header.as_bytes())
            .ok()
            .filter(|h| h.as_str() == config.header)
            .ok_or_else(|| AuthError::Header(config.header.clone()))?;
        let bearer = header == http::header::AUTHORIZATION;
        let source = match (&config.tokens_file, &config.tokens_env) {
            (Some(path), None) => {
                let (tokens, stamp) = read_file(path)?;
                if tokens.0.is_empty() {
                    return Err(AuthError::Empty(path.display().to_string()));
                }
                Source::File {
                    path: path.clone(),
                    state: Mutex::new(FileState {
                        tokens,
                        stamp,
                        checked: Instant::now(),
                    }),
                }
            }
            (None, Some(var)) => {
                let value = env(var).ok_or_else(|| AuthError::Env(var.clone()))?;
                let tokens = Tokens::parse(&value, ',');
                if tokens.0.is_empty() {
                    return Err(AuthError::Empty(var.clone()));
                }
                Source::Fixed(tokens)
            }
            _ => return Err(AuthError::Source),
        };
        Ok(Auth {
            header,
            bearer,
            source,
        })
    }

    /// The header the token is read from.
    pub fn header(&self) -> &http::HeaderName {
        &self.header
    }

    /// Checks a request's value of [`Auth::header`].
    pub fn check(&self, value: Option<&[u8]>) -> Result<(), Denied> {
        let value = value.ok_or(Denied::Missing)?;
        let presented = if self.bearer {
            let scheme = b"bearer ";
            match value.get(..scheme.len()) {
                Some(prefix) if prefix.eq_ignore_ascii_case(scheme) => &value[scheme.len()..],
                _ => return Err(Denied::Wrong),
            }
        } else {
            value
        };
        let presented = presented.trim_ascii();
        let accepted = match &self.source {
            Source::Fixed(tokens) => tokens.accepts(presented),
            Source::File { path, state } => {
                let mut state = match state.lock() {
                    Ok(state) => state,
                    Err(poisoned) => poisoned.into_inner(),
                };
                reload(path, &mut state);
                state.tokens.accepts(presented)
            }
        };
        if accepted { Ok(()) } else { Err(Denied::Wrong) }
    }
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_file(path: &PathBuf) -> Result<(Tokens, Stamp), AuthError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.clone(),
        source,
    })?;
    Ok((Tokens::parse(&text, '\n'), stamp))
}

/// Re-reads the file if it changed; a file that cannot be read, or is
/// empty, keeps the tokens in force (logged, without its content).
fn reload(path: &PathBuf, state: &mut FileState) {
    if state.checked.elapsed() < RELOAD_CHECK {
        return;
    }
    state.checked = Instant::now();
    let now = stamp(path);
    if now == state.stamp {
        return;
    }
    state.stamp = now;
    match read_file(path) {
        Ok((tokens, _)) if !tokens.0.is_empty() => {
            state.tokens = tokens;
            tracing::info!(file = %path.display(), "receiver tokens reloaded");
        }
        Ok(_) => tracing::warn!(
            file = %path.display(),
            "receiver tokens file is empty; keeping the previous tokens"
        ),
        Err(error) => tracing::warn!(%error, "keeping the previous receiver tokens"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_auth(header: &str, value: &str) -> Auth {
        let config = AuthConfig {
            tokens_file: None,
            tokens_env: Some("TOKENS".into()),
            header: header.into(),
        };
        let value = value.to_owned();
        Auth::new(&config, move |name| {
            (name == "TOKENS").then(|| value.clone())
        })
        .expect("auth")
    }

    #[test]
    fn bearer_tokens_need_the_scheme_and_an_accepted_token() {
        let auth = env_auth("authorization", "s3cret, other");
        assert_eq!(auth.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(auth.check(Some(b"bearer other")), Ok(()));
        assert_eq!(auth.check(Some(b"s3cret")), Err(Denied::Wrong));
        assert_eq!(auth.check(Some(b"Bearer s3cre")), Err(Denied::Wrong));
        assert_eq!(auth.check(Some(b"Basic s3cret")), Err(Denied::Wrong));
        assert_eq!(auth.check(None), Err(Denied::Missing));
    }

    #[test]
    fn a_header_key_is_its_whole_value() {
        let auth = env_auth("x-api-key", "k1");
        assert_eq!(auth.check(Some(b"k1")), Ok(()));
        assert_eq!(auth.check(Some(b"Bearer k1")), Err(Denied::Wrong));
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let auth = env_auth("authorization", "very-secret-token");
        let shown = format!("{auth:?}");
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(shown.contains("1 redacted"), "{shown}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let none = AuthConfig {
            tokens_file: None,
            tokens_env: None,
            header: default_header(),
        };
        assert!(matches!(Auth::new(&none, |_| None), Err(AuthError::Source)));
        let unset = AuthConfig {
            tokens_env: Some("NOPE".into()),
            ..none.clone()
        };
        assert!(matches!(
            Auth::new(&unset, |_| None),
            Err(AuthError::Env(_))
        ));
        let empty = AuthConfig {
            tokens_env: Some("E".into()),
            ..none.clone()
        };
        assert!(matches!(
            Auth::new(&empty, |_| Some(" , ".into())),
            Err(AuthError::Empty(_))
        ));
        let bad_header = AuthConfig {
            tokens_env: Some("E".into()),
            header: "X Api Key".into(),
            ..none
        };
        assert!(matches!(
            Auth::new(&bad_header, |_| Some("t".into())),
            Err(AuthError::Header(_))
        ));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
