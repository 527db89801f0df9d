//! `certified_path` on well-formed, malformed and hostile certificates.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::*;
use dms_core::AuthError;
use dms_tls::{CertificateDer, SAN_PREFIX, certified_path, san_uri};
use rustls::pki_types::pem::PemObject;

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn reason(result: Result<dms_core::path::ServicePath, AuthError>) -> String {
    match result {
        Err(AuthError::NoServicePath(reason)) => reason,
        other => panic!("expected NoServicePath, got {other:?}"),
    }
}

#[test]
fn san_uri_is_the_prefix_and_the_path() {
    assert_eq!(SAN_PREFIX, "dms:");
    assert_eq!(
        san_uri(&server_path()),
        "dms:/demo/cn/android/w1/g1/Battle/battle-1"
    );
}

#[test]
fn one_dms_san_among_others() {
    let ca = raw_ca("ca");
    let (cert, _) = raw_leaf(
        &ca,
        &[
            "https://example.invalid/",
            "dms:/demo/cn/android/w1/g1/Battle/battle-1",
            "spiffe://example/ns",
        ],
    );
    assert_eq!(certified_path(&der(&cert)).unwrap(), server_path());
}

#[test]
fn no_dms_san() {
    let ca = raw_ca("ca");
    let (cert, _) = raw_leaf(&ca, &["https://example.invalid/"]);
    assert!(reason(certified_path(&der(&cert))).contains("no dms: URI SAN"));
    // And no SAN extension at all.
    let plain = rcgen::CertificateParams::default()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    assert!(reason(certified_path(plain.der())).contains("no subject alternative names"));
}

#[test]
fn two_dms_sans() {
    let ca = raw_ca("ca");
    let (cert, _) = raw_leaf(
        &ca,
        &[
            "dms:/demo/cn/android/w1/g1/Battle/battle-1",
            "dms:/demo/cn/android/w1/g1/Battle/battle-2",
        ],
    );
    assert!(reason(certified_path(&der(&cert))).contains("more than one"));
    // Even twice the same path is ambiguous.
    let (cert, _) = raw_leaf(
        &ca,
        &[
            "dms:/demo/cn/android/w1/g1/Battle/battle-1",
            "dms:/demo/cn/android/w1/g1/Battle/battle-1",
        ],
    );
    assert!(reason(certified_path(&der(&cert))).contains("more than one"));
}

#[test]
fn invalid_paths() {
    let ca = raw_ca("ca");
    for uri in [
        "dms:",
        "dms:/demo/cn/android/w1/g1/Battle",
        "dms:/demo/cn/android/w1/g1/Battle/",
        "dms:demo/cn/android/w1/g1/Battle/battle-1",
        "dms:/demo/cn/android/w1/g1/Battle/battle-1/extra",
        "dms:/demo/cn/android/w1/g1/Battle/b%20c",
        "dms:/demo/cn/android/w1/g1/Battle/..",
    ] {
        let (cert, _) = raw_leaf(&ca, &[uri]);
        assert!(
            reason(certified_path(&der(&cert))).contains("not a valid service path"),
            "{uri}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    for bytes in [
        &[][..],
        &[0x30][..],
        &[0x30, 0x80][..],
        &[0x30, 0x82, 0xff, 0xff, 0x00][..],
        &[0xff; 64][..],
        b"-----BEGIN CERTIFICATE-----",
    ] {
        assert!(reason(certified_path(&CertificateDer::from(bytes.to_vec()))).contains("parse"));
    }
    // Every truncation and a sweep of single-byte corruptions of a real certificate.
    let ca = raw_ca("ca");
    let (cert, _) = raw_leaf(&ca, &["dms:/demo/cn/android/w1/g1/Battle/battle-1"]);
    let good = der(&cert).to_vec();
    for len in 0..good.len() {
        assert!(certified_path(&CertificateDer::from(good[..len].to_vec())).is_err());
    }
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= flip;
            let _ = certified_path(&CertificateDer::from(bad));
        }
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(reason(certified_path(&CertificateDer::from(trailing))).contains("trailing"));
}
