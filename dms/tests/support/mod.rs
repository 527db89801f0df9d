//! What the kernel's integration tests share: the world their nodes live in, paths in
//! it, the figures a node recorded, and an echo service.
#![allow(dead_code)] // each test binary uses its own part of it

use dms::{ClusterPath, ServicePath};

/// The `/App/Area/Platform/World/Group` of the test nodes.
pub(crate) const WORLD: &str = "/demo/cn/android/w1/g1";

/// The cluster `name` of [`WORLD`].
pub(crate) fn cluster(name: &str) -> ClusterPath {
    format!("{WORLD}/{name}")
        .parse()
        .expect("a valid cluster path")
}

/// The instance `name` of the cluster `cluster` of [`WORLD`].
pub(crate) fn instance(cluster: &str, name: &str) -> ServicePath {
    format!("{WORLD}/{cluster}/{name}")
        .parse()
        .expect("a valid service path")
}

/// A node builder on the medium of this build: TCP, or QUIC with development
/// certificates (one directory per test process) when TCP is not compiled in.
pub(crate) fn node_builder(path: ServicePath) -> dms::NodeBuilder {
    #[cfg(not(feature = "tcp"))]
    {
        static DEV: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let dir = DEV
            .get_or_init(|| std::env::temp_dir().join(format!("dms-tests-{}", std::process::id())));
        dms::Node::builder(path).quic_dev_certificates(dir)
    }
    #[cfg(feature = "tcp")]
    dms::Node::builder(path)
}

/// The counter `name` of `node` with `labels`, summed over its other labels, from the
/// test recorder (installed on first use).
pub(crate) fn counter(name: &str, node: &ServicePath, labels: &[(&str, &str)]) -> u64 {
    let mut all = vec![("node", node.as_str())];
    all.extend_from_slice(labels);
    dms_test_support::metrics::recorder().counter(name, &all)
}

/// Answers every request `node` gets with its payload, on a task of its own.
pub(crate) fn serve_echo(node: &dms::Node) {
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(request) = node.next_request().await {
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
}
