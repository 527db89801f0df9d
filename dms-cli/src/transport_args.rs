//! The transport options shared by every command that runs a node: TLS credentials for
//! QUIC and TCP+TLS (production files, or a development CA), and the dial preference.

use std::path::PathBuf;

use dms::{Discovery, NodeBuilder};

use crate::failure::Failure;

/// Options that turn QUIC and TCP+TLS on and choose what a node dials.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TransportArgs {
    /// PEM certificate (chain) of this instance, naming its service path as a URI SAN
    /// `dms:/App/...`; with --tls-key and --tls-ca it turns QUIC and TCP+TLS on (bind
    /// quic:// or tcp+tls:// endpoints, dial peers that publish them).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that peers' certificates must chain to.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// DEVELOPMENT ONLY, never in production: turns QUIC and TCP+TLS on with a
    /// certificate issued at start by the development CA kept in this directory (created
    /// if missing; see `dms certs dev`). Every node given the same directory trusts the
    /// others.
    #[arg(long, conflicts_with = "tls_cert")]
    tls_dev: Option<PathBuf>,
    /// Schemes this node dials, most preferred first, comma-separated (default
    /// shm,quic,tcp+tls,tcp; a scheme not listed is never dialled).
    #[arg(long, value_delimiter = ',')]
    prefer: Vec<String>,
}

impl TransportArgs {
    /// The service path of the production certificate, if one is given.
    pub(crate) fn certified_path(&self) -> Result<Option<dms::ServicePath>, Failure> {
        self.identity().map(|tls| tls.map(|tls| tls.path().clone()))
    }

    fn identity(&self) -> Result<Option<dms::tls::TlsIdentity>, Failure> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            return Ok(None);
        };
        dms::tls::TlsIdentity::from_pem_files(cert, key, ca)
            .map(Some)
            .map_err(|e| Failure::Usage(format!("TLS credentials: {e}")))
    }

    /// Applies the options to a node builder.
    pub(crate) fn apply<D: Discovery>(
        &self,
        mut builder: NodeBuilder<D>,
    ) -> Result<NodeBuilder<D>, Failure> {
        if let Some(tls) = self.identity()? {
            builder = builder.quic(dms::quic::QuicConfig::builder(tls));
        } else if let Some(dir) = &self.tls_dev {
            builder = builder.quic_dev_certificates(dir);
        }
        if !self.prefer.is_empty() {
            builder = builder.prefer(self.prefer.iter().cloned());
        }
        Ok(builder)
    }
}

/// Options of `dms certs dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevCertsArgs {
    /// Directory of the development CA (`dev-ca.pem`, `dev-ca.key`; created if missing)
    /// and of the node certificates written.
    dir: PathBuf,
    /// Service path to issue a certificate for (repeatable): writes `<name>.pem` and
    /// `<name>.key` beside the CA.
    #[arg(long)]
    service: Vec<dms::ServicePath>,
}

/// `dms certs dev DIR [--service PATH]...`: a DEVELOPMENT CA and node certificates.
pub(crate) fn dev_certs(args: &DevCertsArgs) -> Result<(), Failure> {
    let ca = dms::tls::dev::DevCa::load_or_create(&args.dir)
        .map_err(|e| Failure::Other(format!("development CA: {e}")))?;
    crate::print_line(&format!(
        "development CA (dev-only, never in production): {}",
        args.dir.join(dms::tls::dev::DEV_CA_CERT_FILE).display()
    ));
    for path in &args.service {
        let files = ca
            .write_node(&args.dir, path)
            .map_err(|e| Failure::Other(format!("certificate for {path}: {e}")))?;
        crate::print_line(&format!(
            "{path}: --tls-cert {} --tls-key {} --tls-ca {}",
            files.cert.display(),
            files.key.display(),
            files.ca.display()
        ));
    }
    Ok(())
}
