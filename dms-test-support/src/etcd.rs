//! Real etcd servers for tests: [`EtcdServer`] (one member) and [`EtcdCluster`] (several
//! members on loopback), each in a fresh temporary data directory.
//!
//! They run `etcd` (`$DMS_ETCD`, else `etcd` on `PATH`, else `/usr/bin/etcd`; Debian's
//! `etcd-server`, which `scripts/setup.sh` installs) on free loopback ports, wait until
//! it reports healthy, and SIGKILL it when dropped. A watchdog process per member kills it
//! too if the test process dies without dropping it, so no etcd outlives its test.
//!
//! ```no_run
//! use dms_test_support::etcd::EtcdServer;
//!
//! let mut etcd = EtcdServer::start();
//! let endpoint = etcd.endpoint(); // "127.0.0.1:PORT"
//! etcd.kill(); // as if it crashed
//! etcd.restart(); // same data, same ports
//! # drop(endpoint);
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::wait::DEADLINE;

/// Starts tried before giving up (a free port may be taken before etcd binds it).
const START_ATTEMPTS: usize = 3;

/// One etcd member, started and killed at will.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// `name=http://127.0.0.1:PEER,...` of every member.
    initial_cluster: String,
    process: Option<Running>,
}

#[derive(Debug)]
struct Running {
    etcd: Child,
    /// `sh -c 'read; kill -9 PID'`: kills etcd when its stdin closes (with this process).
    watchdog: Child,
    _watchdog_stdin: Option<ChildStdin>,
}

/// A single-member etcd on loopback, killed (and its data removed) when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
    dir: TempDir,
}

/// An etcd cluster of several members on loopback, killed (and its data removed) when
/// dropped. Members are numbered from 0.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts a fresh single-member etcd and waits until it is healthy. Panics (with
    /// etcd's log) if it does not come up within [`DEADLINE`].
    pub fn start() -> Self {
        let mut attempt = 1;
        loop {
            let dir = TempDir::new("server");
            let mut member = Member::new(&dir, "etcd0", free_port(), free_port());
            member.initial_cluster = member.peer_entry();
            member.spawn();
            match member.wait_healthy() {
                Ok(()) => return Self { member, dir },
                // Another process may have taken a port between our check and etcd's bind.
                Err(error) if attempt < START_ATTEMPTS && member.exited() => {
                    eprintln!("etcd did not start (attempt {attempt}), retrying: {error}");
                    attempt += 1;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// Kills etcd with SIGKILL (as a crash would) and waits for it to exit. Its data
    /// stays for [`restart`](Self::restart). No-op if it is not running.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Starts etcd again on the same data directory and ports (killing it first if it
    /// runs), and waits until it is healthy.
    pub fn restart(&mut self) {
        self.member.kill();
        self.member.spawn();
        if let Err(error) = self.member.wait_healthy() {
            panic!("{error}");
        }
    }

    /// Whether the etcd process is running (started and not exited).
    pub fn is_running(&mut self) -> bool {
        self.member.is_running()
    }

    /// Stops etcd with SIGSTOP: its sockets stay open and accept, nothing answers (a slow
    /// or wedged server, not a dead one). [`thaw`](Self::thaw) resumes it; dropping the
    /// server kills it either way. Panics if it is not running.
    pub fn freeze(&mut self) {
        self.member.signal("-STOP");
    }

    /// Resumes etcd after [`freeze`](Self::freeze) (SIGCONT).
    pub fn thaw(&mut self) {
        self.member.signal("-CONT");
    }

    /// The temporary directory holding the data directory and etcd's log.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl EtcdCluster {
    /// Starts a fresh cluster of `size` members (`--initial-cluster-state new`) and waits
    /// until every member is healthy (a leader is elected). Panics (with the logs) if it
    /// does not come up within [`DEADLINE`].
    pub fn start(size: usize) -> Self {
        assert!(size > 0, "a cluster has at least one member");
        let mut attempt = 1;
        loop {
            let dir = TempDir::new("cluster");
            let mut members: Vec<Member> = (0..size)
                .map(|i| Member::new(&dir, &format!("etcd{i}"), free_port(), free_port()))
                .collect();
            let initial_cluster = members
                .iter()
                .map(Member::peer_entry)
                .collect::<Vec<_>>()
                .join(",");
            for member in &mut members {
                member.initial_cluster.clone_from(&initial_cluster);
                member.spawn();
            }
            let started: Result<(), String> = members.iter_mut().try_for_each(Member::wait_healthy);
            match started {
                Ok(()) => return Self { members, dir },
                Err(error)
                    if attempt < START_ATTEMPTS && members.iter_mut().any(Member::exited) =>
                {
                    eprintln!("etcd cluster did not start (attempt {attempt}), retrying: {error}");
                    attempt += 1;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    /// The client endpoints of all members (running or not), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Kills member `i` with SIGKILL and waits for it to exit. No-op if it is not
    /// running.
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again on its data directory and ports, and waits until it is
    /// healthy.
    pub fn restart_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        member.kill();
        member.spawn();
        if let Err(error) = member.wait_healthy() {
            panic!("{error}");
        }
    }

    /// The index of the current leader, as the running members report it (etcd's
    /// maintenance status: `leader` against each member's own id); `None` while there is
    /// none, or it is not running.
    pub fn leader(&mut self) -> Option<usize> {
        let mut ids = Vec::with_capacity(self.members.len());
        let mut leader = None;
        for member in &mut self.members {
            let status = if member.is_running() {
                member.status()
            } else {
                None
            };
            ids.push(status.as_ref().map(|s| s.member));
            if let Some(status) = status {
                leader = leader.or(Some(status.leader).filter(|&id| id != 0));
            }
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }

    /// Waits (polling, up to [`DEADLINE`]) until the running members agree on a leader,
    /// and returns its index.
    pub fn wait_for_leader(&mut self) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(leader) = self.leader() {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader within {DEADLINE:?}; logs in {}",
                self.dir.0.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The temporary directory holding the members' data directories and logs.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

/// What a member's maintenance status says.
struct Status {
    member: u64,
    leader: u64,
}

impl Member {
    fn new(dir: &TempDir, name: &str, client_port: u16, peer_port: u16) -> Self {
        Self {
            name: name.to_owned(),
            client_port,
            peer_port,
            data_dir: dir.0.join(format!("{name}.data")),
            log: dir.0.join(format!("{name}.log")),
            initial_cluster: String::new(),
            process: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn peer_entry(&self) -> String {
        format!("{}=http://127.0.0.1:{}", self.name, self.peer_port)
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.log.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning the log handle: {e}"));
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let etcd = Command::new(etcd_binary())
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.cluster_token()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (install etcd: `bash scripts/setup.sh`, or set DMS_ETCD)",
                    etcd_binary()
                )
            });
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ignored; kill -9 {} 2>/dev/null", etcd.id()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the etcd watchdog (sh): {e}"));
        let stdin = watchdog.stdin.take();
        self.process = Some(Running {
            etcd,
            watchdog,
            _watchdog_stdin: stdin,
        });
    }

    /// The same for every member of one cluster, different between clusters.
    fn cluster_token(&self) -> String {
        let dir = self.data_dir.parent().unwrap_or(&self.data_dir);
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        format!("dms-{name}")
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the running etcd.
    fn signal(&mut self, signal: &str) {
        let Some(running) = &self.process else {
            panic!("etcd is not running");
        };
        let pid = running.etcd.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap_or_else(|e| panic!("kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    fn is_running(&mut self) -> bool {
        match &mut self.process {
            Some(running) => matches!(running.etcd.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn kill(&mut self) {
        let Some(mut running) = self.process.take() else {
            return;
        };
        // The watchdog first: it must not outlive etcd (the pid could be reused).
        let _ = running.watchdog.kill();
        let _ = running.watchdog.wait();
        let _ = running.etcd.kill();
        let _ = running.etcd.wait();
    }

    /// Whether the etcd process was started and has exited.
    fn exited(&mut self) -> bool {
        match &mut self.process {
            Some(running) => !matches!(running.etcd.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Polls `/health` until it reports healthy; an error (with the log) if etcd exits or
    /// does not get healthy within [`DEADLINE`].
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(response) = http(self.client_port, "GET", "/health", "") {
                if response.contains(r#""health":"true""#) {
                    return Ok(());
                }
            }
            if !self.is_running() {
                return Err(format!(
                    "etcd {} exited while starting:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd {} not healthy within {DEADLINE:?}:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The maintenance status, through etcd's JSON gateway.
    fn status(&self) -> Option<Status> {
        let response = http(self.client_port, "POST", "/v3/maintenance/status", "{}")?;
        Some(Status {
            member: json_u64(&response, "member_id")?,
            leader: json_u64(&response, "leader").unwrap_or(0),
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(kind: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "dms-etcd-{kind}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn etcd_binary() -> String {
    if let Ok(path) = std::env::var("DMS_ETCD") {
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    on_path.map_or_else(|| "/usr/bin/etcd".to_owned(), |p| p.display().to_string())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// One HTTP/1.1 request to `127.0.0.1:port`; the whole response, if any came.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of `"field":"123"` in etcd's JSON (64-bit numbers are strings there).
fn json_u64(json: &str, field: &str) -> Option<u64> {
    let marker = format!("\"{field}\":\"");
    let start = json.find(&marker)? + marker.len();
    let digits = &json[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::json_u64;

    #[test]
    fn reads_status_fields() {
        let status = r#"{"header":{"cluster_id":"1","member_id":"13668033151171901709","revision":"1"},"version":"3.4.23","leader":"42"}"#;
        assert_eq!(
            json_u64(status, "member_id"),
            Some(13_668_033_151_171_901_709)
        );
        assert_eq!(json_u64(status, "leader"), Some(42));
        assert_eq!(json_u64(status, "absent"), None);
    }
}
