//! The command-line client of a shoal cluster: kubectl-like verbs over a node's HTTP API.
//!
//! The CLI never links `shoal-node`; it shares only `shoal-protocol`'s types (kinds, manifest
//! parsing, API shapes) and speaks HTTP to whichever node it is pointed at.
//!
//! # Layout
//! - [`args`]: the command line (clap derive): global flags and subcommands.
//! - [`config`]: the config file with named contexts, and how node, token and namespace are
//!   resolved (flag/env > context > defaults).
//! - [`client`]: the blocking HTTP client and the mapping of failures to actionable errors.
//! - [`output`]: tables, ages, YAML/JSON printing and secret masking.
//! - [`describe`]: the multi-line `describe` view of each kind.
//! - [`commands`]: one module per verb, gluing the above together.

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod describe;
pub mod output;

use std::process::ExitCode;

use clap::Parser;

/// An error whose details were already printed on stderr (every parse error of an apply,
/// every missing object of a delete): the caller only has to exit with 1.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors were reported")
    }
}

impl std::error::Error for Reported {}

/// The command ran and asks for this exit code without printing anything more (`exec` passes
/// on the remote command's exit code).
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// Runs the client with the process's arguments and returns its exit code: 0 on success, 1 on
/// any error (printed on stderr), 2 on a usage error (printed by clap).
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(ExitWith(code)) = err.downcast_ref::<ExitWith>() {
                return ExitCode::from(*code);
            }
            report(&err);
            ExitCode::from(1)
        }
    }
}

/// Prints an error the way kubectl does: server errors keep their `Error from server (...)`
/// prefix, everything else gets `error: `.
fn report(err: &anyhow::Error) {
    if err.downcast_ref::<Reported>().is_some() {
        return;
    }
    if let Some(e) = err.downcast_ref::<client::ClientError>()
        && e.is_server_status()
    {
        eprintln!("{e}");
        return;
    }
    eprintln!("error: {err:#}");
}
