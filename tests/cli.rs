//! The `tailgate` binary's contract: exit codes, config errors before any
//! port is bound, and a node that stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn a_sampler_serves_then_stops_cleanly_on_sigterm() {
    let mut child = tailgate()
        .args(["sampler"])
        .args(["--set", "policy_file=examples/policy.yaml"])
        .args(["--set", "exporter.endpoint=http://127.0.0.1:9"])
        .args([
            "--set",
            "receiver.grpc=127.0.0.1:0",
            "--set",
            "receiver.http=127.0.0.1:0",
        ])
        .args(["--set", "admin=127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the node to report it started.
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut started = false;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("sampler starting") {
            started = true;
            break;
        }
    }
    assert!(started, "the sampler never reported it started");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the sampler did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("sampler stopped")),
        "{rest:?}"
    );
}
