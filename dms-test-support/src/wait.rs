//! Waiting on events with a deadline (never sleep-and-hope).

use std::future::Future;
use std::time::Duration;

use dms_core::{Incoming, LinkDownCause, LinkId, MessageMiddleware, Multipart, PeerId, Role};

/// How long a test waits for any single event before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// The next item of `m`.
pub async fn next<M: MessageMiddleware>(m: &M) -> Incoming {
    within("an incoming item", m.recv())
        .await
        .expect("middleware closed while a test waited on it")
}

/// The next message of `m`, skipping link events.
pub async fn message<M: MessageMiddleware>(m: &M) -> Multipart {
    loop {
        if let Incoming::Message(msg) = next(m).await {
            return msg;
        }
    }
}

/// The next `LinkUp` of `m` (skipping other items): peer and role.
pub async fn link_up<M: MessageMiddleware>(m: &M) -> (PeerId, Role) {
    let (peer, role, _) = link_up_with_id(m).await;
    (peer, role)
}

/// The next `LinkUp` of `m` (skipping other items): peer, role and link.
pub async fn link_up_with_id<M: MessageMiddleware>(m: &M) -> (PeerId, Role, LinkId) {
    loop {
        match next(m).await {
            Incoming::LinkUp {
                peer, role, link, ..
            } => return (peer, role, link),
            Incoming::Message(msg) => panic!("message {msg:?} before LinkUp"),
            _ => {}
        }
    }
}

/// The next `LinkDown` of `m`, failing on any message before it.
pub async fn link_down<M: MessageMiddleware>(m: &M) -> (PeerId, LinkDownCause) {
    let (peer, _, cause) = link_down_with_id(m).await;
    (peer, cause)
}

/// The next `LinkDown` of `m`, failing on any message before it: peer, link and cause.
pub async fn link_down_with_id<M: MessageMiddleware>(m: &M) -> (PeerId, LinkId, LinkDownCause) {
    loop {
        match next(m).await {
            Incoming::LinkDown { peer, link, cause } => return (peer, link, cause),
            Incoming::Message(msg) => panic!("message {msg:?} while waiting for LinkDown"),
            _ => {}
        }
    }
}
