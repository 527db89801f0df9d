//! Typed request/reply between two processes on etcd (the README's "Typed messages between
//! two processes"). Start etcd, then `battle` in one terminal and `lobby` in another:
//!
//! ```sh
//! cargo run -p dms --features etcd --example typed_processes -- battle
//! cargo run -p dms --features etcd --example typed_processes -- lobby
//! ```
#![allow(clippy::print_stdout)] // an example prints what it got

use dms::{ClusterPath, Node};
use dms_discovery::etcd::{EtcdDiscovery, EtcdOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Join {
    player: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Joined {
    room: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let etcd = EtcdDiscovery::connect(&[endpoint], EtcdOptions::default()).await?;
    let battles: ClusterPath = "/demo/cn/android/w1/g1/Battle".parse()?;
    if std::env::args().nth(1).as_deref() == Some("battle") {
        let battle = Node::builder(battles.instance("battle-1")?)
            .discovery(etcd)
            .start()
            .await?;
        println!("battle-1 serving");
        while let Some(request) = battle.next_request().await {
            // A payload that is not a `Join` is answered BAD_REQUEST.
            let Ok((join, request)) = request.decode_or_reject::<Join>().await else {
                continue;
            };
            let room = format!("room-{}", join.player % 10);
            request.reply_typed(&Joined { room }).await?;
        }
    } else {
        let lobby = Node::builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
            .discovery(etcd)
            .target(battles.clone())
            .start()
            .await?;
        let joined: Joined = lobby.call(&battles, 42u64, &Join { player: 42 }).await?;
        println!("{joined:?}");
        lobby.shutdown().await;
    }
    Ok(())
}
