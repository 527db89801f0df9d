//! `tcp+tls://` (feature `tls`): mutual TLS 1.3 (rustls through tokio-rustls) under the
//! ZMTP handshake, with the link identity bound to the certificate exactly as on QUIC
//! (the shared rules are [`dms_tls`]'s).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dms_core::wire::{Command, GREETING_LEN, Greeting, HandshakeError};
use dms_core::{AuthError, MiddlewareError, PeerId, Rejection, Role};
use dms_link::{LinkHandle, LinkSet, Slot};
use dms_tls::{TlsConfigError, TlsIdentity};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, CommonState};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::address::{SCHEME_TLS, endpoint_of};

/// The reason of the ZMTP `ERROR` command a link's side sends when the peer's announced
/// identity is not its certificate's path (the text `dms-link` sends); a dialler that
/// reads it reports [`Rejection::PathMismatch`].
pub(crate) const PATH_MISMATCH_REASON: &str = "identity does not match the certificate";

/// Longest a refusal waits for the stream to take our greeting and `ERROR`: a peer that
/// does not read cannot hold the refusing task.
const REFUSE_TIMEOUT: Duration = Duration::from_millis(100);

/// The first byte of a TLS handshake record (a ClientHello starts with it).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The first byte of a ZMTP greeting (its signature).
const ZMTP_SIGNATURE: u8 = 0xFF;

/// The TLS side of a `tcp+tls` middleware: our [`TlsIdentity`] (certificate, key, the
/// CAs we trust) and the rustls configurations made from it once — TLS 1.3 only, the
/// client certificate required, ALPN [`dms_tls::ALPN`] (`dms/1`) on both sides, the
/// peer's leaf certificate carrying exactly one `dms:` URI SAN with its service path.
///
/// Give it to [`TcpConfigBuilder::tls`](crate::TcpConfigBuilder::tls). Cheap to clone.
///
/// ```
/// use dms_core::{MessageMiddleware, Multipart};
/// use dms_transport_tcp::{TcpConfig, TcpMiddleware, TlsConfig};
/// use dms_tls::TlsIdentity;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("dms-doc-tcp-tls-{}", std::process::id()));
/// // Development certificates (never in production): a CA in `dir`, one leaf per path.
/// let battle = TlsIdentity::dev(&dir, &"/demo/cn/android/w1/g1/Battle/battle-1".parse()?)?;
/// let lobby = TlsIdentity::dev(&dir, &"/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)?;
/// let server = TcpMiddleware::new(TcpConfig::builder().tls(TlsConfig::new(battle)?).build()?);
/// let endpoint = server.bind(&"tcp+tls://127.0.0.1:0".parse()?).await?;
/// let client = TcpMiddleware::new(TcpConfig::builder().tls(TlsConfig::new(lobby)?).build()?);
/// let server_id = client.connect(&endpoint).await?;
/// assert_eq!(server_id.to_string(), "/demo/cn/android/w1/g1/Battle/battle-1");
/// client.send(Multipart::from_frames([server_id.to_frame(), "ping".into()])).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    identity: Arc<TlsIdentity>,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("path", self.identity.path())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// The TLS settings of `identity` (see [`TlsIdentity::server_config`] and
    /// [`TlsIdentity::client_config`] for exactly what is verified).
    pub fn new(identity: TlsIdentity) -> Result<Self, TlsConfigError> {
        let server = identity.server_config(&[dms_tls::ALPN])?;
        let client = identity.client_config(&[dms_tls::ALPN])?;
        Ok(Self {
            identity: Arc::new(identity),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Our TLS identity.
    pub fn identity(&self) -> &TlsIdentity {
        &self.identity
    }
}

/// Counters of the TLS layer of a `tcp+tls` middleware (what never reached the link
/// engine, whose own counters are [`TcpStats`](crate::TcpStats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsStats {
    /// Connections whose TLS handshake failed or timed out (either role), plaintext
    /// ones included.
    pub handshake_failures: u64,
    /// Accepted connections refused because they did not start with a TLS handshake
    /// record (a plaintext ZMTP greeting, typically): closed, nothing read or delivered.
    pub plaintext_refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct TlsCounters {
    handshake_failures: AtomicU64,
    plaintext_refused: AtomicU64,
}

impl TlsCounters {
    pub(crate) fn snapshot(&self) -> TlsStats {
        TlsStats {
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            plaintext_refused: self.plaintext_refused.load(Ordering::Relaxed),
        }
    }
}

/// A TLS stream shared by the two halves a link takes, and kept by us: after a refusal
/// the link engine drops its halves, and we still tell the peer why on the stream.
type SharedStream<S> = Arc<Mutex<S>>;

fn lock<S>(stream: &SharedStream<S>) -> MutexGuard<'_, S> {
    stream.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reading half of a shared TLS stream (one lock per poll, as `tokio::io::split`).
pub(crate) struct ReadHalf<S>(SharedStream<S>);

/// The writing half of a shared TLS stream.
pub(crate) struct WriteHalf<S>(SharedStream<S>);

impl<S: AsyncRead + Unpin> AsyncRead for ReadHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        lock(&self.0).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}

/// Accepts a `tcp+tls` connection within the handshake timeout (TLS and ZMTP together):
/// refuses one that does not start with a TLS handshake record, runs the TLS handshake,
/// then the link engine's handshake with the identity bound to the client's certificate.
pub(crate) async fn accept(
    links: &Arc<LinkSet>,
    tls: &TlsConfig,
    counters: &TlsCounters,
    stream: TcpStream,
    slot: Slot,
) -> Result<LinkHandle, MiddlewareError> {
    let timeout = links.config().limits().handshake_timeout();
    let accept = async {
        let remote = endpoint_of(stream.peer_addr()?, SCHEME_TLS);
        stream.set_nodelay(true)?;
        if let Err(error) = require_tls(&stream).await {
            if matches!(error, MiddlewareError::Auth(AuthError::NotTls(_))) {
                counters.plaintext_refused.fetch_add(1, Ordering::Relaxed);
            }
            counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        let stream = match tls.acceptor.accept(stream).await {
            Ok(stream) => stream,
            Err(error) => {
                counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                return Err(tls_failure(error, Role::Acceptor));
            }
        };
        let certified = session_peer(stream.get_ref().1)?;
        link_up(links, stream, remote, Role::Acceptor, slot, None, certified).await
    };
    match tokio::time::timeout(timeout, accept).await {
        Ok(result) => result,
        Err(_) => {
            counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
            Err(MiddlewareError::HandshakeTimeout(timeout))
        }
    }
}

/// Runs the client side of TLS on a fresh connection, then the link engine's handshake
/// with the identity bound to the server's certificate. The caller bounds it by the
/// handshake timeout.
pub(crate) async fn connect(
    links: &Arc<LinkSet>,
    tls: &TlsConfig,
    counters: &TlsCounters,
    stream: TcpStream,
    slot: Slot,
    assigned: Option<PeerId>,
) -> Result<LinkHandle, MiddlewareError> {
    let remote = endpoint_of(stream.peer_addr()?, SCHEME_TLS);
    stream.set_nodelay(true)?;
    let name = ServerName::try_from(dms_tls::SERVER_NAME)
        .map_err(|e| MiddlewareError::Auth(AuthError::Tls(e.to_string())))?;
    let stream = match tls.connector.connect(name, stream).await {
        Ok(stream) => stream,
        Err(error) => {
            counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
            return Err(tls_failure(error, Role::Connector));
        }
    };
    let certified = session_peer(stream.get_ref().1)?;
    link_up(
        links,
        stream,
        remote,
        Role::Connector,
        slot,
        assigned,
        certified,
    )
    .await
}

/// Waits for the first byte of an accepted connection (without taking it): a TLS
/// connection starts with a handshake record. Anything else, a plaintext ZMTP greeting
/// first of all, is [`AuthError::NotTls`]; the connection is then closed without a byte
/// read by TLS or written to the peer.
async fn require_tls(stream: &TcpStream) -> Result<(), MiddlewareError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(MiddlewareError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    match first[0] {
        TLS_HANDSHAKE_RECORD => Ok(()),
        ZMTP_SIGNATURE => Err(MiddlewareError::Auth(AuthError::NotTls(
            "a plaintext ZMTP greeting on a tcp+tls listener".into(),
        ))),
        other => Err(MiddlewareError::Auth(AuthError::NotTls(format!(
            "the connection starts with byte {other:#04x}, not a TLS handshake record"
        )))),
    }
}

/// The link identity the peer's certificate proves, once the TLS handshake is done;
/// the ALPN protocol must be DMS's.
fn session_peer(session: &CommonState) -> Result<PeerId, MiddlewareError> {
    if session.alpn_protocol() != Some(dms_tls::ALPN) {
        return Err(MiddlewareError::Auth(AuthError::Tls(format!(
            "the peer did not negotiate the ALPN protocol {}",
            String::from_utf8_lossy(dms_tls::ALPN)
        ))));
    }
    Ok(dms_tls::certified_peer(session.peer_certificates())?)
}

/// A failed TLS handshake as a typed error. A dialler whose TLS handshake meets bytes
/// that are no TLS record met a plaintext server ([`AuthError::NotTls`]).
fn tls_failure(error: io::Error, role: Role) -> MiddlewareError {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidMessage(invalid)) if role == Role::Connector => {
            MiddlewareError::Auth(AuthError::NotTls(format!(
                "the server's answer is not TLS ({invalid:?}): a plaintext server?"
            )))
        }
        Some(rustls_error) => MiddlewareError::Auth(dms_tls::auth_error(rustls_error)),
        None => MiddlewareError::Io(error),
    }
}

/// The link engine's handshake on an established TLS stream; a refusal is told to the
/// peer (an acceptor holding its greeting sends it with an `ERROR`) and typed.
async fn link_up<S>(
    links: &Arc<LinkSet>,
    stream: S,
    remote: dms_core::Endpoint,
    role: Role,
    slot: Slot,
    assigned: Option<PeerId>,
    certified: PeerId,
) -> Result<LinkHandle, MiddlewareError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Mutex::new(stream));
    let (read, write) = (ReadHalf(shared.clone()), WriteHalf(shared.clone()));
    let result = links
        .establish(read, write, remote, role, slot, assigned, Some(certified))
        .await;
    match result {
        Ok(link) => Ok(link),
        Err(error) => {
            if role == Role::Acceptor {
                tell_refused(shared, &error).await;
            }
            Err(link_error(error))
        }
    }
}

/// An acceptor with a certified identity held back its greeting while it checked the
/// dialler's READY: on a refusal for the dialler's identity or handshake it now sends its
/// greeting and a ZMTP `ERROR` with the reason (never a READY), then closes TLS.
async fn tell_refused<S>(stream: SharedStream<S>, error: &MiddlewareError)
where
    S: AsyncWrite + Unpin,
{
    let reason = match error {
        MiddlewareError::Auth(AuthError::PathMismatch { .. }) => PATH_MISMATCH_REASON.to_owned(),
        MiddlewareError::Handshake(e) => e.to_string(),
        _ => return,
    };
    // The link engine dropped its halves with the refusal.
    let Ok(stream) = Arc::try_unwrap(stream) else {
        return;
    };
    let mut stream = stream.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut out = BytesMut::with_capacity(GREETING_LEN + 64);
    out.extend_from_slice(&Greeting::encode_null());
    Command::Error {
        reason: Bytes::from(reason),
    }
    .encode(&mut out);
    let refuse = async {
        stream.write_all(&out).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, refuse).await;
}

/// The link engine's error, typed for TLS: a TLS alert read during the ZMTP handshake
/// (TLS 1.3: the server refuses a client certificate after the client's handshake is
/// done) is the [`AuthError`] it names; an `ERROR` saying our identity is not our
/// certificate's is [`Rejection::PathMismatch`].
fn link_error(error: MiddlewareError) -> MiddlewareError {
    match error {
        MiddlewareError::Io(io) => match dms_tls::auth_error_of_io(&io) {
            Some(auth) => MiddlewareError::Auth(auth),
            None => MiddlewareError::Io(io),
        },
        MiddlewareError::Handshake(HandshakeError::Refused { reason })
            if reason == PATH_MISMATCH_REASON =>
        {
            MiddlewareError::Auth(AuthError::RejectedByPeer(Rejection::PathMismatch))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_in_io_errors_are_typed() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert!(matches!(
            link_error(MiddlewareError::Io(alert)),
            MiddlewareError::Auth(AuthError::RejectedByPeer(Rejection::MissingCertificate))
        ));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(
            link_error(MiddlewareError::Io(reset)),
            MiddlewareError::Io(_)
        ));
        let refused = HandshakeError::Refused {
            reason: PATH_MISMATCH_REASON.into(),
        };
        assert!(matches!(
            link_error(MiddlewareError::Handshake(refused)),
            MiddlewareError::Auth(AuthError::RejectedByPeer(Rejection::PathMismatch))
        ));
    }

    #[test]
    fn garbage_where_a_server_hello_belongs_is_not_tls() {
        let garbage = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(matches!(
            tls_failure(garbage, Role::Connector),
            MiddlewareError::Auth(AuthError::NotTls(_))
        ));
    }
}
