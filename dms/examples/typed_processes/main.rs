//! Typed request/reply between two processes on etcd (the README's "Typed messages between
//! two processes"). Start etcd, then `battle` in one terminal and `lobby` in another:
//!
//! ```sh
//! cargo run -p dms --features etcd --example typed_processes -- battle
//! cargo run -p dms --features etcd --example typed_processes -- lobby
//! ```
//!
//! `ETCD=host:port` names another etcd (default `127.0.0.1:2379`).
#![allow(clippy::print_stdout)] // an example prints what it got

mod roles;

use dms_discovery::etcd::{EtcdDiscovery, EtcdOptions};

#[tokio::main]
async fn main() -> Result<(), roles::Error> {
    let endpoint = std::env::var("ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let etcd = EtcdDiscovery::connect(&[endpoint], EtcdOptions::default()).await?;
    if std::env::args().nth(1).as_deref() == Some("battle") {
        println!("battle-1 serving");
        roles::battle(etcd, None).await
    } else {
        println!("{:?}", roles::lobby(etcd).await?);
        Ok(())
    }
}
