//! One module per verb. Each takes its parsed arguments and a [`Session`] (the resolved node,
//! token and namespace) and prints its result; errors go back to `main` as `anyhow` errors,
//! or as [`crate::Reported`] when they were already printed.

mod apply;
mod backup;
mod config;
mod cordon;
mod create;
mod delete;
mod describe;
pub(crate) mod events;
mod exec;
mod get;
mod image;
mod join_token;
mod logs;
mod manifests;
mod pod_routes;
mod rollout;
mod scale;
mod status;
mod version;

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::CommandFactory;
use serde_json::Value;
use shoal_protocol::Kind;

use crate::args::{Cli, Command, GlobalArgs, ImageCommand};
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
        Command::Create(c) => create::run(&connect(g)?, &c),
        Command::Get(a) => get::run(&connect(g)?, &a),
        Command::Image(ImageCommand::Push(a)) => image::push(&connect(g)?, &a),
        Command::Describe(a) => describe::run(&connect(g)?, &a),
        Command::Delete(a) => delete::run(&connect(g)?, &a),
        Command::Logs(a) => logs::run(&connect(g)?, &a),
        Command::Exec(a) => exec::run(&connect(g)?, &a),
        Command::Scale(a) => scale::run(&connect(g)?, &a),
        Command::Rollout(c) => rollout::run(&connect(g)?, c),
        Command::Status(a) => status::run(&connect(g)?, &a),
        Command::JoinToken(a) => join_token::run(&connect(g)?, &a),
        Command::PodRoutes => pod_routes::run(&connect(g)?),
        Command::Backup(a) => backup::backup(&connect(g)?, &a),
        Command::Restore(a) => backup::restore(&connect(g)?, &a),
        Command::Cordon(a) => cordon::run(&connect(g)?, &a.name, true),
        Command::Uncordon(a) => cordon::run(&connect(g)?, &a.name, false),
        Command::Drain(a) => cordon::drain(&connect(g)?, &a),
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

/// A workload named on the command line: `deploy/web`, or `deploy web` as two words. Only
/// the kinds in `allowed` are accepted.
pub fn parse_target(words: &[String], allowed: &[Kind]) -> Result<(Kind, String)> {
    let (kind, name) = match words {
        [one] => match one.split_once('/') {
            Some((k, n)) => (k, n),
            None => {
                anyhow::bail!("name the object as KIND/NAME (e.g. deploy/{one}) or as KIND NAME")
            }
        },
        [k, n] => (k.as_str(), n.as_str()),
        _ => anyhow::bail!("expected KIND/NAME or KIND NAME"),
    };
    if name.is_empty() {
        anyhow::bail!("the name is empty in {:?}", words.join(" "));
    }
    let kind = parse_kind(kind)?;
    if !allowed.contains(&kind) {
        let names: Vec<&str> = allowed.iter().map(|k| k.plural()).collect();
        anyhow::bail!(
            "{} cannot be used here: expected {}",
            kind.plural(),
            names.join(" or ")
        );
    }
    Ok((kind, name.to_string()))
}

/// A duration typed by a user, in seconds: `30s`, `5m`, `1h30m`, `2h`, `1d`; `0` alone is 0.
pub fn parse_duration(text: &str) -> Result<u64> {
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => anyhow::bail!("{text:?} is not a duration: use e.g. 30s, 5m, 1h30m"),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| anyhow!("{text:?} is not a duration: use e.g. 30s, 5m, 1h30m"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        anyhow::bail!("{text:?} is not a duration: give a unit, e.g. 30s, 5m, 1h30m");
    }
    Ok(total)
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

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn targets_parse_like_kubectl() {
        let both = [Kind::Deployment, Kind::StatefulSet];
        for ok in [
            "deploy/web",
            "deployment/web",
            "deployments web",
            "deploy web",
        ] {
            assert_eq!(
                parse_target(&words(ok), &both).unwrap(),
                (Kind::Deployment, "web".to_string()),
                "{ok}"
            );
        }
        assert_eq!(
            parse_target(&words("sts/db"), &both).unwrap(),
            (Kind::StatefulSet, "db".to_string())
        );
        for bad in ["web", "deploy/", "svc/web", "widgets/x"] {
            assert!(parse_target(&words(bad), &both).is_err(), "{bad}");
        }
        let msg = parse_target(&words("sts/db"), &[Kind::Deployment])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("expected deployments"), "{msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30);
        assert_eq!(parse_duration("5m").unwrap(), 300);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("0").unwrap(), 0);
        for bad in ["", "5", "m", "5x", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
