//! CPU time and resident memory of a process, from `/proc/PID/stat` and
//! `/proc/PID/status` (Linux).

use std::time::Duration;

use serde::Serialize;

/// `USER_HZ`, the unit of `utime` and `stime` in `/proc/PID/stat`. It is
/// part of the kernel ABI and 100 on every architecture we run on (x86,
/// arm); reading it with `sysconf` would need unsafe code for no gain.
const TICKS_PER_SECOND: u64 = 100;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// User + system CPU time of every thread, since the process started.
    pub cpu: Duration,
    /// Resident set size now (`VmRSS`).
    pub rss_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading /proc/{pid}/{file}: {source} (is process {pid} running, on Linux?)")]
    Read {
        pid: u32,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("/proc/{pid}/{file}: unexpected format")]
    Format { pid: u32, file: &'static str },
}

/// Reads process `pid` now.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let read =
        |file: &'static str| {
            std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                .map_err(|source| ProcError::Read { pid, file, source })
        };
    let cpu = parse_stat_cpu(&read("stat")?).ok_or(ProcError::Format { pid, file: "stat" })?;
    let rss_bytes = parse_status_rss(&read("status")?).ok_or(ProcError::Format {
        pid,
        file: "status",
    })?;
    Ok(ProcSample { cpu, rss_bytes })
}

/// Reads this process.
pub fn sample_self() -> Result<ProcSample, ProcError> {
    sample(std::process::id())
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // After the name: state (3), ppid (4) … utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// `VmRSS` in bytes from the text of `/proc/PID/status`.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_ascii_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_utime_plus_stime_even_with_odd_names() {
        let stat = "1234 (tail (gate) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 9 0 55 1000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some(Duration::from_millis(3800)));
        assert_eq!(parse_stat_cpu("1234 (x) S 1"), None);
    }

    #[test]
    fn status_rss_is_read_in_bytes() {
        let status = "Name:\ttailgate\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample_self().expect("/proc/self is readable on Linux");
        assert!(sample.rss_bytes > 0);
    }
}
