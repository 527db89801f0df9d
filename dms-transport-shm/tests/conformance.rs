//! The middleware conformance suite, over real shared-memory links (memfd rings and
//! abstract Unix sockets), unchanged.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};

use dms_core::Endpoint;
use dms_test_support::middleware::{Factory, Options};
use dms_transport_shm::{ShmConfig, ShmMiddleware};

struct Shm;

impl Factory for Shm {
    type Middleware = ShmMiddleware;

    fn create(&self, options: Options) -> ShmMiddleware {
        let mut config = ShmConfig::builder();
        if let Some(identity) = options.identity {
            config = config.identity(identity);
        }
        if let Some(max) = options.max_peers {
            config = config.max_peers(max);
        }
        if let Some(bytes) = options.link_queue_bytes {
            config = config.link_queue_bytes(bytes);
        }
        if let Some(items) = options.inbound_queue {
            config = config.inbound_queue(items);
        }
        ShmMiddleware::new(config.build().expect("valid config"))
    }

    fn endpoint(&self) -> Endpoint {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("shm://conformance-{}-{n}", std::process::id())
            .parse()
            .expect("endpoint")
    }
}

dms_test_support::conformance_tests!(Shm);
