//! `--discovery URL`: `etcd://host:port[,host:port...]`, or `memory://` (in-process only).

use crate::failure::Failure;

/// A parsed discovery URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DiscoveryUrl {
    /// The embedded store of this process (useful only within one process).
    Memory,
    /// An etcd cluster, by its client endpoints (`host:port`).
    Etcd(Vec<String>),
}

impl std::str::FromStr for DiscoveryUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        if url == "memory://" || url == "memory:" {
            return Ok(Self::Memory);
        }
        let Some(hosts) = url.strip_prefix("etcd://") else {
            return Err(format!(
                "unsupported discovery URL {url:?}: use etcd://host:port[,host:port...] or memory://"
            ));
        };
        let endpoints: Vec<String> = hosts.split(',').map(str::trim).map(str::to_owned).collect();
        for endpoint in &endpoints {
            let port = endpoint
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                return Err(format!(
                    "bad etcd endpoint {endpoint:?} in {url:?}: expected host:port"
                ));
            }
        }
        Ok(Self::Etcd(endpoints))
    }
}

impl std::fmt::Display for DiscoveryUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory://"),
            Self::Etcd(endpoints) => write!(f, "etcd://{}", endpoints.join(",")),
        }
    }
}

/// Runs `$body` with `$d` bound to the discovery backend `$url` names (a macro, because
/// each backend is its own type and the commands are generic over it).
macro_rules! with_discovery {
    ($url:expr, |$d:ident| $body:expr) => {{
        match $url {
            $crate::discovery_url::DiscoveryUrl::Memory => {
                let $d = dms::MemoryDiscovery::new();
                $body.await
            }
            $crate::discovery_url::DiscoveryUrl::Etcd(endpoints) => {
                #[cfg(feature = "etcd")]
                {
                    let $d = $crate::discovery_url::connect_etcd(endpoints).await?;
                    $body.await
                }
                #[cfg(not(feature = "etcd"))]
                {
                    let _ = endpoints;
                    Err($crate::failure::Failure::Usage(
                        "this dms was built without etcd support: rebuild with `--features etcd`"
                            .into(),
                    ))
                }
            }
        }
    }};
}
pub(crate) use with_discovery;

/// Connects to etcd.
#[cfg(feature = "etcd")]
pub(crate) async fn connect_etcd(
    endpoints: &[String],
) -> Result<dms_discovery::etcd::EtcdDiscovery, Failure> {
    dms_discovery::etcd::EtcdDiscovery::connect(endpoints, Default::default())
        .await
        .map_err(|e| Failure::DiscoveryUnreachable {
            url: DiscoveryUrl::Etcd(endpoints.to_vec()).to_string(),
            detail: e.to_string(),
        })
}

/// Maps a discovery error of a command to a failure naming the URL.
pub(crate) fn unreachable(url: &DiscoveryUrl, error: impl std::fmt::Display) -> Failure {
    Failure::DiscoveryUnreachable {
        url: url.to_string(),
        detail: error.to_string(),
    }
}

/// Maps a node's start failure: discovery errors name the URL.
pub(crate) fn start_failure(url: &DiscoveryUrl, error: dms::StartError) -> Failure {
    match error {
        dms::StartError::Discovery(e) => unreachable(url, e),
        other => Failure::Other(other.to_string()),
    }
}
