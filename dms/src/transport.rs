//! The media a node speaks: the only module of the kernel that names a transport, and the
//! only one with transport `cfg`s.
//!
//! A node holds one middleware per medium compiled in and configured (`tcp`, `quic`,
//! `tcp+tls`, `shm`), all
//! of them behind [`Transports`], which the driver uses as it would one middleware: it
//! binds by scheme, sends by peer (to the medium that peer's link is on), receives from
//! every medium and knows which one each item came from. Calls are statically
//! dispatched: a `match` on [`Medium`], no trait object on the path of a message.
//!
//! # Which endpoint is dialled
//!
//! An instance publishes every endpoint it bound. A dialler takes the first scheme of its
//! preference list ([`NodeBuilder::prefer`](crate::NodeBuilder::prefer), default
//! [`DEFAULT_PREFERENCE`]) that the peer published and that it can dial itself (the
//! medium is compiled in and configured: QUIC and TCP+TLS need TLS credentials). Ties
//! within a scheme go to the endpoint listed first. A `shm://` endpoint is dialled only
//! when it carries this host's key (`shm://NAME?host=KEY`, see
//! [`dms_transport_shm::is_local`]): shared memory is preferred for a peer on the same
//! host, and a shared-memory endpoint of another host (or network namespace) is never
//! dialled, whatever the preference list says. The default prefers the secured media
//! (`quic`, then `tcp+tls`) to plaintext `tcp`, so a node with credentials never dials
//! plaintext to a peer that published an endpoint it can dial with TLS, unless its own
//! preference list says so.
//!
//! # One link per peer
//!
//! A peer has at most one link, on one medium. A link that comes up for a peer that has
//! one on another medium already is closed at once and not reported to the protocol;
//! items of a medium that is not the peer's current one are dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use dms_core::path::ServicePath;
use dms_core::{
    Endpoint, Incoming, LinkId, MessageMiddleware, MiddlewareError, Multipart, PeerId, SendError,
};
#[cfg(feature = "quic")]
use dms_transport_quic::{QuicConfigBuilder, QuicMiddleware};
#[cfg(feature = "shm")]
use dms_transport_shm::{ShmConfigBuilder, ShmMiddleware};
#[cfg(feature = "tcp-tls")]
use dms_transport_tcp::TlsConfig;
#[cfg(feature = "tcp")]
use dms_transport_tcp::{TcpConfigBuilder, TcpMiddleware};

use crate::StartError;
use crate::registrar::Liveness;

#[cfg(not(any(feature = "tcp", feature = "quic")))]
compile_error!("dms needs at least one transport: enable the feature `tcp` or `quic`");

/// Schemes in the order a node dials them by default: shared memory (same host only),
/// then the secured media, QUIC and TCP with TLS, then plaintext TCP.
pub const DEFAULT_PREFERENCE: &[&str] = &["shm", "quic", "tcp+tls", "tcp"];

/// Bytes a DMS control frame takes at most on the wire (its 30-byte header and fields,
/// with room to spare), counted against a message's size limit.
const CONTROL_FRAME_MAX: usize = 256;

/// One medium compiled into this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Medium {
    /// ZMTP 3.1 over TCP.
    #[cfg(feature = "tcp")]
    Tcp,
    /// ZMTP 3.1 on one QUIC stream, mutual TLS.
    #[cfg(feature = "quic")]
    Quic,
    /// ZMTP 3.1 inside mutual TLS 1.3 over TCP (the QUIC credentials).
    #[cfg(feature = "tcp-tls")]
    TcpTls,
    /// ZMTP 3.1 on shared-memory rings between processes of this host.
    #[cfg(feature = "shm")]
    Shm,
}

impl Medium {
    /// The URL scheme of the medium.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            #[cfg(feature = "tcp")]
            Self::Tcp => "tcp",
            #[cfg(feature = "quic")]
            Self::Quic => "quic",
            #[cfg(feature = "tcp-tls")]
            Self::TcpTls => "tcp+tls",
            #[cfg(feature = "shm")]
            Self::Shm => "shm",
        }
    }

    /// Whether an endpoint a peer published may be dialled on this medium: its scheme,
    /// and for shared memory this host's key.
    fn may_dial(self, endpoint: &Endpoint) -> bool {
        endpoint.scheme() == self.scheme() && self.reaches(endpoint)
    }

    #[cfg(feature = "shm")]
    fn reaches(self, endpoint: &Endpoint) -> bool {
        self != Self::Shm || dms_transport_shm::is_local(endpoint)
    }

    #[cfg(not(feature = "shm"))]
    fn reaches(self, _: &Endpoint) -> bool {
        true
    }

    fn from_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            #[cfg(feature = "tcp")]
            "tcp" => Some(Self::Tcp),
            #[cfg(feature = "quic")]
            "quic" => Some(Self::Quic),
            #[cfg(feature = "tcp-tls")]
            "tcp+tls" => Some(Self::TcpTls),
            #[cfg(feature = "shm")]
            "shm" => Some(Self::Shm),
            _ => None,
        }
    }
}

/// How a node's links are carried: the settings of each medium and the dial preference.
#[derive(Debug, Clone)]
pub(crate) struct TransportSettings {
    /// TCP settings (the kernel sets the identity and turns the transport's redial off).
    #[cfg(feature = "tcp")]
    pub(crate) tcp: TcpConfigBuilder,
    /// QUIC settings with the TLS identity; no QUIC without them (the kernel derives the
    /// idle timeout from the heartbeat).
    #[cfg(feature = "quic")]
    pub(crate) quic: Option<QuicConfigBuilder>,
    /// DEVELOPMENT ONLY: a directory with a development CA that issues this node's
    /// certificate at start (when `quic` is not set).
    #[cfg(feature = "quic")]
    pub(crate) quic_dev: Option<std::path::PathBuf>,
    /// Shared-memory settings (the kernel sets the identity).
    #[cfg(feature = "shm")]
    pub(crate) shm: ShmConfigBuilder,
    /// Schemes to dial, most preferred first.
    pub(crate) prefer: Vec<String>,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            #[cfg(feature = "tcp")]
            tcp: dms_transport_tcp::TcpConfig::builder(),
            #[cfg(feature = "quic")]
            quic: None,
            #[cfg(feature = "quic")]
            quic_dev: None,
            #[cfg(feature = "shm")]
            shm: dms_transport_shm::ShmConfig::builder(),
            prefer: DEFAULT_PREFERENCE.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// A middleware of one medium, cloned into a task that dials.
#[derive(Debug, Clone)]
pub(crate) enum Dialer {
    #[cfg(feature = "tcp")]
    Tcp(TcpMiddleware),
    #[cfg(feature = "quic")]
    Quic(QuicMiddleware),
    #[cfg(feature = "shm")]
    Shm(ShmMiddleware),
}

impl Dialer {
    /// Opens one link to `endpoint` (no redial: the driver owns that).
    pub(crate) async fn connect(&self, endpoint: &Endpoint) -> Result<PeerId, MiddlewareError> {
        match self {
            #[cfg(feature = "tcp")]
            Self::Tcp(m) => m.connect(endpoint).await,
            #[cfg(feature = "quic")]
            Self::Quic(m) => m.connect(endpoint).await,
            #[cfg(feature = "shm")]
            Self::Shm(m) => m.connect(endpoint).await,
        }
    }

    /// Closes the link to `peer` after flushing it.
    pub(crate) async fn disconnect(&self, peer: &PeerId) -> Result<(), MiddlewareError> {
        match self {
            #[cfg(feature = "tcp")]
            Self::Tcp(m) => m.disconnect(peer).await,
            #[cfg(feature = "quic")]
            Self::Quic(m) => m.disconnect(peer).await,
            #[cfg(feature = "shm")]
            Self::Shm(m) => m.disconnect(peer).await,
        }
    }

    /// Closes `link` after flushing it, if it is still `peer`'s link (a newer link of the
    /// peer stays up).
    pub(crate) async fn disconnect_link(
        &self,
        peer: &PeerId,
        link: LinkId,
    ) -> Result<(), MiddlewareError> {
        match self {
            #[cfg(feature = "tcp")]
            Self::Tcp(m) => m.disconnect_link(peer, link).await,
            #[cfg(feature = "quic")]
            Self::Quic(m) => m.disconnect_link(peer, link).await,
            #[cfg(feature = "shm")]
            Self::Shm(m) => m.disconnect_link(peer, link).await,
        }
    }
}

/// What [`Transports::stats`] reads: the counters of the media present.
#[derive(Debug, Default)]
pub(crate) struct MediaStats {
    /// Link counters by scheme.
    pub(crate) links: Vec<(&'static str, dms_link::LinkStats)>,
    /// QUIC connections refused at the handshake cap.
    pub(crate) handshakes_refused: u64,
    /// TLS handshakes (over TCP) that failed.
    pub(crate) tls_handshake_failures: u64,
    /// Plaintext connections refused by a TLS listener.
    pub(crate) plaintext_refused: u64,
    /// Shared-memory rendezvous that failed before ZMTP started.
    pub(crate) shm_setup_failures: u64,
    /// Shared-memory links ended because the peer corrupted a ring.
    pub(crate) shm_corrupt_rings: u64,
}

/// Every medium of one node, used by the driver as one middleware.
#[derive(Debug)]
pub(crate) struct Transports {
    #[cfg(feature = "tcp")]
    /// Always there in a build with TCP (it needs no credentials).
    tcp: TcpMiddleware,
    #[cfg(feature = "quic")]
    quic: Option<QuicMiddleware>,
    /// TCP with TLS: there when QUIC's TLS credentials are (same identity, TCP settings).
    #[cfg(feature = "tcp-tls")]
    tcp_tls: Option<TcpMiddleware>,
    /// Shared memory: always there in a build with it (it needs no credentials).
    #[cfg(feature = "shm")]
    shm: ShmMiddleware,
    /// The medium and id of every live link (from its `LinkUp` to its `LinkDown`, as the
    /// driver takes them): what the driver sends goes onto the link it knows, never onto
    /// a newer link of the same peer that the middleware has but the driver has not seen
    /// come up (whose session has not started: a message there would come before its
    /// READY and end it).
    links: HashMap<PeerId, (Medium, LinkId), foldhash::fast::RandomState>,
    /// The only medium, when there is one: `recv_many` polls it alone, and an incoming
    /// message's medium needs no lookup (sends still look up their link in `links`).
    single: Option<Medium>,
    /// The media present (at most four), in a fixed order.
    media: Vec<Medium>,
    /// Which of `media` (bit `i`: `media[i]`) can yield anything: bound, or handed out
    /// to dial. Only those are polled by [`recv_many`](Self::recv_many): a medium that
    /// listens nowhere and dialled nothing has nothing to say, and polling it would cost
    /// every turn of the driver's loop a wake-up registration for nothing.
    active: std::sync::atomic::AtomicU8,
    /// Which medium `recv_many` polls first next time.
    turn: AtomicUsize,
    /// Schemes to dial, most preferred first, restricted to the media we have.
    prefer: Vec<Medium>,
}

/// Sends on one link from any task: a clone of its medium's middleware (one `Arc`) and
/// the link's id. What a handler's reply is written with when it need not go through the
/// node's task (see `driver::gates`).
#[derive(Debug, Clone)]
pub(crate) enum MediumSender {
    /// TCP, with or without TLS.
    #[cfg(feature = "tcp")]
    Tcp(TcpMiddleware, LinkId),
    #[cfg(feature = "quic")]
    Quic(QuicMiddleware, LinkId),
    #[cfg(feature = "shm")]
    Shm(ShmMiddleware, LinkId),
}

impl MediumSender {
    /// Queues `msg` on the link if it has room now and is still its peer's link
    /// (`MessageMiddleware::try_send_on`).
    pub(crate) fn try_send(&self, msg: Multipart) -> Result<(), SendError> {
        match self {
            #[cfg(feature = "tcp")]
            Self::Tcp(tcp, link) => tcp.try_send_on(*link, msg),
            #[cfg(feature = "quic")]
            Self::Quic(quic, link) => quic.try_send_on(*link, msg),
            #[cfg(feature = "shm")]
            Self::Shm(shm, link) => shm.try_send_on(*link, msg),
        }
    }
}

impl Transports {
    /// The media for a node named `local` whose heartbeats are `ping_interval` ×
    /// `missed`, none bound yet.
    pub(crate) fn new(
        local: &ServicePath,
        settings: TransportSettings,
        ping_interval: std::time::Duration,
        missed: u32,
    ) -> Result<Self, StartError> {
        #[cfg(feature = "tcp-tls")]
        let tcp_settings = settings.tcp.clone();
        #[cfg(feature = "tcp")]
        let tcp = {
            let config = settings
                .tcp
                .identity(local.as_str().to_owned())
                .redial(false)
                .build()
                .map_err(|e| StartError::Transport(e.to_string()))?;
            TcpMiddleware::new(config)
        };
        #[cfg(feature = "quic")]
        let quic_settings = match (settings.quic, settings.quic_dev) {
            (Some(builder), _) => Some(builder),
            (None, Some(dir)) => {
                let tls = dms_tls::TlsIdentity::dev(&dir, local)
                    .map_err(|e| StartError::Transport(e.to_string()))?;
                Some(dms_transport_quic::QuicConfig::builder(tls))
            }
            (None, None) => None,
        };
        #[cfg(feature = "quic")]
        let quic = match quic_settings {
            Some(builder) => {
                let config = builder
                    .identity(local.peer_id())
                    .liveness(ping_interval, missed)
                    .build()
                    .map_err(|e| StartError::Transport(e.to_string()))?;
                if config.tls().path() != local {
                    return Err(StartError::Transport(format!(
                        "the TLS certificate is for {}, not for this node ({local})",
                        config.tls().path()
                    )));
                }
                Some(
                    QuicMiddleware::new(config)
                        .map_err(|e| StartError::Transport(e.to_string()))?,
                )
            }
            None => None,
        };
        #[cfg(feature = "tcp-tls")]
        let tcp_tls = match &quic {
            Some(quic) => {
                let tls = TlsConfig::new(quic.config().tls().clone())
                    .map_err(|e| StartError::Transport(e.to_string()))?;
                let config = tcp_settings
                    .tls(tls)
                    .identity(local.as_str().to_owned())
                    .redial(false)
                    .build()
                    .map_err(|e| StartError::Transport(e.to_string()))?;
                Some(TcpMiddleware::new(config))
            }
            None => None,
        };
        #[cfg(feature = "shm")]
        let shm = ShmMiddleware::new(
            settings
                .shm
                .identity(local.as_str().to_owned())
                .build()
                .map_err(|e| StartError::Transport(e.to_string()))?,
        );
        #[cfg(not(feature = "quic"))]
        let _ = (ping_interval, missed);
        let mut transports = Self {
            #[cfg(feature = "tcp")]
            tcp,
            #[cfg(feature = "quic")]
            quic,
            #[cfg(feature = "tcp-tls")]
            tcp_tls,
            #[cfg(feature = "shm")]
            shm,
            links: HashMap::default(),
            single: None,
            media: Vec::new(),
            active: std::sync::atomic::AtomicU8::new(0),
            turn: AtomicUsize::new(0),
            prefer: Vec::new(),
        };
        let present = transports.present();
        if present.is_empty() {
            // Only in a build without TCP: QUIC needs credentials.
            return Err(StartError::Transport(
                "no transport configured: this build has only QUIC, which needs TLS credentials \
                 (NodeBuilder::quic)"
                    .into(),
            ));
        }
        transports.single = (present.len() == 1).then(|| present[0]);
        transports.media.clone_from(&present);
        transports.prefer = settings
            .prefer
            .iter()
            .filter_map(|s| Medium::from_scheme(s))
            .filter(|m| present.contains(m))
            .collect();
        Ok(transports)
    }

    /// The media configured, in a fixed order.
    fn present(&self) -> Vec<Medium> {
        [
            #[cfg(feature = "tcp")]
            Some(Medium::Tcp),
            #[cfg(feature = "quic")]
            self.quic.as_ref().map(|_| Medium::Quic),
            #[cfg(feature = "tcp-tls")]
            self.tcp_tls.as_ref().map(|_| Medium::TcpTls),
            #[cfg(feature = "shm")]
            Some(Medium::Shm),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The endpoint a node binds when it is given none (a socket medium: shared memory
    /// needs a name).
    pub(crate) fn default_bind(&self) -> Option<Endpoint> {
        #[cfg(feature = "shm")]
        let medium = self.present().into_iter().find(|m| *m != Medium::Shm)?;
        #[cfg(not(feature = "shm"))]
        let medium = self.present().into_iter().next()?;
        Endpoint::new(medium.scheme(), "127.0.0.1:0").ok()
    }

    /// Binds `endpoint` on the medium of its scheme.
    pub(crate) async fn bind(&self, endpoint: &Endpoint) -> Result<Endpoint, StartError> {
        let unsupported = || {
            let why = match Medium::from_scheme(endpoint.scheme()) {
                Some(_) => "that transport is not configured",
                None => "no transport for that scheme in this build (see the dms cargo features)",
            };
            StartError::UnsupportedEndpoint(format!("{endpoint}: {why}"))
        };
        let medium = Medium::from_scheme(endpoint.scheme()).ok_or_else(unsupported)?;
        self.activate(medium);
        let bound = match medium {
            #[cfg(feature = "tcp")]
            Medium::Tcp => self.tcp.bind(endpoint).await,
            #[cfg(feature = "quic")]
            Medium::Quic => match &self.quic {
                Some(m) => m.bind(endpoint).await,
                None => return Err(unsupported()),
            },
            #[cfg(feature = "tcp-tls")]
            Medium::TcpTls => match &self.tcp_tls {
                Some(m) => m.bind(endpoint).await,
                None => return Err(unsupported()),
            },
            #[cfg(feature = "shm")]
            Medium::Shm => self.shm.bind(endpoint).await,
        };
        bound.map_err(StartError::Bind)
    }

    /// The endpoint to dial among those an instance published, and the middleware to
    /// dial it with (see the [module docs](self)).
    pub(crate) fn dialable(&self, published: &[String]) -> Option<(Endpoint, Dialer)> {
        let endpoints: Vec<Endpoint> = published.iter().filter_map(|e| e.parse().ok()).collect();
        self.prefer.iter().find_map(|medium| {
            let endpoint = endpoints.iter().find(|e| medium.may_dial(e))?.clone();
            Some((endpoint, self.dialer(*medium)?))
        })
    }

    /// Whether the process that published `published` under `path` is alive: each
    /// endpoint this node can dial is tried once (within `timeout`) in preference order.
    /// An answer as `path` is alive; a refused connection or an answer as another
    /// instance is dead; anything else (no answer, a failed handshake) proves nothing.
    pub(crate) async fn probe(
        &self,
        published: &[String],
        path: &ServicePath,
        timeout: std::time::Duration,
    ) -> Liveness {
        let endpoints: Vec<Endpoint> = published.iter().filter_map(|e| e.parse().ok()).collect();
        let mut verdict = None;
        for medium in &self.prefer {
            let Some(dialer) = self.dialer(*medium) else {
                continue;
            };
            for endpoint in endpoints.iter().filter(|e| medium.may_dial(e)) {
                let seen = match tokio::time::timeout(timeout, dialer.connect(endpoint)).await {
                    Ok(Ok(peer)) => {
                        let alive = peer == path.peer_id();
                        let _ = tokio::time::timeout(timeout, dialer.disconnect(&peer)).await;
                        if alive {
                            Liveness::Alive
                        } else {
                            Liveness::Dead
                        }
                    }
                    Ok(Err(MiddlewareError::Io(e)))
                        if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                    {
                        Liveness::Dead
                    }
                    _ => Liveness::Unknown,
                };
                tracing::debug!(%endpoint, ?seen, "probed a registration's endpoint");
                verdict = Some(match (verdict, seen) {
                    (_, Liveness::Alive) => return Liveness::Alive,
                    (None | Some(Liveness::Dead), Liveness::Dead) => Liveness::Dead,
                    _ => Liveness::Unknown,
                });
            }
        }
        verdict.unwrap_or(Liveness::Unknown)
    }

    /// From now on `medium` is polled for what it yields (see `active`).
    fn activate(&self, medium: Medium) {
        if let Some(i) = self.media.iter().position(|m| *m == medium) {
            self.active.fetch_or(1 << i, Ordering::AcqRel);
        }
    }

    /// A handle to dial (or close links) on `medium`, which is then polled (its links'
    /// items come through `recv_many`).
    fn dialer(&self, medium: Medium) -> Option<Dialer> {
        self.activate(medium);
        match medium {
            #[cfg(feature = "tcp")]
            Medium::Tcp => Some(Dialer::Tcp(self.tcp.clone())),
            #[cfg(feature = "quic")]
            Medium::Quic => self.quic.clone().map(Dialer::Quic),
            #[cfg(feature = "tcp-tls")]
            Medium::TcpTls => self.tcp_tls.clone().map(Dialer::Tcp),
            #[cfg(feature = "shm")]
            Medium::Shm => Some(Dialer::Shm(self.shm.clone())),
        }
    }

    /// Why `body`, sent to `peer` with a control frame, would break the wire limits of
    /// the medium of that peer's link (`None`: it fits). Checked before a request or
    /// notification is queued, so the caller learns at once that nothing was sent.
    pub(crate) fn too_large(&self, peer: &PeerId, body: &Multipart) -> Option<String> {
        let limits = self.limits_of(self.medium_of(peer.as_bytes())?)?;
        let frames = body.len() + 1;
        if frames > limits.max_frames_per_message() {
            return Some(format!(
                "{frames} frames with the control frame; at most {}",
                limits.max_frames_per_message()
            ));
        }
        if let Some(big) = body
            .frames()
            .iter()
            .find(|f| f.len() as u64 > limits.max_frame_len())
        {
            return Some(format!(
                "a frame of {} bytes; at most {}",
                big.len(),
                limits.max_frame_len()
            ));
        }
        let total = (body.payload_len() + CONTROL_FRAME_MAX) as u64;
        (total > limits.max_message_len()).then(|| {
            format!(
                "{} bytes of payload; at most {} with the control frame",
                body.payload_len(),
                limits
                    .max_message_len()
                    .saturating_sub(CONTROL_FRAME_MAX as u64)
            )
        })
    }

    fn limits_of(&self, medium: Medium) -> Option<dms_core::wire::Limits> {
        match medium {
            #[cfg(feature = "tcp")]
            Medium::Tcp => Some(*self.tcp.config().limits()),
            #[cfg(feature = "quic")]
            Medium::Quic => self.quic.as_ref().map(|m| *m.config().link().limits()),
            #[cfg(feature = "tcp-tls")]
            Medium::TcpTls => self.tcp_tls.as_ref().map(|m| *m.config().limits()),
            #[cfg(feature = "shm")]
            Medium::Shm => Some(*self.shm.config().limits()),
        }
    }

    /// The link to `peer` the driver knows (from its `LinkUp`, until its `LinkDown`), and
    /// its middleware.
    pub(crate) fn link_of(&self, peer: &PeerId) -> Option<(Dialer, LinkId)> {
        let (medium, link) = *self.links.get(peer)?;
        Some((self.dialer(medium)?, link))
    }

    /// The medium a message for `peer` goes to.
    fn medium_of(&self, peer: &[u8]) -> Option<Medium> {
        self.single
            .or_else(|| self.links.get(peer).map(|(medium, _)| *medium))
    }

    /// Queues `msg` on the link to its peer that the driver knows, if it has room now.
    pub(crate) fn try_send(&self, msg: Multipart) -> Result<(), SendError> {
        let (medium, link, msg) = self.route(msg)?;
        match medium {
            #[cfg(feature = "tcp")]
            Medium::Tcp => self.tcp.try_send_on(link, msg),
            #[cfg(feature = "quic")]
            Medium::Quic => self
                .quic
                .as_ref()
                .ok_or(SendError::Closed)?
                .try_send_on(link, msg),
            #[cfg(feature = "tcp-tls")]
            Medium::TcpTls => self
                .tcp_tls
                .as_ref()
                .ok_or(SendError::Closed)?
                .try_send_on(link, msg),
            #[cfg(feature = "shm")]
            Medium::Shm => self.shm.try_send_on(link, msg),
        }
    }

    /// Queues a heartbeat ahead of queued data, on the link the driver knows.
    pub(crate) fn try_send_urgent(&self, msg: Multipart) -> Result<(), SendError> {
        let (medium, link, msg) = self.route(msg)?;
        match medium {
            #[cfg(feature = "tcp")]
            Medium::Tcp => self.tcp.try_send_urgent_on(link, msg),
            #[cfg(feature = "quic")]
            Medium::Quic => self
                .quic
                .as_ref()
                .ok_or(SendError::Closed)?
                .try_send_urgent_on(link, msg),
            #[cfg(feature = "tcp-tls")]
            Medium::TcpTls => self
                .tcp_tls
                .as_ref()
                .ok_or(SendError::Closed)?
                .try_send_urgent_on(link, msg),
            #[cfg(feature = "shm")]
            Medium::Shm => self.shm.try_send_urgent_on(link, msg),
        }
    }

    /// The counters of every medium present: the links' (by scheme), and the refusals
    /// only some media count (QUIC's handshake cap, TLS's plaintext refusals).
    pub(crate) fn stats(&self) -> MediaStats {
        let mut stats = MediaStats::default();
        #[cfg(feature = "tcp")]
        stats.links.push((Medium::Tcp.scheme(), self.tcp.stats()));
        #[cfg(feature = "quic")]
        if let Some(quic) = &self.quic {
            let q = quic.stats();
            stats.links.push((Medium::Quic.scheme(), q.links));
            stats.handshakes_refused += q.handshakes_refused;
        }
        #[cfg(feature = "tcp-tls")]
        if let Some(tcp_tls) = &self.tcp_tls {
            stats.links.push((Medium::TcpTls.scheme(), tcp_tls.stats()));
            let tls = tcp_tls.tls_stats();
            stats.tls_handshake_failures += tls.handshake_failures;
            stats.plaintext_refused += tls.plaintext_refused;
        }
        #[cfg(feature = "shm")]
        {
            let shm = self.shm.stats();
            stats.links.push((Medium::Shm.scheme(), shm.links));
            stats.shm_setup_failures += shm.setup_failures;
            stats.shm_corrupt_rings += shm.corrupt_rings;
        }
        stats
    }

    /// A handle that sends on `peer`'s link (the one the driver knows) from any task, or
    /// `None` when the peer has no link.
    pub(crate) fn sender_of(&self, peer: &PeerId) -> Option<MediumSender> {
        let (medium, link) = *self.links.get(peer)?;
        Some(match medium {
            #[cfg(feature = "tcp")]
            Medium::Tcp => MediumSender::Tcp(self.tcp.clone(), link),
            #[cfg(feature = "quic")]
            Medium::Quic => MediumSender::Quic(self.quic.clone()?, link),
            #[cfg(feature = "tcp-tls")]
            Medium::TcpTls => MediumSender::Tcp(self.tcp_tls.clone()?, link),
            #[cfg(feature = "shm")]
            Medium::Shm => MediumSender::Shm(self.shm.clone(), link),
        })
    }

    /// Stops or resumes reading `peer`'s link (see `MessageMiddleware::pause_reading`).
    pub(crate) fn pause_reading(&self, peer: &PeerId, paused: bool) {
        match self.medium_of(peer.as_bytes()) {
            #[cfg(feature = "tcp")]
            Some(Medium::Tcp) => self.tcp.pause_reading(peer, paused),
            #[cfg(feature = "quic")]
            Some(Medium::Quic) => {
                if let Some(quic) = &self.quic {
                    quic.pause_reading(peer, paused);
                }
            }
            #[cfg(feature = "tcp-tls")]
            Some(Medium::TcpTls) => {
                if let Some(tcp_tls) = &self.tcp_tls {
                    tcp_tls.pause_reading(peer, paused);
                }
            }
            #[cfg(feature = "shm")]
            Some(Medium::Shm) => self.shm.pause_reading(peer, paused),
            None => {}
        }
    }

    /// The medium and id of the link `msg` goes to (its first frame names the peer).
    fn route(&self, msg: Multipart) -> Result<(Medium, LinkId, Multipart), SendError> {
        let first = msg.first().ok_or(SendError::NoPeerFrame)?;
        if let Some(&(medium, link)) = self.links.get(first.as_ref()) {
            return Ok((medium, link, msg));
        }
        match PeerId::new(first.clone()) {
            Ok(peer) => Err(SendError::UnknownPeer {
                peer,
                msg: Box::new(msg),
            }),
            Err(_) => Err(SendError::NoPeerFrame),
        }
    }

    /// Waits for the next items of any medium; returns the medium they all came from.
    /// `spare` holds the buffers of the media polled after the first (kept by the caller,
    /// so a batch allocates nothing once they have grown). Cancel-safe (each medium's
    /// `recv_many` is, and only one of them completes).
    pub(crate) async fn recv_many(
        &self,
        items: &mut Vec<Incoming>,
        spare: &mut [Vec<Incoming>; 3],
        limit: usize,
    ) -> Result<Medium, MiddlewareError> {
        if let Some(medium) = self.single {
            return self.recv_on(medium, items, limit).await.map(|_| medium);
        }
        let active = self.active.load(Ordering::Acquire);
        let mut media = [None; 4];
        let mut n = 0;
        for (i, medium) in self.media.iter().enumerate() {
            if active & (1 << i) != 0 && n < media.len() {
                media[n] = Some(*medium);
                n += 1;
            }
        }
        if let (1, Some(medium)) = (n, media[0]) {
            return self.recv_on(medium, items, limit).await.map(|_| medium);
        }
        // Every active medium at once, each into a buffer of its own; the first to
        // complete wins and the others are dropped (cancel-safe: they took nothing). The
        // first medium polled turns with every call, so a busy medium cannot starve the
        // others.
        let first = self.turn.fetch_add(1, Ordering::Relaxed);
        let at = |i: usize| (i < n).then(|| media[(first + i) % n]).flatten();
        let (winner, medium, taken) = {
            let [spare1, spare2, spare3] = &mut *spare;
            let slot0 = std::pin::pin!(self.recv_slot(at(0), items, limit));
            let slot1 = std::pin::pin!(self.recv_slot(at(1), spare1, limit));
            let slot2 = std::pin::pin!(self.recv_slot(at(2), spare2, limit));
            let slot3 = std::pin::pin!(self.recv_slot(at(3), spare3, limit));
            let mut slots = [slot0, slot1, slot2, slot3];
            std::future::poll_fn(|cx| {
                for (i, slot) in slots.iter_mut().enumerate() {
                    if let std::task::Poll::Ready((medium, taken)) = slot.as_mut().poll(cx) {
                        return std::task::Poll::Ready((i, medium, taken));
                    }
                }
                std::task::Poll::Pending
            })
            .await
        };
        if winner > 0 {
            items.append(&mut spare[winner - 1]);
        }
        taken.map(|_| medium)
    }

    /// One medium's `recv_many` into `items` (none: never completes).
    async fn recv_slot(
        &self,
        medium: Option<Medium>,
        items: &mut Vec<Incoming>,
        limit: usize,
    ) -> (Medium, Result<usize, MiddlewareError>) {
        let Some(medium) = medium else {
            return std::future::pending().await;
        };
        (medium, self.recv_on(medium, items, limit).await)
    }

    /// `recv_many` of one medium.
    async fn recv_on(
        &self,
        medium: Medium,
        items: &mut Vec<Incoming>,
        limit: usize,
    ) -> Result<usize, MiddlewareError> {
        match medium {
            #[cfg(feature = "tcp")]
            Medium::Tcp => self.tcp.recv_many(items, limit).await,
            #[cfg(feature = "quic")]
            Medium::Quic => match &self.quic {
                Some(quic) => quic.recv_many(items, limit).await,
                None => Err(MiddlewareError::Closed),
            },
            #[cfg(feature = "tcp-tls")]
            Medium::TcpTls => match &self.tcp_tls {
                Some(tcp_tls) => tcp_tls.recv_many(items, limit).await,
                None => Err(MiddlewareError::Closed),
            },
            #[cfg(feature = "shm")]
            Medium::Shm => self.shm.recv_many(items, limit).await,
        }
    }

    /// Records which link (medium and id) each peer is on; false when `item` must not
    /// reach the protocol (it belongs to a second link of a peer that has one on another
    /// medium).
    pub(crate) fn observe(&mut self, medium: Medium, item: &Incoming) -> bool {
        match item {
            Incoming::Message(msg) => {
                self.single.is_some()
                    || msg
                        .first()
                        .and_then(|peer| self.links.get(peer.as_ref()))
                        .is_some_and(|(m, _)| *m == medium)
            }
            Incoming::LinkUp { peer, link, .. } => match self.links.get(peer) {
                Some((current, _)) if *current != medium => {
                    if let Some(dialer) = self.dialer(medium) {
                        let (peer, link) = (peer.clone(), *link);
                        tokio::spawn(async move { dialer.disconnect_link(&peer, link).await });
                    }
                    false
                }
                _ => {
                    self.links.insert(peer.clone(), (medium, *link));
                    true
                }
            },
            Incoming::LinkDown { peer, link, .. } => {
                if self.links.get(peer) == Some(&(medium, *link)) {
                    self.links.remove(peer);
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }

    /// Peers with a live link, and the middleware of each.
    pub(crate) fn peers(&self) -> Vec<(PeerId, Dialer)> {
        self.links
            .iter()
            .filter_map(|(peer, (medium, _))| Some((peer.clone(), self.dialer(*medium)?)))
            .collect()
    }

    /// Closes every medium at once, without flushing.
    pub(crate) fn close(&self) {
        #[cfg(feature = "tcp")]
        self.tcp.close();
        #[cfg(feature = "quic")]
        if let Some(m) = &self.quic {
            m.close();
        }
        #[cfg(feature = "tcp-tls")]
        if let Some(m) = &self.tcp_tls {
            m.close();
        }
        #[cfg(feature = "shm")]
        self.shm.close();
    }
}

#[cfg(all(test, feature = "tcp", feature = "quic"))]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn media(prefer: &[&str], quic: bool) -> Transports {
        let local: ServicePath = "/t/t/t/w1/g1/Lobby/lobby-1".parse().unwrap();
        let mut settings = TransportSettings::default();
        if !prefer.is_empty() {
            settings.prefer = prefer.iter().map(|s| (*s).to_owned()).collect();
        }
        if quic {
            settings.quic_dev = Some(
                std::env::temp_dir().join(format!("dms-transport-unit-{}", std::process::id())),
            );
        }
        let built = Transports::new(&local, settings, std::time::Duration::from_secs(1), 3);
        built.unwrap()
    }

    fn published() -> Vec<String> {
        vec!["tcp://127.0.0.1:1".into(), "quic://127.0.0.1:2".into()]
    }

    fn dialled(t: &Transports, published: &[String]) -> Option<String> {
        t.dialable(published).map(|(e, _)| e.to_string())
    }

    #[tokio::test]
    async fn the_first_preferred_scheme_both_sides_have_is_dialled() {
        let both = published();
        // Default preference: QUIC before TCP, when we can dial QUIC.
        assert_eq!(
            dialled(&media(&[], true), &both).as_deref(),
            Some("quic://127.0.0.1:2")
        );
        // Without TLS credentials QUIC cannot be dialled: TCP.
        assert_eq!(
            dialled(&media(&[], false), &both).as_deref(),
            Some("tcp://127.0.0.1:1")
        );
        // An explicit preference wins.
        assert_eq!(
            dialled(&media(&["tcp"], true), &both).as_deref(),
            Some("tcp://127.0.0.1:1")
        );
        // A scheme not listed is never dialled; garbage entries are skipped.
        let only_tcp = vec!["not a url".to_owned(), "tcp://127.0.0.1:1".to_owned()];
        assert_eq!(dialled(&media(&["quic"], true), &only_tcp), None);
        assert_eq!(
            dialled(&media(&[], true), &only_tcp).as_deref(),
            Some("tcp://127.0.0.1:1")
        );
    }

    #[cfg(feature = "tcp-tls")]
    #[tokio::test]
    async fn tcp_tls_comes_before_plaintext_tcp_with_credentials() {
        let published: Vec<String> =
            vec!["tcp://127.0.0.1:1".into(), "tcp+tls://127.0.0.1:3".into()];
        // With credentials, never plaintext to a peer that publishes TLS.
        assert_eq!(
            dialled(&media(&[], true), &published).as_deref(),
            Some("tcp+tls://127.0.0.1:3")
        );
        // Without them TCP+TLS cannot be dialled: plaintext TCP.
        assert_eq!(
            dialled(&media(&[], false), &published).as_deref(),
            Some("tcp://127.0.0.1:1")
        );
        assert_eq!(dialled(&media(&[], false), &published[1..]), None);
        // QUIC first when the peer publishes it too.
        let mut all = published.clone();
        all.push("quic://127.0.0.1:2".into());
        assert_eq!(
            dialled(&media(&[], true), &all).as_deref(),
            Some("quic://127.0.0.1:2")
        );
        // An explicit preference still wins.
        assert_eq!(
            dialled(&media(&["tcp", "tcp+tls"], true), &published).as_deref(),
            Some("tcp://127.0.0.1:1")
        );
    }

    #[tokio::test]
    async fn a_peer_has_one_link_across_media() {
        let mut t = media(&[], true);
        let peer: PeerId = "/t/t/t/w1/g1/Battle/battle-1"
            .parse::<ServicePath>()
            .map(|p| p.peer_id())
            .unwrap();
        let up = |peer: &PeerId, link: LinkId| Incoming::LinkUp {
            peer: peer.clone(),
            link,
            endpoint: Endpoint::new("tcp", "127.0.0.1:1").unwrap(),
            role: dms_core::Role::Connector,
        };
        let down = |peer: &PeerId, link: LinkId| Incoming::LinkDown {
            peer: peer.clone(),
            link,
            cause: dms_core::LinkDownCause::ClosedByPeer,
        };
        let (tcp, quic) = (LinkId::next(), LinkId::next());
        assert!(t.observe(Medium::Tcp, &up(&peer, tcp)));
        assert_eq!(t.link_of(&peer).map(|(_, link)| link), Some(tcp));
        // A second link on another medium is not reported, nor its messages or its end.
        assert!(!t.observe(Medium::Quic, &up(&peer, quic)));
        assert_eq!(t.link_of(&peer).map(|(_, link)| link), Some(tcp));
        let msg = Incoming::Message(Multipart::from_frames([peer.to_frame(), "x".into()]));
        assert!(t.observe(Medium::Tcp, &msg));
        assert!(!t.observe(Medium::Quic, &msg));
        assert!(!t.observe(Medium::Quic, &down(&peer, quic)));
        assert_eq!(t.peers().len(), 1);
        // Only the end of the link it knows ends the peer's link.
        assert!(!t.observe(Medium::Tcp, &down(&peer, quic)));
        assert_eq!(t.link_of(&peer).map(|(_, link)| link), Some(tcp));
        assert!(t.observe(Medium::Tcp, &down(&peer, tcp)));
        assert!(t.peers().is_empty());
        assert!(t.link_of(&peer).is_none());
        // Once the first is down, a link on the other medium is the peer's link.
        let next = LinkId::next();
        assert!(t.observe(Medium::Quic, &up(&peer, next)));
        assert_eq!(t.link_of(&peer).map(|(_, link)| link), Some(next));
    }
}
