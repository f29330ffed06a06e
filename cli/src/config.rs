//! The config file with named contexts, and how the node, the token and the namespace of a
//! command are resolved.
//!
//! Order, for each setting on its own: flag or environment variable, then the chosen context
//! (`--context`, else `current-context`), then the defaults: node `http://127.0.0.1:7070`,
//! token from the local node's `admin.token`, namespace `default`.
//!
//! ```toml
//! current-context = "home"
//!
//! [contexts.home]
//! node = "http://192.168.1.10:7070"
//! token-file = "/home/me/.config/shoal/home.token"   # or: token = "..."
//! namespace = "apps"
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// The node that a client without any setting talks to: `shoald`'s default API address.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:7070";
/// The namespace of objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The file in a node's data directory that holds its admin token.
pub use shoal_protocol::paths::ADMIN_TOKEN_FILE;

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, Context>,
}

/// One named context: where a cluster is and how to authenticate to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Read at each use, so that the token can live in a file with its own permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ConfigFile {
    /// Reads the config file; a missing file is an empty config, not an error.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let file: ConfigFile = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        file.validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(file)
    }

    /// Checks what TOML cannot: messages name the setting.
    pub fn validate(&self) -> Result<()> {
        for (name, ctx) in &self.contexts {
            if ctx.token.is_some() && ctx.token_file.is_some() {
                bail!("contexts.{name}: set token or token-file, not both");
            }
            if let Some(node) = &ctx.node {
                normalize_node_url(node).with_context(|| format!("contexts.{name}.node"))?;
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temp file and rename) with mode 0600, since it may hold
    /// tokens; its directory is created with mode 0700 when missing.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).context("cannot encode the config")?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config.toml".into());
        let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = open_private(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
        })
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // The mode above is filtered by the umask and ignored for a file that existed already.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

/// Where the config file is when `--config`/`SHOAL_CONFIG` do not say:
/// `$XDG_CONFIG_HOME/shoal/config.toml`, else `~/.config/shoal/config.toml`.
pub fn default_config_path(xdg_config_home: Option<&str>, home: Option<&str>) -> PathBuf {
    let base = match (
        xdg_config_home.filter(|s| !s.is_empty()),
        home.filter(|s| !s.is_empty()),
    ) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => Path::new(home).join(".config"),
        (None, None) => PathBuf::from(".config"),
    };
    base.join("shoal").join("config.toml")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| shoal_protocol::paths::status_says_root(&s))
}

/// What the process's flags and environment say, before the config file is consulted.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub node: Option<String>,
    pub token: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// The local node's admin token file, tried last and only for a loopback node.
    pub default_token_file: Option<PathBuf>,
}

impl Overrides {
    /// Flags win over `SHOAL_NODE` and `SHOAL_TOKEN`; empty values count as unset.
    pub fn from_flags_and_env(global: &crate::args::GlobalArgs) -> Overrides {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = env("HOME");
        let data_dir = shoal_protocol::paths::default_data_dir(
            is_root(),
            env("XDG_DATA_HOME").as_deref(),
            home.as_deref(),
        );
        Overrides {
            node: global
                .node
                .clone()
                .filter(|v| !v.is_empty())
                .or_else(|| env("SHOAL_NODE")),
            token: global
                .token
                .clone()
                .filter(|v| !v.trim().is_empty())
                .or_else(|| env("SHOAL_TOKEN")),
            context: global.context.clone().filter(|c| !c.is_empty()),
            namespace: global.namespace.clone(),
            default_token_file: Some(data_dir.join(ADMIN_TOKEN_FILE)),
        }
    }
}

/// Where the token came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    None,
    FlagOrEnv,
    Context(String),
    File(PathBuf),
}

/// The settings of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The node's base URL, without a trailing slash.
    pub node: String,
    pub token: Option<String>,
    pub token_source: TokenSource,
    pub namespace: String,
    /// Whether the namespace was given with `-n`: only then does a manifest's own namespace
    /// that differs count as a mistake (kubectl's rule).
    pub namespace_explicit: bool,
    /// The context used, if any.
    pub context: Option<String>,
}

/// Resolves node, token and namespace from the overrides, the config file and the defaults.
pub fn resolve(file: &ConfigFile, ov: &Overrides) -> Result<Resolved> {
    let context_name = ov.context.clone().or_else(|| file.current_context.clone());
    let context = match &context_name {
        Some(name) => match file.contexts.get(name) {
            Some(c) => Some(c),
            None => bail!(
                "no context named {name:?} in the config file{}",
                known_contexts(file)
            ),
        },
        None => None,
    };

    let node = match (&ov.node, context.and_then(|c| c.node.as_ref())) {
        (Some(n), _) => normalize_node_url(n).context("--node / SHOAL_NODE")?,
        (None, Some(n)) => normalize_node_url(n)?,
        (None, None) => DEFAULT_NODE.to_string(),
    };

    let (token, token_source) = if let Some(t) = &ov.token {
        (Some(t.trim().to_string()), TokenSource::FlagOrEnv)
    } else if let (Some(c), Some(name)) = (context, &context_name) {
        if let Some(t) = &c.token {
            (
                Some(t.trim().to_string()),
                TokenSource::Context(name.clone()),
            )
        } else if let Some(path) = &c.token_file {
            let t = read_token(path)
                .with_context(|| format!("cannot read the token-file of context {name:?}"))?;
            (Some(t), TokenSource::File(path.clone()))
        } else {
            default_token(ov, &node)
        }
    } else {
        default_token(ov, &node)
    };

    let (namespace, namespace_explicit) = match &ov.namespace {
        Some(ns) => (ns.clone(), true),
        None => (
            context
                .and_then(|c| c.namespace.clone())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            false,
        ),
    };
    if namespace.is_empty() {
        bail!("the namespace must not be empty");
    }

    Ok(Resolved {
        node,
        token,
        token_source,
        namespace,
        namespace_explicit,
        context: context_name,
    })
}

/// The local node's admin token, used only when the node is on this machine: sending a local
/// credential to a host the user named without giving a token would leak it.
fn default_token(ov: &Overrides, node: &str) -> (Option<String>, TokenSource) {
    if !is_loopback_url(node) {
        return (None, TokenSource::None);
    }
    match &ov.default_token_file {
        Some(path) => match read_token(path) {
            Ok(t) => (Some(t), TokenSource::File(path.clone())),
            Err(_) => (None, TokenSource::None),
        },
        None => (None, TokenSource::None),
    }
}

fn read_token(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(token)
}

fn known_contexts(file: &ConfigFile) -> String {
    if file.contexts.is_empty() {
        "; create one with `shoal config set-context NAME --node URL`".to_string()
    } else {
        let names: Vec<&str> = file.contexts.keys().map(String::as_str).collect();
        format!("; known: {}", names.join(", "))
    }
}

/// Accepts `http://host:port`, `https://...` and a bare `host:port` (taken as http), and
/// drops trailing slashes so that paths can be appended.
pub fn normalize_node_url(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("{raw:?} is not a URL");
    };
    if scheme != "http" && scheme != "https" {
        bail!("{raw:?}: the node URL must start with http:// or https://");
    }
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        bail!("{raw:?}: the node URL has no host");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Whether the URL's host is this machine (127.0.0.0/8, ::1 or localhost).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn overrides() -> Overrides {
        Overrides::default()
    }

    #[test]
    fn defaults_without_config_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::load(&dir.path().join("missing.toml")).unwrap();
        let r = resolve(&file, &overrides()).unwrap();
        assert_eq!(r.node, DEFAULT_NODE);
        assert_eq!(r.token, None);
        assert_eq!(r.namespace, "default");
        assert!(!r.namespace_explicit);
        assert_eq!(r.context, None);
    }

    #[test]
    fn default_token_is_read_from_the_data_dir_for_a_local_node_only() {
        let dir = tempfile::tempdir().unwrap();
        let tok = write(dir.path(), "admin.token", "s3cret\n");
        let ov = Overrides {
            default_token_file: Some(tok.clone()),
            ..overrides()
        };
        let r = resolve(&ConfigFile::default(), &ov).unwrap();
        assert_eq!(r.token.as_deref(), Some("s3cret"));
        assert_eq!(r.token_source, TokenSource::File(tok));

        let remote = Overrides {
            node: Some("http://192.168.1.9:7070".into()),
            ..ov
        };
        let r = resolve(&ConfigFile::default(), &remote).unwrap();
        assert_eq!(r.token, None);
    }

    #[test]
    fn context_beats_defaults_and_flags_beat_context() {
        let dir = tempfile::tempdir().unwrap();
        let tok = write(dir.path(), "home.token", "from-file");
        let cfg = write(
            dir.path(),
            "config.toml",
            &format!(
                r#"
current-context = "home"
[contexts.home]
node = "http://10.0.0.1:7070/"
token-file = "{}"
namespace = "apps"
[contexts.lab]
node = "lab:7070"
token = "lab-token"
"#,
                tok.display()
            ),
        );
        let file = ConfigFile::load(&cfg).unwrap();

        let r = resolve(&file, &overrides()).unwrap();
        assert_eq!(r.node, "http://10.0.0.1:7070");
        assert_eq!(r.token.as_deref(), Some("from-file"));
        assert_eq!(r.namespace, "apps");
        assert!(!r.namespace_explicit);
        assert_eq!(r.context.as_deref(), Some("home"));

        let r = resolve(
            &file,
            &Overrides {
                context: Some("lab".into()),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(r.node, "http://lab:7070");
        assert_eq!(r.token.as_deref(), Some("lab-token"));
        assert_eq!(r.namespace, "default");

        let r = resolve(
            &file,
            &Overrides {
                node: Some("https://other:1".into()),
                token: Some("flag".into()),
                namespace: Some("prod".into()),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(r.node, "https://other:1");
        assert_eq!(r.token.as_deref(), Some("flag"));
        assert_eq!(r.token_source, TokenSource::FlagOrEnv);
        assert_eq!(r.namespace, "prod");
        assert!(r.namespace_explicit);
    }

    #[test]
    fn unknown_context_is_an_error_naming_the_known_ones() {
        let mut file = ConfigFile::default();
        file.contexts.insert("home".into(), Context::default());
        let err = resolve(
            &file,
            &Overrides {
                context: Some("nope".into()),
                ..overrides()
            },
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("\"nope\"") && msg.contains("known: home"),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_token_file_is_an_error() {
        let mut file = ConfigFile {
            current_context: Some("c".into()),
            ..Default::default()
        };
        file.contexts.insert(
            "c".into(),
            Context {
                token_file: Some("/nonexistent/token".into()),
                ..Default::default()
            },
        );
        let msg = format!("{:#}", resolve(&file, &overrides()).unwrap_err());
        assert!(msg.contains("/nonexistent/token"), "{msg}");
    }

    #[test]
    fn invalid_config_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "c.toml", "[contexts.a]\nnode = \"ftp://x\"\n");
        let msg = format!("{:#}", ConfigFile::load(&cfg).unwrap_err());
        assert!(msg.contains("contexts.a.node"), "{msg}");
        let cfg = write(dir.path(), "d.toml", "[contexts.a]\ntokn = \"x\"\n");
        let msg = format!("{:#}", ConfigFile::load(&cfg).unwrap_err());
        assert!(msg.contains("tokn"), "{msg}");
        let cfg = write(
            dir.path(),
            "e.toml",
            "[contexts.a]\ntoken = \"x\"\ntoken-file = \"y\"\n",
        );
        let msg = format!("{:#}", ConfigFile::load(&cfg).unwrap_err());
        assert!(msg.contains("not both"), "{msg}");
    }

    #[test]
    fn save_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let mut file = ConfigFile {
            current_context: Some("home".into()),
            ..Default::default()
        };
        file.contexts.insert(
            "home".into(),
            Context {
                node: Some("http://h:7070".into()),
                token: Some("t".into()),
                ..Default::default()
            },
        );
        file.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("current-context = \"home\""), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn paths_follow_xdg() {
        assert_eq!(
            default_config_path(Some("/x"), Some("/home/u")),
            PathBuf::from("/x/shoal/config.toml")
        );
        assert_eq!(
            default_config_path(None, Some("/home/u")),
            PathBuf::from("/home/u/.config/shoal/config.toml")
        );
    }

    #[test]
    fn node_urls() {
        assert_eq!(normalize_node_url("h:1").unwrap(), "http://h:1");
        assert_eq!(normalize_node_url("https://h/").unwrap(), "https://h");
        assert!(normalize_node_url("ftp://h").is_err());
        assert!(normalize_node_url("http://").is_err());
        for (url, local) in [
            ("http://127.0.0.1:7070", true),
            ("http://localhost:7070", true),
            ("http://[::1]:7070", true),
            ("http://127.0.0.2", true),
            ("http://10.0.0.1:7070", false),
            ("http://example.org", false),
        ] {
            assert_eq!(is_loopback_url(url), local, "{url}");
        }
    }
}
