//! What the cross-process tests share: spawning `shm-peer`, reading its report lines
//! and the middleware's events with deadlines, signals.
#![allow(dead_code)] // each test file uses part of it

#[path = "../../src/bin/shm_peer/numbered.rs"]
pub(crate) mod numbered;

use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dms_core::{Incoming, MessageMiddleware};
use dms_transport_shm::ShmMiddleware;
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The peer program, built by cargo for these tests.
pub(crate) const PEER: &str = env!("CARGO_BIN_EXE_shm-peer");

/// A name no other test (or concurrent run) uses.
pub(crate) fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("xp-{tag}-{}-{n}", std::process::id())
}

/// A running `shm-peer` and its report lines.
pub(crate) struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far (shown when an expectation fails).
    pub(crate) log: Vec<String>,
}

impl Peer {
    /// Starts `shm-peer ARGS` (killed if the test drops it).
    pub(crate) fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(PEER)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn shm-peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            log: Vec::new(),
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// The next report line within `within` (`None`: end of output or deadline).
    pub(crate) async fn line(&mut self, within: Duration) -> Option<String> {
        let line = tokio::time::timeout(within, self.lines.next_line()).await;
        let line = line.ok()?.ok()??;
        self.log.push(line.clone());
        Some(line)
    }

    /// Waits for a line starting with `prefix` (other lines are skipped) and returns the
    /// rest of it; panics at the deadline.
    pub(crate) async fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.line(left).await {
                Some(line) if line.starts_with(prefix) => {
                    return line[prefix.len()..].trim().to_owned();
                }
                Some(_) => {}
                None => panic!(
                    "shm-peer did not report {prefix:?} within {within:?}; it said {:?}",
                    self.log
                ),
            }
        }
    }

    /// Writes `line` to its stdin.
    pub(crate) async fn say(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("stdin");
        stdin.flush().await.expect("stdin");
    }

    /// Sends `signal` to it.
    pub(crate) fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.pid()).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// SIGKILL, then waits until it is gone (reaped).
    pub(crate) async fn kill(&mut self) {
        self.signal(Signal::KILL);
        self.wait(Duration::from_secs(5)).await;
    }

    /// Waits for it to exit; returns its exit code (`None`: killed by a signal).
    pub(crate) async fn wait(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("shm-peer did not exit within {within:?}: {:?}", self.log))
            .expect("wait");
        status.code()
    }
}

/// `future` within `within`, or a panic naming `what`.
pub(crate) async fn within<T>(within: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {within:?}"))
}

/// Receives events until `pick` returns something, within `within`; the events skipped
/// are returned too.
pub(crate) async fn event<T>(
    shm: &ShmMiddleware,
    within_: Duration,
    what: &str,
    mut pick: impl FnMut(&Incoming) -> Option<T>,
) -> T {
    let mut skipped = Vec::new();
    let found = tokio::time::timeout(within_, async {
        loop {
            let event = shm.recv().await.expect("recv");
            if let Some(found) = pick(&event) {
                return found;
            }
            skipped.push(event);
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what}: not within {within_:?}; skipped {skipped:?}"))
}

/// Polls `check` until it holds, within `within` (for counters updated by other tasks).
pub(crate) async fn eventually(within_: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within_;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within_:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// This process's resident memory (bytes).
pub(crate) fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}
