//! One module per verb. Each takes its parsed arguments and a [`Session`] (the resolved node,
//! token and namespace) and prints its result; errors go back to `main` as `anyhow` errors,
//! or as [`crate::Reported`] when they were already printed.

mod apply;
mod config;
mod delete;
mod describe;
mod get;
mod manifests;
mod version;

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::CommandFactory;
use serde_json::Value;
use shoal_protocol::Kind;

use crate::args::{Cli, Command, GlobalArgs};
use crate::client::{self, Client, ClientError};
use crate::config::{self as cfg, ConfigFile, Overrides};

/// What every command that talks to a node needs.
pub struct Session {
    pub client: Client,
    pub namespace: String,
    /// Whether `-n` was given: a manifest naming another namespace is then an error.
    pub namespace_explicit: bool,
    pub show_secrets: bool,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Apply(a) => apply::run(&connect(g)?, &a),
        Command::Get(a) => get::run(&connect(g)?, &a),
        Command::Describe(a) => describe::run(&connect(g)?, &a),
        Command::Delete(a) => delete::run(&connect(g)?, &a),
        Command::Version => version::run(g),
        Command::Config(c) => config::run(&config_path(g), g, c),
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut out);
            crate::output::print(&String::from_utf8_lossy(&out))
        }
    }
}

/// The config file: `--config`/`SHOAL_CONFIG`, else the XDG location.
fn config_path(g: &GlobalArgs) -> PathBuf {
    g.config.clone().unwrap_or_else(|| {
        let env = |k: &str| std::env::var(k).ok();
        cfg::default_config_path(env("XDG_CONFIG_HOME").as_deref(), env("HOME").as_deref())
    })
}

/// Resolves the settings and opens a client; no request is made yet.
pub fn connect(g: &GlobalArgs) -> Result<Session> {
    let file = ConfigFile::load(&config_path(g))?;
    let overrides = Overrides::from_flags_and_env(g);
    let resolved = cfg::resolve(&file, &overrides)?;
    let hint = client::token_hint(&resolved.node, overrides.default_token_file.as_ref());
    let client = Client::new(&resolved.node, resolved.token, hint, g.request_timeout)?;
    Ok(Session {
        client,
        namespace: resolved.namespace,
        namespace_explicit: resolved.namespace_explicit,
        show_secrets: g.show_secrets,
    })
}

/// The kind named on the command line, with kubectl's error and the list of known kinds.
pub fn parse_kind(name: &str) -> Result<Kind> {
    Kind::from_cli(name).ok_or_else(|| {
        let known: Vec<String> = Kind::ALL
            .iter()
            .map(|k| match k.short_names() {
                [] => k.plural().to_string(),
                short => format!("{} ({})", k.plural(), short.join(", ")),
            })
            .collect();
        anyhow!(
            "the server doesn't have a resource type {name:?}\nknown resource types: {}",
            known.join(", ")
        )
    })
}

/// The `items` of a list answer, sorted by namespace and name so that output is stable
/// whatever order the node keeps.
fn list_items(client: &Client, answer: Value) -> Result<Vec<Value>, ClientError> {
    let Value::Object(mut obj) = answer else {
        return Err(ClientError::Decode {
            url: client.base().to_string(),
            detail: "a list answer is not a JSON object".into(),
        });
    };
    let mut items = match obj.remove("items") {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => {
            return Err(ClientError::Decode {
                url: client.base().to_string(),
                detail: "the list's items are not an array".into(),
            });
        }
    };
    let key = |v: &Value| {
        (
            crate::output::text(v, "/metadata/namespace").unwrap_or_default(),
            crate::output::text(v, "/metadata/name").unwrap_or_default(),
        )
    };
    items.sort_by_key(key);
    Ok(items)
}

/// Objects of a kind, named or listed, shared by `get` and `describe`. A named object that is
/// missing is reported on stderr and leaves `missing` true; any other error stops.
struct Fetched {
    objects: Vec<Value>,
    missing: bool,
}

fn fetch(
    s: &Session,
    kind: Kind,
    names: &[String],
    selector: Option<&str>,
    all_namespaces: bool,
) -> Result<Fetched> {
    if !names.is_empty() && selector.is_some() {
        anyhow::bail!("name cannot be provided when a selector is specified");
    }
    if !names.is_empty() && all_namespaces && kind.namespaced() {
        anyhow::bail!("a resource cannot be retrieved by name across all namespaces");
    }
    let ns = (kind.namespaced() && !all_namespaces).then_some(s.namespace.as_str());
    if names.is_empty() {
        let query: Vec<(&str, &str)> = selector.map(|l| ("labelSelector", l)).into_iter().collect();
        let answer = s.client.get(&client::collection_path(kind, ns), &query)?;
        let objects = list_items(&s.client, answer)?;
        return Ok(Fetched {
            objects,
            missing: false,
        });
    }
    let mut fetched = Fetched {
        objects: Vec::new(),
        missing: false,
    };
    for name in names {
        match s.client.get(&client::object_path(kind, ns, name), &[]) {
            Ok(obj) => fetched.objects.push(obj),
            Err(e) if e.is_not_found() => {
                eprintln!("{}", client::not_found(kind, name));
                fetched.missing = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(fetched)
}

/// kubectl's message for an empty listing, on stderr.
fn no_resources(kind: Kind, namespace: &str, all_namespaces: bool) {
    if kind.namespaced() && !all_namespaces {
        eprintln!("No resources found in {namespace} namespace.");
    } else {
        eprintln!("No resources found");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let msg = parse_kind("widgets").unwrap_err().to_string();
        assert!(
            msg.starts_with("the server doesn't have a resource type \"widgets\"\n"),
            "{msg}"
        );
        assert!(
            msg.contains("deployments (deploy)") && msg.contains("secrets,"),
            "{msg}"
        );
        assert_eq!(parse_kind("deploy").unwrap(), Kind::Deployment);
    }
}
