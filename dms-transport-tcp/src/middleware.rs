//! [`TcpMiddleware`]: the public handle. Its [`MessageMiddleware`] operations forward to
//! the link engine ([`dms_link::LinkSet`]); `bind` and `connect` are TCP's own.

use std::sync::Arc;

use dms_core::{Endpoint, MessageMiddleware, MiddlewareError, PeerId};
use tokio::net::TcpListener;
use tracing::debug;

use crate::address::{endpoint_of, host_port};
use crate::connection::{accept_loop, dial, supervise};
use crate::state::Shared;
use crate::{TcpConfig, TcpStats};

/// A [`MessageMiddleware`] over TCP speaking ZMTP 3.1. See the [crate docs](crate) for the
/// hot path and the identity rule.
///
/// Cheap to clone; every clone drives the same links. When the last clone is dropped (or
/// [`close`](Self::close) is called) every link and listener is closed.
#[derive(Debug, Clone)]
pub struct TcpMiddleware {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Shuts the middleware down when the last handle goes.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.links.close();
    }
}

impl TcpMiddleware {
    /// The link set every link lives in (the forwards of `forward_to_links!`).
    fn links(&self) -> &dms_link::LinkSet {
        &self.shared.links
    }

    /// A middleware with `config`. Must be used inside a tokio runtime.
    pub fn new(config: TcpConfig) -> Self {
        let shared = Arc::new(Shared::new(config));
        Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.shared.config
    }

    /// Counters of refusals and losses.
    pub fn stats(&self) -> TcpStats {
        self.shared.links.stats()
    }

    /// Peers with a live link, in no particular order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.shared.links.peers()
    }

    /// Counters of the TLS layer: handshakes failed, plaintext connections refused (all
    /// zero in a plaintext `tcp` middleware). Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls_stats(&self) -> crate::TlsStats {
        self.shared.tls.snapshot()
    }
}

impl MessageMiddleware for TcpMiddleware {
    fn scheme(&self) -> &'static str {
        self.shared.config.scheme()
    }

    async fn bind(&self, endpoint: &Endpoint) -> Result<Endpoint, MiddlewareError> {
        self.shared.links.check_open()?;
        let scheme = self.shared.config.scheme();
        let listener = TcpListener::bind(host_port(endpoint, scheme)?).await?;
        let bound = endpoint_of(listener.local_addr()?, scheme);
        debug!(%bound, "listening");
        tokio::spawn(accept_loop(self.shared.clone(), listener));
        Ok(bound)
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<PeerId, MiddlewareError> {
        self.shared.links.check_open()?;
        let link = dial(&self.shared, endpoint, None).await?;
        let peer = link.peer().clone();
        if !self.shared.config.redial {
            return Ok(peer);
        }
        let stop = Arc::new(self.shared.links.shutdown_token());
        self.shared.track_supervisor(&peer, &stop);
        tokio::spawn(supervise(self.shared.clone(), endpoint.clone(), link, stop));
        Ok(peer)
    }

    dms_link::forward_to_links!(links);

    fn close(&self) {
        self.shared.links.close();
    }

    async fn disconnect(&self, peer: &PeerId) -> Result<(), MiddlewareError> {
        let supervised = self.shared.stop_supervisor(peer);
        match self.shared.links.disconnect(peer).await {
            // A supervised link between two dials: stopping its supervisor was the disconnect.
            Err(MiddlewareError::UnknownPeer(_)) if supervised => Ok(()),
            done => done,
        }
    }
}
