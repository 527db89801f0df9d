//! Club: members of each club (dispatched by club name), chat lines broadcast to the
//! whole Club cluster, and gifts between members handed through Trade, which the Club
//! reaches only through the brokers.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dms::service::{Rejection, encode};
use dms::{Multipart, Node};
use dms_discovery::etcd::EtcdDiscovery;
use dms_example_backend::clusters::{BROKER, TRADE};
use dms_example_backend::counters::{self, Counters};
use dms_example_backend::{
    AwaitChats, ChatLog, ClubReady, ClubRequest, GameError, Gift, Incoming, JoinClub, Joined,
    Offer, TradeReceipt, answer, cluster, serve_typed,
};
use tokio::sync::watch;

use super::{CONCURRENCY, Setup, await_ready, lock, start, stop, trade, until_stopped};

struct Club {
    node: Node,
    discovery: EtcdDiscovery,
    counters: &'static Counters,
    members: Mutex<HashMap<String, BTreeSet<String>>>,
    chats: watch::Sender<u64>,
    gifts: AtomicU64,
}

impl Club {
    async fn handle(&self, incoming: Incoming<ClubRequest>) -> Result<Multipart, Rejection> {
        match incoming.message {
            ClubRequest::Join(join) => answer::<JoinClub>(Ok(self.join(join))),
            ClubRequest::Chat(_) => {
                self.chats.send_modify(|n| *n += 1);
                // A broadcast's reply goes nowhere; a request for it gets this.
                encode(&Ok::<(), GameError>(()))
            }
            ClubRequest::Gift(gift) => answer::<Gift>(self.gift(gift).await),
            ClubRequest::AwaitChats(wait) => answer::<AwaitChats>(self.await_chats(wait).await),
            ClubRequest::AwaitReady(ready) => {
                let view = await_ready(
                    &self.node,
                    &self.discovery,
                    self.counters,
                    &ready,
                    &[BROKER, TRADE],
                )
                .await;
                answer::<ClubReady>(view)
            }
        }
    }

    fn join(&self, join: JoinClub) -> Joined {
        let mut members = lock(&self.members);
        let club = members.entry(join.club).or_default();
        club.insert(join.player);
        Joined {
            instance: self.node.path().instance().to_owned(),
            members: u32::try_from(club.len()).unwrap_or(u32::MAX),
        }
    }

    async fn gift(&self, gift: Gift) -> Result<TradeReceipt, GameError> {
        {
            let members = lock(&self.members);
            let club = members.get(&gift.club);
            for player in [&gift.from, &gift.to] {
                if !club.is_some_and(|c| c.contains(player)) {
                    return Err(GameError::NotAMember {
                        club: gift.club.clone(),
                        player: player.clone(),
                    });
                }
            }
        }
        let n = self.gifts.fetch_add(1, Ordering::Relaxed) + 1;
        let offer = Offer {
            offer_id: format!("gift-{}-{n}", self.node.path().instance()),
            from: gift.from,
            to: gift.to,
            item: gift.item,
        };
        trade(&self.node, offer).await
    }

    async fn await_chats(&self, wait: AwaitChats) -> Result<ChatLog, GameError> {
        let mut chats = self.chats.subscribe();
        let timeout = Duration::from_millis(wait.timeout_ms);
        let waited = tokio::time::timeout(timeout, chats.wait_for(|n| *n >= wait.count)).await;
        let received = *self.chats.borrow();
        match waited {
            Ok(Ok(_)) => Ok(ChatLog {
                instance: self.node.path().instance().to_owned(),
                received,
            }),
            _ => Err(GameError::NotReady {
                detail: format!(
                    "{} received {received} chat lines, not {}, within {timeout:?}",
                    self.node.path().instance(),
                    wait.count
                ),
            }),
        }
    }
}

/// Runs a Club instance until SIGINT/SIGTERM: it targets the brokers, and reaches Trade
/// through them.
pub(crate) async fn run(setup: Setup) -> Result<(), String> {
    // Before the node starts: it registers its counters then.
    let counters = counters::install();
    let builder = setup
        .builder()
        .target(cluster(BROKER))
        .routed_target(cluster(TRADE));
    let node = start(builder).await?;
    let club = Arc::new(Club {
        node: node.clone(),
        discovery: setup.discovery.clone(),
        counters,
        members: Mutex::new(HashMap::new()),
        chats: watch::Sender::new(0),
        gifts: AtomicU64::new(0),
    });
    let state = club.clone();
    let handler = move |incoming| {
        let state = state.clone();
        async move { state.handle(incoming).await }
    };
    let server = tokio::spawn(serve_typed(node.clone(), handler, CONCURRENCY));
    until_stopped().await?;
    let (members, clubs) = {
        let members = lock(&club.members);
        (
            members.values().map(BTreeSet::len).sum::<usize>(),
            members.len(),
        )
    };
    let line = format!(
        "{members} members in {clubs} clubs, {} chat lines, {} gifts through Trade",
        *club.chats.borrow(),
        club.gifts.load(Ordering::Relaxed)
    );
    server.abort();
    drop(club);
    stop(&node, &line).await;
    Ok(())
}
