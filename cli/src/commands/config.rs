//! `config`: the contexts of the config file.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::args::{ConfigCommand, GlobalArgs};
use crate::config::{ConfigFile, normalize_node_url};
use crate::output;

pub fn run(path: &Path, g: &GlobalArgs, cmd: ConfigCommand) -> Result<()> {
    let mut file = ConfigFile::load(path)?;
    match cmd {
        ConfigCommand::SetContext {
            name,
            token_file,
            use_it,
        } => {
            if name.is_empty() {
                bail!("the context name must not be empty");
            }
            let created = !file.contexts.contains_key(&name);
            let ctx = file.contexts.entry(name.clone()).or_default();
            // Only what was typed changes: `--node`, `--token`, `-n` are read from the
            // flags themselves, never from SHOAL_NODE or SHOAL_TOKEN.
            if let Some(node) = &g.node {
                ctx.node = Some(normalize_node_url(node).context("--node")?);
            }
            if let Some(token) = &g.token {
                ctx.token = Some(token.trim().to_string());
                ctx.token_file = None;
            }
            if let Some(tf) = token_file {
                // Stored absolute, since the CLI may later run from another directory.
                let abs = std::path::absolute(&tf)
                    .with_context(|| format!("--token-file {}", tf.display()))?;
                ctx.token_file = Some(abs);
                ctx.token = None;
            }
            if let Some(ns) = &g.namespace {
                ctx.namespace = Some(ns.clone());
            }
            if use_it {
                file.current_context = Some(name.clone());
            }
            file.validate()?;
            file.save(path)?;
            let verb = if created { "created" } else { "modified" };
            let mut msg = format!("Context \"{name}\" {verb}.\n");
            if use_it {
                msg.push_str(&format!("Switched to context \"{name}\".\n"));
            }
            output::print(&msg)
        }
        ConfigCommand::UseContext { name } => {
            if !file.contexts.contains_key(&name) {
                bail!("no context exists with the name: {name:?}");
            }
            file.current_context = Some(name.clone());
            file.save(path)?;
            output::print(&format!("Switched to context \"{name}\".\n"))
        }
        ConfigCommand::GetContexts => {
            if file.contexts.is_empty() {
                eprintln!(
                    "No contexts in {}; create one with `shoal config set-context NAME --node URL`",
                    path.display()
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = file
                .contexts
                .iter()
                .map(|(name, c)| {
                    let current = file.current_context.as_deref() == Some(name.as_str());
                    // Tokens are never printed, only where they come from.
                    let token = match (&c.token, &c.token_file) {
                        (Some(_), _) => "<inline>".to_string(),
                        (None, Some(f)) => f.display().to_string(),
                        (None, None) => "<none>".to_string(),
                    };
                    vec![
                        if current { "*" } else { "" }.to_string(),
                        name.clone(),
                        c.node.clone().unwrap_or_default(),
                        c.namespace.clone().unwrap_or_default(),
                        token,
                    ]
                })
                .collect();
            output::print(&output::render_table(
                &["CURRENT", "NAME", "NODE", "NAMESPACE", "TOKEN"],
                &rows,
            ))
        }
        ConfigCommand::CurrentContext => match &file.current_context {
            Some(c) => output::print(&format!("{c}\n")),
            None => bail!("current-context is not set in {}", path.display()),
        },
    }
}
