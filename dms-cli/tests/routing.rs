//! Multi-hop routing across processes on a real etcd: two `dms node --broker` processes, a
//! service that links only to the broker cluster, an origin that reaches the service only
//! through them (`--routed-target`, `dms request --via`); `dms ls --routes` and
//! `dms route` show the links and the path; one broker is SIGKILLed under traffic and the
//! requests go on through the other.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dms_test_support::etcd::EtcdServer;

const WORLD: &str = "/rt/cn/linux/w1/g1";
const DEADLINE: Duration = Duration::from_secs(30);
/// Heartbeat of every process: a silent peer is dead after 3 × 200 ms.
const HEARTBEAT_MS: u64 = 200;
/// What etcd's watch, the routing table's update and process scheduling on a loaded
/// machine may add to the heartbeat bound before traffic has moved.
const WATCH_DELAY: Duration = Duration::from_secs(2);

fn dms() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dms"))
}

fn path(cluster: &str, instance: &str) -> String {
    format!("{WORLD}/{cluster}/{instance}")
}

fn cluster(name: &str) -> String {
    format!("{WORLD}/{name}")
}

/// A process of the `dms` tool, SIGKILLed when dropped; its stdout lines arrive on
/// `lines` with the instant each was read.
struct Process {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Process {
    fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line within the deadline.
    fn line(&self, what: &str) -> (Instant, String) {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no line from {what} within {DEADLINE:?}"))
    }

    /// `kill -9`, reaped.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `dms node` for `service` with `args`, and waits for it to print its bucket
/// (it is registered then).
fn start_node(discovery: &str, service: &str, args: &[&str]) -> Process {
    let node = Process::spawn(
        dms()
            .args(["node", "--discovery", discovery, "--service", service])
            .args([
                "--heartbeat-ms",
                &HEARTBEAT_MS.to_string(),
                "--lease-ttl-s",
                "2",
            ])
            .args(args),
    );
    loop {
        let (_, line) = node.line(service);
        if line.starts_with("bucket ") {
            return node;
        }
    }
}

fn run(args: &[&str]) -> Output {
    dms().args(args).output().unwrap()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `dms ls --routes --json PREFIX`: instance → (forwards, [(peer, usable)]).
type Records = BTreeMap<String, (bool, Vec<(String, bool)>)>;

fn routes(discovery: &str) -> Records {
    let out = run(&["ls", "--discovery", discovery, "--routes", "--json", WORLD]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout)
        .into_iter()
        .filter(|v| v.get("instance").is_some())
        .map(|v| {
            let links = v["links"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["to"].as_str().unwrap().to_owned(),
                        l["usable"].as_bool().unwrap(),
                    )
                })
                .collect();
            (
                v["instance"].as_str().unwrap().to_owned(),
                (v["forwards"].as_bool().unwrap(), links),
            )
        })
        .collect()
}

/// Polls `dms ls --routes` until `check` holds (deadline); returns the records then.
fn wait_routes(discovery: &str, what: &str, check: impl Fn(&Records) -> bool) -> Records {
    let start = Instant::now();
    loop {
        let records = routes(discovery);
        if check(&records) {
            return records;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The peers `instance` lists, usable or not.
fn peers(records: &Records, instance: &str) -> Vec<(String, bool)> {
    records
        .get(instance)
        .map(|r| r.1.clone())
        .unwrap_or_default()
}

fn usable_peers(records: &Records, instance: &str) -> Vec<String> {
    peers(records, instance)
        .into_iter()
        .filter(|(_, usable)| *usable)
        .map(|(peer, _)| peer)
        .collect()
}

/// One link of a route: from, to, cost.
type Hop = (String, String, u64);

/// `dms route --json --from FROM --to TO`: Ok(hops as (from, to, cost)) or Err(why), and
/// the exit code.
fn route(discovery: &str, from: &str, to: &str) -> (Result<Vec<Hop>, String>, i32) {
    let out = run(&[
        "route",
        "--discovery",
        discovery,
        "--from",
        from,
        "--to",
        to,
        "--json",
    ]);
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v = &lines[0];
    let code = out.status.code().unwrap();
    if v["reachable"].as_bool().unwrap() {
        let hops: Vec<Hop> = v["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["from"].as_str().unwrap().to_owned(),
                    h["to"].as_str().unwrap().to_owned(),
                    h["cost"].as_u64().unwrap(),
                )
            })
            .collect();
        let total: u64 = hops.iter().map(|h| h.2).sum();
        assert_eq!(v["total_cost"].as_u64(), Some(total), "{v}");
        (Ok(hops), code)
    } else {
        (Err(v["why"].as_str().unwrap().to_owned()), code)
    }
}

#[test]
fn requests_reach_a_service_through_brokers_and_survive_a_broker_kill() {
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let d = discovery.as_str();
    let (broker_1, broker_2) = (path("Broker", "broker-1"), path("Broker", "broker-2"));
    let trade = path("Trade", "trade-1");
    let lobby = path("Lobby", "lobby-1");
    let mut brokers = BTreeMap::new();
    for broker in [&broker_1, &broker_2] {
        brokers.insert(broker.clone(), start_node(d, broker, &["--broker"]));
    }
    let _trade = start_node(d, &trade, &["--echo", "--target", &cluster("Broker")]);
    // A long-lived origin: it dials the brokers only and reaches Trade through them.
    let _lobby = start_node(
        d,
        &lobby,
        &[
            "--target",
            &cluster("Broker"),
            "--routed-target",
            &cluster("Trade"),
        ],
    );

    // Both ends of each link publish it: the service and the origin each hold a usable
    // link with both brokers, and none with each other.
    let records = wait_routes(d, "usable links to both brokers", |r| {
        [&trade, &lobby]
            .iter()
            .all(|who| usable_peers(r, who).len() == 2)
    });
    for who in [&trade, &lobby] {
        let mut listed: Vec<String> = peers(&records, who).into_iter().map(|p| p.0).collect();
        listed.sort();
        assert_eq!(
            listed,
            [broker_1.clone(), broker_2.clone()],
            "{who}'s links"
        );
        assert!(!records[who.as_str()].0, "{who} does not forward");
    }
    for broker in [&broker_1, &broker_2] {
        assert!(records[broker.as_str()].0, "{broker} forwards");
        assert!(
            !peers(&records, broker)
                .iter()
                .any(|(p, _)| p.contains("/Broker/")),
            "the brokers do not link to each other"
        );
    }

    // The human listing says the same.
    let out = run(&["ls", "--discovery", d, "--routes", WORLD]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("routing table /rt/cn/linux/routing_table"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{broker_1}  forwards (broker)")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{trade}  does not forward, 2 links")),
        "{text}"
    );
    assert!(!text.contains("one-sided"), "{text}");

    // `dms route`: lobby-1 -> a broker -> trade-1, two links of cost 1.
    let (hops, code) = route(d, &lobby, &trade);
    assert_eq!(code, 0);
    let hops = hops.unwrap();
    assert_eq!(hops.len(), 2, "{hops:?}");
    assert_eq!(hops[0].0, lobby);
    assert!(hops[0].1.contains("/Broker/"), "{hops:?}");
    assert_eq!(hops[1], (hops[0].1.clone(), trade.clone(), 1));
    let out = run(&["route", "--discovery", d, "--from", &lobby, "--to", &trade]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 hops, total cost 2"), "{text}");
    // Unreachable: an instance without a record, with a non-zero exit.
    let (why, code) = route(d, &lobby, &path("Nobody", "n-1"));
    assert_eq!(code, 4);
    assert!(why.unwrap_err().contains("has no link record"));

    // A request from the command line reaches trade-1 through a broker.
    let out = run(&[
        "request",
        "--discovery",
        d,
        "--to",
        &cluster("Trade"),
        "--via",
        &cluster("Broker"),
        "--data",
        "hi",
        "--count",
        "5",
        "--json",
        "--heartbeat-ms",
        &HEARTBEAT_MS.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), 5);
    for reply in &replies {
        assert_eq!(reply["instance"], trade.as_str(), "{reply}");
        assert_eq!(reply["payload"], "hi");
    }

    // Traffic from a requester that lives through the kill: one request every 20 ms, each
    // with a 1.5 s timeout.
    const COUNT: u64 = 150;
    let requester = Process::spawn(dms().args([
        "request",
        "--discovery",
        d,
        "--to",
        &cluster("Trade"),
        "--via",
        &cluster("Broker"),
        "--data",
        "hi",
        "--count",
        &COUNT.to_string(),
        "--interval-ms",
        "20",
        "--timeout-ms",
        "1500",
        "--json",
        "--heartbeat-ms",
        &HEARTBEAT_MS.to_string(),
    ]));
    let mut results: BTreeMap<u64, (Instant, Result<String, String>)> = BTreeMap::new();
    let read = |results: &mut BTreeMap<u64, _>| {
        let (at, line) = requester.line("dms request");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        let result = match v["instance"].as_str() {
            Some(instance) => Ok(instance.to_owned()),
            None => Err(format!("{}: {}", v["kind"], v["error"])),
        };
        results.insert(seq, (at, result));
        seq
    };
    // Five answers first, then the broker the requester's route uses is killed.
    while results.values().filter(|r| r.1.is_ok()).count() < 5 {
        read(&mut results);
    }
    // The requester is /.../dms-cli/cli-PID-XXXXXXXX.
    let name = format!("/dms-cli/cli-{}-", requester.child.id());
    let origin = routes(d)
        .into_keys()
        .find(|p| p.contains(&name))
        .expect("the requester's link record");
    let (hops, _) = route(d, &origin, &trade);
    let victim = hops.unwrap()[0].1.clone();
    let survivor = if victim == broker_1 {
        &broker_2
    } else {
        &broker_1
    };
    brokers.get_mut(&victim).unwrap().kill();
    let killed_at = Instant::now();

    // Every request ends answered or with a typed error (none lost), and answers come
    // again within the heartbeat bound plus the watch delay.
    let mut last = 0;
    while last + 1 < COUNT {
        last = read(&mut results);
    }
    assert_eq!(
        results.len() as u64,
        COUNT,
        "every request is accounted for"
    );
    let exit = {
        let mut child = requester;
        let start = Instant::now();
        loop {
            if let Some(status) = child.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "dms request did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let failed: Vec<&String> = results
        .values()
        .filter_map(|r| r.1.as_ref().err())
        .collect();
    assert_eq!(exit.success(), failed.is_empty(), "{failed:?}");
    for error in &failed {
        assert!(
            ["\"error\"", "\"timeout\"", "\"no_instance\""]
                .iter()
                .any(|kind| error.starts_with(kind)),
            "{error}"
        );
    }
    for (_, result) in results.values() {
        if let Ok(instance) = result {
            assert_eq!(instance, &trade);
        }
    }
    let first_after = results
        .values()
        .filter(|(at, r)| *at > killed_at && r.is_ok())
        .map(|(at, _)| at.duration_since(killed_at))
        .min()
        .expect("answers after the kill");
    let bound = Duration::from_millis(3 * HEARTBEAT_MS) + WATCH_DELAY;
    eprintln!(
        "killed {victim}: answers again after {first_after:?} (bound {bound:?}); {} of {COUNT} failed: {failed:?}",
        failed.len()
    );
    assert!(
        first_after <= bound,
        "traffic moved after {first_after:?}, bound {bound:?}; failures: {failed:?}"
    );
    // The last requests were all answered (through the survivor).
    assert!(
        results.range(COUNT - 20..).all(|(_, (_, r))| r.is_ok()),
        "{failed:?}"
    );

    // The table follows: the victim's links go, the route goes through the survivor.
    wait_routes(d, "the victim's links withdrawn", |r| {
        [&trade, &lobby]
            .iter()
            .all(|who| peers(r, who).iter().all(|(p, _)| p != &victim))
    });
    let start = Instant::now();
    loop {
        let (hops, _) = route(d, &lobby, &trade);
        if let Ok(hops) = &hops {
            if hops[0].1 == *survivor {
                assert_eq!(hops.len(), 2);
                break;
            }
        }
        assert!(start.elapsed() < DEADLINE, "route never moved: {hops:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The routing settings of a node's configuration file, checked by `dms config check`:
/// the configuration in effect shows them, the environment overrides them, and a bad
/// value is reported with its line and column.
#[test]
fn config_check_reads_the_routing_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.toml");
    std::fs::write(
        &file,
        format!(
            "service = \"{}\"\nbroker = true\nrouted_targets = [\"{}\"]\nlink_cost = 5\n",
            path("Broker", "broker-1"),
            cluster("Trade")
        ),
    )
    .unwrap();
    let out = dms()
        .args(["config", "check", "--env"])
        .arg(&file)
        .env("DMS_HOP_LIMIT", "4")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "broker = true".to_owned(),
        format!("routed_targets = [\"{}\"]", cluster("Trade")),
        "link_cost = 5".to_owned(),
        "hop_limit = 4".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
    }
    std::fs::write(&file, "broker = 1\nhop_limit = 300\n").unwrap();
    let out = dms().args(["config", "check"]).arg(&file).output().unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{errors}");
    assert!(
        errors.contains("broker.toml:1:10: broker: expected a boolean"),
        "{errors}"
    );
    assert!(
        errors.contains("broker.toml:2:13: hop_limit: 300 is more than 255"),
        "{errors}"
    );
}
