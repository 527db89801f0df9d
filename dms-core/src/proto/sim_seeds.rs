//! F14 (docs/RELIABILITY.md): the two-node simulator of [`super::tests`] over 200 seeds of
//! random heartbeat settings, loss, jitter, silences and request traffic.
//!
//! Each seed draws its parameters (printed on failure), runs a few virtual seconds and
//! checks properties that hold for every draw, derived from `protocol.rs` and
//! docs/PROTOCOL.md §5:
//!
//! - **exact liveness**, on each side: a session ends only by a heartbeat verdict taken
//!   exactly `bound` after the last message this side received (`silent_for == bound`), or
//!   by the peer's DISCONNECT `TIMEOUT` relaying its own verdict; no gap between received
//!   messages longer than the bound goes unpunished, and none shorter is punished;
//! - **network-level bounds**, derived from that and the PING grid: a total silence longer
//!   than `bound + jitter` ends both sessions within `[(missed − 1) × interval, bound +
//!   latency + jitter]` of its start (the lower end only without loss, and one latency
//!   lower if the silence starts before the first PONG is sent); a one-way silence
//!   ends the deaf side's session as fast; without loss, no silence and a total silence
//!   shorter than `(missed − 2) × interval − 2 × (latency + jitter)` end nothing;
//! - **requests**: every request gets exactly one outcome by its deadline (the reply, a
//!   timeout at the deadline, or the session's loss at the moment of that loss); nothing
//!   is left pending;
//! - **no throttling, no pause**: the drawn PING rates are within the PING budget and the
//!   virtual clock never ticks late.
//!
//! Why not "a silence shorter than the bound by one interval is survived": the requester
//! measures silence between PONGs, and the PINGs are on a fixed grid, so a network silence
//! of `d` can look like up to about `d + interval + round trip` to it. With `missed` 3 and
//! 100 ms, a silence of 200 ms that starts as a PING reaches the responder kills the
//! session (the PONG of that PING and the next two PINGs are lost: 400 ms between PONGs).
//!
//! `DMS_SIM_SEED=N` runs seed `N` alone; `DMS_SIM_SEEDS=N` runs seeds `0..N`.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::control::{Reason, codes};
use super::tests::{Faults, LATENCY, Node, Pair, a_path, b_path};
use super::*;
use crate::{Multipart, PeerId};

/// Seeds run by default (in CI).
const SEEDS: u64 = 200;
/// Most jitter added to a message's latency. At most `LATENCY`: the lower end of the
/// detection window relies on it.
const MAX_JITTER_US: u64 = 5_000;
/// How often the simulated applications act (send requests, answer them).
const STEP: Duration = Duration::from_millis(2);

/// splitmix64: tiny, and its output never changes (a seed replays forever).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` %.
    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    None,
    /// Both directions, for less than `(missed − 2) × interval` minus the jitter margin.
    TotalShort,
    /// Both directions, for longer than the bound.
    TotalLong,
    /// One direction (`to_b`: the requester's messages), for longer than the bound.
    OneWay {
        to_b: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok { after: Duration },
    Error { after: Duration },
    Never,
}

#[derive(Debug, Clone)]
struct PlannedRequest {
    /// After the start of the run.
    at: Duration,
    from_a: bool,
    timeout: Duration,
    answer: Answer,
}

/// Everything a seed draws.
#[derive(Debug, Clone)]
struct Draw {
    seed: u64,
    interval: Duration,
    missed: u32,
    bound: Duration,
    /// Loss towards b / towards a, in %.
    loss_to_b: u64,
    loss_to_a: u64,
    max_jitter: Duration,
    silence: Silence,
    /// The silence's start, after the start of the run, and length.
    silence_from: Duration,
    silence_for: Duration,
    requests: Vec<PlannedRequest>,
    run: Duration,
}

impl Draw {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed, 0);
        let interval = rng.millis(50, 500);
        let missed = rng.range(2, 5) as u32;
        let bound = interval * missed;
        let (loss_to_b, loss_to_a) = if rng.percent(40) {
            (0, 0)
        } else {
            (rng.range(0, 30), rng.range(0, 30))
        };
        let max_jitter = if rng.percent(30) {
            Duration::ZERO
        } else {
            Duration::from_micros(rng.range(1, MAX_JITTER_US))
        };
        let short_max = short_silence_max(interval, missed, max_jitter);
        let silence = match rng.range(0, 99) {
            0..30 => Silence::None,
            30..50 if short_max.is_some() => Silence::TotalShort,
            30..80 => Silence::TotalLong,
            _ => Silence::OneWay {
                to_b: rng.percent(50),
            },
        };
        let silence_from = rng.millis(0, 1500);
        let long_min = bound + max_jitter + Duration::from_millis(1);
        let silence_for = match silence {
            Silence::None => Duration::ZERO,
            Silence::TotalShort => {
                let max = short_max.unwrap_or_default().as_millis() as u64;
                rng.millis(1, max)
            }
            Silence::TotalLong | Silence::OneWay { .. } => {
                let min = long_min.as_millis() as u64 + 1;
                rng.millis(min, min + 3 * interval.as_millis() as u64)
            }
        };
        let requests = (0..rng.range(0, 12))
            .map(|_| PlannedRequest {
                at: rng.millis(0, 3000),
                from_a: rng.percent(60),
                timeout: rng.millis(50, 1500),
                answer: match rng.range(0, 99) {
                    0..15 => Answer::Never,
                    15..25 => Answer::Error {
                        after: rng.millis(0, 300),
                    },
                    _ => Answer::Ok {
                        after: rng.millis(0, 300),
                    },
                },
            })
            .collect::<Vec<_>>();
        let last_deadline = requests
            .iter()
            .map(|r| r.at + r.timeout)
            .max()
            .unwrap_or_default();
        let run = [
            Duration::from_secs(3),
            silence_from + silence_for + bound + 3 * interval,
            last_deadline + Duration::from_millis(100),
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        Self {
            seed,
            interval,
            missed,
            bound,
            loss_to_b,
            loss_to_a,
            max_jitter,
            silence,
            silence_from,
            silence_for,
            requests,
            run,
        }
    }

    fn lossless(&self) -> bool {
        self.loss_to_b == 0 && self.loss_to_a == 0
    }

    /// Whether the silence drops messages sent at `offset` (after the start) towards b /a.
    fn silenced(&self, offset: Duration, to_b: bool) -> bool {
        let during = offset >= self.silence_from && offset < self.silence_from + self.silence_for;
        during
            && match self.silence {
                Silence::None => false,
                Silence::TotalShort | Silence::TotalLong => true,
                Silence::OneWay { to_b: silenced } => silenced == to_b,
            }
    }
}

/// The longest total silence that no side may take for a death without loss: the
/// requester's PINGs whose PONG is lost lie within `silence + latency + jitter`, and it may
/// not lose `missed − 1` of them in a row; `None` if there is none (`missed` 2).
fn short_silence_max(interval: Duration, missed: u32, jitter: Duration) -> Option<Duration> {
    let room = interval * missed.saturating_sub(2);
    let margin = 2 * (LATENCY + jitter) + Duration::from_millis(1);
    room.checked_sub(margin)
        .filter(|d| *d >= Duration::from_millis(1))
}

/// The network of one seed: the drawn silence, then loss, then jitter.
fn faults(draw: &Draw, start: Instant) -> Faults {
    let draw = draw.clone();
    let mut rng = Rng::new(draw.seed, 1);
    Box::new(move |now, to_b| {
        let offset = now.saturating_duration_since(start);
        let loss = if to_b { draw.loss_to_b } else { draw.loss_to_a };
        let lost = rng.percent(loss);
        let jitter = rng.range(0, draw.max_jitter.as_micros() as u64);
        if draw.silenced(offset, to_b) || lost {
            None
        } else {
            Some(Duration::from_micros(jitter))
        }
    })
}

/// One request as it went.
#[derive(Debug)]
struct Sent {
    plan: PlannedRequest,
    id: RequestId,
    deadline: Instant,
    body: Multipart,
    /// When the responder answered it, and how.
    answered: Option<(Instant, Result<Multipart, Reason>)>,
}

fn node(pair: &mut Pair, a: bool) -> &mut Node {
    if a { &mut pair.a } else { &mut pair.b }
}

fn peer_of(a: bool) -> PeerId {
    if a {
        b_path().peer_id()
    } else {
        a_path().peer_id()
    }
}

/// The session's end on `node`: (when, why).
fn loss(node: &Node) -> Option<(Instant, &LossReason)> {
    let mut losses = node
        .events
        .iter()
        .zip(&node.at)
        .filter_map(|(e, at)| match e {
            Event::PeerLost { reason, .. } => Some((*at, reason)),
            _ => None,
        });
    let first = losses.next();
    assert!(
        losses.next().is_none(),
        "one loss at most: {:?}",
        node.events
    );
    first
}

/// Runs one seed; panics on the first broken property.
fn run(draw: &Draw) {
    let interval = draw.interval;
    let missed = draw.missed;
    let mut pair = Pair::ready_with(|a| {
        a.ping_interval = interval;
        a.missed_pongs = missed;
    });
    let start = pair.now;
    let end = start + draw.run;
    pair.faults = Some(faults(draw, start));

    let mut plans: Vec<PlannedRequest> = draw.requests.clone();
    plans.sort_by_key(|p| p.at);
    let mut plans = plans.into_iter().peekable();
    let mut sent: Vec<Sent> = Vec::new();
    // (issuer is a, id) → index in `sent`.
    let mut by_id: HashMap<(bool, u64), usize> = HashMap::new();
    // Requests received, to answer: (when, index in `sent`).
    let mut to_answer: Vec<(Instant, usize)> = Vec::new();
    let mut seen = [0usize; 2];
    while pair.now < end {
        while plans.peek().is_some_and(|p| start + p.at <= pair.now) {
            let plan = plans.next().unwrap();
            let now = pair.now;
            let issuer = node(&mut pair, plan.from_a);
            let up = loss(issuer).is_none();
            let body = Multipart::from_frames([format!("req-{}", sent.len())]);
            let result =
                issuer
                    .proto
                    .request(now, &peer_of(plan.from_a), body.clone(), plan.timeout);
            match result {
                Ok(id) => {
                    assert!(up, "request accepted on a lost session");
                    by_id.insert((plan.from_a, id.0), sent.len());
                    sent.push(Sent {
                        deadline: now + plan.timeout,
                        plan,
                        id,
                        body,
                        answered: None,
                    });
                }
                Err(err) => {
                    assert!(!up, "request refused on a live session: {err:?}");
                    assert!(matches!(err, ProtoError::NotReady(_)), "{err:?}");
                }
            }
        }
        to_answer.retain(|&(due, index)| {
            if due > pair.now {
                return true;
            }
            let request = &mut sent[index];
            let from_a = request.plan.from_a;
            let result = match request.plan.answer {
                Answer::Ok { .. } => {
                    let mut echo = request.body.clone();
                    echo.push("!");
                    Ok(echo)
                }
                Answer::Error { .. } => Err(Reason {
                    code: codes::HANDLER_FAILED,
                    detail: format!("no {}", request.id.0),
                }),
                Answer::Never => unreachable!(),
            };
            let now = pair.now;
            let responder = node(&mut pair, !from_a);
            let up = loss(responder).is_none();
            let replied = responder
                .proto
                .reply(&peer_of(!from_a), request.id, result.clone());
            assert_eq!(replied.is_ok(), up, "reply on a session up: {up}");
            if replied.is_ok() {
                request.answered = Some((now, result));
            }
            false
        });
        pair.drive_for(STEP.min(end - pair.now));
        for responder_is_a in [true, false] {
            let responder = node(&mut pair, responder_is_a);
            let fresh = responder
                .events
                .iter()
                .zip(&responder.at)
                .skip(seen[usize::from(responder_is_a)]);
            for (event, at) in fresh {
                match event {
                    Event::Request { id, body, .. } => {
                        let index = by_id[&(!responder_is_a, id.0)];
                        let request = &sent[index];
                        assert_eq!(*body, request.body, "the request's body");
                        match request.plan.answer {
                            Answer::Ok { after } | Answer::Error { after } => {
                                to_answer.push((*at + after, index));
                            }
                            Answer::Never => {}
                        }
                    }
                    Event::PeerLost { .. } | Event::Reply { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            seen[usize::from(responder_is_a)] = responder.events.len();
        }
    }
    pair.collect();

    check_liveness(draw, &pair, end);
    check_network(draw, &pair, start);
    check_requests(draw, &pair, start, &sent);
}

/// Exact liveness on each side (docs/PROTOCOL.md §5: "silence ≥ the bound, measured from
/// the last message received"), with timers that run on time.
fn check_liveness(draw: &Draw, pair: &Pair, end: Instant) {
    let bound = draw.bound;
    for (name, node, other) in [("a", &pair.a, &pair.b), ("b", &pair.b, &pair.a)] {
        let stats = node.proto.stats();
        assert_eq!(stats.pauses, 0, "{name}: the virtual clock is never late");
        assert_eq!(stats.pings_dropped, 0, "{name}: PINGs within the budget");
        assert_eq!(stats.ping_floods, 0, "{name}");
        assert!(
            !node
                .events
                .iter()
                .any(|e| matches!(e, Event::PeerReady { .. })),
            "{name}: no second READY"
        );
        let until = loss(node).map_or(end, |(at, _)| at);
        let heard: Vec<Instant> = node.heard.iter().copied().filter(|&h| h <= until).collect();
        let last = *heard.last().expect("the handshake was heard");
        for pair in heard.windows(2) {
            assert!(
                pair[1] - pair[0] <= bound,
                "{name}: silent {:?} > the bound {bound:?} from {:?} without a verdict",
                pair[1] - pair[0],
                pair[0] - heard[0],
            );
        }
        match loss(node) {
            None => {
                assert!(
                    end - last < bound,
                    "{name}: silent {:?} at the end, no verdict",
                    end - last
                );
                assert_eq!(
                    node.proto.session_state(&peer_of(name == "a")),
                    Some(SessionState::Ready),
                    "{name}"
                );
            }
            Some((at, LossReason::HeartbeatTimeout { silent_for })) => {
                assert_eq!(*silent_for, bound, "{name}: the verdict on time");
                assert_eq!(at, last + bound, "{name}: measured from the last message");
            }
            Some((
                at,
                LossReason::Disconnected {
                    initiator: Initiator::Remote,
                    reason,
                },
            )) => {
                assert_eq!(reason.code, codes::TIMEOUT, "{name}: {reason:?}");
                assert_eq!(at, last, "{name}: the DISCONNECT is the last message");
                let Some((verdict, LossReason::HeartbeatTimeout { .. })) = loss(other) else {
                    panic!("{name}: a DISCONNECT without the peer's verdict")
                };
                assert!(verdict < at, "{name}");
            }
            Some((_, other)) => panic!("{name}: lost for {other:?}"),
        }
        assert_eq!(node.proto.pending(), 0, "{name}: nothing left pending");
    }
}

/// What the drawn faults imply.
fn check_network(draw: &Draw, pair: &Pair, start: Instant) {
    let (interval, bound) = (draw.interval, draw.bound);
    let silence = start + draw.silence_from;
    // The last message sent before the silence arrives by then.
    let by = silence + bound + LATENCY + draw.max_jitter;
    let lost_at = |node: &Node| loss(node).map(|(at, _)| at);
    match draw.silence {
        Silence::None | Silence::TotalShort if draw.lossless() => {
            for (name, node) in [("a", &pair.a), ("b", &pair.b)] {
                assert_eq!(loss(node), None, "{name}: no false verdict");
            }
        }
        Silence::None | Silence::TotalShort => {}
        Silence::TotalLong => {
            for (name, node) in [("a", &pair.a), ("b", &pair.b)] {
                let at = lost_at(node).unwrap_or_else(|| panic!("{name}: never declared dead"));
                assert!(
                    at <= by,
                    "{name}: dead {:?} after the silence",
                    at - silence
                );
                assert!(at - silence <= bound + 2 * interval, "{name}");
                if draw.lossless() {
                    let (_, reason) = loss(node).unwrap();
                    assert!(
                        matches!(reason, LossReason::HeartbeatTimeout { .. }),
                        "{name}: {reason:?}"
                    );
                    // Once the first PONG is out, each side last heard from the other at
                    // most an interval before the silence. Before, the requester last
                    // heard the READY answer, an interval before its first PING: up to
                    // one latency earlier than a PONG of that PING would have come back.
                    let first_pong_out = pair.a.heard[0] + interval + LATENCY + draw.max_jitter;
                    let early = if silence > first_pong_out {
                        Duration::ZERO
                    } else {
                        LATENCY + draw.max_jitter
                    };
                    let lower = (draw.missed - 1) * interval - early;
                    let after = at.checked_duration_since(silence);
                    assert!(
                        after.is_some_and(|d| d >= lower),
                        "{name}: dead {after:?} after the silence, before {lower:?}"
                    );
                }
            }
        }
        Silence::OneWay { to_b } => {
            let (deaf, name) = if to_b { (&pair.b, "b") } else { (&pair.a, "a") };
            let at = lost_at(deaf).unwrap_or_else(|| panic!("{name}: never declared dead"));
            assert!(
                at <= by,
                "{name}: dead {:?} after the silence",
                at - silence
            );
            if draw.lossless() {
                let hearing = if to_b { &pair.a } else { &pair.b };
                let then = lost_at(hearing).expect("the other side ends too");
                assert!(then <= by + LATENCY + draw.max_jitter, "{then:?}");
            }
        }
    }
}

/// Every request ends once, by its deadline, as the network and the responder allow.
fn check_requests(draw: &Draw, pair: &Pair, start: Instant, sent: &[Sent]) {
    let replies = |node: &Node| {
        node.events
            .iter()
            .zip(&node.at)
            .filter_map(|(e, at)| match e {
                Event::Reply { id, result } => Some((*id, *at, result.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let (to_a, to_b) = (replies(&pair.a), replies(&pair.b));
    for (issuer_is_a, outcomes) in [(true, &to_a), (false, &to_b)] {
        let issued = sent.iter().filter(|s| s.plan.from_a == issuer_is_a).count();
        assert_eq!(outcomes.len(), issued, "one outcome per request");
        let issuer = if issuer_is_a { &pair.a } else { &pair.b };
        let timeouts = outcomes
            .iter()
            .filter(|o| o.2 == Err(RequestError::Timeout))
            .count();
        assert!(issuer.proto.late_replies() <= timeouts as u64);
    }
    let fault_free = draw.lossless() && draw.silence == Silence::None;
    for (index, request) in sent.iter().enumerate() {
        let outcomes = if request.plan.from_a { &to_a } else { &to_b };
        let found: Vec<_> = outcomes
            .iter()
            .filter(|(id, ..)| *id == request.id)
            .collect();
        let [(_, at, result)] = found[..] else {
            panic!("request {index}: outcomes {found:?}")
        };
        let at = *at;
        let issuer = if request.plan.from_a {
            &pair.a
        } else {
            &pair.b
        };
        let since = |t: Instant| t - start;
        let context = format!(
            "request {index} {:?} (id {}, deadline +{:?}, answered {:?}): {result:?} at +{:?}",
            request.plan,
            request.id.0,
            since(request.deadline),
            request.answered.as_ref().map(|(t, r)| (since(*t), r)),
            since(at),
        );
        assert!(at <= request.deadline, "{context}: after the deadline");
        match result {
            Ok(body) => {
                let (answered, answer) = request.answered.as_ref().expect(&context);
                assert_eq!(Ok(body), answer.as_ref(), "{context}");
                assert!(at >= *answered + LATENCY, "{context}");
            }
            Err(RequestError::Remote(reason)) => {
                let (answered, answer) = request.answered.as_ref().expect(&context);
                assert_eq!(Err(reason), answer.as_ref(), "{context}");
                assert!(at >= *answered + LATENCY, "{context}");
            }
            Err(RequestError::Timeout) => {
                assert_eq!(at, request.deadline, "{context}: timed out on time");
            }
            Err(RequestError::PeerLost(reason)) => {
                let lost = loss(issuer).expect(&context);
                assert_eq!((at, reason), lost, "{context}: failed with its session");
            }
            Err(other) => panic!("{context}: {other:?}"),
        }
        if fault_free {
            // Answered early enough to arrive by the deadline: the answer; never: a timeout.
            let timed_out = *result == Err(RequestError::Timeout);
            match &request.answered {
                None => assert!(timed_out, "{context}: fault-free, never answered"),
                Some((t, _)) if *t + LATENCY + draw.max_jitter <= request.deadline => {
                    assert!(!timed_out, "{context}: fault-free, answered in time");
                }
                Some(_) => {}
            }
        }
    }
}

fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "?".to_owned())
}

/// F14: the simulator over 200 seeds (see the module's doc for what is drawn and checked).
#[test]
fn heartbeats_and_requests_keep_their_bounds_over_random_seeds() {
    let seeds: Vec<u64> = match std::env::var("DMS_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("DMS_SIM_SEED: a number")],
        Err(_) => {
            let n = std::env::var("DMS_SIM_SEEDS")
                .map_or(SEEDS, |n| n.parse().expect("DMS_SIM_SEEDS: a number"));
            (0..n).collect()
        }
    };
    let mut failed = Vec::new();
    for &seed in &seeds {
        let draw = Draw::new(seed);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&draw))) {
            failed.push(format!(
                "seed {seed}: {}\n  replay: DMS_SIM_SEED={seed} cargo nextest run -p dms-core sim_seeds\n  {draw:?}",
                message(panic.as_ref())
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed:\n{}",
        failed.len(),
        seeds.len(),
        failed.join("\n")
    );
}

/// The draws cover every case, and often enough for 200 seeds to mean something.
#[test]
fn the_seeds_cover_every_kind_of_fault() {
    let draws: Vec<Draw> = (0..SEEDS).map(Draw::new).collect();
    let count = |f: &dyn Fn(&Draw) -> bool| draws.iter().filter(|d| f(d)).count();
    let kinds = [
        count(&|d| d.silence == Silence::None && d.lossless()),
        count(&|d| d.silence == Silence::None && !d.lossless()),
        count(&|d| d.silence == Silence::TotalShort && d.lossless()),
        count(&|d| d.silence == Silence::TotalShort && !d.lossless()),
        count(&|d| d.silence == Silence::TotalLong && d.lossless()),
        count(&|d| d.silence == Silence::TotalLong && !d.lossless()),
        count(&|d| matches!(d.silence, Silence::OneWay { to_b: true })),
        count(&|d| matches!(d.silence, Silence::OneWay { to_b: false })),
        count(&|d| d.missed == 2),
        count(&|d| d.missed == 5),
        count(&|d| d.max_jitter > Duration::ZERO),
        count(&|d| !d.requests.is_empty()),
    ];
    assert!(kinds.iter().all(|&n| n >= 5), "{kinds:?}");
}

/// The boundary the seeds respect, shown: 100 ms × 3, no loss, a total silence of 200 ms
/// (the bound minus one interval) that starts as a PING reaches the responder. Its PONG
/// and the next two PINGs are lost, so the requester goes 400 ms between PONGs and
/// declares the responder dead, while the responder, 300 ms between PINGs, would not.
#[test]
fn a_silence_one_interval_shorter_than_the_bound_can_still_end_the_session() {
    let mut pair = Pair::ready_with(|_| {});
    let start = pair.now;
    // READY came back at 10 ms, 10 ms before `start`: PINGs leave at 90 ms, 190 ms, ...
    // after it and reach the responder 5 ms later.
    let silence = start + Duration::from_millis(195);
    let until = silence + Duration::from_millis(200);
    pair.faults = Some(Box::new(move |now, _| {
        (now < silence || now >= until).then_some(Duration::ZERO)
    }));
    pair.drive_for(Duration::from_secs(1));
    let (at, reason) = loss(&pair.a).expect("the requester declares the responder dead");
    assert_eq!(
        reason,
        &LossReason::HeartbeatTimeout {
            silent_for: Duration::from_millis(300)
        }
    );
    // The last PONG came at 100 ms (the PING of 90 ms): dead 300 ms later, 15 ms after
    // the silence ended; the responder hears of it by DISCONNECT.
    assert_eq!(at, start + Duration::from_millis(400));
    assert!(at > until);
    assert!(
        matches!(
            loss(&pair.b),
            Some((_, LossReason::Disconnected { initiator: Initiator::Remote, reason }))
                if reason.code == codes::TIMEOUT
        ),
        "{:?}",
        pair.b.events
    );
}
