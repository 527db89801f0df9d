//! Turning TCP connections into links: the handshake, the accept loop and the reconnect
//! supervisor of connected links.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dms_core::wire::{Command, Handshake, HandshakeConfig, MessageCodec, PeerInfo, SocketType};
use dms_core::{Endpoint, LinkDownCause, MiddlewareError, PeerId, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::address::{endpoint_of, host_port};
use crate::link::{Link, run_reader, run_writer};
use crate::middleware::Shared;
use crate::stats::Counters;
use dms_core::Backoff;

/// Runs the ZMTP handshake on a fresh connection, within the handshake timeout.
/// Returns the peer's READY and the bytes that followed it.
async fn handshake(
    shared: &Shared,
    stream: &mut TcpStream,
) -> Result<(PeerInfo, BytesMut), MiddlewareError> {
    let limits = shared.config.limits;
    let config = HandshakeConfig {
        socket_type: SocketType::Router,
        identity: shared
            .config
            .identity
            .as_ref()
            .map(PeerId::to_frame)
            .unwrap_or_default(),
        limits,
    };
    let exchange = async {
        let mut handshake = Handshake::new(config);
        let mut out = BytesMut::new();
        handshake.poll_transmit(&mut out);
        stream.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            if let Some(info) = handshake.handle_bytes(&mut buf)? {
                return Ok((info, buf));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(MiddlewareError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    };
    match tokio::time::timeout(limits.handshake_timeout(), exchange).await {
        Ok(result) => result,
        Err(_) => Err(MiddlewareError::HandshakeTimeout(
            limits.handshake_timeout(),
        )),
    }
}

/// Tells the peer why it is refused (best effort, without waiting).
fn refuse(stream: &TcpStream, reason: &str) {
    let mut out = BytesMut::new();
    Command::Error {
        reason: Bytes::copy_from_slice(reason.as_bytes()),
    }
    .encode(&mut out);
    let _ = stream.try_write(&out);
}

/// Handshakes `stream`, registers the link under its identity and starts its tasks.
/// `assigned` names a peer that announces no identity (a reconnecting link keeps its id).
async fn establish(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    role: Role,
    slot: OwnedSemaphorePermit,
    assigned: Option<PeerId>,
) -> Result<Arc<Link>, MiddlewareError> {
    let remote = endpoint_of(stream.peer_addr()?);
    stream.set_nodelay(true)?;
    let (info, leftover) = match handshake(shared, &mut stream).await {
        Ok(done) => done,
        Err(err) => {
            Counters::bump(&shared.counters.handshake_failures);
            if let MiddlewareError::Handshake(e) = &err {
                refuse(&stream, &e.to_string());
            }
            return Err(err);
        }
    };
    // Identities starting with a zero byte are ours to generate: a peer announcing one is
    // treated as announcing none, so it cannot take over a generated id.
    let peer = match PeerId::new(info.identity) {
        Ok(announced) if !announced.is_generated() => announced,
        _ => assigned.unwrap_or_else(|| shared.generate_id()),
    };
    let link = Arc::new(Link::new(
        peer.clone(),
        remote,
        role,
        shared.config.link_queue_bytes,
        shared.shutdown.child_token(),
        slot,
    ));
    if !shared.register(&link) {
        Counters::bump(&shared.counters.duplicate_identities);
        refuse(&stream, "duplicate identity");
        return Err(MiddlewareError::DuplicateIdentity(peer));
    }
    Counters::bump(&shared.counters.links_up);
    debug!(%peer, ?role, remote = %link.remote, "link up");
    let (read_half, write_half) = stream.into_split();
    tokio::spawn(run_writer(shared.clone(), link.clone(), write_half));
    tokio::spawn(run_reader(
        shared.clone(),
        link.clone(),
        read_half,
        leftover,
        MessageCodec::new(shared.config.limits),
    ));
    Ok(link)
}

/// Connects to `endpoint` and establishes a link.
pub(crate) async fn dial(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    assigned: Option<PeerId>,
) -> Result<Arc<Link>, MiddlewareError> {
    let address = host_port(endpoint)?;
    let slot = shared.take_slot()?;
    // The OS would wait minutes for an unanswered SYN: the handshake timeout bounds the
    // whole dial.
    let timeout = shared.config.limits.handshake_timeout();
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| MiddlewareError::HandshakeTimeout(timeout))??;
    establish(shared, stream, Role::Connector, slot, assigned).await
}

/// Accepts connections on `listener` until shutdown; each handshakes in its own task.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let remote = endpoint_of(addr);
                    let result = match shared.take_slot() {
                        Ok(slot) => tokio::select! {
                            result = establish(&shared, stream, Role::Acceptor, slot, None) => result.map(drop),
                            () = shared.shutdown.cancelled() => Ok(()),
                        },
                        Err(err) => Err(err),
                    };
                    if let Err(error) = result {
                        debug!(%remote, %error, "connection refused");
                        shared.emit_refused(remote, error);
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
    mut link: Arc<Link>,
    stop: Arc<CancellationToken>,
) {
    let assigned = link.peer.is_generated().then(|| link.peer.clone());
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
            Counters::bump(&shared.counters.reconnect_attempts);
            let attempt = tokio::select! {
                attempt = dial(&shared, &endpoint, assigned.clone()) => attempt,
                () = stop.cancelled() => return,
            };
            match attempt {
                Ok(link) => {
                    info!(%endpoint, peer = %link.peer, "reconnected");
                    break link;
                }
                Err(error) => debug!(%endpoint, %error, ?delay, "reconnect failed"),
            }
        };
        // The peer may come back under another identity: `disconnect` finds it by the new one.
        shared.track_supervisor(&link.peer, &stop);
    }
}
