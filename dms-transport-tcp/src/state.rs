//! The state the TCP middleware's handle and tasks share: the link engine's
//! [`LinkSet`], the configuration and the reconnect supervisors. Its own module so that
//! `middleware` and `connection` both use it without importing each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use dms_core::PeerId;
use dms_link::LinkSet;
use tokio_util::sync::CancellationToken;

use crate::TcpConfig;

/// State shared by the handle and every task of one middleware.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TcpConfig,
    pub(crate) links: Arc<LinkSet>,
    /// Counters of the TLS layer (a `tcp+tls` middleware).
    #[cfg(feature = "tls")]
    pub(crate) tls: crate::tls::TlsCounters,
    /// Stop tokens of the reconnect supervisors, by the current peer id of their link.
    supervisors: Mutex<HashMap<PeerId, Arc<CancellationToken>>>,
}

impl Shared {
    /// The state of a fresh middleware with `config`.
    pub(crate) fn new(config: TcpConfig) -> Self {
        Self {
            links: LinkSet::new(config.link.clone()),
            supervisors: Mutex::default(),
            #[cfg(feature = "tls")]
            tls: crate::tls::TlsCounters::default(),
            config,
        }
    }

    /// Records the supervisor of a connected link under its current peer id (replacing
    /// the entry it had under an earlier id).
    pub(crate) fn track_supervisor(&self, peer: &PeerId, stop: &Arc<CancellationToken>) {
        let mut supervisors = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        supervisors.retain(|_, token| !Arc::ptr_eq(token, stop) && !token.is_cancelled());
        supervisors.insert(peer.clone(), stop.clone());
    }

    /// Stops the supervisor of `peer`'s link, if it has one; true if it had.
    pub(crate) fn stop_supervisor(&self, peer: &PeerId) -> bool {
        let stop = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer);
        if let Some(stop) = &stop {
            stop.cancel();
        }
        stop.is_some()
    }
}
