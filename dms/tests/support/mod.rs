//! What the kernel's integration tests share: the world their nodes live in, paths in
//! it, and the figures a node recorded.
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

/// The counter `name` of `node` with `labels`, summed over its other labels, from the
/// test recorder (installed on first use).
pub(crate) fn counter(name: &str, node: &ServicePath, labels: &[(&str, &str)]) -> u64 {
    let mut all = vec![("node", node.as_str())];
    all.extend_from_slice(labels);
    dms_test_support::metrics::recorder().counter(name, &all)
}
