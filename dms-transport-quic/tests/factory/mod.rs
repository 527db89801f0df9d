//! The [`Factory`] of QUIC middlewares on loopback: every middleware gets a certificate of
//! one development CA (one per test process), for the service path its identity names.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use dms_core::path::ServicePath;
use dms_core::{Endpoint, PeerId};
use dms_test_support::middleware::{Factory, Options};
use dms_tls::TlsIdentity;
use dms_tls::dev::DevCa;
use dms_transport_quic::{QuicConfig, QuicMiddleware};

/// The cluster every conformance peer is an instance of.
const CLUSTER: &str = "/conformance/t/quic/w1/g1/Peer";

/// The development CA of this test process (development only, never in production). It
/// is created in a temporary directory, which is removed once the CA is in memory.
fn ca() -> &'static DevCa {
    static CA: OnceLock<DevCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        DevCa::load_or_create(dir.path()).expect("dev CA")
    })
}

/// The service path a peer named `name` is certified for.
pub(crate) fn path(name: &str) -> ServicePath {
    format!("{CLUSTER}/{name}").parse().expect("service path")
}

/// A TLS identity for `path`, issued by the process's CA.
pub(crate) fn identity(path: &ServicePath) -> TlsIdentity {
    let issued = ca().issue(path).expect("issue");
    TlsIdentity::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca().ca_pem().as_bytes(),
    )
    .expect("identity")
}

/// Makes QUIC middlewares bound on loopback port 0. A middleware created with identity
/// `name` is certified for `/conformance/t/quic/w1/g1/Peer/<name>`; one created without an
/// identity for a path of its own, `.../Peer/anon-<n>`.
pub(crate) struct Quic;

impl Factory for Quic {
    type Middleware = QuicMiddleware;

    fn create(&self, options: Options) -> QuicMiddleware {
        static ANONYMOUS: AtomicU32 = AtomicU32::new(0);
        let path = match options.identity {
            Some(name) => path(name),
            None => {
                let n = ANONYMOUS.fetch_add(1, Ordering::Relaxed);
                path(&format!("anon-{n}"))
            }
        };
        let mut config = QuicConfig::builder(identity(&path));
        if let Some(max) = options.max_peers {
            config = config.max_peers(max);
        }
        if let Some(bytes) = options.link_queue_bytes {
            config = config.link_queue_bytes(bytes);
        }
        if let Some(items) = options.inbound_queue {
            config = config.inbound_queue(items);
        }
        QuicMiddleware::new(config.build().expect("valid config")).expect("middleware")
    }

    fn endpoint(&self) -> Endpoint {
        "quic://127.0.0.1:0".parse().expect("endpoint")
    }

    fn peer_id(&self, name: &str) -> PeerId {
        path(name).peer_id()
    }

    fn assigns_ids(&self) -> bool {
        false
    }
}
