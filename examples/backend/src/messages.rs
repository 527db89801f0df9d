//! The messages of every service, shared by the processes (postcard on the wire).

use serde::{Deserialize, Serialize};

use crate::typed::Ask;

/// A failure a service answers with: the game's rules said no, or a call the service made
/// on the way failed ([`Upstream`](Self::Upstream)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GameError {
    /// No opponent came within the lobby's queue timeout.
    #[error("no opponent for {player} within {waited_ms} ms")]
    NoOpponent {
        /// The player left alone.
        player: String,
        /// How long they waited.
        waited_ms: u64,
    },
    /// The Battle instance does not hold this match (it was sent to another instance).
    #[error("{battle} holds no match {match_id}")]
    UnknownMatch {
        /// The match.
        match_id: String,
        /// The instance asked.
        battle: String,
    },
    /// A match with this id was started already.
    #[error("match {match_id} was started already")]
    MatchExists {
        /// The match.
        match_id: String,
    },
    /// The Trade instance holds no such offer (it was sent to another instance).
    #[error("{trade} holds no offer {offer_id}")]
    UnknownOffer {
        /// The offer.
        offer_id: String,
        /// The instance asked.
        trade: String,
    },
    /// An offer with this id exists already.
    #[error("offer {offer_id} exists already")]
    OfferExists {
        /// The offer.
        offer_id: String,
    },
    /// Only the player an offer is made to may accept it.
    #[error("offer {offer_id} is not for {player}")]
    NotYourOffer {
        /// The offer.
        offer_id: String,
        /// Who tried to accept it.
        player: String,
    },
    /// The offer was accepted before.
    #[error("offer {offer_id} was accepted already")]
    AlreadyAccepted {
        /// The offer.
        offer_id: String,
    },
    /// The player is not a member of the club.
    #[error("{player} is not a member of {club}")]
    NotAMember {
        /// The club.
        club: String,
        /// The player.
        player: String,
    },
    /// What [`AwaitReady`] or [`AwaitChats`] waited for did not happen in time.
    #[error("not ready: {detail}")]
    NotReady {
        /// What was missing.
        detail: String,
    },
    /// A call the service made on the way failed in transport (a
    /// [`dms::RequestError`]): which service, its kind and what it said.
    #[error("{service} call failed ({kind}): {detail}")]
    Upstream {
        /// The cluster called.
        service: String,
        /// The error's kind ([`crate::Failure::kind`]).
        kind: String,
        /// Its message.
        detail: String,
    },
}

impl GameError {
    /// A short name of the error, `service.reason`, for counting errors by kind.
    pub fn kind(&self) -> String {
        let kind = match self {
            Self::NoOpponent { .. } => "lobby.no_opponent",
            Self::UnknownMatch { .. } => "battle.unknown_match",
            Self::MatchExists { .. } => "battle.match_exists",
            Self::UnknownOffer { .. } => "trade.unknown_offer",
            Self::OfferExists { .. } => "trade.offer_exists",
            Self::NotYourOffer { .. } => "trade.not_your_offer",
            Self::AlreadyAccepted { .. } => "trade.already_accepted",
            Self::NotAMember { .. } => "club.not_a_member",
            Self::NotReady { .. } => "not_ready",
            Self::Upstream { service, kind, .. } => {
                return format!("upstream.{}.{kind}", service.to_lowercase());
            }
        };
        kind.to_owned()
    }
}

/// What a service waits for before it says it is ready, and what it sees then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitReady {
    /// Battle instances to see ready (the Lobby's concern).
    pub battles: u32,
    /// Trade instances to see reachable through the brokers.
    pub trades: u32,
    /// Broker instances to see ready.
    pub brokers: u32,
    /// How long to wait, in milliseconds.
    pub timeout_ms: u64,
}

/// A service's view of its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// The instance answering (its name).
    pub instance: String,
    /// Each instance of its targets: `(cluster, instance, state)` with the state as the
    /// kernel reports it (`Ready`: a session of its own; `Routed`: reached through
    /// brokers).
    pub targets: Vec<(String, String, String)>,
    /// The shortest path to each Trade instance over the routing table in discovery, as
    /// instance names (`lobby-1 > broker-2 > trade-1`).
    pub routes: Vec<String>,
    /// Requests this instance sent through the routing table (`dms_routed_total`).
    pub routed: u64,
}

// --- Lobby ---------------------------------------------------------------------------

/// A request to the Lobby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LobbyRequest {
    /// Queue a player for a match.
    JoinQueue(JoinQueue),
    /// Wait for the instances the Lobby needs.
    AwaitReady(AwaitReady),
}

/// Queue `player` for a match; answered once the match was played, with its
/// [`MatchReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinQueue {
    /// The player.
    pub player: String,
}

/// A match as the Lobby played it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchReport {
    /// The match (its dispatch key to Battle).
    pub match_id: String,
    /// The two players.
    pub players: [String; 2],
    /// The Battle instance that answered each call of the match, in order (start, each
    /// round, end): all the same when dispatch is sticky.
    pub answered_by: Vec<String>,
    /// Who won.
    pub winner: String,
    /// Who lost.
    pub loser: String,
    /// The winner's trophy handed to the loser through Trade.
    pub loot: Result<TradeReceipt, GameError>,
    /// What repeating the loser's accept got (a client that retries): the Trade
    /// instance refuses it (`AlreadyAccepted`), through the brokers too.
    pub repeated_accept: Option<GameError>,
}

// --- Battle --------------------------------------------------------------------------

/// A request to Battle; each carries its match id, the dispatch key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BattleRequest {
    /// Start a match.
    Start(StartMatch),
    /// Play one of its rounds.
    Round(PlayRound),
    /// End it.
    End(EndMatch),
}

/// Start match `match_id` between `players`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartMatch {
    /// The match.
    pub match_id: String,
    /// Its players.
    pub players: [String; 2],
}

/// A match started on `battle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchStarted {
    /// The instance holding it.
    pub battle: String,
}

/// Play round `round` of match `match_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayRound {
    /// The match.
    pub match_id: String,
    /// The round, from 1.
    pub round: u32,
}

/// A round played.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundPlayed {
    /// The instance holding the match.
    pub battle: String,
    /// The scores so far, in the order of the players.
    pub scores: [u32; 2],
}

/// End match `match_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndMatch {
    /// The match.
    pub match_id: String,
}

/// A match ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchEnded {
    /// The instance that held it.
    pub battle: String,
    /// Who won.
    pub winner: String,
    /// Who lost.
    pub loser: String,
    /// The rounds played.
    pub rounds: u32,
}

// --- Club ----------------------------------------------------------------------------

/// A request (or, for [`ClubChat`], a broadcast) to Club.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClubRequest {
    /// Join a club (dispatched by club name).
    Join(JoinClub),
    /// A chat line, broadcast to every Club instance.
    Chat(ClubChat),
    /// A gift between two members, through Trade.
    Gift(Gift),
    /// Wait until this instance received a number of chat lines.
    AwaitChats(AwaitChats),
    /// Wait for the instances the Club needs.
    AwaitReady(AwaitReady),
}

/// `player` joins `club`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClub {
    /// The club (the dispatch key).
    pub club: String,
    /// The player.
    pub player: String,
}

/// A player joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The instance keeping the club.
    pub instance: String,
    /// Its members now.
    pub members: u32,
}

/// A chat line for a club, broadcast to the Club cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClubChat {
    /// The club.
    pub club: String,
    /// Who says it.
    pub player: String,
    /// What they say.
    pub text: String,
}

/// `from` gives `item` to `to`, both members of `club`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gift {
    /// The club (the dispatch key).
    pub club: String,
    /// The giver.
    pub from: String,
    /// The receiver.
    pub to: String,
    /// The item.
    pub item: String,
}

/// Wait until the instance received `count` chat lines in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitChats {
    /// The lines to wait for.
    pub count: u64,
    /// How long to wait, in milliseconds.
    pub timeout_ms: u64,
}

/// The chat lines an instance received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLog {
    /// The instance.
    pub instance: String,
    /// Lines received, all clubs.
    pub received: u64,
}

// --- Trade ---------------------------------------------------------------------------

/// A request to Trade; each carries its offer id, the dispatch key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TradeRequest {
    /// Make an offer.
    Offer(Offer),
    /// Accept one.
    Accept(Accept),
}

/// `from` offers `item` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offer (chosen by the caller, the dispatch key of its accept too).
    pub offer_id: String,
    /// Who gives.
    pub from: String,
    /// Who may accept.
    pub to: String,
    /// What.
    pub item: String,
}

/// An offer held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offered {
    /// The Trade instance holding it.
    pub trade: String,
}

/// `player` accepts offer `offer_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The offer.
    pub offer_id: String,
    /// Who accepts.
    pub player: String,
}

/// An accepted offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The Trade instance that held it.
    pub trade: String,
    /// The item that changed hands.
    pub item: String,
}

/// A trade done: offered and accepted, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeReceipt {
    /// The offer.
    pub offer_id: String,
    /// The Trade instance that took the offer.
    pub offered_on: String,
    /// The Trade instance that took the accept (the same when dispatch is sticky).
    pub accepted_on: String,
    /// The item.
    pub item: String,
}

// --- Broker --------------------------------------------------------------------------

/// A request to one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerRequest {
    /// What it forwarded.
    Stats(BrokerStatsRequest),
}

/// Ask a broker what it forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatsRequest;

/// What a broker forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// The broker.
    pub broker: String,
    /// Routed messages it sent on to their next hop (`dms_forwarded_total`).
    pub forwarded: u64,
}

// --- The driver's summary ------------------------------------------------------------

/// What the driver saw, printed at the end (one JSON line with `--json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Players played.
    pub players: u32,
    /// Players whose match was played.
    pub matched: u32,
    /// Matches played.
    pub matches: u32,
    /// Matches by the Battle instance that held them.
    pub matches_by_battle: std::collections::BTreeMap<String, u32>,
    /// Matches all of whose calls one Battle instance answered.
    pub sticky_matches: u32,
    /// Trades done (the lobby's loot and the clubs' gifts).
    pub trades: u32,
    /// Trades by the Trade instance that held them.
    pub trades_by_instance: std::collections::BTreeMap<String, u32>,
    /// Trades whose offer and accept one Trade instance answered.
    pub sticky_trades: u32,
    /// How the Lobby and Club instances reach each Trade instance: `instance → state`
    /// per origin (`Routed`: no session of their own, through brokers).
    pub trade_states:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Shortest paths to Trade over the routing table, per origin.
    pub trade_routes: std::collections::BTreeMap<String, Vec<String>>,
    /// Requests each origin sent through the routing table.
    pub routed_by_origin: std::collections::BTreeMap<String, u64>,
    /// Routed messages each broker forwarded.
    pub forwarded_by_broker: std::collections::BTreeMap<String, u64>,
    /// Chat lines broadcast.
    pub chats_sent: u32,
    /// Chat lines received, per Club instance.
    pub chats_received: std::collections::BTreeMap<String, u64>,
    /// Errors by kind (expected and not).
    pub errors: std::collections::BTreeMap<String, u32>,
    /// Errors the flow provokes on purpose (a gift outside the club, a repeated accept).
    pub expected_errors: u32,
    /// Every other error.
    pub unexpected_errors: u32,
    /// Requests issued by the driver.
    pub requests: u32,
    /// Requests that ended neither with a reply nor with an error by the deadline.
    pub lost: u32,
}

macro_rules! ask {
    ($($request:ty => $envelope:ident :: $variant:ident -> $reply:ty;)*) => {$(
        impl From<$request> for $envelope {
            fn from(request: $request) -> Self {
                Self::$variant(request)
            }
        }
        impl Ask for $request {
            type Envelope = $envelope;
            type Reply = $reply;
        }
    )*};
}

ask! {
    JoinQueue => LobbyRequest::JoinQueue -> MatchReport;
    StartMatch => BattleRequest::Start -> MatchStarted;
    PlayRound => BattleRequest::Round -> RoundPlayed;
    EndMatch => BattleRequest::End -> MatchEnded;
    JoinClub => ClubRequest::Join -> Joined;
    Gift => ClubRequest::Gift -> TradeReceipt;
    AwaitChats => ClubRequest::AwaitChats -> ChatLog;
    Offer => TradeRequest::Offer -> Offered;
    Accept => TradeRequest::Accept -> Accepted;
    BrokerStatsRequest => BrokerRequest::Stats -> BrokerStats;
}

/// [`AwaitReady`] as a request to the Lobby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobbyReady(pub AwaitReady);

/// [`AwaitReady`] as a request to the Club.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClubReady(pub AwaitReady);

impl From<LobbyReady> for LobbyRequest {
    fn from(ready: LobbyReady) -> Self {
        Self::AwaitReady(ready.0)
    }
}

impl From<ClubReady> for ClubRequest {
    fn from(ready: ClubReady) -> Self {
        Self::AwaitReady(ready.0)
    }
}

impl Ask for LobbyReady {
    type Envelope = LobbyRequest;
    type Reply = ServiceView;
}

impl Ask for ClubReady {
    type Envelope = ClubRequest;
    type Reply = ServiceView;
}
