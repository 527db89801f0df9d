//! Turning TCP connections into links (the handshake and everything after it is
//! [`LinkSet::establish`]): dialling, the accept loop and the reconnect supervisor of
//! connected links.

use std::sync::Arc;

use dms_core::{Backoff, Endpoint, LinkDownCause, MiddlewareError, PeerId, Role};
use dms_link::{LinkHandle, LinkSet, Slot};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::address::{endpoint_of, host_port};
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
    let remote = endpoint_of(stream.peer_addr()?);
    stream.set_nodelay(true)?;
    let (read_half, write_half) = stream.into_split();
    links
        .establish(read_half, write_half, remote, role, slot, assigned, None)
        .await
}

/// Connects to `endpoint` and establishes a link.
pub(crate) async fn dial(
    links: &Arc<LinkSet>,
    endpoint: &Endpoint,
    assigned: Option<PeerId>,
) -> Result<LinkHandle, MiddlewareError> {
    let address = host_port(endpoint)?;
    let slot = links.take_slot()?;
    // The OS would wait minutes for an unanswered SYN: the handshake timeout bounds the
    // whole dial.
    let timeout = links.config().limits().handshake_timeout();
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| MiddlewareError::HandshakeTimeout(timeout))??;
    establish(links, stream, Role::Connector, slot, assigned).await
}

/// Accepts connections on `listener` until shutdown; each handshakes in its own task.
pub(crate) async fn accept_loop(links: Arc<LinkSet>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = links.closed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let links = links.clone();
                tokio::spawn(async move {
                    let remote = endpoint_of(addr);
                    let result = match links.take_slot() {
                        Ok(slot) => tokio::select! {
                            result = establish(&links, stream, Role::Acceptor, slot, None) => result.map(drop),
                            () = links.closed() => Ok(()),
                        },
                        Err(err) => Err(err),
                    };
                    if let Err(error) = result {
                        debug!(%remote, %error, "connection refused");
                        links.emit_refused(remote, error);
                    }
                });
            }
            Err(error) => {
                // Out of descriptors or a connection reset before accept: back off a little
                // rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
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
                attempt = dial(&shared.links, &endpoint, assigned.clone()) => attempt,
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
