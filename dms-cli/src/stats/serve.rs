//! `dms node --metrics ADDR`: the Prometheus recorder of `metrics-exporter-prometheus`,
//! installed as the process's global recorder, and a small HTTP/1.x scrape endpoint
//! serving its text format.
//!
//! The listener is bound here (not by the exporter's own `http-listener`, which cannot
//! tell the port it picked for port 0, and would bring hyper into the build): the bound
//! address is known before the node starts and printed with its endpoints.
//!
//! The endpoint is open to whoever reaches the address, and is defended as any other
//! listener of the node: a bounded request head, a deadline per connection and a cap on
//! connections served at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// Time a connection has to send its request and take the reply.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// How often histograms and summaries are drained (the exporter leaves it to us).
const UPKEEP: Duration = Duration::from_secs(5);

/// Why the metrics endpoint cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The address cannot be bound.
    #[error(
        "cannot serve metrics on {addr}: {source}\n  hint: choose another --metrics address (port 0 picks a free one)"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The recorder cannot be installed (another is installed already).
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
}

/// A bound metrics endpoint whose recorder is installed; serving starts with
/// [`MetricsEndpoint::spawn`].
pub(crate) struct MetricsEndpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
    local: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `addr` (port 0 picks one) and installs the Prometheus recorder globally.
    /// Call before the node is built: the kernel registers its figures at start.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| ServeError::Install(e.to_string()))?;
        Ok(Self {
            listener,
            handle,
            local,
        })
    }

    /// The bound address (the port resolved).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves scrapes until the returned task is aborted.
    pub(crate) fn spawn(self) -> tokio::task::JoinHandle<()> {
        let Self {
            listener, handle, ..
        } = self;
        tokio::spawn(async move {
            let upkeep_handle = handle.clone();
            let upkeep = tokio::spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP);
                loop {
                    tick.tick().await;
                    upkeep_handle.run_upkeep();
                }
            });
            let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(CONNECTION_DEADLINE, answer(stream, &handle)).await;
                    drop(permit);
                });
            }
            upkeep.abort();
        })
    }
}

/// Reads one request head and answers it: `GET` (any path) and `HEAD` get the text
/// format, other methods 405, a malformed or oversized head 400; then the connection
/// is closed.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() >= MAX_HEAD {
            break false;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let method = request_line
        .split(|&b| b == b' ')
        .next()
        .unwrap_or_default();
    let is_http = request_line
        .split(|&b| b == b' ')
        .nth(2)
        .is_some_and(|version| version.starts_with(b"HTTP/1."));
    let response = match (complete && is_http, method) {
        (true, b"GET") => reply("200 OK", &handle.render(), true),
        (true, b"HEAD") => reply("200 OK", &handle.render(), false),
        (true, _) => reply("405 Method Not Allowed", "use GET\n", true),
        (false, _) => reply("400 Bad Request", "expected an HTTP/1.x GET\n", true),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

fn reply(status: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
