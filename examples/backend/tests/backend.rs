//! The example backend as `run.sh` runs it, short: a real etcd, 2 brokers, 2 Trade, 2
//! Battle, 1 Club and 1 Lobby processes, a driver playing 6 players; the driver's summary
//! says every player was matched, every match stayed on one Battle instance, every trade
//! was answered through a broker, and nothing was lost. Each wait has a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dms_example_backend::Summary;
use dms_test_support::etcd::EtcdServer;

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(20);
const PLAYERS: u32 = 6;

/// What a process said: a line, or that its output ended.
enum Said {
    Line(String, String),
    Closed(String),
}

/// A running `backend` process, killed if the test ends before it exits.
struct Process {
    name: String,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], name: &str, said: &mpsc::Sender<Said>) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backend"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run backend {args:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, owner) = (said.clone(), name.to_owned());
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[{owner}] {line}");
            let _ = tx.send(Said::Line(owner.clone(), line));
        }
        let _ = tx.send(Said::Closed(owner));
    });
    Process {
        name: name.to_owned(),
        child,
    }
}

/// Waits for what `wanted` accepts (returning its value), failing at the deadline.
fn wait_for<T>(
    said: &mpsc::Receiver<Said>,
    what: &str,
    mut wanted: impl FnMut(&Said) -> Option<T>,
) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match said.recv_timeout(left) {
            Ok(event) => {
                if let Some(value) = wanted(&event) {
                    return value;
                }
            }
            Err(_) => panic!("no {what} within {STEP:?}"),
        }
    }
}

/// Waits until `process` exits (its output closed first), within the deadline.
fn exit_status(process: &mut Process) -> ExitStatus {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not exit within {STEP:?}",
            process.name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn players_are_matched_sticky_and_trade_through_brokers() {
    let started = Instant::now();
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let (tx, said) = mpsc::channel();

    let roles = [
        ("broker", "broker-1"),
        ("broker", "broker-2"),
        ("trade", "trade-1"),
        ("trade", "trade-2"),
        ("battle", "battle-1"),
        ("battle", "battle-2"),
        ("club", "club-1"),
        ("lobby", "lobby-1"),
    ];
    let mut processes: Vec<Process> = roles
        .iter()
        .map(|(role, name)| {
            let args = [role, "--discovery", &discovery, "--instance", name];
            spawn(&args, name, &tx)
        })
        .collect();
    let mut ready = 0;
    wait_for(
        &said,
        "ready line from every process",
        |event| match event {
            Said::Line(_, line) if line.starts_with("ready ") => {
                ready += 1;
                (ready == roles.len()).then_some(())
            }
            Said::Closed(name) => panic!("{name} exited before it was ready"),
            _ => None,
        },
    );

    let players = PLAYERS.to_string();
    let args = [
        "driver",
        "--discovery",
        &discovery,
        "--players",
        &players,
        "--deadline-s",
        "20",
        "--json",
    ];
    let mut driver = spawn(&args, "driver", &tx);
    let summary: Summary = wait_for(&said, "driver summary", |event| match event {
        Said::Line(name, line) if name == "driver" => line
            .strip_prefix("summary ")
            .map(|json| serde_json::from_str(json).expect("a summary")),
        Said::Closed(name) => panic!("{name} exited before the driver's summary"),
        _ => None,
    });
    let status = exit_status(&mut driver);

    // Every player matched, every match on one Battle instance from start to end.
    let matches = PLAYERS / 2;
    assert_eq!(summary.players, PLAYERS);
    assert_eq!(summary.matched, PLAYERS, "{summary:#?}");
    assert_eq!(summary.matches, matches);
    assert_eq!(summary.sticky_matches, matches, "{summary:#?}");
    assert_eq!(summary.matches_by_battle.values().sum::<u32>(), matches);
    assert!(
        summary
            .matches_by_battle
            .keys()
            .all(|b| b.starts_with("battle-"))
    );

    // Trades: a trophy per match, a gift per player; offer and accept on one instance;
    // Lobby and Club reach both Trade instances only through the brokers, which
    // forwarded every offer and accept.
    assert_eq!(summary.trades, matches + PLAYERS, "{summary:#?}");
    assert_eq!(summary.sticky_trades, summary.trades);
    for origin in ["lobby-1", "club-1"] {
        let states = &summary.trade_states[origin];
        let expected: BTreeMap<String, String> = ["trade-1", "trade-2"]
            .iter()
            .map(|t| ((*t).to_owned(), "Routed".to_owned()))
            .collect();
        assert_eq!(states, &expected, "{origin} reaches Trade: {summary:#?}");
        assert!(
            summary.trade_routes[origin]
                .iter()
                .all(|route| route.contains(" > broker-")),
            "{origin}'s routes: {:?}",
            summary.trade_routes[origin]
        );
        assert!(summary.routed_by_origin[origin] > 0);
    }
    assert_eq!(summary.forwarded_by_broker.len(), 2);
    let forwarded: u64 = summary.forwarded_by_broker.values().sum();
    assert!(
        forwarded >= 2 * u64::from(summary.trades),
        "the brokers forwarded {forwarded} messages for {} trades",
        summary.trades
    );

    // Chat reached the Club; the errors are the ones the flow provokes; nothing lost.
    assert_eq!(summary.chats_sent, PLAYERS);
    assert_eq!(
        summary.chats_received.values().copied().collect::<Vec<_>>(),
        vec![u64::from(PLAYERS)]
    );
    assert_eq!(summary.errors.get("trade.already_accepted"), Some(&matches));
    assert_eq!(summary.errors.get("club.not_a_member"), Some(&2));
    assert_eq!(summary.unexpected_errors, 0, "{:?}", summary.errors);
    assert_eq!(summary.lost, 0);
    assert!(status.success(), "driver exit status {status}");

    // Every process stops on SIGTERM and says what it did; Battle's own counts agree.
    for process in &processes {
        let pid = process.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
    }
    let mut hosted = 0;
    let mut closed = 0;
    wait_for(&said, "every process to stop", |event| match event {
        Said::Line(name, line) if name.starts_with("battle-") => {
            if let Some(rest) = line.strip_prefix(&format!("{name}: hosted ")) {
                hosted += rest.split(' ').next()?.parse::<u32>().ok()?;
            }
            None
        }
        Said::Closed(_) => {
            closed += 1;
            (closed == roles.len() + 1).then_some(())
        }
        _ => None,
    });
    assert_eq!(hosted, matches, "matches the Battle instances hosted");
    for process in &mut processes {
        let status = exit_status(process);
        assert!(status.success(), "{} exited with {status}", process.name);
    }
    eprintln!("backend example test: {:?}", started.elapsed());
}
