//! A broker: an ordinary instance that forwards routed messages (`NodeBuilder::broker`).
//! Trade links to the brokers, Lobby and Club link to them and reach Trade through them.
//! It answers `BrokerRequest::Stats` with what it forwarded.

use dms_example_backend::counters;
use dms_example_backend::{
    BrokerRequest, BrokerStats, BrokerStatsRequest, Incoming, answer, serve_typed,
};

use super::{Setup, start, stop, until_stopped};

/// Runs a broker until SIGINT/SIGTERM.
pub(crate) async fn run(setup: Setup) -> Result<(), String> {
    // Before the node starts: it registers its counters then.
    let counters = counters::install();
    let node = start(setup.builder().broker()).await?;
    let name = node.path().instance().to_owned();
    let handler = move |incoming: Incoming<BrokerRequest>| {
        let broker = name.clone();
        async move {
            match incoming.message {
                BrokerRequest::Stats(BrokerStatsRequest) => {
                    answer::<BrokerStatsRequest>(Ok(BrokerStats {
                        broker,
                        forwarded: counters.forwarded(),
                    }))
                }
            }
        }
    };
    let server = tokio::spawn(serve_typed(node.clone(), handler, 16));
    until_stopped().await?;
    let line = format!("forwarded {} routed messages", counters.forwarded());
    stop(&node, &line).await;
    server.abort();
    Ok(())
}
