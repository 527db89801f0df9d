//! Entry points of the fuzz targets that need crates above `dms-core` (the kernel's
//! discovery records); the `dms-core` ones are in `dms_core::fuzzing`. The corpus replay
//! test (`tests/corpus.rs`, run on stable in the test suite) exercises the same code.

use dms::registration::Registration;
use dms::routing::LinkRecord;
use dms_core::acl::Pattern;
use dms_core::endpoint::Endpoint;
use dms_core::path::ClusterPath;

/// A registration value as read from discovery (etcd data is untrusted, RELIABILITY B9):
/// [`Registration::decode`] never panics and bounds what it accepts; what decodes
/// re-encodes to a value that decodes to the same record; its endpoints, targets and ACL
/// patterns go through the parsers the kernel and `dms ls` use, which never panic either
/// and print back to themselves. Panics only on a bug.
pub fn exercise_discovery_value(data: &[u8]) {
    exercise_link_record(data);
    let Some(record) = Registration::decode(data) else {
        return;
    };
    assert!(data.len() <= 64 << 10, "oversized values are refused");
    assert_eq!(
        Registration::decode(&record.encode()).as_ref(),
        Some(&record),
        "a decoded record re-encodes to itself"
    );
    for endpoint in &record.endpoints {
        if let Ok(parsed) = endpoint.parse::<Endpoint>() {
            assert_eq!(parsed.to_string(), *endpoint);
        }
    }
    for target in &record.targets {
        if let Ok(cluster) = target.parse::<ClusterPath>() {
            assert_eq!(cluster.to_string(), *target);
            let _ = record.targets(&cluster);
        }
    }
    for principal in record.acl.iter().flatten() {
        if let Ok(pattern) = principal.parse::<Pattern>() {
            assert_eq!(
                pattern.to_string().parse::<Pattern>().as_ref(),
                Ok(&pattern)
            );
        }
    }
}

/// A link record of the routing table as read from discovery (docs/PROTOCOL.md §8.7;
/// untrusted): [`LinkRecord::decode`] never panics and bounds what it accepts; what
/// decodes re-encodes to itself and names only service paths of cost at least 1, which the
/// routing table takes. Panics only on a bug.
pub fn exercise_link_record(data: &[u8]) {
    let Ok(record) = LinkRecord::decode(data) else {
        return;
    };
    assert!(data.len() <= dms::routing::MAX_LINKS_RECORD_LEN);
    assert_eq!(
        LinkRecord::decode(&record.encode()).as_ref(),
        Ok(&record),
        "a decoded link record re-encodes to itself"
    );
    assert_eq!(
        record.peers().count(),
        record.links.len(),
        "every link names a service path"
    );
    let Ok(owner) = "/fuzz/cn/android/w1/g1/Broker/broker-1".parse::<dms::ServicePath>() else {
        return;
    };
    let mut table = dms_core::route::RoutingTable::new();
    // Self-links are refused with a typed error; nothing else can fail within the caps.
    let _ = table.set_transit(owner.clone(), record.forwards);
    let _ = table.replace_edges_from(owner, record.peers());
}
