//! [`QuicMiddleware`]: quinn endpoints, the TLS-authenticated handshake of a link, and the
//! task that closes a connection when its link ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dms_core::{Endpoint, LinkDownCause, MessageMiddleware, MiddlewareError, PeerId, Role};
use dms_link::{LinkHandle, LinkSet, LinkStats, Slot};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use tracing::debug;

use crate::close::{close_for, close_for_cause, codes, from_connection};
use crate::{ALPN, QuicConfig, QuicConfigError, SCHEME};
use dms_tls::SERVER_NAME;

/// Counters of a QUIC middleware: its links', and what the listener refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicStats {
    /// The link counters (links up, handshake failures, refusals, drops).
    pub links: LinkStats,
    /// Connections refused because `max_handshakes` were already in progress.
    pub handshakes_refused: u64,
    /// Retry packets sent to clients that had not proven their address.
    pub retries: u64,
}

#[derive(Debug)]
struct Shared {
    links: Arc<LinkSet>,
    config: QuicConfig,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
    /// Bound endpoints (also used to dial, so peers see one address per node), and
    /// client-only endpoints made for dialling when none fits.
    endpoints: Mutex<Vec<quinn::Endpoint>>,
    handshaking: AtomicUsize,
    handshakes_refused: AtomicU64,
    retries: AtomicU64,
}

/// Counts a handshake in progress while it lives.
struct Handshaking(Arc<Shared>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A [`MessageMiddleware`] over QUIC: one bidirectional stream per link carrying ZMTP 3.1
/// frames, mutual TLS 1.3, the link identity bound to the certificate's service path. See
/// the [crate docs](crate).
///
/// Cheap to clone; when the last clone is dropped every link and endpoint is closed.
#[derive(Debug, Clone)]
pub struct QuicMiddleware {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Shared {
    fn close(&self) {
        self.links.close();
        for endpoint in self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            endpoint.close(VarInt::from_u32(codes::DONE), b"shutdown");
        }
    }

    /// An endpoint to dial `target` from: a bound one that can reach it, or a client-only
    /// one of the right address family (made once).
    fn endpoint_for(&self, target: SocketAddr) -> Result<quinn::Endpoint, MiddlewareError> {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let reaches = |local: SocketAddr| {
            local.is_ipv4() == target.is_ipv4()
                && (local.ip().is_unspecified()
                    || local.ip().is_loopback() == target.ip().is_loopback())
        };
        if let Some(endpoint) = endpoints.iter().find(|e| e.local_addr().is_ok_and(reaches)) {
            return Ok(endpoint.clone());
        }
        let any: SocketAddr = if target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = new_endpoint(any, None)?;
        endpoints.push(endpoint.clone());
        Ok(endpoint)
    }
}

fn new_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, MiddlewareError> {
    let socket = std::net::UdpSocket::bind(addr)?;
    Ok(quinn::Endpoint::new(
        EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// Transport parameters: what a peer may make us hold. The acceptor lets the dialler open
/// one bidirectional stream (the link), the dialler lets the acceptor open none.
fn transport(
    config: &QuicConfig,
    accepts_stream: bool,
) -> Result<TransportConfig, QuicConfigError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(u32::from(accepts_stream)))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(config.idle_timeout)
                .map_err(|e| QuicConfigError::Quinn(e.to_string()))?,
        ))
        .keep_alive_interval(Some(config.keep_alive))
        .stream_receive_window(VarInt::from_u32(config.stream_window))
        .receive_window(VarInt::from_u32(config.connection_window))
        .send_window(config.send_window)
        .datagram_receive_buffer_size(None);
    Ok(t)
}

impl QuicMiddleware {
    /// The link set every link lives in (the forwards of `forward_to_links!`).
    fn links(&self) -> &LinkSet {
        &self.shared.links
    }

    /// A middleware with `config`. Must be used inside a tokio runtime.
    pub fn new(config: QuicConfig) -> Result<Self, QuicConfigError> {
        let tls = config.tls();
        let server_tls = QuicServerConfig::try_from(tls.server_config(&[ALPN])?)
            .map_err(|e| QuicConfigError::Quinn(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server
            .transport_config(Arc::new(transport(&config, true)?))
            // Connections not yet taken by the accept loop: room beyond `max_handshakes`
            // so that the loop refuses the excess at once (quinn silently drops what
            // exceeds this bound, and those clients would wait out their idle timeout).
            .max_incoming(config.max_handshakes.saturating_mul(2).saturating_add(16))
            .incoming_buffer_size(config.incoming_buffer)
            .incoming_buffer_size_total(config.incoming_buffer.saturating_mul(64))
            .migration(false);
        let client_tls = QuicClientConfig::try_from(tls.client_config(&[ALPN])?)
            .map_err(|e| QuicConfigError::Quinn(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(Arc::new(transport(&config, false)?));
        Ok(Self::from_parts(config, server, client))
    }

    /// A middleware with explicit quinn configurations, for tests of misconfigured peers
    /// only (feature `test-util`): whatever verifier they carry decides who is trusted,
    /// so it is not part of the API a node can reach.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn with_configs(
        config: QuicConfig,
        server: quinn::ServerConfig,
        client: quinn::ClientConfig,
    ) -> Self {
        Self::from_parts(config, server, client)
    }

    fn from_parts(
        config: QuicConfig,
        server: quinn::ServerConfig,
        client: quinn::ClientConfig,
    ) -> Self {
        let shared = Arc::new(Shared {
            links: LinkSet::new(config.link.clone()),
            config,
            server,
            client,
            endpoints: Mutex::default(),
            handshaking: AtomicUsize::new(0),
            handshakes_refused: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        });
        Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &QuicConfig {
        &self.shared.config
    }

    /// Counters of links, refusals and losses.
    pub fn stats(&self) -> QuicStats {
        QuicStats {
            links: self.shared.links.stats(),
            handshakes_refused: self.shared.handshakes_refused.load(Ordering::Relaxed),
            retries: self.shared.retries.load(Ordering::Relaxed),
        }
    }

    /// Peers with a live link, in no particular order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.shared.links.peers()
    }
}

async fn resolve(endpoint: &Endpoint) -> Result<SocketAddr, MiddlewareError> {
    let host_port = endpoint.host_port(SCHEME)?;
    tokio::net::lookup_host(host_port)
        .await?
        .next()
        .ok_or_else(|| MiddlewareError::Io(std::io::ErrorKind::NotFound.into()))
}

/// The link identity the peer's certificate proves.
fn certified_peer(connection: &quinn::Connection) -> Result<PeerId, MiddlewareError> {
    let chain = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok());
    Ok(dms_tls::certified_peer(
        chain.as_deref().map(Vec::as_slice),
    )?)
}

/// The error of a link handshake on `connection`: what the peer said if it closed the
/// connection, else `error` (and we close it, saying why).
fn fail(connection: &quinn::Connection, error: MiddlewareError) -> MiddlewareError {
    if let Some(reason) = connection.close_reason() {
        return from_connection(&reason);
    }
    let (code, reason) = close_for(&error);
    connection.close(code, reason.as_bytes());
    error
}

/// Authenticates a connection, takes its stream and makes it a link.
async fn link_up(
    shared: &Arc<Shared>,
    connection: quinn::Connection,
    role: Role,
    slot: Slot,
) -> Result<LinkHandle, MiddlewareError> {
    let remote = Endpoint::from_socket_addr(SCHEME, connection.remote_address())?;
    let certified = certified_peer(&connection).map_err(|e| fail(&connection, e))?;
    let streams = match role {
        Role::Connector => connection.open_bi().await,
        Role::Acceptor => connection.accept_bi().await,
    };
    let (send, recv) = streams.map_err(|e| from_connection(&e))?;
    // The link set reads the dialler's READY before it sends ours (an acceptor with a
    // certified identity): a dialler refused for its identity never sees its link up.
    let link = shared
        .links
        .establish(recv, send, remote, role, slot, None, Some(certified))
        .await
        .map_err(|e| fail(&connection, e))?;
    tokio::spawn(close_when_done(
        connection,
        link.clone(),
        shared.config.link.drain_timeout(),
    ));
    Ok(link)
}

/// Closes the connection once its link is down. After a local disconnect (our stream is
/// finished) the peer closes it when it has read everything; we wait for that, at most
/// the drain timeout. A stream the peer opens beyond the link's is refused by the
/// transport parameters (one bidirectional stream, no unidirectional ones).
async fn close_when_done(
    connection: quinn::Connection,
    link: LinkHandle,
    drain: std::time::Duration,
) {
    link.finished().await;
    let cause = link.cause();
    if matches!(cause, Some(LinkDownCause::Disconnected)) {
        let _ = tokio::time::timeout(drain, connection.closed()).await;
    }
    connection.close(close_for_cause(cause.as_ref()), b"");
}

/// Accepts connections on `endpoint` until shutdown, each handshaking in its own task,
/// within the handshake bounds.
async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            () = shared.links.closed() => return,
        };
        let in_progress = shared.handshaking.load(Ordering::Acquire);
        if in_progress >= shared.config.max_handshakes {
            shared.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        if in_progress >= shared.config.retry_above
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            shared.retries.fetch_add(1, Ordering::Relaxed);
            let _ = incoming.retry();
            continue;
        }
        let remote = Endpoint::from_socket_addr(SCHEME, incoming.remote_address());
        let slot = match shared.links.take_slot() {
            Ok(slot) => slot,
            Err(error) => {
                incoming.refuse();
                if let Ok(remote) = remote {
                    shared.links.emit_refused(remote, error);
                }
                continue;
            }
        };
        shared.handshaking.fetch_add(1, Ordering::AcqRel);
        let guard = Handshaking(shared.clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let timeout = shared.config.link.limits().handshake_timeout();
            let accept = async {
                let connection = incoming
                    .accept()
                    .map_err(|e| from_connection(&e))?
                    .await
                    .map_err(|e| from_connection(&e))?;
                link_up(&shared, connection, Role::Acceptor, slot).await
            };
            let result = tokio::select! {
                result = tokio::time::timeout(timeout, accept) => {
                    result.unwrap_or(Err(MiddlewareError::HandshakeTimeout(timeout)))
                }
                () = shared.links.closed() => return,
            };
            if let Err(error) = result {
                debug!(?remote, %error, "connection refused");
                if let Ok(remote) = remote {
                    shared.links.emit_refused(remote, error);
                }
            }
        });
    }
}

impl MessageMiddleware for QuicMiddleware {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn bind(&self, endpoint: &Endpoint) -> Result<Endpoint, MiddlewareError> {
        self.shared.links.check_open()?;
        let addr = resolve(endpoint).await?;
        let quinn_endpoint = new_endpoint(addr, Some(self.shared.server.clone()))?;
        let bound = Endpoint::from_socket_addr(SCHEME, quinn_endpoint.local_addr()?)?;
        debug!(%bound, "listening");
        self.shared
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(quinn_endpoint.clone());
        tokio::spawn(accept_loop(self.shared.clone(), quinn_endpoint));
        Ok(bound)
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<PeerId, MiddlewareError> {
        self.shared.links.check_open()?;
        let addr = resolve(endpoint).await?;
        let slot = self.shared.links.take_slot()?;
        let quinn_endpoint = self.shared.endpoint_for(addr)?;
        let timeout = self.shared.config.link.limits().handshake_timeout();
        let dial = async {
            let connection = quinn_endpoint
                .connect_with(self.shared.client.clone(), addr, SERVER_NAME)
                .map_err(|e| MiddlewareError::Io(std::io::Error::other(e)))?
                .await
                .map_err(|e| from_connection(&e))?;
            link_up(&self.shared, connection, Role::Connector, slot).await
        };
        match tokio::time::timeout(timeout, dial).await {
            Ok(link) => Ok(link?.peer().clone()),
            Err(_) => Err(MiddlewareError::HandshakeTimeout(timeout)),
        }
    }

    dms_link::forward_to_links!(links);

    fn close(&self) {
        self.shared.close();
    }

    async fn disconnect(&self, peer: &PeerId) -> Result<(), MiddlewareError> {
        self.shared.links.disconnect(peer).await
    }
}
