//! The README's "Typed messages between two processes", run: its two roles
//! (`dms/examples/typed_processes/roles.rs`) on a real etcd started on loopback, each with
//! its own etcd client as two processes would have.
#![cfg(all(feature = "etcd", feature = "tcp"))]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../examples/typed_processes/roles.rs"]
#[allow(dead_code)]
mod roles;

use dms_discovery::etcd::{EtcdDiscovery, EtcdOptions};
use dms_test_support::etcd::EtcdServer;
use dms_test_support::wait::within;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_call_between_two_etcd_clients() {
    let etcd = EtcdServer::start();
    let client = || async {
        EtcdDiscovery::connect(&[etcd.endpoint()], EtcdOptions::default())
            .await
            .unwrap()
    };
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(roles::battle(client().await, Some(ready_tx)));
    within("battle-1 to register", ready).await.unwrap();
    let joined = within("the lobby's typed call", roles::lobby(client().await))
        .await
        .unwrap();
    assert_eq!(
        joined,
        roles::Joined {
            room: "room-2".into()
        }
    );
    serving.abort();
}
