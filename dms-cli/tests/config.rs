//! Configuration files through the `dms` tool: `dms config check` on the shipped example
//! (docs/node.example.toml), on files with several errors (each printed as
//! `FILE:LINE:COL: field: message`, exit 2) and with bad `DMS_*` variables; `dms node
//! --config` with the precedence file < environment < command line, a bad file refused
//! without a panic, and (over a real etcd) a node started from a file answering
//! `dms request`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const CLUSTER: &str = "/cf/cn/linux/w1/g1/Battle";

fn dms() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dms"));
    // The test's own environment must not leak into the node's configuration.
    for (name, _) in std::env::vars() {
        if name.starts_with("DMS_") {
            command.env_remove(name);
        }
    }
    command
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/node.example.toml")
}

/// Runs a command to its end, or fails the test at the deadline.
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{command:?} did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_checks_ok() {
    let out = run(dms().args(["config", "check"]).arg(example()));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(
        stdout.contains("service = \"/demo/cn/linux/w1/g1/Battle/battle-1\""),
        "{stdout}"
    );
    assert!(stdout.contains("interval_ms = 500"), "{stdout}");
}

#[test]
fn every_error_is_printed_with_its_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        r#"service = "battle-1"
bind = ["tcp://127.0.0.1:0", "udp://127.0.0.1:1"]
targtes = ["/cf/cn/linux/w1/g1/Lobby"]

[heartbeat]
interval_ms = 0
missed = -1

[tls]
cert = "missing.pem"

[acl]
file = "no-such-acl.txt"
"#,
    )
    .unwrap();
    let out = run(dms().args(["config", "check"]).arg(&file));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let f = file.display().to_string();
    let want = [
        format!("{f}:1:11: service: "),
        format!("{f}:2:30: bind[1]: unknown scheme \"udp\""),
        format!("{f}:3:1: targtes: unknown field"),
        format!("{f}:6:15: heartbeat.interval_ms: must be at least 10 ms"),
        format!("{f}:7:10: heartbeat.missed: must not be negative"),
        format!("{f}:10:8: tls.key: missing"),
        format!("{f}:10:8: tls.ca: missing"),
        format!("{f}:10:8: tls.cert: cannot read "),
        format!("{f}:13:8: acl.file: cannot read "),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), want.len() + 1, "{stderr}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(
            line.starts_with(want.as_str()),
            "{line:?} should start with {want:?}"
        );
    }
    assert_eq!(
        lines[want.len()],
        format!("dms config check: 9 errors in {f}")
    );

    // A syntax error stops the parse: it is the one error, with its line.
    std::fs::write(&file, "service = \"/a/b/c/d/e/f/g\"\nbind = [\n").unwrap();
    let out = run(dms().args(["config", "check"]).arg(&file));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{f}:3:1: syntax: ")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 2, "{stderr}");

    // A file that is not there.
    let out = run(dms()
        .args(["config", "check"])
        .arg(dir.path().join("none.toml")));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("file: cannot read "), "{out:?}");
}

#[test]
fn check_env_applies_and_names_bad_variables() {
    let out = run(dms()
        .args(["config", "check", "--env"])
        .arg(example())
        .env("DMS_HEARTBEAT_INTERVAL_MS", "250")
        .env("DMS_TARGETS", "/cf/cn/linux/w1/g1/Club"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("interval_ms = 250"), "{stdout}");
    assert!(
        stdout.contains("targets = [\"/cf/cn/linux/w1/g1/Club\"]"),
        "{stdout}"
    );

    let out = run(dms()
        .args(["config", "check", "--env"])
        .arg(example())
        .env("DMS_HEARTBEAT_MISSED", "often")
        .env("DMS_BIND", "tcp://127.0.0.1:0,carrier://pigeon"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DMS_HEARTBEAT_MISSED: heartbeat.missed: expected an integer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("DMS_BIND: bind[1]: unknown scheme \"carrier\""),
        "{stderr}"
    );
    // Without --env the environment is not read.
    let out = run(dms()
        .args(["config", "check"])
        .arg(example())
        .env("DMS_HEARTBEAT_MISSED", "often"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A `dms node` process, killed when dropped, with the lines it printed up to `bucket`.
struct NodeProcess {
    child: Child,
    lines: Vec<String>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    fn line(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("a {prefix:?} line in {:?}", self.lines))
    }
}

fn start_node(command: &mut Command) -> NodeProcess {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut node = NodeProcess {
        child,
        lines: Vec::new(),
    };
    loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("the node prints its lines; so far: {:?}", node.lines));
        let done = line.starts_with("bucket ");
        node.lines.push(line);
        if done {
            return node;
        }
    }
}

/// A configuration file in a fresh directory.
fn config_file(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, body).unwrap();
    (dir, file)
}

#[test]
fn node_takes_the_file_then_the_environment_then_the_flags() {
    let (_dir, file) = config_file(&format!(
        "service = \"{CLUSTER}/from-file\"\ndiscovery = \"memory://\"\n\
         bind = [\"tcp://127.0.0.1:0\"]\nmetrics = \"127.0.0.1:0\"\n\
         [heartbeat]\ninterval_ms = 200\n"
    ));
    // The file alone.
    let node = start_node(dms().args(["node", "--config"]).arg(&file));
    assert_eq!(node.line("service "), format!("{CLUSTER}/from-file"));
    assert!(node.line("endpoint ").starts_with("tcp://127.0.0.1:"));
    assert!(!node.line("metrics ").ends_with(":0"), "{:?}", node.lines);
    drop(node);
    // The environment over the file.
    let node = start_node(
        dms()
            .args(["node", "--config"])
            .arg(&file)
            .env("DMS_SERVICE", format!("{CLUSTER}/from-env"))
            .env("DMS_METRICS", ""),
    );
    assert_eq!(node.line("service "), format!("{CLUSTER}/from-env"));
    assert!(
        !node.lines.iter().any(|l| l.starts_with("metrics ")),
        "DMS_METRICS= unsets it: {:?}",
        node.lines
    );
    drop(node);
    // The command line over both.
    let node = start_node(
        dms()
            .args(["node", "--config"])
            .arg(&file)
            .args(["--service", &format!("{CLUSTER}/from-flag")])
            .env("DMS_SERVICE", format!("{CLUSTER}/from-env")),
    );
    assert_eq!(node.line("service "), format!("{CLUSTER}/from-flag"));
}

#[test]
fn node_refuses_a_bad_file_or_variable_without_starting() {
    let (_dir, file) = config_file(&format!(
        "service = \"{CLUSTER}/b-1\"\ndiscovery = \"memory://\"\n[heartbeat]\nmissed = 0\n"
    ));
    let out = run(dms().args(["node", "--config"]).arg(&file));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:4:10: heartbeat.missed: must be at least 1",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!text(&out.stdout).contains("bucket "), "it never started");

    // A good file, a bad variable.
    std::fs::write(
        &file,
        format!("service = \"{CLUSTER}/b-1\"\ndiscovery = \"memory://\"\n"),
    )
    .unwrap();
    let out = run(dms()
        .args(["node", "--config"])
        .arg(&file)
        .env("DMS_LEASE_TTL_S", "soon"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DMS_LEASE_TTL_S: lease_ttl_s: expected an integer"),
        "{stderr}"
    );

    // No service anywhere: a usage error saying where it may come from.
    let out = run(dms().args(["node", "--discovery", "memory://"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DMS_SERVICE"), "{stderr}");
}

/// Over a real etcd: a node started from a configuration file serves `dms request`.
#[cfg(feature = "etcd")]
#[test]
fn a_node_from_a_file_answers_requests() {
    let etcd = dms_test_support::etcd::EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let (_dir, file) = config_file(&format!(
        "service = \"{CLUSTER}/cfg-1\"\ndiscovery = \"{discovery}\"\n\
         bind = [\"tcp://127.0.0.1:0\"]\nlease_ttl_s = 2\n\
         [heartbeat]\ninterval_ms = 200\nmissed = 3\n\
         [acl]\nallow = [\"/cf/cn/linux/w1/g1/dms-cli\"]\n"
    ));
    let node = start_node(dms().args(["node", "--echo", "--config"]).arg(&file));
    assert_eq!(node.line("service "), format!("{CLUSTER}/cfg-1"));
    let out = run(dms().args([
        "request",
        "--discovery",
        &discovery,
        "--to",
        CLUSTER,
        "--json",
        "--data",
        "hi",
        "--count",
        "3",
    ]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    let replies: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 3, "{stdout}");
    for reply in &replies {
        assert_eq!(reply["instance"], format!("{CLUSTER}/cfg-1"), "{reply}");
        assert_eq!(reply["payload"], "hi", "{reply}");
    }
    drop(node);
}
