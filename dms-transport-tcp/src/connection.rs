//! Turning TCP connections into links (the handshake and everything after it is
//! [`LinkSet::establish`]): dialling, the accept loop and the reconnect supervisor of
//! connected links.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dms_core::{Backoff, Endpoint, LinkDownCause, MiddlewareError, PeerId, Role};
use dms_link::{LinkHandle, LinkSet, Slot};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::address::{SCHEME, endpoint_of, host_port};
use crate::state::Shared;

/// Makes a link of a fresh TCP connection: `TCP_NODELAY`, then the link engine's
/// handshake and registration. `assigned` names a peer that announces no identity (a
/// reconnecting link keeps its id).
async fn establish(
    links: &Arc<LinkSet>,
    stream: TcpStream,
    role: Role,
    slot: Slot,
    assigned: Option<PeerId>,
) -> Result<LinkHandle, MiddlewareError> {
    let remote = endpoint_of(stream.peer_addr()?, SCHEME);
    stream.set_nodelay(true)?;
    let (read_half, write_half) = stream.into_split();
    links
        .establish(read_half, write_half, remote, role, slot, assigned, None)
        .await
}

/// Connects to `endpoint` and establishes a link (over TLS in a `tcp+tls` middleware).
pub(crate) async fn dial(
    shared: &Shared,
    endpoint: &Endpoint,
    assigned: Option<PeerId>,
) -> Result<LinkHandle, MiddlewareError> {
    let links = &shared.links;
    let address = host_port(endpoint, shared.config.scheme())?;
    let slot = links.take_slot()?;
    // The OS would wait minutes for an unanswered SYN: the handshake timeout bounds the
    // whole dial.
    let timeout = links.config().limits().handshake_timeout();
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| MiddlewareError::HandshakeTimeout(timeout))??;
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.config.tls {
        // The TLS handshake and the ZMTP one inside it, within one handshake timeout.
        let connect = crate::tls::connect(links, tls, &shared.tls, stream, slot, assigned);
        return match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(MiddlewareError::HandshakeTimeout(timeout)),
        };
    }
    establish(links, stream, Role::Connector, slot, assigned).await
}

/// Makes a link of an accepted connection: plaintext, or TLS in a `tcp+tls` middleware.
async fn accept(
    shared: &Shared,
    stream: TcpStream,
    slot: Slot,
) -> Result<LinkHandle, MiddlewareError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.config.tls {
        return crate::tls::accept(&shared.links, tls, &shared.tls, stream, slot).await;
    }
    establish(&shared.links, stream, Role::Acceptor, slot, None).await
}

/// Shortest interval between two reports of refused connections and failed accepts: a
/// flood of them is one warning per interval, not one line per connection.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the accept loop refused or failed to accept since it last said so, reported at
/// most once per [`REPORT_EVERY`] (the counters in [`dms_link::LinkStats`] have each one).
#[derive(Debug, Default)]
struct Refusals {
    last_report: Option<Instant>,
    peer_limit: u64,
    accept_errors: u64,
}

impl Refusals {
    /// Reports what was counted if the last report is old enough (or there was none).
    fn maybe_report(&mut self, max_peers: usize) {
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|last| now.duration_since(last) < REPORT_EVERY)
        {
            return;
        }
        self.last_report = Some(now);
        warn!(
            peer_limit = self.peer_limit,
            accept_errors = self.accept_errors,
            max_peers,
            "connections refused at the peer limit or not accepted (reported at most every {REPORT_EVERY:?})"
        );
        *self = Self {
            last_report: self.last_report,
            ..Self::default()
        };
    }
}

/// Accepts connections on `listener` until shutdown; each handshakes in its own task.
///
/// A connection beyond [`max_peers`](dms_link::LinkConfig::max_peers) is closed right
/// here, as soon as it is accepted: no task, no buffer, no handshake work for it
/// (reported as `Incoming::Refused`, into the bounded inbound queue). Beyond
/// [`max_handshakes`](dms_link::LinkConfig::max_handshakes) handshaking at once, the
/// oldest handshake is closed to make room ([`dms_link::LinkSet::begin_handshake`]).
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let links = &shared.links;
    let scheme = shared.config.scheme();
    let max_peers = links.config().max_peers();
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = links.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or a connection reset before accept: back off a little
                // rather than spin.
                debug!(%error, "accept failed");
                refusals.accept_errors += 1;
                refusals.maybe_report(max_peers);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let slot = match links.take_slot() {
            Ok(slot) => slot,
            Err(error) => {
                drop(stream);
                refusals.peer_limit += 1;
                refusals.maybe_report(max_peers);
                links.emit_refused(endpoint_of(addr, scheme), error);
                continue;
            }
        };
        // When every place is taken, the oldest handshake gives way to this one.
        let permit = links.begin_handshake();
        let shared = shared.clone();
        tokio::spawn(async move {
            // Held until the handshake is over, whatever its end.
            let links = &shared.links;
            let result = tokio::select! {
                biased;
                result = accept(&shared, stream, slot) => result.map(drop),
                () = permit.evicted() => Ok(()),
                () = links.closed() => Ok(()),
            };
            drop(permit);
            if let Err(error) = result {
                let remote = endpoint_of(addr, scheme);
                debug!(%remote, %error, "connection refused");
                links.emit_refused(remote, error);
            }
        });
    }
}

/// Keeps a connected link alive: when it goes down for any reason other than a local
/// disconnect or shutdown, reconnects with capped exponential backoff and full jitter,
/// until `stop` is cancelled.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    mut link: LinkHandle,
    stop: Arc<CancellationToken>,
) {
    let assigned = link.peer().is_generated().then(|| link.peer().clone());
    let mut backoff = Backoff::new(shared.config.reconnect_initial, shared.config.reconnect_cap);
    loop {
        tokio::select! {
            () = link.finished() => {}
            () = stop.cancelled() => return,
        }
        if matches!(
            link.cause(),
            Some(LinkDownCause::Disconnected | LinkDownCause::Shutdown)
        ) {
            return;
        }
        backoff.reset();
        link = loop {
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return,
            }
            shared.links.count_reconnect_attempt();
            let attempt = tokio::select! {
                attempt = dial(&shared, &endpoint, assigned.clone()) => attempt,
                () = stop.cancelled() => return,
            };
            match attempt {
                Ok(link) => {
                    info!(%endpoint, peer = %link.peer(), "reconnected");
                    break link;
                }
                Err(error) => debug!(%endpoint, %error, ?delay, "reconnect failed"),
            }
        };
        // The peer may come back under another identity: `disconnect` finds it by the new one.
        shared.track_supervisor(link.peer(), &stop);
    }
}
