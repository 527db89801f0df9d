//! The ZMTP handshake over any byte stream, and the best-effort ERROR command that tells
//! a refused peer why.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dms_core::wire::{Command, Handshake, HandshakeConfig, PeerInfo, SocketType};
use dms_core::{MiddlewareError, PeerId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::LinkConfig;

/// Longest a refusal waits for the stream to take its ERROR command: a peer that does not
/// read cannot hold the refusing task.
const REFUSE_TIMEOUT: Duration = Duration::from_millis(100);

/// What a finished handshake leaves: the peer's READY, the bytes that followed it, and
/// our greeting and READY if they were held back (empty once sent).
pub(crate) struct Handshaken {
    pub(crate) info: PeerInfo,
    pub(crate) leftover: BytesMut,
    pub(crate) held: BytesMut,
}

/// Runs the ZMTP handshake on a fresh stream, within the handshake timeout: writes our
/// greeting and READY, reads the peer's. With `hold_ours`, nothing of ours is written:
/// the caller checks the peer's READY first and writes [`Handshaken::held`] only if it
/// accepts it (an acceptor that must not let a refused dialler see a READY).
pub(crate) async fn handshake<R, W>(
    config: &LinkConfig,
    reader: &mut R,
    writer: &mut W,
    hold_ours: bool,
) -> Result<Handshaken, MiddlewareError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = config.limits;
    let handshake_config = HandshakeConfig {
        socket_type: SocketType::Router,
        identity: config
            .identity
            .as_ref()
            .map(PeerId::to_frame)
            .unwrap_or_default(),
        limits,
    };
    let exchange = async {
        let mut handshake = Handshake::new(handshake_config);
        let mut out = BytesMut::new();
        handshake.poll_transmit(&mut out);
        if !hold_ours {
            send(writer, &out).await?;
            out.clear();
        }
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            if let Some(info) = handshake.handle_bytes(&mut buf)? {
                return Ok(Handshaken {
                    info,
                    leftover: buf,
                    held: out,
                });
            }
            if reader.read_buf(&mut buf).await? == 0 {
                return Err(MiddlewareError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    };
    match tokio::time::timeout(limits.handshake_timeout(), exchange).await {
        Ok(result) => result,
        Err(_) => Err(MiddlewareError::HandshakeTimeout(
            limits.handshake_timeout(),
        )),
    }
}

/// Writes `bytes` and flushes (a no-op on a TCP socket; a buffering stream, TLS, must
/// send them now).
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Tells the peer why it is refused with a ZMTP ERROR command (best effort: gives up
/// after [`REFUSE_TIMEOUT`]; on a TCP socket with an empty send buffer it never waits).
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, reason: &str) {
    let mut out = BytesMut::new();
    Command::Error {
        reason: Bytes::copy_from_slice(reason.as_bytes()),
    }
    .encode(&mut out);
    let write = async {
        writer.write_all(&out).await?;
        writer.flush().await
    };
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, write).await;
}
