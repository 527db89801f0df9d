//! Errors of the tool and the exit codes they map to (part of the CLI contract).

use std::process::ExitCode;

use dms::RequestError;

/// What went wrong, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// A command-line value is malformed (exit 2, like clap's usage errors).
    #[error("{0}")]
    Usage(String),
    /// Discovery cannot be reached (exit 3).
    #[error(
        "discovery unreachable at {url}: {detail}\n  hint: is etcd running there? check --discovery (etcd://host:port[,host:port...])"
    )]
    DiscoveryUnreachable {
        /// The discovery URL.
        url: String,
        /// What the backend said.
        detail: String,
    },
    /// No live instance to send to (exit 4).
    #[error("{0}\n  hint: check with `dms ls` that instances are registered and reachable")]
    NoInstance(String),
    /// A request timed out (exit 5).
    #[error("request timed out: {0}")]
    Timeout(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
    /// A failure already printed where it happened; only its exit code is left.
    #[error("{0}")]
    Reported(Box<Self>),
}

impl Failure {
    /// The process exit code of this failure.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Other(_) => 1,
            Self::Usage(_) => 2,
            Self::DiscoveryUnreachable { .. } => 3,
            Self::NoInstance(_) => 4,
            Self::Timeout(_) => 5,
            Self::Reported(inner) => return inner.exit_code(),
        })
    }

    /// Short machine-readable kind, for `--json` error lines.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Usage(_) => "usage",
            Self::DiscoveryUnreachable { .. } => "discovery_unreachable",
            Self::NoInstance(_) => "no_instance",
            Self::Timeout(_) => "timeout",
            Self::Other(_) => "error",
            Self::Reported(inner) => inner.kind(),
        }
    }
}

impl From<RequestError> for Failure {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::Timeout => Self::Timeout(error.to_string()),
            RequestError::NoInstance(_) | RequestError::NotATarget(_) => {
                Self::NoInstance(error.to_string())
            }
            other => Self::Other(other.to_string()),
        }
    }
}
