//! An example game backend on DMS: Lobby, Battle, Club and Trade services, each instance a
//! process of its own, found through etcd, talking with typed messages.
//!
//! - **Lobby** takes [`JoinQueue`] from players, pairs them, and plays each match on a
//!   Battle instance picked by the match id ([`StartMatch`], [`PlayRound`], [`EndMatch`]
//!   all carry it as their dispatch key, so a match never leaves the instance that holds
//!   it: another instance would answer [`GameError::UnknownMatch`]). The winner's loot goes
//!   to the loser through Trade.
//! - **Battle** holds the matches it started.
//! - **Club** keeps the members of each club (dispatched by club name), counts the
//!   [`ClubChat`]s broadcast to the whole Club cluster, and hands gifts between members
//!   through Trade ([`Gift`]).
//! - **Trade** holds offers ([`Offer`], [`Accept`], dispatched by offer id). Nobody dials
//!   it: Trade instances link only to the **Broker** cluster, and Lobby and Club reach them
//!   through the brokers (`NodeBuilder::routed_target`).
//! - The **driver** plays players through all of it and prints what happened
//!   ([`Summary`]).
//!
//! Every request is one enum per service ([`LobbyRequest`], [`BattleRequest`]...), its
//! reply a `Result<Reply, GameError>` (see [`Ask`]); a failure of the transport is a
//! [`dms::RequestError`]. Both end up as a [`Failure`] with a [`kind`](Failure::kind).

pub mod counters;
mod messages;
mod typed;

use std::time::Duration;

use dms::{ClusterPath, ServicePath};

pub use messages::*;
pub use typed::{Ask, Failure, Incoming, answer, ask, ask_instance, serve_typed};

/// The world every service of the example lives in: `/App/Area/Platform/World/Group`.
pub const WORLD: &str = "/backend/eu/pc/w1/g1";

/// The services' cluster names.
pub mod clusters {
    /// Where players queue and get matched.
    pub const LOBBY: &str = "Lobby";
    /// Where matches are played.
    pub const BATTLE: &str = "Battle";
    /// Clubs, their members and their chat.
    pub const CLUB: &str = "Club";
    /// Item trades, reached only through the brokers.
    pub const TRADE: &str = "Trade";
    /// The broker cluster in front of Trade.
    pub const BROKER: &str = "Broker";
    /// The players' driver.
    pub const DRIVER: &str = "Driver";
}

/// The cluster `name` of [`WORLD`].
pub fn cluster(name: &str) -> ClusterPath {
    #[allow(clippy::expect_used)] // the names above make valid paths
    format!("{WORLD}/{name}")
        .parse()
        .expect("a cluster path of the example's world")
}

/// The instance `instance` of cluster `name` of [`WORLD`].
pub fn instance(name: &str, instance: &str) -> Result<ServicePath, dms::PathError> {
    format!("{WORLD}/{name}/{instance}").parse()
}

/// The etcd endpoints of `etcd://host:port[,host:port...]`.
pub fn etcd_endpoints(url: &str) -> Result<Vec<String>, String> {
    let Some(hosts) = url.strip_prefix("etcd://") else {
        return Err(format!(
            "unsupported discovery URL {url:?}: use etcd://host:port[,host:port...]"
        ));
    };
    let endpoints: Vec<String> = hosts.split(',').map(|h| h.trim().to_owned()).collect();
    for endpoint in &endpoints {
        let valid = endpoint
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(format!(
                "bad etcd endpoint {endpoint:?} in {url:?}: expected host:port"
            ));
        }
    }
    Ok(endpoints)
}

/// The discovery of every process of the example: etcd at `url`.
pub async fn connect(url: &str) -> Result<dms_discovery::etcd::EtcdDiscovery, String> {
    let endpoints = etcd_endpoints(url)?;
    dms_discovery::etcd::EtcdDiscovery::connect(&endpoints, Default::default())
        .await
        .map_err(|e| format!("cannot reach etcd at {url}: {e}"))
}

/// How long a service waits for what [`AwaitReady`] asks when the caller gives no
/// timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls() {
        assert_eq!(
            etcd_endpoints("etcd://127.0.0.1:2379,10.0.0.2:2379"),
            Ok(vec![
                "127.0.0.1:2379".to_owned(),
                "10.0.0.2:2379".to_owned()
            ])
        );
        assert!(etcd_endpoints("memory://").is_err());
        assert!(etcd_endpoints("etcd://127.0.0.1").is_err());
        assert!(etcd_endpoints("etcd://:2379").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(cluster("Trade").to_string(), "/backend/eu/pc/w1/g1/Trade");
        assert_eq!(
            instance("Trade", "trade-1").map(|p| p.instance().to_owned()),
            Ok("trade-1".to_owned())
        );
    }
}
