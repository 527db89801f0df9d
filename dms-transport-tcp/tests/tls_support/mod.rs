//! Shared by the `tcp+tls` tests: one development CA per test process, identities for
//! service paths, and the [`Factory`] of `tcp+tls` middlewares on loopback.
#![allow(dead_code, unreachable_pub)] // each test binary uses a part of it

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use dms_core::path::ServicePath;
use dms_core::{Endpoint, PeerId};
use dms_test_support::middleware::{Factory, Options};
use dms_tls::TlsIdentity;
use dms_tls::dev::{DevCa, IssuedCert};
use dms_transport_tcp::{TcpConfig, TcpConfigBuilder, TcpMiddleware, TlsConfig};

/// The cluster every conformance peer is an instance of.
const CLUSTER: &str = "/conformance/t/tcp-tls/w1/g1/Peer";

/// The development CA of this test process (development only, never in production).
pub fn ca() -> &'static DevCa {
    static CA: OnceLock<DevCa> = OnceLock::new();
    CA.get_or_init(|| DevCa::generate().expect("dev CA"))
}

/// The service path a conformance peer named `name` is certified for.
pub fn path(name: &str) -> ServicePath {
    format!("{CLUSTER}/{name}").parse().expect("service path")
}

/// An identity with `cert`, trusting `trusted`.
pub fn identity_of(cert: &IssuedCert, trusted: &DevCa) -> TlsIdentity {
    TlsIdentity::from_pem(
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
        trusted.ca_pem().as_bytes(),
    )
    .expect("identity")
}

/// An identity for `path` issued by `issuer`, trusting `trusted`.
pub fn identity(path: &ServicePath, issuer: &DevCa, trusted: &DevCa) -> TlsIdentity {
    identity_of(&issuer.issue(path).expect("issue"), trusted)
}

/// A `tcp+tls` configuration builder for `tls`.
pub fn builder(tls: TlsIdentity) -> TcpConfigBuilder {
    TcpConfig::builder().tls(TlsConfig::new(tls).expect("TLS config"))
}

/// A `tcp+tls` middleware of `config`.
pub fn middleware(config: TcpConfigBuilder) -> TcpMiddleware {
    TcpMiddleware::new(config.build().expect("valid config"))
}

/// Makes `tcp+tls` middlewares bound on loopback port 0. A middleware created with
/// identity `name` is certified for `/conformance/t/tcp-tls/w1/g1/Peer/<name>`; one
/// created without an identity for a path of its own, `.../Peer/anon-<n>`.
pub struct TcpTls;

impl Factory for TcpTls {
    type Middleware = TcpMiddleware;

    fn create(&self, options: Options) -> TcpMiddleware {
        static ANONYMOUS: AtomicU32 = AtomicU32::new(0);
        let path = match options.identity {
            Some(name) => path(name),
            None => {
                let n = ANONYMOUS.fetch_add(1, Ordering::Relaxed);
                path(&format!("anon-{n}"))
            }
        };
        let mut config = builder(identity(&path, ca(), ca()));
        if let Some(max) = options.max_peers {
            config = config.max_peers(max);
        }
        if let Some(bytes) = options.link_queue_bytes {
            config = config.link_queue_bytes(bytes);
        }
        if let Some(items) = options.inbound_queue {
            config = config.inbound_queue(items);
        }
        middleware(config)
    }

    fn endpoint(&self) -> Endpoint {
        "tcp+tls://127.0.0.1:0".parse().expect("endpoint")
    }

    fn peer_id(&self, name: &str) -> PeerId {
        path(name).peer_id()
    }

    fn assigns_ids(&self) -> bool {
        false
    }
}
