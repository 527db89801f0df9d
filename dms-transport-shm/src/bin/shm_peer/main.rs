//! `shm-peer`: the separate process the cross-process tests of `dms-transport-shm`
//! spawn (built only with the `test-peer` feature). It reports on stdout, one line per
//! event, and the tests wait for those lines with deadlines.
//!
//! ```text
//! shm-peer echo NAME                        bind shm://NAME, echo every message back
//! shm-peer sink NAME                        bind shm://NAME, verify numbered messages
//! shm-peer send ENDPOINT COUNT SEED MIN MAX stream COUNT numbered messages of MIN..=MAX
//!                                           bytes, then the end marker; wait for ACK
//! shm-peer hostile NAME CASE SEED           rendezvous by hand and misbehave (hostile.rs)
//! ```
#![allow(clippy::print_stdout)] // its stdout is its report to the test
#![allow(clippy::unwrap_used)] // a test helper: a failed unwrap fails the test that runs it

mod hostile;
mod numbered;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use dms_core::{Endpoint, Incoming, MessageMiddleware, Multipart};
use dms_transport_shm::{ShmConfig, ShmMiddleware};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let ["hostile", name, case, seed] = args[..] {
        return hostile::run(name, case, seed.parse().unwrap());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = match args[..] {
        ["echo", name] => runtime.block_on(echo(name)),
        ["sink", name] => runtime.block_on(sink(name)),
        ["send", endpoint, count, seed, min, max] => runtime.block_on(send(
            endpoint,
            count.parse().unwrap(),
            seed.parse().unwrap(),
            min.parse().unwrap(),
            max.parse().unwrap(),
        )),
        _ => {
            println!("USAGE unknown arguments {args:?}");
            2
        }
    };
    ExitCode::from(code)
}

fn middleware(identity: &str) -> ShmMiddleware {
    ShmMiddleware::new(
        ShmConfig::builder()
            .identity(identity.to_owned())
            .build()
            .unwrap(),
    )
}

async fn bind(shm: &ShmMiddleware, name: &str) -> Option<Endpoint> {
    match shm.bind(&format!("shm://{name}").parse().unwrap()).await {
        Ok(endpoint) => {
            println!("READY {endpoint}");
            Some(endpoint)
        }
        Err(error) => {
            println!("BINDFAIL {error}");
            None
        }
    }
}

/// Echoes every message to its sender, forever.
async fn echo(name: &str) -> u8 {
    let shm = middleware("echo");
    if bind(&shm, name).await.is_none() {
        return 3;
    }
    loop {
        match shm.recv().await {
            Ok(Incoming::Message(msg)) => {
                if shm.send(msg).await.is_err() {
                    println!("SENDFAIL");
                }
            }
            Ok(Incoming::LinkUp { .. }) => println!("UP"),
            Ok(Incoming::LinkDown { cause, .. }) => println!("DOWN {cause}"),
            Ok(_) => {}
            Err(error) => {
                println!("RECVFAIL {error}");
                return 4;
            }
        }
    }
}

/// Receives numbered messages, checking order and checksums; on the end marker reports
/// `RESULT received=N bad=B expected=C`, answers ACK and exits.
async fn sink(name: &str) -> u8 {
    let shm = middleware("sink");
    if bind(&shm, name).await.is_none() {
        return 3;
    }
    let (mut received, mut bad, mut next) = (0u64, 0u64, 0u64);
    loop {
        let msg = match shm.recv().await {
            Ok(Incoming::Message(msg)) => msg,
            Ok(Incoming::LinkUp { .. }) => {
                println!("UP");
                continue;
            }
            Ok(Incoming::LinkDown { cause, .. }) => {
                println!("DOWN {cause}");
                println!("RESULT received={received} bad={bad} expected=none");
                return 0;
            }
            Ok(_) => continue,
            Err(error) => {
                println!("RECVFAIL {error}");
                return 4;
            }
        };
        let frames = msg.frames();
        if let Some(count) = numbered::end_count(&frames[1..]) {
            println!("RESULT received={received} bad={bad} expected={count}");
            let ack =
                Multipart::from_frames([frames[0].clone(), Bytes::from_static(numbered::ACK)]);
            if shm.send(ack).await.is_err() {
                println!("SENDFAIL");
            }
            // Wait for the sender to go, so the ACK is surely delivered.
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while !matches!(shm.recv().await, Ok(Incoming::LinkDown { .. }) | Err(_)) {}
            })
            .await;
            return 0;
        }
        match numbered::verify(&frames[1..]) {
            Ok(seq) if seq == next => {}
            Ok(seq) => {
                bad += 1;
                println!("BAD message {seq} where {next} was due");
            }
            Err(why) => {
                bad += 1;
                println!("BAD {why}");
            }
        }
        received += 1;
        next += 1;
    }
}

/// Streams `count` numbered messages to `endpoint` (`send`: waits for room), then the
/// end marker, and waits for the ACK.
async fn send(endpoint: &str, count: u64, seed: u64, min: usize, max: usize) -> u8 {
    let shm = middleware(&format!("sender-{}", std::process::id()));
    let endpoint: Endpoint = endpoint.parse().unwrap();
    let peer = match shm.connect(&endpoint).await {
        Ok(peer) => peer,
        Err(error) => {
            println!("CONNECTFAIL {error}");
            return 3;
        }
    };
    println!("CONNECTED");
    let pool = numbered::pool(seed, max);
    for seq in 0..count {
        let len = numbered::len_of(seed, seq, min, max);
        let mut frames = vec![peer.to_frame()];
        frames.extend(numbered::message(&pool, seed, seq, len));
        if let Err(error) = shm.send(Multipart::from_frames(frames)).await {
            println!("SENDFAIL {seq} {error}");
            return 4;
        }
    }
    let mut end = vec![peer.to_frame()];
    end.extend(numbered::end(count));
    if let Err(error) = shm.send(Multipart::from_frames(end)).await {
        println!("SENDFAIL end {error}");
        return 4;
    }
    println!("SENT {count}");
    let acked = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match shm.recv().await {
                Ok(Incoming::Message(msg))
                    if msg.frames().get(1).is_some_and(|f| &f[..] == numbered::ACK) =>
                {
                    return true;
                }
                Ok(Incoming::LinkDown { .. }) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    })
    .await;
    if acked == Ok(true) {
        println!("ACKED");
        0
    } else {
        println!("NOACK");
        5
    }
}
