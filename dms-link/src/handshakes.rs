//! The places of incoming connections still handshaking ([`LinkConfig::max_handshakes`]
//! of them). When every place is taken, the oldest handshake gives way to the newcomer:
//! a slowloris that holds every place with connections dribbling their greeting loses its
//! oldest one to each new connection, and a legitimate peer, whose handshake takes a
//! round trip or two, is not the oldest long enough to be pushed out. (Refusing the
//! newcomer instead lets such an attack keep legitimate peers out for as long as it
//! lasts.)
//!
//! [`LinkConfig::max_handshakes`]: crate::LinkConfig::max_handshakes

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::link::lock;

/// The places, shared by a [`LinkSet`](crate::LinkSet) and its permits.
#[derive(Debug)]
pub(crate) struct Handshakes(Arc<Mutex<Places>>);

#[derive(Debug)]
struct Places {
    max: usize,
    next_id: u64,
    /// Handshakes in progress, oldest first: (permit id, its eviction signal).
    pending: VecDeque<(u64, CancellationToken)>,
}

/// A place among the incoming connections handshaking at once, taken with
/// [`LinkSet::begin_handshake`](crate::LinkSet::begin_handshake) when a connection is
/// accepted and held until its handshake is over; dropping it frees the place. The
/// holder must give up the handshake when [`evicted`](Self::evicted) resolves.
#[derive(Debug)]
pub struct HandshakePermit {
    places: Arc<Mutex<Places>>,
    id: u64,
    evicted: CancellationToken,
}

impl HandshakePermit {
    /// Resolves when a newer connection took this place (this handshake was the oldest
    /// while all places were taken): close the connection then.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let mut places = lock(&self.places);
        if let Some(at) = places.pending.iter().position(|(id, _)| *id == self.id) {
            places.pending.remove(at);
        }
    }
}

impl Handshakes {
    pub(crate) fn new(max: usize) -> Self {
        Self(Arc::new(Mutex::new(Places {
            max: max.max(1),
            next_id: 0,
            pending: VecDeque::new(),
        })))
    }

    /// Takes a place; true with it if the oldest handshake was evicted to make room.
    pub(crate) fn begin(&self) -> (HandshakePermit, bool) {
        let mut places = lock(&self.0);
        let evicted = if places.pending.len() >= places.max {
            places
                .pending
                .pop_front()
                .map(|(_, signal)| signal.cancel())
        } else {
            None
        };
        let id = places.next_id;
        places.next_id += 1;
        let signal = CancellationToken::new();
        places.pending.push_back((id, signal.clone()));
        let permit = HandshakePermit {
            places: self.0.clone(),
            id,
            evicted: signal,
        };
        (permit, evicted.is_some())
    }

    /// Handshakes in progress.
    pub(crate) fn pending(&self) -> usize {
        lock(&self.0).pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_handshake_gives_way_when_every_place_is_taken() {
        let places = Handshakes::new(2);
        let (first, evicted) = places.begin();
        assert!(!evicted);
        let (second, _) = places.begin();
        let (third, evicted) = places.begin();
        assert!(evicted, "a third handshake takes the oldest's place");
        // The first is told; the others hold their places.
        tokio::time::timeout(std::time::Duration::from_secs(5), first.evicted())
            .await
            .expect("the oldest is evicted");
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(places.pending(), 2);
        drop(first);
        assert_eq!(
            places.pending(),
            2,
            "an evicted permit held no place any more"
        );
        drop(second);
        assert_eq!(places.pending(), 1);
        let (_fourth, evicted) = places.begin();
        assert!(!evicted, "a freed place is taken without evicting");
        drop(third);
        assert_eq!(places.pending(), 1);
    }
}
