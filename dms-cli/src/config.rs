//! `dms config check FILE`: reports every error of a node configuration file with its
//! line, or `ok` and the configuration in effect. Also the loading of `dms node --config`.

use std::path::{Path, PathBuf};

use dms::config::{ConfigErrors, NodeConfig, Origin};

use crate::failure::Failure;

/// Options of `dms config check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The configuration file (TOML; see docs/node.example.toml).
    file: PathBuf,
    /// Also apply the DMS_* environment variables (DMS_SERVICE, DMS_BIND,
    /// DMS_HEARTBEAT_INTERVAL_MS...), as `dms node --config` does.
    #[arg(long)]
    env: bool,
}

/// Each error a line: `FILE:LINE:COL: field: message` for the file's errors,
/// `DMS_VAR: field: message` for the environment's, `FILE: field: message` otherwise.
pub(crate) fn report(file: &Path, errors: &ConfigErrors) -> String {
    let lines: Vec<String> = errors
        .iter()
        .map(|error| match &error.origin {
            Origin::Env(_) => error.to_string(),
            Origin::Line { .. } => format!("{}:{error}", file.display()),
            _ => format!("{}: {error}", file.display()),
        })
        .collect();
    lines.join("\n")
}

/// Reads `file` (if any) and applies the DMS_* variables of the environment over it;
/// every error is reported (see [`report`]) as a usage failure.
pub(crate) fn load(file: Option<&Path>) -> Result<NodeConfig, Failure> {
    let mut config = match file {
        Some(file) => {
            NodeConfig::from_toml_file(file).map_err(|e| Failure::Usage(report(file, &e)))?
        }
        None => NodeConfig::default(),
    };
    config
        .apply_env(std::env::vars())
        .map_err(|e| Failure::Usage(report(file.unwrap_or(Path::new("-")), &e)))?;
    Ok(config)
}

/// `dms config check FILE [--env]`.
pub(crate) fn check(args: &CheckArgs) -> Result<(), Failure> {
    let result = NodeConfig::from_toml_file(&args.file).and_then(|mut config| {
        if args.env {
            config.apply_env(std::env::vars())?;
        }
        Ok(config)
    });
    match result {
        Ok(config) => {
            crate::print_line(&format!("ok: {}", args.file.display()));
            if config.service.is_none() {
                crate::print_line(
                    "# no service: `dms node` needs it from DMS_SERVICE or --service",
                );
            }
            for line in config.to_toml_string().lines() {
                crate::print_line(line);
            }
            Ok(())
        }
        Err(errors) => {
            eprintln!("{}", report(&args.file, &errors));
            let n = errors.len();
            let s = if n == 1 { "" } else { "s" };
            eprintln!("dms config check: {n} error{s} in {}", args.file.display());
            Err(Failure::Reported(Box::new(Failure::Usage(String::new()))))
        }
    }
}
