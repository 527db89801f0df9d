//! Lobby: players queue ([`JoinQueue`]); every two make a match, played on the Battle
//! instance its id picks (start, rounds, end: all with the match id as the dispatch
//! key); the winner's trophy goes to the loser through Trade, which the Lobby reaches
//! only through the brokers. The first player's request is answered when the second
//! comes, or with `NoOpponent` after the queue timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dms::Multipart;
use dms::Node;
use dms::service::Rejection;
use dms_discovery::etcd::EtcdDiscovery;
use dms_example_backend::clusters::{BATTLE, BROKER, TRADE};
use dms_example_backend::counters::{self, Counters};
use dms_example_backend::{
    Accept, EndMatch, GameError, Incoming, JoinQueue, LobbyReady, LobbyRequest, MatchReport, Offer,
    PlayRound, StartMatch, answer, ask, cluster, serve_typed,
};
use tokio::sync::oneshot;

use super::{CONCURRENCY, Setup, await_ready, lock, start, stop, trade, until_stopped};

/// Rounds of a match.
const ROUNDS: u32 = 3;

/// A player waiting for an opponent.
struct Waiting {
    player: String,
    ticket: u64,
    matched: oneshot::Sender<Result<MatchReport, GameError>>,
}

struct Lobby {
    node: Node,
    discovery: EtcdDiscovery,
    counters: &'static Counters,
    queue_timeout: Duration,
    waiting: Mutex<Option<Waiting>>,
    tickets: AtomicU64,
    matches: AtomicU64,
}

impl Lobby {
    async fn handle(&self, incoming: Incoming<LobbyRequest>) -> Result<Multipart, Rejection> {
        match incoming.message {
            LobbyRequest::JoinQueue(join) => answer::<JoinQueue>(self.join(join).await),
            LobbyRequest::AwaitReady(ready) => {
                let targets = [BATTLE, BROKER, TRADE];
                let view =
                    await_ready(&self.node, &self.discovery, self.counters, &ready, &targets).await;
                answer::<LobbyReady>(view)
            }
        }
    }

    async fn join(&self, join: JoinQueue) -> Result<MatchReport, GameError> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (matched, report) = oneshot::channel();
        let opponent = {
            let mut waiting = lock(&self.waiting);
            match waiting.take() {
                // One waits (and still listens): the two make a match.
                Some(opponent) if !opponent.matched.is_closed() => Some(opponent),
                _ => {
                    *waiting = Some(Waiting {
                        player: join.player.clone(),
                        ticket,
                        matched,
                    });
                    None
                }
            }
        };
        if let Some(opponent) = opponent {
            let result = self.play([opponent.player, join.player]).await;
            // The opponent's request may have ended meanwhile (its requester gone).
            let _ = opponent.matched.send(result.clone());
            return result;
        }
        let mut report = report;
        if let Ok(result) = tokio::time::timeout(self.queue_timeout, &mut report).await {
            return result.unwrap_or_else(|_| Err(self.no_opponent(join.player)));
        }
        {
            let mut waiting = lock(&self.waiting);
            if waiting.as_ref().is_some_and(|w| w.ticket == ticket) {
                *waiting = None;
                return Err(self.no_opponent(join.player));
            }
        }
        // Taken by an opponent just now: the match is being played.
        report
            .await
            .unwrap_or_else(|_| Err(self.no_opponent(join.player)))
    }

    fn no_opponent(&self, player: String) -> GameError {
        GameError::NoOpponent {
            player,
            waited_ms: u64::try_from(self.queue_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Plays a match between `players` on Battle, then hands the winner's trophy to the
    /// loser through Trade.
    async fn play(&self, players: [String; 2]) -> Result<MatchReport, GameError> {
        let n = self.matches.fetch_add(1, Ordering::Relaxed) + 1;
        let match_id = format!("{}-m{n}", self.node.path().instance());
        let battles = cluster(BATTLE);
        let key = match_id.as_str();
        let node = &self.node;
        let mut answered_by = Vec::new();
        let start = StartMatch {
            match_id: match_id.clone(),
            players: players.clone(),
        };
        let started = ask(node, &battles, key, start)
            .await
            .map_err(|f| f.upstream(BATTLE))?;
        answered_by.push(started.battle);
        for round in 1..=ROUNDS {
            let play = PlayRound {
                match_id: match_id.clone(),
                round,
            };
            let played = ask(node, &battles, key, play)
                .await
                .map_err(|f| f.upstream(BATTLE))?;
            answered_by.push(played.battle);
        }
        let end = EndMatch {
            match_id: match_id.clone(),
        };
        let ended = ask(node, &battles, key, end)
            .await
            .map_err(|f| f.upstream(BATTLE))?;
        answered_by.push(ended.battle);

        let offer_id = format!("loot-{match_id}");
        let offer = Offer {
            offer_id: offer_id.clone(),
            from: ended.winner.clone(),
            to: ended.loser.clone(),
            item: format!("trophy of {match_id}"),
        };
        let loot = trade(node, offer).await;
        // A client that repeats the accept (a retry): Trade refuses the second one.
        let repeated_accept = if loot.is_ok() {
            let again = Accept {
                offer_id: offer_id.clone(),
                player: ended.loser.clone(),
            };
            ask(node, &cluster(TRADE), offer_id.as_str(), again)
                .await
                .err()
                .map(|f| f.upstream(TRADE))
        } else {
            None
        };
        Ok(MatchReport {
            match_id,
            players,
            answered_by,
            winner: ended.winner,
            loser: ended.loser,
            loot,
            repeated_accept,
        })
    }
}

/// Runs a Lobby instance until SIGINT/SIGTERM: it targets Battle and the brokers, and
/// reaches Trade through them.
pub(crate) async fn run(setup: Setup, queue_timeout: Duration) -> Result<(), String> {
    // Before the node starts: it registers its counters then.
    let counters = counters::install();
    let builder = setup
        .builder()
        .target(cluster(BATTLE))
        .target(cluster(BROKER))
        .routed_target(cluster(TRADE));
    let node = start(builder).await?;
    let lobby = Arc::new(Lobby {
        node: node.clone(),
        discovery: setup.discovery.clone(),
        counters,
        queue_timeout,
        waiting: Mutex::new(None),
        tickets: AtomicU64::new(0),
        matches: AtomicU64::new(0),
    });
    let state = lobby.clone();
    let handler = move |incoming| {
        let state = state.clone();
        async move { state.handle(incoming).await }
    };
    let server = tokio::spawn(serve_typed(node.clone(), handler, CONCURRENCY));
    until_stopped().await?;
    let line = format!(
        "played {} matches, sent {} requests to Trade through the brokers",
        lobby.matches.load(Ordering::Relaxed),
        counters.routed()
    );
    server.abort();
    drop(lobby);
    stop(&node, &line).await;
    Ok(())
}
