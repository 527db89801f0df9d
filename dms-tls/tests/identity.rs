//! `TlsIdentity` construction errors, and the development CA on disk.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::PathBuf;

use common::*;
use dms_tls::dev::{DEV_CA_CERT_FILE, DEV_CA_KEY_FILE, DevCa};
use dms_tls::{TlsConfigError, TlsIdentity};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dms-tls-test-{name}-{}-{}",
        std::process::id(),
        fastrand_u64()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn fastrand_u64() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn from_pem_errors_name_the_input() {
    let ca = DevCa::generate().unwrap();
    let issued = ca.issue(&server_path()).unwrap();
    let (cert, key, ca_pem) = (
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.ca_pem().as_bytes(),
    );
    assert!(TlsIdentity::from_pem(cert, key, ca_pem).is_ok());
    assert!(matches!(
        TlsIdentity::from_pem(b"", key, ca_pem),
        Err(TlsConfigError::NoCertificate { input }) if input == "certificate PEM"
    ));
    assert!(matches!(
        TlsIdentity::from_pem(cert, b"", ca_pem),
        Err(TlsConfigError::NoKey { .. })
    ));
    assert!(matches!(
        TlsIdentity::from_pem(cert, key, b""),
        Err(TlsConfigError::NoCa { input }) if input == "CA PEM"
    ));
    // A key that does not match the certificate.
    let other = ca.issue(&server_path()).unwrap();
    assert!(matches!(
        TlsIdentity::from_pem(cert, other.key_pem.as_bytes(), ca_pem),
        Err(TlsConfigError::Key { .. })
    ));
    // Corrupt PEM.
    let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        TlsIdentity::from_pem(broken, key, ca_pem),
        Err(TlsConfigError::Pem {
            what: "certificate",
            ..
        })
    ));
    // Our own certificate without a DMS SAN.
    let raw = raw_ca("ca");
    let (cert, key) = raw_leaf(&raw, &[]);
    let err = TlsIdentity::from_pem(cert.as_bytes(), key.as_bytes(), raw.pem.as_bytes());
    assert!(
        matches!(err, Err(TlsConfigError::OwnServicePath { .. })),
        "{err:?}"
    );
}

#[test]
fn from_pem_files_names_the_file() {
    let dir = temp_dir("files");
    let ca = DevCa::generate().unwrap();
    let files = ca.write_node(&dir, &server_path()).unwrap();
    assert_eq!(
        files.cert.file_name().unwrap(),
        "demo+cn+android+w1+g1+Battle+battle-1.pem"
    );
    let identity = TlsIdentity::from_pem_files(&files.cert, &files.key, &files.ca).unwrap();
    assert_eq!(identity.path(), &server_path());

    let missing = dir.join("missing.pem");
    let err = TlsIdentity::from_pem_files(&files.cert, &files.key, &missing).unwrap_err();
    assert!(matches!(&err, TlsConfigError::Read { path, .. } if *path == missing));
    assert!(err.to_string().contains("missing.pem"));

    // The key file as the CA: no CA certificate in it, and the error says which file.
    let err = TlsIdentity::from_pem_files(&files.cert, &files.key, &files.key).unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::NoCa { input } if input.ends_with(".key")),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_ca_is_kept_on_disk_with_a_private_key_file() {
    let dir = temp_dir("ca");
    let first = DevCa::load_or_create(&dir).unwrap();
    let again = DevCa::load_or_create(&dir).unwrap();
    assert_eq!(first.ca_pem(), again.ca_pem());
    assert!(dir.join(DEV_CA_CERT_FILE).exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(DEV_CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let files = first.write_node(&dir, &client_path()).unwrap();
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A loaded CA issues certificates that the created one's trust store accepts.
    let server = {
        let issued = again.issue(&server_path()).unwrap();
        TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            first.ca_pem().as_bytes(),
        )
        .unwrap()
    };
    let client = TlsIdentity::dev(&dir, &client_path()).unwrap();
    let out = handshake(
        client.client_config(ALPN).unwrap(),
        server.server_config(ALPN).unwrap(),
    );
    assert!(out.ok(), "{:?} / {:?}", out.client_error, out.server_error);
    // Another CA's certificate in the directory is refused, not overwritten.
    let other = DevCa::generate().unwrap();
    assert!(other.write_node(&dir, &server_path()).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_identity_reuses_valid_certificates_and_replaces_others() {
    let dir = temp_dir("dev");
    let a = TlsIdentity::dev(&dir, &server_path()).unwrap();
    let b = TlsIdentity::dev(&dir, &server_path()).unwrap();
    assert_eq!(a.cert_chain(), b.cert_chain());
    let c = TlsIdentity::dev(&dir, &client_path()).unwrap();
    assert_ne!(a.cert_chain(), c.cert_chain());
    assert_eq!(c.path(), &client_path());

    // An expired certificate on disk is replaced.
    let ca = DevCa::load_or_create(&dir).unwrap();
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(24 * 3600);
    let expired = ca
        .issue_with_validity(&server_path(), now - 3 * day, now - day)
        .unwrap();
    let files = ca.write_node(&dir, &server_path()).unwrap();
    std::fs::write(&files.cert, &expired.cert_pem).unwrap();
    std::fs::write(&files.key, &expired.key_pem).unwrap();
    let d = TlsIdentity::dev(&dir, &server_path()).unwrap();
    assert_ne!(d.cert_chain()[0].as_ref(), &*rustls_der(&expired.cert_pem));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rustls_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn concurrent_dev_identities_share_one_ca() {
    let dir = temp_dir("race");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let path = path(&format!("/demo/cn/android/w1/g1/Battle/b-{i}"));
                TlsIdentity::dev(&dir, &path).unwrap()
            })
        })
        .collect();
    let identities: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ca = DevCa::load_or_create(&dir).unwrap();
    for pair in identities.windows(2) {
        // Everyone trusts the CA on disk, and everyone's certificate chains to it.
        let out = handshake(
            pair[0].client_config(ALPN).unwrap(),
            pair[1].server_config(ALPN).unwrap(),
        );
        assert!(out.ok(), "{:?} / {:?}", out.client_error, out.server_error);
    }
    let only = TlsIdentity::from_pem(
        ca.issue(&server_path()).unwrap().cert_pem.as_bytes(),
        ca.issue(&server_path()).unwrap().key_pem.as_bytes(),
        ca.ca_pem().as_bytes(),
    );
    assert!(only.is_err(), "cert and key of two issuances do not match");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_validity_is_refused() {
    let ca = DevCa::generate().unwrap();
    let now = std::time::SystemTime::now();
    assert!(ca.issue_with_validity(&server_path(), now, now).is_err());
}
