//! The [`Factory`] of TCP middlewares on loopback, shared by the tests and benches that
//! run `dms-test-support` code.

use dms_core::Endpoint;
use dms_test_support::middleware::{Factory, Options};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};

/// Makes TCP middlewares bound on loopback port 0.
pub(crate) struct Tcp;

impl Factory for Tcp {
    type Middleware = TcpMiddleware;

    fn create(&self, options: Options) -> TcpMiddleware {
        let mut config = TcpConfig::builder();
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
        TcpMiddleware::new(config.build().expect("valid config"))
    }

    fn endpoint(&self) -> Endpoint {
        "tcp://127.0.0.1:0".parse().expect("endpoint")
    }
}
