//! Round trips of 64-byte messages between two QUIC middlewares (development
//! certificates): `cargo run --release -p dms-transport-quic --example rtt [ROUND_TRIPS]`
//! in one process, or `rtt serve` (prints its endpoint) and `rtt ROUND_TRIPS ENDPOINT` in
//! two. Prints p50/p99 in microseconds; made to be run under `perf` or `strace -c` to see
//! what one round trip costs.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // an example prints its result

use std::time::Instant;

use dms_core::{Incoming, MessageMiddleware, Multipart};
use dms_tls::TlsIdentity;
use dms_transport_quic::{QuicConfig, QuicMiddleware};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve_only = args.first().is_some_and(|a| a == "serve");
    let rounds: usize = match args.first() {
        Some(n) if !serve_only => n.parse()?,
        _ => 20_000,
    };
    // Shared by both processes of a two-process run (development only).
    let dir = std::env::temp_dir().join("dms-quic-rtt-dev-ca");
    let node = |name: &str| -> Result<QuicMiddleware, Box<dyn std::error::Error>> {
        let path = format!("/ex/local/any/w1/g1/Rtt/{name}").parse()?;
        let tls = TlsIdentity::dev(&dir, &path)?; // development only
        Ok(QuicMiddleware::new(QuicConfig::builder(tls).build()?)?)
    };
    let server = node("server")?;
    let endpoint = match args.get(1) {
        Some(remote) => remote.parse()?,
        None => server.bind(&"quic://127.0.0.1:0".parse()?).await?,
    };
    if serve_only {
        println!("{endpoint}");
    }
    let echo = tokio::spawn({
        let server = server.clone();
        async move {
            while let Ok(item) = server.recv().await {
                if let Incoming::Message(msg) = item {
                    let _ = server.send(msg).await;
                }
            }
        }
    });
    if serve_only {
        echo.await?;
        return Ok(());
    }
    let client = node(&format!("client-{}", std::process::id()))?;
    let peer = client.connect(&endpoint).await?;
    let msg = Multipart::from_frames([peer.to_frame(), vec![0x5a; 64].into()]);
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + 1000 {
        let sent = Instant::now();
        client.send(msg.clone()).await?;
        loop {
            if let Incoming::Message(_) = client.recv().await? {
                break;
            }
        }
        if i >= 1000 {
            samples.push(sent.elapsed());
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{rounds} round trips of 64 B over QUIC: p50 {:.1} us, p99 {:.1} us",
        at(0.5),
        at(0.99)
    );
    Ok(())
}
