//! An echo server and a client over real TCP loopback, in one process: the client sends
//! request after request and the server echoes each; prints round-trip percentiles and
//! pipelined throughput.
//!
//! `cargo run --release -p dms-transport-tcp --example echo [ROUND_TRIPS]`
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use dms_core::{Incoming, MessageMiddleware, Multipart};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let round_trips: usize = std::env::args().nth(1).map_or(Ok(20_000), |n| n.parse())?;
    let server = TcpMiddleware::new(TcpConfig::builder().identity("echo-server").build()?);
    let endpoint = server.bind(&"tcp://127.0.0.1:0".parse()?).await?;
    println!("echo server listening on {endpoint}");
    let echo = server.clone();
    tokio::spawn(async move {
        while let Ok(item) = echo.recv().await {
            if let Incoming::Message(msg) = item {
                // The first frame names the client: sending the message back echoes it.
                if echo.send(msg).await.is_err() {
                    break;
                }
            }
        }
    });

    let client = TcpMiddleware::new(TcpConfig::default());
    let server_id = client.connect(&endpoint).await?;
    println!("client linked to {server_id}");
    let payload = bytes::Bytes::from(vec![0u8; 64]);
    let request = Multipart::from_frames([server_id.to_frame(), payload]);

    let mut rtts = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let start = Instant::now();
        client.send(request.clone()).await?;
        next_message(&client).await?;
        rtts.push(start.elapsed());
    }
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize];
    println!(
        "{round_trips} round trips of 64 B: p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );

    let pipelined = round_trips * 5;
    let start = Instant::now();
    let sender = {
        let client = client.clone();
        let request = request.clone();
        tokio::spawn(async move {
            for _ in 0..pipelined {
                client.send(request.clone()).await?;
            }
            Ok::<_, dms_core::SendError>(())
        })
    };
    for _ in 0..pipelined {
        next_message(&client).await?;
    }
    sender.await??;
    let elapsed = start.elapsed();
    println!(
        "{pipelined} pipelined echoes of 64 B in {elapsed:.2?}: {:.0} msgs/s each way",
        pipelined as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

async fn next_message(m: &TcpMiddleware) -> Result<Multipart, Box<dyn std::error::Error>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), m.recv()).await?? {
            Incoming::Message(msg) => return Ok(msg),
            Incoming::LinkDown { peer, cause, .. } => {
                return Err(format!("{peer} down: {cause}").into());
            }
            _ => {}
        }
    }
}
