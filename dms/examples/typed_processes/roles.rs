//! The two processes of the README's "Typed messages between two processes": what each
//! runs, over any discovery both share (etcd across processes). Used by the example's
//! `main.rs` and by `dms/tests/typed_processes.rs`, which runs both on a real etcd.

use dms::{ClusterPath, Discovery, Node};
use serde::{Deserialize, Serialize};

/// What a requester sends.
#[derive(Serialize, Deserialize)]
pub(crate) struct Join {
    /// The player.
    pub(crate) player: u64,
}

/// What it gets back.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct Joined {
    /// The player's room.
    pub(crate) room: String,
}

/// The error of either role.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// The Battle cluster.
pub(crate) fn battles() -> Result<ClusterPath, Error> {
    Ok("/demo/cn/android/w1/g1/Battle".parse()?)
}

/// Process 1: serves `Join` requests as battle-1 until the node stops (`ready` is told
/// once it is registered).
pub(crate) async fn battle<D: Discovery>(
    discovery: D,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), Error> {
    let battle = Node::builder(battles()?.instance("battle-1")?)
        .discovery(discovery)
        .start()
        .await?;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    while let Some(request) = battle.next_request().await {
        // A payload that is not a `Join` is answered BAD_REQUEST.
        let Ok((join, request)) = request.decode_or_reject::<Join>().await else {
            continue;
        };
        let room = format!("room-{}", join.player % 10);
        request.reply_typed(&Joined { room }).await?;
    }
    Ok(())
}

/// Process 2: one typed call to the Battle cluster (it waits, within the request's
/// timeout, for an instance to be probed).
pub(crate) async fn lobby<D: Discovery>(discovery: D) -> Result<Joined, Error> {
    let lobby = Node::builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
        .discovery(discovery)
        .target(battles()?)
        .start()
        .await?;
    let joined: Joined = lobby.call(&battles()?, 42u64, &Join { player: 42 }).await?;
    lobby.shutdown().await;
    Ok(joined)
}
