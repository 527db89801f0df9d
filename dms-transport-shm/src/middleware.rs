//! [`ShmMiddleware`]: the rendezvous listener and dialler, and the links they hand to
//! `dms_link`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dms_core::{Endpoint, MessageMiddleware, MiddlewareError, PeerId, Role};
use dms_link::{LinkHandle, LinkSet, LinkStats, Slot};
use tokio::net::UnixListener;
use tracing::debug;

use crate::address::ShmAddress;
use crate::bells::Bell;
use crate::rendezvous::{self, Policy, Rendezvous};
use crate::ring::{Consumer, Producer};
use crate::stream::{Bells, Counters, ShmReader, ShmWriter, Spin};
use crate::{SCHEME, ShmConfig};

/// Counters of a shared-memory middleware.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmStats {
    /// The link counters (links up, handshake failures, refusals, drops).
    pub links: LinkStats,
    /// Rendezvous refused or failed before ZMTP started (bad hello, memory, uid...).
    pub setup_failures: u64,
    /// Links ended because the peer corrupted a ring's positions.
    pub corrupt_rings: u64,
    /// Times a reader parked on its doorbell.
    pub parks: u64,
    /// Doorbells rung (each is one `send` syscall).
    pub doorbells: u64,
}

#[derive(Debug)]
struct Shared {
    links: Arc<LinkSet>,
    config: ShmConfig,
    policy: Policy,
    counters: Arc<Counters>,
    setup_failures: AtomicU64,
}

/// A [`MessageMiddleware`] over shared memory between processes of one Linux host:
/// `shm://NAME` endpoints, two rings per link in a sealed memfd, ZMTP 3.1 on them as on
/// TCP. See the [crate docs](crate).
///
/// Cheap to clone; when the last clone is dropped every link and listener is closed.
#[derive(Debug, Clone)]
pub struct ShmMiddleware {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.links.close();
    }
}

impl ShmMiddleware {
    /// The link set every link lives in (the forwards of `forward_to_links!`).
    fn links(&self) -> &LinkSet {
        &self.shared.links
    }

    /// A middleware with `config`.
    pub fn new(config: ShmConfig) -> Self {
        let policy = Policy {
            extra_uids: config.allow_uids.clone(),
            max_ring: config.max_ring_bytes,
        };
        let shared = Arc::new(Shared {
            links: LinkSet::new(config.link.clone()),
            config,
            policy,
            counters: Arc::default(),
            setup_failures: AtomicU64::new(0),
        });
        Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ShmConfig {
        &self.shared.config
    }

    /// Counters of links, set-ups and doorbells.
    pub fn stats(&self) -> ShmStats {
        let c = &self.shared.counters;
        ShmStats {
            links: self.shared.links.stats(),
            setup_failures: self.shared.setup_failures.load(Ordering::Relaxed),
            corrupt_rings: c.corrupt.load(Ordering::Relaxed),
            parks: c.parks.load(Ordering::Relaxed),
            doorbells: c.rings.load(Ordering::Relaxed),
        }
    }

    /// Peers with a live link, in no particular order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.shared.links.peers()
    }
}

impl Shared {
    /// Turns a finished rendezvous into a ZMTP link.
    async fn link_up(
        &self,
        rendezvous: Rendezvous,
        remote: Endpoint,
        role: Role,
        slot: Slot,
    ) -> Result<LinkHandle, MiddlewareError> {
        let Rendezvous {
            region,
            data,
            space,
            ..
        } = rendezvous;
        let bells = Arc::new(Bells {
            data: Bell::new(data)?,
            space: Bell::new(space)?,
        });
        let [to_acceptor, to_dialler] = region.rings();
        let (outgoing, incoming) = match role {
            Role::Connector => (to_acceptor, to_dialler),
            Role::Acceptor => (to_dialler, to_acceptor),
        };
        let reader = ShmReader::new(
            Consumer::new(incoming),
            bells.clone(),
            self.counters.clone(),
            Spin::new(self.config.spin),
        );
        let writer = ShmWriter::new(Producer::new(outgoing), bells, self.counters.clone());
        self.links
            .establish(reader, writer, remote, role, slot, None, None)
            .await
    }

    fn setup_failed(&self, error: std::io::Error) -> MiddlewareError {
        self.setup_failures.fetch_add(1, Ordering::Relaxed);
        MiddlewareError::Io(error)
    }
}

/// Accepts connections until shutdown, each setting up in its own task within the
/// handshake bounds.
async fn accept_loop(shared: Arc<Shared>, listener: UnixListener, local: Endpoint) {
    let links = &shared.links;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = links.closed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                debug!(%error, "shm accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let remote = local.clone();
        let slot = match links.take_slot() {
            Ok(slot) => slot,
            Err(error) => {
                links.emit_refused(remote, error);
                continue;
            }
        };
        let permit = links.begin_handshake();
        let shared = shared.clone();
        tokio::spawn(async move {
            let links = &shared.links;
            let timeout = links.config().limits().handshake_timeout();
            let accept = async {
                let rendezvous = rendezvous::accept(stream, &shared.policy)
                    .await
                    .map_err(|e| shared.setup_failed(e))?;
                // The dialler has no name: it is known by its process id.
                let remote = Endpoint::new(
                    SCHEME,
                    &format!("{}?pid={}", local_name(&remote), rendezvous.peer_pid),
                )
                .unwrap_or_else(|_| remote.clone());
                shared
                    .link_up(rendezvous, remote, Role::Acceptor, slot)
                    .await
            };
            let result = tokio::select! {
                biased;
                result = tokio::time::timeout(timeout, accept) => {
                    result.unwrap_or(Err(MiddlewareError::HandshakeTimeout(timeout))).map(drop)
                }
                () = permit.evicted() => Ok(()),
                () = links.closed() => Ok(()),
            };
            drop(permit);
            if let Err(error) = result {
                debug!(%remote, %error, "shm connection refused");
                links.emit_refused(remote, error);
            }
        });
    }
}

fn local_name(endpoint: &Endpoint) -> &str {
    endpoint.address()
}

impl MessageMiddleware for ShmMiddleware {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn bind(&self, endpoint: &Endpoint) -> Result<Endpoint, MiddlewareError> {
        self.shared.links.check_open()?;
        let address = ShmAddress::parse(endpoint)?;
        address.check_local(endpoint)?;
        let listener = rendezvous::listen(&address.socket_name())?;
        let bound = address.published()?;
        debug!(%bound, "listening");
        let local = Endpoint::new(SCHEME, &address.name)?;
        tokio::spawn(accept_loop(self.shared.clone(), listener, local));
        Ok(bound)
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<PeerId, MiddlewareError> {
        self.shared.links.check_open()?;
        let address = ShmAddress::parse(endpoint)?;
        address.check_local(endpoint)?;
        let slot = self.shared.links.take_slot()?;
        let timeout = self.shared.config.link.limits().handshake_timeout();
        let ring = self.shared.config.ring_bytes;
        let dial = async {
            let rendezvous =
                rendezvous::dial(&address.socket_name(), [ring, ring], &self.shared.policy)
                    .await
                    .map_err(|e| match e.kind() {
                        // Nobody listens: not a set-up failure, the peer is not there.
                        std::io::ErrorKind::ConnectionRefused => MiddlewareError::Io(e),
                        _ => self.shared.setup_failed(e),
                    })?;
            self.shared
                .link_up(rendezvous, endpoint.clone(), Role::Connector, slot)
                .await
        };
        match tokio::time::timeout(timeout, dial).await {
            Ok(link) => Ok(link?.peer().clone()),
            Err(_) => Err(MiddlewareError::HandshakeTimeout(timeout)),
        }
    }

    dms_link::forward_to_links!(links);

    fn close(&self) {
        self.shared.links.close();
    }

    async fn disconnect(&self, peer: &PeerId) -> Result<(), MiddlewareError> {
        self.shared.links.disconnect(peer).await
    }
}
