//! The `tailgate` binary's contract: exit codes, config errors before any
//! port is bound, and a node that stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `cmd` with its stderr read line by line on a thread.
fn spawn_logged(mut cmd: Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Lines until one matches (at most 30 s): whether one did, and the lines.
fn lines_until(
    lines: &std::sync::mpsc::Receiver<String>,
    done: impl Fn(&str) -> bool,
) -> (bool, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let found = done(&line);
        seen.push(line);
        if found {
            return (true, seen);
        }
    }
    (false, seen)
}

/// SIGTERM, then the exit code (at most 60 s).
fn stop_with_sigterm(child: &mut std::process::Child, what: &str) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tailgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tailgate"));
    // Keep the developer's environment from steering the config.
    cmd.env_remove("TAILGATE_CONFIG");
    cmd
}

#[test]
fn an_unknown_config_key_exits_64_with_the_key_named() {
    let out = tailgate()
        .args(["sampler", "--set", "nope=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `nope`"));
}

#[test]
fn a_bad_policy_file_exits_64_before_any_port_is_bound() {
    let dir = std::env::temp_dir().join(format!("tailgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "policies:\n  - name: x\n    type: no_such_type\n").unwrap();
    // The admin port is one this test holds: binding it would fail with a
    // different error, so exit 64 shows the policy was checked first.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = tailgate()
        .args(["sampler", "--set"])
        .arg(format!("policy_file={}", policy.display()))
        .args(["--set", "exporter.endpoint=http://127.0.0.1:9"])
        .args(["--set", &format!("admin={}", held.local_addr().unwrap())])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy"));
}

/// `tailgate sampler` on the example policy, every port on 127.0.0.1:0, its
/// backend a closed port.
fn sampler() -> Command {
    let mut cmd = tailgate();
    cmd.args(["sampler"])
        .args(["--set", "policy_file=examples/policy.yaml"])
        .args(["--set", "exporter.endpoint=http://127.0.0.1:9"])
        .args([
            "--set",
            "receiver.grpc=127.0.0.1:0",
            "--set",
            "receiver.http=127.0.0.1:0",
        ])
        .args(["--set", "admin=127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

#[test]
fn a_sampler_serves_then_stops_cleanly_on_sigterm() {
    let (mut child, lines) = spawn_logged(sampler());
    // Wait (bounded) for the node to report it started.
    let (started, _) = lines_until(&lines, |l| l.contains("sampler starting"));
    assert!(started, "the sampler never reported it started");
    let code = stop_with_sigterm(&mut child, "the sampler");
    assert_eq!(code, Some(0));
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("sampler stopped")),
        "{rest:?}"
    );
}

/// A sampler started with `tunables` as its `GLIBC_TUNABLES` (`None`:
/// unset), once it reported it started: its `GLIBC_TUNABLES` as it runs,
/// the size (kB) of its main heap (`[heap]` in `/proc/PID/smaps`), and
/// whether any of its mappings is marked for huge pages (`hg` in `VmFlags`:
/// `MADV_HUGEPAGE`). Stopped before returning.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sampler_tunables_and_heap(tunables: Option<&str>) -> (Option<String>, u64, bool) {
    let mut cmd = sampler();
    match tunables {
        Some(t) => cmd.env("GLIBC_TUNABLES", t),
        None => cmd.env_remove("GLIBC_TUNABLES"),
    };
    let (mut child, lines) = spawn_logged(cmd);
    let (started, seen) = lines_until(&lines, |l| l.contains("sampler starting"));
    assert!(started, "the sampler never reported it started: {seen:?}");
    // The same process: the sampler runs itself again by exec, not as a child.
    let pid = child.id();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let tunables = environ
        .split(|b| *b == 0)
        .filter_map(|var| var.strip_prefix(b"GLIBC_TUNABLES="))
        .map(text)
        .next();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut heap_kb, mut huge) = (0, false);
    let mut in_heap = false;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Size:") {
            if in_heap {
                heap_kb += kb
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            huge |= flags.split_whitespace().any(|f| f == "hg");
        } else if !line
            .split_whitespace()
            .next()
            .is_some_and(|first| first.ends_with(':'))
        {
            // Not a `Key: value` line, so a mapping's first line:
            // `start-end perms offset dev inode [name]`.
            in_heap = line.ends_with("[heap]");
        }
    }
    assert_eq!(stop_with_sigterm(&mut child, "the sampler"), Some(0));
    (tunables, heap_kb, huge)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_sampler_runs_with_huge_pages_for_its_heap_unless_told_not_to() {
    let (tunables, heap_kb, _) = sampler_tunables_and_heap(None);
    let tunables = tunables.expect("GLIBC_TUNABLES set by the sampler");
    assert!(tunables.contains("glibc.malloc.hugetlb=1"), "{tunables}");
    // Grown 64 MiB at a time (top_pad), so it holds whole 2 MiB pages: the
    // tunables were read. Which mappings glibc has marked for huge pages by
    // now depends on how far each heap grew (BENCHMARKS.md has the pages a
    // sampler under load holds in them), so it is not asserted here.
    assert!(heap_kb >= 64 * 1024, "heap of {heap_kb} kB");
    // A GLIBC_TUNABLES that names hugetlb is left as it is.
    let (tunables, heap_kb, huge) = sampler_tunables_and_heap(Some("glibc.malloc.hugetlb=0"));
    assert_eq!(tunables.as_deref(), Some("glibc.malloc.hugetlb=0"));
    assert!(heap_kb < 64 * 1024, "heap of {heap_kb} kB");
    assert!(!huge, "a mapping marked for huge pages");
}

/// A scratch directory of this test, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tailgate-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_check_accepts_a_good_sampler_config_without_binding_its_ports() {
    // Every port of the config is one this test holds: a node that bound
    // any of them would fail, so exit 0 shows nothing was bound.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = tailgate()
        .args(["config", "check", "--role", "sampler"])
        .arg("deploy/kubernetes/base/config/sampler.yaml")
        .args(["--set", "policy_file=examples/collector-config.yaml"])
        .args(["--set", "cluster.self=10.0.0.1"])
        .args(["--set", &format!("admin={addr}")])
        .args(["--set", &format!("receiver.grpc={addr}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("deploy/kubernetes/base/config/sampler.yaml: ok\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "note: policy file examples/collector-config.yaml: expected_new_traces_per_sec"
        ),
        "the policy file was read: {stdout}"
    );
}

#[test]
fn config_check_fails_with_the_message_and_code_of_startup() {
    let scratch = Scratch::new("check-bad");
    let policy = scratch.file(
        "policy.yaml",
        "policies:\n  - name: slow\n    type: latency\n    latency: {treshold: 5}\n",
    );
    let config = scratch.file(
        "sampler.yaml",
        &format!(
            "policy_file: {}\nexporter:\n  endpoint: http://127.0.0.1:9\nadmin: 127.0.0.1:0\nreceiver:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\n",
            policy.display()
        ),
    );
    let check = tailgate()
        .args(["config", "check", "--role", "sampler"])
        .arg(&config)
        .output()
        .unwrap();
    let startup = tailgate()
        .args(["sampler", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(64));
    assert_eq!(startup.status.code(), Some(64));
    let message = text(&check.stderr);
    assert!(message.contains("unknown field `treshold`"), "{message}");
    assert!(
        text(&startup.stderr).ends_with(&message),
        "startup said {:?}, check said {message:?}",
        text(&startup.stderr)
    );

    // A config key that does not exist: the same message as well.
    let check = tailgate()
        .args(["config", "check", "--role", "lb"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(64));
    assert!(
        text(&check.stderr).contains("unknown field `policy_file`"),
        "{}",
        text(&check.stderr)
    );
}

#[test]
fn config_print_shows_file_environment_and_flags_with_secrets_redacted() {
    let scratch = Scratch::new("print");
    let config = scratch.file(
        "lb.yaml",
        "node: from-file\nresolver:\n  static:\n    members: [127.0.0.1:4317]\nexport:\n  headers:\n    x-api-key: s3cret-from-file\ndrain_timeout: 20s\n",
    );
    let out = tailgate()
        .args(["config", "print", "--role", "lb", "--config"])
        .arg(&config)
        .args(["--set", "drain_timeout=3s"])
        .env("TAILGATE__NODE", "from-env")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("node: from-env\n"), "{printed}");
    assert!(printed.contains("drain_timeout: 3s\n"), "{printed}");
    assert!(printed.contains("    x-api-key: <redacted>\n"), "{printed}");
    assert!(!printed.contains("s3cret"), "{printed}");
    // Every key, defaults included.
    assert!(printed.contains("  probe_max_interval: 10s\n"), "{printed}");
    assert!(printed.contains("  max_connections: 4096\n"), "{printed}");
}

#[test]
fn config_check_of_an_lb_reads_a_collector_loadbalancing_exporter() {
    let out = tailgate()
        .args([
            "config",
            "check",
            "--role",
            "lb",
            "examples/collector-lb.yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("note: using exporters.loadbalancing of a Collector configuration"),
        "{stdout}"
    );
    let printed = tailgate()
        .args(["config", "print", "--role", "lb", "--config"])
        .arg("examples/collector-lb.yaml")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let printed = text(&printed.stdout);
    for line in [
        "    hostname: tailgate-sampler.tailgate.svc.cluster.local.\n",
        "  compression: gzip\n",
        "  concurrency: 4\n",
        "  timeout: 10s\n",
        "  max_elapsed_time: 1m\n",
        "  tls: null\n",
    ] {
        assert!(printed.contains(line), "{line:?} not in {printed}");
    }

    let scratch = Scratch::new("collector-refused");
    let refused = scratch.file(
        "collector.yaml",
        "exporters:\n  loadbalancing:\n    routing_key: service\n    resolver:\n      k8s:\n        service: sampler.observability\n",
    );
    let out = tailgate()
        .args(["config", "check", "--role", "lb"])
        .arg(&refused)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(
        err.contains("exporters.loadbalancing.routing_key: `service` is not supported"),
        "{err}"
    );
}

#[test]
fn an_lb_starts_from_a_whole_collector_configuration() {
    let scratch = Scratch::new("collector-lb");
    let config = scratch.file(
        "collector.yaml",
        "receivers:\n  otlp: {}\nexporters:\n  loadbalancing:\n    protocol:\n      otlp:\n        tls: {insecure: true}\n    resolver:\n      static:\n        hostnames: [127.0.0.1:9]\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [loadbalancing]}\n",
    );
    let mut cmd = tailgate();
    cmd.args(["lb", "--config"])
        .arg(&config)
        .args(["--set", "receiver.grpc=127.0.0.1:0"])
        .args(["--set", "receiver.http=127.0.0.1:0"])
        .args(["--set", "admin=127.0.0.1:0"]);
    let (mut child, rx) = spawn_logged(cmd);
    // The member from resolver.static.hostnames is logged when the ring is built.
    let (_, lines) = lines_until(&rx, |l| l.contains("127.0.0.1:9"));
    let code = stop_with_sigterm(&mut child, "the lb");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("using exporters.loadbalancing of a Collector configuration")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("127.0.0.1:9")),
        "the member from resolver.static.hostnames: {lines:?}"
    );
    assert_eq!(code, Some(0));
}

#[test]
fn policy_convert_refinery_writes_a_policy_file_that_checks_and_decides() {
    let scratch = Scratch::new("convert-refinery");
    let out_path = scratch.0.join("policy.yaml");
    let out = tailgate()
        .args([
            "policy",
            "convert",
            "refinery",
            "examples/refinery-rules.yaml",
            "-o",
        ])
        .arg(&out_path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("wrote "), "{stdout}");
    assert!(
        stdout.contains("4 policies from examples/refinery-rules.yaml"),
        "{stdout}"
    );

    let check = tailgate()
        .args(["policy", "check"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("the rest, by route: ema_dynamic"),
        "{}",
        text(&check.stdout)
    );

    let test = tailgate()
        .args(["policy", "test"])
        .arg(&out_path)
        .arg("examples/traces.json")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(test.status.code(), Some(0), "{}", text(&test.stderr));
    let table = text(&test.stdout);
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} in {table}"))
            .to_string()
    };
    // As Refinery decides them: the health check dropped by the first
    // rule, the error and the slow search kept by theirs.
    let decided = |id: &str, outcome: &str, policy: &str| {
        let row = row(id);
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        cells.get(2) == Some(&outcome) && cells.get(3).is_some_and(|p| p.starts_with(policy))
    };
    assert!(
        decided("5d6a9a54", "dropped", "drop healthchecks"),
        "{table}"
    );
    assert!(decided("1d9e1f58", "sampled", "keep errors"), "{table}");
    assert!(
        decided("aa569380", "sampled", "keep slow requests"),
        "{table}"
    );

    // Printed to stdout without -o.
    let printed = tailgate()
        .args([
            "policy",
            "convert",
            "refinery",
            "examples/refinery-rules.yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(printed.status.code(), Some(0));
    assert!(text(&printed.stdout).starts_with("# Converted from the Refinery rules file"));

    // v1 rules are refused with the way forward.
    let v1 = scratch.file(
        "rules.toml",
        "Sampler = \"DeterministicSampler\"\nSampleRate = 1\n",
    );
    let refused = tailgate()
        .args(["policy", "convert", "refinery"])
        .arg(&v1)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let message = text(&refused.stderr);
    assert!(
        message.starts_with("error: ") && message.contains("convert rules"),
        "{message}"
    );
}
