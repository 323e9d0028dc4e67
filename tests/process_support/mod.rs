//! What the single-process tests (`bad_input.rs`, `prometheus_alerts.rs`)
//! share: a child process stopped by PID, with its stderr in a log file; a
//! blocking GET for admin and Prometheus ports; free loopback ports; a
//! temporary directory. (The cluster tests run many processes from async
//! code: `cluster_support` has its own.)

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process; killed by PID and reaped if dropped while it runs.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdin and stdout closed and stderr in `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> std::io::Result<Process> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// `tailgate ARGS`, logging at info.
    pub fn tailgate<S: AsRef<OsStr>>(args: &[S], log: PathBuf) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tailgate"));
        command.args(args).env("RUST_LOG", "info");
        let name = format!(
            "tailgate {}",
            args.first()
                .map_or("".into(), |a| a.as_ref().to_string_lossy())
        );
        Process::spawn(&name, command, log).expect("tailgate starts")
    }

    /// Waits until `GET path` on `addr` answers 200 (true); false if the
    /// process exited because a port it was given was taken meanwhile (the
    /// caller tries new ports); panics on any other exit, or after 30 s.
    pub fn wait_ready(&mut self, addr: SocketAddr, path: &str) -> bool {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let log = self.log();
                assert!(
                    log.to_ascii_lowercase().contains("address already in use"),
                    "{} exited ({status}): {log}",
                    self.name
                );
                return false;
            }
            if http_get(addr, path).is_some_and(|(code, _)| code == 200) {
                return true;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} not ready after 30 s: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits at most `limit` for it to exit 0 (its staged
    /// shutdown).
    pub fn terminate(&mut self, limit: Duration) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "{} still running {limit:?} after SIGTERM: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "{} exited {status}: {}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address nothing listens on (until someone binds it).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A blocking HTTP/1.0 GET: (status, body); None if the server cannot be
/// reached or answers nothing readable within 5 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let code = status_code(&answer)?;
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, body.to_owned()))
}

/// The status code of an HTTP answer's status line.
pub fn status_code(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
