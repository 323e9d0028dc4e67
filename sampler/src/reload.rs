//! Live policy reload: on a change of the file, on SIGHUP, or when asked
//! through a [`ReloadHandle`].
//!
//! The file is usually a Kubernetes ConfigMap mount, where `policy.yaml` is
//! a symlink through `..data`, and an update swaps `..data` atomically. The
//! watcher polls: it stats the path (following the symlinks) every
//! `policy_poll_interval` and re-reads the file when its identity (device,
//! inode, size, mtime) changed. A swap resolves to a new inode, an edit in
//! place changes the mtime, and a rename over the file does both. Polling
//! was chosen over inotify (`notify`) because inotify on a ConfigMap mount
//! has to watch the directory and reinterpret `..data` events, and misses
//! changes on some overlay and network filesystems; a stat per second is
//! free, and the kubelet's own propagation delay (up to a minute) dwarfs
//! the interval.
//!
//! A new file is validated whole ([`PolicyFile::parse`]) and swapped in
//! atomically; a file that fails keeps the old policies, and the error
//! (with line and column) is logged and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use policy::{PolicyError, PolicyFile};
use tokio::sync::{mpsc, watch};

use crate::active::ActivePolicy;
use crate::metrics::Metrics;
use crate::state::NodeState;

/// Asks a running node to reload its policy file now. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<()>,
}

impl ReloadHandle {
    pub(crate) fn new() -> (ReloadHandle, mpsc::Receiver<()>) {
        // One pending request is enough: more before it runs are the same.
        let (tx, rx) = mpsc::channel(1);
        (ReloadHandle { tx }, rx)
    }

    /// Requests a reload (like SIGHUP). Returns at once; the result shows in
    /// `tailgate_policy_reloads_total` and the log.
    pub fn reload(&self) {
        let _ = self.tx.try_send(());
    }
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    dev_ino: (u64, u64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            dev_ino: (meta.dev(), meta.ino()),
        }
    }
}

/// Reads a policy file: its validated content and the hash of its bytes.
pub(crate) fn load(path: &Path) -> Result<(PolicyFile, u64), PolicyError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        file: name.clone(),
        source,
    })?;
    let file = PolicyFile::parse(&source, &name)?;
    Ok((file, xxhash_rust::xxh3::xxh3_64(source.as_bytes())))
}

/// What the reloader task owns.
pub(crate) struct Reloader {
    pub path: PathBuf,
    pub interval: Duration,
    pub tx: watch::Sender<Arc<ActivePolicy>>,
    pub metrics: Arc<Metrics>,
    pub node: Arc<NodeState>,
    /// Recomputes the node-wide limits that follow the policy file.
    pub max_traces: Box<dyn Fn(&PolicyFile) -> usize + Send + Sync>,
    stamp: Option<Stamp>,
    hangup: Hangup,
}

impl Reloader {
    /// Call inside a tokio runtime: the SIGHUP handler is installed here.
    pub fn new(
        path: PathBuf,
        interval: Duration,
        tx: watch::Sender<Arc<ActivePolicy>>,
        metrics: Arc<Metrics>,
        node: Arc<NodeState>,
        max_traces: Box<dyn Fn(&PolicyFile) -> usize + Send + Sync>,
    ) -> Reloader {
        let stamp = std::fs::metadata(&path).ok().map(|m| Stamp::of(&m));
        Reloader {
            path,
            interval,
            tx,
            metrics,
            node,
            max_traces,
            stamp,
            // Installed now, not when the task first runs, so that SIGHUP
            // is handled (not fatal) from the moment the node is ready.
            hangup: hangup_signal(),
        }
    }

    /// Polls the file, listens for SIGHUP and reload requests, until `stop`.
    pub async fn run(mut self, mut requests: mpsc::Receiver<()>, mut stop: watch::Receiver<bool>) {
        // The first check is one interval in: the file was just loaded.
        let first = tokio::time::Instant::now() + self.interval;
        let mut tick = tokio::time::interval_at(first, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Moved out: the select loop below borrows `self` mutably.
        let mut hangup = self.hangup.take();
        let mut requests_open = true;
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                () = next_hangup(&mut hangup) => {
                    self.reload("SIGHUP").await;
                }
                request = requests.recv(), if requests_open => match request {
                    Some(()) => self.reload("request").await,
                    None => requests_open = false,
                },
                _ = tick.tick() => self.poll().await,
            }
        }
    }

    /// Reloads if the file's identity changed since last seen.
    async fn poll(&mut self) {
        let stamp = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => Stamp::of(&meta),
            // Missing for a moment (a swap in progress) or gone: keep the
            // policies; a reload happens when it is back.
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "policy file not readable now");
                return;
            }
        };
        if self.stamp == Some(stamp) {
            return;
        }
        self.stamp = Some(stamp);
        self.reload("file changed").await;
    }

    /// Reads, validates and swaps in the file. The same content as the
    /// active file is left in place (rate limiters keep their state).
    pub async fn reload(&mut self, cause: &'static str) {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path)).await;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "policy reload task failed");
                self.metrics.reloads[1].increment(1);
                return;
            }
        };
        match loaded {
            Ok((file, hash)) => {
                self.metrics.reloads[0].increment(1);
                if hash == self.tx.borrow().hash {
                    tracing::info!(
                        cause,
                        hash = format!("{hash:016x}"),
                        "policy file unchanged"
                    );
                    return;
                }
                let names: Vec<String> = file.policies.names().map(str::to_owned).collect();
                let use_tracestate = self.tx.borrow().file.policies.use_tracestate();
                let active = ActivePolicy::new(file, hash, &self.metrics, use_tracestate);
                let carried = active.carry_estimators_from(&self.tx.borrow());
                let active = Arc::new(active);
                let max_traces = (self.max_traces)(&active.file);
                self.node.set_max_traces(max_traces);
                self.metrics.buffer_limit_traces.set(max_traces as f64);
                self.metrics.policy_hash.set(active.hash_gauge());
                self.tx.send_replace(active);
                tracing::info!(
                    cause,
                    hash = format!("{hash:016x}"),
                    policies = ?names,
                    adaptive_estimators_kept = carried,
                    "policy file reloaded"
                );
            }
            Err(e) => {
                self.metrics.reloads[1].increment(1);
                let (line, column) = e.location().unwrap_or((0, 0));
                tracing::error!(
                    cause,
                    error = %e,
                    line,
                    column,
                    "policy reload failed; the active policies stay in force"
                );
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload on file change only");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        if signal.recv().await.is_some() {
            return;
        }
        *hangup = None;
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending::<()>().await
}
