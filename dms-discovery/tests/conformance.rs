//! The discovery conformance suite, against the in-memory backend.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dms_discovery::Revision;
use dms_discovery::memory::MemoryDiscovery;
use dms_test_support::discovery::DiscoveryFactory;

struct Memory;

impl DiscoveryFactory for Memory {
    type D = MemoryDiscovery;

    fn create(&self) -> MemoryDiscovery {
        MemoryDiscovery::new()
    }

    async fn compact(&self, d: &MemoryDiscovery, revision: Revision) -> bool {
        d.compact(revision);
        true
    }
}

dms_test_support::discovery_conformance_tests!(Memory);
