//! Real rustls handshakes in memory between DMS identities: success, and each failure
//! with its typed error on both sides and the alert rustls actually sent.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions
mod common;

use std::time::{Duration, SystemTime};

use common::*;
use dms_core::{AuthError, Rejection};
use dms_tls::dev::DevCa;
use dms_tls::{TlsIdentity, alert, auth_error, auth_error_from_alert, certified_path};

fn identity(ca: &DevCa, trusted: &DevCa, path: &dms_core::path::ServicePath) -> TlsIdentity {
    let issued = ca.issue(path).unwrap();
    TlsIdentity::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        trusted.ca_pem().as_bytes(),
    )
    .unwrap()
}

/// The alert number a side received (what the other side sent).
fn received_alert(error: &Option<rustls::Error>) -> u8 {
    match error {
        Some(rustls::Error::AlertReceived(a)) => u8::from(*a),
        other => panic!("expected a received alert, got {other:?}"),
    }
}

/// Asserts the failing side (`local`) reports `expected`, the other side
/// `RejectedByPeer(rejection)`, that the alert on the wire is `alert_number`, and that
/// `auth_error_from_alert` gives the same errors from that number.
fn assert_failure(
    local: &Option<rustls::Error>,
    remote: &Option<rustls::Error>,
    expected: AuthError,
    rejection: Rejection,
    alert_number: u8,
) {
    let local_error = auth_error(local.as_ref().expect("the verifying side failed"));
    assert_eq!(local_error, expected, "local: {local:?}");
    let remote_error = auth_error(remote.as_ref().expect("the refused side failed"));
    assert_eq!(
        remote_error,
        AuthError::RejectedByPeer(rejection),
        "remote: {remote:?}"
    );
    let sent = received_alert(remote);
    assert_eq!(sent, alert_number, "alert on the wire");
    assert_eq!(auth_error_from_alert(sent, false), local_error);
    assert_eq!(auth_error_from_alert(sent, true), remote_error);
}

#[test]
fn mutual_handshake_with_dev_certs_certifies_both_paths() {
    let ca = DevCa::generate().unwrap();
    let client = identity(&ca, &ca, &client_path());
    let server = identity(&ca, &ca, &server_path());
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    assert!(out.ok(), "{:?} / {:?}", out.client_error, out.server_error);
    let seen_by_server = out.server.peer_certificates().unwrap();
    assert_eq!(certified_path(&seen_by_server[0]).unwrap(), client_path());
    let seen_by_client = out.client.peer_certificates().unwrap();
    assert_eq!(certified_path(&seen_by_client[0]).unwrap(), server_path());
    assert_eq!(out.client.alpn_protocol(), Some(&b"dms/1"[..]));
    assert_eq!(out.server.alpn_protocol(), Some(&b"dms/1"[..]));
    assert_eq!(
        out.client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn client_ignores_the_dns_name() {
    let ca = DevCa::generate().unwrap();
    let client = identity(&ca, &ca, &client_path());
    let server = identity(&ca, &ca, &server_path());
    let out = handshake_named(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
        "not-this-server.example",
    );
    assert!(out.ok(), "{:?} / {:?}", out.client_error, out.server_error);
}

#[test]
fn server_signed_by_an_unknown_ca_is_refused_by_the_client() {
    let ours = DevCa::generate().unwrap();
    let theirs = DevCa::generate().unwrap();
    let client = identity(&ours, &ours, &client_path());
    // The server trusts our CA (so the client cert is fine) but is issued by another.
    let server = identity(&theirs, &ours, &server_path());
    let out = handshake_named(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
        "not-this-server.example", // ignoring names must not ignore the issuer
    );
    assert!(!out.ok());
    assert_failure(
        &out.client_error,
        &out.server_error,
        AuthError::UnknownIssuer,
        Rejection::UnknownIssuer,
        alert::UNKNOWN_CA,
    );
}

#[test]
fn client_signed_by_an_unknown_ca_is_refused_by_the_server() {
    let ours = DevCa::generate().unwrap();
    let theirs = DevCa::generate().unwrap();
    let client = identity(&theirs, &ours, &client_path());
    let server = identity(&ours, &ours, &server_path());
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    assert!(!out.ok());
    assert_failure(
        &out.server_error,
        &out.client_error,
        AuthError::UnknownIssuer,
        Rejection::UnknownIssuer,
        alert::UNKNOWN_CA,
    );
}

fn expired(ca: &DevCa, trusted: &DevCa, path: &dms_core::path::ServicePath) -> TlsIdentity {
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let issued = ca
        .issue_with_validity(path, now - 10 * day, now - day)
        .unwrap();
    TlsIdentity::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        trusted.ca_pem().as_bytes(),
    )
    .unwrap()
}

#[test]
fn expired_server_certificate() {
    let ca = DevCa::generate().unwrap();
    let client = identity(&ca, &ca, &client_path());
    let server = expired(&ca, &ca, &server_path());
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    assert_failure(
        &out.client_error,
        &out.server_error,
        AuthError::Expired,
        Rejection::Expired,
        alert::CERTIFICATE_EXPIRED,
    );
}

#[test]
fn expired_client_certificate() {
    let ca = DevCa::generate().unwrap();
    let client = expired(&ca, &ca, &client_path());
    let server = identity(&ca, &ca, &server_path());
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    assert_failure(
        &out.server_error,
        &out.client_error,
        AuthError::Expired,
        Rejection::Expired,
        alert::CERTIFICATE_EXPIRED,
    );
}

#[test]
fn not_yet_valid_certificate_is_expired() {
    let ca = DevCa::generate().unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let issued = ca
        .issue_with_validity(&server_path(), now + day, now + 2 * day)
        .unwrap();
    let server = TlsIdentity::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.ca_pem().as_bytes(),
    )
    .unwrap();
    let client = identity(&ca, &ca, &client_path());
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    assert_failure(
        &out.client_error,
        &out.server_error,
        AuthError::Expired,
        Rejection::Expired,
        alert::CERTIFICATE_EXPIRED,
    );
}

#[test]
fn missing_client_certificate() {
    let ca = DevCa::generate().unwrap();
    let client = identity(&ca, &ca, &client_path());
    let server = identity(&ca, &ca, &server_path());
    let out = handshake(
        client
            .client_config_without_certificate_for_tests(ALPN)
            .unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    assert_failure(
        &out.server_error,
        &out.client_error,
        AuthError::MissingCertificate,
        Rejection::MissingCertificate,
        alert::CERTIFICATE_REQUIRED,
    );
}

#[test]
fn server_without_a_service_path_is_refused_by_the_client() {
    let ca = raw_ca("test CA");
    let (client_cert, client_key) = raw_leaf(&ca, &["dms:/demo/cn/android/w1/g1/Gate/gate-1"]);
    let client = TlsIdentity::from_pem(
        client_cert.as_bytes(),
        client_key.as_bytes(),
        ca.pem.as_bytes(),
    )
    .unwrap();
    let (server_cert, server_key) = raw_leaf(&ca, &["https://example.invalid/"]);
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        plain_server(&server_cert, &server_key),
    );
    let local = auth_error(out.client_error.as_ref().unwrap());
    assert!(matches!(local, AuthError::NoServicePath(_)), "{local:?}");
    assert_eq!(
        received_alert(&out.server_error),
        alert::CERTIFICATE_UNKNOWN
    );
    assert_eq!(
        auth_error(out.server_error.as_ref().unwrap()),
        AuthError::RejectedByPeer(Rejection::Other("certificate_unknown (46)".into()))
    );
}

#[test]
fn client_without_a_service_path_is_refused_by_the_server() {
    let ca = raw_ca("test CA");
    let (server_cert, server_key) = raw_leaf(&ca, &["dms:/demo/cn/android/w1/g1/Battle/battle-1"]);
    let server = TlsIdentity::from_pem(
        server_cert.as_bytes(),
        server_key.as_bytes(),
        ca.pem.as_bytes(),
    )
    .unwrap();
    let (client_cert, client_key) = raw_leaf(&ca, &[]);
    let out = handshake(
        plain_client(&ca.pem, &client_cert, &client_key),
        server.server_config(ALPN).unwrap(),
    );
    let local = auth_error(out.server_error.as_ref().unwrap());
    assert!(matches!(local, AuthError::NoServicePath(_)), "{local:?}");
    assert_eq!(
        received_alert(&out.client_error),
        alert::CERTIFICATE_UNKNOWN
    );
}

/// A forged chain: the leaf names our CA as its issuer (same distinguished name) but is
/// signed by another key. webpki reports a bad signature (alert `decrypt_error`); it must
/// be refused, as `UnknownIssuer` locally.
#[test]
fn forged_issuer_with_our_ca_name_is_refused() {
    let ours = raw_ca("DMS test CA");
    let forger = raw_ca("DMS test CA");
    let (client_cert, client_key) = raw_leaf(&ours, &["dms:/demo/cn/android/w1/g1/Gate/gate-1"]);
    let client = TlsIdentity::from_pem(
        client_cert.as_bytes(),
        client_key.as_bytes(),
        ours.pem.as_bytes(),
    )
    .unwrap();
    let (server_cert, server_key) =
        raw_leaf(&forger, &["dms:/demo/cn/android/w1/g1/Battle/battle-1"]);
    // The forger even sends our real CA certificate along as an "intermediate".
    let chain = format!("{server_cert}{}", ours.pem);
    let out = handshake_named(
        client.client_config(ALPN).unwrap(),
        plain_server(&chain, &server_key),
        "not-this-server.example",
    );
    assert!(!out.ok());
    assert_eq!(
        auth_error(out.client_error.as_ref().unwrap()),
        AuthError::UnknownIssuer
    );
    assert_eq!(received_alert(&out.server_error), alert::DECRYPT_ERROR);
    assert_eq!(
        auth_error(out.server_error.as_ref().unwrap()),
        AuthError::RejectedByPeer(Rejection::Other("decrypt_error (51)".into()))
    );
}

/// A self-signed leaf with a valid DMS SAN, or a leaf issued by an untrusted CA, never
/// passes the client's name-blind verifier.
#[test]
fn self_signed_server_with_valid_san_is_refused() {
    let ca = DevCa::generate().unwrap();
    let client = identity(&ca, &ca, &client_path());
    let rogue = raw_ca("rogue");
    let (cert, key) = raw_leaf(&rogue, &["dms:/demo/cn/android/w1/g1/Battle/battle-1"]);
    // Present the rogue CA too: a complete chain to an untrusted root.
    let chain = format!("{cert}{}", rogue.pem);
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        plain_server(&chain, &key),
    );
    assert_eq!(
        auth_error(out.client_error.as_ref().unwrap()),
        AuthError::UnknownIssuer
    );
    assert_eq!(received_alert(&out.server_error), alert::UNKNOWN_CA);
}

#[test]
fn no_common_alpn_is_a_tls_error() {
    let ca = DevCa::generate().unwrap();
    let client = identity(&ca, &ca, &client_path());
    let server = identity(&ca, &ca, &server_path());
    let out = handshake(
        client.client_config(&[b"other/1"]).unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    let sent = received_alert(&out.client_error);
    assert_eq!(sent, alert::NO_APPLICATION_PROTOCOL);
    assert!(matches!(
        auth_error(out.client_error.as_ref().unwrap()),
        AuthError::Tls(_)
    ));
    assert!(matches!(
        auth_error(out.server_error.as_ref().unwrap()),
        AuthError::Tls(_)
    ));
    assert!(matches!(
        auth_error_from_alert(sent, true),
        AuthError::Tls(_)
    ));
}

#[test]
fn alert_mapping_table() {
    use AuthError as E;
    for (n, local, remote) in [
        (
            48,
            E::UnknownIssuer,
            E::RejectedByPeer(Rejection::UnknownIssuer),
        ),
        (45, E::Expired, E::RejectedByPeer(Rejection::Expired)),
        (
            116,
            E::MissingCertificate,
            E::RejectedByPeer(Rejection::MissingCertificate),
        ),
    ] {
        assert_eq!(auth_error_from_alert(n, false), local);
        assert_eq!(auth_error_from_alert(n, true), remote);
    }
    assert_eq!(
        auth_error_from_alert(42, true),
        E::RejectedByPeer(Rejection::Other("bad_certificate (42)".into()))
    );
    assert_eq!(
        auth_error_from_alert(46, true),
        E::RejectedByPeer(Rejection::Other("certificate_unknown (46)".into()))
    );
    for n in [40u8, 120, 0, 255] {
        assert!(matches!(auth_error_from_alert(n, true), E::Tls(_)));
        assert!(matches!(auth_error_from_alert(n, false), E::Tls(_)));
    }
    assert!(matches!(auth_error_from_alert(42, false), E::Tls(_)));
}
