//! Battle: holds the matches it started and plays their rounds. Every call names its
//! match, the dispatch key, so a match is played where it started; another instance
//! answers `UnknownMatch`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dms::Multipart;
use dms::service::Rejection;
use dms_example_backend::{
    BattleRequest, EndMatch, GameError, Incoming, MatchEnded, MatchStarted, PlayRound, RoundPlayed,
    StartMatch, answer, serve_typed,
};

use super::{CONCURRENCY, Setup, lock, start, stop, until_stopped};

/// One match being played.
struct Match {
    players: [String; 2],
    scores: [u32; 2],
    rounds: u32,
}

struct Battle {
    name: String,
    matches: Mutex<HashMap<String, Match>>,
    hosted: AtomicU64,
    rounds: AtomicU64,
}

/// A player's score in a round: the same everywhere for the same match, round and player.
fn score(match_id: &str, round: u32, player: &str) -> u32 {
    let seed = format!("{match_id}/{round}/{player}");
    (dms_core::path::hash64(seed.as_bytes()) % 10) as u32
}

impl Battle {
    fn handle(&self, incoming: Incoming<BattleRequest>) -> Result<Multipart, Rejection> {
        match incoming.message {
            BattleRequest::Start(start) => answer::<StartMatch>(self.start(start)),
            BattleRequest::Round(round) => answer::<PlayRound>(self.round(round)),
            BattleRequest::End(end) => answer::<EndMatch>(self.end(end)),
        }
    }

    fn unknown(&self, match_id: String) -> GameError {
        GameError::UnknownMatch {
            match_id,
            battle: self.name.clone(),
        }
    }

    fn start(&self, start: StartMatch) -> Result<MatchStarted, GameError> {
        let mut matches = lock(&self.matches);
        if matches.contains_key(&start.match_id) {
            return Err(GameError::MatchExists {
                match_id: start.match_id,
            });
        }
        let game = Match {
            players: start.players,
            scores: [0, 0],
            rounds: 0,
        };
        matches.insert(start.match_id, game);
        self.hosted.fetch_add(1, Ordering::Relaxed);
        Ok(MatchStarted {
            battle: self.name.clone(),
        })
    }

    fn round(&self, round: PlayRound) -> Result<RoundPlayed, GameError> {
        let mut matches = lock(&self.matches);
        let Some(game) = matches.get_mut(&round.match_id) else {
            return Err(self.unknown(round.match_id));
        };
        for (i, player) in game.players.iter().enumerate() {
            game.scores[i] += score(&round.match_id, round.round, player);
        }
        game.rounds += 1;
        self.rounds.fetch_add(1, Ordering::Relaxed);
        Ok(RoundPlayed {
            battle: self.name.clone(),
            scores: game.scores,
        })
    }

    fn end(&self, end: EndMatch) -> Result<MatchEnded, GameError> {
        let Some(game) = lock(&self.matches).remove(&end.match_id) else {
            return Err(self.unknown(end.match_id));
        };
        let [first, second] = game.players;
        let (winner, loser) = if game.scores[1] > game.scores[0] {
            (second, first)
        } else {
            (first, second)
        };
        Ok(MatchEnded {
            battle: self.name.clone(),
            winner,
            loser,
            rounds: game.rounds,
        })
    }
}

/// Runs a Battle instance until SIGINT/SIGTERM.
pub(crate) async fn run(setup: Setup) -> Result<(), String> {
    let node = start(setup.builder()).await?;
    let battle = Arc::new(Battle {
        name: node.path().instance().to_owned(),
        matches: Mutex::new(HashMap::new()),
        hosted: AtomicU64::new(0),
        rounds: AtomicU64::new(0),
    });
    let state = battle.clone();
    let handler = move |incoming| {
        let state = state.clone();
        async move { state.handle(incoming) }
    };
    let server = tokio::spawn(serve_typed(node.clone(), handler, CONCURRENCY));
    until_stopped().await?;
    let hosted = battle.hosted.load(Ordering::Relaxed);
    let matches = if hosted == 1 { "match" } else { "matches" };
    let line = format!(
        "hosted {hosted} {matches}, played {} rounds",
        battle.rounds.load(Ordering::Relaxed)
    );
    stop(&node, &line).await;
    server.abort();
    Ok(())
}
