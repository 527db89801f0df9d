//! Trade: holds offers until the player they are for accepts them. Trade instances link
//! only to the broker cluster: Lobby and Club reach them through it. Every call names its
//! offer, the dispatch key, so an accept reaches the instance holding its offer; another
//! instance answers `UnknownOffer`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dms::Multipart;
use dms::service::Rejection;
use dms_example_backend::clusters::BROKER;
use dms_example_backend::{
    Accept, Accepted, GameError, Incoming, Offer, Offered, TradeRequest, answer, cluster,
    serve_typed,
};

use super::{CONCURRENCY, Setup, lock, start, stop, until_stopped};

struct Held {
    to: String,
    item: String,
    accepted: bool,
}

struct Trade {
    name: String,
    offers: Mutex<HashMap<String, Held>>,
    offered: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Trade {
    fn handle(&self, incoming: Incoming<TradeRequest>) -> Result<Multipart, Rejection> {
        match incoming.message {
            TradeRequest::Offer(offer) => answer::<Offer>(self.offer(offer)),
            TradeRequest::Accept(accept) => answer::<Accept>(self.accept(accept)),
        }
    }

    fn offer(&self, offer: Offer) -> Result<Offered, GameError> {
        let mut offers = lock(&self.offers);
        if offers.contains_key(&offer.offer_id) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(GameError::OfferExists {
                offer_id: offer.offer_id,
            });
        }
        let held = Held {
            to: offer.to,
            item: offer.item,
            accepted: false,
        };
        offers.insert(offer.offer_id, held);
        self.offered.fetch_add(1, Ordering::Relaxed);
        Ok(Offered {
            trade: self.name.clone(),
        })
    }

    fn accept(&self, accept: Accept) -> Result<Accepted, GameError> {
        let mut offers = lock(&self.offers);
        let refused = match offers.get_mut(&accept.offer_id) {
            None => GameError::UnknownOffer {
                offer_id: accept.offer_id,
                trade: self.name.clone(),
            },
            Some(held) if held.to != accept.player => GameError::NotYourOffer {
                offer_id: accept.offer_id,
                player: accept.player,
            },
            Some(held) if held.accepted => GameError::AlreadyAccepted {
                offer_id: accept.offer_id,
            },
            Some(held) => {
                held.accepted = true;
                self.accepted.fetch_add(1, Ordering::Relaxed);
                return Ok(Accepted {
                    trade: self.name.clone(),
                    item: held.item.clone(),
                });
            }
        };
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(refused)
    }
}

/// Runs a Trade instance until SIGINT/SIGTERM: it targets the brokers only.
pub(crate) async fn run(setup: Setup) -> Result<(), String> {
    let node = start(setup.builder().target(cluster(BROKER))).await?;
    let trade = Arc::new(Trade {
        name: node.path().instance().to_owned(),
        offers: Mutex::new(HashMap::new()),
        offered: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let state = trade.clone();
    let handler = move |incoming| {
        let state = state.clone();
        async move { state.handle(incoming) }
    };
    let server = tokio::spawn(serve_typed(node.clone(), handler, CONCURRENCY));
    until_stopped().await?;
    let line = format!(
        "{} offers, {} accepted, {} refused",
        trade.offered.load(Ordering::Relaxed),
        trade.accepted.load(Ordering::Relaxed),
        trade.refused.load(Ordering::Relaxed)
    );
    stop(&node, &line).await;
    server.abort();
    Ok(())
}
