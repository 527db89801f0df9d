//! Shared helpers: in-memory rustls handshakes and raw rcgen certificates.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dms_core::path::ServicePath;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

pub const ALPN: &[&[u8]] = &[b"dms/1"];

pub fn path(s: &str) -> ServicePath {
    s.parse().unwrap()
}

pub fn client_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Gate/gate-1")
}

pub fn server_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Battle/battle-1")
}

/// The result of driving a client and a server against each other in memory.
pub struct Outcome {
    pub client: ClientConnection,
    pub server: ServerConnection,
    pub client_error: Option<rustls::Error>,
    pub server_error: Option<rustls::Error>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.client_error.is_none()
            && self.server_error.is_none()
            && !self.client.is_handshaking()
            && !self.server.is_handshaking()
    }
}

pub fn handshake(client: ClientConfig, server: ServerConfig) -> Outcome {
    handshake_named(client, server, "localhost")
}

pub fn handshake_named(client: ClientConfig, server: ServerConfig, name: &str) -> Outcome {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server)).unwrap();
    let mut client_error = None;
    let mut server_error = None;
    for _ in 0..100 {
        let mut progressed = false;
        while client.wants_write() {
            let mut buf = Vec::new();
            if client.write_tls(&mut buf).unwrap_or(0) == 0 {
                break;
            }
            progressed = true;
            let _ = server.read_tls(&mut &buf[..]);
            if server_error.is_none()
                && let Err(e) = server.process_new_packets()
            {
                server_error = Some(e);
            }
        }
        while server.wants_write() {
            let mut buf = Vec::new();
            if server.write_tls(&mut buf).unwrap_or(0) == 0 {
                break;
            }
            progressed = true;
            let _ = client.read_tls(&mut &buf[..]);
            if client_error.is_none()
                && let Err(e) = client.process_new_packets()
            {
                client_error = Some(e);
            }
        }
        if !progressed {
            break;
        }
    }
    Outcome {
        client,
        server,
        client_error,
        server_error,
    }
}

/// A CA made directly with rcgen (to make certificates `DevCa` refuses to make).
pub struct RawCa {
    pub issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn raw_ca(common_name: &str) -> RawCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    RawCa {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf for TLS client and server use with exactly these URI SANs (plus `localhost`),
/// signed by `ca`; returns (cert PEM, key PEM).
pub fn raw_leaf(ca: &RawCa, uris: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into().unwrap()));
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(3600)).into();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn chain_and_key(
    cert_pem: &str,
    key_pem: &str,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    (chain, key)
}

/// A plain rustls server (no client auth) presenting this certificate.
pub fn plain_server(cert_pem: &str, key_pem: &str) -> ServerConfig {
    let (chain, key) = chain_and_key(cert_pem, key_pem);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config
}

/// A plain rustls client (standard WebPKI server verification, trusting `ca_pem`)
/// presenting this certificate.
pub fn plain_client(ca_pem: &str, cert_pem: &str, key_pem: &str) -> ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let (chain, key) = chain_and_key(cert_pem, key_pem);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config
}
