//! The driver: plays `--players` players through the backend and prints what happened.
//!
//! 1. Waits until the Lobby sees the Battle instances and reaches the Trade instances
//!    through the brokers, and the Club reaches Trade too (`AwaitReady`).
//! 2. Every player joins a club (dispatched by club name) and says hello in a chat line
//!    broadcast to the whole Club cluster.
//! 3. Every player queues in the Lobby; each pair gets a match on Battle and a trophy
//!    handed through Trade (and a repeated accept, refused).
//! 4. Every player gives a gift to a member of their club through the Club and Trade;
//!    every fourth also tries one to a player of another club (refused: not a member).
//! 5. Asks each Club instance for the chat lines it got, each broker for what it
//!    forwarded, and the Lobby and Club how they reach Trade; prints the [`Summary`].

use std::collections::BTreeMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dms::Node;
use dms_example_backend::clusters::{BROKER, CLUB, LOBBY};
use dms_example_backend::{
    AwaitChats, AwaitReady, BrokerStatsRequest, ClubChat, ClubReady, ClubRequest, Failure, Gift,
    JoinClub, JoinQueue, LobbyReady, MatchReport, ServiceView, Summary, TradeReceipt, ask,
    ask_instance, cluster,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Setup, start};
use crate::print_line;

/// The driver's options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DriverArgs {
    /// Players to play.
    #[arg(long, default_value_t = 40)]
    players: u32,
    /// Clubs the players join (player i joins club i mod N).
    #[arg(long, default_value_t = 2)]
    clubs: u32,
    /// Battle instances the Lobby must see before the players start.
    #[arg(long, default_value_t = 2)]
    battles: u32,
    /// Trade instances the Lobby and Club must reach before the players start.
    #[arg(long, default_value_t = 2)]
    trades: u32,
    /// Brokers that must be up before the players start.
    #[arg(long, default_value_t = 2)]
    brokers: u32,
    /// How long to wait for the services to be ready, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    ready_timeout_ms: u64,
    /// Requests not ended by this deadline (from the first player on) are lost.
    #[arg(long, default_value_t = 30)]
    deadline_s: u64,
    /// Matches printed in detail.
    #[arg(long, default_value_t = 3)]
    show: usize,
    /// Also print the summary as one JSON line, `summary {...}`.
    #[arg(long)]
    json: bool,
}

/// The error kinds the flow provokes on purpose.
const EXPECTED: [(&str, &str); 3] = [
    ("club.not_a_member", "gifts to a player of another club"),
    ("trade.already_accepted", "a repeated accept of a trophy"),
    ("lobby.no_opponent", "the odd player out"),
];

/// Runs futures at once, each as a task; the results of those that end by `deadline`, in
/// the order of `futures` (those that do not are aborted: their requests count as lost).
async fn all<T, F>(deadline: Instant, futures: Vec<F>) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, future) in futures.into_iter().enumerate() {
        tasks.spawn(async move { (i, future.await) });
    }
    let mut results = Vec::new();
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        if let Ok(value) = done {
            results.push(value);
        }
    }
    tasks.abort_all();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, value)| value).collect()
}

/// Requests issued and ended (with a reply or an error), shared by the players' tasks.
#[derive(Default)]
struct Ledger {
    issued: AtomicU32,
    ended: AtomicU32,
}

impl Ledger {
    /// Awaits one request, counting it issued, and ended if it ends.
    async fn track<F: Future>(&self, request: F) -> F::Output {
        self.issued.fetch_add(1, Ordering::Relaxed);
        let output = request.await;
        self.ended.fetch_add(1, Ordering::Relaxed);
        output
    }
}

/// What the driver counts as it goes.
#[derive(Default)]
struct Tally {
    summary: Summary,
    no_opponent_allowed: u32,
}

impl Tally {
    fn error(&mut self, failure: &Failure) {
        *self.summary.errors.entry(failure.kind()).or_insert(0) += 1;
    }

    fn game_error(&mut self, error: &dms_example_backend::GameError) {
        *self.summary.errors.entry(error.kind()).or_insert(0) += 1;
    }

    fn trade(&mut self, receipt: &TradeReceipt) {
        self.summary.trades += 1;
        *self
            .summary
            .trades_by_instance
            .entry(receipt.offered_on.clone())
            .or_insert(0) += 1;
        if receipt.offered_on == receipt.accepted_on {
            self.summary.sticky_trades += 1;
        }
    }

    fn view(&mut self, view: &ServiceView) {
        let states = view
            .targets
            .iter()
            .filter(|(cluster, _, _)| cluster == dms_example_backend::clusters::TRADE)
            .map(|(_, instance, state)| (instance.clone(), state.clone()))
            .collect();
        self.summary
            .trade_states
            .insert(view.instance.clone(), states);
        self.summary
            .trade_routes
            .insert(view.instance.clone(), view.routes.clone());
        self.summary
            .routed_by_origin
            .insert(view.instance.clone(), view.routed);
    }

    /// Splits the errors into expected and unexpected.
    fn classify(&mut self) {
        let summary = &mut self.summary;
        summary.expected_errors = 0;
        summary.unexpected_errors = 0;
        for (kind, count) in &summary.errors {
            let expected = match kind.as_str() {
                "lobby.no_opponent" => (*count).min(self.no_opponent_allowed),
                k if EXPECTED.iter().any(|(e, _)| *e == k) => *count,
                _ => 0,
            };
            summary.expected_errors += expected;
            summary.unexpected_errors += count - expected;
        }
    }

    /// What is wrong with the run, if anything.
    fn problems(&self, args: &DriverArgs) -> Vec<String> {
        let s = &self.summary;
        let mut problems = Vec::new();
        if s.lost > 0 {
            problems.push(format!("{} requests lost", s.lost));
        }
        if s.unexpected_errors > 0 {
            problems.push(format!("{} unexpected errors", s.unexpected_errors));
        }
        if s.matched != s.players - s.players % 2 {
            problems.push(format!("{} of {} players matched", s.matched, s.players));
        }
        if s.sticky_matches != s.matches {
            problems.push(format!(
                "{} of {} matches left their Battle instance",
                s.matches - s.sticky_matches,
                s.matches
            ));
        }
        if s.sticky_trades != s.trades {
            problems.push(format!(
                "{} of {} trades left their Trade instance",
                s.trades - s.sticky_trades,
                s.trades
            ));
        }
        let direct = s
            .trade_states
            .values()
            .flat_map(|states| states.values())
            .any(|state| state != "Routed");
        if direct
            || s.trade_states
                .values()
                .any(|states| states.len() < args.trades as usize)
        {
            problems.push(format!(
                "Trade not reached through the brokers only: {:?}",
                s.trade_states
            ));
        }
        if s.trades > 0 && s.forwarded_by_broker.values().sum::<u64>() == 0 {
            problems.push("the brokers forwarded nothing".into());
        }
        let received_all = s
            .chats_received
            .values()
            .all(|n| *n >= u64::from(s.chats_sent));
        if !received_all || s.chats_received.is_empty() {
            problems.push(format!(
                "chat lines: {} sent, received {:?}",
                s.chats_sent, s.chats_received
            ));
        }
        problems
    }
}

fn club_of(player: u32, clubs: u32) -> String {
    let letter = char::from(b'a' + u8::try_from(player % clubs % 26).unwrap_or(0));
    format!("club-{letter}")
}

fn player_name(i: u32) -> String {
    format!("p-{i:02}")
}

/// Plays the players; exits 0 when nothing was lost, nothing failed unexpectedly and
/// every match and trade stayed on one instance.
pub(crate) async fn run(setup: Setup, args: DriverArgs) -> Result<ExitCode, String> {
    let request_timeout = setup.request_timeout.max(Duration::from_secs(15));
    let builder = setup
        .builder()
        .request_timeout(request_timeout)
        .target(cluster(LOBBY))
        .target(cluster(CLUB))
        .target(cluster(BROKER));
    let node = start(builder).await?;
    let result = play(&node, &args).await;
    node.shutdown().await;
    result
}

async fn play(node: &Node, args: &DriverArgs) -> Result<ExitCode, String> {
    let (lobby, club, broker) = (cluster(LOBBY), cluster(CLUB), cluster(BROKER));
    let clubs = args.clubs.max(1);
    let ready_timeout = Duration::from_millis(args.ready_timeout_ms);
    print_line(&format!(
        "driver: {} players in {clubs} clubs; waiting for the Lobby ({} Battle, {} Trade through \
         {} brokers) and the Club",
        args.players, args.battles, args.trades, args.brokers
    ));
    for (cluster, count) in [(&lobby, 1), (&club, 1), (&broker, args.brokers)] {
        node.wait_for_instances(cluster, count as usize, ready_timeout)
            .await
            .map_err(|e| format!("{cluster}: {e}"))?;
    }
    let ready = AwaitReady {
        battles: args.battles,
        trades: args.trades,
        brokers: args.brokers,
        timeout_ms: args.ready_timeout_ms,
    };
    let lobby_view = ask(node, &lobby, 0u64, LobbyReady(ready.clone()))
        .await
        .map_err(|e| format!("the Lobby is not ready: {e}"))?;
    let club_ready = AwaitReady {
        battles: 0,
        ..ready
    };
    let club_view = ask(node, &club, 0u64, ClubReady(club_ready))
        .await
        .map_err(|e| format!("the Club is not ready: {e}"))?;
    for view in [&lobby_view, &club_view] {
        print_view(view);
    }

    let ledger = Arc::new(Ledger::default());
    let deadline = Instant::now() + Duration::from_secs(args.deadline_s);
    let mut tally = Tally {
        no_opponent_allowed: args.players % 2,
        ..Tally::default()
    };
    tally.summary.players = args.players;

    // Clubs: join, then a chat line broadcast to every Club instance.
    let joins = (0..args.players)
        .map(|i| {
            let (node, club, ledger) = (node.clone(), club.clone(), ledger.clone());
            async move {
                let join = JoinClub {
                    club: club_of(i, clubs),
                    player: player_name(i),
                };
                let key = join.club.clone();
                let joined = ledger.track(ask(&node, &club, key.as_str(), join)).await;
                let chat = ClubRequest::Chat(ClubChat {
                    club: club_of(i, clubs),
                    player: player_name(i),
                    text: "hello, club".into(),
                });
                let said = ledger.track(node.broadcast_typed(&club, &chat)).await;
                (i, joined, said)
            }
        })
        .collect();
    let joined = all(deadline, joins).await;
    let mut members: BTreeMap<String, u32> = BTreeMap::new();
    for (i, join, said) in joined {
        match join {
            Ok(_) => *members.entry(club_of(i, clubs)).or_insert(0) += 1,
            Err(failure) => tally.error(&failure),
        }
        match said {
            Ok(_) => tally.summary.chats_sent += 1,
            Err(error) => tally.error(&Failure::Request(error)),
        }
    }
    let members: Vec<String> = members
        .iter()
        .map(|(club, n)| format!("{club} ({n})"))
        .collect();
    print_line(&format!(
        "clubs: {} players joined {}; {} chat lines broadcast to the Club cluster",
        args.players,
        members.join(", "),
        tally.summary.chats_sent
    ));

    // Matches: every player queues; each pair is played on Battle, the loot through Trade.
    let queue = (0..args.players)
        .map(|i| {
            let (node, lobby, ledger) = (node.clone(), lobby.clone(), ledger.clone());
            async move {
                let player = player_name(i);
                let join = JoinQueue {
                    player: player.clone(),
                };
                ledger
                    .track(ask(&node, &lobby, player.as_str(), join))
                    .await
            }
        })
        .collect();
    let reports = all(deadline, queue).await;
    let mut matches: BTreeMap<String, MatchReport> = BTreeMap::new();
    for report in reports {
        match report {
            Ok(report) => {
                tally.summary.matched += 1;
                matches.insert(report.match_id.clone(), report);
            }
            Err(failure) => {
                print_line(&format!("queue: {failure}"));
                tally.error(&failure);
            }
        }
    }
    for (shown, report) in matches.values().enumerate() {
        tally.summary.matches += 1;
        let first = report.answered_by.first().cloned().unwrap_or_default();
        *tally
            .summary
            .matches_by_battle
            .entry(first.clone())
            .or_insert(0) += 1;
        let sticky = report.answered_by.iter().all(|b| *b == first);
        if sticky {
            tally.summary.sticky_matches += 1;
        }
        match &report.loot {
            Ok(receipt) => tally.trade(receipt),
            Err(error) => tally.game_error(error),
        }
        match &report.repeated_accept {
            Some(error) => tally.game_error(error),
            None if report.loot.is_ok() => {
                *tally
                    .summary
                    .errors
                    .entry("trade.accepted_twice".into())
                    .or_insert(0) += 1;
            }
            None => {}
        }
        if shown < args.show || !sticky {
            print_match(report);
        }
    }

    // Gifts between members, through the Club and Trade; some outside the club.
    let mut gifts = Vec::new();
    for i in 0..args.players {
        let mut to = (i + clubs) % args.players;
        if to % clubs != i % clubs {
            to = i % clubs;
        }
        if to != i {
            gifts.push((i, to, false));
        }
        let other = (i + 1) % args.players;
        if i % 4 == 0 && other % clubs != i % clubs {
            gifts.push((i, other, true));
        }
    }
    let sends = gifts
        .iter()
        .map(|&(from, to, outside)| {
            let (node, club, ledger) = (node.clone(), club.clone(), ledger.clone());
            async move {
                let gift = Gift {
                    club: club_of(from, clubs),
                    from: player_name(from),
                    to: player_name(to),
                    item: format!("gift of {}", player_name(from)),
                };
                let text = format!("gift {} -> {} in {}", gift.from, gift.to, gift.club);
                let key = gift.club.clone();
                let given = ledger.track(ask(&node, &club, key.as_str(), gift)).await;
                (text, outside, given)
            }
        })
        .collect();
    let given = all(deadline, sends).await;
    let (mut shown_ok, mut shown_refused) = (false, false);
    for (text, outside, result) in given {
        match result {
            Ok(receipt) => {
                if !shown_ok {
                    print_line(&format!(
                        "{text}: offered on {}, accepted on {}",
                        receipt.offered_on, receipt.accepted_on
                    ));
                    shown_ok = true;
                }
                tally.trade(&receipt);
            }
            Err(failure) => {
                if !(outside && shown_refused) {
                    let note = if outside { " (expected)" } else { "" };
                    print_line(&format!("{text}: refused: {failure}{note}"));
                    shown_refused |= outside;
                }
                tally.error(&failure);
            }
        }
    }

    // What the Club instances received, what the brokers forwarded, how Trade is reached.
    for status in node.instances(&club).await {
        let wait = AwaitChats {
            count: u64::from(tally.summary.chats_sent),
            timeout_ms: 5_000,
        };
        match ledger.track(ask_instance(node, &status.path, wait)).await {
            Ok(log) => {
                tally
                    .summary
                    .chats_received
                    .insert(log.instance, log.received);
            }
            Err(failure) => tally.error(&failure),
        }
    }
    for status in node.instances(&broker).await {
        match ledger
            .track(ask_instance(node, &status.path, BrokerStatsRequest))
            .await
        {
            Ok(stats) => {
                tally
                    .summary
                    .forwarded_by_broker
                    .insert(stats.broker, stats.forwarded);
            }
            Err(failure) => tally.error(&failure),
        }
    }
    let now = AwaitReady {
        battles: 0,
        trades: 0,
        brokers: 0,
        timeout_ms: 1_000,
    };
    match ledger
        .track(ask(node, &lobby, 0u64, LobbyReady(now.clone())))
        .await
    {
        Ok(view) => tally.view(&view),
        Err(failure) => tally.error(&failure),
    }
    match ledger.track(ask(node, &club, 0u64, ClubReady(now))).await {
        Ok(view) => tally.view(&view),
        Err(failure) => tally.error(&failure),
    }
    let issued = ledger.issued.load(Ordering::Relaxed);
    tally.summary.requests = issued;
    tally.summary.lost = issued - ledger.ended.load(Ordering::Relaxed);
    tally.classify();
    let problems = tally.problems(args);
    print_summary(&tally.summary, &problems);
    if args.json {
        let json = serde_json::to_string(&tally.summary)
            .map_err(|e| format!("cannot write the summary: {e}"))?;
        print_line(&format!("summary {json}"));
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_view(view: &ServiceView) {
    let mut by_cluster: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (cluster, instance, state) in &view.targets {
        by_cluster
            .entry(cluster)
            .or_default()
            .push(format!("{instance} {state}"));
    }
    let seen: Vec<String> = by_cluster
        .iter()
        .map(|(cluster, instances)| format!("{cluster} [{}]", instances.join(", ")))
        .collect();
    print_line(&format!("{} sees {}", view.instance, seen.join("; ")));
    print_line(&format!(
        "{} reaches Trade by the routing table: {}",
        view.instance,
        view.routes.join("; ")
    ));
}

fn print_match(report: &MatchReport) {
    let calls = report.answered_by.len();
    let first = report.answered_by.first().map_or("?", String::as_str);
    let sticky = if report.answered_by.iter().all(|b| b == first) {
        format!("all {calls} calls answered by {first}")
    } else {
        format!("NOT STICKY: {:?}", report.answered_by)
    };
    let loot = match &report.loot {
        Ok(receipt) => format!(
            "trophy {} -> {} offered on {}, accepted on {}",
            report.winner, report.loser, receipt.offered_on, receipt.accepted_on
        ),
        Err(error) => format!("trophy not handed: {error}"),
    };
    let again = match &report.repeated_accept {
        Some(error) => format!("repeated accept refused: {error}"),
        None => "repeated accept NOT refused".into(),
    };
    print_line(&format!(
        "match {} ({} vs {}): {sticky}; {} won; {loot}; {again}",
        report.match_id, report.players[0], report.players[1], report.winner
    ));
}

fn counts<V: std::fmt::Display>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(s: &Summary, problems: &[String]) {
    print_line("--- summary ---");
    print_line(&format!(
        "players: {} queued, {} matched in {} matches",
        s.players, s.matched, s.matches
    ));
    print_line(&format!(
        "battle: matches per instance: {}; {}/{} matches answered by one instance from start to end (sticky key: the match id)",
        counts(&s.matches_by_battle),
        s.sticky_matches,
        s.matches
    ));
    print_line(&format!(
        "trade: {} trades, per instance: {}; {}/{} with offer and accept on the same instance (sticky key: the offer id)",
        s.trades,
        counts(&s.trades_by_instance),
        s.sticky_trades,
        s.trades
    ));
    for (origin, states) in &s.trade_states {
        print_line(&format!(
            "trade: {origin} sees {} (Routed: no session of its own), sent {} requests through the routing table",
            counts(states),
            s.routed_by_origin.get(origin).copied().unwrap_or(0)
        ));
    }
    print_line(&format!(
        "brokers: forwarded {}",
        counts(&s.forwarded_by_broker)
    ));
    print_line(&format!(
        "club: {} chat lines broadcast; received per Club instance: {}",
        s.chats_sent,
        counts(&s.chats_received)
    ));
    let errors: Vec<String> = s
        .errors
        .iter()
        .map(|(kind, n)| {
            let why = EXPECTED
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(String::new(), |(_, why)| format!(" (expected: {why})"));
            format!("{kind} {n}{why}")
        })
        .collect();
    print_line(&format!(
        "errors by kind: {}",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        }
    ));
    print_line(&format!(
        "requests: {} issued by the driver, {} lost (every other one answered, or failed with a typed error); {} unexpected errors",
        s.requests, s.lost, s.unexpected_errors
    ));
    if problems.is_empty() {
        print_line("result: OK");
    } else {
        print_line(&format!("result: FAILED: {}", problems.join("; ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn players_and_clubs() {
        assert_eq!(player_name(3), "p-03");
        assert_eq!(club_of(0, 2), "club-a");
        assert_eq!(club_of(3, 2), "club-b");
    }

    #[test]
    fn an_odd_player_out_is_expected_once() {
        let mut tally = Tally {
            no_opponent_allowed: 1,
            ..Tally::default()
        };
        tally.summary.errors.insert("lobby.no_opponent".into(), 2);
        tally.summary.errors.insert("club.not_a_member".into(), 3);
        tally.summary.errors.insert("request.timeout".into(), 1);
        tally.classify();
        assert_eq!(tally.summary.expected_errors, 4);
        assert_eq!(tally.summary.unexpected_errors, 2);
    }
}
